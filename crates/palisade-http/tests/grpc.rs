//! gRPC: the status table without a network, then a real tonic server on
//! 127.0.0.1:0 (a hand-written service, no protoc) and a real tonic client,
//! with the gRPC layer on the server and around the client's channel.

#![cfg(feature = "tonic")]

mod support;

use std::net::SocketAddr;

use palisade_core::BoxError;
use palisade_http::grpc::{
    ClientErrorToStatusLayer, ErrorToStatusLayer, client_grpc_status, to_grpc_code, to_grpc_status,
};
use support::{RejectLayer, SECRET, TABLE, Wrapped, error};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

#[test]
fn status_table_with_detail_and_retry_metadata() {
    for &(kind, _, retry_after, code, reason) in TABLE {
        let err = error(kind).unwrap();
        let status = to_grpc_status(&*err);
        assert_eq!(i32::from(status.code()), code, "{kind}");
        assert_eq!(to_grpc_code(&*err), status.code(), "{kind}");
        assert!(!status.message().contains(SECRET), "{kind} leaked");
        assert!(!status.message().is_empty(), "{kind}");
        if reason.is_some() && kind != "panicked" {
            assert!(
                status.message().contains("\"api\""),
                "{kind}: {}",
                status.message()
            );
        }
        assert_eq!(
            status
                .metadata()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{kind}"
        );
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").is_some(),
            retry_after.is_some(),
            "{kind}"
        );
    }
    let status = to_grpc_status(&*error("circuit_open").unwrap());
    assert_eq!(
        status.metadata().get("grpc-retry-pushback-ms").unwrap(),
        "3000"
    );
}

#[test]
fn the_pushback_is_rounded_up_and_never_zero() {
    use palisade_core::{KeyKind, PolicyName, RateLimited};
    use std::time::Duration;
    for (wait, millis) in [
        (Duration::ZERO, "1"),
        (Duration::from_nanos(1), "1"),
        (Duration::from_micros(9_600), "10"),
        (Duration::from_millis(1_500), "1500"),
        (Duration::from_nanos(1_500_000_001), "1501"),
        (Duration::MAX, "18446744073709551615"),
    ] {
        let err: BoxError = RateLimited::new(PolicyName::new("api"), wait, KeyKind::Global).into();
        let status = to_grpc_status(&*err);
        assert_eq!(
            status.metadata().get("grpc-retry-pushback-ms").unwrap(),
            millis,
            "{wait:?}"
        );
    }
}

/// The response of `layer` around a service that fails every call with
/// `make()`.
async fn answer_to(
    layer: ErrorToStatusLayer,
    make: fn() -> BoxError,
) -> http::Response<tonic::body::Body> {
    let inner = service_fn(move |_req: http::Request<tonic::body::Body>| async move {
        Err::<http::Response<tonic::body::Body>, BoxError>(make())
    });
    layer
        .layer(inner)
        .oneshot(http::Request::new(tonic::body::Body::empty()))
        .await
        .unwrap()
}

/// The error the client flavour passes on when the inner service fails
/// with `make()`: a boxed [`Status`].
async fn client_error_of(make: fn() -> BoxError) -> BoxError {
    let inner = service_fn(move |_req: http::Request<tonic::body::Body>| async move {
        Err::<http::Response<tonic::body::Body>, BoxError>(make())
    });
    ClientErrorToStatusLayer::new()
        .layer(inner)
        .oneshot(http::Request::new(tonic::body::Body::empty()))
        .await
        .unwrap_err()
}

/// [`client_error_of`], as the status the generated client sees.
async fn client_status_of(make: fn() -> BoxError) -> Status {
    let err = client_error_of(make).await;
    err.downcast_ref::<Status>()
        .unwrap_or_else(|| panic!("not a status: {err}"))
        .clone()
}

#[test]
fn a_status_in_the_chain_is_kept() {
    let err: BoxError = Wrapped(Box::new(Status::not_found("no such book"))).into();
    let status = to_grpc_status(&*err);
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no such book");
    assert_eq!(to_grpc_code(&*err), Code::NotFound);
}

#[test]
fn a_status_chosen_over_a_rejection_is_kept() {
    // The handler answered with a status of its own whose source is a
    // rejection: its choice stands.
    let mut chosen = Status::aborted("try another shard");
    chosen.set_source(std::sync::Arc::from(error("rate_limited").unwrap()));
    let err: BoxError = Wrapped(Box::new(chosen)).into();
    let status = to_grpc_status(&*err);
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "try another shard");
    assert_eq!(to_grpc_code(&*err), Code::Aborted);
    // A rejection reached before any status is the rejection's answer.
    let err: BoxError = Wrapped(error("rate_limited").unwrap()).into();
    assert_eq!(to_grpc_code(&*err), Code::ResourceExhausted);
}

#[test]
fn an_error_whose_display_panics_becomes_an_unknown_status() {
    #[derive(Debug)]
    struct Broken;
    impl std::fmt::Display for Broken {
        fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            panic!("a Display with a bug")
        }
    }
    impl std::error::Error for Broken {}

    let status = std::panic::catch_unwind(|| client_grpc_status(Box::new(Broken)))
        .expect("the panic stays inside the mapping");
    assert_eq!(status.code(), Code::Unknown);
}

#[test]
fn an_ok_status_in_the_chain_of_an_error_is_unknown() {
    let err: BoxError = Wrapped(Box::new(Status::ok("all good"))).into();
    let status = to_grpc_status(&*err);
    assert_eq!(status.code(), Code::Unknown);
    assert!(
        !status.message().contains("all good"),
        "{}",
        status.message()
    );
    assert_eq!(to_grpc_code(&*err), Code::Unknown);
}

#[tokio::test]
async fn the_layer_never_answers_a_failed_call_with_status_ok() {
    let res = answer_to(ErrorToStatusLayer::new(), || Status::ok("").into()).await;
    assert_eq!(res.headers()["grpc-status"], "2");
    // Nor does the client flavour: a failed call never carries a success
    // code.
    let status = client_status_of(|| Status::ok("").into()).await;
    assert_eq!(status.code(), Code::Unknown);
    let status =
        client_status_of(|| Wrapped(Box::new(Status::ok("middleware said fine"))).into()).await;
    assert_eq!(status.code(), Code::Unknown);
}

#[test]
fn the_client_status_of_a_failed_call_is_never_ok() {
    let status = client_grpc_status(Status::ok("fine").into());
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), "fine");
}

#[test]
fn client_status_maps_rejections_and_keeps_other_errors() {
    let status = client_grpc_status(error("wrapped_rate_limited").unwrap());
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(!status.message().contains(SECRET));
    // Not a rejection: tonic's own mapping, text included for the caller.
    let status = client_grpc_status(error("other").unwrap());
    assert_eq!(status.code(), Code::Unknown);
    assert!(status.message().contains(SECRET));
    let status = client_grpc_status(Status::unavailable("down").into());
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn the_client_flavour_keeps_tonics_mapping_of_other_errors() {
    let res = answer_to(ErrorToStatusLayer::new(), || error("other").unwrap()).await;
    let server = Status::from_header_map(res.headers()).unwrap();
    assert_eq!(server.code(), Code::Unknown);
    assert!(
        !server.message().contains(SECRET),
        "hidden from a remote client"
    );
    let client = client_status_of(|| error("other").unwrap()).await;
    assert_eq!(client.code(), Code::Unknown);
    assert!(client.message().contains(SECRET), "{}", client.message());
    // The error it stands for stays its source, as without the layer.
    let source = std::error::Error::source(&client).expect("the error is kept");
    assert!(source.to_string().contains(SECRET), "{source}");

    // A rejection maps the same way in both flavours.
    let status = client_status_of(|| error("rate_limited").unwrap()).await;
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_client_stacks_rejection_still_maps_to_its_http_status_in_a_handler() {
    use axum::response::IntoResponse;
    // A handler calls a gRPC client whose stack rejects the call, and
    // returns the client's error to axum.
    for (kind, http, retry_after) in [
        ("rate_limited", 429, Some("2")),
        ("circuit_open", 503, Some("3")),
        ("elapsed", 504, None),
    ] {
        let inner = service_fn(move |_req: http::Request<tonic::body::Body>| async move {
            Err::<http::Response<tonic::body::Body>, BoxError>(error(kind).unwrap())
        });
        let err = ClientErrorToStatusLayer::new()
            .layer(inner)
            .oneshot(http::Request::new(tonic::body::Body::empty()))
            .await
            .unwrap_err();
        let status = err.downcast_ref::<Status>().unwrap().clone();
        let res = palisade_http::Rejected::from(status).into_response();
        assert_eq!(res.status(), http, "{kind}");
        match retry_after {
            Some(retry_after) => assert_eq!(res.headers()["retry-after"], retry_after, "{kind}"),
            None => assert!(res.headers().get("retry-after").is_none(), "{kind}"),
        }
    }
}

#[tokio::test]
async fn around_a_channel_to_a_closed_port_the_client_flavour_answers_unavailable() {
    // A port held by a socket that never listens, for the whole test: a
    // connection to it is refused, and no other test can take the port.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_lazy();
    let status = ping_status(
        ServiceBuilder::new()
            .layer(ClientErrorToStatusLayer::new())
            .service(channel.clone()),
    )
    .await;
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    // The transport error is still there, as without the layer.
    assert!(std::error::Error::source(&status).is_some(), "{status:?}");

    let status = ping_status(
        ServiceBuilder::new()
            .layer(ErrorToStatusLayer::new())
            .service(channel),
    )
    .await;
    assert_eq!(status.code(), Code::Unknown, "{status:?}");
    drop(reserved);
}

/// Calls `/test.Pinger/Ping` through `svc` as generated client code does,
/// for the status the call fails with.
async fn ping_status<T>(svc: T) -> Status
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: std::fmt::Debug,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError>,
{
    let mut grpc = tonic::client::Grpc::new(svc);
    grpc.ready().await.unwrap();
    grpc.unary::<Ping, Pong, _>(
        tonic::Request::new(Ping {
            name: "x".to_owned(),
        }),
        PathAndQuery::from_static("/test.Pinger/Ping"),
        tonic_prost::ProstCodec::default(),
    )
    .await
    .unwrap_err()
}

#[tokio::test]
async fn the_layer_answers_trailers_only_responses() {
    let res = answer_to(ErrorToStatusLayer::new(), || error("rate_limited").unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/grpc");
    assert_eq!(res.headers()["grpc-status"], "8");
    assert_eq!(res.headers()["retry-after"], "2");
    let message = res.headers()["grpc-message"].to_str().unwrap();
    assert!(message.contains("policy"), "{message}");
    let status = Status::from_header_map(res.headers()).unwrap();
    assert_eq!(status.code(), Code::ResourceExhausted);
}

#[tokio::test]
async fn a_grpc_web_call_is_answered_in_its_own_protocol() {
    // Outermost, the layer sees gRPC-Web calls before a gRPC-Web
    // translation inside could: its answer speaks the caller's protocol.
    for (sent, answered) in [
        ("application/grpc-web+proto", "application/grpc-web"),
        ("application/grpc-web-text", "application/grpc-web-text"),
        ("application/grpc+proto", "application/grpc"),
    ] {
        let inner = service_fn(|_req: http::Request<tonic::body::Body>| async {
            Err::<http::Response<tonic::body::Body>, BoxError>(error("rate_limited").unwrap())
        });
        let mut request = http::Request::new(tonic::body::Body::empty());
        request
            .headers_mut()
            .insert("content-type", http::HeaderValue::from_static(sent));
        let res = ErrorToStatusLayer::new()
            .layer(inner)
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(res.headers()["content-type"], answered, "{sent}");
        assert_eq!(res.headers()["grpc-status"], "8", "{sent}");
    }
}

/// Hand-written protobuf messages: no protoc needed.
#[derive(Clone, PartialEq, prost::Message)]
struct Ping {
    #[prost(string, tag = "1")]
    name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Pong {
    #[prost(string, tag = "1")]
    message: String,
}

const PING_PATH: &str = "/palisade.test.Echo/Ping";

/// The `palisade.test.Echo` service, written by hand as tonic's generated
/// code would be.
#[derive(Clone, Debug, Default)]
struct EchoServer;

impl tonic::server::NamedService for EchoServer {
    const NAME: &'static str = "palisade.test.Echo";
}

impl tower::Service<http::Request<tonic::body::Body>> for EchoServer {
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            if req.uri().path() != PING_PATH {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let ping = service_fn(|req: tonic::Request<Ping>| async move {
                Ok::<_, Status>(tonic::Response::new(Pong {
                    message: format!("pong {}", req.into_inner().name),
                }))
            });
            let mut grpc =
                tonic::server::Grpc::new(tonic_prost::ProstCodec::<Pong, Ping>::default());
            Ok(grpc.unary(ping, req).await)
        })
    }
}

async fn start_server() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        Server::builder()
            .layer(
                ServiceBuilder::new()
                    .layer(ErrorToStatusLayer::new())
                    .layer(RejectLayer),
            )
            .add_service(EchoServer)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    (addr, stop, task)
}

async fn ping<T>(
    client: &mut tonic::client::Grpc<T>,
    reject: Option<&str>,
) -> Result<String, Status>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: std::fmt::Debug,
    T::ResponseBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError>,
    T::Error: Into<BoxError>,
{
    let mut request = tonic::Request::new(Ping {
        name: "palisade".to_owned(),
    });
    if let Some(kind) = reject {
        request
            .metadata_mut()
            .insert("x-reject", kind.parse().unwrap());
    }
    client
        .ready()
        .await
        .map_err(|e| Status::unknown(format!("not ready: {}", e.into())))?;
    let res = client
        .unary(
            request,
            PathAndQuery::from_static(PING_PATH),
            tonic_prost::ProstCodec::<Ping, Pong>::default(),
        )
        .await?;
    Ok(res.into_inner().message)
}

fn check(kind: &str, result: Result<String, Status>) {
    let (_, _, retry_after, code, _) = *TABLE.iter().find(|row| row.0 == kind).unwrap();
    let status = result.expect_err(kind);
    assert_eq!(i32::from(status.code()), code, "{kind}: {status:?}");
    assert!(!status.message().contains(SECRET), "{kind} leaked");
    assert_eq!(
        status
            .metadata()
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        retry_after,
        "{kind}"
    );
}

#[tokio::test]
async fn a_tonic_server_answers_each_rejection_with_its_code() {
    let (addr, stop, task) = start_server().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);

    assert_eq!(ping(&mut client, None).await.unwrap(), "pong palisade");
    for &(kind, ..) in TABLE {
        check(kind, ping(&mut client, Some(kind)).await);
    }
    // The connection survived every rejection.
    assert_eq!(ping(&mut client, None).await.unwrap(), "pong palisade");

    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the server stops")
        .unwrap();
}

#[tokio::test]
async fn around_a_channel_the_client_sees_its_own_rejections_as_statuses() {
    let (addr, stop, task) = start_server().await;
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // The client's own stack rejects (as a breaker or limiter would)
    // before the request leaves the process.
    let stack = ServiceBuilder::new()
        .layer(ErrorToStatusLayer::new())
        .layer(RejectLayer)
        .service(channel);
    let mut client = tonic::client::Grpc::new(stack);

    for &(kind, ..) in TABLE {
        check(kind, ping(&mut client, Some(kind)).await);
    }
    assert_eq!(ping(&mut client, None).await.unwrap(), "pong palisade");

    let _ = stop.send(());
    tokio::time::timeout(std::time::Duration::from_secs(5), task)
        .await
        .expect("the server stops")
        .unwrap();
}

#[test]
fn polling_a_finished_grpc_response_again_answers_instead_of_polling_the_service() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let inner = || {
        service_fn(|_req: http::Request<tonic::body::Body>| async {
            Ok::<_, BoxError>(http::Response::new(tonic::body::Body::empty()))
        })
    };
    let mut cx = Context::from_waker(Waker::noop());

    // Ready at once, then one call.
    fn call_now<S>(mut svc: S, cx: &mut Context<'_>) -> S::Future
    where
        S: tower::Service<http::Request<tonic::body::Body>>,
    {
        assert!(matches!(svc.poll_ready(cx), Poll::Ready(Ok(()))));
        svc.call(http::Request::new(tonic::body::Body::empty()))
    }

    let mut future = std::pin::pin!(call_now(ErrorToStatusLayer::new().layer(inner()), &mut cx));
    let Poll::Ready(Ok(first)) = future.as_mut().poll(&mut cx) else {
        panic!("answers at once")
    };
    assert!(first.headers().get("grpc-status").is_none());
    let Poll::Ready(Ok(again)) = future.as_mut().poll(&mut cx) else {
        panic!("answers again at once")
    };
    assert!(again.headers().get("grpc-status").is_some());

    let mut future = std::pin::pin!(call_now(
        ClientErrorToStatusLayer::new().layer(inner()),
        &mut cx
    ));
    assert!(matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(_))));
    let Poll::Ready(Err(again)) = future.as_mut().poll(&mut cx) else {
        panic!("answers again at once, with an error")
    };
    assert!(again.is::<Status>(), "{again}");
}

/// A channel whose readiness fails with a rate limit (a client stack's
/// limiter in `Mode::Wait` refusing, say).
#[derive(Clone)]
struct NotReadyChannel;

impl tower::Service<http::Request<tonic::body::Body>> for NotReadyChannel {
    type Response = http::Response<tonic::body::Body>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Err(error("rate_limited").unwrap()))
    }

    fn call(&mut self, _: http::Request<tonic::body::Body>) -> Self::Future {
        std::future::ready(Ok(http::Response::new(tonic::body::Body::empty())))
    }
}

#[tokio::test]
async fn a_readiness_error_reaches_the_generated_client_as_its_status() {
    // tonic's client reports a readiness error as UNKNOWN: the layer keeps
    // it and answers the call with its mapped status instead.
    let status = ping_status(
        ServiceBuilder::new()
            .layer(ClientErrorToStatusLayer::new())
            .service(NotReadyChannel),
    )
    .await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
    assert!(palisade_core::find_rejection(&status).is_some());
}

/// An error that names itself as its source.
#[derive(Debug)]
struct OwnSource;

impl std::fmt::Display for OwnSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("its own source")
    }
}

impl std::error::Error for OwnSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self)
    }
}

#[test]
fn an_error_that_is_its_own_source_still_gets_a_client_status() {
    // Bounded in time: a walk of the chain that never ends would hang.
    let (sent, got) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = sent.send(client_grpc_status(Box::new(OwnSource)));
    });
    let status = got
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the mapping ends");
    assert_eq!(status.code(), Code::Unknown);
    assert_eq!(status.message(), "its own source");
}

//! The palisade stack around clients: a hyper client calling a failing
//! HTTP downstream, and a tonic channel calling a failing gRPC server. The
//! breaker trips, stops the calls, and the fallback answers.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http::Response;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::breaker::CircuitBreakerLayer;
use palisade::core::CircuitState;
use palisade::core::classify::{GrpcErrorsAsFailures, ServerErrorsAsFailures};
use palisade::fallback::{Cause, FallbackLayer, predicate, source};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Stack};
use palisade_workspace::grpc::{InventoryClient, InventoryServer, LookupRequest};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::{ServiceBuilder, ServiceExt};

type Body = BoxBody<Bytes, BoxError>;

fn cached(cause: Cause<Response<Body>>) -> Response<Body> {
    Response::builder()
        .header("x-fallback", cause.trigger().as_str())
        .body(
            Full::new(Bytes::from_static(b"cached"))
                .map_err(|never| match never {})
                .boxed(),
        )
        .unwrap()
}

#[tokio::test]
async fn a_failing_downstream_trips_the_breaker_and_the_fallback_answers() {
    // The downstream: every call fails.
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let downstream = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, Ordering::Relaxed);
            async { (StatusCode::SERVICE_UNAVAILABLE, "down") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, downstream).await });

    let policy = Stack::new("downstream-client")
        .fallback(
            FallbackLayer::builder(source::from_fn(cached)).when(predicate::Or::new(
                predicate::AnyError,
                predicate::ServerErrors,
            )),
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .count_window(5)
                .minimum_calls(5)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(600)),
        )
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(5)))
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let protected = ServiceBuilder::new()
        .layer(policy)
        .map_response(|res: Response<hyper::body::Incoming>| {
            res.map(|body| body.map_err(BoxError::from).boxed())
        })
        .service(client);

    let mut triggers = Vec::new();
    for _ in 0..20 {
        let request = http::Request::get(format!("http://{addr}/"))
            .body(Empty::new())
            .unwrap();
        let response = protected.clone().oneshot(request).await.unwrap();
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "the caller always gets an answer"
        );
        triggers.push(
            response.headers()["x-fallback"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"cached");
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    assert_eq!(
        calls.load(Ordering::Relaxed),
        5,
        "the breaker stopped calling after five failures"
    );
    assert!(
        triggers[..5].iter().all(|t| t == "response"),
        "{triggers:?}"
    );
    assert!(
        triggers[5..].iter().all(|t| t == "rejection"),
        "{triggers:?}"
    );
}

#[tokio::test]
async fn a_stack_around_a_tonic_channel_fails_fast_with_unavailable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let server = InventoryServer::new(move |_request: LookupRequest| {
        counted.fetch_add(1, Ordering::Relaxed);
        async {
            Err::<palisade_workspace::grpc::LookupReply, _>(Status::unavailable("warehouse down"))
        }
    });
    tokio::spawn(async move {
        Server::builder()
            .add_service(server)
            .serve_with_incoming(TcpIncoming::from(listener))
            .await
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let policy = Stack::new("inventory-client")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcErrorsAsFailures::new())
                .count_window(3)
                .minimum_calls(3)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(600)),
        )
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(5)))
        .grpc_client_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let mut client = InventoryClient::new(ServiceBuilder::new().layer(policy).service(channel));

    for _ in 0..3 {
        let status = client
            .lookup(LookupRequest {
                sku: "x".to_owned(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(
            status.message(),
            "warehouse down",
            "the server's own answer"
        );
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let status = client
        .lookup(LookupRequest {
            sku: "x".to_owned(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert!(status.message().contains("inventory-client"), "{status:?}");
    // The open breaker's rejection is the status's source: passed on to
    // axum, it still answers 503 with its Retry-After.
    let rejection = palisade::core::find_rejection(&status).expect("the rejection is kept");
    assert_eq!(rejection.policy(), "inventory-client");
    assert!(rejection.retry_after().is_some());
    assert_eq!(
        calls.load(Ordering::Relaxed),
        3,
        "the open breaker made no call"
    );
}

//! The palisade stack on real tonic servers (127.0.0.1:0) called by real
//! tonic clients: every rejection reaches the client as its gRPC code.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::classify::GrpcErrorsAsFailures;
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::key::PeerIp;
use palisade::ratelimit::{OnMissingKey, RateLimitLayer};
use palisade::timeout::TimeoutLayer;
use palisade::{Stack, StackLayer};
use palisade_workspace::grpc::{InventoryClient, InventoryServer, LookupReply, LookupRequest};
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Server};
use tonic::{Code, Status};
use tower::Layer;

/// Answers by SKU: `slow` sleeps 30 s, `panic` panics, `hold` tells the
/// test it has started and waits for the test to let it go, anything else
/// answers at once.
async fn lookup(
    request: LookupRequest,
    hold: tokio::sync::watch::Receiver<bool>,
    holding: Arc<Notify>,
) -> Result<LookupReply, Status> {
    match request.sku.as_str() {
        "slow" => tokio::time::sleep(Duration::from_secs(30)).await,
        "panic" => panic!("secret internal detail"),
        "hold" => {
            holding.notify_one();
            let mut hold = hold;
            let _ = hold.wait_for(|released| *released).await;
        }
        _ => {}
    }
    Ok(LookupReply {
        sku: request.sku,
        count: 7,
    })
}

struct Running {
    client: InventoryClient<Channel>,
    release: tokio::sync::watch::Sender<bool>,
    /// Notified when a `hold` call has reached the service.
    holding: Arc<Notify>,
    _stop: oneshot::Sender<()>,
}

async fn start<L, ResBody>(policy: L) -> Running
where
    L: Layer<tonic::service::Routes> + Clone + Send + 'static,
    L::Service: tower::Service<http::Request<tonic::body::Body>, Response = http::Response<ResBody>>
        + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Future: Send + 'static,
    <L::Service as tower::Service<http::Request<tonic::body::Body>>>::Error:
        Into<palisade::BoxError> + Send,
    ResBody: http_body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<palisade::BoxError>,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let (release, hold) = tokio::sync::watch::channel(false);
    let holding = Arc::new(Notify::new());
    let signal = holding.clone();
    let service =
        InventoryServer::new(move |request| lookup(request, hold.clone(), signal.clone()));
    tokio::spawn(async move {
        Server::builder()
            .layer(policy)
            .add_service(service)
            .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    Running {
        client: InventoryClient::new(channel),
        release,
        holding,
        _stop: stop,
    }
}

async fn call(client: &mut InventoryClient<Channel>, sku: &str) -> Result<u32, Status> {
    let request = LookupRequest {
        sku: sku.to_owned(),
    };
    tokio::time::timeout(Duration::from_secs(10), client.lookup(request))
        .await
        .expect("the server answers in time")
        .map(|reply| reply.into_inner().count)
}

#[tokio::test]
async fn rate_limited_is_resource_exhausted() {
    let policy = Stack::new("inventory")
        .rate_limit(RateLimitLayer::builder().quota(2, Duration::from_secs(3600)))
        .grpc_errors()
        .build()
        .unwrap();
    let mut running = start(policy).await;
    assert_eq!(call(&mut running.client, "a").await.unwrap(), 7);
    assert_eq!(call(&mut running.client, "b").await.unwrap(), 7);
    let status = call(&mut running.client, "c").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.metadata().get("retry-after").is_some(), "{status:?}");
}

#[tokio::test]
async fn a_limit_keyed_by_peer_finds_the_peer_of_a_tonic_connection() {
    // Rejecting requests without a key: had the limiter not found the
    // peer's address, every call would fail with INVALID_ARGUMENT.
    let policy = Stack::new("inventory")
        .rate_limit(
            RateLimitLayer::builder()
                .quota(2, Duration::from_secs(3600))
                .on_missing_key(OnMissingKey::Reject)
                .keyed_by(PeerIp::new()),
        )
        .grpc_errors()
        .build()
        .unwrap();
    let mut running = start(policy).await;
    assert_eq!(call(&mut running.client, "a").await.unwrap(), 7);
    assert_eq!(call(&mut running.client, "b").await.unwrap(), 7);
    let status = call(&mut running.client, "c").await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
}

#[tokio::test]
async fn an_open_circuit_is_unavailable() {
    let policy = Stack::new("inventory")
        .circuit_breaker(CircuitBreakerLayer::builder().classifier(GrpcErrorsAsFailures::new()))
        .grpc_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let mut running = start(policy).await;
    assert_eq!(call(&mut running.client, "a").await.unwrap(), 7);
    breaker.force_open();
    let status = call(&mut running.client, "a").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
}

#[tokio::test]
async fn a_full_bulkhead_is_unavailable() {
    let policy = Stack::new("inventory")
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(1))
        .grpc_errors()
        .build()
        .unwrap();
    let bulkhead = policy.concurrency_limit().clone();
    let mut running = start(policy).await;
    let mut holder = running.client.clone();
    let held = tokio::spawn(async move { call(&mut holder, "hold").await });
    // Once the held call has reached the service, its slot is taken.
    tokio::time::timeout(Duration::from_secs(10), running.holding.notified())
        .await
        .expect("the held call reaches the service");
    let status = call(&mut running.client, "quick").await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    running.release.send(true).unwrap();
    assert_eq!(held.await.unwrap().unwrap(), 7);
    assert_eq!(bulkhead.in_flight(), 0);
}

#[tokio::test]
async fn a_timeout_is_deadline_exceeded() {
    let policy = Stack::new("inventory")
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .grpc_errors()
        .build()
        .unwrap();
    let mut running = start(policy).await;
    let status = call(&mut running.client, "slow").await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert_eq!(call(&mut running.client, "fast").await.unwrap(), 7);
}

/// Sends one `Lookup` over plain HTTP/2 with a `grpc-timeout` header and
/// no client-side deadline, and returns the response's `grpc-status`.
async fn lookup_with_grpc_timeout(addr: SocketAddr, sku: &str, grpc_timeout: &str) -> String {
    use http_body_util::BodyExt;
    use prost::Message;

    let message = LookupRequest {
        sku: sku.to_owned(),
    }
    .encode_to_vec();
    let mut frame = vec![0_u8];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&message);
    let request = http::Request::post(format!("http://{addr}{}", palisade_workspace::grpc::LOOKUP))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", grpc_timeout)
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let response = tokio::time::timeout(Duration::from_secs(10), client.request(request))
        .await
        .expect("the server answers in time")
        .unwrap();
    if let Some(status) = response.headers().get("grpc-status") {
        return status.to_str().unwrap().to_owned();
    }
    let collected = response.into_body().collect().await.unwrap();
    let trailers = collected
        .trailers()
        .expect("a gRPC answer ends with trailers");
    trailers["grpc-status"].to_str().unwrap().to_owned()
}

/// Serves the inventory behind `policy` with axum's server instead of
/// tonic's. tonic's server acts on `grpc-timeout` itself (it answers
/// `CANCELLED` when the client's deadline passes), and its timer, started
/// first, can answer before palisade's; axum's does not, so every answer
/// here is palisade's.
async fn start_without_tonics_deadline<L>(policy: L) -> (SocketAddr, oneshot::Sender<()>)
where
    L: Layer<axum::Router>,
    L::Service: tower::Service<
            axum::extract::Request,
            Response = http::Response<axum::body::Body>,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    <L::Service as tower::Service<axum::extract::Request>>::Future: Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let (release, hold) = tokio::sync::watch::channel(false);
    let holding = Arc::new(Notify::new());
    let service =
        InventoryServer::new(move |request| lookup(request, hold.clone(), holding.clone()));
    let router = tonic::service::Routes::new(service).into_axum_router();
    let app = policy.layer(router);
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _release = release;
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service(app),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop)
}

/// Counts the malformed headers the stack reports, by header name.
#[derive(Default)]
struct Malformed(std::sync::Mutex<Vec<&'static str>>);

impl palisade::core::MetricsSink for Malformed {
    fn record(&self, event: &palisade::core::Event<'_>) {
        if let palisade::core::Event::MalformedHeader { header, .. } = event {
            self.0.lock().unwrap().push(header);
        }
    }
}

#[tokio::test]
async fn the_clients_grpc_timeout_shortens_the_servers_deadline() {
    let malformed = Arc::new(Malformed::default());
    let policy = Stack::new("inventory")
        .metrics(palisade::core::Metrics::from_arc(malformed.clone()))
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(60))
                .http(),
        )
        .grpc_errors()
        .build()
        .unwrap();
    let (addr, _stop) = start_without_tonics_deadline(policy).await;
    let started = std::time::Instant::now();
    // 100 ms, where the server's own deadline is a minute: DEADLINE_EXCEEDED.
    assert_eq!(lookup_with_grpc_timeout(addr, "slow", "100m").await, "4");
    // Well below the 10 s after which the call gives up on its own.
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(malformed.0.lock().unwrap().is_empty());
    // A malformed header is ignored, and reported: the call is served.
    assert_eq!(lookup_with_grpc_timeout(addr, "fast", "soon").await, "0");
    assert_eq!(*malformed.0.lock().unwrap(), ["grpc-timeout"]);
}

#[tokio::test]
async fn a_panic_is_internal_and_the_server_keeps_serving() {
    let policy: StackLayer<_, _, _, _, _, _, _> = Stack::new("inventory")
        .catch_panic(CatchPanicLayer::builder())
        .grpc_errors()
        .build()
        .unwrap();
    let mut running = start(policy).await;
    for _ in 0..3 {
        let status = call(&mut running.client, "panic").await.unwrap_err();
        assert_eq!(status.code(), Code::Internal, "{status:?}");
        assert!(!status.message().contains("secret internal detail"));
        assert_eq!(call(&mut running.client, "fine").await.unwrap(), 7);
    }
}

#[tokio::test]
async fn the_full_stack_serves_and_classifies_grpc_failures() {
    let policy = Stack::new("inventory")
        .rate_limit(RateLimitLayer::builder().quota(1000, Duration::from_secs(1)))
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(GrpcErrorsAsFailures::new())
                .count_window(4)
                .minimum_calls(4)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(600)),
        )
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(8))
        .catch_panic(CatchPanicLayer::builder())
        .grpc_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let mut running = start(policy).await;
    assert_eq!(call(&mut running.client, "fine").await.unwrap(), 7);
    // Panics and timeouts below the breaker count as failures.
    assert_eq!(
        call(&mut running.client, "panic").await.unwrap_err().code(),
        Code::Internal
    );
    assert_eq!(
        call(&mut running.client, "slow").await.unwrap_err().code(),
        Code::DeadlineExceeded
    );
    assert_eq!(
        call(&mut running.client, "panic").await.unwrap_err().code(),
        Code::Internal
    );
    let status = call(&mut running.client, "fine").await.unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unavailable,
        "the breaker opened: {status:?}"
    );
    assert_eq!(breaker.state(), palisade::core::CircuitState::Open);
}

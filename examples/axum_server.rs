//! An axum server with one global palisade policy and stricter per-route
//! policies.
//!
//! - The global policy `api`, wrapped around the whole `Router` (so that
//!   it runs once per request, before routing), limits each client IP,
//!   bounds every request's time, caps the work in flight and contains
//!   panics.
//! - `POST /checkout` has its own policy `checkout`: a much tighter rate
//!   limit and concurrency limit, independent of the global one.
//! - `GET /recommendations` calls a flaky dependency; its policy
//!   `recommendations` has a circuit breaker and a fallback that answers a
//!   static list of popular items while the dependency is failing.
//!
//! Run with `cargo run --example axum_server`. It starts the server on
//! 127.0.0.1 (any free port), sends a few requests to each route, prints
//! what they got, and exits; pass `--serve` to keep serving until Ctrl-C
//! (try `curl -i http://127.0.0.1:PORT/slow`).

#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, Response, StatusCode};
use axum::routing::{get, post};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::fallback::{Cause, FallbackLayer, predicate, source};
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::ratelimit::key::PeerIp;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Stack};
use tokio::net::TcpListener;
use tower::Layer;

async fn products() -> &'static str {
    "[\"apple\", \"pear\", \"plum\"]"
}

async fn slow() -> &'static str {
    tokio::time::sleep(Duration::from_secs(3)).await;
    "too late"
}

async fn broken() -> &'static str {
    panic!("products index is corrupted");
}

async fn checkout() -> &'static str {
    tokio::time::sleep(Duration::from_millis(200)).await;
    "order placed"
}

/// A dependency that fails four calls out of five.
async fn recommendations(calls: Arc<AtomicU64>) -> (StatusCode, &'static str) {
    if calls.fetch_add(1, Ordering::Relaxed).is_multiple_of(5) {
        (StatusCode::OK, "[\"personalised\"]")
    } else {
        (StatusCode::BAD_GATEWAY, "recommendation engine failed")
    }
}

/// The routes inside the global policy.
///
/// The policy wraps the whole `Router` rather than going through
/// `Router::layer`: both meet every request, paths no route matches
/// included, but `Router::layer` runs the stack after routing, with a
/// boxed clone of the layered route and a boxed future per request, where
/// the wrapped router runs it once, before routing.
fn app() -> Result<
    impl tower::Service<
        axum::extract::Request,
        Response = axum::response::Response,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    BoxError,
> {
    // One policy for everything: one limiter per client IP shared by every
    // route, one bulkhead, one deadline.
    let api = Stack::new("api")
        .rate_limit(
            RateLimitLayer::builder()
                .quota(100, Duration::from_secs(1))
                .keyed_by(PeerIp::new()),
        )
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(64))
        .catch_panic(CatchPanicLayer::builder())
        .http_errors()
        .build()?;

    // Checkout is expensive: two per second and two at a time, whatever the
    // global policy allows.
    let checkout_policy = Stack::new("checkout")
        .rate_limit(RateLimitLayer::builder().quota(2, Duration::from_secs(1)))
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(2))
        .http_errors()
        .build()?;

    // Recommendations degrade to a static list when the engine fails or
    // while the breaker is open.
    let recommendations_policy = Stack::new("recommendations")
        .fallback(
            FallbackLayer::builder(source::from_fn(|cause: Cause<Response<Body>>| {
                // "response" when the engine answered 5xx, "rejection" when
                // the open breaker did not even call it.
                Response::builder()
                    .header("x-degraded", cause.trigger().as_str())
                    .body(Body::from("[\"popular\", \"classics\"]"))
                    .expect("a static response is valid")
            }))
            .when(predicate::Or::new(
                predicate::AnyError,
                predicate::ServerErrors,
            )),
        )
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .count_window(10)
                .minimum_calls(5)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(10)),
        )
        .http_errors()
        .build()?;

    let calls = Arc::new(AtomicU64::new(0));
    let router = Router::new()
        .route("/products", get(products))
        .route("/slow", get(slow))
        .route("/broken", get(broken))
        .route("/checkout", post(checkout).route_layer(checkout_policy))
        .route(
            "/recommendations",
            get(move || recommendations(calls.clone())).route_layer(recommendations_policy),
        );
    Ok(api.layer(router))
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

async fn send(
    client: &HttpClient,
    method: &str,
    url: &str,
) -> Result<(StatusCode, String, String), BoxError> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .body(Body::empty())?;
    let response = client.request(request).await?;
    let status = response.status();
    let note = match (
        response.headers().get("retry-after"),
        response.headers().get("x-degraded"),
    ) {
        (Some(retry), _) => format!("retry-after {}", retry.to_str().unwrap_or("?")),
        (_, Some(why)) => format!("fallback ({})", why.to_str().unwrap_or("?")),
        _ => String::new(),
    };
    let body = response.into_body().collect().await?.to_bytes();
    let mut body = String::from_utf8_lossy(&body).into_owned();
    body.truncate(60);
    Ok((status, note, body))
}

async fn tour(addr: SocketAddr) -> Result<(), BoxError> {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let base = format!("http://{addr}");
    println!(
        "{:<6} {:<18} {:<24} {:<18} body",
        "method", "path", "status", "note"
    );
    let show = async |method: &str, path: &str| -> Result<(), BoxError> {
        let (status, note, body) = send(&client, method, &format!("{base}{path}")).await?;
        println!(
            "{method:<6} {path:<18} {:<24} {note:<18} {body}",
            status.to_string()
        );
        Ok(())
    };
    show("GET", "/products").await?;
    show("GET", "/slow").await?;
    show("GET", "/broken").await?;
    show("GET", "/products").await?;
    for _ in 0..3 {
        show("POST", "/checkout").await?;
    }
    for _ in 0..8 {
        show("GET", "/recommendations").await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let keep_serving = std::env::args().any(|a| a == "--serve");
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    println!("axum server on http://{addr}\n");

    let app = app()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            axum::ServiceExt::<axum::extract::Request>::into_make_service_with_connect_info::<
                SocketAddr,
            >(app),
        )
        .with_graceful_shutdown(async {
            let _ = stopped.await;
        })
        .await
    });

    tour(addr).await?;

    if keep_serving {
        println!("\nserving on http://{addr}; Ctrl-C to stop");
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    Ok(())
}

//! Protecting the calls a service makes to a flaky downstream.
//!
//! A hyper client calls a pricing service that fails most calls and
//! sometimes hangs. Around the client, one palisade stack:
//!
//! - a **timeout** of 300 ms, so a hung call costs 300 ms, not forever:
//!   the body is read inside the stack, so a downstream that sends its
//!   headers and then stalls is cut off too (a stack around the bare
//!   client would bound the time to the headers only);
//! - a **circuit breaker**, so that once the downstream is clearly failing
//!   the client stops calling it and fails fast;
//! - a **fallback**, so the caller still gets a price: the last one known,
//!   marked as stale.
//!
//! Run with `cargo run --example client_side`. It starts the downstream on
//! 127.0.0.1 (any free port), makes twenty calls through the stack, prints
//! what each one got and the breaker's view, and exits. The breaker
//! probes the downstream again 400 ms after opening: one probe call, which
//! closes it if the downstream answered, or opens it again.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use palisade::breaker::CircuitBreakerLayer;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::fallback::{Cause, FallbackLayer, predicate, source};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Stack};
use tokio::net::TcpListener;
use tower::{ServiceBuilder, ServiceExt};

type Body = BoxBody<Bytes, BoxError>;

/// The downstream: answers one call in four, hangs one in eight, fails the
/// rest.
async fn price(calls: Arc<AtomicU64>) -> (StatusCode, &'static str) {
    match calls.fetch_add(1, Ordering::Relaxed) % 8 {
        0 | 4 => (StatusCode::OK, "12.50"),
        3 => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            (StatusCode::OK, "12.50")
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "pricing database down"),
    }
}

fn stale_price(cause: Cause<Response<Body>>) -> Response<Body> {
    let why = match cause.rejection() {
        Some(rejection) => rejection.reason().as_str(),
        None if cause.response().is_some() => "downstream 5xx",
        None => "transport error",
    };
    Response::builder()
        .header("x-stale", why)
        .body(
            Full::new(Bytes::from_static(b"12.00"))
                .map_err(|never| match never {})
                .boxed(),
        )
        .expect("a static response is valid")
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let calls = Arc::new(AtomicU64::new(0));
    let downstream = calls.clone();
    let app = Router::new().route("/price", get(move || price(downstream.clone())));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let policy =
        Stack::new("pricing-client")
            .fallback(FallbackLayer::builder(source::from_fn(stale_price)).when(
                predicate::Or::new(predicate::AnyError, predicate::ServerErrors),
            ))
            .circuit_breaker(
                CircuitBreakerLayer::builder()
                    .classifier(ServerErrorsAsFailures)
                    .count_window(8)
                    .minimum_calls(4)
                    .failure_rate_threshold(0.5)
                    .open_wait(Duration::from_millis(400))
                    .half_open_probes(1),
            )
            .timeout(TimeoutLayer::builder().timeout(Duration::from_millis(300)))
            .build()?;
    let breaker = policy.circuit_breaker().handle();

    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    // The body is read below the policy, inside the timeout, and the
    // breaker judges the whole call.
    let pricing = ServiceBuilder::new()
        .layer(policy)
        .map_err(BoxError::from)
        .and_then(|res: Response<hyper::body::Incoming>| async move {
            let (parts, body) = res.into_parts();
            let bytes = body.collect().await?.to_bytes();
            let body: Body = Full::new(bytes).map_err(|never| match never {}).boxed();
            Ok::<_, BoxError>(Response::from_parts(parts, body))
        })
        .service(client);

    println!("downstream on http://{addr}/price\n");
    println!(
        "{:<5} {:<7} {:<24} {:<10} {:>8}",
        "call", "price", "source", "breaker", "took"
    );
    for call in 1..=20 {
        tokio::time::sleep(Duration::from_millis(60)).await;
        let started = Instant::now();
        let request = Request::get(format!("http://{addr}/price")).body(Empty::new())?;
        let response = pricing.clone().oneshot(request).await?;
        let source = match response.headers().get("x-stale") {
            Some(why) => format!("stale ({})", why.to_str().unwrap_or("?")),
            None => "downstream".to_owned(),
        };
        let body = response.into_body().collect().await?.to_bytes();
        println!(
            "{call:<5} {:<7} {source:<24} {:<10} {:>6}ms",
            String::from_utf8_lossy(&body),
            breaker.state().as_str(),
            started.elapsed().as_millis()
        );
    }
    println!(
        "\nthe downstream saw {} of 20 calls; the breaker answered the others at once",
        calls.load(Ordering::Relaxed)
    );
    Ok(())
}

//! The server of the end-to-end load run: a one-route axum app, bare or
//! behind palisade's full stack, for a load generator (`wrk`, `oha`) on
//! the loopback interface.
//!
//! ```text
//! cargo run --release --example bench_axum -- bare           [--workers N] [--port P]
//! cargo run --release --example bench_axum -- palisade       [--workers N] [--port P]
//! cargo run --release --example bench_axum -- palisade-route-layer [--workers N] [--port P]
//! ```
//!
//! `palisade` puts the stack around the whole router, as a server-wide
//! policy is best applied: every request meets it once, before routing.
//! `palisade-route-layer` applies the same stack with `Router::layer`, which
//! axum runs after routing (on each route and on the fallback) and pays
//! for with a boxed clone of the layered route service and a boxed
//! response future on every request.
//!
//! It prints `listening on http://ADDR` once it accepts connections and
//! serves `GET /` until Ctrl-C (SIGINT). The full stack is configured as
//! an HTTP server would be (5xx count as breaker failures, per-request
//! deadlines, panics become 500s, rejections become responses), with a
//! rate and concurrency limit no load run reaches, so the run measures
//! what the stack costs, not what it refuses.
//! `scripts/bench_report.py` runs it for `BENCHMARKS.md`.

#![allow(clippy::print_stdout)]

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Response, StatusCode};
use axum::routing::get;
use axum::{Router, ServiceExt};
use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::fallback::{Cause, FallbackLayer, source};
use palisade::panic::http::CatchPanicHttpLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Stack};
use tokio::net::TcpListener;
use tower::Layer;

async fn hello() -> &'static str {
    "hello, world"
}

/// Where the server puts the stack, if anywhere.
enum Mode {
    Bare,
    AroundRouter,
    RouteLayer,
}

/// Builds the full stack, configured as an HTTP server would configure it.
macro_rules! policy {
    () => {
        Stack::new("bench")
            .fallback(FallbackLayer::builder(source::from_fn(
                |_: Cause<Response<Body>>| {
                    let mut response = Response::new(Body::from("degraded"));
                    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                    response
                },
            )))
            .rate_limit(RateLimitLayer::builder().quota(1_000_000_000, Duration::from_secs(1)))
            .circuit_breaker(CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures))
            .timeout(
                TimeoutLayer::builder()
                    .timeout(Duration::from_secs(30))
                    .http(),
            )
            .concurrency_limit(BulkheadLayer::builder().max_concurrent(4096))
            .catch_panic(CatchPanicHttpLayer::builder())
            .http_errors()
            .build()
    };
}

/// The value following `flag` on the command line.
fn option(args: &[String], flag: &str) -> Option<String> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = match args.first().map(String::as_str) {
        Some("bare") => Mode::Bare,
        Some("palisade") => Mode::AroundRouter,
        Some("palisade-route-layer") => Mode::RouteLayer,
        _ => {
            return Err(
                "usage: bench_axum bare|palisade|palisade-route-layer [--workers N] [--port P]"
                    .into(),
            );
        }
    };
    let workers: usize = option(&args, "--workers").map_or(Ok(1), |w| w.parse())?;
    if workers < 1 {
        return Err(format!("--workers: {workers} is too few, at least 1 is needed").into());
    }
    let port: u16 = option(&args, "--port").map_or(Ok(0), |p| p.parse())?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let app = Router::new().route("/", get(hello));
        match mode {
            Mode::Bare => {
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await?
            }
            Mode::RouteLayer => {
                let app = app.layer(policy!()?);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await?;
            }
            Mode::AroundRouter => {
                let app = policy!()?.layer(app);
                let app = ServiceExt::<Request>::into_make_service(app);
                axum::serve(listener, app)
                    .with_graceful_shutdown(stop)
                    .await?;
            }
        }
        Ok::<_, BoxError>(())
    })
}

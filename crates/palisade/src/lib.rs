//! palisade: composable tower layers that keep a service alive under
//! faults.
//!
//! This facade re-exports every palisade crate behind one feature each and
//! assembles them into one ordered [`Stack`]:
//!
//! | module | feature | what it holds |
//! |---|---|---|
//! | [`core`] (and the root) | always | metrics trait and events, rejection errors, outcome classification, clock, `ConfigError` |
//! | `fallback` | `fallback` | answers a degraded response in place of a rejection or a failure |
//! | `ratelimit` | `ratelimit` | GCRA rate limits, global or keyed, with bounded memory |
//! | `breaker` | `breaker` | the circuit breaker |
//! | `timeout` | `timeout` | per-request deadlines |
//! | `bulkhead` | `bulkhead` | the concurrency limit, fixed or adaptive |
//! | `panic` | `panic` | turns panics into ordinary, counted failures |
//! | `http` | `http`, `axum`, `tonic` | rejections as HTTP responses and gRPC statuses |
//! | `metrics` | `metrics` | the metrics crate; its Prometheus, `metrics` facade and `tracing` adapters, snapshot and dashboard are features of `palisade-metrics` (`prometheus`, `metrics`, `tracing`, `snapshot`, `dashboard`), all on with `full` |
//! | `task` | `task` | supervised tasks, task groups, worker pools, offload queues |
//! | `chaos` | `chaos` | deterministic fault injection for tests and demos |
//!
//! The default features are the six request layers and the HTTP mapping;
//! `full` turns everything on.
//!
//! # Protecting an axum server
//!
//! ```
//! use std::time::Duration;
//! use axum::{routing::get, Router};
//! use palisade::breaker::CircuitBreakerLayer;
//! use palisade::bulkhead::BulkheadLayer;
//! use palisade::core::classify::ServerErrorsAsFailures;
//! use palisade::panic::CatchPanicLayer;
//! use palisade::ratelimit::RateLimitLayer;
//! use palisade::timeout::TimeoutLayer;
//! use palisade::Stack;
//!
//! # fn main() -> Result<(), palisade::ConfigError> {
//! let policy = Stack::new("api")
//!     .rate_limit(RateLimitLayer::builder().quota(200, Duration::from_secs(1)))
//!     .circuit_breaker(CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures))
//!     .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(5)).http())
//!     .concurrency_limit(BulkheadLayer::builder().max_concurrent(128))
//!     .catch_panic(CatchPanicLayer::builder())
//!     .http_errors()
//!     .build()?;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     .layer(policy);
//! # let _ = app;
//! # Ok(())
//! # }
//! ```
//!
//! ## Around the router, or on its routes
//!
//! `Router::layer` runs the stack after routing, on each of the router's
//! routes and on its fallback; `route_layer`, on matched routes only. To
//! put one policy in front of the whole server, run once before routing,
//! wrap the router and serve the result:
//!
//! ```no_run
//! # use std::time::Duration;
//! use axum::extract::Request;
//! use axum::{routing::get, Router, ServiceExt};
//! use palisade::ratelimit::RateLimitLayer;
//! use palisade::{BoxError, Stack};
//! use tower::Layer;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let policy = Stack::new("api")
//!     .rate_limit(RateLimitLayer::builder().quota(200, Duration::from_secs(1)))
//!     .http_errors()
//!     .build()?;
//! let router = Router::new().route("/", get(|| async { "hello" }));
//!
//! let app = policy.layer(router);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
//! axum::serve(listener, ServiceExt::<Request>::into_make_service(app)).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Wrapping is also the cheaper of the two: for every request to a route
//! it has layered, axum clones the layered service into a box and boxes
//! its response future, which holds the whole stack's future. The
//! end-to-end run in the repository's `BENCHMARKS.md` measures both.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod parts;
pub mod stack;

pub use self::stack::{Omitted, Part, Parts, Shared, Stack, StackLayer};

/// The contracts every layer keeps (`palisade-core`).
pub use palisade_core as core;
pub use palisade_core::{
    BoxError, CircuitOpen, Clock, ConfigError, Elapsed, Event, Fanout, Leak, ManualClock, Metrics,
    MetricsSink, MissingKey, NoopSink, Outcome, Overloaded, Panicked, PolicyName, RateLimited,
    Rejection, find_rejection,
};

/// The circuit breaker (`palisade-breaker`).
#[cfg(feature = "breaker")]
#[cfg_attr(docsrs, doc(cfg(feature = "breaker")))]
pub use palisade_breaker as breaker;

/// The concurrency limit (`palisade-bulkhead`).
#[cfg(feature = "bulkhead")]
#[cfg_attr(docsrs, doc(cfg(feature = "bulkhead")))]
pub use palisade_bulkhead as bulkhead;

/// Deterministic fault injection (`palisade-chaos`).
#[cfg(feature = "chaos")]
#[cfg_attr(docsrs, doc(cfg(feature = "chaos")))]
pub use palisade_chaos as chaos;

/// The fallback layer (`palisade-fallback`).
#[cfg(feature = "fallback")]
#[cfg_attr(docsrs, doc(cfg(feature = "fallback")))]
pub use palisade_fallback as fallback;

/// HTTP and gRPC error mapping (`palisade-http`).
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
pub use palisade_http as http;

/// Metrics adapters, snapshot and dashboard (`palisade-metrics`).
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub use palisade_metrics as metrics;

/// The panic-catch layer (`palisade-panic`).
#[cfg(feature = "panic")]
#[cfg_attr(docsrs, doc(cfg(feature = "panic")))]
pub use palisade_panic as panic;

/// Rate limiting (`palisade-ratelimit`).
#[cfg(feature = "ratelimit")]
#[cfg_attr(docsrs, doc(cfg(feature = "ratelimit")))]
pub use palisade_ratelimit as ratelimit;

/// Supervised tasks (`palisade-task`).
#[cfg(feature = "task")]
#[cfg_attr(docsrs, doc(cfg(feature = "task")))]
pub use palisade_task as task;

/// The timeout layer (`palisade-timeout`).
#[cfg(feature = "timeout")]
#[cfg_attr(docsrs, doc(cfg(feature = "timeout")))]
pub use palisade_timeout as timeout;

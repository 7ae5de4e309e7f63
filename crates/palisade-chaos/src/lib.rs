//! Deterministic fault injection for palisade: seeded errors, panics and
//! latency as a tower layer.
//!
//! Resilience that is never exercised is resilience nobody knows works.
//! [`ChaosLayer`] sits in front of a service and, for a configured share of
//! requests, answers with an injected error, panics, or delays the call.
//! Every decision comes from a seeded generator indexed by the request's
//! sequence number, so a run with the same seed and the same request order
//! injects exactly the same faults.
//!
//! - **Errors** answer [`InjectedFault`] without calling the inner service,
//!   as a failing dependency would.
//! - **Panics** are raised in `call` or when the response future is first
//!   polled after its delay ([`PanicPoint`]), for a panic-catch layer to
//!   contain.
//! - **Latency** is a uniform delay and/or rare spikes, slept on tokio's
//!   timer before the inner future is polled, so tests drive it with paused
//!   time.
//!
//! Faults can be forced per request with a [`FaultOverride`] request
//! extension, and, only when the user enables it, with the
//! `x-palisade-chaos` header (for test environments: a client that can send
//! the header can make the service fail). A plain [`ChaosLayer`] reads
//! neither: [`ChaosLayer::http`] gives the layer that does, for HTTP
//! requests, and [`ChaosLayer::with_overrides`] one that reads any
//! [`FaultSource`].
//!
//! A disabled layer costs a branch: no generator step, no clock read, no
//! allocation. It can be switched on and off at run time through
//! [`ChaosLayer::set_enabled`], and [`ChaosLayer::stats`] counts what was
//! injected.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_chaos::{ChaosLayer, InjectedFault};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let chaos = ChaosLayer::builder()
//!     .name("flaky-backend")
//!     .seed(7)
//!     .error_rate(0.5)
//!     .build()
//!     .unwrap();
//! let svc = chaos.layer(service_fn(|x: u32| async move { Ok::<_, std::io::Error>(x) }));
//!
//! let mut failed = 0;
//! for i in 0..1000 {
//!     if let Err(err) = svc.clone().oneshot(i).await {
//!         assert!(err.is::<InjectedFault>());
//!         failed += 1;
//!     }
//! }
//! assert_eq!(failed, chaos.stats().errors);
//! assert!((400..600).contains(&failed));
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
mod fault;
pub mod future;
mod layer;
mod service;

pub use self::error::InjectedFault;
pub use self::fault::{Fault, FaultOverride, FaultSource, HttpFaults, NoOverride, parse_header};
pub use self::layer::{ChaosBuilder, ChaosLayer, ChaosOverrideLayer, ChaosStats, PanicPoint};
pub use self::service::Chaos;

/// The request header read by [`HttpFaults::with_header`].
pub const CHAOS_HEADER: &str = "x-palisade-chaos";

//! A concurrency limit (bulkhead) for tower services, fixed or adaptive.
//!
//! [`BulkheadLayer`] bounds how many calls run inside a service at once.
//! A request that finds a free slot runs at once. One that finds every
//! slot taken is rejected with [`Overloaded`](error::Overloaded), or, when
//! [`max_wait`](BulkheadLayerBuilder::max_wait) is set, waits in a bounded
//! FIFO queue until a slot frees up or its wait runs out.
//!
//! - **One layer, one limit.** The slots live in the layer, created when
//!   it is built. Every service it wraps, every clone and every axum route
//!   it is applied to draw from the same slots.
//! - **Admission per request.** `poll_ready` never waits for a slot, so
//!   the layer works with axum's clone-per-request model (see below).
//! - **Nothing leaks.** A slot is given back when the call completes,
//!   fails, panics, or when its response future is dropped, and it goes to
//!   the oldest waiter first. Every slot taken or given back is one
//!   [`Event::InFlightChanged`](palisade_core::Event::InFlightChanged),
//!   so the sum of their deltas is exact; the count an event carries is the
//!   count right after its own change, and events of different threads
//!   may reach a sink in another order.
//! - **Cheap when there is room.** Taking a free slot is one
//!   compare-and-swap: no lock, no allocation, no clock read (an adaptive
//!   limit reads the clock once at admission and once at completion).
//!   Only waiting takes a lock and allocates.
//! - **Adaptive.** With [`adaptive`](BulkheadLayerBuilder::adaptive) the
//!   limit follows the service's latency and failures (see [`adaptive`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_bulkhead::BulkheadLayer;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let bulkhead = BulkheadLayer::builder()
//!     .name("search")
//!     .max_concurrent(32)
//!     .max_wait(Duration::from_millis(50))
//!     .queue(64)
//!     .build()
//!     .expect("valid configuration");
//!
//! let svc = ServiceBuilder::new()
//!     .layer(bulkhead.clone())
//!     .service(service_fn(|q: &'static str| async move { Ok::<_, std::convert::Infallible>(q.len()) }));
//!
//! assert_eq!(svc.oneshot("palisade").await.unwrap(), 8);
//! assert_eq!(bulkhead.in_flight(), 0);
//! # }
//! ```
//!
#![doc = include_str!("../docs/admission.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod adaptive;
pub mod error;
pub mod future;
mod layer;
mod limiter;
mod service;
mod sync;

pub use self::layer::{BulkheadLayer, BulkheadLayerBuilder};
pub use self::service::Bulkhead;

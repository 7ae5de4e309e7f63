//! Turns a panic inside a tower service into an ordinary failure.
//!
//! A panic in a handler should cost one request, not a connection, a
//! worker or the process. This crate's layers catch a panic raised
//! synchronously in the inner service's `call`, and a panic raised while the
//! response future is polled (on the first poll or any later one). The
//! panicked future is dropped at once and the service keeps serving.
//!
//! Two flavours:
//!
//! - [`CatchPanicLayer`] (tower): the panic becomes a
//!   [`Panicked`](error::Panicked) error, usable as `BoxError`, so every
//!   layer above (a circuit breaker, a fallback) counts it as a failure.
//! - [`http::CatchPanicHttpLayer`]: the panic becomes a `500` response whose
//!   body does not contain the panic message unless asked, or a gRPC
//!   `INTERNAL` status for gRPC calls; the error type stays the inner one,
//!   so axum's `Infallible` is kept.
//!
//! Every caught panic is reported twice: an
//! [`Event::PanicCaught`](palisade_core::Event::PanicCaught) to the layer's
//! metrics sink, and a `tracing` error event with the policy name, the
//! message, the location and (when captured) the backtrace; the HTTP flavour
//! adds the method and path.
//!
//! # Message, location and backtrace
//!
//! `catch_unwind` alone sees only the panic's payload. Building a layer
//! installs palisade's panic hook ([`palisade_core::panic`]), which chains
//! the hook installed before it and, for panics raised under a catching
//! layer only, records the location and a backtrace for the layer to pick
//! up. The cost is paid when a panic happens; on the happy path the layer
//! writes a thread-local flag around `call` and each poll and allocates
//! nothing, and the inner future and the response are built where the
//! layer returns them, with no copy of its own.
//! [`CatchPanicBuilder::backtrace`] turns backtrace capture off, and
//! [`CatchPanicBuilder::print`] chooses whether the previous hook (the
//! standard library's stderr print) still runs.
//!
//! The message is the text of `&str` and `String` payloads; other payloads
//! are described by their type (`panic payload of type u32`).
//!
//! # Where it goes in a stack
//!
//! Innermost, right around the service, so that a panic becomes a failure
//! that every layer above counts. Two catch layers nest: the inner one
//! catches, the outer one sees an ordinary `Panicked` error.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use palisade_core::{Event, MetricsSink, Panicked};
//! use palisade_panic::CatchPanicLayer;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! #[derive(Debug, Default)]
//! struct Panics(AtomicU64);
//! impl MetricsSink for Panics {
//!     fn record(&self, event: &Event<'_>) {
//!         if let Event::PanicCaught { .. } = event {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let panics = Arc::new(Panics::default());
//! let layer = CatchPanicLayer::builder()
//!     .name("orders")
//!     .metrics(panics.clone())
//!     .build()
//!     .unwrap();
//! let mut svc = layer.layer(service_fn(|id: u32| async move {
//!     if id == 0 {
//!         panic!("order id 0 is reserved");
//!     }
//!     Ok::<_, std::io::Error>(id * 10)
//! }));
//!
//! let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
//! assert!(err.is::<Panicked>());
//! // The service keeps serving.
//! assert_eq!(svc.ready().await.unwrap().call(4).await.unwrap(), 40);
//! assert_eq!(panics.0.load(Ordering::Relaxed), 1);
//! # }
//! ```
#![doc = include_str!("../docs/abort.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod future;
pub mod http;
mod layer;
mod service;
mod shared;

pub use self::layer::{CatchPanicBuilder, CatchPanicLayer};
pub use self::service::CatchPanic;

/// Whether this build can catch panics: `false` under `panic = "abort"`.
pub use palisade_core::panic::CAN_CATCH_PANICS;

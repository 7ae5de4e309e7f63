//! A timeout layer for tower services, with per-request deadlines.
//!
//! [`TimeoutLayer`] bounds how long a call may take. Each request gets the
//! smallest of:
//!
//! - the layer's default duration;
//! - with the HTTP flavour ([`TimeoutLayerBuilder::http`]), a
//!   [`RequestTimeout`] request extension;
//! - with the HTTP flavour, the gRPC `grpc-timeout` header (see
//!   [`grpc_timeout`]). A malformed value is ignored and reported, never
//!   turned into an error.
//!
//! so a client can shorten its deadline but never extend the server's. The
//! handler reads what is left of it with [`Deadline::current`] and passes
//! it on to the calls it makes (a palisade client stack follows it with
//! the [`FollowDeadline`] source); the HTTP flavour can also put the
//! applied [`Deadline`] in the request's extensions
//! ([`HttpDeadline::expose_deadline`]).
//!
//! When the deadline passes, the inner future is dropped, which cancels the
//! call and releases what it holds, and the caller gets an
//! [`Elapsed`](error::Elapsed) carrying the policy name and the applied
//! duration. The layer emits [`Event::TimedOut`](palisade_core::Event::TimedOut)
//! for it. When the deadline that passed was a client's `grpc-timeout`,
//! shorter than the layer's, [`Elapsed::is_caller_deadline`](error::Elapsed::is_caller_deadline)
//! says so: the client was in a hurry, the service did not fail, and a
//! circuit breaker above does not count it. That holds downstream too: a
//! client stack that follows the caller's deadline with [`FollowDeadline`]
//! marks its own expiry the same way. An answer of the service's that the
//! layer sees only once the client's deadline has fired (a handler
//! answering 504 for a downstream call that followed that deadline, in the
//! same instant) is too late for the client, and is answered as that
//! expiry too; an error seen then is passed on. On a
//! client stack whose application writes the header itself,
//! [`HttpDeadline::client_side`] makes its deadline the stack's own, which
//! the breaker counts.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::TimeoutLayer;
//! use palisade_timeout::error::Elapsed;
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let timeout = TimeoutLayer::builder()
//!     .name("search")
//!     .timeout(Duration::from_millis(500))
//!     .build()
//!     .expect("valid configuration");
//!
//! let svc = ServiceBuilder::new().layer(timeout).service(service_fn(|slow: bool| async move {
//!     if slow {
//!         tokio::time::sleep(Duration::from_secs(5)).await;
//!     }
//!     Ok::<_, std::convert::Infallible>("done")
//! }));
//!
//! assert_eq!(svc.clone().oneshot(false).await.unwrap(), "done");
//! let err = svc.oneshot(true).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # }
//! ```
//!
#![doc = include_str!("../docs/cost.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod deadline;
pub mod error;
pub mod future;
pub mod grpc_timeout;
mod layer;
mod service;
mod timer;

pub use self::deadline::{
    Deadline, DeadlineSource, FollowDeadline, HttpDeadline, NoOverride, RequestTimeout,
};
pub use self::layer::{TimeoutLayer, TimeoutLayerBuilder};
pub use self::service::Timeout;

//! Fallback for palisade: when protection says no, or the service fails,
//! the caller still gets a sensible answer.
//!
//! [`FallbackLayer`] wraps a service. For each call it asks a
//! [`predicate`] whether the outcome needs a fallback, and if so
//! asks a [`source`] for the answer:
//!
//! - **What it handles**: any error ([`AnyError`](predicate::AnyError), the
//!   default), palisade rejections only
//!   ([`Rejections`](predicate::Rejections)), errors of a type anywhere in
//!   the `source()` chain ([`ErrorIs`](predicate::ErrorIs)) or accepted by
//!   a closure ([`ErrorIf`](predicate::ErrorIf)), and `Ok` responses
//!   accepted by a closure ([`ResponseIf`](predicate::ResponseIf)) such as
//!   any 5xx ([`ServerErrors`](predicate::ServerErrors)). Predicates
//!   combine with [`Or`](predicate::Or).
//! - **Where the answer comes from**: a value, cloned
//!   ([`source::value`]); a closure that sees the [`Cause`]
//!   ([`source::from_fn`]); an async closure whose future may fail
//!   ([`source::from_async_fn`]); or another tower `Service` called with
//!   the request ([`source::service`], [`source::service_with`]).
//!
//! Errors the predicate does not claim pass through unchanged. Every
//! answer is reported as
//! [`Event::FallbackUsed`](palisade_core::Event::FallbackUsed) with its
//! [`FallbackTrigger`](palisade_core::FallbackTrigger) (rejection, error or
//! response) and as a `tracing` debug event.
//!
//! # The request is kept only for a service source
//!
//! The layer puts no `Clone` bound on the request. Only a fallback
//! *service* needs the request, so only [`source::service`] clones it (and
//! [`source::service_with`] keeps just the part you choose), on every call,
//! before the inner service takes it. The [`source`] module explains why.
//!
//! # Cost
//!
//! A call that needs no fallback costs one reference-count increment (the
//! future holds the shared predicate and source) and the predicate's
//! check: no allocation, no lock. A service source adds a clone of the
//! fallback service and of the kept request on every call.
//!
//! # Where it goes in a stack
//!
//! Outermost, so it sees every rejection and failure of the layers below.
//!
//! That puts it above any panic-catch layer, so it contains the panics of
//! its own code: a predicate that panics judging an error lets the error
//! go on, and one that panics judging a response lets the response go on;
//! a source that panics making or polling its answer
//! fails that answer, with the rejection it stood in for when the source
//! can fail (a [`FallbackFailed`](error::FallbackFailed)), or else with
//! the panic itself ([`Panicked`](palisade_core::Panicked), a 500). Each
//! such panic is logged as a `tracing` error with its stack (not as an
//! [`Event::PanicCaught`](palisade_core::Event::PanicCaught), which
//! reports a panic of the service). A predicate's check of a response
//! runs on every successful call, so it is caught without a capture
//! scope, which would cost every call: its log line carries no location
//! or stack, and the panic hook prints both as it would without palisade.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{BoxError, PolicyName, RateLimited, KeyKind};
//! use palisade_fallback::{source, Cause, FallbackLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // A service behind a rate limiter that said no.
//! let limited = service_fn(|_req: &'static str| async {
//!     Err::<String, BoxError>(
//!         RateLimited::new(PolicyName::new("api"), Duration::from_secs(1), KeyKind::Global).into(),
//!     )
//! });
//!
//! let fallback = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
//!     format!("degraded answer ({})", cause.trigger())
//! }))
//! .name("catalog")
//! .on_rejections()
//! .build()
//! .unwrap();
//!
//! let answer = fallback.layer(limited).oneshot("books").await.unwrap();
//! assert_eq!(answer, "degraded answer (palisade rejection)");
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod error;
pub mod future;
mod layer;
pub mod predicate;
mod service;
pub mod source;

pub use self::layer::{FallbackBuilder, FallbackLayer};
pub use self::service::Fallback;
pub use self::source::Cause;

//! One place that turns palisade rejections, and any other service error,
//! into HTTP responses and gRPC statuses.
//!
//! Every palisade layer fails with a typed rejection
//! ([`RateLimited`](palisade_core::RateLimited),
//! [`CircuitOpen`](palisade_core::CircuitOpen), …) boxed as a
//! [`BoxError`](palisade_core::BoxError). This crate decides, once, what a
//! client sees for each:
//!
//! | cause | HTTP | gRPC |
//! |---|---|---|
//! | `RateLimited` | 429 + `Retry-After` | `RESOURCE_EXHAUSTED` |
//! | `Overloaded`, `CircuitOpen` | 503, `Retry-After` when known | `UNAVAILABLE` |
//! | `Elapsed` | 504 (or 408, configurable) | `DEADLINE_EXCEEDED` |
//! | `Panicked` | 500 | `INTERNAL` |
//! | `MissingKey` | 400 | `INVALID_ARGUMENT` |
//! | anything else | 500 | `UNKNOWN` |
//!
//! The rejection is looked for down the `source()` chain, through I/O
//! errors and `Arc`s that carry one, to a depth of
//! [`MAX_CHAIN`](palisade_core::error::MAX_CHAIN) errors (which ends a
//! chain that leads back into itself). The HTTP
//! body is [RFC 9457](https://www.rfc-editor.org/rfc/rfc9457) problem
//! details ([`ProblemJson`]) naming the policy and the reason, and can be
//! replaced ([`HttpMapping::body`]). Neither form ever carries the error's
//! own text or a panic message: those are logged (`tracing`, error level
//! for errors that are not rejections), not sent. The one exception is a
//! `tonic::Status` found in the error chain, which the gRPC mapping (the
//! `tonic` feature) passes on as it is, message included.
//!
//! # Two forms
//!
//! - **Plain functions**, for code that maps errors itself:
//!   [`to_response`], [`to_status_code`], [`HttpMapping::to_response`],
//!   and with the `tonic` feature [`grpc::to_grpc_status`] and
//!   [`grpc::client_grpc_status`].
//! - **Layers** that make a fallible service [`Infallible`](std::convert::Infallible) by answering
//!   the mapped response: [`ErrorToResponseLayer`] for HTTP (what axum's
//!   `Router::layer` and `route_layer` require, with no
//!   `HandleErrorLayer`), and with the `tonic` feature
//!   [`grpc::ErrorToStatusLayer`], which answers trailers-only gRPC
//!   responses, for tonic servers. Around tonic channels,
//!   [`grpc::ClientErrorToStatusLayer`] passes errors on to the generated
//!   client as the `tonic::Status` it should see, each keeping the error
//!   it stands for as its source.
//!
//! # Where the layers go
//!
//! Outermost, above the fallback layer: the fallback answers what it is
//! configured to handle, and whatever error is left becomes a response
//! here.
//!
//! ```text
//! ErrorToResponseLayer -> fallback -> rate limit -> breaker -> timeout -> bulkhead -> panic catch -> service
//! ```
//!
//! # Features
//!
//! - `axum`: [`Rejected`], an error type for axum handlers that answers the
//!   mapped response (the rejection types cannot implement `IntoResponse`
//!   themselves).
//! - `tonic`: the [`grpc`] module. tonic 0.14 needs Rust 1.88.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use bytes::Bytes;
//! use palisade_core::{BoxError, KeyKind, PolicyName, RateLimited};
//!
//! let err: BoxError =
//!     RateLimited::new(PolicyName::new("api"), Duration::from_millis(2300), KeyKind::PeerIp).into();
//! let res = palisade_http::to_response::<Bytes>(&*err);
//! assert_eq!(res.status(), 429);
//! assert_eq!(res.headers()["retry-after"], "3");
//! assert_eq!(res.headers()["content-type"], "application/problem+json");
//! assert_eq!(
//!     res.body(),
//!     r#"{"type":"about:blank","title":"Too Many Requests","status":429,"detail":"Too many requests for policy \"api\". Retry after 3 seconds.","policy":"api","layer":"rate_limit","reason":"rate_limited","retry_after_seconds":3}"#
//! );
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "axum")]
mod axum;
mod body;
pub mod error;
pub mod future;
#[cfg(feature = "tonic")]
#[cfg_attr(docsrs, doc(cfg(feature = "tonic")))]
pub mod grpc;
mod mapping;
mod problem;
mod response;

#[cfg(feature = "axum")]
#[cfg_attr(docsrs, doc(cfg(feature = "axum")))]
pub use self::axum::Rejected;
pub use self::body::{ErrorBody, MakeErrorBody, PROBLEM_JSON, ProblemJson};
pub use self::mapping::{HttpMapping, to_response, to_status_code};
pub use self::problem::{Detail, Problem, TimeoutStatus};
pub use self::response::{ErrorToResponse, ErrorToResponseLayer};
pub use palisade_core::error::retry_after_seconds;

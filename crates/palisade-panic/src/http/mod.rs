//! The HTTP flavour: a panic becomes a `500` response, or a gRPC
//! `INTERNAL` status for gRPC calls.
//!
//! [`CatchPanicHttpLayer`] wraps a service from `http::Request<ReqBody>` to
//! `http::Response<ResBody>`. When the service panics (in `call` or while
//! its future is polled), the layer drops the panicked future, reports the
//! panic (a [`PanicCaught`](palisade_core::Event::PanicCaught) event and a
//! `tracing` error event with the policy, message, location, method and
//! path) and answers in its place:
//!
//! - an HTTP request gets `500 Internal Server Error` with a short body
//!   that does **not** contain the panic message, unless
//!   [`expose_message`](CatchPanicHttpBuilder::expose_message) is on;
//! - a gRPC request (`content-type: application/grpc…`, in any case) gets
//!   a trailers-only answer with `grpc-status: 13`, which gRPC clients such
//!   as tonic report as status `INTERNAL`; a gRPC-Web request gets the
//!   same answer as gRPC-Web.
//!
//! The service's error type is the inner service's, so an axum router keeps
//! its `Infallible`, and the response body type is unchanged: the default
//! answer only needs `ResBody: From<Bytes>`, which axum's `Body` is.
//! A [`ResponseForPanic`] hook (any closure taking a [`PanicContext`])
//! shapes the answer differently; [`GrpcResponseForPanic`] answers every
//! panic with gRPC `INTERNAL` and suits tonic servers, whose body type only
//! has an empty value.
//!
//! On the happy path the layer allocates nothing: it keeps the request's
//! method and the first 96 bytes of its path inline in the response
//! future, for the log line of a panic. One exception: an extension
//! method longer than 15 bytes, which `http` keeps on the heap (it
//! allocated it when the request was parsed), costs one allocation of its
//! length to keep; every standard method, and shorter extensions, are
//! copied inline.
//!
//! # Example
//!
//! ```
//! use axum::{Router, routing::get};
//! use palisade_panic::http::CatchPanicHttpLayer;
//!
//! async fn checkout() -> &'static str {
//!     "ok"
//! }
//!
//! let app: Router = Router::new()
//!     .route("/checkout", get(checkout))
//!     .layer(CatchPanicHttpLayer::builder().name("api").build().unwrap());
//! # let _ = app;
//! ```

pub(crate) mod future;
mod layer;
pub(crate) mod path;
mod response;
mod service;

pub use self::future::HttpResponseFuture;
pub use self::layer::{CatchPanicHttpBuilder, CatchPanicHttpLayer};
pub use self::response::{
    DefaultResponseForPanic, GrpcResponseForPanic, PanicContext, ResponseForPanic,
};
pub use self::service::CatchPanicHttp;

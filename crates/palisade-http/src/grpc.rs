//! gRPC: errors to [`tonic::Status`], and the gRPC flavour of the layer.
//!
//! | cause | code |
//! |---|---|
//! | [`RateLimited`](palisade_core::RateLimited) | `RESOURCE_EXHAUSTED` |
//! | [`Overloaded`](palisade_core::Overloaded), [`CircuitOpen`](palisade_core::CircuitOpen) | `UNAVAILABLE` |
//! | [`Elapsed`](palisade_core::Elapsed) | `DEADLINE_EXCEEDED` |
//! | [`Panicked`](palisade_core::Panicked) | `INTERNAL` |
//! | [`MissingKey`](palisade_core::MissingKey) | `INVALID_ARGUMENT` |
//! | a [`tonic::Status`] in the chain, other than `OK` | that status, as it is |
//! | anything else | `UNKNOWN` |
//!
//! The chain is read from the error itself down through its sources: a
//! status met before any rejection is kept (a handler that answers a
//! rejection with a status of its own choosing, with the rejection as its
//! source, keeps its code and message), and a rejection met first gives
//! its code.
//!
//! `MissingKey` is `INVALID_ARGUMENT`, like HTTP's 400: the request lacks
//! what the limiter keys on, and retrying it unchanged fails the same way,
//! whereas `RESOURCE_EXHAUSTED` would invite a retry. Other errors are
//! `UNKNOWN`, as tonic itself maps an error it does not recognise;
//! `INTERNAL` is kept for a caught panic, a broken invariant of the
//! service. A [`tonic::Status`] found in the chain was chosen by someone as
//! the answer, so it is kept, unless its code is `OK`: a failed call is
//! never answered as a success, so that one counts as any other error.
//!
//! Otherwise the message is the [`Problem::detail`](crate::Problem::detail)
//! sentence: it names the policy and the reason, never the error's text. A
//! kept status keeps its own message, which a client then reads: a status
//! made from a transport error (as a client stack's
//! [`ClientErrorToStatusLayer`] makes one) carries that error's text.
//! When the layer knows how long to wait, the status carries two metadata
//! entries: `retry-after` (whole seconds, rounded up, at least 1, as HTTP's
//! header) and `grpc-retry-pushback-ms` (milliseconds, rounded up, at
//! least 1), the server pushback that gRPC clients with a retry policy
//! honour.
//!
//! # Server side
//!
//! [`ErrorToStatusLayer`] answers an error with a trailers-only gRPC
//! response (HTTP 200, `content-type: application/grpc`, `grpc-status`
//! and `grpc-message` in the headers) and makes the service
//! [`Infallible`]. A gRPC-Web call (`application/grpc-web…` or
//! `application/grpc-web-text…`) gets the same answer with its own
//! protocol's content type, so the layer may sit outside a gRPC-Web
//! translation. Put it outermost on `tonic::transport::Server::builder()`
//! so clients receive the mapped code rather than a reset stream; only a
//! CORS layer for browser gRPC-Web clients goes outside it, or the
//! answers it makes lack the CORS headers and a browser hides their
//! status from the page.
//!
//! # Client side
//!
//! Around a `tonic::transport::Channel`, [`ClientErrorToStatusLayer`]
//! (also [`ErrorToStatusLayer::client`]) makes a rejection of the client's
//! own stack (an open breaker, a rate limit) reach the generated client as
//! the mapped [`tonic::Status`], and any other error as tonic would map it
//! without the layer ([`client_grpc_status`]): a connection refused stays
//! `UNAVAILABLE`, with its text, where the server flavour would answer
//! `UNKNOWN` and hide the text from a remote client. The status is passed
//! to the client as an error, not encoded in a response, so it keeps the
//! error it stands for as its [`source`](std::error::Error::source): a
//! handler that returns it to axum through `Rejected` (with the `axum`
//! feature) still answers the rejection's 429, 503 or 504, and code that
//! inspects a transport error still finds it. A status with code `OK` in an error
//! becomes `UNKNOWN` here too (with its message), so that a failed call
//! never carries a success code. To map a `BoxError` yourself, use
//! [`client_grpc_status`].
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{BoxError, PolicyName, RateLimited, KeyKind};
//! use palisade_http::grpc::to_grpc_status;
//!
//! let err: BoxError =
//!     RateLimited::new(PolicyName::new("api"), Duration::from_millis(1500), KeyKind::Global).into();
//! let status = to_grpc_status(&*err);
//! assert_eq!(status.code(), tonic::Code::ResourceExhausted);
//! assert_eq!(status.message(), r#"Too many requests for policy "api". Retry after 2 seconds."#);
//! assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
//! assert_eq!(status.metadata().get("grpc-retry-pushback-ms").unwrap(), "1500");
//! ```

use std::convert::Infallible;
use std::error::Error;
use std::fmt;
use std::task::{Context, Poll};

use http::HeaderValue;
use http::header::CONTENT_TYPE;
use palisade_core::protocol::Protocol;
use palisade_core::{BoxError, Leak, Rejection};
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};
use tower_layer::Layer;
use tower_service::Service;

use crate::future::{ClientStatusFuture, GrpcResponseFuture};
use crate::mapping::log_mapped;
use crate::problem::{Problem, TimeoutStatus};
use crate::response::keep_readiness_error;

/// The gRPC code for `err`; see the [module](self) table.
pub fn to_grpc_code(err: &(dyn Error + 'static)) -> Code {
    match read_chain(err) {
        (Some(chosen), _) => chosen.code(),
        (None, problem) => problem.rejection().map_or(Code::Unknown, code_for),
    }
}

fn code_for(rejection: Rejection<'_>) -> Code {
    match rejection {
        Rejection::RateLimited(_) => Code::ResourceExhausted,
        Rejection::MissingKey(_) => Code::InvalidArgument,
        Rejection::CircuitOpen(_) | Rejection::Overloaded(_) => Code::Unavailable,
        Rejection::Elapsed(_) => Code::DeadlineExceeded,
        Rejection::Panicked(_) => Code::Internal,
        _ => Code::Unknown,
    }
}

/// One walk down `err`'s chain for both things that decide its answer: a
/// status other than `OK` met before any rejection (someone chose it as
/// the answer, over the rejection it may wrap), and the problem of the
/// first palisade rejection. The chain's `source()`s are the service's
/// code: one that panics ends the walk, keeping what was found before it.
fn read_chain<'a>(err: &'a (dyn Error + 'static)) -> (Option<&'a Status>, Problem<'a>) {
    let mut chosen = None;
    let mut rejection = None;
    palisade_core::panic::contained(|| {
        for e in palisade_core::error::chain(err) {
            if let Some(found) = Rejection::of(e) {
                rejection = Some(found);
                return;
            }
            if chosen.is_none() {
                chosen = e.downcast_ref::<Status>().filter(|s| s.code() != Code::Ok);
            }
        }
    });
    (
        chosen,
        Problem::of_rejection(rejection, TimeoutStatus::default()),
    )
}

/// The [`Status`] for `err`, to send to a client: the code from the
/// [module](self) table, the problem's detail as message and retry
/// metadata when known, never the error's text; or, when the chain holds
/// a [`Status`] other than `OK` before any rejection, that status as it
/// is, message included.
pub fn to_grpc_status(err: &(dyn Error + 'static)) -> Status {
    let (chosen, problem) = read_chain(err);
    status_for(&problem, chosen)
}

/// [`to_grpc_status`] for an error whose chain was read: `chosen` is the
/// status it chose, if any, and `problem` comes from its rejection.
fn status_for(problem: &Problem<'_>, chosen: Option<&Status>) -> Status {
    if let Some(status) = chosen {
        return status.clone();
    }
    match problem.rejection() {
        Some(rejection) => {
            let mut status = Status::new(code_for(rejection), problem.detail().to_string());
            if let Some(delay) = problem.retry_after() {
                let metadata = status.metadata_mut();
                metadata.insert(
                    "retry-after",
                    MetadataValue::from(crate::retry_after_seconds(delay)),
                );
                metadata.insert(
                    "grpc-retry-pushback-ms",
                    MetadataValue::from(pushback_millis(delay)),
                );
            }
            status
        }
        None => Status::new(Code::Unknown, problem.detail().to_string()),
    }
}

/// A wait as `grpc-retry-pushback-ms`: milliseconds rounded up and at
/// least 1, so a client that honours it never retries before the wait is
/// over (a value of 0 would ask for an immediate retry).
fn pushback_millis(delay: std::time::Duration) -> u64 {
    u64::try_from(delay.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The [`Status`] for an error of a client's stack (around a tonic
/// `Channel`): a palisade rejection maps as [`to_grpc_status`] does;
/// anything else goes through [`Status::from_error`], which keeps a status
/// from the server and maps transport errors, with their text (the caller's
/// own process is the audience). Either way the status keeps `err` as its
/// [`source`](std::error::Error::source), so the rejection or transport
/// error is still found in its chain.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{find_rejection, KeyKind, PolicyName, RateLimited};
/// use palisade_http::grpc::client_grpc_status;
///
/// let limited = RateLimited::new(PolicyName::new("api"), Duration::from_secs(2), KeyKind::Global);
/// let status = client_grpc_status(limited.into());
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert!(find_rejection(&status).is_some());
/// ```
pub fn client_grpc_status(err: BoxError) -> Status {
    client_status(err, |_, _| {})
}

/// [`client_grpc_status`], with `report` told of the mapping first: the
/// error's chain is walked once for both.
fn client_status(err: BoxError, report: impl FnOnce(&Problem<'_>, &BoxError)) -> Status {
    let (chosen, problem) = read_chain(&*err);
    report(&problem, &err);
    if problem.rejection().is_some() {
        let mut status = status_for(&problem, chosen);
        status.set_source(std::sync::Arc::from(err));
        status
    } else {
        tonic_status(err)
    }
}

/// [`Status::from_error`], except that a failed call is never `OK`: a
/// status with code `OK` in the error (which tonic keeps as it is) becomes
/// `UNKNOWN`, with its message, since a client reads `OK` as a success.
fn tonic_status(err: BoxError) -> Status {
    // tonic walks the whole `source()` chain, with no bound: a chain as
    // long as palisade's bound (one that leads back into itself, say) is
    // not handed to it, and becomes UNKNOWN with the error as its source.
    let endless = palisade_core::panic::contained_value(|| {
        palisade_core::error::chain(&*err)
            .nth(palisade_core::error::MAX_CHAIN - 1)
            .is_some()
    })
    .unwrap_or(true);
    if endless {
        let message = palisade_core::panic::contained_value(|| err.to_string()).unwrap_or_default();
        let mut status = Status::unknown(message);
        status.set_source(std::sync::Arc::from(err));
        return status;
    }
    // The status's message is the error's `Display`, the service's code: a
    // panic there is contained, and the status says only that it failed.
    let status = palisade_core::panic::contained_value(|| Status::from_error(err))
        .unwrap_or_else(|| Status::unknown("error"));
    if status.code() == Code::Ok {
        let mut unknown = Status::new(Code::Unknown, status.message().to_owned());
        unknown.set_source(std::sync::Arc::new(status));
        unknown
    } else {
        status
    }
}

/// A trailers-only gRPC response for `err`, logged, in the request's
/// `protocol` (gRPC or gRPC-Web).
pub(crate) fn grpc_response<B: Default>(err: BoxError, protocol: Protocol) -> http::Response<B> {
    let (chosen, problem) = read_chain(&*err);
    let status = status_for(&problem, chosen);
    log_mapped(&problem, &*err, &format_args!("{:?}", status.code()));
    let mut res = http::Response::new(B::default());
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(protocol.grpc_content_type()),
    );
    if status.add_header(headers).is_err() {
        // Only a header value tonic refuses gets here: keep the code.
        headers.insert("grpc-status", HeaderValue::from(i32::from(status.code())));
    }
    res
}

/// The error a client stack's layer passes on for `err`: its
/// [`client_grpc_status`], logged.
pub(crate) fn client_error(err: BoxError) -> BoxError {
    // Contained: the log backend and the error's `Display` are the user's
    // code, and a panic of theirs must not take the status with it.
    Box::new(client_status(err, |problem, err| {
        palisade_core::panic::contained(|| match problem.reason() {
            Some(reason) => tracing::debug!(
                policy = problem.policy().unwrap_or_default(),
                reason = reason.as_str(),
                "client rejection passed on as a gRPC status"
            ),
            // The caller gets the error's text in the status: a debug line
            // is enough here.
            None => tracing::debug!(error = %err, "client error passed on as a gRPC status"),
        });
    }))
}

/// Turns the errors of a gRPC service into trailers-only responses
/// carrying the mapped [`Status`], so the service becomes [`Infallible`].
///
/// For a tonic server (`Server::builder().layer(..)`); around a client
/// `Channel`, use [`client`](Self::client) instead. The response body
/// type `B` is kept; error responses use `B::default()`, an empty body
/// (`tonic::body::Body` qualifies).
///
/// Every failed request gets a gRPC answer (HTTP 200 with `grpc-status`),
/// whatever its content type: on a tonic server that also serves plain
/// HTTP routes (`Routes::from(router)`, a health check), put
/// [`ErrorToResponseLayer`](crate::ErrorToResponseLayer) on those routes,
/// or a load balancer reads a rejected health check as a 200.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{BoxError, Overloaded, OverloadKind, PolicyName};
/// use palisade_http::grpc::ErrorToStatusLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let full = service_fn(|_req: http::Request<tonic::body::Body>| async {
///     Err::<http::Response<tonic::body::Body>, BoxError>(
///         Overloaded::new(PolicyName::new("db"), 8, OverloadKind::Full).into(),
///     )
/// });
/// let svc = ErrorToStatusLayer::new().layer(full);
/// let res = svc.oneshot(http::Request::new(tonic::body::Body::empty())).await.unwrap();
/// assert_eq!(res.status(), 200);
/// assert_eq!(res.headers()["grpc-status"], "14"); // UNAVAILABLE
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorToStatusLayer {
    _private: (),
}

/// Returns the layer as it is: it shares no state.
impl Leak for ErrorToStatusLayer {
    type Leaked = Self;

    fn leak(self) -> Self {
        self
    }
}

impl ErrorToStatusLayer {
    /// The layer for a server: every error becomes the [module](self)
    /// table's status. Its message never carries the error's text, except
    /// where the error's chain holds a [`tonic::Status`], which is answered
    /// as it is, message included.
    pub const fn new() -> Self {
        Self { _private: () }
    }

    /// The layer for a client stack around a `tonic` `Channel`: a
    /// [`ClientErrorToStatusLayer`].
    pub const fn client() -> ClientErrorToStatusLayer {
        ClientErrorToStatusLayer::new()
    }
}

impl<S> Layer<S> for ErrorToStatusLayer {
    type Service = ErrorToStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorToStatus {
            inner,
            not_ready: None,
        }
    }
}

/// Answers a trailers-only gRPC response when the inner service fails.
/// Built by [`ErrorToStatusLayer`].
///
/// A readiness error of the inner service is kept and answered by the next
/// call, which then does not reach the inner service.
pub struct ErrorToStatus<S> {
    inner: S,
    not_ready: Option<BoxError>,
}

impl<S> ErrorToStatus<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for ErrorToStatus<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ErrorToStatus<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorToStatus")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> Service<http::Request<ReqBody>> for ErrorToStatus<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    B: Default,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = GrpcResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        keep_readiness_error(&mut self.inner, &mut self.not_ready, cx).map(Ok)
    }

    #[inline]
    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        let protocol = Protocol::of_request(&req);
        match self.not_ready.take() {
            None => GrpcResponseFuture::new(self.inner.call(req), protocol),
            Some(err) => GrpcResponseFuture::not_ready(err, protocol),
        }
    }
}

/// Passes the errors of a client stack (around a tonic `Channel`) on to
/// the generated client as the [`Status`] it should see
/// ([`client_grpc_status`]): a palisade rejection as the [module](self)
/// table's status, with its retry metadata, and any other error as tonic
/// would map it without the layer. The status keeps the error as its
/// [`source`](std::error::Error::source), so a handler that hands it to
/// axum through `Rejected` (with the `axum` feature) still answers the
/// rejection's status, and code that inspects a transport error still
/// finds it.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{BoxError, KeyKind, PolicyName, RateLimited};
/// use palisade_http::grpc::ClientErrorToStatusLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limited = service_fn(|_req: http::Request<tonic::body::Body>| async {
///     Err::<http::Response<tonic::body::Body>, BoxError>(
///         RateLimited::new(PolicyName::new("api"), Duration::from_secs(2), KeyKind::Global).into(),
///     )
/// });
/// let svc = ClientErrorToStatusLayer::new().layer(limited);
/// let err = svc.oneshot(http::Request::new(tonic::body::Body::empty())).await.unwrap_err();
/// let status = err.downcast_ref::<tonic::Status>().unwrap();
/// assert_eq!(status.code(), tonic::Code::ResourceExhausted);
/// assert_eq!(status.metadata().get("retry-after").unwrap(), "2");
/// // The rejection is still in the chain, to map to HTTP's 429.
/// assert_eq!(palisade_http::to_status_code(&*err), 429);
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientErrorToStatusLayer {
    _private: (),
}

impl ClientErrorToStatusLayer {
    /// The layer.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

/// Returns the layer as it is: it shares no state.
impl Leak for ClientErrorToStatusLayer {
    type Leaked = Self;

    fn leak(self) -> Self {
        self
    }
}

impl<S> Layer<S> for ClientErrorToStatusLayer {
    type Service = ClientErrorToStatus<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ClientErrorToStatus {
            inner,
            not_ready: None,
        }
    }
}

/// Passes errors on as [`Status`]es for a client. Built by
/// [`ClientErrorToStatusLayer`].
///
/// A readiness error of the inner service is kept and answered by the next
/// call, as that call's status: tonic's client would otherwise report any
/// readiness error as UNKNOWN, losing the status this layer maps.
pub struct ClientErrorToStatus<S> {
    inner: S,
    not_ready: Option<BoxError>,
}

impl<S: Clone> Clone for ClientErrorToStatus<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for ClientErrorToStatus<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientErrorToStatus")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> ClientErrorToStatus<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Takes the inner service out.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for ClientErrorToStatus<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ClientStatusFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        keep_readiness_error(&mut self.inner, &mut self.not_ready, cx).map(Ok)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            None => ClientStatusFuture::new(self.inner.call(req)),
            Some(err) => ClientStatusFuture::not_ready(err),
        }
    }
}

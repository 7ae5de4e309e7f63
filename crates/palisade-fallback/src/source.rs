//! Where a fallback's answer comes from.
//!
//! A [`Source`] turns the [`Cause`] of a fallback (the error, or the
//! response that a predicate rejected) into the answer the caller gets.
//!
//! | source | built with | sees | needs from the request |
//! |---|---|---|---|
//! | [`Value<T>`] | [`value`] | nothing: answers a clone of `T` | nothing |
//! | [`FromFn<F>`] | [`from_fn`] | the cause, synchronously | nothing |
//! | [`FromAsyncFn<F>`] | [`from_async_fn`] | the cause, in a future that may fail | nothing |
//! | [`FromService<T, K>`] | [`service`], [`service_with`] | the request, kept before the call | a clone, or what `K` takes from it |
//!
//! # Why only the service source keeps the request
//!
//! A service consumes its request in `call`, so by the time the inner
//! service fails the request is gone. A source that answers from the cause
//! alone needs nothing of it, so the fallback layer keeps nothing and puts
//! no `Clone` bound on the request: its [`Kept`](Source::Kept) is `()`.
//!
//! A fallback *service* must be called with a request, so [`FromService`]
//! keeps one on every call, before the inner service sees the original, and
//! also a clone of the fallback service (a future cannot borrow the layer).
//! By default ([`service`]) it clones the whole request, which requires
//! `Req: Clone`; `http::Request` is `Clone` only when its body is, and a
//! server's request body (axum's `Body`, hyper's `Incoming`) is not, so
//! for HTTP use [`service_with`] and keep only what the fallback needs (the URI, a
//! header, a cache key). Both are paid on every call, failed or not: pick a
//! fallback service that is cheap to clone (a `service_fn`, or a
//! `tower::buffer::Buffer` handle) and keep little.
//!
//! # Example
//!
//! ```
//! use palisade_fallback::source::{self, Cause, Source};
//!
//! let cached = source::from_fn(|cause: Cause<String>| match cause {
//!     Cause::Response(stale) => format!("{stale} (stale)"),
//!     _ => "cached answer".to_owned(),
//! });
//! // A closure source keeps nothing of the request: `Kept` is `()`.
//! let kept: () = Source::<u32, String>::keep(&cached, &7);
//! # let _ = kept;
//! ```

use std::error::Error;
use std::fmt;
use std::future::{Future, Ready, ready};

use palisade_core::{BoxError, FallbackTrigger, Rejection, find_rejection};
use tower_service::Service;

use crate::future::{AsyncAnswer, ServiceAnswer};
use crate::predicate::trigger_for;

/// Why the fallback answers: the error the service returned, or the
/// response a predicate rejected. Handed, owned, to the [`Source`].
pub enum Cause<Res> {
    /// The service failed with a palisade rejection (in the error or its
    /// `source()` chain).
    Rejection(BoxError),
    /// The service failed with another error.
    Error(BoxError),
    /// The service answered, but the predicate rejected the response.
    Response(Res),
}

impl<Res> Cause<Res> {
    /// The cause of a claimed error: `Rejection` when a palisade rejection
    /// is in its chain, `Error` otherwise, whatever trigger the predicate
    /// returned, so that metrics never count a rejection as a failure. The
    /// chain is the service's code: one whose `source()` panics is
    /// searched no further, and the error is the service's own.
    pub(crate) fn from_error(err: BoxError) -> Self {
        match palisade_core::panic::contained_value(|| trigger_for(&*err)) {
            Some(FallbackTrigger::Rejection) => Cause::Rejection(err),
            _ => Cause::Error(err),
        }
    }

    /// The kind of trigger, as reported in
    /// [`Event::FallbackUsed`](palisade_core::Event::FallbackUsed).
    pub fn trigger(&self) -> FallbackTrigger {
        match self {
            Cause::Rejection(_) => FallbackTrigger::Rejection,
            Cause::Error(_) => FallbackTrigger::Error,
            Cause::Response(_) => FallbackTrigger::Response,
        }
    }

    /// The error, for the two error causes.
    pub fn error(&self) -> Option<&(dyn Error + Send + Sync + 'static)> {
        match self {
            Cause::Rejection(e) | Cause::Error(e) => Some(&**e),
            Cause::Response(_) => None,
        }
    }

    /// The palisade rejection in the error's chain, if any.
    pub fn rejection(&self) -> Option<Rejection<'_>> {
        match self {
            Cause::Rejection(e) | Cause::Error(e) => find_rejection(&**e),
            Cause::Response(_) => None,
        }
    }

    /// The rejected response, for [`Cause::Response`].
    pub fn response(&self) -> Option<&Res> {
        match self {
            Cause::Response(res) => Some(res),
            _ => None,
        }
    }

    /// Takes the error out, for the two error causes.
    pub fn into_error(self) -> Option<BoxError> {
        match self {
            Cause::Rejection(e) | Cause::Error(e) => Some(e),
            Cause::Response(_) => None,
        }
    }

    /// Takes the rejected response out, for [`Cause::Response`].
    pub fn into_response(self) -> Option<Res> {
        match self {
            Cause::Response(res) => Some(res),
            _ => None,
        }
    }
}

impl<Res> fmt::Debug for Cause<Res> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::Rejection(e) => f.debug_tuple("Rejection").field(e).finish(),
            Cause::Error(e) => f.debug_tuple("Error").field(e).finish(),
            Cause::Response(_) => f.debug_tuple("Response").finish_non_exhaustive(),
        }
    }
}

/// Produces the fallback's answer.
///
/// [`keep`](Self::keep) runs in `call`, before the inner service takes the
/// request, on every call: it returns what [`answer`](Self::answer) will
/// need of the request. [`answer`](Self::answer) runs only when the
/// predicate claimed an error or a response.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fallback source for requests `{Req}` and responses `{Res}`",
    note = "build one with `palisade_fallback::source::{{value, from_fn, from_async_fn, service, service_with}}`"
)]
pub trait Source<Req, Res> {
    /// What is kept of each request: `()` unless the answer needs the
    /// request.
    type Kept;

    /// The future of the answer.
    type Future: Future<Output = Result<Res, BoxError>>;

    /// Whether an answer can fail. When it can, the fallback keeps a copy
    /// of the palisade rejection it answers for (one allocation per
    /// answer), so that a failed answer still reports that rejection (see
    /// [`FallbackFailed`](crate::error::FallbackFailed)). Sources that
    /// always answer set it to `false` and keep nothing.
    const CAN_FAIL: bool = true;

    /// Keeps what [`answer`](Self::answer) will need of `req`.
    fn keep(&self, req: &Req) -> Self::Kept;

    /// Answers for `cause`.
    fn answer(&self, kept: Self::Kept, cause: Cause<Res>) -> Self::Future;
}

/// Answers a clone of a fixed value.
#[derive(Clone, Debug)]
pub struct Value<T> {
    value: T,
}

/// A source that answers a clone of `value`.
///
/// `http::Response` is `Clone` only when its body is (`Full<Bytes>` is,
/// axum's `Body` is not): for other bodies build the response in
/// [`from_fn`] instead.
pub fn value<T: Clone>(value: T) -> Value<T> {
    Value { value }
}

impl<Req, Res: Clone> Source<Req, Res> for Value<Res> {
    type Kept = ();
    type Future = Ready<Result<Res, BoxError>>;

    const CAN_FAIL: bool = false;

    #[inline]
    fn keep(&self, _req: &Req) -> Self::Kept {}

    fn answer(&self, _kept: (), _cause: Cause<Res>) -> Self::Future {
        ready(Ok(self.value.clone()))
    }
}

/// Answers with what a closure returns for the [`Cause`].
#[derive(Clone, Copy)]
pub struct FromFn<F> {
    f: F,
}

/// A source that calls `f` with the cause and answers what it returns.
pub fn from_fn<Res, F>(f: F) -> FromFn<F>
where
    F: Fn(Cause<Res>) -> Res,
{
    FromFn { f }
}

impl<F> fmt::Debug for FromFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromFn").finish_non_exhaustive()
    }
}

impl<F, Req, Res> Source<Req, Res> for FromFn<F>
where
    F: Fn(Cause<Res>) -> Res,
{
    type Kept = ();
    type Future = Ready<Result<Res, BoxError>>;

    const CAN_FAIL: bool = false;

    #[inline]
    fn keep(&self, _req: &Req) -> Self::Kept {}

    fn answer(&self, _kept: (), cause: Cause<Res>) -> Self::Future {
        ready(Ok((self.f)(cause)))
    }
}

/// Answers with the output of a future that a closure makes from the
/// [`Cause`]; the future may fail.
#[derive(Clone, Copy)]
pub struct FromAsyncFn<F> {
    f: F,
}

/// A source that calls `f` with the cause and answers what its future
/// resolves to. An `Err` from the future is the caller's error.
pub fn from_async_fn<Res, F, Fut, E>(f: F) -> FromAsyncFn<F>
where
    F: Fn(Cause<Res>) -> Fut,
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    FromAsyncFn { f }
}

impl<F> fmt::Debug for FromAsyncFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FromAsyncFn").finish_non_exhaustive()
    }
}

impl<F, Fut, E, Req, Res> Source<Req, Res> for FromAsyncFn<F>
where
    F: Fn(Cause<Res>) -> Fut,
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Kept = ();
    type Future = AsyncAnswer<Fut>;

    #[inline]
    fn keep(&self, _req: &Req) -> Self::Kept {}

    fn answer(&self, _kept: (), cause: Cause<Res>) -> Self::Future {
        AsyncAnswer::new((self.f)(cause))
    }
}

/// Keeps what a fallback service needs of a request.
pub trait KeepRequest<Req> {
    /// The request the fallback service is called with.
    type Request;

    /// Takes it from `req`, before the inner service consumes `req`.
    fn keep(&self, req: &Req) -> Self::Request;
}

/// Keeps a clone of the whole request. Requires `Req: Clone`.
#[derive(Clone, Copy, Debug, Default)]
pub struct CloneRequest;

impl<Req: Clone> KeepRequest<Req> for CloneRequest {
    type Request = Req;

    #[inline]
    fn keep(&self, req: &Req) -> Req {
        req.clone()
    }
}

impl<F, Req, R> KeepRequest<Req> for F
where
    F: Fn(&Req) -> R,
{
    type Request = R;

    #[inline]
    fn keep(&self, req: &Req) -> R {
        self(req)
    }
}

/// Answers by calling another service with the request (or with what a
/// [`KeepRequest`] took from it).
#[derive(Clone, Debug)]
pub struct FromService<T, K = CloneRequest> {
    service: T,
    keep: K,
}

/// A source that calls `service` with a clone of the request. Requires
/// `Req: Clone`; see [`service_with`] otherwise.
pub fn service<T>(service: T) -> FromService<T> {
    FromService {
        service,
        keep: CloneRequest,
    }
}

/// A source that calls `service` with what `keep` takes from the request
/// (for example `|req: &http::Request<B>| req.uri().clone()`).
pub fn service_with<T, K>(service: T, keep: K) -> FromService<T, K> {
    FromService { service, keep }
}

impl<T, K, Req, Res> Source<Req, Res> for FromService<T, K>
where
    K: KeepRequest<Req>,
    T: Service<K::Request, Response = Res> + Clone,
    T::Error: Into<BoxError>,
{
    type Kept = (T, K::Request);
    type Future = ServiceAnswer<T, K::Request>;

    fn keep(&self, req: &Req) -> Self::Kept {
        (self.service.clone(), self.keep.keep(req))
    }

    fn answer(&self, (service, request): Self::Kept, _cause: Cause<Res>) -> Self::Future {
        ServiceAnswer::new(service, request)
    }
}

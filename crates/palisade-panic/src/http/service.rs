use std::task::{Context, Poll};

use http::{Request, Response};
use palisade_core::PolicyName;
use palisade_core::shared::{Counted, SharedState, Sharing};

use tower_service::Service;

use super::DefaultResponseForPanic;
use super::future::{HttpResponseFuture, RequestInfo};
use super::layer::HttpShared;
use super::path::PathPrefix;
use super::response::{Protocol, ResponseForPanic};

/// Catches panics raised by an HTTP service and answers them with a
/// response (by default `500`, or gRPC `INTERNAL` for gRPC calls).
///
/// A panic in `call` or in any poll of the response future is caught; the
/// panicked future is dropped and the service keeps serving. The error type
/// is the inner service's: a panic never becomes an error. Created by
/// [`CatchPanicHttpLayer`](super::CatchPanicHttpLayer).
///
/// Panics in `poll_ready` are not caught (there is no request to answer),
/// and neither are panics raised while the response *body* is streamed,
/// after the response head was returned.
pub struct CatchPanicHttp<S, H: 'static = DefaultResponseForPanic, M: Sharing = Counted> {
    inner: S,
    shared: SharedState<HttpShared<H>, M>,
}

impl<S, H, M: Sharing> CatchPanicHttp<S, H, M> {
    pub(crate) fn from_shared(inner: S, shared: SharedState<HttpShared<H>, M>) -> Self {
        Self { inner, shared }
    }

    /// The policy name of the layer that built this service.
    pub fn name(&self) -> &PolicyName {
        &self.shared.core.policy
    }

    /// A reference to the inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// A mutable reference to the inner service.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, H, M: Sharing> Clone for CatchPanicHttp<S, H, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: std::fmt::Debug, H, M: Sharing> std::fmt::Debug for CatchPanicHttp<S, H, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatchPanicHttp")
            .field("inner", &self.inner)
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, H, M, ReqBody, ResBody> Service<Request<ReqBody>> for CatchPanicHttp<S, H, M>
where
    M: Sharing,
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    H: ResponseForPanic<ResBody>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = HttpResponseFuture<S::Future, H, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let info = RequestInfo {
            method: request.method().clone(),
            path: PathPrefix::new(request.uri().path()),
            protocol: Protocol::of_request(&request),
        };
        let inner = &mut self.inner;
        let shared = self.shared.clone();
        match shared.core.catch(|| inner.call(request)) {
            Ok(future) => HttpResponseFuture::new(future, shared, info),
            Err(payload) => {
                let panicked = Box::new(shared.core.caught(payload, Some(info.label())));
                HttpResponseFuture::panicked(panicked, shared, info)
            }
        }
    }
}

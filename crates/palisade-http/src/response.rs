//! The HTTP flavour of the layer: errors become responses, `Infallible`
//! stays `Infallible`.

use std::convert::Infallible;
use std::fmt;
use std::task::{Context, Poll};

use bytes::Bytes;
use palisade_core::BoxError;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use tower_layer::Layer;
use tower_service::Service;

use crate::body::{MakeErrorBody, ProblemJson};
use crate::future::ResponseFuture;
use crate::mapping::HttpMapping;

/// Turns the errors of an HTTP service into responses, per an
/// [`HttpMapping`], so the service's error type becomes [`Infallible`].
///
/// This is what axum's `Router::layer` and `route_layer` require of a
/// layer, so a palisade stack topped with this layer needs no
/// `HandleErrorLayer`.
///
/// Every answer is an HTTP one (status, `Retry-After`, body), gRPC calls
/// included: the layer reads nothing of the request. On a router that
/// also serves tonic services, give those routes their own stack topped
/// with the gRPC flavour (`ErrorToStatusLayer`, with the `tonic` feature),
/// so that a rejected gRPC call gets its mapped code and retry pushback
/// rather than the code a gRPC client infers from the HTTP status.
///
/// # The response body type
///
/// The inner service's body type `B` is kept: error responses are built
/// with `B::from(Bytes)`. `axum::body::Body`, `http_body_util::Full<Bytes>`
/// and `Bytes` qualify. Keeping the type, rather than wrapping bodies in an
/// either-type, leaves every other layer and axum itself seeing the body
/// they expect, and costs nothing on the happy path. For a body type
/// without `From<Bytes>`, map the body first (for example with
/// `tower_http::map_response_body`) or call [`HttpMapping::to_response`]
/// yourself.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use axum::{Router, body::Body, routing::get};
/// use palisade_core::{BoxError, PolicyName, RateLimited, KeyKind};
/// use palisade_http::ErrorToResponseLayer;
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A route service that can fail, as a palisade stack does.
/// let limited = service_fn(|_req: http::Request<Body>| async {
///     Err::<http::Response<Body>, BoxError>(
///         RateLimited::new(PolicyName::new("api"), Duration::from_millis(300), KeyKind::Global).into(),
///     )
/// });
/// let app = Router::new().route_service(
///     "/",
///     ErrorToResponseLayer::new().layer(limited),
/// );
///
/// let res = app.oneshot(http::Request::new(Body::empty())).await.unwrap();
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "1");
/// # }
/// ```
///
/// `M` is [`Counted`] until [`leak`](ErrorToResponseLayer::leak) makes it
/// [`Leaked`].
pub struct ErrorToResponseLayer<H: 'static = ProblemJson, M: Sharing = Counted> {
    mapping: SharedState<HttpMapping<H>, M>,
}

impl ErrorToResponseLayer {
    /// A layer with the default [`HttpMapping`].
    pub fn new() -> Self {
        Self::with_mapping(HttpMapping::new())
    }
}

impl Default for ErrorToResponseLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<H> ErrorToResponseLayer<H> {
    /// A layer with the given mapping.
    pub fn with_mapping(mapping: HttpMapping<H>) -> Self {
        Self {
            mapping: SharedState::new(mapping),
        }
    }
}

impl<H, M: Sharing> ErrorToResponseLayer<H, M> {
    /// The mapping.
    pub fn mapping(&self) -> &HttpMapping<H> {
        &self.mapping
    }

    /// Keeps this layer's mapping until the process exits, so that its
    /// services and calls reach it without counting references: for a
    /// layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_http::ErrorToResponseLayer;
    ///
    /// let layer = ErrorToResponseLayer::new().leak();
    /// // A clone copies a plain reference to the same mapping.
    /// let copy = layer.clone();
    /// assert!(std::ptr::eq(layer.mapping(), copy.mapping()));
    /// ```
    pub fn leak(self) -> ErrorToResponseLayer<H, Leaked> {
        ErrorToResponseLayer {
            mapping: self.mapping.leak(),
        }
    }
}

impl<H, M: Sharing> Leak for ErrorToResponseLayer<H, M> {
    type Leaked = ErrorToResponseLayer<H, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<H, M: Sharing> Clone for ErrorToResponseLayer<H, M> {
    fn clone(&self) -> Self {
        Self {
            mapping: self.mapping.clone(),
        }
    }
}

impl<H, M: Sharing> fmt::Debug for ErrorToResponseLayer<H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorToResponseLayer")
            .field("mapping", &self.mapping)
            .finish()
    }
}

impl<S, H, M: Sharing> Layer<S> for ErrorToResponseLayer<H, M> {
    type Service = ErrorToResponse<S, H, M>;

    fn layer(&self, inner: S) -> Self::Service {
        ErrorToResponse {
            inner,
            mapping: self.mapping.clone(),
            not_ready: None,
        }
    }
}

/// Answers the mapped response when the inner service fails. Built by
/// [`ErrorToResponseLayer`].
///
/// A readiness error of the inner service is kept and answered, mapped, by
/// the next call, which then does not reach the inner service.
pub struct ErrorToResponse<S, H: 'static = ProblemJson, M: Sharing = Counted> {
    inner: S,
    mapping: SharedState<HttpMapping<H>, M>,
    not_ready: Option<BoxError>,
}

impl<S, H, M: Sharing> ErrorToResponse<S, H, M> {
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

impl<S: Clone, H, M: Sharing> Clone for ErrorToResponse<S, H, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            mapping: self.mapping.clone(),
            // A clone has not been polled: it never inherits a failure.
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug, H, M: Sharing> fmt::Debug for ErrorToResponse<S, H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorToResponse")
            .field("inner", &self.inner)
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

impl<S, H, M, Req, B> Service<Req> for ErrorToResponse<S, H, M>
where
    M: Sharing,
    S: Service<Req, Response = http::Response<B>>,
    S::Error: Into<BoxError>,
    H: MakeErrorBody,
    B: From<Bytes>,
{
    type Response = http::Response<B>;
    type Error = Infallible;
    type Future = ResponseFuture<S::Future, H, M>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        keep_readiness_error(&mut self.inner, &mut self.not_ready, cx).map(Ok)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.not_ready.take() {
            None => ResponseFuture::new(self.inner.call(req), self.mapping.clone()),
            Some(err) => ResponseFuture::not_ready(err, self.mapping.clone()),
        }
    }
}

/// Waits for `inner` to be ready, keeping a readiness error in `not_ready`
/// for the next call to answer: an error-mapping service is always ready,
/// and the call that follows a failed readiness does not reach `inner`.
pub(crate) fn keep_readiness_error<S, Req>(
    inner: &mut S,
    not_ready: &mut Option<BoxError>,
    cx: &mut Context<'_>,
) -> Poll<()>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    if not_ready.is_none()
        && let Err(err) = std::task::ready!(inner.poll_ready(cx))
    {
        *not_ready = Some(err.into());
    }
    Poll::Ready(())
}

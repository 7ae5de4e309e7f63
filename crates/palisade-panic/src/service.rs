use std::task::{Context, Poll};

use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, PolicyName};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::shared::Shared;

/// Catches panics raised by the inner service and returns them as
/// [`Panicked`](crate::error::Panicked) errors.
///
/// A panic in `poll_ready`, in `call` or in any poll of the response future
/// is caught. After a panic in the response future, that future is dropped;
/// the service itself keeps serving. Created by
/// [`CatchPanicLayer`](crate::CatchPanicLayer); `M` is the layer's kind of
/// [shared-state handle](palisade_core::shared).
#[derive(Clone, Debug)]
pub struct CatchPanic<S, M: Sharing = Counted> {
    inner: S,
    shared: SharedState<Shared, M>,
}

impl<S, M: Sharing> CatchPanic<S, M> {
    pub(crate) fn from_shared(inner: S, shared: SharedState<Shared, M>) -> Self {
        Self { inner, shared }
    }

    /// The policy name of the layer that built this service.
    pub fn name(&self) -> &PolicyName {
        &self.shared.policy
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

impl<S, M, Request> Service<Request> for CatchPanic<S, M>
where
    M: Sharing,
    S: Service<Request>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let inner = &mut self.inner;
        match self.shared.catch(|| inner.poll_ready(cx)) {
            Ok(ready) => ready.map_err(Into::into),
            Err(payload) => Poll::Ready(Err(self.shared.caught(payload, None).into())),
        }
    }

    #[inline]
    fn call(&mut self, request: Request) -> Self::Future {
        let inner = &mut self.inner;
        match self.shared.catch(|| inner.call(request)) {
            Ok(future) => ResponseFuture::new(future, self.shared.clone()),
            Err(payload) => ResponseFuture::panicked(self.shared.caught(payload, None)),
        }
    }
}

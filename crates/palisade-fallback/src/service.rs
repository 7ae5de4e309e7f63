use std::fmt;
use std::task::{Context, Poll};

use palisade_core::BoxError;
use palisade_core::shared::{Counted, SharedState, Sharing};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::predicate::Predicate;
use crate::source::Source;

/// Answers from a fallback source instead of the inner service's error or
/// response, when the predicate claims it.
///
/// Built by [`FallbackLayer`](crate::FallbackLayer). Errors and responses
/// the predicate does not claim pass through unchanged (errors boxed as
/// [`BoxError`]).
///
/// # Readiness errors
///
/// When the inner service fails in `poll_ready` with an error the
/// predicate claims, the fallback reports itself ready and answers the next
/// call from the source without calling the inner service. The source
/// runs when that call's response future is first polled, so a future
/// dropped unpolled costs nothing and reports nothing. Errors the predicate
/// does not claim are returned from `poll_ready` as they are.
///
/// `M` is the layer's kind of [shared-state handle](palisade_core::shared).
pub struct Fallback<S, P: 'static, F: 'static, M: Sharing = Counted> {
    inner: S,
    shared: SharedState<Shared<P, F>, M>,
    /// A readiness error the predicate claimed, answered by the next call.
    not_ready: Option<BoxError>,
}

impl<S, P, F, M: Sharing> Fallback<S, P, F, M> {
    pub(crate) fn new(inner: S, shared: SharedState<Shared<P, F>, M>) -> Self {
        Self {
            inner,
            shared,
            not_ready: None,
        }
    }

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

impl<S: Clone, P, F, M: Sharing> Clone for Fallback<S, P, F, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            // A clone has not been polled: it never inherits a failure.
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug, P, F, M: Sharing> fmt::Debug for Fallback<S, P, F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, P, F, M, Req> Service<Req> for Fallback<S, P, F, M>
where
    M: Sharing,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Predicate<S::Response>,
    F: Source<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, P, F, Req, S::Response, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.not_ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
            Poll::Ready(Err(err)) => {
                let err: BoxError = err.into();
                if crate::future::claims(&self.shared, &err) {
                    self.not_ready = Some(err);
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Ready(Err(err))
                }
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let kept = crate::future::keep(&self.shared, &req);
        match self.not_ready.take() {
            None => ResponseFuture::new(self.inner.call(req), kept, self.shared.clone()),
            Some(err) => ResponseFuture::unready(err, kept, self.shared.clone()),
        }
    }
}

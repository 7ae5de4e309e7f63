use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use palisade_core::{BoxError, FallbackTrigger};
use tower_service::Service;

use crate::future::ResponseFuture;
use crate::layer::Shared;
use crate::predicate::Predicate;
use crate::source::{Cause, Source};

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
/// call from the source without calling the inner service. Errors the
/// predicate does not claim are returned from `poll_ready` as they are.
pub struct Fallback<S, P, F> {
    inner: S,
    shared: Arc<Shared<P, F>>,
    /// A readiness error the predicate claimed, answered by the next call.
    not_ready: Option<(FallbackTrigger, BoxError)>,
}

impl<S, P, F> Fallback<S, P, F> {
    pub(crate) fn new(inner: S, shared: Arc<Shared<P, F>>) -> Self {
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

impl<S: Clone, P, F> Clone for Fallback<S, P, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            // A clone has not been polled: it never inherits a failure.
            not_ready: None,
        }
    }
}

impl<S: fmt::Debug, P, F> fmt::Debug for Fallback<S, P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fallback")
            .field("inner", &self.inner)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, P, F, Req> Service<Req> for Fallback<S, P, F>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: Predicate<S::Response>,
    F: Source<Req, S::Response>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, P, F, Req, S::Response>;

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
                match self.shared.predicate.check_error(&*err) {
                    Some(trigger) => {
                        self.not_ready = Some((trigger, err));
                        Poll::Ready(Ok(()))
                    }
                    None => Poll::Ready(Err(err)),
                }
            }
        }
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let kept = self.shared.source.keep(&req);
        match self.not_ready.take() {
            None => ResponseFuture::new(self.inner.call(req), kept, Arc::clone(&self.shared)),
            Some((trigger, err)) => ResponseFuture::answer(
                Cause::from_error(trigger, err),
                kept,
                Arc::clone(&self.shared),
            ),
        }
    }
}

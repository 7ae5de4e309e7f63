use std::fmt;
use std::task::{Context, Poll};

use palisade_core::RecordOutcome;
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Classify};
use tower_service::Service;

use crate::breaker::Breaker;
use crate::future::{OutcomeRecorder, ResponseFuture};
use crate::handle::CircuitBreakerHandle;

/// A service guarded by a circuit breaker. Made by
/// [`CircuitBreakerLayer`](crate::CircuitBreakerLayer).
///
/// `poll_ready` is the inner service's readiness only: a breaker never
/// holds a caller back. The decision is made in `call`: a refused call
/// returns a ready [`CircuitOpen`](palisade_core::CircuitOpen) error
/// without calling the inner service.
///
/// The response type is the classifier's output: the inner response itself
/// for classifiers that decide at once, or the response with its body
/// wrapped for [`GrpcErrorsAsFailures`](palisade_core::classify::GrpcErrorsAsFailures),
/// which decides when the trailers arrive.
///
/// `M` is the layer's kind of [shared-state handle](palisade_core::shared).
pub struct CircuitBreaker<S, C, M: Sharing = Counted> {
    inner: S,
    breaker: SharedState<Breaker, M>,
    classifier: C,
}

impl<S, C, M: Sharing> CircuitBreaker<S, C, M> {
    pub(crate) fn new(inner: S, breaker: SharedState<Breaker, M>, classifier: C) -> Self {
        Self {
            inner,
            breaker,
            classifier,
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

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// A handle to control and inspect the breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.to_any())
    }
}

impl<S: Clone, C: Clone, M: Sharing> Clone for CircuitBreaker<S, C, M> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breaker: self.breaker.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, C, M: Sharing> fmt::Debug for CircuitBreaker<S, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("policy", &self.breaker.cfg.policy)
            .finish_non_exhaustive()
    }
}

impl<S, C, M, Req> Service<Req> for CircuitBreaker<S, C, M>
where
    M: Sharing,
    OutcomeRecorder<M>: RecordOutcome,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = C::Output<OutcomeRecorder<M>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        match self.breaker.admit() {
            Ok(permit) => {
                // Marked as calling until the future holds it: dropped
                // while the service's `call` unwinds, the recorder reports
                // the service's panic as its failure.
                let recorder = OutcomeRecorder::calling(self.breaker.clone(), permit);
                ResponseFuture::admitted(self.inner.call(req), recorder, self.classifier.clone())
            }
            Err(refusal) => ResponseFuture::refused(self.breaker.refusal_error(refusal)),
        }
    }
}

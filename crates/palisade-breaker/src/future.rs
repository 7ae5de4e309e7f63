//! The future a [`CircuitBreaker`](crate::CircuitBreaker) returns, and the
//! recorder that reports each call's outcome to the breaker.
//!
//! [`ResponseFuture`] resolves to the inner service's result, classified:
//! the classifier tells the [`OutcomeRecorder`] whether the call succeeded,
//! failed or says nothing about the dependency. A recorder dropped without
//! an outcome (the future dropped before the inner call finished, or a
//! gRPC response body dropped before its trailers) reports
//! [`Outcome::Cancelled`], and a half-open probe slot it held is given back.
//!
//! A panic of the service that is not caught below the breaker counts as
//! a [`Outcome::Failure`]: a panic in the inner service's `call`, out of
//! the inner future while the breaker polls it, or out of a body the
//! classifier waits on (a gRPC stream). So a dependency that panics on
//! every call trips the breaker, with or without a panic-catch layer below
//! it. A call dropped by any other panic (in code that holds the future,
//! or another branch of its caller) is cancelled, as any dropped call.
//!
//! # Example
//!
//! ```
//! use palisade_breaker::CircuitBreakerLayer;
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder().minimum_calls(1).count_window(1).build().unwrap();
//! let mut svc = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>(1) }));
//!
//! // A call dropped before it finished counts as neither success nor failure.
//! let future = svc.ready().await.unwrap().call(());
//! drop(future);
//! assert_eq!(layer.handle().counts().calls, 0);
//!
//! assert_eq!(svc.ready().await.unwrap().call(()).await.unwrap(), 1);
//! assert_eq!(layer.handle().counts().calls, 1);
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::queue::Measuring;
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, CircuitOpen, Classify, Outcome, RecordOutcome};
use pin_project_lite::pin_project;

use crate::breaker::{Breaker, Permit};

/// Reports the outcome of one admitted call to its breaker, once.
///
/// Handed to the classifier, which calls
/// [`record`](RecordOutcome::record) when the outcome is known. Dropping it
/// unrecorded reports the call as cancelled and gives back a probe slot it
/// held. It appears in the breaker's response type as the `R` of
/// [`Classify::Output`]; `M` is the layer's kind of
/// [shared-state handle](palisade_core::shared).
pub struct OutcomeRecorder<M: Sharing = Counted> {
    breaker: SharedState<Breaker, M>,
    /// Marked recorded once the outcome is in.
    permit: Permit,
}

impl<M: Sharing> OutcomeRecorder<M> {
    /// The recorder of a call whose service's `call` is about to run; the
    /// response future takes it once `call` returned.
    #[inline]
    pub(crate) fn calling(breaker: SharedState<Breaker, M>, permit: Permit) -> Self {
        Self {
            breaker,
            permit: permit.calling(),
        }
    }

    /// The permit, once: later calls get a permit with nothing to record.
    #[inline]
    fn take_permit(&mut self) -> Permit {
        let permit = self.permit;
        self.permit.set_recorded();
        permit
    }

    /// Reports `outcome`: [`RecordOutcome::record`], for any `M`.
    #[inline]
    fn finish(mut self, outcome: Outcome) {
        let permit = self.take_permit();
        self.breaker.complete(&permit, outcome);
    }
}

impl<M: Sharing> RecordOutcome for OutcomeRecorder<M>
where
    SharedState<Breaker, M>: Send,
{
    #[inline]
    fn record(self, outcome: Outcome) {
        // A call is cancelled when its recorder is dropped unrecorded; an
        // outcome given as `Cancelled` is a classifier's, which palisade's
        // layers ignore (and `cancelled_as_failure` does not count).
        let outcome = if outcome == Outcome::Cancelled {
            Outcome::Ignored
        } else {
            outcome
        };
        // A metrics sink that panics as the breaker reports the call is
        // contained, as it already was when the call was a probe, and the
        // caller gets the service's answer. `contained` cannot unwind, so
        // a response classified around this call is built in place.
        palisade_core::panic::contained(move || self.finish(outcome));
    }

    /// A gRPC answer whose status comes in its trailers: the call's
    /// latency, which slow-call detection judges, ends with its head, not
    /// with a stream that may run for minutes.
    fn answered(&mut self) {
        if self.breaker.needs_start() {
            self.permit.answer(self.breaker.now_mark());
        }
    }
}

impl<M: Sharing> Drop for OutcomeRecorder<M> {
    #[inline]
    fn drop(&mut self) {
        // Recorded calls (nearly all) only release their breaker handle.
        if !self.permit.is_recorded() {
            self.unrecorded();
        }
    }
}

impl<M: Sharing> OutcomeRecorder<M> {
    /// Dropped without an outcome: failed if the service's `call` is
    /// unwinding, cancelled otherwise, also while the thread unwinds. A
    /// panic of the service in a poll of its future or of a classified
    /// body was recorded as a failure where it was raised; any other panic
    /// that drops the call (code holding it, a sibling branch of the
    /// caller) says nothing of the dependency.
    #[cold]
    #[inline(never)]
    fn unrecorded(&mut self) {
        let outcome = if self.permit.is_calling() {
            Outcome::Failure
        } else {
            Outcome::Cancelled
        };
        let permit = self.take_permit();
        self.breaker.complete(&permit, outcome);
    }
}

/// Records a failure if the inner future panics while it is polled, even
/// when a caller above catches the panic and drops the future later.
struct FailOnPanic<'a, M: Sharing> {
    recorder: &'a mut Option<OutcomeRecorder<M>>,
    polling: bool,
}

impl<M: Sharing> Drop for FailOnPanic<'_, M> {
    #[inline]
    fn drop(&mut self) {
        if self.polling
            && let Some(recorder) = self.recorder.take()
        {
            recorder.finish(Outcome::Failure);
        }
    }
}

/// Moves a timed call's start later by `waited`, the time it spent
/// queued at a bulkhead below during the poll just made.
#[cold]
#[inline(never)]
fn queued_for<M: Sharing>(waited: Duration, recorder: &mut Option<OutcomeRecorder<M>>) {
    if let Some(recorder) = recorder.as_mut() {
        recorder
            .permit
            .delay_start(waited, recorder.breaker.now_mark());
    }
}

const POLLED_AFTER_COMPLETION: &str = "circuit breaker future polled after completion";

impl<M: Sharing> fmt::Debug for OutcomeRecorder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeRecorder")
            .field("policy", &self.breaker.cfg.policy)
            .field("kind", &self.permit.kind())
            .field("recorded", &self.permit.is_recorded())
            .finish()
    }
}

pin_project! {
    /// The response future of a [`CircuitBreaker`](crate::CircuitBreaker).
    pub struct ResponseFuture<F, C, M: Sharing = Counted> {
        #[pin]
        state: State<F, C, M>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, C, M: Sharing> {
        Called {
            #[pin]
            future: F,
            recorder: Option<OutcomeRecorder<M>>,
            classifier: C,
        },
        Refused {
            error: Option<CircuitOpen>,
        },
    }
}

impl<F, C, M: Sharing> ResponseFuture<F, C, M> {
    /// The future of a call the service's `call` returned: `recorder`,
    /// made [`calling`](OutcomeRecorder::calling), is no longer.
    #[inline]
    pub(crate) fn admitted(future: F, mut recorder: OutcomeRecorder<M>, classifier: C) -> Self {
        recorder.permit.called();
        Self {
            state: State::Called {
                future,
                recorder: Some(recorder),
                classifier,
            },
        }
    }

    pub(crate) fn refused(error: CircuitOpen) -> Self {
        Self {
            state: State::Refused { error: Some(error) },
        }
    }
}

impl<F, C, M, T, E> Future for ResponseFuture<F, C, M>
where
    M: Sharing,
    OutcomeRecorder<M>: RecordOutcome,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<C::Output<OutcomeRecorder<M>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called {
                future,
                recorder,
                classifier,
            } => {
                // The recorder is gone once the call completed (or panicked):
                // the inner future must not be polled again.
                if recorder.is_none() {
                    return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                }
                let mut guard = FailOnPanic {
                    recorder,
                    polling: true,
                };
                // Time the call spends queued at a bulkhead below is local
                // overload, not the service's latency.
                let measuring = Measuring::begin();
                let polled = future.poll(cx);
                let waited = measuring.end();
                if !waited.is_zero() {
                    queued_for(waited, guard.recorder);
                }
                guard.polling = false;
                let result = ready!(polled).map_err(Into::into);
                // The result is dropped before the error is made: live
                // across that allocation, which may unwind, it would be
                // kept in a temporary and copied out on the path that
                // classifies it too.
                let Some(recorder) = guard.recorder.take() else {
                    drop(result);
                    return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                };
                Poll::Ready(classifier.classify(result, recorder))
            }
            StateProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(error) => error.into(),
                None => POLLED_AFTER_COMPLETION.into(),
            })),
        }
    }
}

impl<F, C, M: Sharing> fmt::Debug for ResponseFuture<F, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { recorder, .. } if recorder.is_some() => "called",
            State::Called { .. } => "done",
            State::Refused { .. } => "refused",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

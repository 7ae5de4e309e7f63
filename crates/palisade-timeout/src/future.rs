//! The response future of [`Timeout`](crate::Timeout).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::deadline::Scope;
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Elapsed, Event};
use pin_project_lite::pin_project;

use crate::layer::Shared;
use crate::timer::Timer;

pin_project! {
    /// The response future of [`Timeout`](crate::Timeout).
    ///
    /// Polls the inner future first. Only when it returns `Pending` for the
    /// first time is the timer created, so a call that completes on its
    /// first poll costs no clock read and no timer registration, and its
    /// deadline counts from that first poll. The timer lives out of line,
    /// in a slot that each thread reuses, so the future stays small (a
    /// pointer instead of tokio's whole `Sleep`) for every layer that wraps
    /// it, and a call that waits still allocates nothing once its thread
    /// has freed a few timers.
    pub struct ResponseFuture<F, M: Sharing = Counted> {
        // `None` once the deadline passed.
        #[pin]
        inner: Option<F>,
        timer: Timer,
        // Also says whether the inner future finished.
        budget: Budget,
        shared: SharedState<Shared, M>,
    }
}

/// The answer to a poll after the call finished: the inner future is not
/// polled again (an `async` block panics when resumed after completion).
const POLLED_AFTER_COMPLETION: &str = "timeout response future polled after completion";

impl<F, M: Sharing> ResponseFuture<F, M> {
    pub(crate) fn new(inner: F, budget: Budget, shared: SharedState<Shared, M>) -> Self {
        Self {
            inner: Some(inner),
            timer: Timer::idle(),
            budget,
            shared,
        }
    }

    /// The deadline applied to this call.
    pub fn timeout(&self) -> Duration {
        self.budget.timeout()
    }

    /// Whether the deadline is the remote caller's, shorter than the
    /// policy's own.
    pub fn is_caller_deadline(&self) -> bool {
        self.budget.is_caller()
    }

    /// Whether the timer has been started (the inner future returned
    /// `Pending` at least once).
    pub fn is_timer_started(&self) -> bool {
        self.timer.is_started()
    }
}

impl<F, M: Sharing> fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("timeout", &self.budget.timeout())
            .field("caller_deadline", &self.budget.is_caller())
            .field("timer_started", &self.timer.is_started())
            .field("expired", &self.inner.is_none())
            .finish()
    }
}

impl<F, M, T, E> Future for ResponseFuture<F, M>
where
    M: Sharing,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if this.budget.is_finished() {
            return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
        }
        let Some(inner) = this.inner.as_mut().as_pin_mut() else {
            // Polled again after expiring: answer the same way, never panic.
            return Poll::Ready(Err(elapsed(this.shared, *this.budget)));
        };
        let had_budget = tokio::task::coop::has_budget_remaining();
        let polled = {
            let _running = Scope::enter(
                this.budget.nanos(),
                this.timer.deadline(),
                this.budget.is_caller(),
            );
            inner.poll(cx)
        };
        if let Poll::Ready(result) = polled {
            // Marked, not dropped: dropping a finished future costs every
            // call, and its caller drops this one soon.
            this.budget.finish();
            // An answer seen once the caller's deadline has fired (a handler
            // answering 504 for a downstream call that followed that
            // deadline, in the same instant) is too late for the caller, who
            // has given up: it is answered as the caller's timeout, which a
            // breaker above does not count, rather than as the service's
            // answer. An error seen then (a bulkhead turning the call away
            // at the deadline) stays.
            if result.is_ok() && this.budget.is_caller() && this.timer.has_fired() {
                drop(result);
                return Poll::Ready(Err(timed_out(this.shared, *this.budget)));
            }
            return Poll::Ready(result.map_err(Into::into));
        }
        let timeout = this.budget.timeout();
        // A call that spent its task's whole cooperative budget leaves none
        // for the timer, which would then never see its deadline pass while
        // the call always has work ready: its timer is read regardless, as
        // tokio's own timeout does. A task that came in with no budget is
        // left to yield.
        let exempt = had_budget && !tokio::task::coop::has_budget_remaining();
        ready!(this.timer.poll_elapsed(timeout, exempt, cx));
        // Drop the inner future now: the call is cancelled and whatever it
        // holds (connections, permits) is released before the caller sees
        // the error. On the layer's own deadline the drop is marked, so
        // layers below can tell a call that ran out of time from one its
        // caller gave up on.
        if this.budget.is_caller() {
            this.inner.set(None);
        } else {
            palisade_core::classify::cut_off(timeout, || this.inner.set(None));
        }
        Poll::Ready(Err(timed_out(this.shared, *this.budget)))
    }
}

/// Reports a call timed out and gives its error.
#[cold]
fn timed_out(shared: &Shared, budget: Budget) -> BoxError {
    shared.metrics.emit(&Event::TimedOut {
        policy: shared.policy.as_str(),
        timeout: budget.timeout(),
        caller: budget.is_caller(),
    });
    elapsed(shared, budget)
}

fn elapsed(shared: &Shared, budget: Budget) -> BoxError {
    let policy = shared.policy.clone();
    if budget.is_caller() {
        Elapsed::caller_deadline(policy, budget.timeout()).into()
    } else {
        Elapsed::new(policy, budget.timeout()).into()
    }
}

/// A call's deadline, whose it is and whether the call finished, in one
/// word: the top bit says the deadline is the remote caller's, the next
/// one that the inner future finished, the rest is the duration in
/// nanoseconds. Eight bytes instead of a `Duration` and two flags
/// (twenty-four with padding), in a future that every outer layer moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Budget(u64);

impl Budget {
    const CALLER: u64 = 1 << 63;
    const FINISHED: u64 = 1 << 62;

    /// `timeout` is kept to the nanosecond up to 2^62 - 1 ns (about 146
    /// years), and held at that beyond. The timer itself never waits more
    /// than tokio's longest sleep (about 30 years; see the builder).
    #[inline]
    pub(crate) fn new(timeout: Duration, caller: bool) -> Self {
        let nanos = u64::try_from(timeout.as_nanos())
            .unwrap_or(u64::MAX)
            .min(Self::FINISHED - 1);
        Self(nanos | if caller { Self::CALLER } else { 0 })
    }

    fn timeout(self) -> Duration {
        Duration::from_nanos(self.nanos())
    }

    /// The duration in nanoseconds.
    #[inline]
    pub(crate) fn nanos(self) -> u64 {
        self.0 & (Self::FINISHED - 1)
    }

    #[inline]
    pub(crate) fn is_caller(self) -> bool {
        self.0 & Self::CALLER != 0
    }

    #[inline]
    fn is_finished(self) -> bool {
        self.0 & Self::FINISHED != 0
    }

    #[inline]
    fn finish(&mut self) {
        self.0 |= Self::FINISHED;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_keeps_the_deadline_and_whose_it_is() {
        for (timeout, caller) in [
            (Duration::ZERO, false),
            (Duration::from_nanos(1), true),
            (Duration::from_millis(250), true),
            (Duration::from_secs(30), false),
            (Duration::from_nanos(u64::MAX >> 2), true),
        ] {
            let mut budget = Budget::new(timeout, caller);
            assert_eq!((budget.timeout(), budget.is_caller()), (timeout, caller));
            assert!(!budget.is_finished());
            budget.finish();
            assert_eq!((budget.timeout(), budget.is_caller()), (timeout, caller));
            assert!(budget.is_finished());
        }
        let longest = Duration::from_nanos(u64::MAX >> 2);
        for huge in [Duration::from_nanos(u64::MAX), Duration::MAX] {
            assert_eq!(Budget::new(huge, false).timeout(), longest);
            assert!(Budget::new(huge, true).is_caller());
        }
    }
}

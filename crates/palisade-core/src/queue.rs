//! Time a call spent queued for local capacity, passed from the layer that
//! queued it to the layers above it that time the call.
//!
//! A bulkhead with a queue holds a call back until a slot frees up. That
//! wait is local overload, not the time the service took: a circuit
//! breaker above it that counted the wait as latency would take a healthy
//! service for a slow one, and open. So the bulkhead [`report`]s the wait
//! when it lets a queued call through, during the poll of the call's
//! future, and a layer above it that times the call wraps that poll in a
//! [`Measuring`], which hands back what was reported within it.
//!
//! Both run on the thread that polls the call, inside one poll: nothing is
//! shared between threads, and a call admitted at once reports nothing.
//! Measures nest, and each sees every wait reported inside it, inner
//! measures' included: two breakers above one bulkhead (a global one over
//! a keyed one) both leave its queue out. A wait reported where nobody
//! measures is never counted against a call: each measure starts from
//! zero, and puts back what was there before it, plus what it saw.
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::queue::{self, Measuring};
//!
//! // A breaker's poll of the call below it, in which a bulkhead lets the
//! // call through after 40 ms in its queue.
//! let measuring = Measuring::begin();
//! queue::report(Duration::from_millis(40));
//! assert_eq!(measuring.end(), Duration::from_millis(40));
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

thread_local! {
    /// Nanoseconds of local waits reported since the innermost
    /// [`Measuring`] on this thread began.
    static WAITED: Cell<u64> = const { Cell::new(0) };
}

/// Reports that the call being polled on this thread waited `waited` for
/// local capacity (a slot of a bulkhead's) before it could start.
#[inline]
pub fn report(waited: Duration) {
    let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
    WAITED.set(WAITED.get().saturating_add(nanos));
}

/// Measures the local waits [`report`]ed on this thread between
/// [`begin`](Self::begin), before a poll of the call below, and
/// [`end`](Self::end), after it: inner measures' included, and the
/// measure around this one sees them too. Two steps rather than a closure
/// around the poll, so that the layer's poll stays one inlined call.
#[derive(Debug)]
#[must_use = "`end` gives the waits reported and passes them to the measure around this one"]
pub struct Measuring {
    outer: u64,
    _this_thread: PhantomData<*const ()>,
}

impl Measuring {
    /// Starts measuring the waits reported on this thread.
    #[inline]
    pub fn begin() -> Self {
        Self {
            outer: WAITED.replace(0),
            _this_thread: PhantomData,
        }
    }

    /// The waits reported since [`begin`](Self::begin), which the measure
    /// around this one sees too.
    #[inline]
    pub fn end(self) -> Duration {
        let waited = WAITED.get();
        WAITED.set(self.outer.saturating_add(waited));
        Duration::from_nanos(waited)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `poll` between a [`Measuring`]'s two steps.
    fn measure(poll: impl FnOnce()) -> ((), Duration) {
        let measuring = Measuring::begin();
        poll();
        ((), measuring.end())
    }

    #[test]
    fn measures_nest_and_see_only_what_is_reported_inside_them() {
        report(Duration::from_secs(9));
        let ((), outer) = measure(|| {
            report(Duration::from_millis(1));
            let ((), inner) = measure(|| report(Duration::from_millis(20)));
            assert_eq!(inner, Duration::from_millis(20));
            report(Duration::from_millis(2));
        });
        assert_eq!(outer, Duration::from_millis(23), "the inner wait too");
        let ((), none) = measure(|| ());
        assert_eq!(none, Duration::ZERO, "nothing from before the measure");
        report(Duration::MAX);
        report(Duration::MAX);
        let ((), saturated) = measure(|| report(Duration::MAX));
        assert_eq!(saturated, Duration::from_nanos(u64::MAX));
    }
}

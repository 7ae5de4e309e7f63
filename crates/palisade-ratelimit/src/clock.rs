//! The clock governor reads, backed by `palisade_core::Clock`.
//!
//! Governor's GCRA reads the clock once per check. The adapter below does
//! that one read through palisade's [`Clock`](palisade_core::Clock), so
//! `tokio::time::pause` and [`ManualClock`](palisade_core::ManualClock)
//! drive the limiter, and it remembers the reading in a thread-local. The
//! state store, which governor calls synchronously on the same thread
//! right after, takes the reading from there: the limiter turns governor's
//! answer into a `retry_after`, an eviction decision and header values
//! without a second clock read.

use std::cell::Cell;
use std::time::Instant;

use governor::nanos::Nanos;

thread_local! {
    static LAST_READING: Cell<u64> = const { Cell::new(0) };
}

/// Governor's clock: nanoseconds since `base`, read through palisade's
/// clock. Built once, with the limiter.
#[derive(Clone, Debug)]
pub(crate) struct GovernorClock {
    clock: palisade_core::Clock,
    base: Instant,
}

impl GovernorClock {
    pub(crate) fn new(clock: palisade_core::Clock) -> Self {
        let base = clock.now();
        Self { clock, base }
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        let elapsed = self.clock.now().saturating_duration_since(self.base);
        // Saturates after about 584 years of uptime.
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        LAST_READING.set(nanos);
        Nanos::new(nanos)
    }
}

/// The instant this thread's last [`GovernorClock::now`] returned, in
/// nanoseconds since the clock's base.
#[inline]
pub(crate) fn last_reading() -> u64 {
    LAST_READING.get()
}

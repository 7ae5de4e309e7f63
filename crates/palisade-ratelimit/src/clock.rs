//! Reading palisade's clock as nanoseconds since a limiter's origin.
//!
//! Every check reads the clock once, through palisade's
//! [`Clock`](palisade_core::Clock), so `tokio::time::pause` and
//! [`ManualClock`](palisade_core::ManualClock) drive the limiter.
//!
//! The shared bucket reads it with [`nanos_since`] and keeps the reading
//! for its `retry_after` and header values. Per-key buckets are checked by
//! governor, which reads its clock through [`GovernorClock`]; the adapter
//! remembers the reading in a thread-local, and the state store, which
//! governor calls synchronously on the same thread right after, takes it
//! from there: the limiter turns governor's answer into a `retry_after`,
//! an eviction decision and header values without a second clock read.

use std::cell::Cell;

use governor::nanos::Nanos;
use palisade_core::clock::Origin;

thread_local! {
    static LAST_READING: Cell<u64> = const { Cell::new(0) };
}

/// The latest reading: half of `u64`'s range, about 292 years after the
/// origin. A bucket's arrival time runs at most a full bucket ahead of the
/// clock, and the builder bounds a full bucket by the other half, so no
/// sum of the two overflows, in palisade's bucket or in governor's.
pub(crate) const MAX_READING: u64 = u64::MAX / 2;

/// The time on `clock`, in nanoseconds since `origin` (zero before it;
/// it stops at [`MAX_READING`], which only a manual clock moved that far
/// reaches).
#[inline]
pub(crate) fn nanos_since(clock: &palisade_core::Clock, origin: &Origin) -> u64 {
    origin.nanos(clock.now()).min(MAX_READING)
}

/// Governor's clock: nanoseconds since `base`, read through palisade's
/// clock. Built once, with a keyed limiter.
#[derive(Clone, Debug)]
pub(crate) struct GovernorClock {
    clock: palisade_core::Clock,
    base: Origin,
}

impl GovernorClock {
    pub(crate) fn new(clock: palisade_core::Clock) -> Self {
        let base = Origin::new(clock.now());
        Self { clock, base }
    }

    /// The instant this clock counts from.
    pub(crate) fn base(&self) -> std::time::Instant {
        self.base.instant()
    }
}

impl governor::clock::Clock for GovernorClock {
    type Instant = Nanos;

    #[inline]
    fn now(&self) -> Nanos {
        let nanos = nanos_since(&self.clock, &self.base);
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

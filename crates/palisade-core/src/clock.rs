//! How layers read time.
//!
//! Every time rule in palisade (a breaker's open wait, a time window, an
//! adaptive limit's sampling) reads the time through a [`Clock`], so tests
//! can drive it without sleeping:
//!
//! - [`Clock::tokio`] (the default) follows tokio's clock. In production it
//!   is the monotonic system clock; in a test with
//!   `#[tokio::test(start_paused = true)]` or after `tokio::time::pause()`,
//!   it moves only when the test calls `tokio::time::advance` (or when the
//!   runtime auto-advances an idle paused clock).
//! - [`Clock::manual`] follows a [`ManualClock`] that only moves when told,
//!   for tests without a runtime (property tests, model checks).
//!
//! Layers that wait (a bulkhead queue, a timeout) use tokio's timer, which
//! follows tokio's clock.
//!
//! Reading the clock costs a few tens of nanoseconds; layers read it at
//! most once per request, and only when a rule needs it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{Clock, ManualClock};
//!
//! let manual = ManualClock::new();
//! let clock = Clock::manual(&manual);
//! let start = clock.now();
//! manual.advance(Duration::from_secs(30));
//! assert_eq!(clock.now() - start, Duration::from_secs(30));
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The time source a layer reads. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    source: Source,
}

#[derive(Clone, Debug, Default)]
enum Source {
    #[default]
    Tokio,
    Manual(ManualClock),
}

impl Clock {
    /// Tokio's clock: the system's monotonic clock, or tokio's paused clock
    /// in tests. The default.
    pub fn tokio() -> Self {
        Self {
            source: Source::Tokio,
        }
    }

    /// A clock that follows `manual`.
    pub fn manual(manual: &ManualClock) -> Self {
        Self {
            source: Source::Manual(manual.clone()),
        }
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Instant {
        match &self.source {
            Source::Tokio => tokio::time::Instant::now().into_std(),
            Source::Manual(manual) => {
                manual.inner.reads.fetch_add(1, Ordering::Relaxed);
                manual.now()
            }
        }
    }
}

/// A clock that moves only when [`advance`](ManualClock::advance) is called.
///
/// Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock {
    inner: Arc<ManualInner>,
}

#[derive(Debug)]
struct ManualInner {
    base: Instant,
    offset_nanos: AtomicU64,
    /// Reads through a [`Clock`] that follows this clock.
    reads: AtomicU64,
}

impl ManualClock {
    /// A manual clock starting now.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(ManualInner {
                base: Instant::now(),
                offset_nanos: AtomicU64::new(0),
                reads: AtomicU64::new(0),
            }),
        }
    }

    /// Moves the clock forward by `by` (saturating after about 584 years).
    pub fn advance(&self, by: Duration) {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        let _ =
            self.inner
                .offset_nanos
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |current| {
                    Some(current.saturating_add(nanos))
                });
    }

    /// How far the clock has moved since it was created.
    pub fn elapsed(&self) -> Duration {
        Duration::from_nanos(self.inner.offset_nanos.load(Ordering::Acquire))
    }

    /// The current instant of this clock.
    pub fn now(&self) -> Instant {
        self.inner.base + self.elapsed()
    }

    /// How many times a [`Clock`] that follows this manual clock has been
    /// read (direct calls of [`now`](Self::now) are not counted): for
    /// tests that hold a layer to the clock reads it documents.
    ///
    /// ```
    /// use palisade_core::ManualClock;
    ///
    /// let manual = ManualClock::new();
    /// let clock = manual.clock();
    /// let _ = clock.now();
    /// let _ = manual.now();
    /// assert_eq!(manual.reads(), 1);
    /// ```
    pub fn reads(&self) -> u64 {
        self.inner.reads.load(Ordering::Relaxed)
    }

    /// A [`Clock`] that follows this manual clock.
    pub fn clock(&self) -> Clock {
        Clock::manual(self)
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

/// An instant that a layer counts time from, so that it can keep times in
/// one atomic word as nanoseconds since it.
///
/// [`nanos`](Origin::nanos) is the conversion every clock-reading layer
/// makes on its request path. Where an `Instant` hashes as a count of
/// seconds and one of nanoseconds (as std's does on Linux), it reads them
/// through that `Hash` and subtracts, a few instructions; std's own
/// subtraction (`saturating_duration_since`) is an out-of-line call of
/// about fifty. The reading is checked against std's subtraction when the
/// origin is made, and any other form of `Instant` falls back to std's.
///
/// ```
/// use std::time::{Duration, Instant};
/// use palisade_core::clock::Origin;
///
/// let start = Instant::now();
/// let origin = Origin::new(start);
/// assert_eq!(origin.nanos(start + Duration::from_millis(1500)), 1_500_000_000);
/// // An instant before the origin reads as the origin.
/// assert_eq!(origin.nanos(start.checked_sub(Duration::from_secs(1)).unwrap_or(start)), 0);
/// assert_eq!(origin.instant(), start);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    instant: Instant,
    /// The origin's seconds and nanoseconds, when `Instant` reads as such.
    parts: Option<Parts>,
}

/// An `Instant` as the platform keeps it: seconds and nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Parts {
    secs: i64,
    nanos: u32,
}

/// The most seconds [`Origin::nanos`] converts itself; further instants
/// (only a manual clock moved that far reaches them) go through std.
const MAX_FAST_SECS: i64 = 9_000_000_000;

const NANOS_PER_SEC: i64 = 1_000_000_000;

impl Parts {
    /// Reads `instant`'s fields through its `Hash`: `None` unless it hashes
    /// as exactly one 64-bit count of seconds and then a count of
    /// nanoseconds below one second.
    #[inline]
    fn of(instant: &Instant) -> Option<Self> {
        let mut reader = FieldReader::default();
        std::hash::Hash::hash(instant, &mut reader);
        match reader {
            FieldReader {
                secs: Some(secs),
                nanos: Some(nanos),
                other: false,
            } if i64::from(nanos) < NANOS_PER_SEC => Some(Self { secs, nanos }),
            _ => None,
        }
    }

    /// Nanoseconds from `self` to `later`, when both are in the range this
    /// converts; negative when `later` is earlier.
    #[inline]
    fn nanos_until(self, later: Self) -> Option<i64> {
        let secs = later.secs.checked_sub(self.secs)?;
        if !(-MAX_FAST_SECS..=MAX_FAST_SECS).contains(&secs) {
            return None;
        }
        Some(secs * NANOS_PER_SEC + (i64::from(later.nanos) - i64::from(self.nanos)))
    }
}

/// A `Hasher` that keeps the integers an `Instant` hashes.
#[derive(Default)]
struct FieldReader {
    secs: Option<i64>,
    nanos: Option<u32>,
    /// Anything but one seconds field followed by one nanoseconds field.
    other: bool,
}

impl FieldReader {
    #[inline]
    fn seconds(&mut self, secs: Option<i64>) {
        match (self.secs, self.nanos, secs) {
            (None, None, Some(secs)) => self.secs = Some(secs),
            _ => self.other = true,
        }
    }
}

impl std::hash::Hasher for FieldReader {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, _bytes: &[u8]) {
        self.other = true;
    }

    #[inline]
    fn write_i64(&mut self, value: i64) {
        self.seconds(Some(value));
    }

    #[inline]
    fn write_u64(&mut self, value: u64) {
        self.seconds(i64::try_from(value).ok());
    }

    #[inline]
    fn write_u32(&mut self, value: u32) {
        match (self.secs, self.nanos) {
            (Some(_), None) => self.nanos = Some(value),
            _ => self.other = true,
        }
    }
}

impl Origin {
    /// Counts from `instant`.
    pub fn new(instant: Instant) -> Self {
        let parts = Parts::of(&instant).filter(|&origin| {
            // The fields read agree with std's subtraction, across a carry
            // of the nanoseconds too.
            [
                Duration::ZERO,
                Duration::from_nanos(1),
                Duration::new(1, 999_999_999),
                Duration::from_millis(2_500),
                Duration::from_secs(86_400 * 365),
            ]
            .into_iter()
            .all(|offset| {
                instant.checked_add(offset).is_some_and(|later| {
                    Parts::of(&later)
                        .and_then(|later| origin.nanos_until(later))
                        .and_then(|nanos| u128::try_from(nanos).ok())
                        == Some(offset.as_nanos())
                })
            })
        });
        Self { instant, parts }
    }

    /// The instant counted from.
    pub fn instant(&self) -> Instant {
        self.instant
    }

    /// Nanoseconds from the origin to `at`: zero for an instant before the
    /// origin, and `u64::MAX` for one more than about 584 years after it.
    #[inline]
    pub fn nanos(&self, at: Instant) -> u64 {
        if let Some(origin) = self.parts
            && let Some(nanos) = Parts::of(&at).and_then(|at| origin.nanos_until(at))
        {
            return u64::try_from(nanos).unwrap_or(0);
        }
        self.nanos_by_std(at)
    }

    /// [`nanos`](Self::nanos) through std's subtraction.
    #[cold]
    fn nanos_by_std(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.instant).as_nanos()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = Clock::tokio();
        let start = clock.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now() - start, Duration::from_secs(90));
    }

    /// std's `Instant` is seconds and nanoseconds on Linux, where CI runs;
    /// elsewhere the fallback keeps the reading right.
    #[cfg(target_os = "linux")]
    #[test]
    fn origin_reads_instants_itself_on_this_platform() {
        let origin = Origin::new(Instant::now());
        assert!(origin.parts.is_some(), "falls back to std's subtraction");
    }

    #[test]
    fn origin_counts_like_std_subtraction() {
        let start = Instant::now();
        let origin = Origin::new(start);
        let by_std = |at: Instant| origin.nanos_by_std(at);
        let mut offset = 1_u64;
        // Offsets from a nanosecond to about 194 years, each also one
        // nanosecond either side, so every carry of the nanoseconds is
        // met (the far end, through std, is the next test's).
        while offset < u64::MAX / 3 {
            for nanos in [offset - 1, offset, offset + 1] {
                if let Some(at) = start.checked_add(Duration::from_nanos(nanos)) {
                    assert_eq!(origin.nanos(at), by_std(at), "{nanos} ns later");
                    assert_eq!(origin.nanos(at), nanos, "{nanos} ns later");
                }
                if let Some(at) = start.checked_sub(Duration::from_nanos(nanos)) {
                    assert_eq!(origin.nanos(at), 0, "{nanos} ns earlier");
                }
            }
            offset = offset * 3 + 7;
        }
        assert_eq!(origin.nanos(start), 0);
        assert_eq!(origin.instant(), start);
    }

    proptest::proptest! {
        /// Whatever the origin's nanoseconds (so every carry is met), a
        /// reading agrees with std's subtraction, before and after it.
        #[test]
        fn origin_reads_as_std_subtracts(
            shift in 0_u64..2_000_000_000,
            later in 0_u64..(1 << 62),
            earlier in 0_u64..2_000_000_000_000,
        ) {
            let now = Instant::now();
            let start = now.checked_add(Duration::from_nanos(shift)).unwrap_or(now);
            let origin = Origin::new(start);
            if let Some(at) = start.checked_add(Duration::from_nanos(later)) {
                proptest::prop_assert_eq!(origin.nanos(at), origin.nanos_by_std(at));
                proptest::prop_assert_eq!(origin.nanos(at), later);
            }
            if let Some(at) = start.checked_sub(Duration::from_nanos(earlier)) {
                proptest::prop_assert_eq!(origin.nanos(at), 0);
            }
        }
    }

    #[test]
    fn origin_saturates_far_in_the_future() {
        let manual = ManualClock::new();
        let origin = Origin::new(manual.now());
        manual.advance(Duration::from_secs(300 * 365 * 86_400));
        assert_eq!(
            origin.nanos(manual.now()),
            300 * 365 * 86_400 * 1_000_000_000
        );
        manual.advance(Duration::MAX);
        assert_eq!(origin.nanos(manual.now()), u64::MAX);
    }

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_time() {
        let manual = ManualClock::new();
        let a = manual.clock();
        let b = a.clone();
        let start = a.now();
        assert_eq!(b.now(), start);
        manual.advance(Duration::from_millis(1500));
        assert_eq!(a.now() - start, Duration::from_millis(1500));
        assert_eq!(b.now() - start, Duration::from_millis(1500));
        manual.advance(Duration::MAX);
        assert_eq!(manual.elapsed(), Duration::from_nanos(u64::MAX));
    }
}

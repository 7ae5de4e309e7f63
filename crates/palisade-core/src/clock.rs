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

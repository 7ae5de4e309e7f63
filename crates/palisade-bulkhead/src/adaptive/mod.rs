//! Adaptive concurrency limits: the limit follows the service's latency
//! and failures, between a minimum and a maximum.
//!
//! An adaptive bulkhead reads the clock when a call is admitted and when
//! its outcome is known, and adds the latency and the outcome (decided by
//! the bulkhead's [`Classify`](palisade_core::Classify)) to a window of
//! atomic counters. No lock is taken per call. When a window is complete
//! (by default, as many completions as the current limit, and at least
//! ten), the completion that closes it takes the algorithm with a
//! `try_lock` (it never waits: if another thread is updating, the window
//! simply goes on) and computes the new limit. A change is reported as
//! [`Event::LimitChanged`](palisade_core::Event::LimitChanged), and every
//! [`Event::InFlightChanged`](palisade_core::Event::InFlightChanged) and
//! [`Overloaded`](palisade_core::Overloaded) carries the limit in force.
//!
//! Two algorithms are provided:
//!
//! - [`Gradient`] compares the latency of each window with a long-term
//!   baseline and settles just past the point where latency starts to
//!   climb (the service's knee). It is the default.
//! - [`Aimd`] grows by one per healthy window and shrinks by a factor on
//!   failures or, when configured, on latency over a threshold.
//!
//! Outcomes that are neither success nor failure
//! ([`Outcome::Ignored`], and cancelled
//! calls) are not sampled. A call that panics counts as a failure.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_bulkhead::BulkheadLayer;
//! use palisade_bulkhead::adaptive::{AdaptiveLimit, Gradient};
//!
//! let layer = BulkheadLayer::builder()
//!     .name("inventory")
//!     .adaptive(
//!         AdaptiveLimit::new(Gradient::new().tolerance(2.0))
//!             .min_limit(4)
//!             .initial_limit(16)
//!             .max_limit(256),
//!     )
//!     .build()
//!     .unwrap();
//! assert_eq!(layer.limit(), 16);
//! ```

mod aimd;
mod gradient;

/// `0.5 <= backoff < 1.0`: a backoff must lower the limit, and not by more
/// than half.
fn check_backoff(check: &Validate<'_>, backoff: f64) -> Result<(), ConfigError> {
    if (0.5..1.0).contains(&backoff) {
        Ok(())
    } else {
        Err(check.error("backoff", backoff, "0.5 <= x < 1.0"))
    }
}

use std::fmt;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::{ConfigError, Outcome};

pub use self::aimd::Aimd;
pub use self::gradient::Gradient;

/// Computes a new concurrency limit from one window of completions.
///
/// Called rarely (once per window) and never concurrently with itself.
/// The result is clamped to the adaptive limit's minimum and maximum.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The new limit, given the window's `sample` and the `limit` in force.
    fn update(&mut self, sample: &Sample, limit: usize) -> usize;

    /// Checks the algorithm's parameters when the bulkhead is built.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the parameter. The default accepts all.
    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        let _ = check;
        Ok(())
    }
}

/// What one window of completions looked like.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct Sample {
    /// Calls sampled (successes and failures).
    pub samples: u64,
    /// Of which failures.
    pub failures: u64,
    /// Mean latency of the sampled calls.
    pub mean_latency: Duration,
    /// Smallest latency of the sampled calls.
    pub min_latency: Duration,
    /// The most calls in flight when one of the sampled calls started.
    pub max_in_flight: usize,
    /// The adaptive limit's minimum.
    pub min_limit: usize,
    /// The adaptive limit's maximum.
    pub max_limit: usize,
}

impl Sample {
    /// A sample from its measurements, with limits `1..=usize::MAX`.
    pub fn new(
        samples: u64,
        failures: u64,
        mean_latency: Duration,
        min_latency: Duration,
        max_in_flight: usize,
    ) -> Self {
        Self {
            samples,
            failures,
            mean_latency,
            min_latency,
            max_in_flight,
            min_limit: 1,
            max_limit: usize::MAX,
        }
    }

    /// Sets the minimum limit.
    #[must_use]
    pub fn with_min_limit(mut self, min_limit: usize) -> Self {
        self.min_limit = min_limit;
        self
    }

    /// Sets the maximum limit.
    #[must_use]
    pub fn with_max_limit(mut self, max_limit: usize) -> Self {
        self.max_limit = max_limit;
        self
    }

    /// Failures divided by samples (0 for an empty window).
    pub fn failure_rate(&self) -> f64 {
        if self.samples == 0 {
            0.0
        } else {
            self.failures as f64 / self.samples as f64
        }
    }
}

/// An adaptive limit: its algorithm and its bounds.
///
/// Pass it to [`BulkheadLayerBuilder::adaptive`](crate::BulkheadLayerBuilder::adaptive).
#[derive(Debug)]
pub struct AdaptiveLimit {
    algorithm: Box<dyn LimitAlgorithm>,
    min: usize,
    max: usize,
    initial: usize,
    window: Option<usize>,
}

impl AdaptiveLimit {
    /// An adaptive limit driven by `algorithm`, between 4 and 1000,
    /// starting at 20.
    pub fn new(algorithm: impl LimitAlgorithm) -> Self {
        Self {
            algorithm: Box::new(algorithm),
            min: 4,
            max: 1000,
            initial: 20,
            window: None,
        }
    }

    /// The [`Gradient`] algorithm with its defaults.
    pub fn gradient() -> Self {
        Self::new(Gradient::new())
    }

    /// The [`Aimd`] algorithm with its defaults.
    pub fn aimd() -> Self {
        Self::new(Aimd::new())
    }

    /// The lowest the limit goes, at least 1 (default 4).
    #[must_use]
    pub fn min_limit(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The highest the limit goes (default 1000).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The limit before the first window (default 20). Start below the
    /// capacity you expect: the limit grows quickly.
    #[must_use]
    pub fn initial_limit(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// Completions per window, at least 1. By default a window is as many
    /// completions as the current limit, and at least ten.
    #[must_use]
    pub fn window(mut self, completions: usize) -> Self {
        self.window = Some(completions);
        self
    }

    pub(crate) fn initial(&self) -> usize {
        self.initial
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn validate(
        &self,
        check: &Validate<'_>,
        max_allowed: usize,
    ) -> Result<(), ConfigError> {
        check.in_range("min_limit", self.min, 1, max_allowed)?;
        check.in_range("max_limit", self.max, self.min, max_allowed)?;
        check.in_range("initial_limit", self.initial, self.min, self.max)?;
        if let Some(window) = self.window {
            check.in_range("window", window, 1, 1_000_000)?;
        }
        self.algorithm.validate(check)
    }

    pub(crate) fn into_state(self) -> AdaptiveState {
        AdaptiveState {
            min: self.min,
            max: self.max,
            window: self.window,
            count: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency_sum: AtomicU64::new(0),
            min_latency: AtomicU64::new(u64::MAX),
            max_in_flight: AtomicUsize::new(0),
            algorithm: Mutex::new(self.algorithm),
        }
    }
}

/// Per-bulkhead adaptive state: the current window, kept in atomics, and
/// the algorithm, behind a lock only the window's closer tries to take.
pub(crate) struct AdaptiveState {
    min: usize,
    max: usize,
    window: Option<usize>,
    count: AtomicU64,
    failures: AtomicU64,
    latency_sum: AtomicU64,
    min_latency: AtomicU64,
    max_in_flight: AtomicUsize,
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
}

const MIN_WINDOW: usize = 10;

impl AdaptiveState {
    /// Adds one completed call to the window. When it closes the window,
    /// returns the new limit to apply (clamped, and different from
    /// `limit`).
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        latency: Duration,
        in_flight_at_start: usize,
        limit: usize,
    ) -> Option<usize> {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            _ => return None,
        };
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // Measurements first, the count last: whoever sees the count full
        // sees this call's measurements too.
        self.latency_sum.fetch_add(nanos, Ordering::Relaxed);
        // A plain load first: most calls change neither extreme, and a
        // load is cheaper than a read-modify-write.
        if nanos < self.min_latency.load(Ordering::Relaxed) {
            self.min_latency.fetch_min(nanos, Ordering::Relaxed);
        }
        if in_flight_at_start > self.max_in_flight.load(Ordering::Relaxed) {
            self.max_in_flight
                .fetch_max(in_flight_at_start, Ordering::Relaxed);
        }
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
        let count = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        let window = match self.window {
            Some(window) => window,
            None => limit.max(MIN_WINDOW),
        };
        if count < window as u64 {
            return None;
        }
        // Never wait: if someone else is updating, this window goes on.
        let Ok(mut algorithm) = self.algorithm.try_lock() else {
            return None;
        };
        let samples = self.count.swap(0, Ordering::AcqRel);
        if samples < window as u64 {
            // Another completion closed this window a moment ago.
            return None;
        }
        let sum = self.latency_sum.swap(0, Ordering::Relaxed);
        let min_latency = self.min_latency.swap(u64::MAX, Ordering::Relaxed);
        let failures = self.failures.swap(0, Ordering::Relaxed).min(samples);
        let max_in_flight = self.max_in_flight.swap(0, Ordering::Relaxed);
        let sample = Sample {
            samples,
            failures,
            mean_latency: Duration::from_nanos(sum / samples),
            min_latency: Duration::from_nanos(if min_latency == u64::MAX {
                0
            } else {
                min_latency
            }),
            max_in_flight,
            min_limit: self.min,
            max_limit: self.max,
        };
        let new = algorithm.update(&sample, limit).clamp(self.min, self.max);
        (new != limit).then_some(new)
    }
}

impl fmt::Debug for AdaptiveState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveState")
            .field("min", &self.min)
            .field("max", &self.max)
            .field("window", &self.window)
            .finish_non_exhaustive()
    }
}

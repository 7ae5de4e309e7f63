//! Adaptive concurrency limits: the limit follows the service's latency
//! and failures, between a minimum and a maximum.
//!
//! An adaptive bulkhead reads the clock when a call is admitted and when
//! its outcome is known, and adds the latency and the outcome (decided by
//! the bulkhead's [`Classify`](palisade_core::Classify)) to a window of
//! atomic counters. No lock is taken per call. When a window is complete
//! (by default, as many completions as the current limit, and at least
//! ten), the last of its completions hands it to the algorithm, which
//! computes the new limit. Every completion is counted in exactly one
//! window, with its latency and outcome. Nothing waits: while one window
//! is being computed, the next simply goes on. A change is reported as
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
//! A call that panics counts as a failure. [`Outcome::Ignored`] calls are
//! not sampled. A call that palisade's timeout above the bulkhead (where
//! `palisade::Stack` puts it) cuts off at its own deadline counts as a
//! failure, with the time it ran as its latency: the service was too slow
//! for it, the clearest sign of congestion there is (the timeout marks the
//! cut; see [`cut_off`](palisade_core::classify::cut_off)). That holds for
//! a call that had run, holding its slot, at least half the timeout's
//! deadline: a call made late inside the one cut off (a handler's second
//! step, behind its own bulkhead) was dropped with it but did not make it
//! late, and is not sampled. Time spent queued for a slot does not count:
//! the queue is the limit's own doing, and a call that queued most of its
//! deadline, then ran briefly, says nothing about the service; counting it
//! would lower the limit, lengthen the queue and cut more calls, down to
//! the minimum while the service is healthy. The running time is read on
//! the bulkhead's clock, so with a clock that does not move with tokio's
//! (a manual clock) cut calls are not sampled. A call its
//! caller drops ([`Outcome::Cancelled`]), or that a caller's own shorter
//! deadline cuts off, says nothing about the service and is not sampled.
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
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::{ConfigError, Outcome};

use crate::sync::{AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering};

pub use self::aimd::Aimd;
pub use self::gradient::Gradient;

/// Computes a new concurrency limit from one window of completions.
///
/// Called rarely (once per window) and never concurrently with itself.
/// The result is clamped to the adaptive limit's minimum and maximum.
pub trait LimitAlgorithm: fmt::Debug + Send + 'static {
    /// The new limit, given the window's `sample` and the `limit` in force.
    ///
    /// A panic here is contained: the limit stays as it is for that window
    /// and the algorithm is asked again at the next one.
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
    /// `None`: [`DEFAULT_MIN`], or the maximum if lower.
    min: Option<usize>,
    max: usize,
    /// `None`: [`DEFAULT_INITIAL`], brought within the bounds.
    initial: Option<usize>,
    window: Option<usize>,
}

/// The minimum limit when none is set (or the maximum, if lower).
const DEFAULT_MIN: usize = 4;
/// The first limit when none is set, brought within the bounds.
const DEFAULT_INITIAL: usize = 20;

impl AdaptiveLimit {
    /// An adaptive limit driven by `algorithm`, between 4 and 1000,
    /// starting at 20. Bounds left unset follow the ones set: a maximum of
    /// 10 starts at 10, a minimum of 50 starts at 50.
    pub fn new(algorithm: impl LimitAlgorithm) -> Self {
        Self {
            algorithm: Box::new(algorithm),
            min: None,
            max: 1000,
            initial: None,
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

    /// The lowest the limit goes, at least 1 (default 4, or the maximum
    /// if that is lower).
    #[must_use]
    pub fn min_limit(mut self, min: usize) -> Self {
        self.min = Some(min);
        self
    }

    /// The highest the limit goes (default 1000).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The limit before the first window, between the minimum and the
    /// maximum (default 20, or the nearest bound when 20 lies outside
    /// them). Start below the capacity you expect: the limit grows
    /// quickly.
    #[must_use]
    pub fn initial_limit(mut self, initial: usize) -> Self {
        self.initial = Some(initial);
        self
    }

    /// Completions per window, at least 1. By default a window is as many
    /// completions as the current limit, and at least ten.
    #[must_use]
    pub fn window(mut self, completions: usize) -> Self {
        self.window = Some(completions);
        self
    }

    /// The minimum in force: the one set, or the default within the
    /// maximum.
    fn min(&self) -> usize {
        self.min.unwrap_or(DEFAULT_MIN.min(self.max))
    }

    /// The first limit: the one set, or the default within the bounds.
    pub(crate) fn initial(&self) -> usize {
        self.initial
            .unwrap_or(DEFAULT_INITIAL.max(self.min()).min(self.max))
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn validate(
        &self,
        check: &Validate<'_>,
        max_allowed: usize,
    ) -> Result<(), ConfigError> {
        if let Some(min) = self.min {
            check.in_range("min_limit", min, 1, max_allowed)?;
        }
        check.in_range("max_limit", self.max, self.min.unwrap_or(1), max_allowed)?;
        if let Some(initial) = self.initial {
            check.in_range("initial_limit", initial, self.min(), self.max)?;
        }
        if let Some(window) = self.window {
            check.in_range("window", window, 1, 1_000_000)?;
        }
        self.algorithm.validate(check)
    }

    pub(crate) fn into_state(self) -> AdaptiveState {
        AdaptiveState {
            min: self.min(),
            max: self.max,
            window: self.window,
            open: AtomicU64::new(0),
            banks: [Bank::new(), Bank::new()],
            algorithm: Mutex::new(self.algorithm),
        }
    }
}

/// Bit of [`AdaptiveState::open`]: the bank the open window fills.
const BANK: u64 = 1 << 63;
/// Bit of [`AdaptiveState::open`]: the other bank holds a closed window
/// that is not harvested yet. No window closes until it is.
const HARVESTING: u64 = 1 << 62;
/// Bits of [`AdaptiveState::open`]: completions counted in the open window.
const COUNT: u64 = HARVESTING - 1;

/// Per-bulkhead adaptive state: the windows, kept in atomics, and the
/// algorithm, behind a lock only a window's harvester takes.
///
/// Each completion counts itself in `open` first: the count says which
/// bank the open window fills, so a completion's count and its
/// measurements always belong to the same window. The completion that
/// finds the window full closes it by switching `open` to the other bank.
/// Completions counted just before the switch may still be adding their
/// measurements to the closed bank; `Bank::settled` tells the last of
/// them, or the closer, that the window is complete. That one harvests
/// it. Until the harvest is over `HARVESTING` keeps the open window from
/// closing (it simply goes on), so a bank is never reused before it is
/// emptied and the algorithm never runs twice at once.
pub(crate) struct AdaptiveState {
    min: usize,
    max: usize,
    window: Option<usize>,
    /// `BANK | HARVESTING | COUNT`.
    open: AtomicU64,
    banks: [Bank; 2],
    algorithm: Mutex<Box<dyn LimitAlgorithm>>,
}

/// The measurements of one window.
struct Bank {
    failures: AtomicU64,
    latency_sum: AtomicU64,
    /// `latency_sum` wrapped: the window's sum is `u64::MAX`.
    latency_overflow: AtomicBool,
    min_latency: AtomicU64,
    max_in_flight: AtomicUsize,
    /// Completions whose measurements are in, less the window's count once
    /// it is closed. It returns to 0 exactly once per window: when the
    /// window is closed and every completion counted in it is in.
    settled: AtomicU64,
    /// The closed window's count, written before it is taken from
    /// `settled`.
    closed: AtomicU64,
}

impl Bank {
    fn new() -> Self {
        Self {
            failures: AtomicU64::new(0),
            latency_sum: AtomicU64::new(0),
            latency_overflow: AtomicBool::new(false),
            min_latency: AtomicU64::new(u64::MAX),
            max_in_flight: AtomicUsize::new(0),
            settled: AtomicU64::new(0),
            closed: AtomicU64::new(0),
        }
    }

    #[inline]
    fn add(&self, nanos: u64, failed: bool, in_flight_at_start: usize) {
        let before = self.latency_sum.fetch_add(nanos, Ordering::Relaxed);
        if before.checked_add(nanos).is_none() {
            self.latency_overflow.store(true, Ordering::Relaxed);
        }
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
    }

    /// Empties the bank of a complete window.
    fn take(&self) -> Totals {
        let sum = self.latency_sum.swap(0, Ordering::Relaxed);
        let overflow = self.latency_overflow.swap(false, Ordering::Relaxed);
        Totals {
            samples: self.closed.load(Ordering::Relaxed),
            failures: self.failures.swap(0, Ordering::Relaxed),
            latency_nanos: if overflow { u64::MAX } else { sum },
            min_latency_nanos: self.min_latency.swap(u64::MAX, Ordering::Relaxed),
            max_in_flight: self.max_in_flight.swap(0, Ordering::Relaxed),
        }
    }
}

/// What one window added up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Totals {
    samples: u64,
    failures: u64,
    /// Saturated at `u64::MAX`.
    latency_nanos: u64,
    /// `u64::MAX` when nothing was sampled.
    min_latency_nanos: u64,
    max_in_flight: usize,
}

impl Totals {
    fn sample(&self, min_limit: usize, max_limit: usize) -> Sample {
        Sample {
            samples: self.samples,
            failures: self.failures,
            mean_latency: Duration::from_nanos(self.latency_nanos / self.samples.max(1)),
            min_latency: Duration::from_nanos(if self.min_latency_nanos == u64::MAX {
                0
            } else {
                self.min_latency_nanos
            }),
            max_in_flight: self.max_in_flight,
            min_limit,
            max_limit,
        }
    }
}

/// A harvested window. Dropping it (after the algorithm ran, or if it
/// panicked) lets the open window close.
struct Harvest<'a> {
    totals: Totals,
    open: &'a AtomicU64,
}

impl Drop for Harvest<'_> {
    fn drop(&mut self) {
        self.open.fetch_and(!HARVESTING, Ordering::Release);
    }
}

const MIN_WINDOW: usize = 10;

impl AdaptiveState {
    /// Adds one completed call to the window. When the call completes a
    /// window, runs the algorithm on it with the limit in force (read by
    /// `limit` at that moment) and, if the limit changes, calls `apply`
    /// with the old and the new limit (clamped) before the next window may
    /// be computed: updates are applied one at a time, in order, each from
    /// the limit the one before set.
    pub(crate) fn record(
        &self,
        outcome: Outcome,
        latency: Duration,
        in_flight_at_start: usize,
        limit: impl Fn() -> usize,
        apply: impl FnOnce(usize, usize),
    ) {
        let failed = match outcome {
            Outcome::Success => false,
            Outcome::Failure => true,
            _ => return,
        };
        let window = match self.window {
            Some(window) => window,
            None => limit().max(MIN_WINDOW),
        };
        let Some(harvest) = self.add(failed, latency, in_flight_at_start, window as u64) else {
            return;
        };
        // Harvests never overlap, so the lock is free.
        let Ok(mut algorithm) = self.algorithm.try_lock() else {
            return;
        };
        let from = limit();
        let sample = harvest.totals.sample(self.min, self.max);
        // A user's algorithm that panics leaves the limit as it is for this
        // window: the panic must not reach the call being classified (or
        // abort a thread already unwinding), nor poison the lock and freeze
        // the limit for good.
        let Some(to) = palisade_core::panic::contained_value(|| algorithm.update(&sample, from))
        else {
            return;
        };
        let to = to.clamp(self.min, self.max);
        drop(algorithm);
        if to != from {
            apply(from, to);
        }
        // Only now may the next window close.
        drop(harvest);
    }

    /// Counts and measures one sampled call, closes the open window if it
    /// holds at least `window` completions, and returns the window this
    /// call completed, if any, for it to hand to the algorithm.
    fn add(
        &self,
        failed: bool,
        latency: Duration,
        in_flight_at_start: usize,
        window: u64,
    ) -> Option<Harvest<'_>> {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        // The count first: it names the bank this call's measurements go
        // to, so both land in the same window.
        let counted = self.open.fetch_add(1, Ordering::AcqRel);
        let bank = self.bank(counted);
        bank.add(nanos, failed, in_flight_at_start);
        // From u64::MAX (minus one) to 0: the window was closed, and this
        // was the last of its completions to come in.
        if bank.settled.fetch_add(1, Ordering::AcqRel) == u64::MAX {
            return Some(self.harvest(bank));
        }
        if (counted & COUNT) + 1 < window {
            return None;
        }
        let closed = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                let full = open & COUNT >= window;
                (full && open & HARVESTING == 0).then_some(((open & BANK) ^ BANK) | HARVESTING)
            })
            .ok()?;
        let bank = self.bank(closed);
        let samples = closed & COUNT;
        bank.closed.store(samples, Ordering::Relaxed);
        // Back to 0: every completion of the window is in already.
        (bank.settled.fetch_sub(samples, Ordering::AcqRel) == samples).then(|| self.harvest(bank))
    }

    #[inline]
    fn bank(&self, open: u64) -> &Bank {
        &self.banks[usize::from(open & BANK != 0)]
    }

    fn harvest(&self, bank: &Bank) -> Harvest<'_> {
        Harvest {
            totals: bank.take(),
            open: &self.open,
        }
    }

    /// The open window so far. Only meaningful while nothing is recorded.
    #[cfg(test)]
    fn open_totals(&self) -> Totals {
        let open = self.open.load(Ordering::Acquire);
        assert_eq!(open & HARVESTING, 0, "a harvest is still running");
        let bank = self.bank(open);
        assert!(!bank.latency_overflow.load(Ordering::Relaxed));
        Totals {
            samples: open & COUNT,
            failures: bank.failures.load(Ordering::Relaxed),
            latency_nanos: bank.latency_sum.load(Ordering::Relaxed),
            min_latency_nanos: bank.min_latency.load(Ordering::Relaxed),
            max_in_flight: bank.max_in_flight.load(Ordering::Relaxed),
        }
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

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::sync::{Arc, Mutex as StdMutex};
    use std::thread;

    use super::*;

    /// Keeps every sample it is given and leaves the limit as it is.
    #[derive(Debug, Default)]
    struct Recording(Arc<StdMutex<Vec<Sample>>>);

    impl LimitAlgorithm for Recording {
        fn update(&mut self, sample: &Sample, limit: usize) -> usize {
            self.0.lock().unwrap().push(*sample);
            limit
        }
    }

    fn recording(window: usize) -> (AdaptiveState, Arc<StdMutex<Vec<Sample>>>) {
        let samples = Arc::default();
        let state = AdaptiveLimit::new(Recording(Arc::clone(&samples)))
            .window(window)
            .into_state();
        (state, samples)
    }

    #[test]
    fn windows_close_at_their_size_and_keep_the_rest() {
        let (state, samples) = recording(3);
        for (ms, outcome) in [
            (10, Outcome::Success),
            (20, Outcome::Failure),
            (30, Outcome::Success),
            (1, Outcome::Cancelled),
            (1, Outcome::Ignored),
            (40, Outcome::Failure),
            (50, Outcome::Failure),
            (60, Outcome::Success),
            (70, Outcome::Success),
        ] {
            state.record(
                outcome,
                Duration::from_millis(ms),
                2,
                || 20,
                |from, to| panic!("the recording algorithm keeps the limit: {from} -> {to}"),
            );
        }
        let samples = samples.lock().unwrap();
        let expected = |failures, mean, min| {
            Sample::new(
                3,
                failures,
                Duration::from_millis(mean),
                Duration::from_millis(min),
                2,
            )
            .with_min_limit(4)
            .with_max_limit(1000)
        };
        assert_eq!(*samples, [expected(1, 20, 10), expected(2, 50, 40)]);
        let rest = state.open_totals();
        assert_eq!((rest.samples, rest.latency_nanos), (1, 70_000_000));
    }

    #[test]
    fn a_huge_latency_saturates_the_window_sum() {
        // A wrapped sum would make this window look instant.
        let (state, samples) = recording(2);
        state.record(Outcome::Success, Duration::MAX, 1, || 20, |_, _| ());
        state.record(
            Outcome::Success,
            Duration::from_nanos(2),
            1,
            || 20,
            |_, _| (),
        );
        let mean = samples.lock().unwrap()[0].mean_latency;
        assert_eq!(mean, Duration::from_nanos(u64::MAX / 2));
        // The next window starts from nothing.
        state.record(
            Outcome::Success,
            Duration::from_nanos(6),
            1,
            || 20,
            |_, _| (),
        );
        state.record(
            Outcome::Success,
            Duration::from_nanos(2),
            1,
            || 20,
            |_, _| (),
        );
        let mean = samples.lock().unwrap()[1].mean_latency;
        assert_eq!(mean, Duration::from_nanos(4));
    }

    /// xorshift64*, so that a failure replays.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    // Each call's latency carries a 1 at `COUNTED`, and one at `FAILED` if
    // it failed: a window's latency sum then spells out which calls it
    // holds, and must agree with its count and its failures.
    const COUNTED: u64 = 1 << 20;
    const FAILED: u64 = 1 << 40;

    #[test]
    fn every_completion_is_reported_in_exactly_one_window_under_contention() {
        const THREADS: u64 = 4;
        const CALLS: u64 = 50_000;
        // Under 2^20 calls in all, so the fields of a sum never overlap.
        const _: () = assert!(THREADS * CALLS < COUNTED);
        let state = Arc::new(AdaptiveLimit::aimd().into_state());
        let threads: Vec<_> = (0..THREADS)
            .map(|seed| {
                let state = Arc::clone(&state);
                thread::spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ seed);
                    let (mut failures, mut windows) = (0, Vec::new());
                    for _ in 0..CALLS {
                        let r = rng.next();
                        let failed = r & 3 == 0;
                        failures += u64::from(failed);
                        let latency = COUNTED + if failed { FAILED } else { 0 };
                        let in_flight = (r >> 8) as usize % 64 + 1;
                        // Windows of 1 to 24: small ones close on nearly
                        // every call, so closes and harvests overlap.
                        let window = (r >> 16) % 24 + 1;
                        let latency = Duration::from_nanos(latency);
                        if let Some(harvest) = state.add(failed, latency, in_flight, window) {
                            windows.push(harvest.totals);
                        }
                    }
                    (failures, windows)
                })
            })
            .collect();
        let mut failures = 0;
        let mut windows = Vec::new();
        for t in threads {
            let (f, w) = t.join().unwrap();
            failures += f;
            windows.extend(w);
        }
        // How many windows close depends on the scheduler (none closes
        // while another is harvested, and a preempted harvester holds them
        // all back): only that some did is certain.
        assert!(!windows.is_empty());
        let rest = state.open_totals();
        let mut reported = rest;
        for window in windows.iter().chain([&rest]) {
            assert_eq!(window.latency_nanos % COUNTED, 0, "{window:?}");
            assert_eq!(window.latency_nanos / FAILED, window.failures, "{window:?}");
            assert_eq!(
                window.latency_nanos % FAILED / COUNTED,
                window.samples,
                "{window:?}"
            );
            if window.samples > 0 {
                let all_failed = window.failures == window.samples;
                let slowest = COUNTED + if all_failed { FAILED } else { 0 };
                assert_eq!(window.min_latency_nanos, slowest, "{window:?}");
                assert!((1..=64).contains(&window.max_in_flight), "{window:?}");
            }
        }
        for window in &windows {
            assert!(window.samples > 0);
            reported.samples += window.samples;
            reported.failures += window.failures;
        }
        assert_eq!(reported.samples, THREADS * CALLS);
        assert_eq!(reported.failures, failures);
    }

    /// Panics on its first window, then adds one to the limit.
    #[derive(Debug, Default)]
    struct PanicsOnce(bool);

    impl LimitAlgorithm for PanicsOnce {
        fn update(&mut self, _: &Sample, limit: usize) -> usize {
            if !std::mem::replace(&mut self.0, true) {
                panic!("an algorithm with a bug");
            }
            limit + 1
        }
    }

    #[test]
    fn an_algorithm_that_panics_once_leaves_the_limit_and_keeps_adapting() {
        let state = AdaptiveLimit::new(PanicsOnce::default())
            .window(1)
            .into_state();
        let limit = std::cell::Cell::new(10);
        let record = || {
            state.record(
                Outcome::Success,
                Duration::from_millis(1),
                1,
                || limit.get(),
                |_, to| limit.set(to),
            );
        };
        // The panic stays in the algorithm: the caller's call goes on.
        let first = std::panic::catch_unwind(std::panic::AssertUnwindSafe(record));
        assert!(first.is_ok(), "the algorithm's panic reached the caller");
        assert_eq!(limit.get(), 10);
        for _ in 0..3 {
            record();
        }
        assert_eq!(limit.get(), 13, "the limit still follows the algorithm");
    }

    /// Adds one to the limit on every window.
    #[derive(Debug)]
    struct Climb;

    impl LimitAlgorithm for Climb {
        fn update(&mut self, _: &Sample, limit: usize) -> usize {
            limit + 1
        }
    }

    #[test]
    fn limit_updates_apply_in_order_and_none_is_lost_under_contention() {
        use std::sync::atomic::AtomicUsize as StdAtomicUsize;

        const THREADS: usize = 4;
        const CALLS: usize = 20_000;
        let state = Arc::new(
            AdaptiveLimit::new(Climb)
                .window(3)
                .max_limit(1_000_000)
                .into_state(),
        );
        let limit = Arc::new(StdAtomicUsize::new(10));
        let applied = Arc::new(StdAtomicUsize::new(0));
        let threads: Vec<_> = (0..THREADS)
            .map(|_| {
                let (state, limit, applied) = (state.clone(), limit.clone(), applied.clone());
                thread::spawn(move || {
                    for _ in 0..CALLS {
                        state.record(
                            Outcome::Success,
                            Duration::from_millis(1),
                            1,
                            || limit.load(Ordering::SeqCst),
                            |from, to| {
                                // Give another thread the chance to compute
                                // the next window meanwhile: it must not.
                                thread::yield_now();
                                // Each update starts from the limit the one
                                // before it set.
                                let was = limit.swap(to, Ordering::SeqCst);
                                assert_eq!(was, from, "an update was computed from a stale limit");
                                assert_eq!(to, from + 1);
                                applied.fetch_add(1, Ordering::SeqCst);
                            },
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let applied = applied.load(Ordering::SeqCst);
        assert!(applied > 0);
        assert_eq!(limit.load(Ordering::SeqCst), 10 + applied, "no update lost");
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use loom::sync::Arc;

    use super::*;

    /// Three completions of latency 1, 2 and 4 ns (in flight: the same),
    /// the last a failure, with windows of one: each window's sum says
    /// which of them it holds.
    #[test]
    fn loom_every_completion_lands_in_exactly_one_window() {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(|| {
            let state = Arc::new(AdaptiveLimit::aimd().window(1).into_state());
            let call = |state: &AdaptiveState, bit: u64| {
                let latency = Duration::from_nanos(bit);
                state
                    .add(bit == 4, latency, bit as usize, 1)
                    .map(|harvest| harvest.totals)
            };
            let threads: Vec<_> = [1, 2]
                .into_iter()
                .map(|bit| {
                    let state = Arc::clone(&state);
                    loom::thread::spawn(move || call(&state, bit))
                })
                .collect();
            let mut windows: Vec<Totals> = call(&state, 4).into_iter().collect();
            for t in threads {
                windows.extend(t.join().unwrap());
            }
            windows.push(state.open_totals());
            let mut seen = 0;
            for window in &windows {
                let bits = window.latency_nanos;
                assert_eq!(seen & bits, 0, "counted twice: {windows:?}");
                seen |= bits;
                assert_eq!(u64::from(bits.count_ones()), window.samples, "{windows:?}");
                assert_eq!(window.failures, bits >> 2, "{windows:?}");
                if bits != 0 {
                    let lowest = 1 << bits.trailing_zeros();
                    let highest = 1 << (63 - bits.leading_zeros());
                    assert_eq!(window.min_latency_nanos, lowest, "{windows:?}");
                    assert_eq!(window.max_in_flight as u64, highest, "{windows:?}");
                }
            }
            assert_eq!(seen, 7, "{windows:?}");
        });
    }
}

use palisade_core::ConfigError;
use palisade_core::config::Validate;

use super::{LimitAlgorithm, Sample, check_backoff};

/// A latency-gradient limit in the spirit of Netflix's Gradient2.
///
/// After each window of completions it compares the window's mean latency
/// (short term) with a long-term baseline:
///
/// ```text
/// gradient  = clamp(tolerance * long / short, 0.5, 1.0)
/// target    = limit * gradient + sqrt(limit)          // sqrt(limit) is headroom
/// estimate  = estimate * (1 - smoothing) + target * smoothing
/// ```
///
/// While latency stays within `tolerance` times the baseline the gradient
/// is 1 and the limit grows by its headroom; once calls queue inside the
/// service, latency rises faster than the limit and the gradient pulls the
/// limit back. The limit settles where the latency is about
/// `tolerance / (1 - 1/sqrt(limit))` times the baseline, just past the
/// service's knee.
///
/// # The baseline
///
/// Gradient2 lets the long-term latency follow every window. Under
/// sustained saturation it then learns the queueing delay as normal and
/// the limit creeps up without end. Here only calm windows feed the
/// baseline: those whose latency is less than halfway from the baseline to
/// `tolerance` times the baseline (1.25 times it, with the default
/// tolerance). A window above `tolerance` times the baseline is congested.
/// So that a service which became slower for reasons of its own is not
/// throttled for ever, the baseline is reset to the current latency when
/// lowering the limit stopped helping: during a congested stretch, since
/// the latency last fell 10% below its best, the limit halved, or it sat
/// for three windows where it cannot fall any further (its minimum, or
/// the floor of five calls the gradient itself cannot push below).
///
/// The baseline falls only through calm windows. After a slow spell that
/// reset it, a service that becomes fast again is judged against the
/// slower baseline, and the limit can settle above the new knee until the
/// queueing it causes drains and calm windows bring the baseline down.
///
/// The baseline is learned from the first windows: start with an initial
/// limit below the capacity you expect (the default is 20), or the
/// baseline includes queueing and the limit settles too high.
///
/// A window in which at least `failure_threshold` of the calls failed
/// multiplies the limit by `backoff`, whatever the latency: fast failures
/// must not look like a healthy service.
#[derive(Clone, Debug)]
pub struct Gradient {
    tolerance: f64,
    smoothing: f64,
    long_window: u32,
    backoff: f64,
    failure_threshold: f64,
    // State.
    baseline: f64,
    estimate: f64,
    stretch: Option<Stretch>,
}

/// The lowest limit the gradient can push a limit down to: at the lowest
/// gradient (0.5) the target `limit / 2 + sqrt(limit)` of a limit of 5 is
/// 4.74, which rounds back to 5.
const GRADIENT_FLOOR: usize = 5;

/// A run of congested windows, measured from its last gain in latency.
#[derive(Clone, Copy, Debug)]
struct Stretch {
    /// The limit at the last gain (or when the stretch began).
    gain_limit: usize,
    /// The best window latency so far, in nanoseconds.
    best: f64,
    /// Windows since the last gain.
    stale: u32,
}

impl Stretch {
    fn new(limit: usize, short: f64) -> Self {
        Self {
            gain_limit: limit,
            best: short,
            stale: 0,
        }
    }

    /// Counts one more congested window; `true` when lowering the limit
    /// has stopped helping: since the latency last fell 10% below its
    /// best, the limit halved, or it sat for three windows where it cannot
    /// fall any further (its minimum, or the gradient's floor). A window
    /// that is no better but no worse than the best, or worse, is no gain.
    fn stuck(&mut self, limit: usize, short: f64, min_limit: usize) -> bool {
        if short < 0.9 * self.best {
            *self = Self::new(limit, short);
            return false;
        }
        self.stale += 1;
        let halved = limit * 2 <= self.gain_limit;
        let at_floor = limit <= min_limit.max(GRADIENT_FLOOR) && self.stale >= 3;
        halved || at_floor
    }
}

impl Gradient {
    /// The defaults: tolerance 1.5, smoothing 0.2, a baseline averaged over
    /// 20 windows, backoff 0.9 when half of a window's calls fail.
    pub fn new() -> Self {
        Self {
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 20,
            backoff: 0.9,
            failure_threshold: 0.5,
            baseline: 0.0,
            estimate: 0.0,
            stretch: None,
        }
    }

    /// How much slower than the baseline a window may be before the limit
    /// stops growing: finite, at least 1.0 (default 1.5).
    #[must_use]
    pub fn tolerance(mut self, tolerance: f64) -> Self {
        self.tolerance = tolerance;
        self
    }

    /// How much of each new target is taken, in `(0, 1]` (default 0.2).
    #[must_use]
    pub fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// Over how many windows the baseline is averaged, at least 1
    /// (default 20).
    #[must_use]
    pub fn long_window(mut self, windows: u32) -> Self {
        self.long_window = windows;
        self
    }

    /// The factor applied when a window fails too often, in `[0.5, 1.0)`
    /// (default 0.9).
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// The share of failed calls in a window that lowers the limit, in
    /// `(0, 1]` (default 0.5).
    #[must_use]
    pub fn failure_threshold(mut self, threshold: f64) -> Self {
        self.failure_threshold = threshold;
        self
    }

    /// The long-term latency baseline, in nanoseconds (0 before the first
    /// window).
    pub fn baseline_nanos(&self) -> f64 {
        self.baseline
    }

    fn learn(&mut self, short: f64) {
        let rate = 2.0 / (f64::from(self.long_window) + 1.0);
        self.baseline = self.baseline.mul_add(1.0 - rate, short * rate);
    }
}

impl Default for Gradient {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Gradient {
    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        // An infinite tolerance would call every window calm: the limit
        // would only ever grow, whatever the latency.
        if !(self.tolerance >= 1.0 && self.tolerance.is_finite()) {
            return Err(check.error("tolerance", self.tolerance, "1.0 <= x, finite"));
        }
        check.fraction("smoothing", self.smoothing)?;
        check.at_least("long_window", self.long_window, 1)?;
        check_backoff(check, self.backoff)?;
        check.fraction("failure_threshold", self.failure_threshold)?;
        Ok(())
    }

    fn update(&mut self, sample: &Sample, limit: usize) -> usize {
        if sample.samples == 0 {
            return limit;
        }
        let current = limit as f64;
        // Follow the limit in force if it was clamped or set elsewhere.
        if !self.estimate.is_finite() || (self.estimate - current).abs() >= 1.0 {
            self.estimate = current;
        }
        if sample.failure_rate() >= self.failure_threshold {
            self.estimate = current * self.backoff;
            self.stretch = None;
            return (self.estimate.floor() as usize).min(limit.saturating_sub(1));
        }

        // At least a nanosecond: a window of calls that took no measurable
        // time (a paused or manual clock) must not make a zero baseline,
        // whose ratios are not numbers.
        let short = (sample.mean_latency.as_nanos() as f64).max(1.0);
        if self.baseline <= 0.0 {
            self.baseline = short;
        }
        // Only calm windows, less than halfway to the tolerance, teach the
        // baseline: a window just under the tolerance already holds queueing.
        let calm = 1.0 + (self.tolerance - 1.0) / 2.0;
        if short <= calm * self.baseline {
            self.learn(short);
            self.stretch = None;
        } else if short <= self.tolerance * self.baseline {
            self.stretch = None;
        } else {
            let stretch = self.stretch.get_or_insert(Stretch::new(limit, short));
            if stretch.stuck(limit, short, sample.min_limit) {
                // Lowering the limit stopped helping: this latency is the
                // service's own, not queueing we caused.
                self.baseline = short;
                self.stretch = None;
            }
        }

        if sample.max_in_flight * 2 < limit {
            // The callers, not the service, limit the load: no evidence to
            // grow on, and none that the limit is what to lower, since it
            // holds nobody back (as Gradient2's application-limited rule).
            // Should the load rise to it while the service is slow, the
            // windows from then on bring it down.
            return limit;
        }
        let gradient = (self.tolerance * self.baseline / short).clamp(0.5, 1.0);
        let target = current.mul_add(gradient, current.sqrt());
        self.estimate = self
            .estimate
            .mul_add(1.0 - self.smoothing, target * self.smoothing);
        self.estimate.round().max(1.0) as usize
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn window(latency_ms: u64, limit: usize) -> Sample {
        let latency = Duration::from_millis(latency_ms);
        Sample::new(limit as u64, 0, latency, latency, limit).with_min_limit(4)
    }

    /// Latency flat up to 32 in flight, then 50% more per extra call.
    fn latency_at(limit: usize, knee: usize, base: u64) -> u64 {
        if limit <= knee {
            base
        } else {
            base + base * (limit - knee) as u64 / 2
        }
    }

    fn run(gradient: &mut Gradient, limit: &mut usize, windows: usize, knee: usize, base: u64) {
        for _ in 0..windows {
            *limit = gradient
                .update(&window(latency_at(*limit, knee, base), *limit), *limit)
                .clamp(4, 1000);
        }
    }

    #[test]
    fn settles_near_the_knee_and_follows_it_down_and_up() {
        let mut gradient = Gradient::new();
        let mut limit = 20;
        run(&mut gradient, &mut limit, 200, 32, 10);
        assert!((32..=40).contains(&limit), "limit {limit}");
        run(&mut gradient, &mut limit, 200, 16, 10);
        assert!((16..=20).contains(&limit), "limit {limit}");
        run(&mut gradient, &mut limit, 300, 64, 10);
        assert!((64..=80).contains(&limit), "limit {limit}");
    }

    #[test]
    fn windows_of_instant_calls_keep_the_limit_and_its_estimate_finite() {
        let mut gradient = Gradient::new();
        let mut limit = 20;
        // Calls that take no measurable time, as under a paused clock.
        run(&mut gradient, &mut limit, 50, 1000, 0);
        assert!(gradient.estimate.is_finite() && gradient.baseline > 0.0);
        assert!(
            limit >= 20,
            "instant calls never lowered the limit: {limit}"
        );
        // Then real latency with a knee at 32: the limit finds it.
        run(&mut gradient, &mut limit, 300, 32, 5);
        assert!((32..=40).contains(&limit), "limit {limit}");
    }

    #[test]
    fn a_service_that_became_slower_on_its_own_is_not_throttled_for_ever() {
        let mut gradient = Gradient::new();
        let mut limit = 20;
        run(&mut gradient, &mut limit, 200, 32, 10);
        // Three times slower at every concurrency: the knee is unchanged.
        run(&mut gradient, &mut limit, 300, 32, 30);
        assert!((32..=40).contains(&limit), "limit {limit}");
    }

    #[test]
    fn a_service_of_any_size_that_became_slower_on_its_own_keeps_its_knee() {
        // Below a knee of about 10 the gradient cannot take the limit down
        // to the minimum of 4, only to its floor of 5, where it must
        // notice that lowering the limit stopped helping.
        for knee in [6, 8, 12, 32, 64] {
            for slower in [3, 5] {
                let mut gradient = Gradient::new();
                let mut limit = knee.min(20);
                run(&mut gradient, &mut limit, 300, knee, 10);
                run(&mut gradient, &mut limit, 2_000, knee, 10 * slower);
                assert!(
                    limit + 1 >= knee && limit <= knee + knee / 4 + 3,
                    "knee {knee}, {slower}x slower: limit {limit}, baseline {}",
                    gradient.baseline_nanos()
                );
            }
        }
    }

    #[test]
    fn failures_back_off_and_idle_callers_do_not_grow_the_limit() {
        let mut gradient = Gradient::new();
        let failing = Sample::new(
            10,
            6,
            Duration::from_millis(1),
            Duration::from_millis(1),
            40,
        );
        assert_eq!(gradient.update(&failing, 40), 36);
        let idle = Sample::new(
            10,
            0,
            Duration::from_millis(1),
            Duration::from_millis(1),
            10,
        );
        assert_eq!(gradient.update(&idle, 36), 36);
    }
}

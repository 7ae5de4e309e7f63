use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::Validate;

use super::{LimitAlgorithm, Sample, check_backoff};

/// Additive increase, multiplicative decrease.
///
/// After each window of completions:
///
/// - if any call failed, or the mean latency is above the
///   [`latency_threshold`](Self::latency_threshold) (when set), the limit
///   is multiplied by [`backoff`](Self::backoff) (default 0.9);
/// - otherwise, if the window used at least half of the limit, the limit
///   grows by one;
/// - otherwise (the callers, not the service, are the bottleneck) it stays.
///
/// Without a latency threshold, AIMD reacts to failures only. Calls that
/// palisade's timeout above the bulkhead (the order `palisade::Stack`
/// uses) cuts off count as failures (see [the module docs](super)); a
/// threshold a little above the service's normal latency makes it react
/// before calls time out.
#[derive(Clone, Debug)]
pub struct Aimd {
    backoff: f64,
    latency_threshold: Option<Duration>,
}

impl Aimd {
    /// AIMD with a backoff of 0.9 and no latency threshold.
    pub fn new() -> Self {
        Self {
            backoff: 0.9,
            latency_threshold: None,
        }
    }

    /// The factor applied on a decrease, in `0.5..1.0` (default 0.9).
    /// Checked when the bulkhead is built.
    #[must_use]
    pub fn backoff(mut self, backoff: f64) -> Self {
        self.backoff = backoff;
        self
    }

    /// A mean latency above which a window counts as congested. `x > 0s`.
    #[must_use]
    pub fn latency_threshold(mut self, threshold: Duration) -> Self {
        self.latency_threshold = Some(threshold);
        self
    }
}

impl Default for Aimd {
    fn default() -> Self {
        Self::new()
    }
}

impl LimitAlgorithm for Aimd {
    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        if let Some(threshold) = self.latency_threshold {
            // Zero would call every window congested.
            check.positive_duration("latency_threshold", threshold)?;
        }
        check_backoff(check, self.backoff)
    }

    fn update(&mut self, sample: &Sample, limit: usize) -> usize {
        let slow = self
            .latency_threshold
            .is_some_and(|threshold| sample.mean_latency > threshold);
        if sample.failures > 0 || slow {
            // Always move down by at least one.
            let lowered = (limit as f64 * self.backoff).floor() as usize;
            lowered.min(limit.saturating_sub(1))
        } else if sample.max_in_flight * 2 >= limit {
            limit + 1
        } else {
            limit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(failures: u64, latency_ms: u64, max_in_flight: usize) -> Sample {
        Sample::new(
            10,
            failures,
            Duration::from_millis(latency_ms),
            Duration::from_millis(latency_ms),
            max_in_flight,
        )
    }

    #[test]
    fn grows_by_one_when_used_and_healthy() {
        let mut aimd = Aimd::new();
        assert_eq!(aimd.update(&sample(0, 10, 10), 20), 21);
        // Callers use less than half: no growth.
        assert_eq!(aimd.update(&sample(0, 10, 9), 20), 20);
    }

    #[test]
    fn backs_off_on_failure_or_slowness() {
        let mut aimd = Aimd::new().latency_threshold(Duration::from_millis(50));
        assert_eq!(aimd.update(&sample(1, 10, 20), 20), 18);
        assert_eq!(aimd.update(&sample(0, 51, 20), 20), 18);
        assert_eq!(aimd.update(&sample(0, 50, 20), 20), 21);
        // Small limits still move down.
        assert_eq!(aimd.update(&sample(1, 10, 5), 5), 4);
    }
}

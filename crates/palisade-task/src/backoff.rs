//! Exponential backoff with jitter, shared by restarts and offload retries.

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::Validate;

/// Exponential backoff with proportional jitter.
///
/// The `n`-th wait (from 0) is `initial * multiplier^n`, capped at `max`,
/// then shortened by a random share of up to `jitter` of itself: with
/// `jitter = 0.5` a 400 ms step waits between 200 ms and 400 ms. Jitter
/// spreads retries of many clients apart; the random source is seedable so
/// tests are deterministic.
///
/// ```
/// use std::time::Duration;
/// use palisade_task::Backoff;
///
/// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10))
///     .multiplier(2.0)
///     .jitter(0.0);
/// assert_eq!(backoff.base(0), Duration::from_millis(100));
/// assert_eq!(backoff.base(3), Duration::from_millis(800));
/// assert_eq!(backoff.base(20), Duration::from_secs(10));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

impl Default for Backoff {
    /// 100 ms doubling up to 30 s, with jitter 0.5.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
            multiplier: 2.0,
            jitter: 0.5,
        }
    }
}

impl Backoff {
    /// Starts at `initial` and never waits more than `max`; doubling, with
    /// jitter 0.5.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            ..Self::default()
        }
    }

    /// The growth factor between two waits. `1.0 <= x <= 16.0`.
    #[must_use]
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The largest share of a wait that jitter may take off.
    /// `0.0 <= x <= 1.0`; 0 disables jitter.
    #[must_use]
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// The first wait.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// The largest wait.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The `attempt`-th wait (from 0) before jitter, between zero and
    /// [`max`](Backoff::max).
    ///
    /// Settings are validated when the owner is built; until then, a
    /// multiplier out of range still gives a wait in that range instead of
    /// panicking.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_task::Backoff;
    ///
    /// let backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).multiplier(2.0);
    /// assert_eq!(backoff.base(0), Duration::from_millis(100));
    /// assert_eq!(backoff.base(2), Duration::from_millis(400));
    /// assert_eq!(backoff.base(10), Duration::from_secs(1));
    /// ```
    pub fn base(&self, attempt: u32) -> Duration {
        let factor = self.multiplier.powi(attempt.min(1024) as i32);
        let secs = self.initial.as_secs_f64() * factor;
        if secs.is_finite() && secs < self.max.as_secs_f64() {
            Duration::from_secs_f64(secs.max(0.0))
        } else {
            self.max
        }
    }

    /// The `attempt`-th wait with jitter drawn from `rng`.
    pub(crate) fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        base.mul_f64(self.jitter.mul_add(-rng.f64(), 1.0))
    }

    pub(crate) fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        check.positive_duration("initial_backoff", self.initial)?;
        check.at_least("max_backoff", self.max, self.initial)?;
        check.in_range("backoff_multiplier", self.multiplier, 1.0, 16.0)?;
        check.in_range("jitter", self.jitter, 0.0, 1.0)?;
        Ok(())
    }
}

/// A generator seeded as asked, or from the thread's generator.
pub(crate) fn rng(seed: Option<u64>) -> fastrand::Rng {
    seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_multiplier_out_of_range_gives_a_wait_in_range() {
        let backoff =
            |m| Backoff::new(Duration::from_secs(1), Duration::from_secs(10)).multiplier(m);
        assert_eq!(backoff(-2.0).base(1), Duration::ZERO);
        assert_eq!(backoff(-2.0).base(2), Duration::from_secs(4));
        assert_eq!(backoff(f64::NAN).base(1), Duration::from_secs(10));
        assert_eq!(backoff(f64::INFINITY).base(1), Duration::from_secs(10));
        assert_eq!(backoff(f64::NEG_INFINITY).base(1), Duration::from_secs(10));
    }

    proptest! {
        #[test]
        fn delays_stay_between_the_jittered_floor_and_the_cap(
            initial_ms in 1_u64..1_000,
            extra_ms in 0_u64..100_000,
            multiplier in 1.0_f64..4.0,
            jitter in 0.0_f64..=1.0,
            seed: u64,
            attempt in 0_u32..64,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let max = initial + Duration::from_millis(extra_ms);
            let backoff = Backoff::new(initial, max).multiplier(multiplier).jitter(jitter);
            let mut rng = fastrand::Rng::with_seed(seed);
            let base = backoff.base(attempt);
            prop_assert!(base >= initial.min(max) && base <= max);
            prop_assert!(backoff.base(attempt + 1) >= base);
            let delay = backoff.delay(attempt, &mut rng);
            prop_assert!(delay <= base);
            prop_assert!(delay >= base.mul_f64(1.0 - jitter) - Duration::from_nanos(1));
        }
    }

    #[test]
    fn invalid_settings_are_named() {
        let name = palisade_core::PolicyName::new("p");
        let check = Validate::new(palisade_core::LayerKind::Task, &name);
        let err = Backoff::new(Duration::ZERO, Duration::from_secs(1))
            .validate(&check)
            .unwrap_err();
        assert_eq!(err.field(), "initial_backoff");
        let err = Backoff::new(Duration::from_secs(2), Duration::from_secs(1))
            .validate(&check)
            .unwrap_err();
        assert_eq!(err.field(), "max_backoff");
        let err = Backoff::default()
            .multiplier(0.5)
            .validate(&check)
            .unwrap_err();
        assert_eq!(err.field(), "backoff_multiplier");
        let err = Backoff::default().jitter(1.5).validate(&check).unwrap_err();
        assert_eq!(err.field(), "jitter");
        let err = Backoff::default()
            .jitter(f64::NAN)
            .validate(&check)
            .unwrap_err();
        assert_eq!(err.field(), "jitter");
    }
}

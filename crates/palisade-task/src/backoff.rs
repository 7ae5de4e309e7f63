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
        let scaled = scale(self.initial, factor, self.max);
        if factor >= 1.0 {
            // f64 seconds drop the nanoseconds of very long waits: growth
            // must not make a wait shorter than the first.
            scaled.max(self.initial.min(self.max))
        } else {
            scaled
        }
    }

    /// The `attempt`-th wait with jitter drawn from `rng`, between zero and
    /// [`base`](Backoff::base).
    pub(crate) fn delay(&self, attempt: u32, rng: &mut fastrand::Rng) -> Duration {
        let base = self.base(attempt);
        if self.jitter == 0.0 {
            return base;
        }
        scale(base, self.jitter.mul_add(-rng.f64(), 1.0), base)
    }

    pub(crate) fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        check.positive_duration("initial_backoff", self.initial)?;
        check.at_least("max_backoff", self.max, self.initial)?;
        check.in_range("backoff_multiplier", self.multiplier, 1.0, 16.0)?;
        check.in_range("jitter", self.jitter, 0.0, 1.0)?;
        Ok(())
    }
}

/// `duration * factor` within `0..=cap`; `cap` when the product is not
/// finite or too large for a `Duration`.
///
/// Computed in `f64` and converted without panicking: near
/// [`Duration::MAX`] the seconds round up to 2^64, which
/// [`Duration::mul_f64`] and `from_secs_f64` reject with a panic.
fn scale(duration: Duration, factor: f64, cap: Duration) -> Duration {
    let secs = duration.as_secs_f64() * factor;
    if !secs.is_finite() {
        return cap;
    }
    Duration::try_from_secs_f64(secs.max(0.0)).map_or(cap, |scaled| scaled.min(cap))
}

/// A generator seeded as asked, or from the thread's generator.
pub(crate) fn rng(seed: Option<u64>) -> fastrand::Rng {
    seed.map_or_else(fastrand::Rng::new, fastrand::Rng::with_seed)
}

/// The seed of the `n`-th user of `seed`: one step of the generator over
/// both, which mixes every bit, so users with nearby `n` draw unrelated
/// sequences.
pub(crate) fn seed_of(seed: u64, n: u64) -> u64 {
    fastrand::Rng::with_seed(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).u64(..)
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

    #[test]
    fn waits_near_the_largest_duration_do_not_panic() {
        // The seconds of these maxima round up to 2^64 as f64.
        for max in [Duration::MAX, Duration::MAX - Duration::from_secs(1000)] {
            for jitter in [0.0, 1e-300, f64::MIN_POSITIVE, 1e-16, 0.5, 1.0] {
                let backoff = Backoff::new(max, max).jitter(jitter);
                let mut rng = fastrand::Rng::with_seed(7);
                assert_eq!(backoff.base(0), max);
                assert_eq!(backoff.base(u32::MAX), max);
                for attempt in 0..8 {
                    assert!(backoff.delay(attempt, &mut rng) <= max);
                }
            }
        }
        let backoff = Backoff::new(Duration::MAX, Duration::MAX).jitter(1e-300);
        assert_eq!(
            backoff.delay(0, &mut fastrand::Rng::with_seed(1)),
            Duration::MAX
        );
    }

    /// Durations from a nanosecond up to `Duration::MAX`, with the
    /// neighbourhood of the largest ones well represented.
    fn any_duration() -> impl Strategy<Value = Duration> {
        prop_oneof![
            (1_u64..100_000).prop_map(Duration::from_millis),
            (0_u64..=u64::MAX, 0_u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
            (0_u64..1_000_000, 0_u32..1_000_000_000)
                .prop_map(|(s, n)| Duration::MAX - Duration::new(s, n)),
            Just(Duration::MAX),
            Just(Duration::from_nanos(1)),
        ]
    }

    fn any_jitter() -> impl Strategy<Value = f64> {
        prop_oneof![
            0.0_f64..=1.0,
            Just(0.0),
            Just(1.0),
            Just(1e-300),
            Just(f64::MIN_POSITIVE),
            Just(f64::EPSILON),
        ]
    }

    proptest! {
        #[test]
        fn delays_stay_between_the_jittered_floor_and_the_cap(
            a in any_duration(),
            b in any_duration(),
            multiplier in 1.0_f64..=16.0,
            jitter in any_jitter(),
            seed: u64,
            attempt in prop_oneof![0_u32..64, Just(u32::MAX - 1)],
        ) {
            let (initial, max) = (a.min(b).max(Duration::from_nanos(1)), a.max(b));
            let backoff = Backoff::new(initial, max).multiplier(multiplier).jitter(jitter);
            let name = palisade_core::PolicyName::new("p");
            prop_assert!(backoff.validate(&Validate::new(palisade_core::LayerKind::Task, &name)).is_ok());
            let mut rng = fastrand::Rng::with_seed(seed);
            let base = backoff.base(attempt);
            prop_assert!(base >= initial.min(max) && base <= max);
            prop_assert!(backoff.base(attempt + 1) >= base);
            let delay = backoff.delay(attempt, &mut rng);
            prop_assert!(delay <= base);
            // The floor, with room for the rounding of f64 seconds.
            let floor = base.as_secs_f64() * (1.0 - jitter);
            prop_assert!(delay.as_secs_f64() >= floor * (1.0 - 1e-12) - 1e-9);
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

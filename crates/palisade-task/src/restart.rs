//! When and how fast a supervised task is restarted.

use std::collections::VecDeque;
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::{ConfigError, LayerKind, PolicyName};
use tokio::time::Instant;

use crate::backoff::{Backoff, rng, seed_of};

/// How a supervised task is restarted after a panic or an error.
///
/// - Each restart waits a [`Backoff`] step: exponential, with jitter from a
///   seedable generator.
/// - At most `max_restarts` failures within any sliding `window` are
///   restarted; the next failure within it makes the supervisor give up
///   and report ([`SupervisedExit::gave_up`](crate::SupervisedExit::gave_up)).
///   The window slides over the time the task has run, not over the waits
///   between runs: a task that fails as soon as it starts gives up after
///   `max_restarts` restarts, however long the backoff has grown, and a
///   task that runs a while before each failure has failures drop out of
///   the window as its runs add up.
/// - A run that stayed healthy for `reset_after` before failing resets
///   both: the next wait is the initial one and the window starts empty.
///
/// Every duration is measured with tokio's clock, so tests drive it with
/// paused time.
///
/// ```
/// use std::time::Duration;
/// use palisade_task::{Backoff, RestartPolicy};
///
/// let policy = RestartPolicy::builder()
///     .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(10)))
///     .max_restarts(5)
///     .window(Duration::from_secs(60))
///     .reset_after(Duration::from_secs(30))
///     .build()
///     .unwrap();
/// assert_eq!(policy.max_restarts(), 5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct RestartPolicy {
    backoff: Backoff,
    max_restarts: u32,
    window: Duration,
    reset_after: Duration,
    seed: Option<u64>,
}

impl Default for RestartPolicy {
    /// Backoff from 100 ms to 30 s with jitter 0.5; at most 5 restarts in
    /// 60 s; reset after 30 s of healthy running.
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            max_restarts: 5,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
            seed: None,
        }
    }
}

impl RestartPolicy {
    /// A builder starting from the defaults.
    pub fn builder() -> RestartPolicyBuilder {
        RestartPolicyBuilder {
            policy: Self::default(),
        }
    }

    /// The backoff between restarts.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// Failures restarted within the window.
    pub fn max_restarts(&self) -> u32 {
        self.max_restarts
    }

    /// The sliding window, in running time, that failures are counted in.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Healthy running time after which backoff and window reset.
    pub fn reset_after(&self) -> Duration {
        self.reset_after
    }

    /// The restart state of task `id` of its group. With a seed, each task
    /// draws a jitter sequence of its own: tasks that fail together on a
    /// shared outage must not restart together.
    pub(crate) fn start(&self, id: u64) -> RestartState {
        RestartState {
            policy: self.clone(),
            rng: rng(self.seed.map(|seed| seed_of(seed, id))),
            step: 0,
            ran: Duration::ZERO,
            recent: VecDeque::with_capacity(self.max_restarts.min(64) as usize),
        }
    }
}

/// Builds a [`RestartPolicy`].
#[derive(Clone, Debug)]
pub struct RestartPolicyBuilder {
    policy: RestartPolicy,
}

impl RestartPolicyBuilder {
    /// The waits between restarts. Default: [`Backoff::default`].
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.policy.backoff = backoff;
        self
    }

    /// Failures restarted within the window. Default: 5. `x >= 1`.
    #[must_use]
    pub fn max_restarts(mut self, max: u32) -> Self {
        self.policy.max_restarts = max;
        self
    }

    /// The sliding window, in running time, that failures are counted in
    /// (the waits between runs do not count). Default: 60 s. `x > 0`.
    #[must_use]
    pub fn window(mut self, window: Duration) -> Self {
        self.policy.window = window;
        self
    }

    /// A run healthy for this long before it fails resets the backoff and
    /// the window. Default: 30 s. `x > 0`.
    #[must_use]
    pub fn reset_after(mut self, healthy: Duration) -> Self {
        self.policy.reset_after = healthy;
        self
    }

    /// Seeds the jitter, for reproducible waits. Default: a random seed.
    ///
    /// Each task a group supervises with the policy derives a sequence of
    /// its own from the seed and its place in the group's spawn order, so
    /// tasks restarted by one outage spread apart even with a fixed seed.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.policy.seed = Some(seed);
        self
    }

    /// Builds the policy.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the first field out of range.
    pub fn build(self) -> Result<RestartPolicy, ConfigError> {
        let name = PolicyName::new("restart");
        let check = Validate::new(LayerKind::Task, &name);
        let p = &self.policy;
        p.backoff.validate(&check)?;
        check.at_least("max_restarts", p.max_restarts, 1)?;
        check.positive_duration("window", p.window)?;
        check.positive_duration("reset_after", p.reset_after)?;
        Ok(self.policy)
    }
}

/// The restart bookkeeping of one supervised task.
pub(crate) struct RestartState {
    policy: RestartPolicy,
    rng: fastrand::Rng,
    step: u32,
    /// How long the task has run since the window was last emptied: the
    /// window's clock, which stands still while a restart waits.
    ran: Duration,
    /// When, on that clock, the failures within the window happened.
    recent: VecDeque<Duration>,
}

impl RestartState {
    /// The policy this task restarts by.
    pub(crate) fn policy(&self) -> &RestartPolicy {
        &self.policy
    }

    /// Decides on a failure at `now` of a run started at `run_started`:
    /// the restart number within the window and the wait before it, or
    /// `None` to give up.
    pub(crate) fn next_restart(
        &mut self,
        run_started: Instant,
        now: Instant,
    ) -> Option<(u32, Duration)> {
        let run = now.saturating_duration_since(run_started);
        if run >= self.policy.reset_after {
            self.step = 0;
            self.ran = Duration::ZERO;
            self.recent.clear();
        }
        // Waits do not move the window: were they counted, a backoff grown
        // past the window would age every failure out before the next one,
        // and a task failing at once would be restarted forever.
        self.ran = self.ran.saturating_add(run);
        while self
            .recent
            .front()
            .is_some_and(|t| self.ran.saturating_sub(*t) >= self.policy.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= self.policy.max_restarts as usize {
            return None;
        }
        let wait = self.policy.backoff.delay(self.step, &mut self.rng);
        self.step = self.step.saturating_add(1);
        self.recent.push_back(self.ran);
        Some((self.recent.len() as u32, wait))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_checks_every_field() {
        assert!(RestartPolicy::builder().build().is_ok());
        let err = RestartPolicy::builder()
            .max_restarts(0)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "max_restarts");
        let err = RestartPolicy::builder()
            .window(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "window");
        let err = RestartPolicy::builder()
            .reset_after(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "reset_after");
        let err = RestartPolicy::builder()
            .backoff(Backoff::default().jitter(2.0))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "jitter");
    }
}

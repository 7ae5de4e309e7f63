use std::fmt;
use std::time::Duration;

use palisade_core::shared::AnyState;
use palisade_core::{CircuitState, PolicyName, TransitionReason};

use crate::breaker::{Breaker, Mode};
use crate::window::Counts;

/// Controls and inspects one breaker. Cheap to clone; every clone acts on
/// the same breaker as the layer it came from.
///
/// Operator modes ([`force_open`](Self::force_open),
/// [`force_closed`](Self::force_closed), [`disable`](Self::disable),
/// [`metrics_only`](Self::metrics_only)) hold until another one is chosen
/// or [`reset`](Self::reset) returns the breaker to its automatic, closed
/// state. Each change is reported as
/// [`Event::StateChanged`](palisade_core::Event::StateChanged) with
/// [`TransitionReason::Forced`] (or [`TransitionReason::Reset`]).
///
/// # Calling it from a metrics sink
///
/// The breaker sends `StateChanged`, and the `BreakerRates` of a
/// transition or a refresh, while it holds its transition lock (so that
/// transitions arrive in order; a call's own rate update is sent without
/// it, and sent again under it if a transition may have overtaken it), and
/// [`refresh`](Self::refresh), [`consecutive_openings`](Self::consecutive_openings),
/// [`force_open`](Self::force_open), [`force_closed`](Self::force_closed),
/// [`disable`](Self::disable), [`metrics_only`](Self::metrics_only) and
/// [`reset`](Self::reset) take that lock. A
/// [`MetricsSink`](palisade_core::MetricsSink) must therefore not call these
/// on the breaker that is reporting, nor send a call through it, from
/// inside `record`: the lock is not reentrant and the thread deadlocks.
/// [`state`](Self::state), [`shadow_state`](Self::shadow_state),
/// [`counts`](Self::counts), [`failure_rate`](Self::failure_rate),
/// [`slow_rate`](Self::slow_rate), [`probes`](Self::probes),
/// [`retry_after`](Self::retry_after) and [`policy`](Self::policy) only
/// load atomics and are safe there (`state` already shows the state a
/// `StateChanged` entered). Hand anything else off to another thread or
/// task. The same holds for a keyed breaker's handle
/// ([`KeyedCircuitBreakerHandle`](crate::KeyedCircuitBreakerHandle)): a map
/// that evicts a key reports it while holding the map's lock, so a sink
/// must not read the map from inside `record`.
///
/// # Example
///
/// ```
/// use palisade_breaker::CircuitBreakerLayer;
/// use palisade_core::CircuitState;
///
/// let layer = CircuitBreakerLayer::builder().name("payments").build().unwrap();
/// let handle = layer.handle();
/// assert_eq!(handle.state(), CircuitState::Closed);
///
/// handle.force_open();
/// assert_eq!(handle.state(), CircuitState::ForcedOpen);
/// handle.reset();
/// assert_eq!(handle.state(), CircuitState::Closed);
/// assert_eq!(handle.counts().calls, 0);
/// ```
#[derive(Clone)]
pub struct CircuitBreakerHandle {
    breaker: AnyState<Breaker>,
}

/// The half-open probes of the current half-open period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProbeCounts {
    /// Probe slots taken and not given back (admitted probes, finished or
    /// not).
    pub admitted: u64,
    /// Probes that finished with an outcome.
    pub completed: u64,
    /// Of those, failures.
    pub failures: u64,
    /// Of those, slow calls.
    pub slow: u64,
}

impl CircuitBreakerHandle {
    pub(crate) fn new(breaker: AnyState<Breaker>) -> Self {
        Self { breaker }
    }

    /// The state to show: exactly one of the [`CircuitState`] variants,
    /// the same one the last `StateChanged` event entered.
    ///
    /// This reads the state without moving it; time-based moves happen when
    /// a call arrives or on [`refresh`](Self::refresh).
    pub fn state(&self) -> CircuitState {
        self.breaker.word().reported()
    }

    /// Applies the time-based transitions that are due and returns the
    /// state. The open wait elapsed: to half-open. The half-open maximum
    /// wait elapsed: back to open if a probe is still running, closed or
    /// open by the finished probes' rates, and a fresh half-open period if
    /// no probe was admitted (see "Open and half-open" in the crate docs).
    /// No background task is needed: calls do the same when they arrive, and
    /// a metrics scrape can call this to keep a gauge current while no
    /// traffic flows. It does what a call arriving now would do, no more:
    /// past the half-open maximum wait that includes re-opening for a probe
    /// still running, which a slow but healthy probe would otherwise have
    /// closed had nothing looked before it finished.
    /// With a time window, while the breaker is closed, forced closed or
    /// (in metrics-only mode) would be closed, it also reports the window's rates as
    /// they are now ([`Event::BreakerRates`](palisade_core::Event::BreakerRates)),
    /// so rates of calls that have slid out of the window do not linger.
    pub fn refresh(&self) -> CircuitState {
        self.breaker.refresh().reported()
    }

    /// In metrics-only mode, the state the breaker would be in (closed, open
    /// or half-open); `None` in every other mode.
    pub fn shadow_state(&self) -> Option<CircuitState> {
        let word = self.breaker.word();
        (word.mode == Mode::MetricsOnly).then(|| word.machine.as_state())
    }

    /// Rejects every call until another mode is chosen.
    pub fn force_open(&self) {
        self.breaker
            .set_mode(Mode::ForcedOpen, TransitionReason::Forced);
    }

    /// Lets every call through until another mode is chosen. Outcomes are
    /// still recorded and the rates reported, in a fresh window.
    pub fn force_closed(&self) {
        self.breaker
            .set_mode(Mode::ForcedClosed, TransitionReason::Forced);
    }

    /// Lets every call through and records nothing. A disabled breaker
    /// sends no `Admitted` or `Completed` events either: it is a plain
    /// pass-through until another mode is chosen.
    pub fn disable(&self) {
        self.breaker
            .set_mode(Mode::Disabled, TransitionReason::Forced);
    }

    /// Shadow mode: the breaker records outcomes, reports rates and runs its
    /// state machine (see [`shadow_state`](Self::shadow_state)), but never
    /// rejects a call. Starts from a fresh, closed window.
    ///
    /// The reported state stays [`CircuitState::MetricsOnly`], so shadow
    /// transitions are not sent as `StateChanged` events (a backend would
    /// otherwise show two states at once); read them with
    /// [`shadow_state`](Self::shadow_state). While the shadow state is open,
    /// calls pass without being recorded, as the real breaker would not have
    /// seen them; while it is half-open, the probes are recorded.
    pub fn metrics_only(&self) {
        self.breaker
            .set_mode(Mode::MetricsOnly, TransitionReason::Forced);
    }

    /// Back to automatic operation: closed, with an empty window and the
    /// open-wait growth started over.
    pub fn reset(&self) {
        self.breaker.set_mode(Mode::Normal, TransitionReason::Reset);
    }

    /// The counts of the closed-state window.
    pub fn counts(&self) -> Counts {
        self.breaker.window_counts()
    }

    /// Failed calls divided by recorded calls in the window (0 when empty).
    pub fn failure_rate(&self) -> f64 {
        self.counts().failure_rate()
    }

    /// Slow calls divided by recorded calls in the window (0 when empty).
    pub fn slow_rate(&self) -> f64 {
        self.counts().slow_rate()
    }

    /// The probes of the current half-open period (all zero otherwise).
    pub fn probes(&self) -> ProbeCounts {
        let p = self.breaker.probes();
        ProbeCounts {
            admitted: p.taken,
            completed: p.done,
            failures: p.failures,
            slow: p.slow,
        }
    }

    /// While open, how long until probes are let through. In metrics-only
    /// mode this is the shadow state machine's wait: nothing is held back,
    /// but it says when the breaker would let probes through.
    pub fn retry_after(&self) -> Option<Duration> {
        let until = self.breaker.open_until()?;
        Some(until.saturating_duration_since(self.breaker.cfg.clock.now()))
    }

    /// Openings in a row since the last healthy close, and the open wait
    /// chosen for the last one.
    pub fn consecutive_openings(&self) -> (u32, Duration) {
        self.breaker.openings()
    }

    /// The breaker's policy name.
    pub fn policy(&self) -> &PolicyName {
        &self.breaker.cfg.policy
    }

    /// Whether two handles control the same breaker.
    pub fn same_breaker(&self, other: &Self) -> bool {
        std::ptr::eq(&*self.breaker, &*other.breaker)
    }
}

impl fmt::Debug for CircuitBreakerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerHandle")
            .field("policy", &self.breaker.cfg.policy)
            .field("state", &self.state())
            .finish()
    }
}

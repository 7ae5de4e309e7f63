//! Events of every kind, and a reader of Prometheus text.

use std::time::Duration;

use palisade_core::{
    AttemptFailure, CircuitState, DropReason, Event, FallbackTrigger, InFlightChange, LayerKind,
    Outcome, PanicLocation, RejectReason, TaskEnd, TransitionReason,
};

/// One event of every kind, for policy `p`, group `g` and queue `q`.
pub fn every_event(location: &PanicLocation) -> Vec<Event<'_>> {
    let policy = "p";
    vec![
        Event::Admitted {
            policy,
            layer: LayerKind::RateLimit,
        },
        Event::Rejected {
            policy,
            layer: LayerKind::Bulkhead,
            reason: RejectReason::QueueFull,
        },
        Event::Completed {
            policy,
            layer: LayerKind::CircuitBreaker,
            outcome: Outcome::Failure,
            latency: Some(Duration::from_millis(3)),
        },
        Event::PanicCaught {
            policy,
            message: "boom",
            location: Some(location),
        },
        Event::TimedOut {
            policy,
            timeout: Duration::from_secs(1),
            caller: false,
        },
        Event::StateChanged {
            policy,
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: TransitionReason::FailureRate,
        },
        Event::ShadowStateChanged {
            policy,
            from: CircuitState::Closed,
            to: CircuitState::Open,
            reason: TransitionReason::FailureRate,
        },
        Event::BreakerRates {
            policy,
            failure_rate: 0.5,
            slow_rate: 0.25,
            calls: 10,
        },
        Event::InFlightChanged {
            policy,
            layer: LayerKind::Bulkhead,
            change: InFlightChange::Acquired,
            in_flight: 1,
            limit: 4,
        },
        Event::LimitChanged {
            policy,
            from: 4,
            to: 5,
        },
        Event::FallbackUsed {
            policy,
            trigger: FallbackTrigger::Rejection,
        },
        Event::KeysTracked {
            policy,
            keys: 10,
            cap: 100,
        },
        Event::KeysEvicted { policy, count: 3 },
        Event::OverflowUsed { policy },
        Event::MalformedHeader {
            policy,
            layer: LayerKind::Timeout,
            header: "grpc-timeout",
        },
        Event::TaskStarted {
            group: "g",
            task: "t",
        },
        Event::TaskEnded {
            group: "g",
            task: "t",
            end: TaskEnd::Cancelled,
        },
        Event::TaskPanicked {
            group: "g",
            task: "t",
            message: "boom",
            location: None,
        },
        Event::TaskRestarted {
            group: "g",
            task: "t",
            attempt: 1,
            backoff: Duration::from_millis(100),
        },
        Event::TaskGaveUp {
            group: "g",
            task: "t",
            restarts: 5,
        },
        Event::OffloadDropped {
            queue: "q",
            reason: DropReason::QueueFull,
        },
        Event::OffloadDelivered {
            queue: "q",
            attempts: 2,
        },
        Event::OffloadAttemptFailed {
            queue: "q",
            attempt: 1,
            cause: AttemptFailure::Panic,
        },
    ]
}

/// What an exporter must render after each event of [`every_event`] was
/// recorded alone: `(event name, sample, value)`.
pub fn expected_samples() -> Vec<(&'static str, &'static str, f64)> {
    vec![
        (
            "palisade.breaker.shadow_state_changed",
            r#"palisade_breaker_shadow_transitions_total{policy="p",to="open"}"#,
            1.0,
        ),
        (
            "palisade.task.gave_up",
            r#"palisade_task_gave_up_total{group="g"}"#,
            1.0,
        ),
        (
            "palisade.request.admitted",
            r#"palisade_admitted_total{policy="p",layer="rate_limit"}"#,
            1.0,
        ),
        (
            "palisade.request.rejected",
            r#"palisade_rejections_total{policy="p",layer="bulkhead",reason="queue_full"}"#,
            1.0,
        ),
        (
            "palisade.request.completed",
            r#"palisade_requests_total{policy="p",layer="circuit_breaker",outcome="failure"}"#,
            1.0,
        ),
        (
            "palisade.request.completed",
            r#"palisade_request_duration_seconds_count{policy="p",layer="circuit_breaker"}"#,
            1.0,
        ),
        (
            "palisade.request.completed",
            r#"palisade_request_duration_seconds_sum{policy="p",layer="circuit_breaker"}"#,
            0.003,
        ),
        (
            "palisade.request.completed",
            r#"palisade_breaker_state{policy="p",state="closed"}"#,
            1.0,
        ),
        (
            "palisade.panic.caught",
            r#"palisade_panics_total{policy="p"}"#,
            1.0,
        ),
        (
            "palisade.timeout.elapsed",
            r#"palisade_timeouts_total{policy="p",deadline="policy"}"#,
            1.0,
        ),
        (
            "palisade.breaker.state_changed",
            r#"palisade_breaker_state{policy="p",state="open"}"#,
            1.0,
        ),
        (
            "palisade.breaker.state_changed",
            r#"palisade_breaker_state{policy="p",state="closed"}"#,
            0.0,
        ),
        (
            "palisade.breaker.state_changed",
            r#"palisade_breaker_transitions_total{policy="p",from="closed",to="open"}"#,
            1.0,
        ),
        (
            "palisade.breaker.rates",
            r#"palisade_breaker_failure_rate{policy="p"}"#,
            0.5,
        ),
        (
            "palisade.breaker.rates",
            r#"palisade_breaker_slow_rate{policy="p"}"#,
            0.25,
        ),
        (
            "palisade.breaker.rates",
            r#"palisade_breaker_window_calls{policy="p"}"#,
            10.0,
        ),
        (
            "palisade.in_flight.changed",
            r#"palisade_in_flight{policy="p"}"#,
            1.0,
        ),
        (
            "palisade.in_flight.changed",
            r#"palisade_concurrency_limit{policy="p"}"#,
            4.0,
        ),
        (
            "palisade.limit.changed",
            r#"palisade_concurrency_limit{policy="p"}"#,
            5.0,
        ),
        (
            "palisade.fallback.used",
            r#"palisade_fallbacks_total{policy="p",trigger="rejection"}"#,
            1.0,
        ),
        (
            "palisade.ratelimit.keys",
            r#"palisade_ratelimit_keys{policy="p"}"#,
            10.0,
        ),
        (
            "palisade.ratelimit.keys",
            r#"palisade_ratelimit_key_cap{policy="p"}"#,
            100.0,
        ),
        (
            "palisade.ratelimit.evicted",
            r#"palisade_ratelimit_evictions_total{policy="p"}"#,
            3.0,
        ),
        (
            "palisade.ratelimit.overflow",
            r#"palisade_ratelimit_overflow_total{policy="p"}"#,
            1.0,
        ),
        (
            "palisade.header.malformed",
            r#"palisade_malformed_headers_total{policy="p",header="grpc-timeout"}"#,
            1.0,
        ),
        (
            "palisade.task.started",
            r#"palisade_tasks_live{group="g"}"#,
            1.0,
        ),
        (
            "palisade.task.started",
            r#"palisade_tasks_started_total{group="g"}"#,
            1.0,
        ),
        (
            "palisade.task.ended",
            r#"palisade_tasks_live{group="g"}"#,
            -1.0,
        ),
        (
            "palisade.task.ended",
            r#"palisade_tasks_ended_total{group="g",end="cancelled"}"#,
            1.0,
        ),
        (
            "palisade.task.panicked",
            r#"palisade_task_panics_total{group="g"}"#,
            1.0,
        ),
        (
            "palisade.task.restarted",
            r#"palisade_task_restarts_total{group="g"}"#,
            1.0,
        ),
        (
            "palisade.offload.dropped",
            r#"palisade_offload_dropped_total{queue="q",reason="queue_full"}"#,
            1.0,
        ),
        (
            "palisade.offload.delivered",
            r#"palisade_offload_delivered_total{queue="q"}"#,
            1.0,
        ),
        (
            "palisade.offload.attempt_failed",
            r#"palisade_offload_attempt_failures_total{queue="q",cause="panic"}"#,
            1.0,
        ),
    ]
}

/// The value of the sample `series` (name and labels exactly as rendered)
/// in Prometheus or OpenMetrics text.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// Every sample of `name` as `(labels, value)`, labels without braces.
pub fn samples(text: &str, name: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = if let Some(inner) = rest.strip_prefix('{') {
                let end = inner.find('}')?;
                (&inner[..end], inner[end + 1..].trim())
            } else if rest.starts_with(' ') {
                ("", rest.trim())
            } else {
                return None;
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some((labels.to_owned(), value))
        })
        .collect()
}

/// Every transition a breaker can make, including forced states, in an
/// order that visits each state several times.
pub fn transition_tour() -> Vec<(CircuitState, CircuitState, TransitionReason)> {
    use CircuitState::*;
    use TransitionReason as R;
    let path = [
        (Open, R::FailureRate),
        (HalfOpen, R::WaitElapsed),
        (Closed, R::ProbesSucceeded),
        (Open, R::SlowRate),
        (HalfOpen, R::WaitElapsed),
        (Open, R::FailureRate),
        (HalfOpen, R::WaitElapsed),
        (Open, R::HalfOpenTimeout),
        (ForcedOpen, R::Forced),
        (ForcedClosed, R::Forced),
        (Disabled, R::Forced),
        (MetricsOnly, R::Forced),
        (Open, R::FailureRate),
        (Closed, R::Reset),
        (ForcedOpen, R::Forced),
        (Closed, R::Reset),
        (MetricsOnly, R::Forced),
        (Closed, R::Reset),
    ];
    let mut from = Closed;
    path.iter()
        .map(|(to, reason)| {
            let step = (from, *to, *reason);
            from = *to;
            step
        })
        .collect()
}

/// Asserts that the breaker state series of `policy` in `text` are one per
/// state, with exactly one at 1: the one of `expected`.
pub fn assert_one_state(text: &str, policy: &str, expected: CircuitState) {
    let prefix = format!("policy=\"{policy}\",state=\"");
    let series: Vec<(String, f64)> = samples(text, "palisade_breaker_state")
        .into_iter()
        .filter_map(|(labels, v)| {
            let state = labels.strip_prefix(&prefix)?.strip_suffix('"')?;
            Some((state.to_owned(), v))
        })
        .collect();
    assert_eq!(
        series.len(),
        CircuitState::ALL.len(),
        "one series per state for {policy}: {series:?}"
    );
    let ones: Vec<_> = series.iter().filter(|(_, v)| *v == 1.0).collect();
    assert_eq!(ones.len(), 1, "exactly one state at 1: {series:?}");
    assert_eq!(ones[0].0, expected.as_str(), "{series:?}");
    assert!(
        series.iter().all(|(_, v)| *v == 0.0 || *v == 1.0),
        "{series:?}"
    );
}

/// Serializes the tests that send events through `TracingSink`.
///
/// `tracing` caches process-wide whether an event site is wanted. A test
/// sending events with no subscriber at the same time as another starts
/// capturing could leave an event site marked as unwanted while that
/// other test captures; one such test at a time rules that out.
#[cfg(feature = "tracing")]
pub(crate) fn tracing_serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

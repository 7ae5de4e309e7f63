//! palisade's events as structured [`tracing`] events.
//!
//! [`TracingSink`] writes one event per fact under the target `palisade`,
//! with the event's stable [name](Event::name) as the field `event` (such
//! as `palisade.request.rejected`), and the policy (or task group, or
//! queue) and every label of the event as fields, so a subscriber can
//! filter with `palisade=debug` and a log search can group by `event`,
//! `policy`, `layer` or `reason`. Levels follow what an operator needs to
//! see:
//!
//! | event | level | message |
//! |---|---|---|
//! | [`StateChanged`](Event::StateChanged) | warn | `circuit state changed`, with `from`, `to`, `reason` |
//! | [`ShadowStateChanged`](Event::ShadowStateChanged) | info | `shadow circuit state changed; ...`, with `from`, `to`, `reason` |
//! | [`OffloadDropped`](Event::OffloadDropped), [`TaskRestarted`](Event::TaskRestarted) | warn | work lost, a loop restarted |
//! | [`TaskGaveUp`](Event::TaskGaveUp) | error | a loop stopped restarting |
//! | [`TaskEnded`](Event::TaskEnded) failed or aborted | warn | |
//! | [`Rejected`](Event::Rejected), [`TimedOut`](Event::TimedOut), [`MalformedHeader`](Event::MalformedHeader), [`LimitChanged`](Event::LimitChanged), [`OverflowUsed`](Event::OverflowUsed), [`KeysEvicted`](Event::KeysEvicted), other task ends | debug | |
//! | [`PanicCaught`](Event::PanicCaught), [`TaskPanicked`](Event::TaskPanicked) | debug | `panic caught`, `task panicked`, with `panic.message` and `panic.location` |
//! | [`FallbackUsed`](Event::FallbackUsed) | trace | `fallback answered`, with `trigger` |
//! | [`OffloadAttemptFailed`](Event::OffloadAttemptFailed) | trace | `offload attempt failed`, with `attempt` and `cause` (the queue logs the failures itself) |
//! | admissions, completions, in-flight changes, breaker rates, tracked keys, task starts, deliveries | trace | one per request: leave them off in production |
//!
//! The code that catches a panic (the panic-catch layer, a task group)
//! logs it itself at error level, under its own crate's target, with the
//! backtrace and, for HTTP, the request; the fallback layer logs each
//! answer at debug. The sink writes those facts one level
//! lower, so that with it installed a panic is still one error line.
//!
//! The sink formats nothing itself and allocates nothing: with no
//! subscriber interested, an event costs tracing's cached level check.
//!
//! # Example
//!
//! ```
//! use palisade_core::{Event, LayerKind, Metrics, RejectReason};
//! use palisade_metrics::TracingSink;
//!
//! // With a subscriber installed (tracing-subscriber's `fmt()`, for
//! // example), this writes a debug line with policy, layer and reason.
//! let metrics = Metrics::new(TracingSink::new());
//! metrics.emit(&Event::Rejected {
//!     policy: "search",
//!     layer: LayerKind::Bulkhead,
//!     reason: RejectReason::ConcurrencyFull,
//! });
//! ```

use ::tracing::{debug, error, info, trace, warn};
use palisade_core::{Event, MetricsSink, TaskEnd};

/// The target of every event the sink writes.
pub const TARGET: &str = "palisade";

/// A [`MetricsSink`] that writes `tracing` events; see the
/// [module docs](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct TracingSink {
    _private: (),
}

impl TracingSink {
    /// A sink writing under the target [`TARGET`].
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

impl MetricsSink for TracingSink {
    fn record(&self, event: &Event<'_>) {
        let name = event.name();
        match *event {
            Event::Admitted { policy, layer } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = layer.as_str(),
                "request admitted"
            ),
            Event::Rejected {
                policy,
                layer,
                reason,
            } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = layer.as_str(),
                reason = reason.as_str(),
                "request rejected"
            ),
            Event::Completed {
                policy,
                layer,
                outcome,
                latency,
            } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = layer.as_str(),
                outcome = outcome.as_str(),
                latency_seconds = latency.map(|l| l.as_secs_f64()),
                "request completed"
            ),
            Event::PanicCaught {
                policy,
                message,
                location,
            } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = "panic_catch",
                panic.message = message,
                panic.location = location.map(::tracing::field::display),
                "panic caught"
            ),
            Event::TimedOut {
                policy,
                timeout,
                caller,
            } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = "timeout",
                reason = "timed_out",
                timeout_seconds = timeout.as_secs_f64(),
                deadline = crate::names::deadline(caller),
                "request timed out"
            ),
            Event::StateChanged {
                policy,
                from,
                to,
                reason,
            } => warn!(
                target: "palisade",
                event = name,
                policy,
                layer = "circuit_breaker",
                from = from.as_str(),
                to = to.as_str(),
                reason = reason.as_str(),
                "circuit state changed"
            ),
            Event::ShadowStateChanged {
                policy,
                from,
                to,
                reason,
            } => info!(
                target: "palisade",
                event = name,
                policy,
                layer = "circuit_breaker",
                from = from.as_str(),
                to = to.as_str(),
                reason = reason.as_str(),
                "shadow circuit state changed; enforcing would have done this"
            ),
            Event::BreakerRates {
                policy,
                failure_rate,
                slow_rate,
                calls,
            } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = "circuit_breaker",
                failure_rate,
                slow_rate,
                calls,
                "breaker rates"
            ),
            Event::InFlightChanged {
                policy,
                layer,
                change,
                in_flight,
                limit,
            } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = layer.as_str(),
                change = change.as_str(),
                in_flight,
                limit,
                "in-flight changed"
            ),
            Event::LimitChanged { policy, from, to } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = "bulkhead",
                from,
                to,
                "concurrency limit changed"
            ),
            Event::FallbackUsed { policy, trigger } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = "fallback",
                trigger = trigger.as_str(),
                "fallback answered"
            ),
            Event::KeysTracked { policy, keys, cap } => trace!(
                target: "palisade",
                event = name,
                policy,
                layer = "rate_limit",
                keys,
                cap,
                "rate-limit keys tracked"
            ),
            Event::KeysEvicted { policy, count } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = "rate_limit",
                count,
                "rate-limit keys evicted"
            ),
            Event::OverflowUsed { policy } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = "rate_limit",
                reason = "no_slot",
                "request of a key without a slot charged to the overflow bucket"
            ),
            Event::MalformedHeader {
                policy,
                layer,
                header,
            } => debug!(
                target: "palisade",
                event = name,
                policy,
                layer = layer.as_str(),
                header,
                "malformed header ignored"
            ),
            Event::TaskStarted { group, task } => trace!(
                target: "palisade",
                event = name,
                group,
                task,
                "task started"
            ),
            Event::TaskEnded { group, task, end } => match end {
                TaskEnd::Failed | TaskEnd::Aborted => warn!(
                    target: "palisade",
                event = name,
                    group,
                    task,
                    end = end.as_str(),
                    "task ended"
                ),
                _ => debug!(
                    target: "palisade",
                event = name,
                    group,
                    task,
                    end = end.as_str(),
                    "task ended"
                ),
            },
            Event::TaskPanicked {
                group,
                task,
                message,
                location,
            } => debug!(
                target: "palisade",
                event = name,
                group,
                task,
                panic.message = message,
                panic.location = location.map(::tracing::field::display),
                "task panicked"
            ),
            Event::TaskRestarted {
                group,
                task,
                attempt,
                backoff,
            } => warn!(
                target: "palisade",
                event = name,
                group,
                task,
                attempt,
                backoff_seconds = backoff.as_secs_f64(),
                "task restarted"
            ),
            Event::TaskGaveUp {
                group,
                task,
                restarts,
            } => error!(
                target: "palisade",
                event = name,
                group,
                task,
                restarts,
                "task gave up after its restart limit"
            ),
            Event::OffloadDropped { queue, reason } => warn!(
                target: "palisade",
                event = name,
                queue,
                reason = reason.as_str(),
                "offloaded work dropped"
            ),
            Event::OffloadAttemptFailed {
                queue,
                attempt,
                cause,
            } => trace!(
                target: "palisade",
                event = name,
                queue,
                attempt,
                cause = cause.as_str(),
                "offload attempt failed"
            ),
            Event::OffloadDelivered { queue, attempts } => trace!(
                target: "palisade",
                event = name,
                queue,
                attempts,
                "offloaded work delivered"
            ),
            _ => {}
        }
    }
}

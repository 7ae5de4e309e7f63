//! The metric families every adapter exports, with their Prometheus names.
//!
//! Names are in base units (`_seconds`) and counters end in `_total`.
//! Label values are either a `&'static str` from a palisade label enum
//! (`layer`, `outcome`, `reason`, `state`, ...) or a name the user chose
//! when building a layer, task group or offload queue (`policy`, `group`,
//! `queue`). No label is ever taken from a request, a rate-limit key or a
//! client, so the number of series is bounded by
//! `policies x layers x reasons`, known at start-up.
//!
//! [`ALL`] lists every family, for documentation, dashboards and tests.
//!
//! # Example
//!
//! ```
//! use palisade_metrics::names::{self, Kind};
//!
//! let requests = names::ALL.iter().find(|f| f.name == names::REQUESTS_TOTAL).unwrap();
//! assert_eq!(requests.kind, Kind::Counter);
//! assert_eq!(requests.labels, ["policy", "layer", "outcome"]);
//! ```

/// What kind of metric a family is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Kind {
    /// A monotonic count (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// A distribution of observations in buckets.
    Histogram,
}

/// One metric family: its Prometheus name, kind, labels and help text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Family {
    /// The full Prometheus name, with its `_total` or unit suffix.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// Label names, in order.
    pub labels: &'static [&'static str],
    /// One line of help.
    pub help: &'static str,
}

macro_rules! families {
    ($( $(#[$meta:meta])* $konst:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal; )+) => {
        $(
            $(#[$meta])*
            pub const $konst: &str = $name;
        )+

        /// Every family, in the order adapters render them.
        pub const ALL: &[Family] = &[
            $( Family { name: $name, kind: Kind::$kind, labels: &[$($label),*], help: $help }, )+
        ];
    };
}

families! {
    /// Requests a layer let through (rate limiter, breaker, bulkhead).
    ADMITTED_TOTAL = "palisade_admitted_total", Counter, ["policy", "layer"],
        "Requests a palisade layer let through.";
    /// Requests a layer refused before they reached the service.
    REJECTIONS_TOTAL = "palisade_rejections_total", Counter, ["policy", "layer", "reason"],
        "Requests a palisade layer refused, by reason.";
    /// Finished calls, by the outcome the layer classified.
    REQUESTS_TOTAL = "palisade_requests_total", Counter, ["policy", "layer", "outcome"],
        "Calls that finished, by outcome as classified by the layer.";
    /// Call durations measured by a layer. Several layers (breaker, adaptive
    /// bulkhead) report completions, hence the `layer` label: aggregate over
    /// one layer, never over all of them.
    REQUEST_DURATION_SECONDS = "palisade_request_duration_seconds", Histogram, ["policy", "layer"],
        "Duration of calls measured by a palisade layer.";
    /// Panics caught and turned into errors.
    PANICS_TOTAL = "palisade_panics_total", Counter, ["policy"],
        "Panics caught in the service and turned into errors.";
    /// Calls cancelled at their deadline.
    TIMEOUTS_TOTAL = "palisade_timeouts_total", Counter, ["policy", "deadline"],
        "Calls cancelled because they ran past their deadline, the policy's or the caller's.";
    /// Fallback answers, by what they answered for.
    FALLBACKS_TOTAL = "palisade_fallbacks_total", Counter, ["policy", "trigger"],
        "Answers given by a fallback in place of the service.";
    /// The breaker's state: exactly one `state` series per policy is 1.
    BREAKER_STATE = "palisade_breaker_state", Gauge, ["policy", "state"],
        "Circuit breaker state: 1 for the current state, 0 for the others.";
    /// Breaker transitions.
    BREAKER_TRANSITIONS_TOTAL = "palisade_breaker_transitions_total", Counter, ["policy", "from", "to"],
        "Circuit breaker state transitions.";
    /// Transitions of a breaker in metrics-only (shadow) mode: what
    /// enforcing would have done.
    BREAKER_SHADOW_TRANSITIONS_TOTAL = "palisade_breaker_shadow_transitions_total", Counter, ["policy", "to"],
        "Shadow-mode circuit breaker transitions, by the state enforcing would have entered.";
    /// Failed calls over recorded calls in the breaker's window.
    BREAKER_FAILURE_RATE = "palisade_breaker_failure_rate", Gauge, ["policy"],
        "Circuit breaker failure rate over its window, 0 to 1.";
    /// Slow calls over recorded calls in the breaker's window.
    BREAKER_SLOW_RATE = "palisade_breaker_slow_rate", Gauge, ["policy"],
        "Circuit breaker slow-call rate over its window, 0 to 1.";
    /// Calls in the breaker's window.
    BREAKER_WINDOW_CALLS = "palisade_breaker_window_calls", Gauge, ["policy"],
        "Calls recorded in the circuit breaker's window.";
    /// Calls holding a concurrency slot.
    IN_FLIGHT = "palisade_in_flight", Gauge, ["policy"],
        "Calls holding a concurrency slot.";
    /// The concurrency limit in force (fixed or adaptive).
    CONCURRENCY_LIMIT = "palisade_concurrency_limit", Gauge, ["policy"],
        "Concurrency limit in force.";
    /// Keys a keyed rate limiter tracks.
    RATELIMIT_KEYS = "palisade_ratelimit_keys", Gauge, ["policy"],
        "Keys tracked by a keyed rate limiter.";
    /// The key cap of a keyed rate limiter.
    RATELIMIT_KEY_CAP = "palisade_ratelimit_key_cap", Gauge, ["policy"],
        "Most keys a keyed rate limiter tracks.";
    /// Idle keys a rate limiter forgot.
    RATELIMIT_EVICTIONS_TOTAL = "palisade_ratelimit_evictions_total", Counter, ["policy"],
        "Idle keys a keyed rate limiter forgot.";
    /// Requests charged to the shared overflow bucket because their key
    /// found no slot of its own: the key cap was reached, or the key's set
    /// of slots was full of active keys (per request, not per key).
    RATELIMIT_OVERFLOW_TOTAL = "palisade_ratelimit_overflow_total", Counter, ["policy"],
        "Requests charged to the shared overflow bucket because their key found no slot of its own (key cap reached, or its set of slots full).";
    /// Malformed headers palisade ignored.
    MALFORMED_HEADERS_TOTAL = "palisade_malformed_headers_total", Counter, ["policy", "header"],
        "Malformed headers palisade read and ignored.";
    /// Supervised tasks running.
    TASKS_LIVE = "palisade_tasks_live", Gauge, ["group"],
        "Supervised tasks running.";
    /// Supervised tasks started.
    TASKS_STARTED_TOTAL = "palisade_tasks_started_total", Counter, ["group"],
        "Supervised tasks started.";
    /// Supervised tasks ended, by how.
    TASKS_ENDED_TOTAL = "palisade_tasks_ended_total", Counter, ["group", "end"],
        "Supervised tasks ended, by how they ended.";
    /// Supervised tasks that panicked.
    TASK_PANICS_TOTAL = "palisade_task_panics_total", Counter, ["group"],
        "Supervised tasks that panicked.";
    /// Supervised loops restarted.
    TASK_RESTARTS_TOTAL = "palisade_task_restarts_total", Counter, ["group"],
        "Supervised loops restarted after a panic or an error.";
    /// Supervised loops that reached their restart limit and stopped.
    TASK_GAVE_UP_TOTAL = "palisade_task_gave_up_total", Counter, ["group"],
        "Supervised loops that reached their restart limit and were not restarted again.";
    /// Offloaded work dropped without being delivered.
    OFFLOAD_DROPPED_TOTAL = "palisade_offload_dropped_total", Counter, ["queue", "reason"],
        "Offloaded work dropped without being delivered.";
    /// Offloaded work delivered.
    OFFLOAD_DELIVERED_TOTAL = "palisade_offload_delivered_total", Counter, ["queue"],
        "Offloaded work delivered to its service.";
    /// Failed attempts to deliver offloaded work, by cause.
    OFFLOAD_ATTEMPT_FAILURES_TOTAL = "palisade_offload_attempt_failures_total", Counter, ["queue", "cause"],
        "Attempts to deliver offloaded work that failed, by cause (an error or a panic of the service).";
    /// Events a sink dropped because their policy, group or queue name was
    /// new while the sink already tracked as many names as it may.
    UNTRACKED_EVENTS_TOTAL = "palisade_untracked_events_total", Counter, [],
        "Events dropped because the sink tracks no more new names.";
}

/// The family named `name`, if palisade exports it.
pub fn family(name: &str) -> Option<&'static Family> {
    ALL.iter().find(|f| f.name == name)
}

/// The `deadline` label of a timeout: `caller` when the deadline that ran
/// out was the remote caller's, `policy` when it was the layer's own.
///
/// ```
/// use palisade_metrics::names;
///
/// assert_eq!(names::deadline(true), "caller");
/// assert_eq!(names::deadline(false), "policy");
/// ```
pub const fn deadline(caller: bool) -> &'static str {
    if caller { "caller" } else { "policy" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        for f in ALL {
            assert!(f.name.starts_with("palisade_"), "{}", f.name);
            assert!(
                f.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                f.name
            );
            match f.kind {
                Kind::Counter => assert!(f.name.ends_with("_total"), "{}", f.name),
                Kind::Gauge => assert!(!f.name.ends_with("_total"), "{}", f.name),
                Kind::Histogram => assert!(f.name.ends_with("_seconds"), "{}", f.name),
            }
            assert_eq!(family(f.name), Some(f));
        }
        let mut names: Vec<_> = ALL.iter().map(|f| f.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
    }
}

//! The data a [`SnapshotSink`](super::SnapshotSink) returns: plain structs
//! that serialise to JSON with serde.

use serde::Serialize;

/// How worried an operator should be about a policy.
///
/// Ordered from best to worst, so sorting by it descending puts the worst
/// first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Health {
    /// Nothing recent to report.
    Ok,
    /// Requests are being refused, panicking, timing out or degraded, the
    /// breaker is probing, or the bulkhead is full.
    Degraded,
    /// The breaker is open (or forced open): every call is refused.
    Critical,
}

impl Health {
    /// `"ok"`, `"degraded"` or `"critical"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Health::Ok => "ok",
            Health::Degraded => "degraded",
            Health::Critical => "critical",
        }
    }
}

/// The state of everything a [`SnapshotSink`](super::SnapshotSink) has
/// seen, at one moment.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Snapshot {
    /// Wall-clock time of the snapshot, in milliseconds since the Unix
    /// epoch, for display.
    pub taken_at_unix_ms: u64,
    /// Time since the sink was built, on the sink's clock.
    pub uptime_seconds: f64,
    /// Length of the window behind every `recent` and `per_second` figure.
    pub window_seconds: u64,
    /// How many policies are in each state of health.
    pub summary: Summary,
    /// Every policy, worst first: by health, then rejections per second,
    /// then name.
    pub policies: Vec<PolicySnapshot>,
    /// Every task group, by name.
    pub task_groups: Vec<TaskGroupSnapshot>,
    /// Every offload queue, by name.
    pub offload_queues: Vec<OffloadQueueSnapshot>,
    /// Events dropped because the sink tracked as many names as it may.
    pub untracked_events: u64,
}

/// How many policies are in each state of health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Summary {
    /// Policies known.
    pub policies: usize,
    /// Policies whose health is critical.
    pub critical: usize,
    /// Policies whose health is degraded.
    pub degraded: usize,
    /// Policies whose health is ok.
    pub ok: usize,
}

/// One named policy: every layer that reported under its name.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct PolicySnapshot {
    /// The policy name.
    pub name: String,
    /// How worried to be.
    pub health: Health,
    /// Why the health is not ok, in words, worst first.
    pub concerns: Vec<String>,
    /// The layers that reported under this name, outermost first.
    pub layers: Vec<&'static str>,
    /// The circuit breaker, once it reported.
    pub breaker: Option<BreakerSnapshot>,
    /// The bulkhead, once it reported its in-flight count or limit.
    pub bulkhead: Option<BulkheadSnapshot>,
    /// The keyed rate limiter, once it reported its keys, evicted one, or
    /// charged a request to its overflow bucket.
    pub rate_limit: Option<RateLimitSnapshot>,
    /// Finished calls by outcome, per layer that classified them.
    pub requests: Vec<LayerRequests>,
    /// Requests let through, per layer.
    pub admitted: Vec<LayerCount>,
    /// Requests refused before the service.
    pub rejections: Rejections,
    /// Panics caught.
    pub panics: Recent,
    /// Calls cancelled at the policy's own deadline; these count toward
    /// the policy's health.
    pub timeouts: Recent,
    /// Calls cancelled at a shorter deadline their remote caller asked for
    /// (a `grpc-timeout`): the client was in a hurry, so they say nothing
    /// of the service's health.
    pub caller_timeouts: u64,
    /// Fallback answers.
    pub fallbacks: Fallbacks,
    /// Malformed headers ignored, by header.
    pub malformed_headers: Vec<HeaderCount>,
}

/// A circuit breaker's state and rates.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BreakerSnapshot {
    /// The current state (`closed`, `open`, `half_open`, `forced_open`,
    /// `forced_closed`, `disabled`, `metrics_only`).
    pub state: &'static str,
    /// Failed calls over calls in the breaker's window, once reported.
    pub failure_rate: Option<f64>,
    /// Slow calls over calls in the breaker's window, once reported.
    pub slow_rate: Option<f64>,
    /// Calls in the breaker's window, once reported.
    pub window_calls: Option<u64>,
    /// Transitions since the sink was built.
    pub transitions: u64,
    /// The last transition.
    pub last_transition: Option<Transition>,
    /// In metrics-only mode, the state enforcing would have entered
    /// (`closed`, `open`, `half_open`).
    pub shadow_state: Option<&'static str>,
}

/// One breaker transition.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct Transition {
    /// The state left.
    pub from: &'static str,
    /// The state entered.
    pub to: &'static str,
    /// What caused it.
    pub reason: &'static str,
    /// How long ago, on the sink's clock.
    pub seconds_ago: f64,
}

/// A bulkhead's occupation.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct BulkheadSnapshot {
    /// Calls holding a slot now.
    pub in_flight: i64,
    /// The limit in force, once known.
    pub limit: Option<u64>,
    /// Whether the limit is adaptive (it moved at least once).
    pub adaptive: bool,
}

/// A keyed rate limiter's memory.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct RateLimitSnapshot {
    /// Keys tracked, once reported.
    pub keys: Option<u64>,
    /// The key cap, once reported.
    pub key_cap: Option<u64>,
    /// Idle keys forgotten.
    pub evicted: u64,
    /// Requests charged to the overflow bucket: their key found no slot of
    /// its own (the key cap was reached, or its set of slots was full).
    pub overflow: u64,
}

/// Finished calls of one layer, by outcome.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LayerRequests {
    /// The layer that classified the calls.
    pub layer: &'static str,
    /// Successes.
    pub success: u64,
    /// Failures.
    pub failure: u64,
    /// Calls that say nothing about health.
    pub ignored: u64,
    /// Calls dropped before they finished.
    pub cancelled: u64,
    /// All of them.
    pub total: u64,
}

/// A count for one layer.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct LayerCount {
    /// The layer.
    pub layer: &'static str,
    /// The count.
    pub total: u64,
}

/// A total and its recent rate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Recent {
    /// Since the sink was built.
    pub total: u64,
    /// Within the window.
    pub recent: u64,
    /// `recent` per second of the window.
    pub per_second: f64,
}

/// Rejections, in total and by reason.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Rejections {
    /// Since the sink was built.
    pub total: u64,
    /// Within the window.
    pub recent: u64,
    /// `recent` per second of the window.
    pub per_second: f64,
    /// Every reason seen, most frequent recently first.
    pub by_reason: Vec<ReasonCount>,
}

/// Rejections for one reason.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct ReasonCount {
    /// The reason (`rate_limited`, `circuit_open`, `concurrency_full`, ...).
    pub reason: &'static str,
    /// Since the sink was built.
    pub total: u64,
    /// Within the window.
    pub recent: u64,
    /// `recent` per second of the window.
    pub per_second: f64,
}

/// Fallback answers, in total and by trigger.
#[derive(Clone, Debug, Default, Serialize)]
#[non_exhaustive]
pub struct Fallbacks {
    /// Since the sink was built.
    pub total: u64,
    /// Within the window, answers for the service's errors and responses
    /// only: one for a rejection is counted with that rejection (or
    /// timeout, or panic).
    pub recent: u64,
    /// `recent` per second of the window.
    pub per_second: f64,
    /// Every trigger seen.
    pub by_trigger: Vec<TriggerCount>,
}

/// Fallback answers for one trigger.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TriggerCount {
    /// What the fallback answered for (`rejection`, `error`, `response`).
    pub trigger: &'static str,
    /// Since the sink was built.
    pub total: u64,
}

/// Malformed headers of one name.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct HeaderCount {
    /// The header, lower case.
    pub header: String,
    /// Since the sink was built.
    pub total: u64,
}

/// One supervised task group.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct TaskGroupSnapshot {
    /// The group name.
    pub name: String,
    /// Tasks running now.
    pub live: i64,
    /// Tasks started.
    pub started: u64,
    /// Tasks that panicked.
    pub panics: u64,
    /// Loops restarted.
    pub restarts: u64,
    /// Supervised loops that reached their restart limit.
    pub gave_up: u64,
    /// Tasks ended, by how (only the ways seen).
    pub ended: Vec<EndCount>,
}

/// Tasks ended one way.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct EndCount {
    /// How they ended (`completed`, `failed`, `panicked`, `cancelled`,
    /// `aborted`).
    pub end: &'static str,
    /// How many.
    pub total: u64,
}

/// One offload queue.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct OffloadQueueSnapshot {
    /// The queue name.
    pub name: String,
    /// Work delivered.
    pub delivered: u64,
    /// Work dropped, all reasons.
    pub dropped_total: u64,
    /// Work dropped, by reason (only the reasons seen).
    pub dropped: Vec<DropCount>,
    /// Attempts to deliver work that failed, whatever the cause (work is
    /// retried after a failed attempt until its attempts run out).
    pub failed_attempts: u64,
    /// The failed attempts in which the service panicked.
    pub panicked_attempts: u64,
}

/// Work dropped for one reason.
#[derive(Clone, Debug, Serialize)]
#[non_exhaustive]
pub struct DropCount {
    /// Why (`queue_full`, `retries_exhausted`, `service_failed`,
    /// `shutdown`, `closed`).
    pub reason: &'static str,
    /// How many.
    pub total: u64,
}

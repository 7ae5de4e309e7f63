//! palisade's metric families through the [`metrics`] facade.
//!
//! [`FacadeSink`] turns each event into counter, gauge and histogram
//! updates on whichever recorder is current when the event is recorded
//! (with the exception of two absolute gauges, below): the global one (`metrics::set_global_recorder`, or an exporter's
//! `install`) or a local one (`metrics::with_local_recorder`). The names are
//! the [Prometheus families](crate::names), in base units; pair the sink
//! with `metrics-exporter-prometheus` to serve them.
//!
//! Building a metric key allocates its label vector, so the sink builds
//! each (family, policy, labels) key once, the first time it is needed,
//! with its labels behind an `Arc`, and keeps it per policy in a lock-free
//! map (a name's first event allocates its entry there). Recording an
//! event whose keys were built before then costs a name lookup and the
//! recorder's own lookup of a pre-hashed key, and allocates nothing in
//! the sink. The
//! recorder may: `metrics-exporter-prometheus` 0.18 finds the key without
//! allocating (it clones the key's `Arc`s) but wraps the handle it returns
//! for each update in a new `Arc`, one allocation per update, as it does
//! for the `counter!` macros. Where that matters, `PrometheusSink`
//! (feature `prometheus`) records with plain atomics and allocates only
//! the first time it meets a name, a layer's latencies or a malformed
//! header.
//!
//! `palisade_breaker_state{policy,state}` is written for every
//! [`CircuitState`] on each transition, the new state's 1 before the old
//! state's 0, and transitions of one breaker are written one at a time.
//! Each state is a gauge of its own, and a recorder reads them one after
//! another: a scrape that races a transition may see two states at 1, or
//! none. Where exactly one state at 1 in every scrape matters (an alert
//! on `palisade_breaker_state`), use `PrometheusSink`, which renders all
//! of a breaker's states from one word. A breaker's series appear at its
//! first transition, or at its first admission, completion or rates
//! report, which makes it `closed`.
//!
//! Those two absolute gauges, `palisade_breaker_state` and
//! `palisade_concurrency_limit`, are written when their value changes (or
//! first appears), not on every event, so that the hot path stays one
//! update per event: install the recorder before the layers serve
//! requests. A recorder installed later, or a local recorder made current
//! for a while, gets them at their next change; counters, the in-flight
//! gauge and histograms go to whichever recorder is current at each event.
//!
//! `palisade_request_duration_seconds{policy,layer}` is a histogram per
//! layer (several layers report completions); how it is exported (summary
//! or buckets) is the recorder's choice.
//!
//! Call [`describe`] once after installing a recorder to give every family
//! its help text and unit.
//!
//! # Example
//!
//! ```
//! use palisade_core::{Event, LayerKind, Metrics, Outcome};
//! use palisade_metrics::FacadeSink;
//!
//! // With no recorder installed the updates go nowhere; install one (for
//! // example metrics-exporter-prometheus) at start-up.
//! let metrics = Metrics::new(FacadeSink::new());
//! metrics.emit(&Event::Completed {
//!     policy: "checkout",
//!     layer: LayerKind::CircuitBreaker,
//!     outcome: Outcome::Success,
//!     latency: None,
//! });
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex, OnceLock};

use ::metrics::{Key, KeyName, Label, Level, Metadata, SharedString, Unit};
use palisade_core::{CircuitState, Event, LayerKind, MetricsSink};

use crate::index::{
    self, ATTEMPT_FAILURES, DROP_REASONS, LAYERS, OUTCOMES, REASONS, STATES, TASK_ENDS, TRIGGERS,
};
use crate::limit_word;
use crate::name_map::NameMap;
use crate::names::{self, Kind};

static METADATA: Metadata<'static> = Metadata::new("palisade", Level::INFO, Some(module_path!()));

/// The most policies, task groups and offload queues (each) a sink keeps
/// keys for.
const MAX_NAMES: usize = 1024;
const UNKNOWN: u8 = u8::MAX;

/// Gives every palisade family its help text and unit on the current
/// recorder. Call it once after installing the recorder.
pub fn describe() {
    ::metrics::with_recorder(|recorder| {
        for family in names::ALL {
            let name = KeyName::from_const_str(family.name);
            let help = SharedString::const_str(family.help);
            match family.kind {
                Kind::Counter => recorder.describe_counter(name, None, help),
                Kind::Histogram => recorder.describe_histogram(name, Some(Unit::Seconds), help),
                _ => recorder.describe_gauge(name, None, help),
            }
        }
    });
}

/// A [`MetricsSink`] that reports through the `metrics` facade; see the
/// [module docs](self).
///
/// Cloning is cheap and clones share their key cache.
#[derive(Clone, Default)]
pub struct FacadeSink {
    inner: Arc<Inner>,
}

struct Inner {
    policies: NameMap<PolicyKeys>,
    groups: NameMap<GroupKeys>,
    queues: NameMap<QueueKeys>,
    untracked: Key,
}

impl Default for Inner {
    fn default() -> Self {
        Self {
            policies: NameMap::new(64, MAX_NAMES),
            groups: NameMap::new(16, MAX_NAMES),
            queues: NameMap::new(16, MAX_NAMES),
            untracked: Key::from_static_name(names::UNTRACKED_EVENTS_TOTAL),
        }
    }
}

type Slot = OnceLock<Key>;

/// The keys of one policy, each built on first use.
struct PolicyKeys {
    name: SharedString,
    admitted: [Slot; LAYERS],
    rejections: [Slot; LAYERS * REASONS],
    requests: [Slot; LAYERS * OUTCOMES],
    durations: [Slot; LAYERS],
    panics: Slot,
    timeouts: [Slot; 2],
    fallbacks: [Slot; TRIGGERS],
    breaker_state: [Slot; STATES],
    transitions: [Slot; STATES * STATES],
    shadow_transitions: [Slot; STATES],
    failure_rate: Slot,
    slow_rate: Slot,
    window_calls: Slot,
    in_flight: Slot,
    limit: Slot,
    keys: Slot,
    key_cap: Slot,
    evictions: Slot,
    /// Keys evicted so far, saturating: what the evictions counter has
    /// been incremented by, so that it never wraps.
    evicted: AtomicU64,
    overflow: Slot,
    malformed: NameMap<Key>,
    /// The concurrency limit last written, to skip rewriting it on every
    /// in-flight change (see [`crate::limit_word`]).
    last_limit: AtomicU64,
    /// Index of the breaker state last written, or `UNKNOWN`.
    state: AtomicU8,
    /// Serialises the writes of one breaker's state series.
    state_writes: Mutex<()>,
}

struct GroupKeys {
    name: SharedString,
    live: Slot,
    started: Slot,
    ended: [Slot; TASK_ENDS],
    panics: Slot,
    restarts: Slot,
    gave_up: Slot,
}

struct QueueKeys {
    name: SharedString,
    dropped: [Slot; DROP_REASONS],
    delivered: Slot,
    attempt_failures: [Slot; ATTEMPT_FAILURES],
}

fn shared(name: &str) -> SharedString {
    SharedString::from_shared(Arc::<str>::from(name))
}

fn label(key: &'static str, value: &'static str) -> Label {
    Label::from_static_parts(key, value)
}

fn owned_label(key: &'static str, value: &SharedString) -> Label {
    Label::new(SharedString::const_str(key), value.clone())
}

/// A key whose labels are shared, so that recorders that keep a copy of it
/// (most call `Key::to_retained`) clone an `Arc` instead of allocating.
fn retained(name: &'static str, labels: Vec<Label>) -> Key {
    Key::from_parts(name, labels).to_retained()
}

/// The key in `slot`, built from `name` and `labels` the first time.
#[inline]
fn key<'a>(slot: &'a Slot, name: &'static str, labels: impl FnOnce() -> Vec<Label>) -> &'a Key {
    slot.get_or_init(|| retained(name, labels()))
}

#[inline]
fn increment(key: &Key, by: u64) {
    ::metrics::with_recorder(|r| r.register_counter(key, &METADATA).increment(by));
}

/// The key `name` kept in `slots[at]`, labelled with its owner
/// (`("policy", name)`, `("queue", name)`, …) and then `values`.
fn key_at<'a>(
    slots: &'a [Slot],
    at: usize,
    name: &'static str,
    owner: (&'static str, &SharedString),
    values: &[(&'static str, &'static str)],
) -> Option<&'a Key> {
    let slot = slots.get(at)?;
    Some(key(slot, name, || {
        let mut labels = Vec::with_capacity(1 + values.len());
        labels.push(owned_label(owner.0, owner.1));
        labels.extend(values.iter().map(|&(k, v)| label(k, v)));
        labels
    }))
}

/// Adds one to the counter [`key_at`] names.
fn increment_at(
    slots: &[Slot],
    at: usize,
    name: &'static str,
    owner: (&'static str, &SharedString),
    values: &[(&'static str, &'static str)],
) {
    if let Some(k) = key_at(slots, at, name, owner, values) {
        increment(k, 1);
    }
}

#[inline]
fn gauge_add(key: &Key, delta: f64) {
    ::metrics::with_recorder(|r| r.register_gauge(key, &METADATA).increment(delta));
}

#[inline]
fn gauge_set(key: &Key, value: f64) {
    ::metrics::with_recorder(|r| r.register_gauge(key, &METADATA).set(value));
}

impl PolicyKeys {
    fn new(name: &str) -> Self {
        Self {
            name: shared(name),
            admitted: [const { OnceLock::new() }; LAYERS],
            rejections: [const { OnceLock::new() }; LAYERS * REASONS],
            requests: [const { OnceLock::new() }; LAYERS * OUTCOMES],
            durations: [const { OnceLock::new() }; LAYERS],
            panics: OnceLock::new(),
            timeouts: [const { OnceLock::new() }; 2],
            fallbacks: [const { OnceLock::new() }; TRIGGERS],
            breaker_state: [const { OnceLock::new() }; STATES],
            transitions: [const { OnceLock::new() }; STATES * STATES],
            shadow_transitions: [const { OnceLock::new() }; STATES],
            failure_rate: OnceLock::new(),
            slow_rate: OnceLock::new(),
            window_calls: OnceLock::new(),
            in_flight: OnceLock::new(),
            limit: OnceLock::new(),
            keys: OnceLock::new(),
            key_cap: OnceLock::new(),
            evictions: OnceLock::new(),
            evicted: AtomicU64::new(0),
            overflow: OnceLock::new(),
            malformed: NameMap::new(4, 64),
            last_limit: AtomicU64::new(0),
            state: AtomicU8::new(UNKNOWN),
            state_writes: Mutex::new(()),
        }
    }

    /// A key labelled with the policy only.
    fn plain<'a>(&self, slot: &'a Slot, family: &'static str) -> &'a Key {
        key(slot, family, || vec![owned_label("policy", &self.name)])
    }

    /// Writes `limit`, just stored in `last_limit`, to the limit gauge.
    /// Two events with different limits can write in the other order than
    /// they stored: whoever wrote reads `last_limit` again and writes what
    /// it holds, so the gauge ends at the limit stored last, not at a stale
    /// one that later events (equal to `last_limit`) would never rewrite.
    #[cold]
    fn write_limit(&self, mut limit: u64) {
        let key = self.plain(&self.limit, names::CONCURRENCY_LIMIT);
        // The fences order each thread's store and write of `last_limit`
        // and the gauge: a write that lands after another thread's reads
        // that thread's store.
        fence(Ordering::SeqCst);
        loop {
            gauge_set(key, limit as f64);
            fence(Ordering::SeqCst);
            let last = limit_word::limit(&self.last_limit);
            if last == limit {
                return;
            }
            limit = last;
        }
    }

    fn with_layer<'a>(
        &self,
        slots: &'a [Slot],
        family: &'static str,
        layer: LayerKind,
    ) -> Option<&'a Key> {
        key_at(
            slots,
            index::layer(layer),
            family,
            ("policy", &self.name),
            &[("layer", layer.as_str())],
        )
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, ()> {
        // A poisoned lock only means a recorder panicked mid-write; the
        // next write repairs the series.
        self.state_writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes every state series with `to` at 1, the new 1 before the old 0.
    fn write_state(&self, to: CircuitState) {
        let guard = self.lock_state();
        self.write_state_locked(to);
        drop(guard);
    }

    /// [`write_state`](Self::write_state), with `state_writes` held.
    fn write_state_locked(&self, to: CircuitState) {
        let t = index::state(to);
        self.state.store(t as u8, Ordering::Release);
        let series = |i: usize, state: CircuitState| {
            key_at(
                &self.breaker_state,
                i,
                names::BREAKER_STATE,
                ("policy", &self.name),
                &[("state", state.as_str())],
            )
        };
        if let Some(k) = series(t, to) {
            gauge_set(k, 1.0);
        }
        for (i, state) in CircuitState::ALL.iter().enumerate() {
            if i != t
                && let Some(k) = series(i, *state)
            {
                gauge_set(k, 0.0);
            }
        }
    }

    /// A breaker reported activity before any transition: it is closed.
    #[inline]
    fn see_breaker(&self) {
        if self.state.load(Ordering::Acquire) == UNKNOWN {
            self.see_breaker_slow();
        }
    }

    #[cold]
    fn see_breaker_slow(&self) {
        let guard = self.lock_state();
        // A transition may have been written while we waited.
        if self.state.load(Ordering::Acquire) == UNKNOWN {
            self.write_state_locked(CircuitState::Closed);
        }
        drop(guard);
    }
}

impl GroupKeys {
    fn new(name: &str) -> Self {
        Self {
            name: shared(name),
            live: OnceLock::new(),
            started: OnceLock::new(),
            ended: [const { OnceLock::new() }; TASK_ENDS],
            panics: OnceLock::new(),
            restarts: OnceLock::new(),
            gave_up: OnceLock::new(),
        }
    }

    fn plain<'a>(&self, slot: &'a Slot, family: &'static str) -> &'a Key {
        key(slot, family, || vec![owned_label("group", &self.name)])
    }
}

impl QueueKeys {
    fn new(name: &str) -> Self {
        Self {
            name: shared(name),
            dropped: [const { OnceLock::new() }; DROP_REASONS],
            delivered: OnceLock::new(),
            attempt_failures: [const { OnceLock::new() }; ATTEMPT_FAILURES],
        }
    }
}

impl FacadeSink {
    /// A sink that reports to the current `metrics` recorder.
    pub fn new() -> Self {
        Self::default()
    }

    fn policy(&self, name: &str) -> Option<&PolicyKeys> {
        let found = self
            .inner
            .policies
            .get_or_insert_with(name, || PolicyKeys::new(name));
        if found.is_none() {
            increment(&self.inner.untracked, 1);
        }
        found
    }

    fn group(&self, name: &str) -> Option<&GroupKeys> {
        let found = self
            .inner
            .groups
            .get_or_insert_with(name, || GroupKeys::new(name));
        if found.is_none() {
            increment(&self.inner.untracked, 1);
        }
        found
    }

    fn queue(&self, name: &str) -> Option<&QueueKeys> {
        let found = self
            .inner
            .queues
            .get_or_insert_with(name, || QueueKeys::new(name));
        if found.is_none() {
            increment(&self.inner.untracked, 1);
        }
        found
    }
}

impl fmt::Debug for FacadeSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FacadeSink")
            .field("policies", &self.inner.policies.len())
            .field("groups", &self.inner.groups.len())
            .field("queues", &self.inner.queues.len())
            .finish()
    }
}

impl MetricsSink for FacadeSink {
    fn record(&self, event: &Event<'_>) {
        match *event {
            Event::Admitted { policy, layer } => {
                let Some(p) = self.policy(policy) else { return };
                if let Some(k) = p.with_layer(&p.admitted, names::ADMITTED_TOTAL, layer) {
                    increment(k, 1);
                }
                if layer == LayerKind::CircuitBreaker {
                    p.see_breaker();
                }
            }
            Event::Rejected {
                policy,
                layer,
                reason,
            } => {
                let Some(p) = self.policy(policy) else { return };
                increment_at(
                    &p.rejections,
                    index::layer(layer) * REASONS + index::reason(reason),
                    names::REJECTIONS_TOTAL,
                    ("policy", &p.name),
                    &[("layer", layer.as_str()), ("reason", reason.as_str())],
                );
            }
            Event::Completed {
                policy,
                layer,
                outcome,
                latency,
            } => {
                let Some(p) = self.policy(policy) else { return };
                increment_at(
                    &p.requests,
                    index::layer(layer) * OUTCOMES + index::outcome(outcome),
                    names::REQUESTS_TOTAL,
                    ("policy", &p.name),
                    &[("layer", layer.as_str()), ("outcome", outcome.as_str())],
                );
                if let Some(latency) = latency
                    && let Some(k) =
                        p.with_layer(&p.durations, names::REQUEST_DURATION_SECONDS, layer)
                {
                    let seconds = latency.as_secs_f64();
                    ::metrics::with_recorder(|r| {
                        r.register_histogram(k, &METADATA).record(seconds);
                    });
                }
                if layer == LayerKind::CircuitBreaker {
                    p.see_breaker();
                }
            }
            Event::PanicCaught { policy, .. } => {
                let Some(p) = self.policy(policy) else { return };
                increment(p.plain(&p.panics, names::PANICS_TOTAL), 1);
            }
            Event::TimedOut { policy, caller, .. } => {
                let Some(p) = self.policy(policy) else { return };
                increment_at(
                    &p.timeouts,
                    usize::from(caller),
                    names::TIMEOUTS_TOTAL,
                    ("policy", &p.name),
                    &[("deadline", names::deadline(caller))],
                );
            }
            Event::StateChanged {
                policy, from, to, ..
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.write_state(to);
                increment_at(
                    &p.transitions,
                    index::state(from) * STATES + index::state(to),
                    names::BREAKER_TRANSITIONS_TOTAL,
                    ("policy", &p.name),
                    &[("from", from.as_str()), ("to", to.as_str())],
                );
            }
            Event::ShadowStateChanged { policy, to, .. } => {
                let Some(p) = self.policy(policy) else { return };
                increment_at(
                    &p.shadow_transitions,
                    index::state(to),
                    names::BREAKER_SHADOW_TRANSITIONS_TOTAL,
                    ("policy", &p.name),
                    &[("to", to.as_str())],
                );
            }
            Event::BreakerRates {
                policy,
                failure_rate,
                slow_rate,
                calls,
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_breaker();
                gauge_set(
                    p.plain(&p.failure_rate, names::BREAKER_FAILURE_RATE),
                    failure_rate,
                );
                gauge_set(p.plain(&p.slow_rate, names::BREAKER_SLOW_RATE), slow_rate);
                gauge_set(
                    p.plain(&p.window_calls, names::BREAKER_WINDOW_CALLS),
                    calls as f64,
                );
            }
            Event::InFlightChanged {
                policy,
                change,
                limit,
                ..
            } => {
                let Some(p) = self.policy(policy) else { return };
                gauge_add(
                    p.plain(&p.in_flight, names::IN_FLIGHT),
                    change.delta() as f64,
                );
                if limit_word::offer(&p.last_limit, limit as u64) {
                    p.write_limit(limit as u64);
                }
            }
            Event::LimitChanged { policy, to, .. } => {
                let Some(p) = self.policy(policy) else { return };
                limit_word::moved(&p.last_limit, to as u64);
                p.write_limit(to as u64);
            }
            Event::FallbackUsed { policy, trigger } => {
                let Some(p) = self.policy(policy) else { return };
                increment_at(
                    &p.fallbacks,
                    index::trigger(trigger),
                    names::FALLBACKS_TOTAL,
                    ("policy", &p.name),
                    &[("trigger", trigger.as_str())],
                );
            }
            Event::KeysTracked { policy, keys, cap } => {
                let Some(p) = self.policy(policy) else { return };
                gauge_set(p.plain(&p.keys, names::RATELIMIT_KEYS), keys as f64);
                gauge_set(p.plain(&p.key_cap, names::RATELIMIT_KEY_CAP), cap as f64);
            }
            Event::KeysEvicted { policy, count } => {
                let Some(p) = self.policy(policy) else { return };
                // The count comes from the event: a recorder's counter
                // wraps, so add no more than the room a saturating total
                // has left.
                let count = count as u64;
                let before = p
                    .evicted
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                        Some(total.saturating_add(count))
                    })
                    .unwrap_or_else(|total| total);
                let added = before.saturating_add(count) - before;
                increment(
                    p.plain(&p.evictions, names::RATELIMIT_EVICTIONS_TOTAL),
                    added,
                );
            }
            Event::OverflowUsed { policy } => {
                let Some(p) = self.policy(policy) else { return };
                increment(p.plain(&p.overflow, names::RATELIMIT_OVERFLOW_TOTAL), 1);
            }
            Event::MalformedHeader { policy, header, .. } => {
                let Some(p) = self.policy(policy) else { return };
                let k = p.malformed.get_or_insert_with(header, || {
                    retained(
                        names::MALFORMED_HEADERS_TOTAL,
                        vec![owned_label("policy", &p.name), label("header", header)],
                    )
                });
                if let Some(k) = k {
                    increment(k, 1);
                }
            }
            Event::TaskStarted { group, .. } => {
                let Some(g) = self.group(group) else { return };
                gauge_add(g.plain(&g.live, names::TASKS_LIVE), 1.0);
                increment(g.plain(&g.started, names::TASKS_STARTED_TOTAL), 1);
            }
            Event::TaskEnded { group, end, .. } => {
                let Some(g) = self.group(group) else { return };
                gauge_add(g.plain(&g.live, names::TASKS_LIVE), -1.0);
                increment_at(
                    &g.ended,
                    index::task_end(end),
                    names::TASKS_ENDED_TOTAL,
                    ("group", &g.name),
                    &[("end", end.as_str())],
                );
            }
            Event::TaskPanicked { group, .. } => {
                let Some(g) = self.group(group) else { return };
                increment(g.plain(&g.panics, names::TASK_PANICS_TOTAL), 1);
            }
            Event::TaskRestarted { group, .. } => {
                let Some(g) = self.group(group) else { return };
                increment(g.plain(&g.restarts, names::TASK_RESTARTS_TOTAL), 1);
            }
            Event::TaskGaveUp { group, .. } => {
                let Some(g) = self.group(group) else { return };
                increment(g.plain(&g.gave_up, names::TASK_GAVE_UP_TOTAL), 1);
            }
            Event::OffloadDropped { queue, reason } => {
                let Some(q) = self.queue(queue) else { return };
                increment_at(
                    &q.dropped,
                    index::drop_reason(reason),
                    names::OFFLOAD_DROPPED_TOTAL,
                    ("queue", &q.name),
                    &[("reason", reason.as_str())],
                );
            }
            Event::OffloadDelivered { queue, .. } => {
                let Some(q) = self.queue(queue) else { return };
                let k = key(&q.delivered, names::OFFLOAD_DELIVERED_TOTAL, || {
                    vec![owned_label("queue", &q.name)]
                });
                increment(k, 1);
            }
            Event::OffloadAttemptFailed { queue, cause, .. } => {
                let Some(q) = self.queue(queue) else { return };
                increment_at(
                    &q.attempt_failures,
                    index::attempt_failure(cause),
                    names::OFFLOAD_ATTEMPT_FAILURES_TOTAL,
                    ("queue", &q.name),
                    &[("cause", cause.as_str())],
                );
            }
            _ => {}
        }
    }
}

//! Per-policy, per-group and per-queue state kept in atomics.
//!
//! [`PrometheusSink`](crate::prometheus::PrometheusSink) and
//! [`SnapshotSink`](crate::snapshot::SnapshotSink) both record events here
//! and read the cells when they are scraped or asked for a snapshot. Every
//! label of an event maps to a fixed index (see [`crate::index`]), so
//! recording an event is a name lookup in a [`NameMap`] followed by one or
//! two relaxed atomic operations, with no lock. It allocates only on a
//! first sight: a name's cells, a layer's histogram at its first latency
//! (when the store keeps histograms), a header's counter at its first
//! malformed value, and a policy's recent window (snapshot sink) at the
//! first rejection, timeout, panic or fallback it counts, which other
//! threads counting one for that policy wait for.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade_core::{CircuitState, Clock, Event, LayerKind};

use crate::index::{
    self, ATTEMPT_FAILURES, DROP_REASONS, LAYERS, OUTCOMES, REASONS, STATES, TASK_ENDS, TRIGGERS,
};
use crate::limit_word;
use crate::name_map::NameMap;
use crate::window::RateWindow;

/// `state` before the breaker of a policy was seen.
pub(crate) const STATE_UNKNOWN: u8 = u8::MAX;
/// `last_transition` before any transition: no transition packs to it,
/// as every state and reason index is below 15.
const NEVER: u64 = u64::MAX;

/// Bits of `last_transition` that hold its time, in microseconds since the
/// store's start (about 142 years); the 12 above hold `from`, `to` and the
/// reason, four bits each.
const TIME_BITS: u32 = 52;

const _: () = assert!(
    CircuitState::ALL.len() < 16 && palisade_core::TransitionReason::ALL.len() < 16,
    "a transition's state and reason indices fit in four bits, none all ones"
);

/// `sections` bit: the breaker reported its rates.
pub(crate) const SEEN_RATES: u32 = 1;
/// `sections` bit: a bulkhead reported its in-flight count.
pub(crate) const SEEN_IN_FLIGHT: u32 = 1 << 1;
/// `sections` bit: the concurrency limit is known.
pub(crate) const SEEN_LIMIT: u32 = 1 << 2;
/// `sections` bit: the limit is adaptive (it moved at least once).
pub(crate) const SEEN_ADAPTIVE: u32 = 1 << 3;

/// `sections` bit: a keyed rate limiter reported its keys.
pub(crate) const SEEN_KEYS: u32 = 1 << 4;
/// `sections` bit: a keyed rate limiter evicted keys or used its overflow.
pub(crate) const SEEN_KEY_CHURN: u32 = 1 << 5;

/// Recent-window category of each rejection reason is its index; these
/// follow them.
pub(crate) const RECENT_PANICS: usize = REASONS;
/// Recent-window category of timeouts.
pub(crate) const RECENT_TIMEOUTS: usize = REASONS + 1;
/// Recent-window category of fallback answers.
pub(crate) const RECENT_FALLBACKS: usize = REASONS + 2;
const RECENT_CATEGORIES: usize = REASONS + 3;

/// Default histogram bounds for call durations, in seconds.
#[cfg(feature = "prometheus")]
pub(crate) const DEFAULT_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a store is built.
#[derive(Clone, Debug)]
pub(crate) struct StoreConfig {
    /// Histogram bounds; empty keeps no histograms.
    pub(crate) buckets: Box<[f64]>,
    /// Clock and length of the recent window; `None` keeps no window.
    pub(crate) window: Option<(Clock, u32)>,
    /// Most policies, groups and queues tracked (each).
    pub(crate) max_names: usize,
}

/// The time base of the recent window.
#[derive(Debug)]
pub(crate) struct Timeline {
    pub(crate) clock: Clock,
    pub(crate) start: Instant,
    pub(crate) seconds: u32,
}

impl Timeline {
    /// Time since the store was built.
    pub(crate) fn elapsed(&self) -> Duration {
        self.clock.now().saturating_duration_since(self.start)
    }
}

/// Everything a sink tracks.
#[derive(Debug)]
pub(crate) struct Store {
    pub(crate) policies: NameMap<PolicyCells>,
    pub(crate) groups: NameMap<GroupCells>,
    pub(crate) queues: NameMap<QueueCells>,
    pub(crate) buckets: Box<[f64]>,
    pub(crate) timeline: Option<Timeline>,
}

/// A fixed-bucket histogram of durations.
#[derive(Debug)]
pub(crate) struct Histogram {
    /// One count per bound, then the `+Inf` bucket; not cumulative.
    pub(crate) counts: Box<[AtomicU64]>,
    /// The sum of the durations in nanoseconds, as the bits of an `f64`.
    /// It is exact up to 2^53 ns (104 days) and past that it rounds, but it
    /// never goes down: a `u64` wrapped after 2^64 ns (weeks, for a busy
    /// series), and Prometheus reads a drop in `_sum` as a counter reset.
    sum_nanos: AtomicU64,
}

impl Histogram {
    fn new(bounds: usize) -> Self {
        Self {
            counts: (0..=bounds).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0.0_f64.to_bits()),
        }
    }

    fn observe(&self, bounds: &[f64], value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = bounds.partition_point(|b| *b < seconds);
        if let Some(count) = self.counts.get(bucket) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        // Finite and not negative: adding it never lowers the sum (at
        // worst it rounds to no change), and never makes it NaN.
        let nanos = value.as_nanos() as f64;
        let _ = self
            .sum_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |sum| {
                Some((f64::from_bits(sum) + nanos).to_bits())
            });
    }

    /// The sum of the observed durations, in seconds.
    #[cfg_attr(not(feature = "prometheus"), allow(dead_code))]
    pub(crate) fn sum_seconds(&self) -> f64 {
        f64::from_bits(self.sum_nanos.load(Ordering::Relaxed)) / 1e9
    }
}

/// The state of one policy.
#[derive(Debug)]
pub(crate) struct PolicyCells {
    /// Bit `index::layer(l)` is set once layer `l` reported for the policy.
    pub(crate) layers: AtomicU32,
    /// `SEEN_*` bits.
    pub(crate) sections: AtomicU32,
    pub(crate) admitted: [AtomicU64; LAYERS],
    /// Indexed by `layer * OUTCOMES + outcome`.
    pub(crate) requests: [AtomicU64; LAYERS * OUTCOMES],
    /// Indexed by `layer * REASONS + reason`.
    pub(crate) rejections: [AtomicU64; LAYERS * REASONS],
    pub(crate) durations: [OnceLock<Histogram>; LAYERS],
    pub(crate) panics: AtomicU64,
    /// By whose deadline ran out: the policy's, the caller's.
    pub(crate) timeouts: [AtomicU64; 2],
    pub(crate) fallbacks: [AtomicU64; TRIGGERS],
    /// Index of the breaker's state, or `STATE_UNKNOWN`.
    pub(crate) state: AtomicU8,
    /// Indexed by `from * STATES + to`.
    pub(crate) transitions: [AtomicU64; STATES * STATES],
    /// Shadow-mode transitions, indexed by the state entered.
    pub(crate) shadow_transitions: [AtomicU64; STATES],
    /// What a breaker in metrics-only mode would be in, plus one (`0`:
    /// none reported).
    shadow_state: AtomicU8,
    /// The last transition and when it happened, in one word so that a
    /// snapshot never pairs one transition with another's time:
    /// `from << 60 | to << 56 | reason << 52 | microseconds since the
    /// store's start`, or [`NEVER`].
    pub(crate) last_transition: AtomicU64,
    pub(crate) failure_rate: AtomicU64,
    pub(crate) slow_rate: AtomicU64,
    pub(crate) window_calls: AtomicU64,
    pub(crate) in_flight: AtomicI64,
    /// Read with [`limit`](Self::limit); see [`crate::limit_word`].
    limit: AtomicU64,
    pub(crate) keys: AtomicU64,
    pub(crate) key_cap: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) overflow: AtomicU64,
    /// Malformed headers, by header name.
    pub(crate) malformed: NameMap<AtomicU64>,
    /// The recent window's length in seconds, if the sink keeps one.
    window: Option<u32>,
    /// Made on the first event it counts: a policy that never rejects,
    /// times out, panics or falls back keeps none, however long the
    /// window (a window of 3,600 s is about 340 KiB).
    recent: OnceLock<RateWindow>,
}

impl PolicyCells {
    fn new(window: Option<u32>) -> Self {
        Self {
            layers: AtomicU32::new(0),
            sections: AtomicU32::new(0),
            admitted: [const { AtomicU64::new(0) }; LAYERS],
            requests: [const { AtomicU64::new(0) }; LAYERS * OUTCOMES],
            rejections: [const { AtomicU64::new(0) }; LAYERS * REASONS],
            durations: [const { OnceLock::new() }; LAYERS],
            panics: AtomicU64::new(0),
            timeouts: [const { AtomicU64::new(0) }; 2],
            fallbacks: [const { AtomicU64::new(0) }; TRIGGERS],
            state: AtomicU8::new(STATE_UNKNOWN),
            transitions: [const { AtomicU64::new(0) }; STATES * STATES],
            shadow_transitions: [const { AtomicU64::new(0) }; STATES],
            shadow_state: AtomicU8::new(0),
            last_transition: AtomicU64::new(NEVER),
            failure_rate: AtomicU64::new(0),
            slow_rate: AtomicU64::new(0),
            window_calls: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            limit: AtomicU64::new(0),
            keys: AtomicU64::new(0),
            key_cap: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            // Headers palisade reads are few and static.
            malformed: NameMap::new(4, 64),
            window,
            recent: OnceLock::new(),
        }
    }

    #[inline]
    fn see_layer(&self, layer: LayerKind) {
        let bit = 1 << index::layer(layer);
        // Read first: after the first event the bit is set and the shared
        // line is not written again.
        if self.layers.load(Ordering::Relaxed) & bit == 0 {
            self.layers.fetch_or(bit, Ordering::Relaxed);
        }
    }

    #[inline]
    fn see_section(&self, bits: u32) {
        if self.sections.load(Ordering::Relaxed) & bits != bits {
            self.sections.fetch_or(bits, Ordering::Relaxed);
        }
    }

    /// A breaker reported activity: if no transition was seen yet, it is in
    /// the state every breaker starts in.
    #[inline]
    fn see_breaker(&self) {
        if self.state.load(Ordering::Relaxed) == STATE_UNKNOWN {
            let closed = index::state(CircuitState::Closed) as u8;
            let _ = self.state.compare_exchange(
                STATE_UNKNOWN,
                closed,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    /// Whether `layer` reported for this policy.
    pub(crate) fn has_layer(&self, layer: LayerKind) -> bool {
        self.layers.load(Ordering::Relaxed) & (1 << index::layer(layer)) != 0
    }

    /// Whether every bit of `bits` is set in `sections`.
    pub(crate) fn has_section(&self, bits: u32) -> bool {
        self.sections.load(Ordering::Relaxed) & bits == bits
    }

    /// The breaker's state, once known.
    pub(crate) fn breaker_state(&self) -> Option<CircuitState> {
        CircuitState::ALL
            .get(usize::from(self.state.load(Ordering::Acquire)))
            .copied()
    }

    /// What a breaker in metrics-only mode would be in, once known.
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    pub(crate) fn shadow_state(&self) -> Option<CircuitState> {
        let shadow = usize::from(self.shadow_state.load(Ordering::Acquire));
        shadow
            .checked_sub(1)
            .and_then(|i| CircuitState::ALL.get(i))
            .copied()
    }

    /// The last transition (from, to, reason) and when it happened, as
    /// time since the store's start.
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    pub(crate) fn last_transition(
        &self,
    ) -> Option<(
        CircuitState,
        CircuitState,
        palisade_core::TransitionReason,
        Duration,
    )> {
        let word = self.last_transition.load(Ordering::Acquire);
        if word == NEVER {
            return None;
        }
        let field = |shift: u32| (word >> (TIME_BITS + shift)) as usize & 0xf;
        let from = CircuitState::ALL.get(field(8))?;
        let to = CircuitState::ALL.get(field(4))?;
        let reason = palisade_core::TransitionReason::ALL.get(field(0))?;
        let micros = word & ((1 << TIME_BITS) - 1);
        Some((*from, *to, *reason, Duration::from_micros(micros)))
    }

    #[inline]
    fn count_recent(&self, timeline: Option<&Timeline>, category: usize) {
        if let (Some(seconds), Some(timeline)) = (self.window, timeline) {
            self.recent
                .get_or_init(|| RateWindow::new(seconds, RECENT_CATEGORIES))
                .record(category, timeline.elapsed().as_secs());
        }
    }

    /// The concurrency limit last reported.
    pub(crate) fn limit(&self) -> u64 {
        limit_word::limit(&self.limit)
    }

    /// Events of `category` counted in the recent window's `second`.
    #[cfg_attr(not(feature = "snapshot"), allow(dead_code))]
    pub(crate) fn recent_count(&self, category: usize, second: u64) -> u64 {
        self.recent
            .get()
            .map_or(0, |window| window.count(category, second))
    }
}

/// The state of one task group.
#[derive(Debug)]
pub(crate) struct GroupCells {
    pub(crate) live: AtomicI64,
    pub(crate) started: AtomicU64,
    pub(crate) ended: [AtomicU64; TASK_ENDS],
    pub(crate) panics: AtomicU64,
    pub(crate) restarts: AtomicU64,
    pub(crate) gave_up: AtomicU64,
}

impl GroupCells {
    fn new() -> Self {
        Self {
            live: AtomicI64::new(0),
            started: AtomicU64::new(0),
            ended: [const { AtomicU64::new(0) }; TASK_ENDS],
            panics: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
            gave_up: AtomicU64::new(0),
        }
    }
}

/// The state of one offload queue.
#[derive(Debug)]
pub(crate) struct QueueCells {
    pub(crate) dropped: [AtomicU64; DROP_REASONS],
    pub(crate) delivered: AtomicU64,
    pub(crate) attempt_failures: [AtomicU64; ATTEMPT_FAILURES],
}

impl QueueCells {
    fn new() -> Self {
        Self {
            dropped: [const { AtomicU64::new(0) }; DROP_REASONS],
            delivered: AtomicU64::new(0),
            attempt_failures: [const { AtomicU64::new(0) }; ATTEMPT_FAILURES],
        }
    }
}

#[inline]
fn bump(cell: Option<&AtomicU64>) {
    if let Some(cell) = cell {
        cell.fetch_add(1, Ordering::Relaxed);
    }
}

impl Store {
    pub(crate) fn new(config: StoreConfig) -> Self {
        let timeline = config.window.map(|(clock, seconds)| Timeline {
            start: clock.now(),
            clock,
            seconds,
        });
        Self {
            policies: NameMap::new(64, config.max_names),
            groups: NameMap::new(16, config.max_names),
            queues: NameMap::new(16, config.max_names),
            buckets: config.buckets,
            timeline,
        }
    }

    #[inline]
    fn policy(&self, name: &str) -> Option<&PolicyCells> {
        let window = self.timeline.as_ref().map(|t| t.seconds);
        self.policies
            .get_or_insert_with(name, || PolicyCells::new(window))
    }

    /// Events dropped because their name was new and a map was full.
    pub(crate) fn untracked(&self) -> u64 {
        self.policies.refused() + self.groups.refused() + self.queues.refused()
    }

    /// Records one event.
    pub(crate) fn record(&self, event: &Event<'_>) {
        match *event {
            Event::Admitted { policy, layer } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(layer);
                bump(p.admitted.get(index::layer(layer)));
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
                p.see_layer(layer);
                let r = index::reason(reason);
                bump(p.rejections.get(index::layer(layer) * REASONS + r));
                p.count_recent(self.timeline.as_ref(), r);
            }
            Event::Completed {
                policy,
                layer,
                outcome,
                latency,
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(layer);
                let l = index::layer(layer);
                bump(p.requests.get(l * OUTCOMES + index::outcome(outcome)));
                if let Some(latency) = latency
                    && !self.buckets.is_empty()
                    && let Some(h) = p.durations.get(l)
                {
                    h.get_or_init(|| Histogram::new(self.buckets.len()))
                        .observe(&self.buckets, latency);
                }
                if layer == LayerKind::CircuitBreaker {
                    p.see_breaker();
                }
            }
            Event::PanicCaught { policy, .. } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::PanicCatch);
                p.panics.fetch_add(1, Ordering::Relaxed);
                p.count_recent(self.timeline.as_ref(), RECENT_PANICS);
            }
            Event::TimedOut { policy, caller, .. } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::Timeout);
                p.timeouts[usize::from(caller)].fetch_add(1, Ordering::Relaxed);
                // A caller's deadline says nothing of the service's health:
                // only the policy's own count in the recent window.
                if !caller {
                    p.count_recent(self.timeline.as_ref(), RECENT_TIMEOUTS);
                }
            }
            Event::StateChanged {
                policy,
                from,
                to,
                reason,
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::CircuitBreaker);
                let (f, t) = (index::state(from), index::state(to));
                p.state.store(t as u8, Ordering::Release);
                // Metrics-only mode starts its shadow machine closed.
                let shadow = if to == CircuitState::MetricsOnly {
                    index::state(CircuitState::Closed) as u8 + 1
                } else {
                    0
                };
                p.shadow_state.store(shadow, Ordering::Release);
                bump(p.transitions.get(f * STATES + t));
                if let Some(timeline) = &self.timeline {
                    let r = index::transition_reason(reason);
                    let kind = ((f as u64) << 8) | ((t as u64) << 4) | r as u64;
                    let micros = u64::try_from(timeline.elapsed().as_micros())
                        .unwrap_or(u64::MAX)
                        .min((1 << TIME_BITS) - 1);
                    p.last_transition
                        .store(kind << TIME_BITS | micros, Ordering::Release);
                }
            }
            Event::ShadowStateChanged { policy, to, .. } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::CircuitBreaker);
                bump(p.shadow_transitions.get(index::state(to)));
                p.shadow_state
                    .store(index::state(to) as u8 + 1, Ordering::Release);
            }
            Event::BreakerRates {
                policy,
                failure_rate,
                slow_rate,
                calls,
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::CircuitBreaker);
                p.see_breaker();
                p.failure_rate
                    .store(failure_rate.to_bits(), Ordering::Relaxed);
                p.slow_rate.store(slow_rate.to_bits(), Ordering::Relaxed);
                p.window_calls.store(calls, Ordering::Relaxed);
                p.see_section(SEEN_RATES);
            }
            Event::InFlightChanged {
                policy,
                layer,
                change,
                limit,
                ..
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(layer);
                p.in_flight.fetch_add(change.delta(), Ordering::Relaxed);
                limit_word::offer(&p.limit, limit as u64);
                p.see_section(SEEN_IN_FLIGHT | SEEN_LIMIT);
            }
            Event::LimitChanged { policy, to, .. } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::Bulkhead);
                limit_word::moved(&p.limit, to as u64);
                p.see_section(SEEN_LIMIT | SEEN_ADAPTIVE);
            }
            Event::FallbackUsed { policy, trigger } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::Fallback);
                bump(p.fallbacks.get(index::trigger(trigger)));
                // An answer for a rejection repeats what the rejection's
                // own event said (a caller's short deadline, a client over
                // its rate): only those for the service's errors and
                // responses count in the recent window, and toward health.
                if trigger != palisade_core::FallbackTrigger::Rejection {
                    p.count_recent(self.timeline.as_ref(), RECENT_FALLBACKS);
                }
            }
            Event::KeysTracked { policy, keys, cap } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::RateLimit);
                p.keys.store(keys as u64, Ordering::Relaxed);
                p.key_cap.store(cap as u64, Ordering::Relaxed);
                p.see_section(SEEN_KEYS);
            }
            Event::KeysEvicted { policy, count } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::RateLimit);
                // The count comes from the event: saturate rather than
                // let a counter wrap and go down.
                let count = count as u64;
                let _ = p
                    .evictions
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                        Some(total.saturating_add(count))
                    });
                p.see_section(SEEN_KEY_CHURN);
            }
            Event::OverflowUsed { policy } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(LayerKind::RateLimit);
                p.overflow.fetch_add(1, Ordering::Relaxed);
                p.see_section(SEEN_KEY_CHURN);
            }
            Event::MalformedHeader {
                policy,
                layer,
                header,
            } => {
                let Some(p) = self.policy(policy) else { return };
                p.see_layer(layer);
                bump(p.malformed.get_or_insert_with(header, || AtomicU64::new(0)));
            }
            Event::TaskStarted { group, .. } => {
                let Some(g) = self.groups.get_or_insert_with(group, GroupCells::new) else {
                    return;
                };
                g.live.fetch_add(1, Ordering::Relaxed);
                g.started.fetch_add(1, Ordering::Relaxed);
            }
            Event::TaskEnded { group, end, .. } => {
                let Some(g) = self.groups.get_or_insert_with(group, GroupCells::new) else {
                    return;
                };
                g.live.fetch_sub(1, Ordering::Relaxed);
                bump(g.ended.get(index::task_end(end)));
            }
            Event::TaskPanicked { group, .. } => {
                let Some(g) = self.groups.get_or_insert_with(group, GroupCells::new) else {
                    return;
                };
                g.panics.fetch_add(1, Ordering::Relaxed);
            }
            Event::TaskRestarted { group, .. } => {
                let Some(g) = self.groups.get_or_insert_with(group, GroupCells::new) else {
                    return;
                };
                g.restarts.fetch_add(1, Ordering::Relaxed);
            }
            Event::TaskGaveUp { group, .. } => {
                let Some(g) = self.groups.get_or_insert_with(group, GroupCells::new) else {
                    return;
                };
                g.gave_up.fetch_add(1, Ordering::Relaxed);
            }
            Event::OffloadDropped { queue, reason } => {
                let Some(q) = self.queues.get_or_insert_with(queue, QueueCells::new) else {
                    return;
                };
                bump(q.dropped.get(index::drop_reason(reason)));
            }
            Event::OffloadDelivered { queue, .. } => {
                let Some(q) = self.queues.get_or_insert_with(queue, QueueCells::new) else {
                    return;
                };
                q.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Event::OffloadAttemptFailed { queue, cause, .. } => {
                let Some(q) = self.queues.get_or_insert_with(queue, QueueCells::new) else {
                    return;
                };
                bump(q.attempt_failures.get(index::attempt_failure(cause)));
            }
            // A kind of event added to palisade-core later: ignored until
            // this store learns it.
            _ => {}
        }
    }
}

//! The current state of every named policy, task group and offload queue.
//!
//! [`SnapshotSink`] is a [`MetricsSink`] that keeps, per policy, the
//! breaker's state and rates, the bulkhead's in-flight count and limit
//! (adaptive or not), the rate limiter's tracked keys, counts of requests by
//! outcome, rejections by reason, panics, timeouts and fallback answers; per
//! task group, live tasks, panics and restarts; per offload queue, work
//! delivered and dropped by reason. [`SnapshotSink::snapshot`] reads it all
//! into a [`Snapshot`] that serialises to JSON, which the
//! [`dashboard`](crate::dashboard) serves.
//!
//! Rejections, panics, timeouts and fallback answers also have a *recent*
//! count and a per-second rate over a sliding window (10 seconds unless
//! [`window`](SnapshotSinkBuilder::window) says otherwise), read from the
//! sink's [`Clock`] so tests drive it with virtual time. Each policy gets a
//! [`Health`] from what it reports:
//!
//! - `critical`: its breaker is open or forced open;
//! - `degraded`: its breaker is half-open, its bulkhead is full, or within
//!   the window it rejected, panicked, timed out on its own deadline, or a
//!   fallback answered one of the service's errors or responses (an answer
//!   for a rejection, and a timeout on a caller's shorter deadline, say
//!   nothing more of the service's health);
//! - `ok`: none of that (a metrics-only breaker that would be open is a
//!   concern, not a change of health).
//!
//! A breaker is known from its first transition, or from its first
//! admission, completion or rates report, which makes it `closed` (the state
//! every breaker starts in).
//!
//! Recording is cheap: a lock-free name lookup, then relaxed atomic updates
//! in cells allocated when the name was first seen. Only events off the
//! happy path read the clock: those counted in the recent window
//! (rejections, panics, timeouts on the policy's own deadline, fallbacks
//! for the service's errors and responses), the first of which allocates
//! a policy's window, and breaker transitions, for their time. A header's first malformed value under a policy allocates its
//! counter; no other event allocates.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{Event, LayerKind, ManualClock, Metrics, RejectReason};
//! use palisade_metrics::snapshot::{Health, SnapshotSink};
//!
//! let clock = ManualClock::new();
//! let sink = SnapshotSink::builder()
//!     .clock(clock.clock())
//!     .window(Duration::from_secs(10))
//!     .build()
//!     .unwrap();
//! let metrics = Metrics::new(sink.clone());
//!
//! clock.advance(Duration::from_secs(30));
//! for _ in 0..20 {
//!     metrics.emit(&Event::Rejected {
//!         policy: "search",
//!         layer: LayerKind::RateLimit,
//!         reason: RejectReason::RateLimited,
//!     });
//! }
//!
//! let snapshot = sink.snapshot();
//! let search = &snapshot.policies[0];
//! assert_eq!(search.name, "search");
//! assert_eq!(search.health, Health::Degraded);
//! assert_eq!(search.rejections.total, 20);
//! assert_eq!(search.rejections.per_second, 2.0);
//!
//! let json = serde_json::to_string(&snapshot).unwrap();
//! assert!(json.contains(r#""reason":"rate_limited""#));
//! ```

mod model;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_core::config::Validate;
use palisade_core::{
    AttemptFailure, CircuitState, Clock, ConfigError, DropReason, Event, FallbackTrigger,
    LayerKind, MetricsSink, Outcome, RejectReason, TaskEnd,
};

pub use self::model::{
    BreakerSnapshot, BulkheadSnapshot, DropCount, EndCount, Fallbacks, HeaderCount, Health,
    LayerCount, LayerRequests, OffloadQueueSnapshot, PolicySnapshot, RateLimitSnapshot,
    ReasonCount, Recent, Rejections, Snapshot, Summary, TaskGroupSnapshot, Transition,
    TriggerCount,
};
use crate::config;
use crate::index::{self, OUTCOMES, REASONS};
use crate::store::{self, PolicyCells, Store, StoreConfig};

const DEFAULT_WINDOW: Duration = Duration::from_secs(10);
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// A [`MetricsSink`] that keeps the current state of every policy, task
/// group and offload queue; see the [module docs](self).
///
/// Cloning is cheap and clones share their state: keep one clone to read
/// snapshots and give another to the layers.
#[derive(Clone)]
pub struct SnapshotSink {
    store: Arc<Store>,
}

impl SnapshotSink {
    /// A sink on tokio's clock with a 10-second window, tracking up to 1024
    /// policies, task groups and offload queues each.
    pub fn new() -> Self {
        Self::from_config(StoreConfig {
            buckets: Box::default(),
            window: Some((Clock::tokio(), DEFAULT_WINDOW.as_secs() as u32)),
            max_names: config::DEFAULT_MAX_NAMES,
        })
    }

    /// A builder to choose the clock, the window and the name limit.
    pub fn builder() -> SnapshotSinkBuilder {
        SnapshotSinkBuilder {
            clock: Clock::tokio(),
            window: DEFAULT_WINDOW,
            max_names: config::DEFAULT_MAX_NAMES,
        }
    }

    fn from_config(config: StoreConfig) -> Self {
        Self {
            store: Arc::new(Store::new(config)),
        }
    }

    /// The state of everything seen so far.
    pub fn snapshot(&self) -> Snapshot {
        let store = &*self.store;
        let (elapsed, window) = match &store.timeline {
            Some(t) => (t.elapsed(), u64::from(t.seconds)),
            None => (Duration::ZERO, 0),
        };
        let clock = Now::new(elapsed, window);
        let mut policies: Vec<PolicySnapshot> = store
            .policies
            .entries()
            .into_iter()
            .map(|(name, cells)| policy_snapshot(name, cells, &clock))
            .collect();
        policies.sort_by(|a, b| {
            b.health
                .cmp(&a.health)
                .then(b.rejections.per_second.total_cmp(&a.rejections.per_second))
                .then_with(|| a.name.cmp(&b.name))
        });
        let mut summary = Summary {
            policies: policies.len(),
            ..Summary::default()
        };
        for p in &policies {
            match p.health {
                Health::Critical => summary.critical += 1,
                Health::Degraded => summary.degraded += 1,
                Health::Ok => summary.ok += 1,
            }
        }
        let task_groups = store
            .groups
            .entries()
            .into_iter()
            .map(|(name, g)| TaskGroupSnapshot {
                name: name.to_owned(),
                live: g.live.load(Ordering::Relaxed),
                started: load(&g.started),
                panics: load(&g.panics),
                restarts: load(&g.restarts),
                gave_up: load(&g.gave_up),
                ended: TaskEnd::ALL
                    .iter()
                    .zip(&g.ended)
                    .filter_map(|(end, cell)| {
                        let total = load(cell);
                        (total > 0).then_some(EndCount {
                            end: end.as_str(),
                            total,
                        })
                    })
                    .collect(),
            })
            .collect();
        let offload_queues = store
            .queues
            .entries()
            .into_iter()
            .map(|(name, q)| {
                let dropped: Vec<DropCount> = DropReason::ALL
                    .iter()
                    .zip(&q.dropped)
                    .filter_map(|(reason, cell)| {
                        let total = load(cell);
                        (total > 0).then_some(DropCount {
                            reason: reason.as_str(),
                            total,
                        })
                    })
                    .collect();
                OffloadQueueSnapshot {
                    name: name.to_owned(),
                    delivered: load(&q.delivered),
                    dropped_total: dropped.iter().map(|d| d.total).sum(),
                    dropped,
                    failed_attempts: q.attempt_failures.iter().map(load).sum(),
                    panicked_attempts: q
                        .attempt_failures
                        .get(index::attempt_failure(AttemptFailure::Panic))
                        .map_or(0, load),
                }
            })
            .collect();
        Snapshot {
            taken_at_unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            uptime_seconds: elapsed.as_secs_f64(),
            window_seconds: window,
            summary,
            policies,
            task_groups,
            offload_queues,
            untracked_events: store.untracked(),
        }
    }
}

impl Default for SnapshotSink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SnapshotSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SnapshotSink")
            .field("policies", &self.store.policies.len())
            .field("task_groups", &self.store.groups.len())
            .field("offload_queues", &self.store.queues.len())
            .finish()
    }
}

impl MetricsSink for SnapshotSink {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        self.store.record(event);
    }
}

/// Builds a [`SnapshotSink`].
#[derive(Clone, Debug)]
#[must_use]
pub struct SnapshotSinkBuilder {
    clock: Clock,
    window: Duration,
    max_names: usize,
}

impl SnapshotSinkBuilder {
    /// The clock behind recent rates and transition times; tokio's clock by
    /// default. Tests pass [`ManualClock::clock`](palisade_core::ManualClock::clock)
    /// or pause tokio's time.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The window of recent counts and per-second rates, 1 second to 1
    /// hour, rounded up to whole seconds; 10 seconds by default.
    pub fn window(mut self, window: Duration) -> Self {
        self.window = window;
        self
    }

    /// The most policies, task groups and offload queues (each) the sink
    /// tracks, 1 to 1 048 576; default 1024. Events of further names are
    /// dropped and counted in [`Snapshot::untracked_events`].
    pub fn max_names(mut self, max: usize) -> Self {
        self.max_names = max;
        self
    }

    /// The sink, or the first invalid setting.
    pub fn build(self) -> Result<SnapshotSink, ConfigError> {
        let (layer, name) = config::checker("snapshot sink");
        let check = Validate::new(layer, &name);
        let window = check.in_range("window", self.window, Duration::from_secs(1), MAX_WINDOW)?;
        let seconds = window.as_secs() + u64::from(window.subsec_nanos() > 0);
        Ok(SnapshotSink::from_config(StoreConfig {
            buckets: Box::default(),
            window: Some((self.clock, u32::try_from(seconds).unwrap_or(3600))),
            max_names: config::max_names(&check, self.max_names)?,
        }))
    }
}

fn load(cell: &AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

/// The moment a snapshot reads the windows at.
struct Now {
    second: u64,
    elapsed: Duration,
    /// Seconds the window covers now: its whole seconds plus the current
    /// partial one, never more than the uptime, at least one.
    covered: f64,
    window: u64,
}

impl Now {
    fn new(elapsed: Duration, window: u64) -> Self {
        let secs = elapsed.as_secs_f64();
        let span = window as f64 + secs.fract();
        Self {
            second: elapsed.as_secs(),
            elapsed,
            covered: span.min(secs).max(1.0),
            window,
        }
    }

    fn recent(&self, cells: &PolicyCells, category: usize, total: u64) -> Recent {
        let recent = cells.recent_count(category, self.second);
        Recent {
            total,
            recent,
            per_second: recent as f64 / self.covered,
        }
    }
}

fn policy_snapshot(name: &str, p: &PolicyCells, now: &Now) -> PolicySnapshot {
    let layers: Vec<&'static str> = LayerKind::ALL
        .iter()
        .filter(|l| p.has_layer(**l))
        .map(|l| l.as_str())
        .collect();

    let breaker = p.breaker_state().map(|state| {
        let rates = p.has_section(store::SEEN_RATES);
        BreakerSnapshot {
            state: state.as_str(),
            failure_rate: rates.then(|| f64::from_bits(load(&p.failure_rate))),
            slow_rate: rates.then(|| f64::from_bits(load(&p.slow_rate))),
            window_calls: rates.then(|| load(&p.window_calls)),
            transitions: p.transitions.iter().map(load).sum(),
            last_transition: p
                .last_transition()
                .map(|(from, to, reason, at)| Transition {
                    from: from.as_str(),
                    to: to.as_str(),
                    reason: reason.as_str(),
                    seconds_ago: now.elapsed.saturating_sub(at).as_secs_f64(),
                }),
            shadow_state: (state == CircuitState::MetricsOnly)
                .then(|| p.shadow_state())
                .flatten()
                .map(CircuitState::as_str),
        }
    });

    let bulkhead =
        (p.has_section(store::SEEN_IN_FLIGHT) || p.has_section(store::SEEN_LIMIT)).then(|| {
            BulkheadSnapshot {
                in_flight: p.in_flight.load(Ordering::Relaxed),
                limit: p.has_section(store::SEEN_LIMIT).then(|| p.limit()),
                adaptive: p.has_section(store::SEEN_ADAPTIVE),
            }
        });

    let rate_limit = (p.has_section(store::SEEN_KEYS) || p.has_section(store::SEEN_KEY_CHURN))
        .then(|| {
            let keys = p.has_section(store::SEEN_KEYS);
            RateLimitSnapshot {
                keys: keys.then(|| load(&p.keys)),
                key_cap: keys.then(|| load(&p.key_cap)),
                evicted: load(&p.evictions),
                overflow: load(&p.overflow),
            }
        });

    let requests = LayerKind::ALL
        .iter()
        .enumerate()
        .filter_map(|(l, layer)| {
            let count = |o: Outcome| {
                let i = Outcome::ALL.iter().position(|x| *x == o).unwrap_or(0);
                p.requests.get(l * OUTCOMES + i).map_or(0, load)
            };
            let total: u64 = (0..OUTCOMES)
                .map(|o| p.requests.get(l * OUTCOMES + o).map_or(0, load))
                .sum();
            (total > 0).then(|| LayerRequests {
                layer: layer.as_str(),
                success: count(Outcome::Success),
                failure: count(Outcome::Failure),
                ignored: count(Outcome::Ignored),
                cancelled: count(Outcome::Cancelled),
                total,
            })
        })
        .collect();

    let admitted = LayerKind::ALL
        .iter()
        .zip(&p.admitted)
        .filter_map(|(layer, cell)| {
            let total = load(cell);
            (total > 0).then_some(LayerCount {
                layer: layer.as_str(),
                total,
            })
        })
        .collect();

    let mut by_reason: Vec<ReasonCount> = RejectReason::ALL
        .iter()
        .enumerate()
        .filter_map(|(r, reason)| {
            let total: u64 = (0..LayerKind::ALL.len())
                .map(|l| p.rejections.get(l * REASONS + r).map_or(0, load))
                .sum();
            (total > 0).then(|| {
                let recent = now.recent(p, r, total);
                ReasonCount {
                    reason: reason.as_str(),
                    total,
                    recent: recent.recent,
                    per_second: recent.per_second,
                }
            })
        })
        .collect();
    by_reason.sort_by(|a, b| b.recent.cmp(&a.recent).then(b.total.cmp(&a.total)));
    let rejections = {
        let total = by_reason.iter().map(|r| r.total).sum();
        let recent: u64 = by_reason.iter().map(|r| r.recent).sum();
        Rejections {
            total,
            recent,
            per_second: recent as f64 / now.covered,
            by_reason,
        }
    };

    let panics = now.recent(p, store::RECENT_PANICS, load(&p.panics));
    let timeouts = now.recent(p, store::RECENT_TIMEOUTS, load(&p.timeouts[0]));
    let caller_timeouts = load(&p.timeouts[1]);
    let by_trigger: Vec<TriggerCount> = FallbackTrigger::ALL
        .iter()
        .zip(&p.fallbacks)
        .filter_map(|(trigger, cell)| {
            let total = load(cell);
            (total > 0).then_some(TriggerCount {
                trigger: trigger.as_str(),
                total,
            })
        })
        .collect();
    let fallback_recent = now.recent(
        p,
        store::RECENT_FALLBACKS,
        by_trigger.iter().map(|t| t.total).sum(),
    );
    let fallbacks = Fallbacks {
        total: fallback_recent.total,
        recent: fallback_recent.recent,
        per_second: fallback_recent.per_second,
        by_trigger,
    };

    let malformed_headers = p
        .malformed
        .entries()
        .into_iter()
        .map(|(header, cell)| HeaderCount {
            header: header.to_owned(),
            total: load(cell),
        })
        .collect();

    let (health, concerns) = assess(
        breaker.as_ref(),
        bulkhead.as_ref(),
        &rejections,
        &panics,
        &timeouts,
        &fallbacks,
        now.window,
    );

    PolicySnapshot {
        name: name.to_owned(),
        health,
        concerns,
        layers,
        breaker,
        bulkhead,
        rate_limit,
        requests,
        admitted,
        rejections,
        panics,
        timeouts,
        caller_timeouts,
        fallbacks,
        malformed_headers,
    }
}

fn assess(
    breaker: Option<&BreakerSnapshot>,
    bulkhead: Option<&BulkheadSnapshot>,
    rejections: &Rejections,
    panics: &Recent,
    timeouts: &Recent,
    fallbacks: &Fallbacks,
    window: u64,
) -> (Health, Vec<String>) {
    let mut concerns: Vec<(Health, String)> = Vec::new();
    let mut worse = |level: Health, concern: String| concerns.push((level, concern));
    if let Some(b) = breaker {
        let state = CircuitState::ALL.iter().find(|s| s.as_str() == b.state);
        match state {
            Some(CircuitState::Open | CircuitState::ForcedOpen) => {
                worse(Health::Critical, format!("circuit {}", describe(state)));
            }
            Some(CircuitState::HalfOpen) => {
                worse(Health::Degraded, "circuit half-open, probing".to_owned());
            }
            _ => {}
        }
        // Shadow mode enforces nothing: said, without changing health.
        if let Some(shadow) = b.shadow_state
            && shadow != CircuitState::Closed.as_str()
        {
            worse(
                Health::Ok,
                format!("metrics-only breaker would be {}", shadow.replace('_', "-")),
            );
        }
    }
    if let Some(b) = bulkhead
        && let Some(limit) = b.limit
        && limit > 0
        && b.in_flight >= 0
        && b.in_flight as u64 >= limit
    {
        worse(
            Health::Degraded,
            format!("bulkhead full ({}/{limit} in flight)", b.in_flight),
        );
    }
    if rejections.recent > 0 {
        let top = rejections
            .by_reason
            .first()
            .and_then(|r| RejectReason::ALL.iter().find(|x| x.as_str() == r.reason))
            .map_or("", |r| r.describe());
        worse(
            Health::Degraded,
            format!("{:.1} rejections/s, mostly {top}", rejections.per_second),
        );
    }
    for (count, one, many) in [
        (panics.recent, "panic", "panics"),
        (timeouts.recent, "timeout", "timeouts"),
        (fallbacks.recent, "fallback answer", "fallback answers"),
    ] {
        if count > 0 {
            let noun = if count == 1 { one } else { many };
            worse(
                Health::Degraded,
                format!("{count} {noun} in the last {window} s"),
            );
        }
    }
    // Worst first; a stable sort keeps the order above among equals.
    concerns.sort_by_key(|(level, _)| std::cmp::Reverse(*level));
    let health = concerns.first().map_or(Health::Ok, |(level, _)| *level);
    (health, concerns.into_iter().map(|(_, c)| c).collect())
}

fn describe(state: Option<&CircuitState>) -> &'static str {
    state.map_or("unknown", |s| s.describe())
}

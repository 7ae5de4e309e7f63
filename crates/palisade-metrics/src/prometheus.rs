//! palisade's metric families in a `prometheus-client` registry.
//!
//! [`PrometheusSink`] records every event in atomics, with no lock, and
//! registers a collector in your own [`Registry`], which renders the
//! [families](crate::names) at scrape time. Recording allocates only the
//! first time it meets a policy, task group or offload queue name (its
//! cells), a layer's first latency (that layer's histogram), and a
//! header's first malformed value under a policy (its counter); every
//! other event allocates nothing.
//!
//! Counters are rendered at 0 from the moment they can count, so that
//! `increase()` and `rate()` see their first event:
//!
//! - for every known task group and offload queue, each of its counters,
//!   by every `end`, `reason` and `cause`;
//! - for every known policy, `palisade_panics_total`,
//!   `palisade_timeouts_total` (both `deadline`s) and
//!   `palisade_fallbacks_total` (every `trigger`): those layers report
//!   nothing before their first fault, and one policy name usually covers
//!   a whole stack;
//! - for each layer that reported under the policy, only what that layer
//!   does: `palisade_admitted_total` and `palisade_rejections_total` with
//!   the reasons it refuses with (a rate limiter `rate_limited` and
//!   `missing_key`, a breaker `circuit_open` and `half_open_full`, a
//!   bulkhead `concurrency_full`, `queue_full` and `wait_timed_out`),
//!   `palisade_requests_total` by outcome for a breaker (a bulkhead
//!   reports outcomes only with an adaptive limit, and its series, every
//!   outcome, appear with its first), the rate limiter's evictions and
//!   overflow, and the
//!   breaker's own transitions (closed to open, open to half-open,
//!   half-open to closed or open); its shadow transitions once it entered
//!   metrics-only mode.
//!
//! Any other label combination (an operator's transition, a header) and
//! the gauges appear once they have something to show (a policy without a
//! rate limiter has no `palisade_ratelimit_keys` series), and:
//!
//! - `palisade_breaker_state{policy,state}` has one series per
//!   [`CircuitState`] once the breaker is known, and exactly one of them is
//!   1 in every scrape, because the collector renders them all from one
//!   atomic state. A breaker is known from its first transition, or from
//!   its first admission, completion or rates report, which makes it
//!   `closed` (the state every breaker starts in);
//! - `palisade_request_duration_seconds{policy,layer}` is a histogram per
//!   layer that reported latencies, with the buckets of
//!   [`PrometheusSinkBuilder::duration_buckets`].
//!
//! [`render`] encodes a registry in the OpenMetrics text format, to serve
//! with [`CONTENT_TYPE`]; with the `dashboard` feature,
//! [`dashboard::metrics_route`](crate::dashboard) serves it on axum.
//!
//! # Example
//!
//! ```
//! use palisade_core::{Event, LayerKind, Metrics, RejectReason};
//! use palisade_metrics::prometheus::{self, PrometheusSink};
//! use prometheus_client::registry::Registry;
//!
//! let mut registry = Registry::default();
//! let sink = PrometheusSink::new();
//! sink.register(&mut registry);
//!
//! let metrics = Metrics::new(sink);
//! metrics.emit(&Event::Rejected {
//!     policy: "checkout",
//!     layer: LayerKind::RateLimit,
//!     reason: RejectReason::RateLimited,
//! });
//!
//! let text = prometheus::render(&registry);
//! assert!(text.contains(
//!     r#"palisade_rejections_total{policy="checkout",layer="rate_limit",reason="rate_limited"} 1"#
//! ));
//! ```

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use palisade_core::config::Validate;
use palisade_core::{
    AttemptFailure, CircuitState, ConfigError, DropReason, Event, FallbackTrigger, LayerKind,
    MetricsSink, Outcome, RejectReason, TaskEnd,
};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeGaugeValue, EncodeLabelSet, MetricEncoder, NoLabelSet,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::config;
use crate::index::{self, OUTCOMES, REASONS, STATES};
use crate::names::{self, Family, Kind};
use crate::store::{self, Store, StoreConfig};

/// The content type of [`render`]'s output (OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Encodes `registry` in the OpenMetrics text format, ending with `# EOF`.
pub fn render(registry: &Registry) -> String {
    let mut text = String::with_capacity(4096);
    // Writing into a String cannot fail; a collector that fails leaves the
    // families rendered so far.
    let _ = prometheus_client::encoding::text::encode(&mut text, registry);
    text
}

/// A [`MetricsSink`] that feeds palisade's families into a
/// `prometheus-client` [`Registry`]; see the [module docs](self).
///
/// Cloning is cheap and clones share their state.
#[derive(Clone)]
pub struct PrometheusSink {
    store: Arc<Store>,
}

impl PrometheusSink {
    /// A sink with the default duration buckets (1 ms to 10 s) that tracks
    /// up to 1024 policies, task groups and offload queues each.
    pub fn new() -> Self {
        Self::from_config(StoreConfig {
            buckets: store::DEFAULT_BUCKETS.into(),
            window: None,
            max_names: config::DEFAULT_MAX_NAMES,
        })
    }

    /// A builder to choose the duration buckets and the name limit.
    pub fn builder() -> PrometheusSinkBuilder {
        PrometheusSinkBuilder {
            buckets: store::DEFAULT_BUCKETS.to_vec(),
            max_names: config::DEFAULT_MAX_NAMES,
        }
    }

    fn from_config(config: StoreConfig) -> Self {
        Self {
            store: Arc::new(Store::new(config)),
        }
    }

    /// Registers this sink's collector in `registry`. Register it once per
    /// registry: twice would render every family twice.
    pub fn register(&self, registry: &mut Registry) {
        registry.register_collector(Box::new(self.collector()));
    }

    /// The collector that renders this sink's families, to register under
    /// a prefixed or labelled sub-registry of your choice.
    pub fn collector(&self) -> PrometheusCollector {
        PrometheusCollector {
            store: Arc::clone(&self.store),
        }
    }
}

impl Default for PrometheusSink {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for PrometheusSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusSink")
            .field("policies", &self.store.policies.len())
            .field("buckets", &self.store.buckets.len())
            .finish()
    }
}

impl MetricsSink for PrometheusSink {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        self.store.record(event);
    }
}

/// Builds a [`PrometheusSink`].
#[derive(Clone, Debug)]
#[must_use]
pub struct PrometheusSinkBuilder {
    buckets: Vec<f64>,
    max_names: usize,
}

impl PrometheusSinkBuilder {
    /// Upper bounds, in seconds, of the buckets of
    /// `palisade_request_duration_seconds` (a `+Inf` bucket is added). At
    /// most 64, finite, positive and strictly increasing. An empty list
    /// turns the histogram off.
    pub fn duration_buckets(mut self, bounds: impl IntoIterator<Item = f64>) -> Self {
        self.buckets = bounds.into_iter().collect();
        self
    }

    /// The most policies, task groups and offload queues (each) the sink
    /// tracks, 1 to 1 048 576; default 1024. Events of further names are
    /// dropped and counted in `palisade_untracked_events_total`.
    pub fn max_names(mut self, max: usize) -> Self {
        self.max_names = max;
        self
    }

    /// The sink, or the first invalid setting.
    pub fn build(self) -> Result<PrometheusSink, ConfigError> {
        let (layer, name) = config::checker("prometheus sink");
        let check = Validate::new(layer, &name);
        Ok(PrometheusSink::from_config(StoreConfig {
            buckets: config::buckets(&check, &self.buckets)?,
            window: None,
            max_names: config::max_names(&check, self.max_names)?,
        }))
    }
}

/// Renders a [`PrometheusSink`]'s families; made by
/// [`PrometheusSink::collector`].
pub struct PrometheusCollector {
    store: Arc<Store>,
}

impl fmt::Debug for PrometheusCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PrometheusCollector")
            .finish_non_exhaustive()
    }
}

static SECONDS: Unit = Unit::Seconds;

fn describe<'a>(
    encoder: &'a mut DescriptorEncoder<'_>,
    family: &'static Family,
) -> Result<MetricEncoder<'a>, fmt::Error> {
    // prometheus-client adds the `_total` and unit suffixes itself.
    let (name, unit, kind) = match family.kind {
        Kind::Counter => (
            family.name.strip_suffix("_total").unwrap_or(family.name),
            None,
            MetricType::Counter,
        ),
        Kind::Histogram => (
            family.name.strip_suffix("_seconds").unwrap_or(family.name),
            Some(&SECONDS),
            MetricType::Histogram,
        ),
        _ => (family.name, None, MetricType::Gauge),
    };
    encoder.encode_descriptor(name, family.help, unit, kind)
}

fn counter(m: &mut MetricEncoder<'_>, labels: &impl EncodeLabelSet, value: u64) -> fmt::Result {
    m.encode_family(labels)?
        .encode_counter::<NoLabelSet, _, u64>(&value, None)
}

fn gauge(
    m: &mut MetricEncoder<'_>,
    labels: &impl EncodeLabelSet,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    m.encode_family(labels)?.encode_gauge(&value)
}

fn load(cell: &std::sync::atomic::AtomicU64) -> u64 {
    cell.load(Ordering::Relaxed)
}

/// One counter per label value, each beside the `owner` label
/// (`("policy", name)`, `("queue", name)`, …): the cells are indexed like
/// the label enum's `ALL`. A value is rendered when `applies` says it can
/// occur for the owner (at 0 until its first event, so `increase()` sees
/// that event) or once its cell is non-zero.
fn counters_by(
    m: &mut MetricEncoder<'_>,
    owner: (&str, &str),
    key: &str,
    labels: impl IntoIterator<Item = &'static str>,
    cells: &[std::sync::atomic::AtomicU64],
    applies: impl Fn(usize) -> bool,
) -> fmt::Result {
    for (i, (label, cell)) in labels.into_iter().zip(cells).enumerate() {
        let v = load(cell);
        if v > 0 || applies(i) {
            counter(m, &[owner, (key, label)], v)?;
        }
    }
    Ok(())
}

/// Whether `layer` refuses requests with `reason`: the rejection series a
/// layer of a policy has, at 0, from the layer's first event. Timeouts and
/// panics have families of their own.
fn rejects(layer: LayerKind, reason: RejectReason) -> bool {
    use RejectReason as R;
    match layer {
        LayerKind::RateLimit => matches!(reason, R::RateLimited | R::MissingKey),
        LayerKind::CircuitBreaker => matches!(reason, R::CircuitOpen | R::HalfOpenFull),
        LayerKind::Bulkhead => {
            matches!(reason, R::ConcurrencyFull | R::QueueFull | R::WaitTimedOut)
        }
        _ => false,
    }
}

/// Whether `layer` admits requests: the layers that can refuse them.
fn admits(layer: LayerKind) -> bool {
    RejectReason::ALL.iter().any(|r| rejects(layer, *r))
}

/// Whether `layer` reports the outcome of every call it let through: a
/// breaker does; a bulkhead only with an adaptive limit, so its outcome
/// series appear with its first completion.
fn classifies(layer: LayerKind) -> bool {
    matches!(layer, LayerKind::CircuitBreaker)
}

/// The transitions a breaker makes on its own (the others are an
/// operator's), rendered at 0 once the breaker is known.
fn automatic(from: CircuitState, to: CircuitState) -> bool {
    use CircuitState as S;
    matches!(
        (from, to),
        (S::Closed, S::Open) | (S::Open, S::HalfOpen) | (S::HalfOpen, S::Closed | S::Open)
    )
}

/// The states a metrics-only breaker's shadow machine moves between.
fn shadow(state: CircuitState) -> bool {
    matches!(
        state,
        CircuitState::Closed | CircuitState::Open | CircuitState::HalfOpen
    )
}

impl Collector for PrometheusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let store = &*self.store;
        let policies = store.policies.entries();
        let groups = store.groups.entries();
        let queues = store.queues.entries();
        for family in names::ALL {
            let mut m = describe(&mut encoder, family)?;
            match family.name {
                names::ADMITTED_TOTAL => {
                    for (policy, p) in &policies {
                        let layers = LayerKind::ALL.iter().map(|l| l.as_str());
                        let applies = |l: usize| {
                            LayerKind::ALL
                                .get(l)
                                .is_some_and(|l| admits(*l) && p.has_layer(*l))
                        };
                        let owner = ("policy", *policy);
                        counters_by(&mut m, owner, "layer", layers, &p.admitted, applies)?;
                    }
                }
                names::REJECTIONS_TOTAL => {
                    for (policy, p) in &policies {
                        for (l, layer) in LayerKind::ALL.iter().enumerate() {
                            let seen = p.has_layer(*layer);
                            for (r, reason) in RejectReason::ALL.iter().enumerate() {
                                let v = p.rejections.get(l * REASONS + r).map_or(0, load);
                                if v > 0 || (seen && rejects(*layer, *reason)) {
                                    let labels = [
                                        ("policy", *policy),
                                        ("layer", layer.as_str()),
                                        ("reason", reason.as_str()),
                                    ];
                                    counter(&mut m, &labels, v)?;
                                }
                            }
                        }
                    }
                }
                names::REQUESTS_TOTAL => {
                    for (policy, p) in &policies {
                        for (l, layer) in LayerKind::ALL.iter().enumerate() {
                            let counts =
                                |o: usize| p.requests.get(l * OUTCOMES + o).map_or(0, load);
                            // Every outcome from the first on, so that the
                            // first failure is an increase from 0.
                            let seen = (classifies(*layer) && p.has_layer(*layer))
                                || (0..OUTCOMES).any(|o| counts(o) > 0);
                            for (o, outcome) in Outcome::ALL.iter().enumerate() {
                                let v = counts(o);
                                if v > 0 || seen {
                                    let labels = [
                                        ("policy", *policy),
                                        ("layer", layer.as_str()),
                                        ("outcome", outcome.as_str()),
                                    ];
                                    counter(&mut m, &labels, v)?;
                                }
                            }
                        }
                    }
                }
                names::REQUEST_DURATION_SECONDS => {
                    let mut buckets: Vec<(f64, u64)> = Vec::with_capacity(store.buckets.len() + 1);
                    for (policy, p) in &policies {
                        for (l, layer) in LayerKind::ALL.iter().enumerate() {
                            let Some(h) = p.durations.get(l).and_then(|h| h.get()) else {
                                continue;
                            };
                            buckets.clear();
                            let bounds = store.buckets.iter().copied().chain([f64::INFINITY]);
                            buckets.extend(bounds.zip(h.counts.iter().map(load)));
                            // The count is the sum of the buckets read, so
                            // the `+Inf` bucket always equals it.
                            let count = buckets.iter().map(|(_, c)| c).sum();
                            let sum = h.sum_seconds();
                            m.encode_family(&[("policy", *policy), ("layer", layer.as_str())])?
                                .encode_histogram::<NoLabelSet>(sum, count, &buckets, None)?;
                        }
                    }
                }
                // A panic-catch, timeout or fallback layer reports nothing
                // before its first fault: its counters are rendered for
                // every policy (one name covers a whole stack).
                names::PANICS_TOTAL => {
                    for (policy, p) in &policies {
                        counter(&mut m, &[("policy", *policy)], load(&p.panics))?;
                    }
                }
                names::TIMEOUTS_TOTAL => {
                    for (policy, p) in &policies {
                        for (caller, timeouts) in [false, true].into_iter().zip(&p.timeouts) {
                            let deadline = names::deadline(caller);
                            let labels = [("policy", *policy), ("deadline", deadline)];
                            counter(&mut m, &labels, load(timeouts))?;
                        }
                    }
                }
                names::FALLBACKS_TOTAL => {
                    for (policy, p) in &policies {
                        let triggers = FallbackTrigger::ALL.iter().map(|t| t.as_str());
                        counters_by(
                            &mut m,
                            ("policy", policy),
                            "trigger",
                            triggers,
                            &p.fallbacks,
                            |_| true,
                        )?;
                    }
                }
                names::BREAKER_STATE => {
                    for (policy, p) in &policies {
                        // One read: every series of this scrape agrees.
                        let Some(current) = p.breaker_state() else {
                            continue;
                        };
                        for state in CircuitState::ALL {
                            let v = i64::from(*state == current);
                            gauge(&mut m, &[("policy", *policy), ("state", state.as_str())], v)?;
                        }
                    }
                }
                names::BREAKER_TRANSITIONS_TOTAL => {
                    for (policy, p) in &policies {
                        let known = p.has_layer(LayerKind::CircuitBreaker);
                        for (f, from) in CircuitState::ALL.iter().enumerate() {
                            for (t, to) in CircuitState::ALL.iter().enumerate() {
                                let v = p.transitions.get(f * STATES + t).map_or(0, load);
                                if v > 0 || (known && automatic(*from, *to)) {
                                    let labels = [
                                        ("policy", *policy),
                                        ("from", from.as_str()),
                                        ("to", to.as_str()),
                                    ];
                                    counter(&mut m, &labels, v)?;
                                }
                            }
                        }
                    }
                }
                names::BREAKER_SHADOW_TRANSITIONS_TOTAL => {
                    for (policy, p) in &policies {
                        // From the breaker's first move into metrics-only
                        // mode on, even after it leaves that mode.
                        let to_shadow = index::state(CircuitState::MetricsOnly);
                        let shadowed = (0..STATES)
                            .filter_map(|f| p.transitions.get(f * STATES + to_shadow))
                            .any(|cell| load(cell) > 0);
                        let applies = |t: usize| {
                            shadowed && CircuitState::ALL.get(t).is_some_and(|s| shadow(*s))
                        };
                        let states = CircuitState::ALL.iter().map(|s| s.as_str());
                        counters_by(
                            &mut m,
                            ("policy", policy),
                            "to",
                            states,
                            &p.shadow_transitions,
                            applies,
                        )?;
                    }
                }
                names::BREAKER_FAILURE_RATE
                | names::BREAKER_SLOW_RATE
                | names::BREAKER_WINDOW_CALLS => {
                    for (policy, p) in &policies {
                        if !p.has_section(store::SEEN_RATES) {
                            continue;
                        }
                        let labels = [("policy", *policy)];
                        match family.name {
                            names::BREAKER_FAILURE_RATE => {
                                gauge(&mut m, &labels, f64::from_bits(load(&p.failure_rate)))?;
                            }
                            names::BREAKER_SLOW_RATE => {
                                gauge(&mut m, &labels, f64::from_bits(load(&p.slow_rate)))?;
                            }
                            _ => gauge(&mut m, &labels, load(&p.window_calls))?,
                        }
                    }
                }
                names::IN_FLIGHT => {
                    for (policy, p) in &policies {
                        if p.has_section(store::SEEN_IN_FLIGHT) {
                            let v = p.in_flight.load(Ordering::Relaxed);
                            gauge(&mut m, &[("policy", *policy)], v)?;
                        }
                    }
                }
                names::CONCURRENCY_LIMIT => {
                    for (policy, p) in &policies {
                        if p.has_section(store::SEEN_LIMIT) {
                            gauge(&mut m, &[("policy", *policy)], p.limit())?;
                        }
                    }
                }
                names::RATELIMIT_KEYS | names::RATELIMIT_KEY_CAP => {
                    for (policy, p) in &policies {
                        if p.has_section(store::SEEN_KEYS) {
                            let cell = if family.name == names::RATELIMIT_KEYS {
                                &p.keys
                            } else {
                                &p.key_cap
                            };
                            gauge(&mut m, &[("policy", *policy)], load(cell))?;
                        }
                    }
                }
                names::RATELIMIT_EVICTIONS_TOTAL | names::RATELIMIT_OVERFLOW_TOTAL => {
                    for (policy, p) in &policies {
                        let cell = if family.name == names::RATELIMIT_EVICTIONS_TOTAL {
                            &p.evictions
                        } else {
                            &p.overflow
                        };
                        let v = load(cell);
                        if v > 0 || p.has_layer(LayerKind::RateLimit) {
                            counter(&mut m, &[("policy", *policy)], v)?;
                        }
                    }
                }
                names::MALFORMED_HEADERS_TOTAL => {
                    for (policy, p) in &policies {
                        for (header, cell) in p.malformed.entries() {
                            counter(
                                &mut m,
                                &[("policy", *policy), ("header", header)],
                                load(cell),
                            )?;
                        }
                    }
                }
                names::TASKS_LIVE => {
                    for (group, g) in &groups {
                        gauge(&mut m, &[("group", *group)], g.live.load(Ordering::Relaxed))?;
                    }
                }
                names::TASKS_STARTED_TOTAL => {
                    for (group, g) in &groups {
                        counter(&mut m, &[("group", *group)], load(&g.started))?;
                    }
                }
                names::TASKS_ENDED_TOTAL => {
                    for (group, g) in &groups {
                        let ends = TaskEnd::ALL.iter().map(|e| e.as_str());
                        counters_by(&mut m, ("group", group), "end", ends, &g.ended, |_| true)?;
                    }
                }
                names::TASK_PANICS_TOTAL => {
                    for (group, g) in &groups {
                        counter(&mut m, &[("group", *group)], load(&g.panics))?;
                    }
                }
                names::TASK_RESTARTS_TOTAL => {
                    for (group, g) in &groups {
                        counter(&mut m, &[("group", *group)], load(&g.restarts))?;
                    }
                }
                names::TASK_GAVE_UP_TOTAL => {
                    for (group, g) in &groups {
                        counter(&mut m, &[("group", *group)], load(&g.gave_up))?;
                    }
                }
                names::OFFLOAD_DROPPED_TOTAL => {
                    for (queue, q) in &queues {
                        let reasons = DropReason::ALL.iter().map(|r| r.as_str());
                        let owner = ("queue", *queue);
                        counters_by(&mut m, owner, "reason", reasons, &q.dropped, |_| true)?;
                    }
                }
                names::OFFLOAD_DELIVERED_TOTAL => {
                    for (queue, q) in &queues {
                        counter(&mut m, &[("queue", *queue)], load(&q.delivered))?;
                    }
                }
                names::OFFLOAD_ATTEMPT_FAILURES_TOTAL => {
                    for (queue, q) in &queues {
                        let causes = AttemptFailure::ALL.iter().map(|c| c.as_str());
                        counters_by(
                            &mut m,
                            ("queue", queue),
                            "cause",
                            causes,
                            &q.attempt_failures,
                            |_| true,
                        )?;
                    }
                }
                names::UNTRACKED_EVENTS_TOTAL => {
                    m.encode_counter::<NoLabelSet, _, u64>(&store.untracked(), None)?;
                }
                _ => {}
            }
        }
        Ok(())
    }
}

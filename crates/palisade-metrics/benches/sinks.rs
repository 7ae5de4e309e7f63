//! Cost of recording one event in each sink, through a `Metrics` handle as
//! layers do, next to the straightforward ways of doing the same with each
//! library: a prometheus-client `Family` looked up with freshly built
//! labels, and the `metrics::counter!` macro with owned labels.
//!
//! ```text
//! cargo bench -p palisade-metrics --all-features --bench sinks -- --warm-up-time 1 --measurement-time 3
//! ```

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_core::{
    Event, InFlightChange, LayerKind, Metrics, MetricsSink, NoopSink, Outcome, RejectReason,
};
use palisade_metrics::{FacadeSink, PrometheusSink, SnapshotSink, TracingSink};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

const POLICIES: [&str; 8] = [
    "checkout",
    "payments",
    "search",
    "inventory",
    "accounts",
    "catalog",
    "shipping",
    "api",
];

/// What an adapter without caching does: build owned labels and look the
/// series up in a `Family` for every event.
#[derive(Default)]
struct FamilyPerEvent {
    requests: Family<Vec<(&'static str, String)>, Counter>,
    rejections: Family<Vec<(&'static str, String)>, Counter>,
    in_flight: Family<Vec<(&'static str, String)>, Gauge>,
}

impl MetricsSink for FamilyPerEvent {
    fn record(&self, event: &Event<'_>) {
        match *event {
            Event::Completed {
                policy,
                layer,
                outcome,
                ..
            } => {
                let labels = vec![
                    ("policy", policy.to_owned()),
                    ("layer", layer.as_str().to_owned()),
                    ("outcome", outcome.as_str().to_owned()),
                ];
                self.requests.get_or_create(&labels).inc();
            }
            Event::Rejected {
                policy,
                layer,
                reason,
            } => {
                let labels = vec![
                    ("policy", policy.to_owned()),
                    ("layer", layer.as_str().to_owned()),
                    ("reason", reason.as_str().to_owned()),
                ];
                self.rejections.get_or_create(&labels).inc();
            }
            Event::InFlightChanged { policy, change, .. } => {
                let labels = vec![("policy", policy.to_owned())];
                self.in_flight.get_or_create(&labels).inc_by(change.delta());
            }
            _ => {}
        }
    }
}

/// The `metrics` macros with owned policy labels, per event.
struct MacroPerEvent;

impl MetricsSink for MacroPerEvent {
    fn record(&self, event: &Event<'_>) {
        match *event {
            Event::Completed {
                policy,
                layer,
                outcome,
                ..
            } => {
                metrics::counter!(
                    "palisade_requests_total",
                    "policy" => policy.to_owned(),
                    "layer" => layer.as_str(),
                    "outcome" => outcome.as_str()
                )
                .increment(1);
            }
            Event::Rejected {
                policy,
                layer,
                reason,
            } => {
                metrics::counter!(
                    "palisade_rejections_total",
                    "policy" => policy.to_owned(),
                    "layer" => layer.as_str(),
                    "reason" => reason.as_str()
                )
                .increment(1);
            }
            Event::InFlightChanged { policy, change, .. } => {
                metrics::gauge!("palisade_in_flight", "policy" => policy.to_owned())
                    .increment(change.delta() as f64);
            }
            _ => {}
        }
    }
}

fn sinks() -> Vec<(&'static str, Metrics)> {
    let mut registry = Registry::default();
    let prometheus = PrometheusSink::new();
    prometheus.register(&mut registry);
    let family = FamilyPerEvent::default();
    registry.register("naive_requests", "", family.requests.clone());
    registry.register("naive_rejections", "", family.rejections.clone());
    registry.register("naive_in_flight", "", family.in_flight.clone());
    vec![
        ("noop_sink", Metrics::new(NoopSink)),
        ("snapshot", Metrics::new(SnapshotSink::new())),
        ("prometheus", Metrics::new(prometheus)),
        ("prometheus_family_per_event", Metrics::new(family)),
        ("facade_exporter", Metrics::new(FacadeSink::new())),
        ("facade_macro_per_event", Metrics::new(MacroPerEvent)),
        ("tracing_no_subscriber", Metrics::new(TracingSink::new())),
    ]
}

fn bench_event(c: &mut Criterion, group: &str, make: impl Fn(&'static str) -> Vec<Event<'static>>) {
    let mut g = c.benchmark_group(group);
    for (name, metrics) in sinks() {
        // Every policy seen once, as after start-up.
        for policy in POLICIES {
            for e in make(policy) {
                metrics.emit(&e);
            }
        }
        let events: Vec<Vec<Event<'static>>> = POLICIES.iter().map(|p| make(p)).collect();
        let mut i = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 1) % events.len();
                for e in &events[i] {
                    metrics.emit(black_box(e));
                }
            });
        });
    }
    g.finish();
}

fn benches(c: &mut Criterion) {
    // The facade sink reports to the global recorder, as in production.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let _ = metrics::set_global_recorder(recorder);

    bench_event(c, "completed", |policy| {
        vec![Event::Completed {
            policy,
            layer: LayerKind::CircuitBreaker,
            outcome: Outcome::Success,
            latency: None,
        }]
    });
    bench_event(c, "completed_with_latency", |policy| {
        vec![Event::Completed {
            policy,
            layer: LayerKind::CircuitBreaker,
            outcome: Outcome::Success,
            latency: Some(Duration::from_micros(1500)),
        }]
    });
    bench_event(c, "rejected", |policy| {
        vec![Event::Rejected {
            policy,
            layer: LayerKind::RateLimit,
            reason: RejectReason::RateLimited,
        }]
    });
    bench_event(c, "in_flight_acquire_release", |policy| {
        [InFlightChange::Acquired, InFlightChange::Released]
            .into_iter()
            .map(|change| Event::InFlightChanged {
                policy,
                layer: LayerKind::Bulkhead,
                change,
                in_flight: 1,
                limit: 16,
            })
            .collect()
    });
}

criterion_group!(sink_benches, benches);
criterion_main!(sink_benches);

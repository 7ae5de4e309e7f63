//! Once each name, layer and label of the events has been seen, recording
//! them allocates nothing.

use palisade_core::{ManualClock, MetricsSink, PanicLocation};
use palisade_metrics::SnapshotSink;

use crate::common::every_event;

fn assert_no_allocation(name: &str, record: impl Fn()) {
    // Warm up: the first sight of each name and label allocates its cells.
    record();
    record();
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            record();
        }
    });
    assert_eq!(info.count_total, 0, "{name} allocated: {info:?}");
}

#[test]
fn the_harness_sees_an_allocation() {
    let info = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1_u8));
    });
    assert_eq!(info.count_total, 1);
}

#[test]
fn snapshot_sink_records_without_allocating() {
    let location = PanicLocation::new("src/lib.rs", 1, 1);
    let events = every_event(&location);
    let clock = ManualClock::new();
    let sink = SnapshotSink::builder()
        .clock(clock.clock())
        .build()
        .unwrap();
    assert_no_allocation("snapshot", || {
        for e in &events {
            sink.record(std::hint::black_box(e));
        }
    });
    // The events were recorded: 2 warm-up rounds and 100 measured ones.
    let snap = sink.snapshot();
    assert_eq!(snap.policies[0].panics.total, 102);
}

#[cfg(feature = "prometheus")]
#[test]
fn prometheus_sink_records_without_allocating() {
    let location = PanicLocation::new("src/lib.rs", 1, 1);
    let events = every_event(&location);
    let mut registry = prometheus_client::registry::Registry::default();
    let sink = palisade_metrics::PrometheusSink::new();
    sink.register(&mut registry);
    assert_no_allocation("prometheus", || {
        for e in &events {
            sink.record(std::hint::black_box(e));
        }
    });
    let text = palisade_metrics::prometheus::render(&registry);
    assert!(
        text.contains(r#"palisade_panics_total{policy="p"} 102"#),
        "{text}"
    );
}

#[cfg(feature = "metrics")]
#[test]
fn facade_sink_records_without_allocating() {
    // The sink's own work: key lookups and the recorder call. (A recorder
    // may allocate in its register path: metrics-exporter-prometheus 0.18
    // wraps each handle it returns in a new `Arc`, as it does for the
    // `counter!` macros.)
    let location = PanicLocation::new("src/lib.rs", 1, 1);
    let events = every_event(&location);
    let sink = palisade_metrics::FacadeSink::new();
    metrics::with_local_recorder(&metrics::NoopRecorder, || {
        assert_no_allocation("metrics facade", || {
            for e in &events {
                sink.record(std::hint::black_box(e));
            }
        });
    });
}

#[cfg(feature = "tracing")]
#[test]
fn tracing_sink_without_interested_subscriber_allocates_nothing() {
    let _serial = crate::common::tracing_serial();
    let location = PanicLocation::new("src/lib.rs", 1, 1);
    let events = every_event(&location);
    let sink = palisade_metrics::TracingSink::new();
    assert_no_allocation("tracing", || {
        for e in &events {
            sink.record(std::hint::black_box(e));
        }
    });
}

/// A subscriber that wants every event and reads every field, keeping
/// nothing: what a formatting subscriber does short of writing.
#[cfg(feature = "tracing")]
struct ReadsEverything;

#[cfg(feature = "tracing")]
struct Discard;

#[cfg(feature = "tracing")]
impl std::fmt::Write for Discard {
    fn write_str(&mut self, _: &str) -> std::fmt::Result {
        Ok(())
    }
}

#[cfg(feature = "tracing")]
impl tracing::field::Visit for Discard {
    fn record_debug(&mut self, _: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        // Formats every value, as a subscriber writing it would.
        let _ = std::fmt::Write::write_fmt(self, format_args!("{value:?}"));
    }
}

#[cfg(feature = "tracing")]
palisade_testkit::subscriber_on_event!(ReadsEverything, |_this, event| {
    event.record(&mut Discard);
});

#[cfg(feature = "tracing")]
#[test]
fn tracing_sink_with_an_interested_subscriber_allocates_nothing() {
    let _serial = crate::common::tracing_serial();
    let location = PanicLocation::new("src/lib.rs", 1, 1);
    let events = every_event(&location);
    let sink = palisade_metrics::TracingSink::new();
    tracing::subscriber::with_default(ReadsEverything, || {
        assert_no_allocation("tracing, read by a subscriber", || {
            for e in &events {
                sink.record(std::hint::black_box(e));
            }
        });
    });
}

/// A policy's recent window is made on the first event it counts: a name
/// that only ever admits, as most do, keeps none, however long the window.
#[test]
fn a_policy_that_only_admits_keeps_no_recent_window() {
    use palisade_core::{Event, LayerKind, RejectReason};
    use std::time::Duration;

    let clock = ManualClock::new();
    let sink = SnapshotSink::builder()
        .clock(clock.clock())
        .window(Duration::from_secs(3_600))
        .build()
        .unwrap();
    let admitted = |policy| Event::Admitted {
        policy,
        layer: LayerKind::RateLimit,
    };
    let first = allocation_counter::measure(|| sink.record(&admitted("quiet")));
    assert!(first.bytes_total < 4_096, "{first:?}");
    let rejected = allocation_counter::measure(|| {
        sink.record(&Event::Rejected {
            policy: "quiet",
            layer: LayerKind::RateLimit,
            reason: RejectReason::RateLimited,
        });
    });
    assert!(
        rejected.bytes_total > 100_000,
        "the window, now: {rejected:?}"
    );
}

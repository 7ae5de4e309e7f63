//! The `metrics` facade adapter, rendered by metrics-exporter-prometheus on
//! a local recorder.

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusRecorder};
use palisade_core::{CircuitState, Event, LayerKind, MetricsSink, PanicLocation, RejectReason};
use palisade_metrics::FacadeSink;

use crate::common::{assert_one_state, every_event, expected_samples, sample, transition_tour};

fn recorder() -> PrometheusRecorder {
    PrometheusBuilder::new().build_recorder()
}

#[test]
fn every_event_kind_renders_its_samples() {
    let location = PanicLocation::new("src/lib.rs", 1, 2);
    let expected = expected_samples();
    for event in every_event(&location) {
        let recorder = recorder();
        let sink = FacadeSink::new();
        metrics::with_local_recorder(&recorder, || sink.record(&event));
        let text = recorder.handle().render();
        let mine: Vec<_> = expected
            .iter()
            .filter(|(name, _, _)| *name == event.name())
            .collect();
        assert!(!mine.is_empty(), "no expectation for {}", event.name());
        for (_, series, value) in mine {
            assert_eq!(
                sample(&text, series),
                Some(*value),
                "{} should render {series} {value}:\n{text}",
                event.name()
            );
        }
    }
}

#[test]
fn describe_gives_help_and_types() {
    let recorder = recorder();
    let sink = FacadeSink::new();
    metrics::with_local_recorder(&recorder, || {
        palisade_metrics::facade::describe();
        sink.record(&Event::Rejected {
            policy: "p",
            layer: LayerKind::RateLimit,
            reason: RejectReason::RateLimited,
        });
        sink.record(&Event::Completed {
            policy: "p",
            layer: LayerKind::CircuitBreaker,
            outcome: palisade_core::Outcome::Success,
            latency: Some(std::time::Duration::from_millis(2)),
        });
    });
    let text = recorder.handle().render();
    assert!(
        text.contains(
            "# HELP palisade_rejections_total Requests a palisade layer refused, by reason."
        ),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_rejections_total counter"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_breaker_state gauge"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE palisade_request_duration_seconds summary"),
        "{text}"
    );
}

#[test]
fn breaker_tour_leaves_exactly_one_state_at_one_after_each_transition() {
    let recorder = recorder();
    let handle = recorder.handle();
    let sink = FacadeSink::new();
    for (from, to, reason) in transition_tour() {
        metrics::with_local_recorder(&recorder, || {
            sink.record(&Event::StateChanged {
                policy: "payments",
                from,
                to,
                reason,
            });
            // Activity after a transition never resets the state to closed.
            sink.record(&Event::Admitted {
                policy: "payments",
                layer: LayerKind::CircuitBreaker,
            });
        });
        assert_one_state(&handle.render(), "payments", to);
    }
}

#[test]
fn breaker_first_seen_through_activity_is_closed() {
    let recorder = recorder();
    let sink = FacadeSink::new();
    metrics::with_local_recorder(&recorder, || {
        sink.record(&Event::Rejected {
            policy: "p",
            layer: LayerKind::CircuitBreaker,
            reason: RejectReason::CircuitOpen,
        });
    });
    assert!(
        !recorder
            .handle()
            .render()
            .contains("palisade_breaker_state{")
    );
    metrics::with_local_recorder(&recorder, || {
        sink.record(&Event::BreakerRates {
            policy: "p",
            failure_rate: 0.1,
            slow_rate: 0.0,
            calls: 10,
        });
    });
    assert_one_state(&recorder.handle().render(), "p", CircuitState::Closed);
}

#[test]
fn keys_follow_the_recorder_current_at_each_event() {
    // The sink caches keys, not handles: a second recorder sees the events
    // recorded while it is current.
    let first = recorder();
    let second = recorder();
    let sink = FacadeSink::new();
    let event = Event::TimedOut {
        policy: "p",
        timeout: std::time::Duration::from_secs(1),
    };
    metrics::with_local_recorder(&first, || sink.record(&event));
    metrics::with_local_recorder(&second, || {
        sink.record(&event);
        sink.record(&event);
    });
    let series = r#"palisade_timeouts_total{policy="p"}"#;
    assert_eq!(sample(&first.handle().render(), series), Some(1.0));
    assert_eq!(sample(&second.handle().render(), series), Some(2.0));
}

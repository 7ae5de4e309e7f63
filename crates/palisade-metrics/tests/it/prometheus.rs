//! The prometheus-client adapter, read back from the rendered text.

use palisade_core::{
    CircuitState, Event, InFlightChange, LayerKind, MetricsSink, Outcome, PanicLocation,
    RejectReason,
};
use palisade_metrics::PrometheusSink;
use palisade_metrics::names::{self, Kind};
use palisade_metrics::prometheus::render;
use prometheus_client::registry::Registry;

use crate::common::{assert_one_state, every_event, expected_samples, sample, transition_tour};

fn fresh() -> (PrometheusSink, Registry) {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new();
    sink.register(&mut registry);
    (sink, registry)
}

#[test]
fn every_event_kind_renders_its_samples() {
    let location = PanicLocation::new("src/lib.rs", 1, 2);
    let expected = expected_samples();
    for event in every_event(&location) {
        let (sink, registry) = fresh();
        sink.record(&event);
        let text = render(&registry);
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
fn every_family_is_described_once_with_its_type() {
    let (_sink, registry) = fresh();
    let text = render(&registry);
    for family in names::ALL {
        let (base, kind) = match family.kind {
            Kind::Counter => (family.name.trim_end_matches("_total"), "counter"),
            Kind::Histogram => (family.name, "histogram"),
            _ => (family.name, "gauge"),
        };
        let type_line = format!("# TYPE {base} {kind}");
        assert_eq!(
            text.lines().filter(|l| *l == type_line).count(),
            1,
            "{type_line} in:\n{text}"
        );
        assert!(text.contains(&format!("# HELP {base} ")), "{base}");
    }
    assert!(text.contains("# UNIT palisade_request_duration_seconds seconds"));
    assert!(text.ends_with("# EOF\n"));
    // Nothing recorded yet: no policy series, only the untracked counter.
    assert!(!text.contains("policy=\""));
    assert_eq!(sample(&text, "palisade_untracked_events_total"), Some(0.0));
}

#[test]
fn histogram_buckets_are_cumulative_and_count_matches() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::builder()
        .duration_buckets([0.01, 0.1, 1.0])
        .build()
        .unwrap();
    sink.register(&mut registry);
    for ms in [5_u64, 50, 50, 500, 5000] {
        sink.record(&Event::Completed {
            policy: "api",
            layer: LayerKind::Bulkhead,
            outcome: Outcome::Success,
            latency: Some(std::time::Duration::from_millis(ms)),
        });
    }
    // A completion without latency is counted but not observed.
    sink.record(&Event::Completed {
        policy: "api",
        layer: LayerKind::Bulkhead,
        outcome: Outcome::Success,
        latency: None,
    });
    let text = render(&registry);
    let labels = r#"policy="api",layer="bulkhead""#;
    let bucket = |le: &str| {
        sample(
            &text,
            // prometheus-client writes `le` first.
            &format!("palisade_request_duration_seconds_bucket{{le=\"{le}\",{labels}}}"),
        )
    };
    assert_eq!(bucket("0.01"), Some(1.0));
    assert_eq!(bucket("0.1"), Some(3.0));
    assert_eq!(bucket("1.0"), Some(4.0));
    assert_eq!(bucket("+Inf"), Some(5.0));
    assert_eq!(
        sample(
            &text,
            &format!("palisade_request_duration_seconds_count{{{labels}}}")
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!("palisade_request_duration_seconds_sum{{{labels}}}")
        ),
        Some(5.605)
    );
    assert_eq!(
        sample(
            &text,
            r#"palisade_requests_total{policy="api",layer="bulkhead",outcome="success"}"#
        ),
        Some(6.0)
    );
}

/// `_sum` of the `api` bulkhead histogram after each latency in turn.
fn duration_sums(latencies: &[std::time::Duration]) -> Vec<f64> {
    let (sink, registry) = fresh();
    latencies
        .iter()
        .map(|latency| {
            sink.record(&Event::Completed {
                policy: "api",
                layer: LayerKind::Bulkhead,
                outcome: Outcome::Success,
                latency: Some(*latency),
            });
            let series = r#"palisade_request_duration_seconds_sum{policy="api",layer="bulkhead"}"#;
            sample(&render(&registry), series).expect("a _sum sample")
        })
        .collect()
}

#[test]
fn histogram_sum_never_goes_down_past_u64_nanoseconds() {
    use std::time::Duration;
    // Together just over 2^64 ns: a u64 sum wrapped to 0 here.
    let half = Duration::from_nanos(u64::MAX / 2 + 1);
    let sums = duration_sums(&[half, half, Duration::from_millis(1)]);
    assert_eq!(sums[0], 2f64.powi(63) / 1e9);
    assert_eq!(sums[1], 2f64.powi(64) / 1e9);
    assert!(sums[2] >= sums[1], "{sums:?}");
    // One huge latency: a u64 sum added u64::MAX, i.e. took 1 ns off.
    let sums = duration_sums(&[
        Duration::from_secs(1),
        Duration::MAX,
        Duration::from_secs(1),
    ]);
    assert_eq!(sums[0], 1.0);
    assert!(sums[1] >= Duration::MAX.as_secs_f64(), "{sums:?}");
    assert!(sums[2] >= sums[1], "{sums:?}");
}

#[test]
fn evictions_saturate_instead_of_wrapping() {
    let (sink, registry) = fresh();
    let series = r#"palisade_ratelimit_evictions_total{policy="keys"}"#;
    let mut last = 0.0;
    for count in [usize::MAX, 1, usize::MAX] {
        sink.record(&Event::KeysEvicted {
            policy: "keys",
            count,
        });
        let total = sample(&render(&registry), series).expect("an evictions sample");
        assert!(total >= last, "{total} after {last}");
        last = total;
    }
    assert_eq!(last, u64::MAX as f64);
}

#[test]
fn breaker_tour_leaves_exactly_one_state_at_one_after_each_transition() {
    let (sink, registry) = fresh();
    // Another breaker moves in between and must not disturb the first.
    let mut other = CircuitState::Closed;
    for (from, to, reason) in transition_tour() {
        sink.record(&Event::StateChanged {
            policy: "payments",
            from,
            to,
            reason,
        });
        let next = if other == CircuitState::Open {
            CircuitState::Closed
        } else {
            CircuitState::Open
        };
        sink.record(&Event::StateChanged {
            policy: "search",
            from: other,
            to: next,
            reason: palisade_core::TransitionReason::FailureRate,
        });
        other = next;
        let text = render(&registry);
        assert_one_state(&text, "payments", to);
        assert_one_state(&text, "search", other);
    }
    let text = render(&registry);
    assert_eq!(
        sample(
            &text,
            r#"palisade_breaker_transitions_total{policy="payments",from="half_open",to="open"}"#
        ),
        Some(2.0)
    );
}

#[test]
fn breaker_without_transition_has_no_series_until_it_reports() {
    let (sink, registry) = fresh();
    sink.record(&Event::Rejected {
        policy: "p",
        layer: LayerKind::CircuitBreaker,
        reason: RejectReason::CircuitOpen,
    });
    // A rejection says nothing about the state the breaker started in.
    assert!(!render(&registry).contains("palisade_breaker_state{"));
    sink.record(&Event::Admitted {
        policy: "p",
        layer: LayerKind::CircuitBreaker,
    });
    assert_one_state(&render(&registry), "p", CircuitState::Closed);
}

#[test]
fn in_flight_follows_deltas_and_limit_follows_the_last_report() {
    let (sink, registry) = fresh();
    for (change, in_flight) in [
        (InFlightChange::Acquired, 1),
        (InFlightChange::Acquired, 2),
        (InFlightChange::Released, 1),
    ] {
        sink.record(&Event::InFlightChanged {
            policy: "db",
            layer: LayerKind::Bulkhead,
            change,
            in_flight,
            limit: 8,
        });
    }
    sink.record(&Event::LimitChanged {
        policy: "db",
        from: 8,
        to: 12,
    });
    let text = render(&registry);
    assert_eq!(
        sample(&text, r#"palisade_in_flight{policy="db"}"#),
        Some(1.0)
    );
    assert_eq!(
        sample(&text, r#"palisade_concurrency_limit{policy="db"}"#),
        Some(12.0)
    );
}

#[test]
fn an_adaptive_limit_is_not_undone_by_an_in_flight_event_that_read_it_before() {
    let (sink, registry) = fresh();
    let in_flight = |limit| Event::InFlightChanged {
        policy: "db",
        layer: LayerKind::Bulkhead,
        change: InFlightChange::Released,
        in_flight: 0,
        limit,
    };
    sink.record(&in_flight(10));
    sink.record(&Event::LimitChanged {
        policy: "db",
        from: 10,
        to: 5,
    });
    // A release that read the limit before it moved reports after it.
    sink.record(&in_flight(10));
    let text = render(&registry);
    assert_eq!(
        sample(&text, r#"palisade_concurrency_limit{policy="db"}"#),
        Some(5.0)
    );
}

#[test]
fn names_past_the_limit_are_counted_not_tracked() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::builder().max_names(2).build().unwrap();
    sink.register(&mut registry);
    for policy in ["a", "b", "c", "d", "a"] {
        sink.record(&Event::Admitted {
            policy,
            layer: LayerKind::RateLimit,
        });
    }
    let text = render(&registry);
    assert_eq!(
        sample(
            &text,
            r#"palisade_admitted_total{policy="a",layer="rate_limit"}"#
        ),
        Some(2.0)
    );
    assert!(!text.contains(r#"policy="c""#));
    assert_eq!(sample(&text, "palisade_untracked_events_total"), Some(2.0));
}

#[test]
fn label_values_are_escaped() {
    let (sink, registry) = fresh();
    sink.record(&Event::OverflowUsed {
        policy: "we\"ird\\name",
    });
    let text = render(&registry);
    assert!(
        text.contains(r#"palisade_ratelimit_overflow_total{policy="we\"ird\\name"} 1"#),
        "{text}"
    );
}

#[test]
fn builder_rejects_bad_buckets_and_limits() {
    let err = PrometheusSink::builder()
        .duration_buckets([0.1, 0.05])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "duration_buckets");
    let err = PrometheusSink::builder()
        .duration_buckets([f64::NAN])
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "duration_buckets");
    let err = PrometheusSink::builder().max_names(0).build().unwrap_err();
    assert_eq!(err.field(), "max_names");
    assert!(err.to_string().contains("prometheus sink"), "{err}");
    // No buckets: completions are counted, no histogram is kept.
    let mut registry = Registry::default();
    let sink = PrometheusSink::builder()
        .duration_buckets([])
        .build()
        .unwrap();
    sink.register(&mut registry);
    sink.record(&Event::Completed {
        policy: "p",
        layer: LayerKind::Bulkhead,
        outcome: Outcome::Success,
        latency: Some(std::time::Duration::from_millis(1)),
    });
    let text = render(&registry);
    assert!(!text.contains("palisade_request_duration_seconds_count{"));
    assert!(text.contains(r#"palisade_requests_total{policy="p""#));
}

#[test]
fn collector_under_a_prefixed_sub_registry() {
    let mut registry = Registry::default();
    let sink = PrometheusSink::new();
    registry
        .sub_registry_with_prefix("shop")
        .register_collector(Box::new(sink.collector()));
    sink.record(&Event::TimedOut {
        policy: "p",
        timeout: std::time::Duration::from_secs(1),
        caller: false,
    });
    for _ in 0..2 {
        sink.record(&Event::TimedOut {
            policy: "p",
            timeout: std::time::Duration::from_millis(50),
            caller: true,
        });
    }
    let text = render(&registry);
    assert_eq!(
        sample(
            &text,
            r#"shop_palisade_timeouts_total{policy="p",deadline="policy"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"shop_palisade_timeouts_total{policy="p",deadline="caller"}"#
        ),
        Some(2.0),
        "{text}"
    );
}

#[test]
fn a_task_group_renders_its_counters_at_zero_from_its_first_event() {
    let (sink, registry) = fresh();
    sink.record(&Event::TaskStarted {
        group: "w",
        task: "mailer",
    });
    let text = render(&registry);
    for series in [
        r#"palisade_task_gave_up_total{group="w"}"#,
        r#"palisade_task_restarts_total{group="w"}"#,
        r#"palisade_task_panics_total{group="w"}"#,
        r#"palisade_tasks_ended_total{group="w",end="failed"}"#,
        r#"palisade_tasks_ended_total{group="w",end="panicked"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    assert!(text.contains(r#"palisade_task_gave_up_total{group="w"} 0"#));
}

#[test]
fn an_offload_queue_renders_its_counters_at_zero_from_its_first_event() {
    let (sink, registry) = fresh();
    sink.record(&Event::OffloadDelivered {
        queue: "mail",
        attempts: 1,
    });
    let text = render(&registry);
    for reason in palisade_core::DropReason::ALL {
        let series = format!(
            r#"palisade_offload_dropped_total{{queue="mail",reason="{}"}}"#,
            reason.as_str()
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in:\n{text}");
    }
    for cause in palisade_core::AttemptFailure::ALL {
        let series = format!(
            r#"palisade_offload_attempt_failures_total{{queue="mail",cause="{}"}}"#,
            cause.as_str()
        );
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in:\n{text}");
    }
}

#[test]
fn a_policy_renders_its_first_rejection_counters_at_zero_for_the_reasons_of_its_layers() {
    let (sink, registry) = fresh();
    sink.record(&Event::Admitted {
        policy: "api",
        layer: LayerKind::RateLimit,
    });
    let text = render(&registry);
    assert!(
        text.contains(
            r#"palisade_rejections_total{policy="api",layer="rate_limit",reason="rate_limited"} 0"#
        ),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"palisade_rejections_total{policy="api",layer="rate_limit",reason="missing_key"}"#
        ),
        Some(0.0)
    );
    // Only the reasons a rate limiter refuses with, and only for the layers
    // that reported.
    let rejections = crate::common::samples(&text, "palisade_rejections_total");
    assert_eq!(rejections.len(), 2, "{rejections:?}");
    assert!(!text.contains(r#"layer="circuit_breaker""#), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"palisade_admitted_total{policy="api",layer="rate_limit"}"#
        ),
        Some(1.0)
    );
    // The faults of the layers that report only when they happen.
    for series in [
        r#"palisade_panics_total{policy="api"}"#,
        r#"palisade_timeouts_total{policy="api",deadline="policy"}"#,
        r#"palisade_timeouts_total{policy="api",deadline="caller"}"#,
        r#"palisade_fallbacks_total{policy="api",trigger="error"}"#,
        r#"palisade_ratelimit_evictions_total{policy="api"}"#,
        r#"palisade_ratelimit_overflow_total{policy="api"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
}

#[test]
fn a_known_breaker_renders_its_trip_and_outcomes_at_zero() {
    let (sink, registry) = fresh();
    sink.record(&Event::Admitted {
        policy: "db",
        layer: LayerKind::CircuitBreaker,
    });
    let text = render(&registry);
    for series in [
        r#"palisade_breaker_transitions_total{policy="db",from="closed",to="open"}"#,
        r#"palisade_breaker_transitions_total{policy="db",from="open",to="half_open"}"#,
        r#"palisade_breaker_transitions_total{policy="db",from="half_open",to="closed"}"#,
        r#"palisade_breaker_transitions_total{policy="db",from="half_open",to="open"}"#,
        r#"palisade_rejections_total{policy="db",layer="circuit_breaker",reason="circuit_open"}"#,
        r#"palisade_rejections_total{policy="db",layer="circuit_breaker",reason="half_open_full"}"#,
        r#"palisade_requests_total{policy="db",layer="circuit_breaker",outcome="failure"}"#,
        r#"palisade_requests_total{policy="db",layer="circuit_breaker",outcome="success"}"#,
    ] {
        assert_eq!(sample(&text, series), Some(0.0), "{series} in:\n{text}");
    }
    // Operators' transitions and shadow-mode ones appear when they happen.
    assert!(!text.contains(r#"to="forced_open""#), "{text}");
    assert!(
        !text.contains("palisade_breaker_shadow_transitions_total{"),
        "{text}"
    );
    // No rate limiter reported under this name.
    assert!(!text.contains(r#"layer="rate_limit""#), "{text}");
    assert!(
        !text.contains("palisade_ratelimit_evictions_total{"),
        "{text}"
    );

    sink.record(&Event::StateChanged {
        policy: "db",
        from: CircuitState::Closed,
        to: CircuitState::MetricsOnly,
        reason: palisade_core::TransitionReason::Forced,
    });
    let text = render(&registry);
    for to in ["closed", "open", "half_open"] {
        let series =
            format!(r#"palisade_breaker_shadow_transitions_total{{policy="db",to="{to}"}}"#);
        assert_eq!(sample(&text, &series), Some(0.0), "{series} in:\n{text}");
    }
}

#[test]
fn a_bulkhead_renders_every_outcome_from_its_first_completion() {
    let (sink, registry) = fresh();
    sink.record(&Event::Completed {
        policy: "db",
        layer: LayerKind::Bulkhead,
        outcome: Outcome::Success,
        latency: Some(std::time::Duration::from_millis(1)),
    });
    let text = render(&registry);
    for outcome in Outcome::ALL {
        let series = format!(
            r#"palisade_requests_total{{policy="db",layer="bulkhead",outcome="{}"}}"#,
            outcome.as_str()
        );
        let expected = if *outcome == Outcome::Success {
            1.0
        } else {
            0.0
        };
        assert_eq!(sample(&text, &series), Some(expected), "{series}");
    }
}

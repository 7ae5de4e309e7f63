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
        caller: false,
    };
    metrics::with_local_recorder(&first, || sink.record(&event));
    metrics::with_local_recorder(&second, || {
        sink.record(&event);
        sink.record(&event);
    });
    let series = r#"palisade_timeouts_total{policy="p",deadline="policy"}"#;
    assert_eq!(sample(&first.handle().render(), series), Some(1.0));
    assert_eq!(sample(&second.handle().render(), series), Some(2.0));
    let caller = Event::TimedOut {
        policy: "p",
        timeout: std::time::Duration::from_millis(50),
        caller: true,
    };
    metrics::with_local_recorder(&first, || sink.record(&caller));
    let render = first.handle().render();
    let caller_series = r#"palisade_timeouts_total{policy="p",deadline="caller"}"#;
    assert_eq!(sample(&render, caller_series), Some(1.0));
    assert_eq!(sample(&render, series), Some(1.0));
}

/// A recorder whose gauges keep their last value and whose limit gauge can
/// be held inside one `set`, to order two threads' writes.
mod held {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::mpsc::{Receiver, Sender};
    use std::sync::{Arc, Mutex};

    use metrics::{
        Counter, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
    };

    /// The limit gauge: `set(held)` blocks while `hold` is on.
    pub(super) struct LimitGauge {
        pub(super) value: AtomicU64,
        pub(super) hold: AtomicBool,
        pub(super) held: f64,
        pub(super) entered: Mutex<Sender<()>>,
        pub(super) release: Mutex<Receiver<()>>,
    }

    impl GaugeFn for LimitGauge {
        fn increment(&self, _: f64) {}
        fn decrement(&self, _: f64) {}
        fn set(&self, value: f64) {
            if value == self.held && self.hold.swap(false, Ordering::AcqRel) {
                self.entered
                    .lock()
                    .expect("not poisoned")
                    .send(())
                    .expect("test waits");
                self.release
                    .lock()
                    .expect("not poisoned")
                    .recv()
                    .expect("released");
            }
            self.value.store(value.to_bits(), Ordering::SeqCst);
        }
    }

    pub(super) struct LimitRecorder(pub(super) Arc<LimitGauge>);

    impl Recorder for LimitRecorder {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::noop()
        }
        fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
            if key.name() == "palisade_concurrency_limit" {
                Gauge::from_arc(Arc::clone(&self.0))
            } else {
                Gauge::noop()
            }
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::noop()
        }
    }
}

#[test]
fn an_adaptive_limit_is_not_undone_by_an_in_flight_event_that_read_it_before() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    use palisade_core::InFlightChange;

    let (entered, _) = mpsc::channel();
    let (_, release) = mpsc::channel();
    let gauge = Arc::new(held::LimitGauge {
        value: AtomicU64::new(0),
        hold: AtomicBool::new(false),
        held: 0.0,
        entered: Mutex::new(entered),
        release: Mutex::new(release),
    });
    let recorder = held::LimitRecorder(Arc::clone(&gauge));
    let sink = FacadeSink::new();
    let in_flight = |limit| Event::InFlightChanged {
        policy: "db",
        layer: LayerKind::Bulkhead,
        change: InFlightChange::Released,
        in_flight: 0,
        limit,
    };
    metrics::with_local_recorder(&recorder, || {
        sink.record(&in_flight(10));
        sink.record(&Event::LimitChanged {
            policy: "db",
            from: 10,
            to: 5,
        });
        // A release that read the limit before it moved reports after it.
        sink.record(&in_flight(10));
    });
    assert_eq!(f64::from_bits(gauge.value.load(Ordering::SeqCst)), 5.0);
}

/// An in-flight event that reports the limit in force before it moved
/// writes the gauge after the move's event wrote the new limit: the gauge
/// still ends at the new limit, and stays there.
#[test]
fn a_stale_limit_written_late_does_not_stick() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, mpsc};

    use palisade_core::InFlightChange;

    let in_flight = |limit| Event::InFlightChanged {
        policy: "api",
        layer: LayerKind::Bulkhead,
        change: InFlightChange::Acquired,
        in_flight: 1,
        limit,
    };
    let (entered_tx, entered) = mpsc::channel();
    let (release_tx, release) = mpsc::channel();
    let gauge = Arc::new(held::LimitGauge {
        value: AtomicU64::new(0),
        hold: AtomicBool::new(true),
        held: 4.0,
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release),
    });
    let recorder = Arc::new(held::LimitRecorder(Arc::clone(&gauge)));
    let sink = Arc::new(FacadeSink::new());
    let limit = || f64::from_bits(gauge.value.load(Ordering::SeqCst));

    // The first event writes the limit of 4 and is held there.
    let stale = {
        let (sink, recorder) = (Arc::clone(&sink), Arc::clone(&recorder));
        std::thread::spawn(move || {
            metrics::with_local_recorder(&*recorder, || sink.record(&in_flight(4)));
        })
    };
    entered.recv().expect("the first write started");
    // Meanwhile the limit moves to 5 and its event writes it...
    metrics::with_local_recorder(&*recorder, || {
        sink.record(&Event::LimitChanged {
            policy: "api",
            from: 4,
            to: 5,
        });
    });
    // ...and then the held write of 4 lands.
    release_tx.send(()).expect("the first write waits");
    stale.join().expect("the first event was recorded");
    metrics::with_local_recorder(&*recorder, || sink.record(&in_flight(5)));
    assert_eq!(limit(), 5.0, "the gauge kept the stale limit");
}

#[test]
fn evictions_saturate_instead_of_wrapping() {
    let recorder = recorder();
    let sink = FacadeSink::new();
    let series = r#"palisade_ratelimit_evictions_total{policy="keys"}"#;
    let mut last = 0.0;
    for count in [usize::MAX, 1, usize::MAX] {
        metrics::with_local_recorder(&recorder, || {
            sink.record(&Event::KeysEvicted {
                policy: "keys",
                count,
            });
        });
        let total = sample(&recorder.handle().render(), series).expect("an evictions sample");
        assert!(total >= last, "{total} after {last}");
        last = total;
    }
    assert_eq!(last, u64::MAX as f64);
}

//! The tracing adapter, seen by a subscriber that captures every event.

use std::fmt;
use std::sync::{Arc, Mutex};

use palisade_core::{
    CircuitState, Event, LayerKind, MetricsSink, PanicLocation, RejectReason, TaskEnd,
    TransitionReason,
};
use palisade_metrics::TracingSink;
use tracing::Level;
use tracing::field::{Field, Visit};

use crate::common::every_event;

#[derive(Debug, Clone)]
struct Captured {
    level: Level,
    target: String,
    fields: Vec<(String, String)>,
}

impl Captured {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Captured>>>);

struct Fields<'a>(&'a mut Vec<(String, String)>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.push((field.name().to_owned(), value.to_owned()));
    }
}

palisade_testkit::subscriber_on_event!(Capture, |this, event| {
    let mut fields = Vec::new();
    event.record(&mut Fields(&mut fields));
    this.0.lock().unwrap().push(Captured {
        level: *event.metadata().level(),
        target: event.metadata().target().to_owned(),
        fields,
    });
});

fn capture(events: &[Event<'_>]) -> Vec<Captured> {
    let _serial = crate::common::tracing_serial();
    let capture = Capture::default();
    let sink = TracingSink::new();
    tracing::subscriber::with_default(capture.clone(), || {
        for e in events {
            sink.record(e);
        }
    });
    capture.0.lock().unwrap().clone()
}

#[test]
fn every_event_kind_writes_one_event_under_the_palisade_target() {
    let location = PanicLocation::new("src/lib.rs", 1, 2);
    for event in every_event(&location) {
        let captured = capture(&[event]);
        assert_eq!(captured.len(), 1, "{}", event.name());
        assert_eq!(captured[0].target, "palisade");
        let who = captured[0]
            .field("policy")
            .or(captured[0].field("group"))
            .or(captured[0].field("queue"));
        assert!(
            who.is_some(),
            "{} names its policy, group or queue",
            event.name()
        );
    }
}

#[test]
fn caught_panic_is_debug_with_message_and_location() {
    let location = PanicLocation::new("src/handler.rs", 42, 7);
    let captured = capture(&[Event::PanicCaught {
        policy: "api",
        message: "index out of bounds",
        location: Some(&location),
    }]);
    let e = &captured[0];
    // The catching layer writes the error line; this one must not double it.
    assert_eq!(e.level, Level::DEBUG);
    assert_eq!(e.field("policy"), Some("api"));
    assert_eq!(e.field("panic.message"), Some("index out of bounds"));
    assert_eq!(e.field("panic.location"), Some("src/handler.rs:42:7"));
    assert_eq!(e.field("message"), Some("panic caught"));
}

#[test]
fn transitions_warn_and_rejections_debug_with_their_labels() {
    let captured = capture(&[
        Event::StateChanged {
            policy: "payments",
            from: CircuitState::HalfOpen,
            to: CircuitState::Open,
            reason: TransitionReason::FailureRate,
        },
        Event::Rejected {
            policy: "payments",
            layer: LayerKind::CircuitBreaker,
            reason: RejectReason::CircuitOpen,
        },
        Event::MalformedHeader {
            policy: "grpc",
            layer: LayerKind::Timeout,
            header: "grpc-timeout",
        },
    ]);
    let [changed, rejected, malformed] = &captured[..] else {
        panic!("three events expected: {captured:?}");
    };
    assert_eq!(changed.level, Level::WARN);
    assert_eq!(changed.field("from"), Some("half_open"));
    assert_eq!(changed.field("to"), Some("open"));
    assert_eq!(changed.field("reason"), Some("failure_rate"));
    assert_eq!(changed.field("layer"), Some("circuit_breaker"));

    assert_eq!(rejected.level, Level::DEBUG);
    assert_eq!(rejected.field("policy"), Some("payments"));
    assert_eq!(rejected.field("layer"), Some("circuit_breaker"));
    assert_eq!(rejected.field("reason"), Some("circuit_open"));

    assert_eq!(malformed.level, Level::DEBUG);
    assert_eq!(malformed.field("header"), Some("grpc-timeout"));
    assert_eq!(malformed.field("layer"), Some("timeout"));
}

#[test]
fn task_panics_are_debug_and_failed_ends_warn() {
    let captured = capture(&[
        Event::TaskPanicked {
            group: "workers",
            task: "mailer",
            message: "boom",
            location: None,
        },
        Event::TaskEnded {
            group: "workers",
            task: "mailer",
            end: TaskEnd::Failed,
        },
        Event::TaskEnded {
            group: "workers",
            task: "mailer",
            end: TaskEnd::Completed,
        },
    ]);
    assert_eq!(captured[0].level, Level::DEBUG);
    assert_eq!(captured[0].field("task"), Some("mailer"));
    assert_eq!(captured[0].field("panic.message"), Some("boom"));
    assert_eq!(captured[0].field("panic.location"), None);
    assert_eq!(captured[1].level, Level::WARN);
    assert_eq!(captured[1].field("end"), Some("failed"));
    assert_eq!(captured[2].level, Level::DEBUG);
}

#[test]
fn per_request_events_are_trace() {
    let captured = capture(&[
        Event::Admitted {
            policy: "p",
            layer: LayerKind::RateLimit,
        },
        Event::Completed {
            policy: "p",
            layer: LayerKind::CircuitBreaker,
            outcome: palisade_core::Outcome::Success,
            latency: None,
        },
    ]);
    assert_eq!(captured.len(), 2, "{captured:?}");
    assert!(
        captured.iter().all(|c| c.level == Level::TRACE),
        "{captured:?}"
    );
}

#[test]
fn every_event_carries_its_stable_name() {
    let location = PanicLocation::new("src/lib.rs", 1, 2);
    for event in every_event(&location) {
        let captured = capture(&[event]);
        assert_eq!(
            captured[0].field("event"),
            Some(event.name()),
            "{captured:?}"
        );
    }
    let captured = capture(&[Event::Rejected {
        policy: "payments",
        layer: LayerKind::CircuitBreaker,
        reason: RejectReason::CircuitOpen,
    }]);
    assert_eq!(
        captured[0].field("event"),
        Some("palisade.request.rejected")
    );
}

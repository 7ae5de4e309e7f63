//! What the fallback logs and reports on its degraded path. In a binary of
//! its own: `tracing` caches process-wide whether an event site is wanted,
//! and a test logging with no subscriber at the same moment could hide an
//! event from the one capturing it here.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use palisade_core::{BoxError, Event, Metrics, MetricsSink};
use palisade_fallback::{FallbackLayer, source};
use tower::{Layer, ServiceExt, service_fn};

/// One event, its fields as text.
#[derive(Debug)]
struct Logged {
    level: tracing::Level,
    fields: BTreeMap<String, String>,
}

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Logged>>>);

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }

    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }

    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}

    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}

    fn event(&self, event: &tracing::Event<'_>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Visitor(&mut fields));
        self.0.lock().unwrap().push(Logged {
            level: *event.metadata().level(),
            fields,
        });
    }

    fn enter(&self, _: &tracing::span::Id) {}

    fn exit(&self, _: &tracing::span::Id) {}
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn a_failed_answer_for_the_services_own_error_logs_both_errors() {
    let capture = Capture::default();
    let err = tracing::subscriber::with_default(capture.clone(), || {
        runtime().block_on(async {
            let primary = service_fn(|_: u32| async {
                Err::<String, BoxError>(std::io::Error::other("primary db refused").into())
            });
            let backup = service_fn(|_: u32| async {
                Err::<String, BoxError>(std::io::Error::other("cache miss").into())
            });
            FallbackLayer::builder(source::service(backup))
                .name("profile")
                .build()
                .unwrap()
                .layer(primary)
                .oneshot(7)
                .await
                .unwrap_err()
        })
    });
    // Answered with the source's error, as documented.
    assert_eq!(err.to_string(), "cache miss");
    let logged = capture.0.lock().unwrap();
    let warning = logged
        .iter()
        .find(|e| e.level == tracing::Level::WARN)
        .unwrap_or_else(|| panic!("no warning: {logged:?}"));
    assert_eq!(warning.fields["original"], "primary db refused");
    assert_eq!(warning.fields["error"], "cache miss");
    assert_eq!(warning.fields["policy"], "profile");
}

/// A sink with a bug.
struct Panics;

impl MetricsSink for Panics {
    fn record(&self, event: &Event<'_>) {
        if matches!(event, Event::FallbackUsed { .. }) {
            panic!("a metrics backend with a bug");
        }
    }
}

#[test]
fn a_sink_that_panics_on_the_fallback_event_does_not_stop_the_answer() {
    let answer = runtime().block_on(async {
        let failing = service_fn(|_: u32| async {
            Err::<String, BoxError>(std::io::Error::other("down").into())
        });
        FallbackLayer::builder(source::value("stale".to_owned()))
            .metrics(Metrics::new(Panics))
            .build()
            .unwrap()
            .layer(failing)
            .oneshot(1)
            .await
    });
    assert_eq!(answer.unwrap(), "stale");
}

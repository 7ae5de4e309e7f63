//! What the fallback logs and reports on its degraded path. In a binary of
//! its own: `tracing` caches process-wide whether an event site is wanted,
//! and a test logging with no subscriber at the same moment could hide an
//! event from the one capturing it here.

use palisade_core::{BoxError, Event, Metrics, MetricsSink};
use palisade_fallback::{FallbackLayer, source};
use palisade_testkit::CaptureSubscriber;
use tower::{Layer, ServiceExt, service_fn};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

#[test]
fn a_failed_answer_for_the_services_own_error_logs_both_errors() {
    let capture = CaptureSubscriber::default();
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
    let logged = capture.events();
    let warning = logged
        .iter()
        .find(|e| e.level == tracing::Level::WARN)
        .unwrap_or_else(|| panic!("no warning: {logged:?}"));
    assert_eq!(warning.fields["original"], "primary db refused");
    assert_eq!(warning.fields["error"], "cache miss");
    assert_eq!(warning.fields["policy"], "profile");
}

/// A sink with a bug: counts the fallback events it panics on.
#[derive(Default)]
struct Panics(std::sync::atomic::AtomicUsize);

impl MetricsSink for Panics {
    fn record(&self, event: &Event<'_>) {
        if matches!(event, Event::FallbackUsed { .. }) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("a metrics backend with a bug");
        }
    }
}

#[test]
fn a_sink_that_panics_on_the_fallback_event_does_not_stop_the_answer() {
    let sink = std::sync::Arc::new(Panics::default());
    let answer = runtime().block_on(async {
        let failing = service_fn(|_: u32| async {
            Err::<String, BoxError>(std::io::Error::other("down").into())
        });
        FallbackLayer::builder(source::value("stale".to_owned()))
            .metrics(Metrics::from_arc(sink.clone()))
            .build()
            .unwrap()
            .layer(failing)
            .oneshot(1)
            .await
    });
    assert_eq!(answer.unwrap(), "stale");
    assert_eq!(
        sink.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the sink panicked"
    );
}

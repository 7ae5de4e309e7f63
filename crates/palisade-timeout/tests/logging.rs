//! What the timeout logs about a malformed deadline header, and that a log
//! backend that panics does not fail the request. A test binary of its
//! own: see `palisade_testkit` on capturing `tracing` events.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{Event, Metrics, MetricsSink};
use palisade_testkit::CaptureSubscriber;
use palisade_timeout::TimeoutLayer;
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Default)]
struct CountMalformed(AtomicUsize);

impl MetricsSink for CountMalformed {
    fn record(&self, event: &Event<'_>) {
        if matches!(event, Event::MalformedHeader { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Sends a request with a malformed `grpc-timeout` through the HTTP
/// flavour, on the current thread, so that a thread-local subscriber sees
/// what the layer logs. Returns the answer and the malformed-header
/// events.
fn call_with_bad_header() -> (Option<u32>, usize) {
    let sink = Arc::new(CountMalformed::default());
    let svc = TimeoutLayer::builder()
        .name("api")
        .timeout(Duration::from_secs(1))
        .metrics(Metrics::new(sink.clone()))
        .http()
        .build()
        .unwrap()
        .layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>(7_u32)
        }));
    let request = http::Request::builder()
        .header("content-type", "application/grpc")
        .header("grpc-timeout", "soon")
        .body(())
        .unwrap();
    let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(svc.oneshot(request))
            .ok()
    }));
    (answer.ok().flatten(), sink.0.load(Ordering::Relaxed))
}

#[test]
fn a_malformed_deadline_header_is_logged_with_the_reason() {
    let capture = CaptureSubscriber::default();
    let (answer, malformed) =
        tracing::subscriber::with_default(capture.clone(), call_with_bad_header);
    assert_eq!((answer, malformed), (Some(7), 1));
    let logged = capture.events();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert_eq!(logged[0].level, tracing::Level::DEBUG);
    assert_eq!(logged[0].fields["policy"], "api");
    assert_eq!(logged[0].fields["header"], "grpc-timeout");
}

/// A log backend with a bug: it panics on every event.
struct PanicsOnEvents;

palisade_testkit::subscriber_on_event!(PanicsOnEvents, |_this, _event| {
    panic!("a log backend with a bug");
});

#[test]
fn a_log_backend_that_panics_leaves_the_request_alone() {
    let (answer, malformed) =
        tracing::subscriber::with_default(PanicsOnEvents, call_with_bad_header);
    assert_eq!((answer, malformed), (Some(7), 1));
}

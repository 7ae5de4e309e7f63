//! What the HTTP mapping logs, and that a log backend that panics does not
//! take the answer with it. A test binary of its own: see
//! `palisade_testkit` on capturing `tracing` events.

mod support;

use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use http::StatusCode;
use palisade_http::{ErrorBody, ErrorToResponseLayer, HttpMapping, Problem};
use palisade_testkit::CaptureSubscriber;
use support::{SECRET, error};
use tower::{Layer, ServiceExt, service_fn};

/// Answers `kind`'s error through the layer, on the current thread, so
/// that a thread-local subscriber sees what the layer logs.
fn answer(kind: &'static str) -> http::Response<Bytes> {
    let inner = service_fn(move |()| async move {
        Err::<http::Response<Bytes>, _>(error(kind).expect("an error"))
    });
    let svc = ErrorToResponseLayer::new().layer(inner);
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(svc.oneshot(()))
        .unwrap()
}

#[test]
fn rejections_log_at_debug_and_other_errors_at_error_with_their_text() {
    let capture = CaptureSubscriber::default();
    tracing::subscriber::with_default(capture.clone(), || {
        assert_eq!(
            answer("rate_limited").status(),
            StatusCode::TOO_MANY_REQUESTS
        );
        let res = answer("other");
        assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!std::str::from_utf8(res.body()).unwrap().contains(SECRET));
    });
    let logged = capture.events();
    assert_eq!(logged.len(), 2, "{logged:?}");
    assert_eq!(logged[0].level, tracing::Level::DEBUG);
    assert_eq!(logged[0].fields["policy"], "api");
    assert_eq!(logged[0].fields["reason"], "rate_limited");
    // The text the client does not see is in the log.
    assert_eq!(logged[1].level, tracing::Level::ERROR);
    assert!(logged[1].fields["error"].contains(SECRET), "{logged:?}");
}

/// A log backend with a bug: it panics on every event.
struct PanicsOnEvents;

palisade_testkit::subscriber_on_event!(PanicsOnEvents, |_this, _event| {
    panic!("a log backend with a bug");
});

#[test]
fn a_log_backend_that_panics_leaves_the_answer_alone() {
    tracing::subscriber::with_default(PanicsOnEvents, || {
        for (kind, status) in [
            ("rate_limited", StatusCode::TOO_MANY_REQUESTS),
            ("circuit_open", StatusCode::SERVICE_UNAVAILABLE),
            ("other", StatusCode::INTERNAL_SERVER_ERROR),
        ] {
            let res = std::panic::catch_unwind(|| answer(kind).status());
            assert_eq!(res.ok(), Some(status), "{kind}");
        }
        // A body hook that panics is logged: that log is contained too.
        let mapping = HttpMapping::new().body(|_: &Problem<'_>| -> ErrorBody {
            panic!("a body hook with a bug");
        });
        let res = std::panic::catch_unwind(AssertUnwindSafe(|| {
            mapping.to_response::<Bytes>(&*error("rate_limited").unwrap())
        }));
        let res = res.expect("answered");
        assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    });
}

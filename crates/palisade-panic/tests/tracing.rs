//! The `tracing` events of caught panics, in both flavours.
//!
//! These tests sit in a binary of their own and run one at a time: each
//! installs a capturing subscriber for its thread, and `tracing` caches
//! whether an event site is wanted, process-wide. A test running at the
//! same time without a subscriber could leave the panic's event site
//! marked as unwanted just as another test starts capturing.

mod support;

use std::convert::Infallible;
use std::future::Ready;
use std::sync::Mutex;
use std::task::Poll;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use palisade_panic::CatchPanicLayer;
use palisade_panic::http::CatchPanicHttpLayer;
use support::{CaptureSubscriber, Logged, panicked, poll_once};
use tower::{Layer, Service, service_fn};

type Body = Full<Bytes>;

const SECRET: &str = "connection string postgres://admin:hunter2@db";

/// Runs `f` under a capturing subscriber, one capturing test at a time:
/// what `f` returned, and the events logged meanwhile.
fn capture<T>(f: impl FnOnce() -> T) -> (T, Vec<Logged>) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let _serial = SERIAL
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let subscriber = CaptureSubscriber::default();
    let logged = subscriber.0.clone();
    let value = tracing::subscriber::with_default(subscriber, f);
    let logged = logged.lock().unwrap().clone();
    (value, logged)
}

async fn handler(request: Request<()>) -> Result<Response<Body>, Infallible> {
    if request.uri().path().starts_with("/boom") {
        panic!("{SECRET}");
    }
    Ok(Response::new(Body::from("fine")))
}

fn get(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

#[test]
fn every_caught_panic_is_a_tracing_error_event_with_policy_message_and_location() {
    let svc = CatchPanicLayer::builder().name("logged").build().unwrap();
    let mut svc = svc.layer(service_fn(|_: ()| -> Ready<Result<(), std::io::Error>> {
        panic!("loud")
    }));
    let (err, logged) = capture(|| {
        let mut response = svc.call(());
        match poll_once(&mut response) {
            Poll::Ready(Err(err)) => err,
            _ => panic!("expected a caught panic"),
        }
    });
    let location = panicked(&err).location().unwrap().to_string();
    assert!(location.contains("tracing.rs:"), "{location}");

    let event = logged
        .iter()
        .find(|e| e.fields.get("panic.message").map(String::as_str) == Some("loud"))
        .unwrap_or_else(|| panic!("no event with the panic message in {logged:?}"));
    assert_eq!(event.level, tracing::Level::ERROR);
    assert_eq!(event.fields["message"], "panic caught in service");
    assert_eq!(event.fields["policy"], "logged");
    assert_eq!(event.fields["panic.location"], location);
    assert!(event.fields["panic.backtrace"].contains("tracing.rs"));
}

#[test]
fn the_log_event_carries_method_and_path_but_not_the_query() {
    let mut svc = CatchPanicHttpLayer::builder()
        .name("web")
        .build()
        .unwrap()
        .layer(service_fn(handler));
    let ((), logged) = capture(|| {
        let request = Request::builder()
            .method(Method::DELETE)
            .uri("/boom/users/9?api_key=xyz")
            .body(())
            .unwrap();
        let mut response = Box::pin(svc.call(request));
        // The handler is an async fn: it panics on the first poll.
        match poll_once(&mut response) {
            Poll::Ready(Ok(response)) => {
                assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
            }
            _ => panic!("expected the panic response"),
        }
    });
    let event = logged
        .iter()
        .find(|e| e.fields.contains_key("panic.message"))
        .expect("a panic event");
    assert_eq!(event.level, tracing::Level::ERROR);
    assert_eq!(event.fields["policy"], "web");
    assert_eq!(event.fields["panic.message"], SECRET);
    assert_eq!(event.fields["http.method"], "DELETE");
    assert_eq!(event.fields["http.path"], "/boom/users/9");
    assert!(event.fields["panic.location"].contains("tracing.rs:"));
}

#[test]
fn the_log_event_cuts_long_paths() {
    let mut svc = CatchPanicHttpLayer::new().layer(service_fn(handler));
    let path = format!("/boom/{}", "a".repeat(300));
    let ((), logged) = capture(|| {
        let mut response = Box::pin(svc.call(get(&path)));
        assert!(matches!(poll_once(&mut response), Poll::Ready(Ok(_))));
    });
    let event = logged
        .iter()
        .find(|e| e.fields.contains_key("http.path"))
        .unwrap();
    let logged_path = &event.fields["http.path"];
    assert!(logged_path.ends_with('…'));
    assert!(path.starts_with(logged_path.trim_end_matches('…')));
    assert!(logged_path.len() < 100 + '…'.len_utf8());
}

#[test]
fn a_panic_the_service_catches_itself_is_still_logged_once() {
    let layer = CatchPanicLayer::builder()
        .name("inner-catch")
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| {
        // The service's own code catches its panic: palisade's catch never
        // sees it, and the default print is off inside the layer.
        let caught = std::panic::catch_unwind(|| panic!("swallowed by the service"));
        std::future::ready(Ok::<bool, std::io::Error>(caught.is_err()))
    }));
    let (answer, logged) = capture(|| {
        let mut response = svc.call(());
        let answer = match poll_once(&mut response) {
            Poll::Ready(answer) => answer.unwrap(),
            Poll::Pending => panic!("expected an answer"),
        };
        // A second, clean call logs nothing more.
        let mut again = svc.call(());
        assert!(matches!(poll_once(&mut again), Poll::Ready(Ok(true))));
        answer
    });
    assert!(answer, "the service caught its own panic and answered");
    let swallowed: Vec<_> = logged
        .iter()
        .filter(|e| {
            e.fields.get("panic.message").map(String::as_str) == Some("swallowed by the service")
        })
        .collect();
    assert_eq!(swallowed.len(), 2, "one event per panic: {logged:?}");
    for event in swallowed {
        assert_eq!(event.level, tracing::Level::ERROR);
        assert_eq!(
            event.fields["message"],
            "panic raised and caught inside a service before palisade could catch it"
        );
        assert!(event.fields["panic.location"].contains("tracing.rs:"));
    }
    assert!(
        !logged
            .iter()
            .any(|e| e.fields.get("message").map(String::as_str) == Some("panic caught in service")),
        "palisade did not catch it: {logged:?}"
    );
    assert!(
        palisade_core::panic::take_captured().is_none(),
        "nothing left behind"
    );
}

/// Panics when polled, and again when dropped: a future whose destructor
/// has a bug of its own.
struct PanicsTwice;

impl std::future::Future for PanicsTwice {
    type Output = Result<(), std::io::Error>;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        panic!("first panic")
    }
}

impl Drop for PanicsTwice {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor bug");
        }
    }
}

#[test]
fn a_destructor_that_panics_after_a_caught_panic_is_logged_and_the_first_panic_kept() {
    let layer = CatchPanicLayer::builder().name("twice").build().unwrap();
    let mut svc = layer.layer(service_fn(|_: ()| PanicsTwice));
    let (err, logged) = capture(|| {
        let mut response = svc.call(());
        match poll_once(&mut response) {
            Poll::Ready(Err(err)) => err,
            _ => panic!("expected a caught panic"),
        }
    });
    assert_eq!(panicked(&err).message(), "first panic");
    let second = logged
        .iter()
        .find(|e| e.fields.get("panic.message").map(String::as_str) == Some("destructor bug"))
        .unwrap_or_else(|| panic!("the destructor's panic was not logged: {logged:?}"));
    assert_eq!(second.level, tracing::Level::WARN);
    assert_eq!(second.fields["policy"], "twice");
    assert!(
        second.fields["panic.location"].contains("tracing.rs:"),
        "{second:?}"
    );
    assert_eq!(
        logged
            .iter()
            .filter(
                |e| e.fields.get("message").map(String::as_str) == Some("panic caught in service")
            )
            .count(),
        1,
        "the first panic is the one reported: {logged:?}"
    );
    assert!(
        palisade_core::panic::take_captured().is_none(),
        "nothing left behind"
    );
}

#[test]
fn a_panic_left_unclaimed_by_a_quiet_inner_scope_is_logged_by_a_printing_outer_one() {
    use palisade_core::panic::{CaptureOptions, catch};
    palisade_core::panic::install_hook();
    let printing = CaptureOptions {
        backtrace: false,
        print: true,
    };
    let quiet = CaptureOptions {
        backtrace: false,
        print: false,
    };
    let ((), logged) = capture(|| {
        let outer = catch(printing, || {
            // The inner scope's hook printed nothing, and its caller drops
            // the payload without taking the record.
            let inner = catch(quiet, || -> () { panic!("left unclaimed") });
            assert!(inner.is_err());
        });
        assert!(outer.is_ok());
    });
    assert!(
        logged
            .iter()
            .any(|e| e.fields.get("panic.message").map(String::as_str) == Some("left unclaimed")),
        "nobody printed it, so it must be logged: {logged:?}"
    );
    assert!(palisade_core::panic::take_captured().is_none());
}

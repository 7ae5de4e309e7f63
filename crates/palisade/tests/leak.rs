//! A leaked stack behaves as the stack it came from: the same admissions,
//! rejections, events, handles and released slots, on virtual time.

#![cfg(all(
    feature = "fallback",
    feature = "ratelimit",
    feature = "breaker",
    feature = "timeout",
    feature = "bulkhead",
    feature = "panic"
))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::fallback::{FallbackLayer, source};
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Event, MetricsSink, Rejection, Stack, find_rejection};
use tower::{Layer, Service, ServiceExt, service_fn};

/// Counts rejections and completed calls by layer.
#[derive(Debug, Default)]
struct Tally {
    rejected: AtomicU64,
    panics: AtomicU64,
    timeouts: AtomicU64,
}

impl MetricsSink for Tally {
    fn record(&self, event: &Event<'_>) {
        let counter = match event {
            Event::Rejected { .. } => &self.rejected,
            Event::PanicCaught { .. } => &self.panics,
            Event::TimedOut { .. } => &self.timeouts,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What a request asks of the service.
#[derive(Clone, Copy, Debug)]
enum Ask {
    Answer,
    Fail,
    Panic,
    Hang,
}

async fn serve(ask: Ask) -> Result<&'static str, BoxError> {
    match ask {
        Ask::Answer => Ok("answer"),
        Ask::Fail => Err("dependency failed".into()),
        Ask::Panic => panic!("handler bug"),
        Ask::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok("late")
        }
    }
}

fn rejection(err: &BoxError) -> &'static str {
    match find_rejection(&**err) {
        Some(Rejection::Elapsed(_)) => "elapsed",
        Some(Rejection::RateLimited(_)) => "rate limited",
        Some(Rejection::CircuitOpen(_)) => "circuit open",
        Some(Rejection::Overloaded(_)) => "overloaded",
        Some(Rejection::Panicked(_)) => "panicked",
        _ => "other",
    }
}

#[tokio::test(start_paused = true)]
async fn a_leaked_stack_admits_rejects_and_reports_like_the_stack() {
    let tally = Arc::new(Tally::default());
    let stack = Stack::new("leaked")
        .metrics(tally.clone())
        .rate_limit(RateLimitLayer::builder().quota(7, Duration::from_secs(60)))
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .minimum_calls(100)
                .count_window(100),
        )
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(1)))
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(1))
        .catch_panic(CatchPanicLayer::builder())
        .build()
        .expect("valid")
        .leak();
    let breaker = stack.circuit_breaker().handle();
    let svc = stack.layer(service_fn(serve));

    assert_eq!(svc.clone().oneshot(Ask::Answer).await.unwrap(), "answer");
    let failed = svc.clone().oneshot(Ask::Fail).await.unwrap_err();
    assert_eq!(rejection(&failed), "other");
    let panicked = svc.clone().oneshot(Ask::Panic).await.unwrap_err();
    assert_eq!(rejection(&panicked), "panicked");

    // A hanging call holds the only slot until its deadline: a second call
    // meanwhile finds the bulkhead full.
    let hanging = tokio::spawn(svc.clone().oneshot(Ask::Hang));
    tokio::task::yield_now().await;
    assert_eq!(stack.concurrency_limit().in_flight(), 1);
    let full = svc.clone().oneshot(Ask::Answer).await.unwrap_err();
    assert_eq!(rejection(&full), "overloaded");
    let elapsed = hanging.await.unwrap().unwrap_err();
    assert_eq!(rejection(&elapsed), "elapsed");
    assert_eq!(stack.concurrency_limit().in_flight(), 0);

    // The breaker saw the success, the failure, the panic and the timeout
    // (a full bulkhead is not the dependency's failure).
    let counts = breaker.counts();
    assert_eq!((counts.calls, counts.failures), (4, 3));

    // The handle taken from the leaked layer controls its breaker.
    breaker.force_open();
    let open = svc.clone().oneshot(Ask::Answer).await.unwrap_err();
    assert_eq!(rejection(&open), "circuit open");
    breaker.reset();
    assert_eq!(svc.clone().oneshot(Ask::Answer).await.unwrap(), "answer");
    let counts = breaker.counts();
    assert_eq!(
        (counts.calls, counts.failures),
        (1, 0),
        "reset clears the window"
    );

    // Seven admissions so far (the open breaker's refusal came after the
    // rate limiter): the eighth request is over the quota.
    let limited = svc.clone().oneshot(Ask::Answer).await.unwrap_err();
    assert_eq!(rejection(&limited), "rate limited");

    assert_eq!(tally.panics.load(Ordering::Relaxed), 1);
    assert_eq!(tally.timeouts.load(Ordering::Relaxed), 1);
    // Bulkhead full, breaker open, rate limited.
    assert_eq!(tally.rejected.load(Ordering::Relaxed), 3);
}

#[tokio::test(start_paused = true)]
async fn a_leaked_fallback_answers_for_the_layers_below() {
    let stack = Stack::new("leaked-fallback")
        .fallback(FallbackLayer::builder(source::value("cached")))
        .timeout(TimeoutLayer::builder().timeout(Duration::from_millis(50)))
        .catch_panic(CatchPanicLayer::builder())
        .build()
        .expect("valid")
        .leak();
    let mut svc = stack.layer(service_fn(serve));
    for (ask, expected) in [
        (Ask::Answer, "answer"),
        (Ask::Fail, "cached"),
        (Ask::Panic, "cached"),
        (Ask::Hang, "cached"),
    ] {
        let answer = svc.ready().await.unwrap().call(ask).await.unwrap();
        assert_eq!(answer, expected, "{ask:?}");
    }
}

#[test]
fn leaking_twice_keeps_one_state() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(3)
        .build()
        .expect("valid")
        .leak();
    let again = palisade::Leak::leak(layer.clone());
    let mut first = layer.layer(service_fn(serve));
    let mut second = again.layer(service_fn(serve));
    let waker = std::task::Waker::noop();
    let mut cx = std::task::Context::from_waker(waker);
    assert!(first.poll_ready(&mut cx).is_ready());
    assert!(second.poll_ready(&mut cx).is_ready());
    let _a = first.call(Ask::Hang);
    let _b = second.call(Ask::Hang);
    assert_eq!(
        layer.in_flight(),
        2,
        "both services take slots of one limit"
    );
    assert_eq!(again.in_flight(), 2);
}

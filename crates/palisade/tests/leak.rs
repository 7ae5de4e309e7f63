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

use palisade::breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
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

/// The policy both scripts run under: one slot, a quota of seven a
/// minute, a one-second deadline, a breaker that never trips by itself.
macro_rules! policy {
    ($tally:expr) => {
        Stack::new("leak")
            .metrics($tally.clone())
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
    };
}

/// Runs one fixed sequence of calls through `svc` and writes down what
/// each returned and what the layers report along the way.
async fn script<S>(
    svc: S,
    breaker: CircuitBreakerHandle,
    in_flight: impl Fn() -> usize,
    tally: &Tally,
) -> Vec<String>
where
    S: Service<Ask, Response = &'static str, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut log = Vec::new();
    let outcome = |result: Result<&'static str, BoxError>| match result {
        Ok(answer) => answer.to_owned(),
        Err(err) => rejection(&err).to_owned(),
    };
    for ask in [Ask::Answer, Ask::Fail, Ask::Panic] {
        log.push(outcome(svc.clone().oneshot(ask).await));
    }
    // A hanging call holds the only slot until its deadline: a second
    // call meanwhile finds the bulkhead full.
    let hanging = tokio::spawn(svc.clone().oneshot(Ask::Hang));
    tokio::task::yield_now().await;
    log.push(format!("in flight {}", in_flight()));
    log.push(outcome(svc.clone().oneshot(Ask::Answer).await));
    log.push(outcome(hanging.await.expect("no panic escapes")));
    log.push(format!("in flight {}", in_flight()));
    let counts = breaker.counts();
    log.push(format!(
        "breaker {} calls {} failures",
        counts.calls, counts.failures
    ));
    breaker.force_open();
    log.push(outcome(svc.clone().oneshot(Ask::Answer).await));
    breaker.reset();
    log.push(outcome(svc.clone().oneshot(Ask::Answer).await));
    log.push(outcome(svc.clone().oneshot(Ask::Answer).await));
    log.push(format!(
        "rejected {} panics {} timeouts {}",
        tally.rejected.load(Ordering::Relaxed),
        tally.panics.load(Ordering::Relaxed),
        tally.timeouts.load(Ordering::Relaxed),
    ));
    log
}

#[tokio::test(start_paused = true)]
async fn a_leaked_stack_admits_rejects_and_reports_like_the_stack() {
    let counted_tally = Arc::new(Tally::default());
    let counted = policy!(counted_tally);
    let counted_log = script(
        counted.layer(service_fn(serve)),
        counted.circuit_breaker().handle(),
        || counted.concurrency_limit().in_flight(),
        &counted_tally,
    )
    .await;

    let leaked_tally = Arc::new(Tally::default());
    let leaked = policy!(leaked_tally).leak();
    let leaked_log = script(
        leaked.layer(service_fn(serve)),
        leaked.circuit_breaker().handle(),
        || leaked.concurrency_limit().in_flight(),
        &leaked_tally,
    )
    .await;

    assert_eq!(leaked_log, counted_log);
    let expected = [
        "answer",
        "other",
        "panicked",
        "in flight 1",
        "overloaded",
        "elapsed",
        "in flight 0",
        // The success, the failure, the panic and the timeout; a full
        // bulkhead is not the dependency's failure.
        "breaker 4 calls 3 failures",
        // The handle taken from the layer controls its breaker.
        "circuit open",
        "answer",
        // Seven admissions so far (the open breaker refused after the rate
        // limiter admitted): the eighth request is over the quota.
        "rate limited",
        "rejected 3 panics 1 timeouts 1",
    ];
    assert_eq!(leaked_log, expected);
}

#[tokio::test(start_paused = true)]
async fn a_leaked_bulkhead_queues_hands_over_and_lets_waiters_leave() {
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .queue(2)
        .max_wait(Duration::from_secs(5))
        .build()
        .expect("valid")
        .leak();
    let svc = layer.layer(service_fn(serve));
    let holder = tokio::spawn(svc.clone().oneshot(Ask::Hang));
    tokio::task::yield_now().await;
    // One waiter is given the slot when the holder ends; another leaves
    // the queue when its caller gives up.
    let waiter = tokio::spawn(svc.clone().oneshot(Ask::Answer));
    let quitter = tokio::spawn(svc.clone().oneshot(Ask::Answer));
    tokio::task::yield_now().await;
    assert_eq!((layer.in_flight(), layer.waiting()), (1, 2));
    quitter.abort();
    let _ = quitter.await;
    assert_eq!(layer.waiting(), 1);
    holder.abort();
    let _ = holder.await;
    assert_eq!(waiter.await.unwrap().unwrap(), "answer");
    assert_eq!((layer.in_flight(), layer.waiting()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn a_leaked_rate_limiter_makes_callers_wait_their_turn() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(1))
        .wait_up_to(Duration::from_secs(5))
        .build()
        .expect("valid")
        .leak();
    let svc = layer.layer(service_fn(serve));
    let start = tokio::time::Instant::now();
    for _ in 0..3 {
        assert_eq!(svc.clone().oneshot(Ask::Answer).await.unwrap(), "answer");
    }
    // The second and third calls waited a second each for their turn.
    assert_eq!(start.elapsed(), Duration::from_secs(2));
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

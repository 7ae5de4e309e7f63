//! Queueing at the stack's bulkhead is local overload, not a failure of
//! the service: it must not open the circuit.

#![cfg(all(feature = "breaker", feature = "timeout", feature = "bulkhead"))]

use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, Overloaded, Stack};
use palisade_core::CircuitState;
use tower::{Layer, Service, ServiceExt, service_fn};

/// A healthy service that answers in `millis`.
fn answers_in(
    millis: u64,
) -> impl Service<(), Response = (), Error = BoxError, Future = impl Send> + Clone {
    service_fn(move |(): ()| async move {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        Ok::<_, BoxError>(())
    })
}

/// Sends `n` calls at once through `svc` and checks each is answered.
async fn all_answered<S>(svc: &S, n: usize)
where
    S: Service<(), Response = (), Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let calls: Vec<_> = (0..n)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
}

/// One slot, and a queue that holds calls for up to 10 s.
fn one_queued_slot() -> palisade::bulkhead::BulkheadLayerBuilder {
    BulkheadLayer::builder()
        .max_concurrent(1)
        .max_wait(Duration::from_secs(10))
        .queue(10)
}

/// Six calls in the window, slow from 500 ms, open at half of them slow.
fn slow_from_half_a_second() -> palisade::breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .count_window(6)
        .minimum_calls(6)
        .slow_call_duration(Duration::from_millis(500))
        .slow_call_rate_threshold(0.5)
}

#[tokio::test(start_paused = true)]
async fn requests_that_time_out_in_the_bulkheads_queue_do_not_open_the_circuit() {
    // A healthy service that answers in 100 ms, one call at a time, and a
    // 1 s deadline: of 20 concurrent requests, the ones still queued at
    // 1 s are turned away, and the breaker must not count them.
    let policy = Stack::new("api")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .count_window(20)
                .minimum_calls(20),
        )
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(1)))
        .concurrency_limit(
            BulkheadLayer::builder()
                .max_concurrent(1)
                .max_wait(Duration::from_secs(30))
                .queue(100),
        )
        .build()
        .unwrap();
    let svc = policy.layer(service_fn(|(): ()| async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Ok::<_, BoxError>(())
    }));
    let calls: Vec<_> = (0..20)
        .map(|_| tokio::spawn(svc.clone().oneshot(())))
        .collect();
    let (mut served, mut turned_away) = (0, 0);
    for call in calls {
        match call.await.unwrap() {
            Ok(()) => served += 1,
            Err(err) => {
                assert!(err.is::<Overloaded>(), "not Overloaded: {err}");
                turned_away += 1;
            }
        }
    }
    assert_eq!((served, turned_away), (10, 10));
    let breaker = policy.circuit_breaker().handle();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.counts().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn time_queued_at_the_bulkhead_does_not_make_a_fast_service_slow() {
    // A healthy service that answers in 200 ms, one call at a time, and
    // calls slow from 500 ms: of 6 concurrent calls, all but the first
    // three wait in the queue long enough that, timed from the breaker's
    // admission, they would count as slow and open the circuit.
    let policy = Stack::new("api")
        .circuit_breaker(slow_from_half_a_second())
        .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(10)))
        .concurrency_limit(one_queued_slot())
        .build()
        .unwrap();
    let started = tokio::time::Instant::now();
    all_answered(&policy.layer(answers_in(200)), 6).await;
    // The calls did queue: one after the other.
    assert_eq!(started.elapsed(), Duration::from_millis(1200));
    let breaker = policy.circuit_breaker().handle();
    assert_eq!(breaker.counts().calls, 6);
    assert_eq!(
        breaker.counts().slow,
        0,
        "the queue's wait counted as latency"
    );
    assert_eq!(breaker.state(), CircuitState::Closed);

    // A service that is slow itself still counts as slow.
    let slow = policy.layer(answers_in(600));
    for _ in 0..3 {
        slow.clone().oneshot(()).await.unwrap();
    }
    // Three of the six calls in the window slow: the rate reaches 0.5.
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_in_between_does_not_hide_the_queue_from_the_one_above() {
    // A global breaker that times calls, over a default one (a keyed
    // per-host breaker, say), over one queued slot: both leave the
    // queue's wait out.
    let outer = slow_from_half_a_second().build().unwrap();
    let inner = CircuitBreakerLayer::builder().build().unwrap();
    let bulkhead = one_queued_slot().build().unwrap();
    all_answered(
        &outer.layer(inner.layer(bulkhead.layer(answers_in(200)))),
        6,
    )
    .await;
    let handle = outer.handle();
    assert_eq!(handle.counts().calls, 6);
    assert_eq!(
        handle.counts().slow,
        0,
        "the queue's wait counted as latency"
    );
    assert_eq!(handle.state(), CircuitState::Closed);
}

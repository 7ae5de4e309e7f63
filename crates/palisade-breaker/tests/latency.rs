//! The latency a breaker judges: time a call spends queued for local
//! capacity below the breaker (see `palisade_core::queue`) is left out
//! once, however many waits overlap (reported as a bulkhead reports them,
//! in the poll that lets each queued call through), and a clock far from
//! the breaker's start does not inflate it.

mod common;

use std::time::Duration;

use common::{Events, Seen};
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState, ManualClock, Outcome};
use tower::{Layer, ServiceExt, service_fn};

/// The latency the breaker reported for the one call `run` makes.
async fn latency_of<F>(run: fn() -> F) -> Duration
where
    F: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    let events = Events::default();
    let layer = CircuitBreakerLayer::builder()
        .measure_latency(true)
        .metrics(events.metrics())
        .build()
        .unwrap();
    layer
        .layer(service_fn(move |()| run()))
        .oneshot(())
        .await
        .unwrap();
    events
        .all()
        .into_iter()
        .find_map(|e| match e {
            Seen::Completed(Outcome::Success, latency) => latency,
            _ => None,
        })
        .unwrap()
}

async fn wait_then_report(queued: u64) {
    tokio::time::sleep(Duration::from_secs(queued)).await;
    palisade_core::queue::report(Duration::from_secs(queued));
}

#[tokio::test(start_paused = true)]
async fn waits_that_end_together_are_left_out_once() {
    // Two sub-calls queued side by side leave the queue together after
    // 5 s, then run 10 s: 10 s of latency, not 5.
    let latency = latency_of(|| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        palisade_core::queue::report(Duration::from_secs(5));
        palisade_core::queue::report(Duration::from_secs(5));
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok(())
    })
    .await;
    assert_eq!(latency, Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn waits_that_end_one_after_another_are_left_out_once() {
    // Three sub-calls queued at once for one slot leave the queue at 1 s,
    // 2 s and 3 s, each in a poll of its own, and the last runs until 4 s:
    // the call was queued from 0 to 3 s.
    let latency = latency_of(|| async {
        tokio::join!(
            wait_then_report(1),
            wait_then_report(2),
            wait_then_report(3)
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
    assert_eq!(latency, Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn waits_apart_are_each_left_out() {
    // Work 1 s, queued 2 s, work 1 s, queued 3 s, work 1 s.
    let latency = latency_of(|| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_then_report(2).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        wait_then_report(3).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok(())
    })
    .await;
    assert_eq!(latency, Duration::from_secs(3));
}

#[tokio::test]
async fn a_call_decades_after_the_breaker_started_is_timed_right() {
    let clock = ManualClock::new();
    let events = Events::default();
    let layer = CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .metrics(events.metrics())
        .count_window(1)
        .minimum_calls(1)
        .slow_call_duration(Duration::from_secs(1))
        .slow_call_rate_threshold(1.0)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(()) }));
    for years in [40, 80] {
        clock.advance(Duration::from_secs(years * 365 * 86_400));
        svc.clone().oneshot(()).await.unwrap();
    }
    let latencies: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Seen::Completed(Outcome::Success, latency) => latency,
            _ => None,
        })
        .collect();
    assert_eq!(latencies, [Duration::ZERO, Duration::ZERO]);
    assert_eq!(layer.handle().state(), CircuitState::Closed);
}

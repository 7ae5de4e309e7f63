//! The clock reads each layer documents, counted on a manual clock: a
//! clock read is the one cost beyond atomics a layer's happy path may
//! have, so each is held to what its docs promise per call.

use std::convert::Infallible;
use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::bulkhead::adaptive::{AdaptiveLimit, Aimd};
use palisade::core::ManualClock;
use palisade::ratelimit::RateLimitLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

const CALLS: u64 = 10;

/// Sends `CALLS` requests through `svc` and returns the clock reads they
/// made, after one call to warm up.
async fn reads_per_call<S>(manual: &ManualClock, svc: S) -> u64
where
    S: Service<u32, Response = u32> + Clone,
    S::Error: std::fmt::Debug,
{
    svc.clone().oneshot(0).await.unwrap();
    let before = manual.reads();
    for n in 0..CALLS {
        svc.clone().oneshot(n as u32).await.unwrap();
    }
    let reads = manual.reads() - before;
    assert_eq!(reads % CALLS, 0, "{reads} reads for {CALLS} calls");
    reads / CALLS
}

fn echo() -> impl Service<u32, Response = u32, Error = Infallible, Future: Send> + Clone {
    service_fn(|n: u32| async move { Ok::<_, Infallible>(n) })
}

#[tokio::test]
async fn a_rate_limit_admission_reads_the_clock_once() {
    let manual = ManualClock::new();
    let layer = RateLimitLayer::builder()
        .quota(1_000_000, Duration::from_secs(1))
        .clock(manual.clock())
        .build()
        .unwrap();
    assert_eq!(reads_per_call(&manual, layer.layer(echo())).await, 1);
}

#[tokio::test]
async fn a_fixed_bulkhead_reads_no_clock_and_an_adaptive_one_twice() {
    let manual = ManualClock::new();
    let fixed = BulkheadLayer::builder()
        .max_concurrent(8)
        .clock(manual.clock())
        .build()
        .unwrap();
    assert_eq!(reads_per_call(&manual, fixed.layer(echo())).await, 0);
    let adaptive = BulkheadLayer::builder()
        .adaptive(AdaptiveLimit::new(Aimd::new()))
        .clock(manual.clock())
        .build()
        .unwrap();
    assert_eq!(reads_per_call(&manual, adaptive.layer(echo())).await, 2);
}

#[tokio::test]
async fn a_closed_breaker_reads_the_clock_only_for_what_needs_it() {
    let manual = ManualClock::new();
    let plain = CircuitBreakerLayer::builder()
        .clock(manual.clock())
        .build()
        .unwrap();
    assert_eq!(reads_per_call(&manual, plain.layer(echo())).await, 0);
    let slow_calls = CircuitBreakerLayer::builder()
        .slow_call_duration(Duration::from_secs(1))
        .clock(manual.clock())
        .build()
        .unwrap();
    assert_eq!(reads_per_call(&manual, slow_calls.layer(echo())).await, 2);
    let time_window = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10), 10)
        .clock(manual.clock())
        .build()
        .unwrap();
    // The time window reads the clock when the call ends, for its bucket.
    assert_eq!(reads_per_call(&manual, time_window.layer(echo())).await, 1);
}

//! The closed-state hot path (admission, the inner call, recording the
//! outcome) allocates nothing, with or without a metrics sink, slow-call
//! detection or a time window. A refusal allocates exactly its error box.
//!
//! `allocation_counter` counts the current thread only, so every future is
//! polled by hand on this thread.

mod common;

use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::classify::ServerErrorsAsFailures;
use palisade_core::{BoxError, ManualClock, Metrics, NoopSink};
use tower::{Layer, Service, service_fn};

/// A zero-sized error: boxing it allocates nothing, so the failure path
/// measures the breaker alone.
#[derive(Debug)]
struct Down;

impl std::fmt::Display for Down {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("down")
    }
}

impl std::error::Error for Down {}

fn ready_ok(fail: bool) -> std::future::Ready<Result<u32, Down>> {
    std::future::ready(if fail { Err(Down) } else { Ok(7) })
}

#[test]
fn closed_admission_and_recording_allocate_nothing() {
    let clock = ManualClock::new();
    let layers = [
        ("defaults", CircuitBreakerLayer::builder().build().unwrap()),
        (
            "noop sink",
            CircuitBreakerLayer::builder()
                .metrics(Metrics::new(NoopSink))
                .build()
                .unwrap(),
        ),
        (
            "slow calls, latency, time window",
            CircuitBreakerLayer::builder()
                .clock(clock.clock())
                .metrics(Metrics::new(NoopSink))
                .time_window(Duration::from_secs(10), 10)
                .slow_call_duration(Duration::from_millis(100))
                .measure_latency(true)
                .build()
                .unwrap(),
        ),
        (
            "shadow mode",
            CircuitBreakerLayer::builder().build().unwrap(),
        ),
    ];
    layers[3].1.handle().metrics_only();
    for (name, layer) in &layers {
        let mut svc = layer.layer(service_fn(|fail: bool| ready_ok(fail)));
        // Warm up anything lazily initialised.
        for i in 0..10 {
            let _ = common::now(svc.call(i % 5 == 0));
        }
        let info = allocation_counter::measure(|| {
            for i in 0..1_000 {
                let result = common::now(svc.call(i % 7 == 0));
                std::hint::black_box(result.is_ok());
            }
        });
        assert_eq!(info.count_total, 0, "{name}: {info:?}");
        assert!(
            layer.handle().counts().calls > 0,
            "{name}: calls were recorded"
        );
    }
    // The counting harness does see allocations.
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(1_u8));
    });
    assert_eq!(control.count_total, 1);
}

#[test]
fn http_classification_allocates_nothing() {
    let layer = CircuitBreakerLayer::builder()
        .classifier(ServerErrorsAsFailures)
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|status: u16| {
        std::future::ready(Ok::<_, BoxError>(
            http::Response::builder().status(status).body(()).unwrap(),
        ))
    }));
    let _ = common::now(svc.call(200));
    let info = allocation_counter::measure(|| {
        for i in 0..500 {
            let status = if i % 10 == 0 { 503 } else { 200 };
            let _ = std::hint::black_box(common::now(svc.call(status)));
        }
    });
    // Building an `http::Response` allocates its header map; count only what
    // the breaker adds by measuring the bare service the same way.
    let mut bare = service_fn(|status: u16| {
        std::future::ready(Ok::<_, BoxError>(
            http::Response::builder().status(status).body(()).unwrap(),
        ))
    });
    let baseline = allocation_counter::measure(|| {
        for i in 0..500 {
            let status = if i % 10 == 0 { 503 } else { 200 };
            let _ = std::hint::black_box(common::now(bare.call(status)));
        }
    });
    assert_eq!(
        info.count_total, baseline.count_total,
        "{info:?} vs {baseline:?}"
    );
    // The window holds the last 100 calls, one in ten of them 503.
    assert_eq!(layer.handle().counts().failures, 10);
}

#[test]
fn a_refusal_allocates_only_its_error() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().force_open();
    let mut svc = layer.layer(service_fn(|fail: bool| ready_ok(fail)));
    let _ = common::now(svc.call(false));
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            let _ = std::hint::black_box(common::now(svc.call(false)));
        }
    });
    assert_eq!(info.count_total, 100, "one box per refusal: {info:?}");
}

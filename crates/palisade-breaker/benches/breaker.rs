//! The cost of the circuit breaker on the call path, next to the bare
//! service (and to tower-resilience's circuit breaker).
//!
//! - `closed`: a call through a closed breaker (admission, inner call,
//!   classification, recording), with the defaults, with a metrics sink,
//!   and with slow-call detection (two clock reads per call).
//! - `open`: a call refused by an open breaker (no inner call; the cost
//!   is the decision, the clock read for `retry_after` and the error box).
//! - `keyed`: a keyed breaker whose map is full, called with a key it
//!   tracks, and with a new key every call (each evicts a closed breaker),
//!   for maps of 64, 4,096 and 65,536 keys: the search for a victim is
//!   bounded, so a new key's cost barely grows with the map.
//!
//! Every iteration is `ready().await` plus `call().await` on a
//! current-thread runtime; services are built outside the timed loop.
//!
//! Run: `cargo bench -p palisade-breaker -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, Metrics, NoopSink};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn bare() -> impl Service<
    u64,
    Response = u64,
    Error = BoxError,
    Future = std::future::Ready<Result<u64, BoxError>>,
> + Clone {
    service_fn(|x: u64| std::future::ready(Ok::<_, BoxError>(x)))
}

/// Times `iters` calls of a clone of `svc`.
fn bench_service<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    svc: S,
) where
    S: Service<u64> + Clone + 'static,
    S::Error: std::fmt::Debug,
{
    c.bench_function(name, |b| {
        b.to_async(rt).iter_custom(|iters| {
            let mut svc = svc.clone();
            async move {
                let start = Instant::now();
                for i in 0..iters {
                    let ready = match svc.ready().await {
                        Ok(ready) => ready,
                        Err(_) => unreachable!("the services are always ready"),
                    };
                    let _ = black_box(ready.call(black_box(i)).await);
                }
                start.elapsed()
            }
        });
    });
}

fn closed(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("closed");
    bench_service(&mut group, &rt, "bare", bare());
    let defaults = CircuitBreakerLayer::builder().build().unwrap();
    bench_service(&mut group, &rt, "palisade", defaults.layer(bare()));
    let with_sink = CircuitBreakerLayer::builder()
        .metrics(Metrics::new(NoopSink))
        .build()
        .unwrap();
    bench_service(
        &mut group,
        &rt,
        "palisade_with_sink",
        with_sink.layer(bare()),
    );
    let slow = CircuitBreakerLayer::builder()
        .slow_call_duration(Duration::from_secs(1))
        .build()
        .unwrap();
    bench_service(&mut group, &rt, "palisade_slow_calls", slow.layer(bare()));
    let peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .failure_rate_threshold(0.5)
        .sliding_window_size(100)
        .minimum_number_of_calls(20)
        .build()
        .unwrap();
    bench_service(&mut group, &rt, "tower_resilience", peer.layer(bare()));
    group.finish();
}

fn open(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("open");
    bench_service(&mut group, &rt, "bare", bare());
    // Opened by failures, so each refusal computes `retry_after`.
    let layer = CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(3600))
        .build()
        .unwrap();
    let failing = layer.layer(service_fn(|_: u64| {
        std::future::ready(Err::<u64, BoxError>("down".into()))
    }));
    rt.block_on(failing.clone().oneshot(0)).unwrap_err();
    assert_eq!(layer.handle().state(), palisade_core::CircuitState::Open);
    let svc = layer.layer(bare());
    bench_service(&mut group, &rt, "palisade_rejection", svc);
    let peer = tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .sliding_window_size(1)
        .minimum_number_of_calls(1)
        .wait_duration_in_open(Duration::from_secs(3600))
        .build()
        .unwrap();
    // Each `layer` call of this peer makes a new breaker: open the very
    // service that is measured, with a request that fails.
    let svc = peer.layer(service_fn(|x: u64| {
        std::future::ready(if x == u64::MAX {
            Err::<u64, BoxError>("down".into())
        } else {
            Ok(x)
        })
    }));
    rt.block_on(svc.clone().oneshot(u64::MAX)).unwrap_err();
    assert!(
        rt.block_on(svc.clone().oneshot(0)).is_err(),
        "the peer is open"
    );
    bench_service(&mut group, &rt, "tower_resilience_rejection", svc);
    group.finish();
}

fn keyed(c: &mut Criterion) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    let rt = runtime();
    let mut group = c.benchmark_group("keyed");
    for max_keys in [64, 4_096, 65_536] {
        // Keys come from a counter, so every call brings a key never seen.
        let fresh = Arc::new(AtomicU64::new(0));
        let layer = CircuitBreakerLayer::builder()
            .build_keyed(max_keys, move |_: &u64| {
                fresh.fetch_add(1, Ordering::Relaxed)
            })
            .unwrap();
        let svc = layer.layer(bare());
        for _ in 0..max_keys {
            rt.block_on(svc.clone().oneshot(0)).unwrap();
        }
        assert_eq!(layer.handle().len(), max_keys);
        bench_service(&mut group, &rt, &format!("new_key_{max_keys}"), svc);
        let known = CircuitBreakerLayer::builder()
            .build_keyed(max_keys, |_: &u64| 0_u64)
            .unwrap();
        bench_service(
            &mut group,
            &rt,
            &format!("known_key_{max_keys}"),
            known.layer(bare()),
        );
    }
    group.finish();
}

criterion_group!(benches, closed, open, keyed);
criterion_main!(benches);

//! The cost of a chaos layer that injects nothing, against the bare service.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_chaos::ChaosLayer;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Runs `iters` sequential `ready().await` + `call().await` on one
/// current-thread runtime and returns the time taken.
fn drive<S>(rt: &Runtime, svc: &S, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    rt.block_on(async {
        let start = Instant::now();
        for i in 0..iters {
            let ready = svc.ready().await.unwrap();
            black_box(ready.call(black_box(i)).await.unwrap());
        }
        start.elapsed()
    })
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bare = service_fn(|x: u64| std::future::ready(Ok::<_, std::io::Error>(x)));
    let disabled = ChaosLayer::disabled().layer(bare);
    let enabled_idle = ChaosLayer::builder().build().unwrap().layer(bare);

    // The cheapest tower layer there is: a baseline for "one more layer".
    let map_err = tower::util::MapErrLayer::new(palisade_core::BoxError::from).layer(bare);

    let timeout = tower::timeout::TimeoutLayer::new(Duration::from_secs(1)).layer(bare);

    let mut group = c.benchmark_group("chaos");
    group.bench_function("tower_timeout", |b| {
        b.iter_custom(|n| drive(&rt, &timeout, n));
    });
    group.bench_function("tower_map_err", |b| {
        b.iter_custom(|n| drive(&rt, &map_err, n));
    });
    group.bench_function("bare", |b| b.iter_custom(|n| drive(&rt, &bare, n)));
    group.bench_function("disabled", |b| {
        b.iter_custom(|n| drive(&rt, &disabled, n));
    });
    group.bench_function("enabled_zero_rates", |b| {
        b.iter_custom(|n| drive(&rt, &enabled_idle, n));
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Admission and rejection cost, global and keyed, against the bare service
//! and tower's `RateLimit` (not GCRA; it parks in `poll_ready` once its
//! budget is spent, so it is benched on admissions only), plus the keyed
//! store against governor's default DashMap store.
//!
//! Run: `cargo bench -p palisade-ratelimit --bench ratelimit -- --warm-up-time 1 --measurement-time 3`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_ratelimit::RateLimitLayer;
use palisade_ratelimit::key::KeyFn;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn bare()
-> impl Service<u64, Response = u64, Error = Infallible, Future = Ready<Result<u64, Infallible>>> + Clone
{
    service_fn(|n: u64| ready(Ok::<_, Infallible>(n)))
}

/// Times `iters` sequential `ready().await` + `call().await` on one service
/// built outside the timed region.
fn run<S>(rt: &Runtime, mut svc: S, iters: u64, key_space: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        for n in 0..iters {
            let ready = svc.ready().await.unwrap();
            let _ = black_box(ready.call(n % key_space).await);
        }
        start.elapsed()
    })
}

const PLENTY: u32 = 1_000_000_000;

/// A per-key quota that never refuses in a bench run, yet keeps every key
/// busy (its bucket never full again), so keys stay tracked instead of
/// being evicted and inserted again: 100 per second, a burst of 10^8.
fn steady<K, H>(
    builder: palisade_ratelimit::RateLimitBuilder<K, H>,
) -> palisade_ratelimit::RateLimitBuilder<K, H> {
    builder
        .quota(100, Duration::from_secs(1))
        .burst(100_000_000)
}

fn admit(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("admit");
    group.bench_function("global/bare", |b| {
        b.iter_custom(|iters| run(&rt, bare(), iters, 1));
    });
    group.bench_function("global/palisade", |b| {
        b.iter_custom(|iters| {
            let layer = RateLimitLayer::builder()
                .quota(PLENTY, Duration::from_secs(1))
                .build()
                .unwrap();
            run(&rt, layer.layer(bare()), iters, 1)
        });
    });
    group.bench_function("global/tower", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Built inside the runtime: it owns a timer.
                let svc = tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1))
                    .layer(bare());
                run_async(svc, iters).await
            })
        });
    });
    group.bench_function("keyed/palisade", |b| {
        b.iter_custom(|iters| {
            let layer = steady(RateLimitLayer::builder())
                .keyed_by(KeyFn::new(|n: &u64| Some(*n)))
                .build()
                .unwrap();
            // Every key is known before timing starts.
            for n in 0..1_000_u64 {
                layer.limiter().check_key(&n).unwrap();
            }
            run(&rt, layer.layer(bare()), iters, 1_000)
        });
    });
    group.finish();
}

/// The timed loop of [`run`], for a service built inside the runtime.
async fn run_async<S>(mut svc: S, iters: u64) -> Duration
where
    S: Service<u64>,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    for n in 0..iters {
        let ready = svc.ready().await.unwrap();
        let _ = black_box(ready.call(n).await);
    }
    start.elapsed()
}

fn reject(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("reject");
    group.bench_function("global/palisade", |b| {
        b.iter_custom(|iters| {
            let layer = RateLimitLayer::builder()
                .quota(1, Duration::from_secs(3600))
                .build()
                .unwrap();
            let _ = layer.limiter().check();
            run(&rt, layer.layer(bare()), iters, 1)
        });
    });
    group.bench_function("keyed/palisade", |b| {
        b.iter_custom(|iters| {
            let layer = RateLimitLayer::builder()
                .quota(1, Duration::from_secs(3600))
                .keyed_by(KeyFn::new(|n: &u64| Some(*n)))
                .build()
                .unwrap();
            for n in 0..1_000_u64 {
                let _ = layer.limiter().check_key(&n);
            }
            run(&rt, layer.layer(bare()), iters, 1_000)
        });
    });
    group.finish();
}

/// The keyed store alone: palisade's lock-free table against governor's
/// default DashMap store, 10 000 known keys, no service around them.
fn store(c: &mut Criterion) {
    let mut group = c.benchmark_group("store");
    let keys = 10_000_u64;
    group.bench_function("palisade_table", |b| {
        // A cap of twice the keys: the table is as warm in cache as a map
        // holding the same keys.
        let layer = steady(RateLimitLayer::builder())
            .max_keys(20_000)
            .keyed_by(KeyFn::new(|n: &u64| Some(*n)))
            .build()
            .unwrap();
        let limiter = layer.limiter();
        for n in 0..keys {
            limiter.check_key(&n).unwrap();
        }
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % keys;
            black_box(limiter.check_key(&n).is_ok())
        });
    });
    group.bench_function("governor_dashmap", |b| {
        let quota = governor::Quota::with_period(Duration::from_millis(10))
            .unwrap()
            .allow_burst(NonZeroU32::new(100_000_000).unwrap());
        let limiter = governor::RateLimiter::dashmap(quota);
        for n in 0..keys {
            limiter.check_key(&n).unwrap();
        }
        let mut n = 0;
        b.iter(|| {
            n = (n + 1) % keys;
            black_box(limiter.check_key(&n).is_ok())
        });
    });
    group.finish();
}

criterion_group!(benches, admit, reject, store);
criterion_main!(benches);

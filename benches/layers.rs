//! Each palisade layer alone, side by side with the bare service, tower's
//! counterpart (`Timeout`, `ConcurrencyLimit`, `LoadShed`, `RateLimit`,
//! tower-http's `CatchPanic` and `Timeout`) and tower-resilience's
//! (time limiter, bulkhead, rate limiter, circuit breaker, fallback); then
//! the cost of one rejected request next to one admitted by the same layer.
//!
//! Every iteration is `ready().await` + `call().await` on a current-thread
//! runtime; every service is built before timing starts.
//!
//! Run: `cargo bench -p palisade-workspace --bench layers -- --warm-up-time 1 --measurement-time 2`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder};

mod support;
use support::{Echo, Expect, Holding, drive, http_request, u64_request};

/// Benches `svc` as `name` in `group`, for `u64` requests.
fn bench_u64<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    svc: S,
    expect: Expect,
) where
    S: Service<u64> + Clone,
    S::Response: support::Served,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| drive(rt, &svc, iters, u64_request, expect));
    });
}

/// Benches `svc` as `name` in `group`, for `http::Request<()>` requests.
fn bench_http<S>(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    rt: &Runtime,
    name: &str,
    svc: S,
) where
    S: Service<http::Request<()>> + Clone,
    S::Response: support::Served,
    S::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| drive(rt, &svc, iters, http_request, Expect::Ok));
    });
}

fn timeout(c: &mut Criterion) {
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_timeout");
    bench_u64(&mut group, &rt, "bare", Echo, Expect::Ok);
    let svc = support::palisade_timeout().layer(Echo);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    let svc = tower::timeout::TimeoutLayer::new(support::TIMEOUT).layer(Echo);
    bench_u64(&mut group, &rt, "tower", svc, Expect::Ok);
    let svc = support::peer_time_limiter().layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    group.finish();

    // Around a call that waits once: every timeout starts its timer.
    let mut group = c.benchmark_group("layer_timeout_waiting");
    bench_u64(&mut group, &rt, "bare", support::WaitsOnce, Expect::Ok);
    let svc = support::palisade_timeout().layer(support::WaitsOnce);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    let svc = tower::timeout::TimeoutLayer::new(support::TIMEOUT).layer(support::WaitsOnce);
    bench_u64(&mut group, &rt, "tower", svc, Expect::Ok);
    let svc = support::peer_time_limiter().layer(support::WaitsOnce);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    group.finish();

    // The HTTP flavours: palisade's reads the request's deadline sources.
    let mut group = c.benchmark_group("layer_timeout_http");
    bench_http(&mut group, &rt, "bare", Echo);
    let svc = support::http_timeout().build().expect("valid").layer(Echo);
    bench_http(&mut group, &rt, "palisade", svc);
    let svc = support::http_timeout_with_extension()
        .build()
        .expect("valid")
        .layer(Echo);
    bench_http(&mut group, &rt, "palisade_extension", svc);
    // tower's `Timeout` takes any request type: the HTTP stack's "≤ 3×
    // tower `Timeout`" target is judged against this row.
    let svc = tower::timeout::TimeoutLayer::new(support::TIMEOUT).layer(Echo);
    bench_http(&mut group, &rt, "tower", svc);
    let svc = tower_http::timeout::TimeoutLayer::with_status_code(
        http::StatusCode::GATEWAY_TIMEOUT,
        support::TIMEOUT,
    )
    .layer(Echo);
    bench_http(&mut group, &rt, "tower_http", svc);
    group.finish();
}

fn bulkhead(c: &mut Criterion) {
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_bulkhead");
    bench_u64(&mut group, &rt, "bare", Echo, Expect::Ok);
    let svc = support::palisade_bulkhead(support::SLOTS).layer(Echo);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    let svc = tower::limit::ConcurrencyLimitLayer::new(support::SLOTS).layer(Echo);
    bench_u64(&mut group, &rt, "tower", svc, Expect::Ok);
    let svc = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(support::SLOTS)
        .service(Echo);
    bench_u64(&mut group, &rt, "tower_load_shed", svc, Expect::Ok);
    let svc = support::peer_bulkhead(support::SLOTS).layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    group.finish();
}

fn rate_limit(c: &mut Criterion) {
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_ratelimit");
    bench_u64(&mut group, &rt, "bare", Echo, Expect::Ok);
    let svc = support::palisade_rate_limit().layer(Echo);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    // tower's limiter cannot be cloned: one per batch, built inside the
    // runtime (it owns a timer), before timing starts.
    group.bench_function("tower", |b| {
        b.iter_custom(|iters| {
            let mut svc = {
                let _guard = rt.enter();
                tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(Echo)
            };
            support::drive_mut(&rt, &mut svc, iters, u64_request, Expect::Ok)
        });
    });
    let svc =
        support::peer_rate_limit(support::PLENTY as usize, Duration::from_secs(1)).layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    let svc = {
        let _guard = rt.enter();
        SharedClockFloor::new(Echo)
    };
    bench_u64(&mut group, &rt, "floor", svc, Expect::Ok);
    group.finish();
}

/// The least a limit shared by every clone of a service does per request,
/// and no more: one read of tokio's clock and one compare-and-swap of a
/// shared word (the reading counted in nanoseconds as palisade counts it),
/// then the inner call with its future as it is. Not a
/// limiter: the floor under any rate limiter whose clones share a bucket.
#[derive(Clone)]
struct SharedClockFloor<S> {
    inner: S,
    origin: palisade::core::clock::Origin,
    word: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<S> SharedClockFloor<S> {
    fn new(inner: S) -> Self {
        Self {
            inner,
            origin: palisade::core::clock::Origin::new(tokio::time::Instant::now().into_std()),
            word: std::sync::Arc::default(),
        }
    }
}

impl<S: Service<u64>> Service<u64> for SharedClockFloor<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    #[inline]
    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: u64) -> S::Future {
        use std::sync::atomic::Ordering;
        let now = self.origin.nanos(tokio::time::Instant::now().into_std());
        let seen = self.word.load(Ordering::Acquire);
        let _ = self.word.compare_exchange(
            seen,
            seen.max(now).wrapping_add(1),
            Ordering::AcqRel,
            Ordering::Acquire,
        );
        self.inner.call(request)
    }
}

fn breaker(c: &mut Criterion) {
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_breaker");
    bench_u64(&mut group, &rt, "bare", Echo, Expect::Ok);
    let svc = support::palisade_breaker().layer(Echo);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    let svc = support::peer_breaker().0.layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    group.finish();
}

fn fallback(c: &mut Criterion) {
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_fallback");
    bench_u64(&mut group, &rt, "bare", Echo, Expect::Ok);
    let svc = support::palisade_fallback().layer(Echo);
    bench_u64(&mut group, &rt, "palisade", svc, Expect::Ok);
    let svc = tower_resilience::fallback::FallbackLayer::<u64, u64, _>::value(support::FALLBACK)
        .layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience", svc, Expect::Ok);
    group.finish();
}

fn catch_panic(c: &mut Criterion) {
    // tower-http's layer takes HTTP requests only: the group is HTTP.
    let rt = support::current_thread();
    let mut group = c.benchmark_group("layer_catch_panic");
    bench_http(&mut group, &rt, "bare", Echo);
    let svc = support::palisade_catch_panic().layer(Echo);
    bench_http(&mut group, &rt, "palisade", svc);
    let svc = palisade::panic::http::CatchPanicHttpLayer::builder()
        .build()
        .expect("valid")
        .layer(Echo);
    bench_http(&mut group, &rt, "palisade_http", svc);
    let svc = tower_http::catch_panic::CatchPanicLayer::new().layer(Echo);
    bench_http(&mut group, &rt, "tower_http", svc);
    group.finish();
}

/// One rejected request against one admitted by the same layer, for each
/// layer that rejects: rate-limited, breaker open, bulkhead full.
fn reject(c: &mut Criterion) {
    let rt = support::current_thread();

    let mut group = c.benchmark_group("reject_ratelimit");
    let admit = support::palisade_rate_limit().layer(Echo);
    bench_u64(&mut group, &rt, "palisade_admit", admit, Expect::Ok);
    let limited = palisade::ratelimit::RateLimitLayer::builder()
        .quota(1, Duration::from_secs(3600))
        .build()
        .expect("valid");
    let _ = limited.limiter().check();
    bench_u64(
        &mut group,
        &rt,
        "palisade_reject",
        limited.layer(Echo),
        Expect::Err,
    );
    let admit =
        support::peer_rate_limit(support::PLENTY as usize, Duration::from_secs(1)).layer(Echo);
    bench_u64(&mut group, &rt, "tower_resilience_admit", admit, Expect::Ok);
    let limited = support::peer_rate_limit(1, Duration::from_secs(3600)).layer(Echo);
    support::drive(&rt, &limited, 1, u64_request, Expect::Ok);
    bench_u64(
        &mut group,
        &rt,
        "tower_resilience_reject",
        limited,
        Expect::Err,
    );
    group.finish();

    let mut group = c.benchmark_group("reject_breaker");
    let layer = support::palisade_breaker();
    bench_u64(
        &mut group,
        &rt,
        "palisade_admit",
        layer.layer(Echo),
        Expect::Ok,
    );
    // Tripped by failures, as in service (not forced open, which skips
    // the clock read of an open breaker's check for its wait's end).
    let layer = support::palisade_breaker();
    support::trip(&rt, &layer);
    assert_eq!(
        layer.handle().state(),
        palisade::core::CircuitState::Open,
        "tripped"
    );
    bench_u64(
        &mut group,
        &rt,
        "palisade_reject",
        layer.layer(Echo),
        Expect::Err,
    );
    let (layer, _handle) = support::peer_breaker();
    bench_u64(
        &mut group,
        &rt,
        "tower_resilience_admit",
        layer.layer(Echo),
        Expect::Ok,
    );
    let (layer, _handle) = support::peer_breaker();
    support::trip(&rt, &layer);
    bench_u64(
        &mut group,
        &rt,
        "tower_resilience_reject",
        layer.layer(Echo),
        Expect::Err,
    );
    group.finish();

    let mut group = c.benchmark_group("reject_bulkhead");
    let admit = support::palisade_bulkhead(1).layer(Holding);
    bench_u64(&mut group, &rt, "palisade_admit", admit, Expect::Ok);
    let full = support::palisade_bulkhead(1).layer(Holding);
    let _held = support::hold_a_slot(&rt, &full);
    bench_u64(&mut group, &rt, "palisade_reject", full, Expect::Err);
    let admit = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(Holding);
    bench_u64(&mut group, &rt, "tower_load_shed_admit", admit, Expect::Ok);
    let full = ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1)
        .service(Holding);
    let _held_tower = support::hold_a_slot(&rt, &full);
    bench_u64(&mut group, &rt, "tower_load_shed_reject", full, Expect::Err);
    let admit = support::peer_bulkhead(1).layer(Holding);
    bench_u64(&mut group, &rt, "tower_resilience_admit", admit, Expect::Ok);
    let full = support::peer_bulkhead(1).layer(Holding);
    let _held_peer = support::hold_a_slot(&rt, &full);
    bench_u64(
        &mut group,
        &rt,
        "tower_resilience_reject",
        full,
        Expect::Err,
    );
    group.finish();
}

criterion_group!(
    benches,
    timeout,
    bulkhead,
    rate_limit,
    breaker,
    fallback,
    catch_panic,
    reject
);
criterion_main!(benches);

//! The full palisade stack (fallback, rate limit, circuit breaker,
//! timeout, bulkhead, panic-catch) against a peer stack of the best
//! available parts (tower-resilience's fallback, rate limiter, breaker and
//! bulkhead; tower-http's timeout and catch-panic, or tower's timeout for
//! non-HTTP requests), with `u64` and with `http::Request` requests; then
//! the same stacks shared by N tasks on a multi-thread runtime.
//!
//! Sequential benches: every iteration is `ready().await` +
//! `call().await` on a current-thread runtime; the stacks are built
//! before timing starts and configured so that nothing rejects.
//!
//! Contention benches: one stack, cloned into N tasks (N = 1, 2, 8, 64)
//! on a runtime with 2 worker threads, and with 1 for the scaling ratio.
//! An iteration is one request; criterion reports requests per second.
//! Each palisade layer alone (and tower's `ConcurrencyLimit`, for
//! comparison with the bulkhead) is measured the same way at 64 tasks,
//! which shows which layer keeps a second worker from adding throughput.
//!
//! Run: `cargo bench -p palisade-workspace --bench stacks -- --warm-up-time 1 --measurement-time 2`

use criterion::measurement::WallTime;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
};
use tower::{Layer, Service};

mod support;
use support::{Echo, Expect, drive, http_request, u64_request};

fn stack_u64(c: &mut Criterion) {
    let rt = support::current_thread();
    let palisade = support::palisade_stack_u64();
    let leaked = support::palisade_stack_u64_leaked();
    let peer = support::peer_stack_u64();

    let mut group = c.benchmark_group("stack_u64");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| drive(&rt, &Echo, iters, u64_request, Expect::Ok));
    });
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| drive(&rt, &palisade, iters, u64_request, Expect::Ok));
    });
    group.bench_function("palisade_leaked", |b| {
        b.iter_custom(|iters| drive(&rt, &leaked, iters, u64_request, Expect::Ok));
    });
    group.bench_function("peer", |b| {
        b.iter_custom(|iters| drive(&rt, &peer, iters, u64_request, Expect::Ok));
    });
    group.finish();
}

fn stack_http(c: &mut Criterion) {
    let rt = support::current_thread();
    let palisade = support::palisade_stack_http();
    let leaked = support::palisade_stack_http_leaked();
    let extension = support::palisade_stack_http_extension();
    let peer = support::peer_stack_http();

    let mut group = c.benchmark_group("stack_http");
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| drive(&rt, &Echo, iters, http_request, Expect::Ok));
    });
    group.bench_function("palisade", |b| {
        b.iter_custom(|iters| drive(&rt, &palisade, iters, http_request, Expect::Ok));
    });
    group.bench_function("palisade_leaked", |b| {
        b.iter_custom(|iters| drive(&rt, &leaked, iters, http_request, Expect::Ok));
    });
    group.bench_function("palisade_extension", |b| {
        b.iter_custom(|iters| drive(&rt, &extension, iters, http_request, Expect::Ok));
    });
    group.bench_function("peer", |b| {
        b.iter_custom(|iters| drive(&rt, &peer, iters, http_request, Expect::Ok));
    });
    group.finish();
}

const TASKS: [usize; 4] = [1, 2, 8, 64];

fn contention(c: &mut Criterion) {
    for workers in [2, 1] {
        let rt = support::multi_thread(workers);
        let palisade = support::palisade_stack_u64();
        let leaked = support::palisade_stack_u64_leaked();
        let peer = support::peer_stack_u64();
        let mut group = c.benchmark_group(format!("contention_w{workers}"));
        group.throughput(Throughput::Elements(1));
        for tasks in TASKS {
            group.bench_with_input(BenchmarkId::new("bare", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| support::contend(&rt, &Echo, tasks, iters, u64_request));
            });
            group.bench_with_input(BenchmarkId::new("palisade", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| support::contend(&rt, &palisade, tasks, iters, u64_request));
            });
            group.bench_with_input(
                BenchmarkId::new("palisade_leaked", tasks),
                &tasks,
                |b, &tasks| {
                    b.iter_custom(|iters| {
                        support::contend(&rt, &leaked, tasks, iters, u64_request)
                    });
                },
            );
            group.bench_with_input(BenchmarkId::new("peer", tasks), &tasks, |b, &tasks| {
                b.iter_custom(|iters| support::contend(&rt, &peer, tasks, iters, u64_request));
            });
        }
        group.finish();
    }
}

/// How many tasks share each layer in `contention_layers`.
const LAYER_TASKS: usize = 64;

fn contention_layers(c: &mut Criterion) {
    for workers in [2, 1] {
        let rt = support::multi_thread(workers);
        let mut group = c.benchmark_group(format!("contention_layers_w{workers}"));
        group.throughput(Throughput::Elements(1));
        let timeout = support::palisade_timeout().layer(Echo);
        let fallback = support::palisade_fallback().layer(Echo);
        let catch_panic = support::palisade_catch_panic().layer(Echo);
        let rate_limit = support::palisade_rate_limit().layer(Echo);
        let breaker = support::palisade_breaker().layer(Echo);
        let bulkhead = support::palisade_bulkhead(support::SLOTS).layer(Echo);
        let tower_limit = tower::limit::ConcurrencyLimitLayer::new(support::SLOTS).layer(Echo);
        contended(&mut group, &rt, "bare", Echo);
        contended(&mut group, &rt, "timeout", timeout);
        contended(&mut group, &rt, "fallback", fallback);
        contended(&mut group, &rt, "catch_panic", catch_panic);
        contended(&mut group, &rt, "ratelimit", rate_limit);
        contended(&mut group, &rt, "breaker", breaker);
        contended(&mut group, &rt, "bulkhead", bulkhead);
        contended(&mut group, &rt, "tower_concurrency_limit", tower_limit);
        // The same layers leaked: their calls write no reference count.
        let timeout = support::palisade_timeout().leak().layer(Echo);
        let fallback = support::palisade_fallback().leak().layer(Echo);
        let catch_panic = support::palisade_catch_panic().leak().layer(Echo);
        let breaker = support::palisade_breaker().leak().layer(Echo);
        let bulkhead = support::palisade_bulkhead(support::SLOTS)
            .leak()
            .layer(Echo);
        contended(&mut group, &rt, "timeout_leaked", timeout);
        contended(&mut group, &rt, "fallback_leaked", fallback);
        contended(&mut group, &rt, "catch_panic_leaked", catch_panic);
        contended(&mut group, &rt, "breaker_leaked", breaker);
        contended(&mut group, &rt, "bulkhead_leaked", bulkhead);
        group.finish();
    }
}

/// Benches `svc` shared by [`LAYER_TASKS`] tasks on `rt`.
fn contended<S>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &tokio::runtime::Runtime,
    name: &str,
    svc: S,
) where
    S: Service<u64> + Clone + Send + 'static,
    S::Response: support::Served,
    S::Future: Send,
    S::Error: std::fmt::Debug + Send,
{
    group.bench_function(name, |b| {
        b.iter_custom(|iters| support::contend(rt, &svc, LAYER_TASKS, iters, u64_request));
    });
}

criterion_group!(
    benches,
    stack_u64,
    stack_http,
    contention,
    contention_layers
);
criterion_main!(benches);

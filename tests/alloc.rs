//! Zero heap allocations per request on the happy path: every palisade
//! layer alone, and the full stack, for `u64` and for `http::Request`.
//!
//! Allocations are counted with `allocation_counter`, which counts the
//! current thread only; every call here is polled by hand on this thread
//! (the services answer at once). Each service is warmed up first, so a
//! one-off allocation (a lazily built table, a thread-local) is not
//! counted as a per-request one.

use std::hint::black_box;
use std::time::Duration;

use allocation_counter::AllocationInfo;
use palisade::ratelimit::RateLimitLayer;
use palisade::ratelimit::key::KeyFn;
use tower::{Layer, Service};

#[path = "../benches/support/mod.rs"]
mod support;
use support::{Echo, call_now, http_request, u64_request};

const WARM_UP: u64 = 100;
const CALLS: u64 = 200;

/// What `CALLS` happy-path calls through `svc` allocate, after `WARM_UP`
/// calls that are not counted.
fn measure<S, R>(mut svc: S, request: fn(u64) -> R) -> AllocationInfo
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    for n in 0..WARM_UP {
        call_now(&mut svc, request(n)).expect("happy path");
    }
    // Made before counting: an HTTP request's header map is the client's
    // allocation, not the layers'.
    let requests: Vec<R> = (WARM_UP..WARM_UP + CALLS).map(request).collect();
    allocation_counter::measure(|| {
        for request in requests {
            black_box(call_now(&mut svc, request).expect("happy path"));
        }
    })
}

/// Asserts that `svc` allocates nothing per request.
fn assert_allocation_free<S, R>(what: &str, svc: S, request: fn(u64) -> R)
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let info = measure(svc, request);
    assert_eq!(
        info.count_total, 0,
        "{what}: {} allocations ({} bytes) in {CALLS} requests",
        info.count_total, info.bytes_total
    );
}

#[test]
fn the_counter_sees_allocations_made_while_serving() {
    // The measurement itself can fail: a service that boxes its answer
    // is caught.
    let boxing = tower::service_fn(|n: u64| {
        std::future::ready(Ok::<_, std::convert::Infallible>(Box::new(n)))
    });
    let info = measure(boxing, u64_request);
    assert_eq!(info.count_total, CALLS);
}

#[test]
fn timeout_allocates_nothing_around_a_call_that_waits() {
    // The timer starts on the first `Pending`: after warm-up, the thread's
    // timer slots are reused and registering one allocates nothing.
    let rt = support::current_thread();
    let _entered = rt.enter();
    assert_allocation_free(
        "timeout (a call that waits)",
        support::palisade_timeout().layer(support::WaitsOnce),
        u64_request,
    );
}

#[test]
fn timeout_allocates_nothing() {
    assert_allocation_free(
        "timeout",
        support::palisade_timeout().layer(Echo),
        u64_request,
    );
}

#[test]
fn timeout_http_flavour_allocates_nothing() {
    let layer = palisade::timeout::TimeoutLayer::builder()
        .timeout(support::TIMEOUT)
        .http()
        .build()
        .expect("valid");
    assert_allocation_free("timeout (http)", layer.layer(Echo), http_request);
}

#[test]
fn bulkhead_allocates_nothing() {
    assert_allocation_free(
        "bulkhead",
        support::palisade_bulkhead(support::SLOTS).layer(Echo),
        u64_request,
    );
}

#[test]
fn global_rate_limit_allocates_nothing() {
    assert_allocation_free(
        "rate limit",
        support::palisade_rate_limit().layer(Echo),
        u64_request,
    );
}

#[test]
fn keyed_rate_limit_allocates_nothing_for_known_or_new_keys() {
    let layer = RateLimitLayer::builder()
        .quota(support::PLENTY, Duration::from_secs(1))
        .keyed_by(KeyFn::new(|n: &u64| Some(*n % 64)))
        .build()
        .expect("valid");
    // 64 keys, all known after the warm-up.
    assert_allocation_free("keyed rate limit", layer.layer(Echo), u64_request);

    // Every request a new key: inserting into the table allocates nothing
    // either.
    let layer = RateLimitLayer::builder()
        .quota(support::PLENTY, Duration::from_secs(1))
        .keyed_by(KeyFn::new(|n: &u64| Some(*n)))
        .build()
        .expect("valid");
    assert_allocation_free("keyed rate limit, new keys", layer.layer(Echo), u64_request);
}

#[test]
fn circuit_breaker_allocates_nothing() {
    assert_allocation_free(
        "breaker",
        support::palisade_breaker().layer(Echo),
        u64_request,
    );
}

#[test]
fn fallback_allocates_nothing() {
    assert_allocation_free(
        "fallback",
        support::palisade_fallback().layer(Echo),
        u64_request,
    );
}

#[test]
fn catch_panic_allocates_nothing() {
    assert_allocation_free(
        "catch panic",
        support::palisade_catch_panic().layer(Echo),
        http_request,
    );
    let http = palisade::panic::http::CatchPanicHttpLayer::builder()
        .build()
        .expect("valid");
    assert_allocation_free("catch panic (http)", http.layer(Echo), http_request);
}

#[test]
fn full_stack_allocates_nothing() {
    assert_allocation_free("stack (u64)", support::palisade_stack_u64(), u64_request);
}

#[test]
fn leaked_full_stack_allocates_nothing() {
    assert_allocation_free(
        "stack (u64, leaked)",
        support::palisade_stack_u64_leaked(),
        u64_request,
    );
}

#[test]
fn full_http_stack_allocates_nothing() {
    assert_allocation_free("stack (http)", support::palisade_stack_http(), http_request);
}

#[test]
fn leaked_full_http_stack_allocates_nothing() {
    assert_allocation_free(
        "stack (http, leaked)",
        support::palisade_stack_http_leaked(),
        http_request,
    );
}

#[test]
fn full_http_stack_with_the_deadline_extension_allocates_only_the_extension() {
    // With `expose_deadline(true)` the applied deadline is also inserted
    // into the request's extensions: exactly what that one insertion costs,
    // and nothing more.
    let requests: Vec<_> = (0..CALLS).map(http_request).collect();
    let insertion = allocation_counter::measure(|| {
        for mut request in requests {
            request
                .extensions_mut()
                .insert(palisade::timeout::Deadline::new(support::TIMEOUT));
            black_box(request);
        }
    });
    assert!(insertion.count_total > 0);
    let info = measure(support::palisade_stack_http_extension(), http_request);
    assert_eq!(
        (info.count_total, info.bytes_total),
        (insertion.count_total, insertion.bytes_total),
        "the HTTP stack allocates more than the deadline extension"
    );
}

//! Memory, measured with a counting allocator (so it lives in its own
//! binary, away from the timed benches):
//!
//! - the keyed rate limiter with a cap of 1,000,000 keys: bytes per key,
//!   no allocation while a million keys arrive, and the cap holding under
//!   a flood of two million more;
//! - heap allocations per request on the happy path, for every palisade
//!   layer and stack and for their peers (the assertion that palisade's
//!   are zero is `tests/alloc.rs`; this prints the side-by-side numbers).
//!
//! Prints a readable report, then one line `FOOTPRINT_JSON {...}` that
//! `scripts/bench_report.py` reads.
//!
//! Run: `cargo bench -p palisade-workspace --bench footprint`
#![allow(clippy::print_stdout)]

use std::hint::black_box;
use std::time::Duration;

use palisade::ratelimit::RateLimitLayer;
use palisade::ratelimit::key::KeyFn;
use serde_json::{Value, json};
use tower::{Layer, Service};

mod support;
use support::{Echo, call_now, http_request, u64_request};

const CAP: usize = 1_000_000;

fn keyed_memory() -> Value {
    // One request per hour per key, bursts of ten: after its first
    // request a key stays busy (its bucket is not full again for six
    // minutes), so it is tracked rather than evicted during the run.
    let mut layer = None;
    let build = allocation_counter::measure(|| {
        layer = Some(
            RateLimitLayer::builder()
                .quota(1, Duration::from_secs(3600))
                .burst(10)
                .max_keys(CAP)
                .keyed_by(KeyFn::new(|key: &u64| Some(*key)))
                .build()
                .expect("valid"),
        );
    });
    let layer = layer.expect("built");
    let limiter = layer.limiter();
    let build_bytes = build.bytes_current as f64;

    let mut peak = 0;
    let mut admitted = 0_u64;
    let first = allocation_counter::measure(|| {
        for key in 0..CAP as u64 {
            admitted += u64::from(limiter.check_key(&key).is_ok());
            if key % 4096 == 0 {
                peak = peak.max(limiter.tracked_keys());
            }
        }
    });
    let tracked = limiter.tracked_keys();
    peak = peak.max(tracked);

    // Two million more distinct keys, with the table at its cap.
    let mut flood_peak = 0;
    let flood = allocation_counter::measure(|| {
        for key in CAP as u64..3 * CAP as u64 {
            let _ = black_box(limiter.check_key(&key));
            if key % 1024 == 0 {
                flood_peak = flood_peak.max(limiter.tracked_keys());
            }
        }
    });
    flood_peak = flood_peak.max(limiter.tracked_keys());
    let max_tracked = peak.max(flood_peak);
    assert!(max_tracked <= CAP, "tracked {max_tracked} keys, cap {CAP}");

    println!("palisade keyed limiter, cap {CAP} keys");
    println!(
        "  at build:            {build_bytes:.0} bytes ({:.1} bytes per key of capacity; table {} bytes)",
        build_bytes / CAP as f64,
        layer.table_bytes()
    );
    println!(
        "  1,000,000 new keys:  {} tracked, {admitted} admitted, {} allocations, {} bytes retained",
        tracked, first.count_total, first.bytes_current
    );
    println!(
        "                       {:.1} bytes per tracked key",
        build_bytes / tracked.max(1) as f64
    );
    println!(
        "  2,000,000 more keys: peak tracked {flood_peak} (cap {CAP}), {} allocations, {} bytes retained",
        flood.count_total, flood.bytes_current
    );

    json!({
        "cap": CAP,
        "build_bytes": build_bytes,
        "table_bytes": layer.table_bytes(),
        "bytes_per_key_of_capacity": build_bytes / CAP as f64,
        "keys_offered": CAP,
        "tracked": tracked,
        "bytes_per_tracked_key": build_bytes / tracked.max(1) as f64,
        "first_million_allocations": first.count_total,
        "first_million_bytes_retained": first.bytes_current,
        "flood_keys": 2 * CAP,
        "flood_peak_tracked": flood_peak,
        "max_tracked": max_tracked,
        "flood_allocations": flood.count_total,
        "flood_bytes_retained": flood.bytes_current,
    })
}

/// Allocations and bytes per request through a clone of `svc`, counted on
/// this thread over `CALLS` calls made by hand after as many warm-up calls.
fn per_request<S, R>(svc: &S, request: fn(u64) -> R) -> Value
where
    S: Service<R> + Clone,
    S::Error: std::fmt::Debug,
{
    per_request_mut(&mut svc.clone(), request)
}

/// [`per_request`] for a service that cannot be cloned.
fn per_request_mut<S, R>(svc: &mut S, request: fn(u64) -> R) -> Value
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    const CALLS: u64 = 1000;
    for n in 0..CALLS {
        call_now(svc, request(n)).expect("happy path");
    }
    // Made before counting: an HTTP request's header map is the client's
    // allocation, not the layers'.
    let requests: Vec<R> = (0..CALLS).map(request).collect();
    let info = allocation_counter::measure(|| {
        for request in requests {
            let _ = black_box(call_now(svc, request).expect("happy path"));
        }
    });
    json!({
        "allocations": info.count_total as f64 / CALLS as f64,
        "bytes": info.bytes_total as f64 / CALLS as f64,
    })
}

fn allocations() -> Value {
    let rt = support::current_thread();
    // The peers' timers and semaphores need a runtime in context; the
    // calls themselves are polled by hand on this thread.
    let _guard = rt.enter();
    let mut rows = serde_json::Map::new();
    let mut row = |name: &str, value: Value| {
        println!(
            "  {name:<40} {:>6.2} allocations, {:>7.1} bytes per request",
            value["allocations"].as_f64().unwrap_or(f64::NAN),
            value["bytes"].as_f64().unwrap_or(f64::NAN)
        );
        rows.insert(name.to_owned(), value);
    };
    println!("heap allocations per request, happy path");

    row("bare", per_request(&Echo, u64_request));
    row(
        "palisade/timeout",
        per_request(&support::palisade_timeout().layer(Echo), u64_request),
    );
    row(
        "tower/timeout",
        per_request(
            &tower::timeout::TimeoutLayer::new(support::TIMEOUT).layer(Echo),
            u64_request,
        ),
    );
    row(
        "tower_resilience/timelimiter",
        per_request(&support::peer_time_limiter().layer(Echo), u64_request),
    );
    row(
        "palisade/bulkhead",
        per_request(
            &support::palisade_bulkhead(support::SLOTS).layer(Echo),
            u64_request,
        ),
    );
    row(
        "tower/concurrency_limit",
        per_request(
            &tower::limit::ConcurrencyLimitLayer::new(support::SLOTS).layer(Echo),
            u64_request,
        ),
    );
    row(
        "tower_resilience/bulkhead",
        per_request(
            &support::peer_bulkhead(support::SLOTS).layer(Echo),
            u64_request,
        ),
    );
    row(
        "palisade/ratelimit",
        per_request(&support::palisade_rate_limit().layer(Echo), u64_request),
    );
    row(
        "tower/rate_limit",
        per_request_mut(
            &mut tower::limit::RateLimitLayer::new(u64::MAX, Duration::from_secs(1)).layer(Echo),
            u64_request,
        ),
    );
    row(
        "tower_resilience/ratelimiter",
        per_request(
            &support::peer_rate_limit(support::PLENTY as usize, Duration::from_secs(1)).layer(Echo),
            u64_request,
        ),
    );
    row(
        "palisade/breaker",
        per_request(&support::palisade_breaker().layer(Echo), u64_request),
    );
    row(
        "tower_resilience/circuitbreaker",
        per_request(&support::peer_breaker().0.layer(Echo), u64_request),
    );
    row(
        "palisade/fallback",
        per_request(&support::palisade_fallback().layer(Echo), u64_request),
    );
    row(
        "tower_resilience/fallback",
        per_request(
            &tower_resilience::fallback::FallbackLayer::<u64, u64, _>::value(support::FALLBACK)
                .layer(Echo),
            u64_request,
        ),
    );
    row(
        "palisade/catch_panic (http)",
        per_request(&support::palisade_catch_panic().layer(Echo), http_request),
    );
    row(
        "tower_http/catch_panic (http)",
        per_request(
            &tower_http::catch_panic::CatchPanicLayer::new().layer(Echo),
            http_request,
        ),
    );
    row(
        "palisade/stack_u64",
        per_request(&support::palisade_stack_u64(), u64_request),
    );
    row(
        "peer/stack_u64",
        per_request(&support::peer_stack_u64(), u64_request),
    );
    row("bare (http)", per_request(&Echo, http_request));
    row(
        "palisade/stack_http",
        per_request(&support::palisade_stack_http(), http_request),
    );
    row(
        "palisade/stack_http_extension",
        per_request(&support::palisade_stack_http_extension(), http_request),
    );
    row(
        "peer/stack_http",
        per_request(&support::peer_stack_http(), http_request),
    );
    Value::Object(rows)
}

fn main() {
    // `cargo bench` passes `--bench`; a filter argument is not supported.
    let memory = keyed_memory();
    let allocations = allocations();
    println!(
        "FOOTPRINT_JSON {}",
        json!({ "keyed_memory": memory, "allocations": allocations })
    );
}

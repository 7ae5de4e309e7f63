//! Bytes per tracked key, measured with a counting allocator: palisade's
//! key table against governor's default DashMap store, and proof that a
//! million distinct keys neither grow memory nor pass the cap.
//!
//! Run: `cargo bench -p palisade-ratelimit --bench memory`
#![allow(clippy::print_stdout)]

use std::num::NonZeroU32;
use std::time::Duration;

use palisade_ratelimit::RateLimitLayer;
use palisade_ratelimit::key::KeyFn;

fn main() {
    let cap = 100_000_usize;
    let mut layer = None;
    let build = allocation_counter::measure(|| {
        layer = Some(
            RateLimitLayer::builder()
                .quota(10, Duration::from_secs(1))
                .max_keys(cap)
                .keyed_by(KeyFn::new(|key: &u64| Some(*key)))
                .build()
                .unwrap(),
        );
    });
    let layer = layer.unwrap();
    let limiter = layer.limiter();
    println!("palisade key table, cap {cap} keys");
    println!(
        "  allocated at build:      {} bytes ({:.1} bytes per key of capacity; table alone {} bytes)",
        build.bytes_current,
        build.bytes_current as f64 / cap as f64,
        layer.table_bytes()
    );

    let mut peak_tracked = 0;
    let flood = allocation_counter::measure(|| {
        for key in 0..1_000_000_u64 {
            let _ = limiter.check_key(&key);
            if key % 4096 == 0 {
                peak_tracked = peak_tracked.max(limiter.tracked_keys());
            }
        }
    });
    peak_tracked = peak_tracked.max(limiter.tracked_keys());
    println!(
        "  1,000,000 distinct keys: {} allocations, {} bytes retained, peak tracked {} (cap {cap})",
        flood.count_total, flood.bytes_current, peak_tracked
    );
    println!(
        "  at the cap:              {:.1} bytes per tracked key",
        build.bytes_current as f64 / peak_tracked.max(1) as f64
    );
    assert!(peak_tracked <= cap);

    let quota = governor::Quota::per_second(NonZeroU32::new(10).unwrap());
    let mut dashmap = None;
    let build = allocation_counter::measure(|| {
        dashmap = Some(governor::RateLimiter::dashmap(quota));
    });
    let dashmap = dashmap.unwrap();
    let grow = allocation_counter::measure(|| {
        for key in 0..cap as u64 {
            let _ = dashmap.check_key(&key);
        }
    });
    println!("governor DashMap store, {cap} keys, unbounded");
    println!(
        "  {} bytes at build, {} bytes after {cap} keys: {:.1} bytes per key ({} allocations)",
        build.bytes_current,
        grow.bytes_current,
        grow.bytes_current as f64 / cap as f64,
        grow.count_total
    );
}

//! Seeded concurrent stress: counts stay exact under contention, and the
//! key cap holds while threads insert and evict at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use palisade_core::{Clock, ManualClock};
use palisade_ratelimit::RateLimitLayer;
use palisade_ratelimit::key::KeyFn;

const THREADS: u64 = 4;

/// xorshift64*: a small seeded generator, so failures replay.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_F491_4F6C_DD1D)
}

#[test]
fn concurrent_admissions_are_exact_per_key_and_globally() {
    let manual = ManualClock::new();
    // Time stands still: each key admits exactly its burst of 50.
    let keyed = RateLimitLayer::builder()
        .quota(50, Duration::from_secs(1))
        .max_keys(1_000)
        .clock(Clock::manual(&manual))
        .keyed_by(KeyFn::new(|key: &u64| Some(*key)))
        .build()
        .unwrap();
    let global = RateLimitLayer::builder()
        .quota(1_000, Duration::from_secs(1))
        .clock(Clock::manual(&manual))
        .build()
        .unwrap();
    let per_key: Arc<Vec<AtomicUsize>> = Arc::new((0..64).map(|_| AtomicUsize::new(0)).collect());
    let global_admitted = Arc::new(AtomicUsize::new(0));

    let handles: Vec<_> = (0..THREADS)
        .map(|seed| {
            let (keyed, global) = (keyed.clone(), global.clone());
            let (per_key, global_admitted) = (per_key.clone(), global_admitted.clone());
            thread::spawn(move || {
                let mut state = 0x9E37_79B9_7F4A_7C15 ^ (seed + 1);
                for _ in 0..10_000 {
                    let key = next(&mut state) % 64;
                    if keyed.limiter().check_key(&key).is_ok() {
                        per_key[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                    if global.limiter().check().is_ok() {
                        global_admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    for (key, count) in per_key.iter().enumerate() {
        assert_eq!(count.load(Ordering::Relaxed), 50, "key {key}");
    }
    assert_eq!(global_admitted.load(Ordering::Relaxed), 1_000);
    assert_eq!(keyed.limiter().tracked_keys(), 64);
}

#[test]
fn the_cap_holds_while_threads_insert_and_evict() {
    let manual = ManualClock::new();
    let cap = 512;
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_millis(10))
        .max_keys(cap)
        .clock(Clock::manual(&manual))
        .keyed_by(KeyFn::new(|key: &u64| Some(*key)))
        .build()
        .unwrap();
    let peak = Arc::new(AtomicUsize::new(0));
    let handles: Vec<_> = (0..THREADS)
        .map(|seed| {
            let (layer, manual, peak) = (layer.clone(), manual.clone(), peak.clone());
            thread::spawn(move || {
                let mut state = 0xD1B5_4A32_D192_ED03 ^ (seed + 1);
                for round in 0..20_000_u64 {
                    // Mostly new keys, some repeats.
                    let key = next(&mut state) % 50_000;
                    let _ = layer.limiter().check_key(&key);
                    peak.fetch_max(layer.limiter().tracked_keys(), Ordering::Relaxed);
                    if round % 256 == 0 {
                        manual.advance(Duration::from_millis(3));
                    }
                }
            })
        })
        .collect();
    for handle in handles {
        handle.join().unwrap();
    }
    assert!(peak.load(Ordering::Relaxed) <= cap);
    assert!(layer.limiter().tracked_keys() <= cap);
}

//! The limiter on a manual clock: burst, refill, exact `retry_after`,
//! keys, the cap, eviction and events. No runtime, no sleeping.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::{Clock, Event, KeyKind, ManualClock, Metrics, MetricsSink, RejectReason};
use palisade_ratelimit::key::{KeyFn, PeerIp};
use palisade_ratelimit::{Limiter, RateLimitLayer};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts every event kind the limiter emits.
#[derive(Debug, Default)]
struct Recorder {
    admitted: AtomicUsize,
    rejected: AtomicUsize,
    missing: AtomicUsize,
    overflow: AtomicUsize,
    evicted: AtomicUsize,
    tracked: Mutex<Vec<(usize, usize)>>,
}

impl MetricsSink for Recorder {
    fn record(&self, event: &Event<'_>) {
        match event {
            Event::Admitted { policy, .. } => {
                assert_eq!(*policy, "test");
                self.admitted.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected { reason, .. } => {
                if *reason == RejectReason::MissingKey {
                    self.missing.fetch_add(1, Ordering::Relaxed);
                } else {
                    self.rejected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Event::OverflowUsed { .. } => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Event::KeysEvicted { count, .. } => {
                self.evicted.fetch_add(*count, Ordering::Relaxed);
            }
            Event::KeysTracked { keys, cap, .. } => {
                self.tracked.lock().unwrap().push((*keys, *cap));
            }
            _ => {}
        }
    }
}

fn global(requests: u32, period: Duration, burst: u32, manual: &ManualClock) -> RateLimitLayer {
    RateLimitLayer::builder()
        .name("test")
        .quota(requests, period)
        .burst(burst)
        .clock(Clock::manual(manual))
        .build()
        .unwrap()
}

fn keyed(
    requests: u32,
    period: Duration,
    max_keys: usize,
    manual: &ManualClock,
    recorder: &Arc<Recorder>,
) -> RateLimitLayer<KeyFn<fn(&u64) -> Option<u64>>> {
    RateLimitLayer::builder()
        .name("test")
        .quota(requests, period)
        .max_keys(max_keys)
        .clock(Clock::manual(manual))
        .metrics(Metrics::from_arc(recorder.clone()))
        .keyed_by(KeyFn::new(
            (|key: &u64| Some(*key)) as fn(&u64) -> Option<u64>,
        ))
        .build()
        .unwrap()
}

fn admitted(limiter: &Limiter, key: u64) -> bool {
    limiter.check_key(&key).is_ok()
}

#[test]
fn burst_then_refill_with_an_exact_retry_after() {
    let manual = ManualClock::new();
    // Five per second: one every 200 ms, all five at once after a pause.
    let layer = global(5, Duration::from_secs(1), 5, &manual);
    let limiter = layer.limiter();

    for expected_remaining in (0..5).rev() {
        let admission = limiter.check().unwrap();
        assert_eq!(admission.remaining(), expected_remaining);
        assert_eq!(admission.limit(), 5);
    }
    let refused = limiter.check().unwrap_err();
    assert_eq!(refused.retry_after(), ms(200));
    assert_eq!(refused.key_kind(), KeyKind::Global);
    assert_eq!(refused.policy(), "test");

    manual.advance(ms(150));
    assert_eq!(limiter.check().unwrap_err().retry_after(), ms(50));
    manual.advance(ms(50));
    let admission = limiter.check().unwrap();
    assert_eq!(admission.remaining(), 0);
    assert_eq!(admission.reset(), Duration::from_secs(1));
    assert_eq!(limiter.check().unwrap_err().retry_after(), ms(200));

    // A full second refills the whole bucket, and no more.
    manual.advance(Duration::from_secs(5));
    for _ in 0..5 {
        limiter.check().unwrap();
    }
    assert!(limiter.check().is_err());
}

#[test]
fn burst_can_differ_from_the_rate() {
    let manual = ManualClock::new();
    // One per second on average, three at once.
    let layer = global(1, Duration::from_secs(1), 3, &manual);
    let limiter = layer.limiter();
    for _ in 0..3 {
        limiter.check().unwrap();
    }
    assert_eq!(
        limiter.check().unwrap_err().retry_after(),
        Duration::from_secs(1)
    );
    manual.advance(Duration::from_millis(2500));
    // 2.5 s refilled two whole requests.
    limiter.check().unwrap();
    limiter.check().unwrap();
    assert_eq!(limiter.check().unwrap_err().retry_after(), ms(500));
}

#[test]
fn reset_counts_until_the_bucket_is_full_again() {
    let manual = ManualClock::new();
    let layer = global(10, Duration::from_secs(60), 10, &manual);
    let limiter = layer.limiter();
    let first = limiter.check().unwrap();
    assert_eq!(
        (first.remaining(), first.reset()),
        (9, Duration::from_secs(6))
    );
    let second = limiter.check().unwrap();
    assert_eq!(
        (second.remaining(), second.reset()),
        (8, Duration::from_secs(12))
    );
    manual.advance(Duration::from_secs(9));
    let third = limiter.check().unwrap();
    assert_eq!(
        (third.remaining(), third.reset()),
        (8, Duration::from_secs(9))
    );
}

#[test]
fn keys_have_their_own_buckets_and_events_follow() {
    let manual = ManualClock::new();
    let recorder = Arc::new(Recorder::default());
    let layer = keyed(2, Duration::from_secs(1), 100, &manual, &recorder);
    let limiter = layer.limiter();
    assert!(admitted(limiter, 1));
    assert!(admitted(limiter, 1));
    let refused = limiter.check_key(&1_u64).unwrap_err();
    assert_eq!(refused.key_kind(), KeyKind::Custom);
    assert_eq!(refused.retry_after(), ms(500));
    assert!(admitted(limiter, 2));
    assert_eq!(limiter.tracked_keys(), 2);
    assert_eq!(recorder.admitted.load(Ordering::Relaxed), 3);
    assert_eq!(recorder.rejected.load(Ordering::Relaxed), 1);
    // The shared bucket of requests without a key is separate too.
    let fallback = limiter.check().unwrap();
    assert_eq!(fallback.remaining(), 1);
}

#[test]
fn past_the_cap_new_keys_share_the_overflow_bucket() {
    let manual = ManualClock::new();
    let recorder = Arc::new(Recorder::default());
    let layer = keyed(1, Duration::from_secs(10), 2, &manual, &recorder);
    let limiter = layer.limiter();
    assert!(admitted(limiter, 10));
    assert!(admitted(limiter, 20));
    assert_eq!(limiter.tracked_keys(), 2);
    // Keys 30 and 40 arrive at the cap, with nothing idle: one overflow
    // bucket of one request serves them both.
    assert!(admitted(limiter, 30));
    let refused = limiter.check_key(&40_u64).unwrap_err();
    assert_eq!(refused.key_kind(), KeyKind::Overflow);
    assert_eq!(refused.retry_after(), Duration::from_secs(10));
    assert_eq!(limiter.tracked_keys(), 2);
    assert_eq!(recorder.overflow.load(Ordering::Relaxed), 2);
    // A tracked key still has its own bucket.
    let refused = limiter.check_key(&10_u64).unwrap_err();
    assert_eq!(refused.key_kind(), KeyKind::Custom);
    assert!(
        recorder
            .tracked
            .lock()
            .unwrap()
            .iter()
            .any(|&(keys, cap)| keys == 2 && cap == 2)
    );
}

#[test]
fn idle_keys_are_evicted_without_any_call() {
    let manual = ManualClock::new();
    let recorder = Arc::new(Recorder::default());
    let layer = keyed(1, Duration::from_secs(1), 4, &manual, &recorder);
    let limiter = layer.limiter();
    for key in 0..4 {
        assert!(admitted(limiter, key));
    }
    assert_eq!(limiter.tracked_keys(), 4);
    // One second later every bucket is full again: the next new keys take
    // their room instead of the overflow bucket.
    manual.advance(Duration::from_secs(1));
    for key in 100..104 {
        let admission = limiter.check_key(&key).unwrap();
        assert_eq!(admission.remaining(), 0);
    }
    assert_eq!(recorder.overflow.load(Ordering::Relaxed), 0);
    assert!(limiter.tracked_keys() <= 4);
    assert!(recorder.evicted.load(Ordering::Relaxed) >= 4);
    // The new keys are tracked: each has spent its one request.
    for key in 100..104 {
        assert_eq!(
            limiter.check_key(&key).unwrap_err().key_kind(),
            KeyKind::Custom
        );
    }
}

#[test]
fn a_million_distinct_keys_stay_under_the_cap() {
    let manual = ManualClock::new();
    let recorder = Arc::new(Recorder::default());
    let cap = 10_000;
    let layer = keyed(10, Duration::from_secs(1), cap, &manual, &recorder);
    let limiter = layer.limiter();
    let mut max_tracked = 0;
    for key in 0..1_000_000_u64 {
        let _ = limiter.check_key(&key);
        if key % 1024 == 0 {
            max_tracked = max_tracked.max(limiter.tracked_keys());
            // Time moves on, so older keys go idle and are evicted.
            manual.advance(ms(20));
        }
    }
    max_tracked = max_tracked.max(limiter.tracked_keys());
    assert!(max_tracked <= cap, "{max_tracked} keys tracked, cap {cap}");
    assert!(recorder.evicted.load(Ordering::Relaxed) > 900_000);
    let tracked = recorder.tracked.lock().unwrap();
    assert!(!tracked.is_empty(), "the table reported its size");
    assert!(tracked.iter().all(|&(keys, c)| keys <= cap && c == cap));
    drop(tracked);
    assert_eq!(layer.table_bytes(), cap * 40);
}

#[test]
fn ipv6_peers_share_a_bucket_per_prefix() {
    let manual = ManualClock::new();
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(1))
        .clock(Clock::manual(&manual))
        .keyed_by(PeerIp::new())
        .build()
        .unwrap();
    let peer = PeerIp::new();
    let limiter = layer.limiter();
    let key = |s: &str| peer.key(s.parse().unwrap());
    assert!(limiter.check_key(&key("2001:db8:1:2::1")).is_ok());
    // Same /64, another host: same bucket.
    assert!(
        limiter
            .check_key(&key("2001:db8:1:2:ffff:ffff:ffff:fffe"))
            .is_err()
    );
    // Next /64: its own bucket.
    assert!(limiter.check_key(&key("2001:db8:1:3::1")).is_ok());
}

#[test]
fn the_longest_buckets_allowed_never_overflow_a_keyed_or_global_limiter() {
    let recorder = Arc::new(Recorder::default());
    // A full bucket of exactly the longest refill time allowed.
    let longest = Duration::from_nanos(u64::MAX / 2);
    for (requests, burst) in [(1_u32, 1_u32), (4, 4), (1_000, 1_000), (1, 3)] {
        let period = longest * requests / burst / requests * requests;
        let manual = ManualClock::new();
        let keyed = RateLimitLayer::builder()
            .name("test")
            .quota(requests, period)
            .burst(burst)
            .clock(Clock::manual(&manual))
            .metrics(Metrics::from_arc(recorder.clone()))
            .keyed_by(KeyFn::new(
                (|key: &u64| Some(*key)) as fn(&u64) -> Option<u64>,
            ))
            .build()
            .unwrap_or_else(|err| panic!("{requests}/{burst}: {err}"));
        let global = global(requests, period, burst, &manual);
        let (keyed, global) = (keyed.limiter(), global.limiter());
        let both = |n: u32| {
            let mut admitted = [0_u32; 2];
            for _ in 0..n {
                admitted[0] += u32::from(keyed.check_key(&7).is_ok());
                admitted[1] += u32::from(global.check().is_ok());
            }
            admitted
        };
        // Within nanoseconds: the burst, and nothing more.
        manual.advance(Duration::from_nanos(5));
        let first = both(burst + 2);
        assert_eq!(first, [burst, burst], "{requests}/{burst}");
        // A century later, then close to the end of the range the clock
        // has left: never a panic, and both buckets agree.
        for years in [100, 150] {
            manual.advance(Duration::from_secs(years * 365 * 24 * 3600));
            let [keyed, global] = both(burst + 2);
            assert_eq!(keyed, global, "{requests}/{burst} after {years} more years");
            assert!(keyed <= burst);
        }
        // Past the range: the clock stops there, and the buckets still
        // admit no more than the burst.
        manual.advance(Duration::MAX);
        for _ in 0..2 {
            let [keyed, global] = both(burst + 2);
            assert_eq!(keyed, global, "{requests}/{burst} at the end of time");
            assert!(keyed <= burst, "{requests}/{burst} at the end of time");
        }
    }
}

#[test]
fn invalid_settings_are_typed_errors() {
    let cases: Vec<(&str, palisade_core::ConfigError)> = vec![
        (
            "requests",
            RateLimitLayer::builder()
                .quota(0, Duration::from_secs(1))
                .build()
                .unwrap_err(),
        ),
        (
            "period",
            RateLimitLayer::builder()
                .quota(1, Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        (
            "period",
            RateLimitLayer::builder()
                .quota(10, Duration::from_nanos(5))
                .build()
                .unwrap_err(),
        ),
        (
            "burst",
            RateLimitLayer::builder().burst(0).build().unwrap_err(),
        ),
        (
            "period",
            RateLimitLayer::builder()
                .quota(1, Duration::from_nanos(u64::MAX))
                .build()
                .unwrap_err(),
        ),
        (
            "burst",
            RateLimitLayer::builder()
                .quota(2, Duration::from_nanos(u64::MAX / 2 + 2))
                .burst(2)
                .build()
                .unwrap_err(),
        ),
        // The same bucket with the burst left at its default (the
        // quota's requests): the period is what was set too long.
        (
            "period",
            RateLimitLayer::builder()
                .quota(2, Duration::from_nanos(u64::MAX / 2 + 2))
                .build()
                .unwrap_err(),
        ),
        (
            "max_delay",
            RateLimitLayer::builder()
                .wait_up_to(Duration::ZERO)
                .build()
                .unwrap_err(),
        ),
        // No wait is shorter than a tick of tokio's timer.
        (
            "max_delay",
            RateLimitLayer::builder()
                .wait_up_to(Duration::from_micros(999))
                .build()
                .unwrap_err(),
        ),
        // Waiting requests wake once a millisecond: a bucket smaller than
        // a millisecond of the quota would cap the rate they get.
        (
            "burst",
            RateLimitLayer::builder()
                .quota(5_000, Duration::from_secs(1))
                .burst(4)
                .wait_up_to(Duration::from_secs(1))
                .build()
                .unwrap_err(),
        ),
        (
            "max_keys",
            RateLimitLayer::builder()
                .max_keys(0)
                .keyed_by(PeerIp::new())
                .build()
                .unwrap_err(),
        ),
        (
            "ipv6_prefix",
            RateLimitLayer::builder()
                .keyed_by(PeerIp::new().ipv6_prefix(129))
                .build()
                .unwrap_err(),
        ),
        (
            "name",
            RateLimitLayer::builder().name("").build().unwrap_err(),
        ),
    ];
    for (field, err) in cases {
        assert_eq!(err.field(), field, "{err}");
        assert_eq!(err.layer(), palisade_core::LayerKind::RateLimit);
    }
    let err = RateLimitLayer::builder()
        .max_keys(usize::MAX)
        .keyed_by(PeerIp::new())
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "rate limiter \"default\": max_keys = {}, expected 1 <= x <= 16777216",
            usize::MAX
        )
    );
    let err = RateLimitLayer::builder()
        .wait_up_to(Duration::from_micros(100))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "rate limiter \"default\": max_delay = 100µs, expected x >= 1ms \
         (tokio's timer wakes once a millisecond)"
    );
    // A global layer ignores the key cap.
    assert!(RateLimitLayer::builder().max_keys(0).build().is_ok());
}

#[test]
fn a_quota_the_nanosecond_cannot_keep_within_one_percent_is_refused() {
    let build = |requests, period| RateLimitLayer::builder().quota(requests, period).build();
    // 1.67 ns and 1.5 ns per request would become 1 ns: 67% and 50% more.
    for (requests, period) in [
        (600_000_000, Duration::from_secs(1)),
        (2, Duration::from_nanos(3)),
        (10_000_001, Duration::from_secs(1)),
    ] {
        let err = build(requests, period).unwrap_err();
        assert_eq!(err.field(), "period", "{err}");
        assert!(err.to_string().contains("whole nanoseconds"), "{err}");
    }
    // Exact, or cut by less than 1%.
    for (requests, period) in [
        (500_000_000, Duration::from_secs(1)),
        (10_000_000, Duration::from_secs(1)),
        (9_999_999, Duration::from_secs(1)),
        (3, Duration::from_secs(1)),
    ] {
        assert!(build(requests, period).is_ok(), "{requests} per {period:?}");
    }
}

#[test]
fn a_waiting_limiter_needs_a_millisecond_of_its_quota_counted_on_the_quota_as_given() {
    let build = |requests, period, burst: Option<u32>| {
        let mut builder = RateLimitLayer::builder()
            .quota(requests, period)
            .wait_up_to(Duration::from_secs(1));
        if let Some(burst) = burst {
            builder = builder.burst(burst);
        }
        builder.build().map(drop)
    };
    // 6,000 a second is 6 a millisecond, though 1 s / 6,000 is not a whole
    // number of nanoseconds.
    assert!(build(6_000, Duration::from_secs(1), Some(6)).is_ok());
    assert!(build(3, Duration::from_millis(1), None).is_ok());
    // 1,666 a second is 1.7 a millisecond: a burst of 1 would cap waiting
    // requests at 1,000 a second.
    let err = build(1_666, Duration::from_secs(1), Some(1)).unwrap_err();
    assert_eq!(err.field(), "burst", "{err}");
    assert!(err.to_string().contains("burst >= 2"), "{err}");
    let err = build(2, Duration::from_micros(999), None).unwrap_err();
    assert!(
        err.to_string().contains("left at the quota's requests"),
        "{err}"
    );
}

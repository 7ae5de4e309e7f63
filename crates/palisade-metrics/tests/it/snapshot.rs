//! The snapshot sink, driven on a manual clock.

use std::time::Duration;

use palisade_core::{
    AttemptFailure, CircuitState, DropReason, Event, FallbackTrigger, InFlightChange, LayerKind,
    ManualClock, MetricsSink, Outcome, PanicLocation, RejectReason, TaskEnd, TransitionReason,
};
use palisade_metrics::SnapshotSink;
use palisade_metrics::snapshot::Health;
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::common::every_event;

fn sink(clock: &ManualClock, window_secs: u64) -> SnapshotSink {
    SnapshotSink::builder()
        .clock(clock.clock())
        .window(Duration::from_secs(window_secs))
        .build()
        .unwrap()
}

fn reject(sink: &SnapshotSink, policy: &str, reason: RejectReason, n: usize) {
    for _ in 0..n {
        sink.record(&Event::Rejected {
            policy,
            layer: LayerKind::RateLimit,
            reason,
        });
    }
}

fn policy<'a>(json: &'a Value, name: &str) -> &'a Value {
    json["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("policy {name} in {json}"))
}

#[test]
fn sequence_of_events_reads_back_as_json() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    let location = PanicLocation::new("src/lib.rs", 3, 4);
    let transitions = [
        (
            CircuitState::Closed,
            CircuitState::Open,
            TransitionReason::FailureRate,
        ),
        (
            CircuitState::Open,
            CircuitState::HalfOpen,
            TransitionReason::WaitElapsed,
        ),
        (
            CircuitState::HalfOpen,
            CircuitState::Open,
            TransitionReason::FailureRate,
        ),
    ];

    // payments: a breaker that opened, a bulkhead, panics and timeouts.
    for outcome in [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Failure,
        Outcome::Cancelled,
    ] {
        sink.record(&Event::Completed {
            policy: "payments",
            layer: LayerKind::CircuitBreaker,
            outcome,
            latency: None,
        });
    }
    sink.record(&Event::BreakerRates {
        policy: "payments",
        failure_rate: 0.5,
        slow_rate: 0.125,
        calls: 4,
    });
    clock.advance(Duration::from_secs(5));
    for (from, to, reason) in transitions {
        sink.record(&Event::StateChanged {
            policy: "payments",
            from,
            to,
            reason,
        });
    }
    for _ in 0..3 {
        sink.record(&Event::InFlightChanged {
            policy: "payments",
            layer: LayerKind::Bulkhead,
            change: InFlightChange::Acquired,
            in_flight: 0,
            limit: 4,
        });
    }
    sink.record(&Event::InFlightChanged {
        policy: "payments",
        layer: LayerKind::Bulkhead,
        change: InFlightChange::Released,
        in_flight: 2,
        limit: 4,
    });
    sink.record(&Event::PanicCaught {
        policy: "payments",
        message: "boom",
        location: Some(&location),
    });
    sink.record(&Event::TimedOut {
        policy: "payments",
        timeout: Duration::from_secs(2),
        caller: false,
    });
    sink.record(&Event::FallbackUsed {
        policy: "payments",
        trigger: FallbackTrigger::Rejection,
    });
    sink.record(&Event::Rejected {
        policy: "payments",
        layer: LayerKind::CircuitBreaker,
        reason: RejectReason::CircuitOpen,
    });

    // search: a keyed limiter rejecting, and an adaptive limit.
    reject(&sink, "search", RejectReason::RateLimited, 6);
    reject(&sink, "search", RejectReason::MissingKey, 2);
    sink.record(&Event::KeysTracked {
        policy: "search",
        keys: 120,
        cap: 1000,
    });
    sink.record(&Event::KeysEvicted {
        policy: "search",
        count: 7,
    });
    sink.record(&Event::OverflowUsed { policy: "search" });
    sink.record(&Event::LimitChanged {
        policy: "search",
        from: 10,
        to: 14,
    });
    sink.record(&Event::MalformedHeader {
        policy: "search",
        layer: LayerKind::Timeout,
        header: "grpc-timeout",
    });

    // static: healthy.
    sink.record(&Event::Admitted {
        policy: "static",
        layer: LayerKind::RateLimit,
    });

    // a task group and an offload queue.
    for _ in 0..3 {
        sink.record(&Event::TaskStarted {
            group: "workers",
            task: "t",
        });
    }
    sink.record(&Event::TaskPanicked {
        group: "workers",
        task: "t",
        message: "boom",
        location: None,
    });
    sink.record(&Event::TaskEnded {
        group: "workers",
        task: "t",
        end: TaskEnd::Panicked,
    });
    sink.record(&Event::TaskRestarted {
        group: "workers",
        task: "t",
        attempt: 1,
        backoff: Duration::from_millis(10),
    });
    sink.record(&Event::OffloadDropped {
        queue: "audit",
        reason: DropReason::QueueFull,
    });
    sink.record(&Event::OffloadAttemptFailed {
        queue: "audit",
        attempt: 1,
        cause: AttemptFailure::Panic,
    });
    sink.record(&Event::OffloadAttemptFailed {
        queue: "audit",
        attempt: 2,
        cause: AttemptFailure::Error,
    });
    sink.record(&Event::OffloadDelivered {
        queue: "audit",
        attempts: 3,
    });

    clock.advance(Duration::from_secs(2));
    let json = serde_json::to_value(sink.snapshot()).unwrap();

    assert_eq!(json["uptime_seconds"], 7.0);
    assert_eq!(json["window_seconds"], 10);
    assert_eq!(
        json["summary"],
        json!({"policies": 3, "critical": 1, "degraded": 1, "ok": 1})
    );
    // Worst first.
    let order: Vec<_> = json["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(order, ["payments", "search", "static"]);

    let p = policy(&json, "payments");
    assert_eq!(p["health"], "critical");
    assert_eq!(p["concerns"][0], "circuit open");
    assert_eq!(
        p["layers"],
        json!([
            "fallback",
            "circuit_breaker",
            "timeout",
            "bulkhead",
            "panic_catch"
        ])
    );
    assert_eq!(
        p["breaker"],
        json!({
            "state": "open",
            "failure_rate": 0.5,
            "slow_rate": 0.125,
            "window_calls": 4,
            "transitions": 3,
            "last_transition": {"from": "half_open", "to": "open", "reason": "failure_rate", "seconds_ago": 2.0},
            "shadow_state": null
        })
    );
    assert_eq!(
        p["bulkhead"],
        json!({"in_flight": 2, "limit": 4, "adaptive": false})
    );
    assert_eq!(p["rate_limit"], Value::Null);
    assert_eq!(
        p["requests"],
        json!([{"layer": "circuit_breaker", "success": 1, "failure": 2, "ignored": 0, "cancelled": 1, "total": 4}])
    );
    // Over 7 seconds of uptime: one of each in the window.
    assert_eq!(
        p["panics"],
        json!({"total": 1, "recent": 1, "per_second": 1.0 / 7.0})
    );
    assert_eq!(p["timeouts"]["recent"], 1);
    assert_eq!(
        p["fallbacks"]["by_trigger"],
        json!([{"trigger": "rejection", "total": 1}])
    );
    assert_eq!(p["rejections"]["by_reason"][0]["reason"], "circuit_open");

    let s = policy(&json, "search");
    assert_eq!(s["health"], "degraded");
    assert_eq!(s["breaker"], Value::Null);
    assert_eq!(s["rejections"]["total"], 8);
    assert_eq!(s["rejections"]["recent"], 8);
    assert_eq!(s["rejections"]["by_reason"][0]["reason"], "rate_limited");
    assert_eq!(s["rejections"]["by_reason"][0]["total"], 6);
    assert_eq!(s["rejections"]["by_reason"][1]["reason"], "missing_key");
    assert_eq!(
        s["rate_limit"],
        json!({"keys": 120, "key_cap": 1000, "evicted": 7, "overflow": 1})
    );
    assert_eq!(
        s["bulkhead"],
        json!({"in_flight": 0, "limit": 14, "adaptive": true})
    );
    assert_eq!(
        s["malformed_headers"],
        json!([{"header": "grpc-timeout", "total": 1}])
    );
    assert!(
        s["concerns"][0]
            .as_str()
            .unwrap()
            .contains("rejections/s, mostly rate limited"),
        "{s}"
    );

    let st = policy(&json, "static");
    assert_eq!(st["health"], "ok");
    assert_eq!(st["concerns"], json!([]));
    assert_eq!(st["admitted"], json!([{"layer": "rate_limit", "total": 1}]));

    assert_eq!(
        json["task_groups"],
        json!([{"name": "workers", "live": 2, "started": 3, "panics": 1, "restarts": 1, "gave_up": 0,
                "ended": [{"end": "panicked", "total": 1}]}])
    );
    assert_eq!(
        json["offload_queues"],
        json!([{"name": "audit", "delivered": 1, "dropped_total": 1,
                "dropped": [{"reason": "queue_full", "total": 1}],
                "failed_attempts": 2, "panicked_attempts": 1}])
    );
    assert_eq!(json["untracked_events"], 0);
}

#[test]
fn recent_rates_slide_with_virtual_time() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    clock.advance(Duration::from_secs(100));
    // 5 per second for 10 seconds.
    for _ in 0..10 {
        reject(&sink, "api", RejectReason::ConcurrencyFull, 5);
        clock.advance(Duration::from_secs(1));
    }
    let snap = sink.snapshot();
    let api = &snap.policies[0];
    assert_eq!(api.rejections.total, 50);
    assert_eq!(api.rejections.recent, 50);
    assert_eq!(api.rejections.per_second, 5.0);
    assert_eq!(api.health, Health::Degraded);

    // Quiet for 5 seconds: the first five seconds leave the window.
    clock.advance(Duration::from_secs(5));
    let api = &sink.snapshot().policies[0];
    assert_eq!(api.rejections.recent, 25);
    assert_eq!(api.rejections.per_second, 2.5);

    // Quiet for the whole window: healthy again, totals kept.
    clock.advance(Duration::from_secs(20));
    let api = &sink.snapshot().policies[0];
    assert_eq!(api.rejections.recent, 0);
    assert_eq!(api.rejections.per_second, 0.0);
    assert_eq!(api.rejections.total, 50);
    assert_eq!(api.health, Health::Ok);
}

#[tokio::test(start_paused = true)]
async fn default_clock_follows_paused_tokio_time() {
    let sink = SnapshotSink::new();
    reject(&sink, "api", RejectReason::RateLimited, 4);
    tokio::time::advance(Duration::from_secs(4)).await;
    let snap = sink.snapshot();
    assert_eq!(snap.uptime_seconds, 4.0);
    assert_eq!(snap.policies[0].rejections.per_second, 1.0);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(sink.snapshot().policies[0].rejections.recent, 0);
}

#[test]
fn full_bulkhead_and_half_open_breaker_are_degraded() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    for _ in 0..2 {
        sink.record(&Event::InFlightChanged {
            policy: "db",
            layer: LayerKind::Bulkhead,
            change: InFlightChange::Acquired,
            in_flight: 0,
            limit: 2,
        });
    }
    sink.record(&Event::StateChanged {
        policy: "probe",
        from: CircuitState::Open,
        to: CircuitState::HalfOpen,
        reason: TransitionReason::WaitElapsed,
    });
    let snap = sink.snapshot();
    for p in &snap.policies {
        assert_eq!(p.health, Health::Degraded, "{}", p.name);
    }
    let db = snap.policies.iter().find(|p| p.name == "db").unwrap();
    assert_eq!(db.concerns, ["bulkhead full (2/2 in flight)"]);
}

#[test]
fn builder_validates_window_and_names() {
    let err = SnapshotSink::builder()
        .window(Duration::from_millis(500))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "window");
    assert!(err.to_string().contains("snapshot sink"), "{err}");
    let err = SnapshotSink::builder()
        .window(Duration::from_secs(7200))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "window");
    let err = SnapshotSink::builder().max_names(0).build().unwrap_err();
    assert_eq!(err.field(), "max_names");
    // Partial seconds round up.
    let clock = ManualClock::new();
    let sink = SnapshotSink::builder()
        .clock(clock.clock())
        .window(Duration::from_millis(2500))
        .build()
        .unwrap();
    assert_eq!(sink.snapshot().window_seconds, 3);
}

#[test]
fn names_past_the_limit_are_counted() {
    let clock = ManualClock::new();
    let sink = SnapshotSink::builder()
        .clock(clock.clock())
        .max_names(1)
        .build()
        .unwrap();
    let location = PanicLocation::new("x.rs", 1, 1);
    for e in every_event(&location) {
        sink.record(&e);
    }
    reject(&sink, "other", RejectReason::RateLimited, 3);
    let snap = sink.snapshot();
    assert_eq!(snap.policies.len(), 1);
    assert_eq!(snap.task_groups.len(), 1);
    assert_eq!(snap.offload_queues.len(), 1);
    assert_eq!(snap.untracked_events, 3);
}

#[derive(Debug, Clone)]
enum Step {
    Reject(usize, usize),
    Complete(usize, usize),
    Acquire(usize),
    Release(usize),
    Panic(usize),
    Transition(usize, usize),
    Advance(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3_usize, 0..RejectReason::ALL.len()).prop_map(|(p, r)| Step::Reject(p, r)),
        (0..3_usize, 0..Outcome::ALL.len()).prop_map(|(p, o)| Step::Complete(p, o)),
        (0..3_usize).prop_map(Step::Acquire),
        (0..3_usize).prop_map(Step::Release),
        (0..3_usize).prop_map(Step::Panic),
        (0..3_usize, 0..CircuitState::ALL.len()).prop_map(|(p, s)| Step::Transition(p, s)),
        (0..3000_u64).prop_map(Step::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the sequence, the snapshot's totals, in-flight counts,
    /// breaker states and recent counts match a simple model.
    #[test]
    fn snapshot_matches_a_model(steps in proptest::collection::vec(step(), 1..200)) {
        const NAMES: [&str; 3] = ["a", "b", "c"];
        let window = 5_u64;
        let clock = ManualClock::new();
        let sink = sink(&clock, window);
        let mut rejections = [[0_u64; 16]; 3];
        let mut outcomes = [[0_u64; 8]; 3];
        let mut in_flight = [0_i64; 3];
        let mut panics = [0_u64; 3];
        let mut state: [Option<CircuitState>; 3] = [None; 3];
        let mut seen = [false; 3];
        // (second, policy) of each recent rejection, for the window.
        let mut rejected_at: Vec<(u64, usize)> = Vec::new();
        let mut now_ms = 0_u64;
        for s in &steps {
            match *s {
                Step::Reject(p, r) => {
                    reject(&sink, NAMES[p], RejectReason::ALL[r], 1);
                    rejections[p][r] += 1;
                    rejected_at.push((now_ms / 1000, p));
                    seen[p] = true;
                }
                Step::Complete(p, o) => {
                    sink.record(&Event::Completed {
                        policy: NAMES[p],
                        layer: LayerKind::Bulkhead,
                        outcome: Outcome::ALL[o],
                        latency: None,
                    });
                    outcomes[p][o] += 1;
                    seen[p] = true;
                }
                Step::Acquire(p) | Step::Release(p) => {
                    let change = if matches!(s, Step::Acquire(_)) {
                        InFlightChange::Acquired
                    } else {
                        InFlightChange::Released
                    };
                    sink.record(&Event::InFlightChanged {
                        policy: NAMES[p],
                        layer: LayerKind::Bulkhead,
                        change,
                        in_flight: 0,
                        limit: 100,
                    });
                    in_flight[p] += change.delta();
                    seen[p] = true;
                }
                Step::Panic(p) => {
                    sink.record(&Event::PanicCaught { policy: NAMES[p], message: "x", location: None });
                    panics[p] += 1;
                    seen[p] = true;
                }
                Step::Transition(p, to) => {
                    let to = CircuitState::ALL[to];
                    sink.record(&Event::StateChanged {
                        policy: NAMES[p],
                        from: state[p].unwrap_or(CircuitState::Closed),
                        to,
                        reason: TransitionReason::Forced,
                    });
                    state[p] = Some(to);
                    seen[p] = true;
                }
                Step::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    now_ms += ms;
                }
            }
        }
        let snap = sink.snapshot();
        prop_assert_eq!(snap.policies.len(), seen.iter().filter(|s| **s).count());
        let now_s = now_ms / 1000;
        for (i, name) in NAMES.iter().enumerate() {
            let Some(p) = snap.policies.iter().find(|p| p.name == *name) else {
                prop_assert!(!seen[i]);
                continue;
            };
            let total: u64 = rejections[i].iter().sum();
            prop_assert_eq!(p.rejections.total, total);
            for r in &p.rejections.by_reason {
                let idx = RejectReason::ALL.iter().position(|x| x.as_str() == r.reason).unwrap();
                prop_assert_eq!(r.total, rejections[i][idx]);
            }
            let recent = rejected_at
                .iter()
                .filter(|(sec, p)| *p == i && *sec + window >= now_s)
                .count() as u64;
            prop_assert_eq!(p.rejections.recent, recent);
            let completed: u64 = outcomes[i].iter().sum();
            let reported: u64 = p.requests.iter().map(|r| r.total).sum();
            prop_assert_eq!(reported, completed);
            if completed > 0 {
                let r = &p.requests[0];
                prop_assert_eq!(r.success, outcomes[i][0]);
                prop_assert_eq!(r.failure, outcomes[i][1]);
                prop_assert_eq!(r.ignored, outcomes[i][2]);
                prop_assert_eq!(r.cancelled, outcomes[i][3]);
            }
            prop_assert_eq!(p.bulkhead.as_ref().map_or(0, |b| b.in_flight), in_flight[i]);
            prop_assert_eq!(p.panics.total, panics[i]);
            prop_assert_eq!(p.breaker.as_ref().map(|b| b.state), state[i].map(|s| s.as_str()));
        }
    }
}

#[test]
fn a_callers_short_deadline_is_counted_apart_and_leaves_health_alone() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    sink.record(&Event::Admitted {
        policy: "edge",
        layer: LayerKind::RateLimit,
    });
    for _ in 0..5 {
        sink.record(&Event::TimedOut {
            policy: "edge",
            timeout: Duration::from_millis(1),
            caller: true,
        });
        // The stack's fallback answers each of them.
        sink.record(&Event::FallbackUsed {
            policy: "edge",
            trigger: FallbackTrigger::Rejection,
        });
    }
    clock.advance(Duration::from_secs(1));
    let json = serde_json::to_value(sink.snapshot()).unwrap();
    let p = policy(&json, "edge");
    assert_eq!(p["health"], "ok", "{p}");
    assert_eq!(p["timeouts"]["total"], 0);
    assert_eq!(p["caller_timeouts"], 5);
    assert_eq!(p["fallbacks"]["total"], 5);
    assert_eq!(p["fallbacks"]["recent"], 0);

    // The policy's own deadline is the service's problem.
    sink.record(&Event::TimedOut {
        policy: "edge",
        timeout: Duration::from_secs(2),
        caller: false,
    });
    let json = serde_json::to_value(sink.snapshot()).unwrap();
    let p = policy(&json, "edge");
    assert_eq!(p["health"], "degraded", "{p}");
    assert_eq!(p["timeouts"]["recent"], 1);
}

#[test]
fn a_metrics_only_breaker_shows_what_enforcing_would_do() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    sink.record(&Event::StateChanged {
        policy: "shadow",
        from: CircuitState::Closed,
        to: CircuitState::MetricsOnly,
        reason: TransitionReason::Forced,
    });
    let json = serde_json::to_value(sink.snapshot()).unwrap();
    assert_eq!(policy(&json, "shadow")["breaker"]["shadow_state"], "closed");
    sink.record(&Event::ShadowStateChanged {
        policy: "shadow",
        from: CircuitState::Closed,
        to: CircuitState::Open,
        reason: TransitionReason::FailureRate,
    });
    let json = serde_json::to_value(sink.snapshot()).unwrap();
    let p = policy(&json, "shadow");
    assert_eq!(p["breaker"]["state"], "metrics_only");
    assert_eq!(p["breaker"]["shadow_state"], "open");
    assert_eq!(p["health"], "ok", "shadow mode enforces nothing");
    assert_eq!(p["concerns"], json!(["metrics-only breaker would be open"]));
    // Back to normal: no shadow state.
    sink.record(&Event::StateChanged {
        policy: "shadow",
        from: CircuitState::MetricsOnly,
        to: CircuitState::Closed,
        reason: TransitionReason::Reset,
    });
    let json = serde_json::to_value(sink.snapshot()).unwrap();
    assert_eq!(
        policy(&json, "shadow")["breaker"]["shadow_state"],
        Value::Null
    );
}

#[test]
fn concerns_put_a_rejection_before_what_a_metrics_only_breaker_would_do() {
    let clock = ManualClock::new();
    let sink = sink(&clock, 10);
    clock.advance(Duration::from_secs(30));
    sink.record(&Event::StateChanged {
        policy: "shadow",
        from: CircuitState::Closed,
        to: CircuitState::MetricsOnly,
        reason: TransitionReason::Forced,
    });
    sink.record(&Event::ShadowStateChanged {
        policy: "shadow",
        from: CircuitState::Closed,
        to: CircuitState::Open,
        reason: TransitionReason::FailureRate,
    });
    reject(&sink, "shadow", RejectReason::RateLimited, 1);
    let snapshot = sink.snapshot();
    let p = &snapshot.policies[0];
    assert_eq!(p.health, Health::Degraded);
    assert_eq!(
        p.concerns,
        [
            "0.1 rejections/s, mostly rate limited",
            "metrics-only breaker would be open",
        ]
    );
}

#[test]
fn a_snapshot_racing_transitions_pairs_each_with_its_own_time() {
    // The writer makes transition `i` at millisecond `i` of the clock, the
    // kind following `i % 3`; a snapshot taken meanwhile must show a last
    // transition whose time and kind belong together.
    // Closed to open, open to half-open, half-open to closed.
    let kinds: [(CircuitState, CircuitState, TransitionReason); 3] =
        crate::common::transition_tour()[..3].try_into().unwrap();
    // Bounded both ways: the writer stops after `TRANSITIONS` (or, if the
    // reader has not checked one snapshot by then, once it has or 30 s
    // have passed) or once the reader has checked `SNAPSHOTS` snapshots
    // taken while it ran.
    const TRANSITIONS: u64 = 5_000_000;
    const SNAPSHOTS: u64 = 20_000;
    let clock = ManualClock::new();
    let sink = std::sync::Arc::new(sink(&clock, 10));
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (sink, clock, done, seen) = (sink.clone(), clock.clone(), done.clone(), seen.clone());
        std::thread::spawn(move || {
            let began = std::time::Instant::now();
            let more = |i: u64| {
                i < TRANSITIONS
                    || (!seen.load(std::sync::atomic::Ordering::Acquire)
                        && began.elapsed() < Duration::from_secs(30))
            };
            let mut i = 0;
            while more(i) && !done.load(std::sync::atomic::Ordering::Acquire) {
                i += 1;
                clock.advance(Duration::from_millis(1));
                let (from, to, reason) = kinds[(i % 3) as usize];
                sink.record(&Event::StateChanged {
                    policy: "racing",
                    from,
                    to,
                    reason,
                });
            }
            done.store(true, std::sync::atomic::Ordering::Release);
        })
    };
    let mut checked = 0_u64;
    while checked < SNAPSHOTS && !writer.is_finished() {
        let json = serde_json::to_value(sink.snapshot()).unwrap();
        let Some(p) = json["policies"].as_array().and_then(|p| p.first()) else {
            continue;
        };
        let last = &p["breaker"]["last_transition"];
        let (Some(uptime), Some(ago)) = (
            json["uptime_seconds"].as_f64(),
            last["seconds_ago"].as_f64(),
        ) else {
            continue;
        };
        if ago == 0.0 {
            // Made after the snapshot read its clock: its time is unknown.
            continue;
        }
        let at_ms = ((uptime - ago) * 1000.0).round() as u64;
        let (from, to, _) = kinds[(at_ms % 3) as usize];
        assert_eq!(
            (last["from"].as_str(), last["to"].as_str()),
            (Some(from.as_str()), Some(to.as_str())),
            "transition at {at_ms} ms: {last}"
        );
        checked += 1;
        seen.store(true, std::sync::atomic::Ordering::Release);
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    writer.join().unwrap();
    assert!(checked > 0, "no snapshot raced the transitions");
}

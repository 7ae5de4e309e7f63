//! The breaker's state machine, driven with tokio's paused clock: every
//! transition, every configuration option, and the exact call at which the
//! breaker opens and closes.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Events, Seen};
use palisade_breaker::error::CircuitOpen;
use palisade_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer, ProbeCounts};
use palisade_core::{
    BoxError, CircuitState, Elapsed, KeyKind, MissingKey, OverloadKind, Overloaded, Panicked,
    PolicyName, RateLimited, RejectReason, TransitionReason,
};
use tower::util::BoxCloneService;
use tower::{Layer, Service, ServiceExt, service_fn};

use CircuitState::{Closed, HalfOpen, Open};

#[derive(Clone, Copy, Debug)]
struct Req {
    fail: bool,
    takes: Duration,
}

const OK: Req = Req {
    fail: false,
    takes: Duration::ZERO,
};
const FAIL: Req = Req {
    fail: true,
    takes: Duration::ZERO,
};

fn slow(fail: bool, secs: u64) -> Req {
    Req {
        fail,
        takes: Duration::from_secs(secs),
    }
}

type Svc = BoxCloneService<Req, (), BoxError>;

struct Rig {
    svc: Svc,
    layer: CircuitBreakerLayer,
    events: Events,
    inner_calls: Arc<AtomicUsize>,
}

/// The dependency behind every breaker here: takes `r.takes`, then fails
/// if `r.fail`.
async fn dependency(r: Req) -> Result<(), BoxError> {
    if !r.takes.is_zero() {
        tokio::time::sleep(r.takes).await;
    }
    if r.fail {
        Err("dependency failed".into())
    } else {
        Ok(())
    }
}

impl Rig {
    fn new(configure: impl FnOnce(CircuitBreakerBuilder) -> CircuitBreakerBuilder) -> Self {
        let events = Events::default();
        let layer = configure(
            CircuitBreakerLayer::builder()
                .name("dep")
                .metrics(events.metrics()),
        )
        .build()
        .unwrap();
        let inner_calls = Arc::new(AtomicUsize::new(0));
        let counter = inner_calls.clone();
        let inner = service_fn(move |r: Req| {
            counter.fetch_add(1, Ordering::SeqCst);
            dependency(r)
        });
        Self {
            svc: BoxCloneService::new(layer.layer(inner)),
            layer,
            events,
            inner_calls,
        }
    }

    async fn hit(&self, req: Req) -> Result<(), BoxError> {
        self.svc.clone().oneshot(req).await
    }

    async fn hit_all(&self, reqs: &[Req]) {
        for r in reqs {
            let _ = self.hit(*r).await;
        }
    }

    fn state(&self) -> CircuitState {
        self.layer.handle().state()
    }

    /// Issues a call and returns the future without awaiting it: the
    /// breaker decides admission in `call`.
    fn start(&self, req: Req) -> <Svc as Service<Req>>::Future {
        let mut svc = self.svc.clone();
        svc.call(req)
    }
}

fn open_error(result: Result<(), BoxError>) -> CircuitOpen {
    let err = result.expect_err("expected a rejection");
    err.downcast_ref::<CircuitOpen>()
        .unwrap_or_else(|| panic!("not a CircuitOpen: {err}"))
        .clone()
}

async fn advance(secs: u64) {
    tokio::time::advance(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn opens_at_exactly_the_call_that_reaches_the_failure_rate() {
    let rig = Rig::new(|b| {
        b.count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(0.5)
    });
    rig.hit_all(&[OK, OK, OK, OK, OK, FAIL, FAIL, FAIL, FAIL])
        .await;
    assert_eq!(rig.state(), Closed, "9 calls, under the minimum");
    assert_eq!(rig.layer.handle().counts().calls, 9);
    assert!(rig.hit(FAIL).await.is_err());
    assert_eq!(rig.state(), Open, "10th call: 5 failures of 10 = 0.5");
    assert_eq!(
        rig.events.transitions(),
        vec![(Closed, Open, TransitionReason::FailureRate)]
    );
    // 4 failures of 10 stays closed.
    let rig = Rig::new(|b| {
        b.count_window(10)
            .minimum_calls(10)
            .failure_rate_threshold(0.5)
    });
    rig.hit_all(&[OK, OK, OK, OK, OK, OK, FAIL, FAIL, FAIL, FAIL])
        .await;
    assert_eq!(rig.state(), Closed);
    assert_eq!(rig.layer.handle().failure_rate(), 0.4);
}

#[tokio::test(start_paused = true)]
async fn minimum_calls_gates_the_rate() {
    let rig = Rig::new(|b| {
        b.count_window(10)
            .minimum_calls(5)
            .failure_rate_threshold(0.5)
    });
    rig.hit_all(&[FAIL, FAIL, FAIL, FAIL]).await;
    assert_eq!(
        rig.state(),
        Closed,
        "a 100% failure rate over 4 calls is not judged"
    );
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.state(), Open, "opens on the 5th call");
}

#[tokio::test(start_paused = true)]
async fn the_count_window_slides_one_call_at_a_time() {
    let rig = Rig::new(|b| {
        b.count_window(4)
            .minimum_calls(4)
            .failure_rate_threshold(0.5)
    });
    // F S S S -> 1/4; S pushes the F out -> 0/4; F -> 1/4; F -> 2/4 opens.
    rig.hit_all(&[FAIL, OK, OK, OK, OK, FAIL]).await;
    assert_eq!(rig.state(), Closed);
    let counts = rig.layer.handle().counts();
    assert_eq!((counts.calls, counts.failures), (4, 1));
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.state(), Open, "opens on the 7th call");
}

/// Four failures in a row against a window of four calls: the breaker must
/// open at the fourth.
async fn opens_after_four_failures(rig: &Rig) {
    for n in 1..=3 {
        rig.hit(FAIL).await.unwrap_err();
        assert_eq!(rig.state(), Closed, "closed after {n} failures");
    }
    rig.hit(FAIL).await.unwrap_err();
    let counts = rig.layer.handle().counts();
    assert_eq!((counts.calls, counts.failures), (4, 4));
    assert_eq!(rig.state(), Open, "opens on the 4th failure");
}

#[tokio::test(start_paused = true)]
async fn the_count_window_still_counts_after_a_long_outage() {
    // Each failed probe reopens the breaker: two transitions per round,
    // 40,000 over the outage, more than the window's 16-bit epoch stamps
    // tell apart without help.
    let rig = Rig::new(|b| {
        b.count_window(4)
            .minimum_calls(4)
            .half_open_probes(1)
            .open_wait(Duration::from_millis(1))
    });
    rig.hit_all(&[FAIL; 4]).await;
    assert_eq!(rig.state(), Open);
    for round in 0..20_000 {
        tokio::time::advance(Duration::from_millis(1)).await;
        rig.hit(FAIL).await.unwrap_err();
        assert_eq!(rig.state(), Open, "round {round}");
        rig.events.clear();
    }
    tokio::time::advance(Duration::from_millis(1)).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed, "the dependency recovered");
    opens_after_four_failures(&rig).await;
}

#[tokio::test(start_paused = true)]
async fn the_count_window_still_counts_after_many_operator_resets() {
    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    rig.hit_all(&[OK; 4]).await;
    let handle = rig.layer.handle();
    for _ in 0..40_000 {
        handle.reset();
    }
    rig.events.clear();
    opens_after_four_failures(&rig).await;
}

#[tokio::test(start_paused = true)]
async fn the_time_window_forgets_old_buckets() {
    let rig = Rig::new(|b| {
        b.time_window(Duration::from_secs(10), 10)
            .minimum_calls(4)
            .failure_rate_threshold(0.5)
    });
    rig.hit_all(&[FAIL, FAIL, FAIL]).await;
    advance(10).await;
    assert_eq!(
        rig.layer.handle().counts().calls,
        0,
        "t=0 left the window at t=10"
    );
    rig.hit_all(&[OK, OK, OK, FAIL]).await;
    assert_eq!(rig.state(), Closed, "1 failure of 4 in the window");
    advance(9).await;
    // The 4 calls of t=10 are still in the window at t=19.
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.layer.handle().counts().calls, 5);
    assert_eq!(rig.state(), Closed, "2 of 5");
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.state(), Open, "3 of 6 = 0.5");
}

#[tokio::test(start_paused = true)]
async fn the_time_window_still_trips_after_long_quiet_spells() {
    // 100 ms buckets: the quiet spells below span 2^15 and 2^16 buckets
    // and more, where a narrow bucket tag would wrap.
    for quiet in [3_277, 3_600, 6_554, 86_400] {
        let rig = Rig::new(|b| {
            b.time_window(Duration::from_secs(1), 10)
                .minimum_calls(4)
                .failure_rate_threshold(0.5)
        });
        rig.hit_all(&[OK, OK, FAIL]).await;
        advance(quiet).await;
        assert_eq!(rig.layer.handle().counts().calls, 0, "after {quiet} s");
        rig.hit_all(&[OK, FAIL, FAIL]).await;
        let counts = rig.layer.handle().counts();
        assert_eq!(
            (counts.calls, counts.failures),
            (3, 2),
            "only the calls after {quiet} s of quiet count"
        );
        assert_eq!(rig.state(), Closed, "3 calls, under the minimum");
        rig.hit(FAIL).await.unwrap_err();
        assert_eq!(
            rig.state(),
            Open,
            "3 failures of 4 after {quiet} s of quiet"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn slow_calls_open_the_breaker_even_when_they_succeed() {
    let rig = Rig::new(|b| {
        b.count_window(4)
            .minimum_calls(4)
            .slow_call_duration(Duration::from_secs(2))
            .slow_call_rate_threshold(0.5)
    });
    rig.hit(slow(false, 2)).await.unwrap();
    rig.hit(slow(false, 1)).await.unwrap();
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed);
    assert_eq!(rig.layer.handle().counts().slow, 1, "2s is slow, 1s is not");
    rig.hit(slow(false, 3)).await.unwrap();
    assert_eq!(rig.state(), Open, "2 slow of 4");
    assert_eq!(
        rig.events.transitions(),
        vec![(Closed, Open, TransitionReason::SlowRate)]
    );
    assert!(rig.events.all().contains(&Seen::Completed(
        palisade_core::Outcome::Success,
        Some(Duration::from_secs(3))
    )));
}

#[tokio::test(start_paused = true)]
async fn latency_is_reported_only_when_measured() {
    let rig = Rig::new(|b| b.count_window(10).minimum_calls(10));
    rig.hit(slow(false, 1)).await.unwrap();
    assert!(
        rig.events
            .all()
            .contains(&Seen::Completed(palisade_core::Outcome::Success, None))
    );
    let rig = Rig::new(|b| b.count_window(10).minimum_calls(10).measure_latency(true));
    rig.hit(slow(false, 1)).await.unwrap();
    assert!(rig.events.all().contains(&Seen::Completed(
        palisade_core::Outcome::Success,
        Some(Duration::from_secs(1))
    )));
}

#[tokio::test(start_paused = true)]
async fn open_rejects_at_once_with_retry_after_and_no_inner_call() {
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(30))
    });
    rig.hit_all(&[FAIL, FAIL]).await;
    assert_eq!(rig.state(), Open);
    let inner_before = rig.inner_calls.load(Ordering::SeqCst);
    advance(12).await;
    let open = open_error(rig.hit(OK).await);
    assert_eq!(open.retry_after(), Some(Duration::from_secs(18)));
    assert_eq!(open.state(), Open);
    assert_eq!(open.policy(), "dep");
    assert_eq!(open.reason(), RejectReason::CircuitOpen);
    assert_eq!(rig.inner_calls.load(Ordering::SeqCst), inner_before);
    assert_eq!(
        rig.layer.handle().retry_after(),
        Some(Duration::from_secs(18))
    );
    assert_eq!(
        rig.events
            .count(|e| *e == Seen::Rejected(RejectReason::CircuitOpen)),
        1
    );
    // One nanosecond before the wait ends it is still open.
    tokio::time::advance(Duration::from_secs(18) - Duration::from_nanos(1)).await;
    assert!(rig.hit(OK).await.is_err());
    assert_eq!(rig.state(), Open);
}

#[tokio::test(start_paused = true)]
async fn half_open_admits_exactly_n_probes_and_closes_on_the_last() {
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(3)
    });
    rig.hit_all(&[FAIL, FAIL]).await;
    advance(5).await;
    let p1 = rig.start(slow(false, 1));
    assert_eq!(
        rig.state(),
        HalfOpen,
        "the first call after the wait moves to half-open"
    );
    let p2 = rig.start(slow(false, 1));
    let p3 = rig.start(slow(false, 2));
    let refused = open_error(rig.hit(OK).await);
    assert_eq!(refused.state(), HalfOpen);
    assert_eq!(refused.reason(), RejectReason::HalfOpenFull);
    assert_eq!(
        rig.layer.handle().probes(),
        ProbeCounts {
            admitted: 3,
            completed: 0,
            failures: 0,
            slow: 0
        }
    );
    let (a, b) = tokio::join!(p1, p2);
    a.unwrap();
    b.unwrap();
    assert_eq!(rig.state(), HalfOpen, "2 of 3 probes done");
    assert!(rig.hit(OK).await.is_err(), "still no free probe slot");
    p3.await.unwrap();
    assert_eq!(rig.state(), Closed, "closes on the 3rd probe");
    assert_eq!(
        rig.events.transitions(),
        vec![
            (Closed, Open, TransitionReason::FailureRate),
            (Open, HalfOpen, TransitionReason::WaitElapsed),
            (HalfOpen, Closed, TransitionReason::ProbesSucceeded),
        ]
    );
    assert_eq!(rig.layer.handle().counts().calls, 0, "a fresh window");
    assert_eq!(
        rig.events
            .count(|e| *e == Seen::Rejected(RejectReason::HalfOpenFull)),
        2
    );
}

#[tokio::test(start_paused = true)]
async fn probes_over_a_threshold_reopen_the_breaker() {
    // Failure rate: 1 of 2 probes failed = 0.5 reaches the threshold.
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(2)
    });
    rig.hit_all(&[FAIL, FAIL]).await;
    advance(5).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), HalfOpen);
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.state(), Open);
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::FailureRate))
    );

    // Slow rate: the probes succeed but are slow.
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(2)
            .slow_call_duration(Duration::from_secs(1))
            .slow_call_rate_threshold(0.5)
    });
    rig.hit_all(&[FAIL, FAIL]).await;
    advance(5).await;
    rig.hit(OK).await.unwrap();
    rig.hit(slow(false, 1)).await.unwrap();
    assert_eq!(rig.state(), Open);
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::SlowRate))
    );
}

#[tokio::test(start_paused = true)]
async fn the_open_wait_grows_over_consecutive_openings_and_resets_after_a_healthy_close() {
    let rig = Rig::new(|b| {
        b.count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(5))
            .open_wait_backoff(2.0, Duration::from_secs(20))
            .half_open_probes(1)
    });
    rig.hit(FAIL).await.unwrap_err();
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = rig.layer.handle().retry_after().unwrap();
        waits.push(wait.as_secs());
        tokio::time::advance(wait).await;
        rig.hit(FAIL).await.unwrap_err(); // the probe fails
        assert_eq!(rig.state(), Open);
    }
    waits.push(rig.layer.handle().retry_after().unwrap().as_secs());
    assert_eq!(waits, vec![5, 10, 20, 20, 20], "doubles, capped at 20s");
    assert_eq!(rig.layer.handle().consecutive_openings().0, 5);
    advance(20).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed);
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(
        rig.layer.handle().retry_after(),
        Some(Duration::from_secs(5)),
        "growth starts over after a healthy close"
    );
}

#[tokio::test(start_paused = true)]
async fn jitter_is_seeded_and_never_exceeds_the_wait() {
    async fn waits(seed: u64) -> Vec<Duration> {
        let rig = Rig::new(|b| {
            b.count_window(1)
                .minimum_calls(1)
                .open_wait(Duration::from_secs(10))
                .jitter(0.5)
                .jitter_seed(seed)
                .half_open_probes(1)
        });
        rig.hit(FAIL).await.unwrap_err();
        let mut out = Vec::new();
        for _ in 0..8 {
            let wait = rig.layer.handle().retry_after().unwrap();
            out.push(wait);
            tokio::time::advance(wait).await;
            rig.hit(FAIL).await.unwrap_err();
        }
        out
    }
    let a = waits(7).await;
    assert_eq!(a, waits(7).await, "same seed, same waits");
    assert_ne!(a, waits(8).await);
    for w in &a {
        assert!(
            *w > Duration::from_secs(5) && *w <= Duration::from_secs(10),
            "{w:?}"
        );
    }
    let distinct: std::collections::BTreeSet<_> = a.iter().collect();
    assert!(distinct.len() > 1, "the jitter varies");
}

#[tokio::test(start_paused = true)]
async fn half_open_max_wait_reopens_when_probes_never_complete() {
    let rig = Rig::new(|b| {
        b.count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(1)
            .half_open_max_wait(Duration::from_secs(10))
    });
    rig.hit(FAIL).await.unwrap_err();
    advance(5).await;
    let stuck = rig.start(slow(false, 3600));
    assert_eq!(rig.state(), HalfOpen);
    advance(9).await;
    assert!(rig.hit(OK).await.is_err(), "probe slot still held");
    assert_eq!(rig.state(), HalfOpen);
    advance(1).await;
    let open = open_error(rig.hit(OK).await);
    assert_eq!(open.state(), Open, "the max wait re-opened it");
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::HalfOpenTimeout))
    );
    // The late probe completing does not close the new open period.
    advance(3600).await;
    stuck.await.unwrap();
    assert_eq!(rig.state(), Open);
    assert!(
        !rig.events
            .transitions()
            .iter()
            .any(|t| t.2 == TransitionReason::ProbesSucceeded)
    );
}

#[tokio::test(start_paused = true)]
async fn the_handle_applies_due_transitions_without_traffic() {
    let rig = Rig::new(|b| {
        b.count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(1)
            .half_open_max_wait(Duration::from_secs(10))
    });
    let handle = rig.layer.handle();
    rig.hit(FAIL).await.unwrap_err();
    advance(4).await;
    assert_eq!(handle.refresh(), Open);
    advance(1).await;
    assert_eq!(handle.refresh(), HalfOpen);
    advance(10).await;
    assert_eq!(
        handle.refresh(),
        HalfOpen,
        "no probe ran: a fresh half-open period, not an opening"
    );
    assert_eq!(handle.consecutive_openings().0, 1);
    // A probe that hangs past the max wait re-opens it on the next refresh.
    let stuck = rig.start(slow(false, 3600));
    assert_eq!(handle.probes().admitted, 1);
    advance(10).await;
    assert_eq!(handle.refresh(), Open);
    assert_eq!(handle.consecutive_openings().0, 2);
    assert_eq!(
        rig.events.transitions(),
        vec![
            (Closed, Open, TransitionReason::FailureRate),
            (Open, HalfOpen, TransitionReason::WaitElapsed),
            (HalfOpen, Open, TransitionReason::HalfOpenTimeout),
        ]
    );
    drop(stuck);
}

/// One healthy call every `every` seconds after the breaker tripped, with
/// the default open wait, probes and half-open max wait: the calls that
/// were rejected, and the openings counted.
async fn sparse_traffic(rig: &Rig, every: u64, calls: usize) -> (usize, u32) {
    rig.hit_all(&[FAIL; 4]).await;
    assert_eq!(rig.state(), Open);
    sparse_traffic_more(rig, every, calls).await
}

#[tokio::test(start_paused = true)]
async fn sparse_healthy_traffic_closes_the_breaker() {
    // Defaults: 30 s open wait, 5 probes, 60 s half-open max wait.
    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    let (rejected, openings) = sparse_traffic(&rig, 20, 100).await;
    assert_eq!(rig.state(), Closed);
    assert_eq!(rejected, 1, "only the call during the open wait (t = 20 s)");
    assert_eq!(openings, 0, "a healthy close starts the growth over");
    // Half-open at t = 40 s; probes at 40, 60, 80, 100 and 120 s all
    // succeed, each starting the max wait over: the fifth closes it.
    assert_eq!(
        rig.events.transitions(),
        vec![
            (Closed, Open, TransitionReason::FailureRate),
            (Open, HalfOpen, TransitionReason::WaitElapsed),
            (HalfOpen, Closed, TransitionReason::ProbesSucceeded),
        ]
    );
    assert_eq!(rig.inner_calls.load(Ordering::SeqCst), 4 + 99);
    assert_eq!(
        rig.events.count(|e| matches!(e, Seen::Rejected(_))),
        1,
        "no call was rejected because traffic was sparse"
    );

    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    let _ = sparse_traffic(&rig, 20, 5).await;
    assert_eq!(rig.state(), HalfOpen, "four probes by t = 100 s");
    assert_eq!(rig.layer.handle().probes().completed, 4);
    advance(20).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed, "the fifth probe, at t = 120 s");

    // Sparser than the max wait: one call every 100 s. The probe at
    // t = 100 s is alone in its period; the call at 200 s finds the max
    // wait over and closes the breaker.
    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    let _ = sparse_traffic(&rig, 100, 1).await;
    assert_eq!(rig.state(), HalfOpen);
    let (rejected, openings) = sparse_traffic_more(&rig, 100, 1).await;
    assert_eq!((rig.state(), rejected, openings), (Closed, 0, 0));
    let (rejected, openings) = sparse_traffic_more(&rig, 100, 8).await;
    assert_eq!((rig.state(), rejected, openings), (Closed, 0, 0));
}

/// Calls that succeed, one every `every` seconds: how many were rejected,
/// and the openings counted at the end.
async fn sparse_traffic_more(rig: &Rig, every: u64, calls: usize) -> (usize, u32) {
    let mut rejected = 0;
    for _ in 0..calls {
        advance(every).await;
        if rig.hit(OK).await.is_err() {
            rejected += 1;
        }
    }
    (rejected, rig.layer.handle().consecutive_openings().0)
}

#[tokio::test(start_paused = true)]
async fn the_first_call_after_a_quiet_spell_is_a_probe_even_after_a_refresh() {
    let rig = Rig::new(|b| b.count_window(2).minimum_calls(2).half_open_probes(1));
    let handle = rig.layer.handle();
    rig.hit_all(&[FAIL, FAIL]).await;
    advance(31).await;
    assert_eq!(
        handle.refresh(),
        HalfOpen,
        "a scrape starts the half-open clock"
    );
    advance(61).await;
    rig.events.clear();
    let stuck = rig.start(slow(false, 3600));
    assert_eq!(
        handle.probes(),
        ProbeCounts {
            admitted: 1,
            completed: 0,
            failures: 0,
            slow: 0
        },
        "admitted as the probe of a fresh half-open period"
    );
    assert_eq!(handle.state(), HalfOpen);
    assert_eq!(handle.consecutive_openings().0, 1, "no opening counted");
    assert_eq!(rig.events.all(), vec![Seen::Admitted]);
    drop(stuck);

    // Likewise without the refresh, after a spell much longer than the max
    // wait: the call that moves the breaker to half-open is its probe and
    // closes it.
    let rig = Rig::new(|b| b.count_window(2).minimum_calls(2).half_open_probes(1));
    rig.hit_all(&[FAIL, FAIL]).await;
    advance(3600).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_probe_that_hangs_past_the_max_wait_reopens_with_the_defaults() {
    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    let handle = rig.layer.handle();
    rig.hit_all(&[FAIL; 4]).await;
    advance(30).await;
    rig.hit(OK).await.unwrap();
    let stuck = rig.start(slow(false, 3600));
    rig.hit(OK).await.unwrap();
    assert_eq!(handle.probes().admitted, 3);
    assert_eq!(handle.probes().completed, 2);
    advance(60).await;
    let open = open_error(rig.hit(OK).await);
    assert_eq!(open.state(), Open);
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::HalfOpenTimeout))
    );
    assert_eq!(handle.consecutive_openings().0, 2);
    // The hung probe finishing late counts in no period.
    advance(3600).await;
    stuck.await.unwrap();
    assert_eq!(handle.refresh(), HalfOpen, "the open wait is over");
    assert_eq!(handle.probes().completed, 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_when_the_max_wait_runs_out() {
    // Defaults: 5 probes, failure rate threshold 0.5. Two probes finish
    // (one failed: rate 0.5), then nothing until the max wait is over.
    let rig = Rig::new(|b| b.count_window(4).minimum_calls(4));
    let handle = rig.layer.handle();
    rig.hit_all(&[FAIL; 4]).await;
    advance(30).await;
    rig.hit(OK).await.unwrap();
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(rig.state(), HalfOpen, "2 of 5 probes");
    advance(60).await;
    let open = open_error(rig.hit(OK).await);
    assert_eq!(open.state(), Open);
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::FailureRate))
    );
    assert_eq!(handle.consecutive_openings().0, 2);
    assert_eq!(rig.inner_calls.load(Ordering::SeqCst), 4 + 2);

    // A single slow probe re-opens it too.
    let rig = Rig::new(|b| {
        b.count_window(4)
            .minimum_calls(4)
            .slow_call_duration(Duration::from_secs(1))
    });
    rig.hit_all(&[FAIL; 4]).await;
    advance(30).await;
    rig.hit(slow(false, 2)).await.unwrap();
    advance(60).await;
    rig.hit(OK).await.unwrap_err();
    assert_eq!(
        rig.events.transitions().last(),
        Some(&(HalfOpen, Open, TransitionReason::SlowRate))
    );
}

#[tokio::test(start_paused = true)]
async fn a_sink_may_read_the_state_from_inside_an_event() {
    use palisade_core::{Event, Metrics, MetricsSink};
    use std::sync::{Mutex, OnceLock};

    #[derive(Default)]
    struct ReadsState {
        handle: OnceLock<palisade_breaker::CircuitBreakerHandle>,
        seen: Mutex<Vec<(CircuitState, CircuitState, u64)>>,
    }
    impl MetricsSink for ReadsState {
        fn record(&self, event: &Event<'_>) {
            if let (Event::StateChanged { to, .. }, Some(h)) = (event, self.handle.get()) {
                let p = h.probes();
                let _ = (h.counts(), h.retry_after(), h.shadow_state(), h.policy());
                self.seen.lock().unwrap().push((*to, h.state(), p.admitted));
            }
        }
    }
    let sink = Arc::new(ReadsState::default());
    let layer = CircuitBreakerLayer::builder()
        .count_window(1)
        .minimum_calls(1)
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    sink.handle.set(layer.handle()).unwrap();
    let svc = layer.layer(service_fn(|()| async {
        Err::<(), BoxError>("down".into())
    }));
    svc.clone().oneshot(()).await.unwrap_err();
    layer.handle().force_open();
    layer.handle().reset();
    assert_eq!(
        *sink.seen.lock().unwrap(),
        vec![
            (Open, Open, 0),
            (CircuitState::ForcedOpen, CircuitState::ForcedOpen, 0),
            (Closed, Closed, 0),
        ],
        "the handle already shows the state the event entered"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_admitted_before_a_transition_do_not_count_after_it() {
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(1)
    });
    // Admitted while closed, completes after the breaker opened and went
    // half-open: it is not a probe, and it is not in any window.
    let late = rig.start(slow(false, 6));
    rig.hit_all(&[FAIL, FAIL]).await;
    assert_eq!(rig.state(), Open);
    advance(5).await;
    let probe = rig.start(slow(false, 2));
    assert_eq!(rig.state(), HalfOpen);
    late.await.unwrap();
    assert_eq!(rig.state(), HalfOpen, "the late success closed nothing");
    assert_eq!(rig.layer.handle().probes().completed, 0);
    probe.await.unwrap();
    assert_eq!(rig.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn local_rejections_are_ignored_timeouts_and_panics_are_failures() {
    let events = Events::default();
    let layer = CircuitBreakerLayer::builder()
        .count_window(3)
        .minimum_calls(3)
        .metrics(events.metrics())
        .build()
        .unwrap();
    let p = PolicyName::new("below");
    let errors: Vec<BoxError> = vec![
        RateLimited::new(p.clone(), Duration::from_secs(1), KeyKind::Global).into(),
        Overloaded::new(p.clone(), 4, OverloadKind::Full).into(),
        MissingKey::new(p.clone(), KeyKind::Header).into(),
        Elapsed::new(p.clone(), Duration::from_secs(1)).into(),
        Panicked::new(p.clone(), "boom").into(),
    ];
    let errors = Arc::new(std::sync::Mutex::new(errors));
    let svc = layer.layer(service_fn(move |()| {
        let err = errors.lock().unwrap().remove(0);
        async move { Err::<(), BoxError>(err) }
    }));
    for _ in 0..3 {
        svc.clone().oneshot(()).await.unwrap_err();
    }
    assert_eq!(
        layer.handle().counts().calls,
        0,
        "local saturation is ignored"
    );
    assert_eq!(
        events.count(|e| *e == Seen::Completed(palisade_core::Outcome::Ignored, None)),
        3
    );
    svc.clone().oneshot(()).await.unwrap_err();
    svc.clone().oneshot(()).await.unwrap_err();
    let counts = layer.handle().counts();
    assert_eq!(
        (counts.calls, counts.failures),
        (2, 2),
        "Elapsed and Panicked fail"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelled_calls_are_ignored_unless_configured_as_failures() {
    for as_failure in [false, true] {
        let rig = Rig::new(|b| {
            b.count_window(2)
                .minimum_calls(2)
                .cancelled_as_failure(as_failure)
        });
        for _ in 0..2 {
            let future = rig.start(slow(false, 10));
            // Polled once (the inner call started), then dropped.
            assert!(common::poll_once(future).is_pending());
        }
        let counts = rig.layer.handle().counts();
        if as_failure {
            assert_eq!((counts.calls, counts.failures), (2, 2));
            assert_eq!(rig.state(), Open);
        } else {
            assert_eq!(counts.calls, 0);
            assert_eq!(rig.state(), Closed);
        }
        assert_eq!(
            rig.events
                .count(|e| matches!(e, Seen::Completed(palisade_core::Outcome::Cancelled, _))),
            2
        );
    }
}

#[tokio::test(start_paused = true)]
async fn an_ignored_or_cancelled_probe_gives_its_slot_back() {
    let rig = Rig::new(|b| {
        b.count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(1))
            .half_open_probes(1)
    });
    rig.hit(FAIL).await.unwrap_err();
    advance(1).await;
    let probe = rig.start(slow(false, 5));
    assert!(rig.hit(OK).await.is_err());
    drop(probe);
    assert_eq!(rig.layer.handle().probes().admitted, 0);
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn operator_modes_reject_pass_record_and_reset() {
    let rig = Rig::new(|b| b.count_window(2).minimum_calls(2));
    let handle = rig.layer.handle();

    handle.force_open();
    let open = open_error(rig.hit(OK).await);
    assert_eq!(open.state(), CircuitState::ForcedOpen);
    assert_eq!(open.retry_after(), None);
    assert_eq!(rig.inner_calls.load(Ordering::SeqCst), 0);

    handle.force_closed();
    rig.hit_all(&[FAIL, FAIL, FAIL]).await;
    assert_eq!(handle.state(), CircuitState::ForcedClosed, "never opens");
    assert_eq!(handle.counts().failures, 2, "still recorded");
    assert_eq!(handle.failure_rate(), 1.0);

    handle.disable();
    rig.hit_all(&[FAIL, FAIL, FAIL]).await;
    assert_eq!(handle.state(), CircuitState::Disabled);
    assert_eq!(handle.counts().calls, 0, "nothing recorded");

    handle.metrics_only();
    rig.events.clear();
    rig.hit_all(&[FAIL, FAIL, FAIL, OK]).await;
    assert_eq!(handle.state(), CircuitState::MetricsOnly);
    assert_eq!(handle.shadow_state(), Some(Open), "it would have opened");
    assert_eq!(rig.events.count(|e| matches!(e, Seen::Rejected(_))), 0);
    assert_eq!(
        rig.events.transitions(),
        vec![],
        "shadow moves change no reported state"
    );
    assert_eq!(rig.inner_calls.load(Ordering::SeqCst), 10);

    handle.reset();
    assert_eq!(handle.state(), Closed);
    assert_eq!(handle.shadow_state(), None);
    assert_eq!(handle.counts().calls, 0);
    handle.reset();
    assert_eq!(
        rig.events.transitions(),
        vec![(CircuitState::MetricsOnly, Closed, TransitionReason::Reset)]
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_runs_the_whole_state_machine() {
    let rig = Rig::new(|b| {
        b.count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(1)
    });
    let handle = rig.layer.handle();
    handle.metrics_only();
    rig.hit(FAIL).await.unwrap_err();
    assert_eq!(handle.shadow_state(), Some(Open));
    rig.hit(OK).await.unwrap();
    assert_eq!(
        handle.shadow_state(),
        Some(Open),
        "a call while shadow-open is not a probe"
    );
    advance(5).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(
        handle.shadow_state(),
        Some(Closed),
        "the shadow probe closed it"
    );
    let shadow: Vec<_> = rig
        .events
        .all()
        .into_iter()
        .filter(|e| matches!(e, Seen::Shadow(..)))
        .collect();
    assert_eq!(
        shadow,
        vec![
            Seen::Shadow(Closed, Open, TransitionReason::FailureRate),
            Seen::Shadow(Open, HalfOpen, TransitionReason::WaitElapsed),
            Seen::Shadow(HalfOpen, Closed, TransitionReason::ProbesSucceeded),
        ],
        "every shadow move is reported as what enforcing would have done"
    );
    assert_eq!(
        rig.events.transitions(),
        vec![(Closed, CircuitState::MetricsOnly, TransitionReason::Forced)],
        "the reported state stayed metrics-only"
    );
}

#[tokio::test(start_paused = true)]
async fn every_transition_is_reported_in_order_and_matches_the_handle() {
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(2))
            .half_open_probes(1)
    });
    let handle = rig.layer.handle();
    let mut gauge = Closed;
    let mut check = |rig: &Rig| {
        for (from, to, _) in rig.events.transitions() {
            assert_eq!(from, gauge, "each transition starts where the last ended");
            gauge = to;
        }
        rig.events.clear();
        assert_eq!(gauge, rig.state(), "the backend shows the handle's state");
    };
    rig.hit_all(&[FAIL, FAIL]).await;
    check(&rig);
    advance(2).await;
    rig.hit(FAIL).await.unwrap_err();
    check(&rig);
    handle.force_open();
    check(&rig);
    handle.force_closed();
    check(&rig);
    handle.disable();
    check(&rig);
    handle.metrics_only();
    check(&rig);
    handle.reset();
    check(&rig);
    rig.hit_all(&[FAIL, FAIL]).await;
    check(&rig);
    advance(2).await;
    rig.hit(OK).await.unwrap();
    check(&rig);
    assert_eq!(gauge, Closed);
}

#[tokio::test(start_paused = true)]
async fn the_rates_gauge_follows_the_window_and_is_zeroed_when_it_resets() {
    let rig = Rig::new(|b| {
        b.count_window(4)
            .minimum_calls(4)
            .open_wait(Duration::from_secs(1))
            .half_open_probes(1)
    });
    rig.hit_all(&[OK, FAIL]).await;
    assert_eq!(rig.events.last_rates(), Some((0.5, 0.0, 2)));
    rig.hit_all(&[FAIL, FAIL]).await;
    assert_eq!(rig.events.last_rates(), Some((0.75, 0.0, 4)));
    advance(1).await;
    rig.hit(OK).await.unwrap();
    assert_eq!(rig.state(), Closed);
    assert_eq!(
        rig.events.last_rates(),
        Some((0.0, 0.0, 0)),
        "no stale rate after the window reset"
    );
}

#[tokio::test(start_paused = true)]
async fn one_layer_is_one_breaker_for_every_service_it_wraps() {
    let layer = CircuitBreakerLayer::builder()
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let a = layer.layer(service_fn(|()| async { Err::<(), BoxError>("a".into()) }));
    let b = layer
        .clone()
        .layer(service_fn(|()| async { Err::<(), BoxError>("b".into()) }));
    a.oneshot(()).await.unwrap_err();
    b.clone().oneshot(()).await.unwrap_err();
    assert_eq!(layer.handle().state(), Open);
    assert!(b.handle().same_breaker(&layer.handle()));
    assert!(b.oneshot(()).await.unwrap_err().is::<CircuitOpen>());
}

#[tokio::test(start_paused = true)]
async fn poll_ready_is_the_inner_readiness_only() {
    use std::task::Poll;
    use tower::Service;

    #[derive(Clone)]
    struct Gate(bool);
    impl Service<()> for Gate {
        type Response = ();
        type Error = BoxError;
        type Future = std::future::Ready<Result<(), BoxError>>;
        fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
        fn call(&mut self, (): ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    layer.handle().force_open();
    let mut open_ready = layer.layer(Gate(true));
    assert!(matches!(
        common::poll_once(std::future::poll_fn(|cx| open_ready.poll_ready(cx))),
        Poll::Ready(Ok(()))
    ));
    let mut pending = layer.layer(Gate(false));
    assert!(common::poll_once(std::future::poll_fn(|cx| pending.poll_ready(cx))).is_pending());
    layer.handle().reset();
    assert!(common::poll_once(std::future::poll_fn(|cx| pending.poll_ready(cx))).is_pending());
}

#[test]
fn an_uncaught_panic_is_a_failure_and_its_probe_slot_is_not_leaked() {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let clock = palisade_core::ManualClock::new();
    let layer = CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(1))
        .half_open_probes(1)
        .build()
        .unwrap();
    // 0: fails; 1: panics in `call`; 2: panics when polled; 3: succeeds.
    let mut svc = layer.layer(service_fn(|n: u8| {
        assert_ne!(n, 1, "panic in call");
        async move {
            match n {
                0 => Err::<(), BoxError>("down".into()),
                2 => panic!("panic in poll"),
                _ => Ok(()),
            }
        }
    }));
    let handle = layer.handle();
    // No backoff configured: every open wait is one second.
    let reopen = || {
        clock.advance(Duration::from_secs(1));
        assert_eq!(handle.refresh(), HalfOpen);
    };
    assert!(common::now(svc.call(0)).is_err());
    assert_eq!(handle.state(), Open);

    reopen();
    assert!(catch_unwind(AssertUnwindSafe(|| svc.call(1))).is_err());
    assert_eq!(handle.state(), Open, "a probe panicking in call failed");
    assert_eq!(handle.consecutive_openings().0, 2);

    // The future outlives the caught panic, as under an outer panic-catch
    // layer that drops it later: the panic still counts as a failure.
    reopen();
    let mut future = Box::pin(svc.call(2));
    assert!(catch_unwind(AssertUnwindSafe(|| common::poll_once(future.as_mut()))).is_err());
    assert_eq!(handle.state(), Open, "a probe panicking in poll failed");
    assert_eq!(handle.consecutive_openings().0, 3);
    let again = common::now(future.as_mut()).expect_err("no second poll of the inner future");
    assert_eq!(
        err_text(&again),
        "circuit breaker future polled after completion"
    );
    drop(future);
    assert_eq!(handle.consecutive_openings().0, 3, "recorded once");

    // A healthy probe closes it: no slot was leaked by the panics.
    reopen();
    assert_eq!(handle.probes().admitted, 0);
    assert!(common::now(svc.call(3)).is_ok());
    assert_eq!(handle.state(), Closed);
}

#[test]
fn a_dependency_that_always_panics_trips_the_breaker() {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let events = Events::default();
    let layer = CircuitBreakerLayer::builder()
        .count_window(4)
        .minimum_calls(4)
        .metrics(events.metrics())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|()| async {
        if true {
            panic!("always");
        }
        Ok::<(), BoxError>(())
    }));
    for _ in 0..4 {
        let future = svc.call(());
        // Dropped while the panic unwinds, as a task's future is.
        assert!(catch_unwind(AssertUnwindSafe(|| common::poll_once(future))).is_err());
    }
    assert_eq!(layer.handle().state(), Open);
    assert_eq!(
        events.count(|e| matches!(e, Seen::Completed(palisade_core::Outcome::Failure, _))),
        4
    );
    assert_eq!(
        events.count(|e| matches!(e, Seen::Completed(palisade_core::Outcome::Cancelled, _))),
        0
    );
}

/// Holds `call` in code that panics: the caller's own bug, or another
/// branch of its `join!`. The call is dropped as that panic unwinds.
fn dropped_by_a_panic<F>(call: F) {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    catch_unwind(AssertUnwindSafe(move || {
        let _held = call;
        // `resume_unwind` skips the panic hook: no noise in the output.
        std::panic::resume_unwind(Box::new("the caller's bug"));
    }))
    .unwrap_err();
}

/// A call dropped by a panic that is not the service's is cancelled: it
/// says nothing of the dependency, and a probe dropped so gives its slot
/// back.
#[test]
fn a_call_dropped_by_someone_elses_panic_is_cancelled() {
    let events = Events::default();
    let clock = palisade_core::ManualClock::new();
    let layer = CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .count_window(2)
        .minimum_calls(2)
        .open_wait(Duration::from_secs(1))
        .half_open_probes(1)
        .metrics(events.metrics())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|fail: bool| async move {
        if fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    }));
    let handle = layer.handle();
    for _ in 0..2 {
        dropped_by_a_panic(svc.call(false));
    }
    assert_eq!(handle.counts().calls, 0, "neither success nor failure");
    assert_eq!(
        events.count(|e| matches!(e, Seen::Completed(palisade_core::Outcome::Cancelled, _))),
        2
    );

    // A probe dropped so is not a failed probe: its slot comes back.
    for _ in 0..2 {
        assert!(common::now(svc.call(true)).is_err());
    }
    assert_eq!(handle.state(), Open);
    clock.advance(Duration::from_secs(1));
    assert_eq!(handle.refresh(), HalfOpen);
    dropped_by_a_panic(svc.call(false));
    assert_eq!(handle.state(), HalfOpen, "the dropped probe failed nothing");
    assert!(common::now(svc.call(false)).is_ok());
    assert_eq!(handle.state(), Closed);
}

#[test]
fn polling_a_finished_future_again_is_an_error_not_a_panic() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    let mut svc = layer.layer(service_fn(|()| async { Ok::<_, BoxError>(7) }));
    let mut future = Box::pin(svc.call(()));
    assert_eq!(common::now(future.as_mut()).unwrap(), 7);
    // An `async` block panics when resumed after completion: the breaker
    // must not reach it.
    let again = common::now(future.as_mut()).expect_err("an error");
    assert_eq!(
        err_text(&again),
        "circuit breaker future polled after completion"
    );
    assert_eq!(layer.handle().counts().calls, 1, "recorded once");

    layer.handle().force_open();
    let mut refused = Box::pin(svc.call(()));
    let first = common::now(refused.as_mut()).unwrap_err();
    assert!(first.is::<CircuitOpen>());
    let again = common::now(refused.as_mut()).unwrap_err();
    assert_eq!(
        err_text(&again),
        "circuit breaker future polled after completion"
    );
}

#[test]
fn a_half_open_wait_shorter_than_a_call_still_lets_a_probe_through() {
    // The real clock: a maximum wait of 1 ns has always run out by the
    // time the breaker looks again, so a call that restarted the period
    // and checked it again would restart it for ever.
    for max_wait in [Duration::from_nanos(1), Duration::from_nanos(50)] {
        let layer = CircuitBreakerLayer::builder()
            .count_window(2)
            .minimum_calls(1)
            .open_wait(Duration::from_millis(1))
            .half_open_max_wait(max_wait)
            .half_open_probes(1)
            .build()
            .unwrap();
        let handle = layer.handle();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut svc = layer.layer(service_fn(|fail: bool| async move {
                if fail {
                    Err::<(), BoxError>("down".into())
                } else {
                    Ok(())
                }
            }));
            let _ = common::now(std::pin::pin!(svc.call(true)));
            std::thread::sleep(Duration::from_millis(5));
            let probe = common::now(std::pin::pin!(svc.call(false)));
            let _ = done.send(probe.is_ok());
        });
        let admitted = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the call after the open wait returns");
        assert!(admitted, "{max_wait:?}: the probe went through");
        assert_eq!(handle.state(), Closed, "{max_wait:?}");
    }
}

fn err_text(err: &BoxError) -> String {
    err.to_string()
}

#[tokio::test(start_paused = true)]
async fn a_refresh_reports_the_rates_of_a_time_window_that_slid() {
    let rig = Rig::new(|b| {
        b.time_window(Duration::from_secs(10), 10)
            .minimum_calls(100)
    });
    rig.hit_all(&[OK, FAIL, OK, FAIL]).await;
    assert_eq!(
        rig.events.all().last(),
        Some(&Seen::Rates {
            failure: 0.5,
            slow: 0.0,
            calls: 4
        })
    );
    // Ten idle minutes: the window is empty, and a refresh says so.
    advance(600).await;
    assert_eq!(rig.layer.handle().refresh(), Closed);
    assert_eq!(
        rig.events.all().last(),
        Some(&Seen::Rates {
            failure: 0.0,
            slow: 0.0,
            calls: 0
        })
    );
}

#[tokio::test(start_paused = true)]
async fn metrics_only_measures_the_calls_it_would_have_refused() {
    let rig = Rig::new(|b| {
        b.count_window(2)
            .minimum_calls(2)
            .open_wait(Duration::from_secs(30))
            .half_open_probes(1)
            .measure_latency(true)
    });
    let handle = rig.layer.handle();
    handle.metrics_only();
    rig.hit_all(&[FAIL, FAIL]).await;
    assert_eq!(handle.shadow_state(), Some(Open));
    rig.events.clear();
    // Let through while the shadow breaker is open: still measured.
    rig.hit(slow(false, 2)).await.unwrap();
    // Half-open with its one probe running: the next call is measured too.
    advance(30).await;
    let probe = tokio::spawn(rig.svc.clone().oneshot(slow(false, 5)));
    tokio::task::yield_now().await;
    rig.hit(slow(false, 1)).await.unwrap();
    probe.await.unwrap().unwrap();
    let latencies: Vec<_> = rig
        .events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            Seen::Completed(_, latency) => Some(latency),
            _ => None,
        })
        .collect();
    let s = |secs| Some(Duration::from_secs(secs));
    assert_eq!(latencies, [s(2), s(1), s(5)]);
}

#[tokio::test(start_paused = true)]
async fn a_refresh_reports_the_sliding_rates_of_a_forced_closed_breaker_too() {
    let rig = Rig::new(|b| {
        b.time_window(Duration::from_secs(10), 10)
            .minimum_calls(100)
    });
    let handle = rig.layer.handle();
    handle.force_closed();
    // Forced closed, calls still fill the window that the gauges show.
    rig.hit_all(&[OK, FAIL]).await;
    assert_eq!(
        rig.events.last_rates(),
        Some((0.5, 0.0, 2)),
        "calls counted while forced closed"
    );
    advance(600).await;
    assert_eq!(handle.refresh(), CircuitState::ForcedClosed);
    assert_eq!(rig.events.last_rates(), Some((0.0, 0.0, 0)));
}

/// A sink that panics on the first zeroed rates it receives (the report a
/// transition makes of its fresh window).
#[derive(Clone, Default)]
struct PanicsOnFreshRates(Arc<std::sync::atomic::AtomicBool>);

impl palisade_core::metrics::MetricsSink for PanicsOnFreshRates {
    fn record(&self, event: &palisade_core::metrics::Event<'_>) {
        if let palisade_core::metrics::Event::BreakerRates { calls: 0, .. } = event
            && !self.0.swap(true, Ordering::SeqCst)
        {
            panic!("a sink with a bug");
        }
    }
}

/// A breaker that opens after two failures in a window of two calls,
/// reporting to `sink`.
fn opens_after_two_failures(
    sink: impl palisade_core::metrics::MetricsSink + 'static,
) -> CircuitBreakerLayer {
    CircuitBreakerLayer::builder()
        .name("dep")
        .count_window(2)
        .minimum_calls(2)
        .metrics(palisade_core::Metrics::new(sink))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_during_a_transition_leaves_the_breaker_working() {
    let sink = PanicsOnFreshRates::default();
    let layer = opens_after_two_failures(sink.clone());
    let svc = layer.layer(service_fn(dependency));
    let handle = layer.handle();
    // The reset's report of its fresh window panics; the panic stays in
    // the report and the reset is done whole.
    let reset = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| handle.reset()));
    assert!(reset.is_ok(), "the sink's panic reached the caller");
    assert!(sink.0.load(Ordering::SeqCst), "the sink panicked");
    for _ in 0..2 {
        let _ = svc.clone().oneshot(FAIL).await;
    }
    assert_eq!(handle.state(), Open, "failures are still counted");
}

/// A sink that, once armed, panics on the first event of one kind (by its
/// [`name`](palisade_core::metrics::Event::name)).
#[derive(Clone)]
struct PanicsOnce {
    armed: Arc<std::sync::atomic::AtomicBool>,
    kind: &'static str,
}

impl PanicsOnce {
    fn on(kind: &'static str) -> Self {
        Self {
            armed: Arc::default(),
            kind,
        }
    }

    fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    /// Runs `call` as its own task, arming the sink first, and checks
    /// that the sink panicked while the call's answer still reached the
    /// caller: the panic stayed in its report.
    async fn answered_despite_it(
        &self,
        call: impl Future<Output = Result<(), BoxError>> + Send + 'static,
        what: &str,
    ) {
        self.arm();
        tokio::spawn(call)
            .await
            .expect("no panic reaches the caller")
            .unwrap_or_else(|err| panic!("{what}: {err}"));
        assert!(!self.armed.load(Ordering::SeqCst), "the sink panicked");
    }
}

impl palisade_core::metrics::MetricsSink for PanicsOnce {
    fn record(&self, event: &palisade_core::metrics::Event<'_>) {
        if event.name() == self.kind && self.armed.swap(false, Ordering::SeqCst) {
            panic!("a sink with a bug");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_admitting_a_probe_does_not_hold_its_slot() {
    let sink = PanicsOnce::on("palisade.request.admitted");
    let layer = CircuitBreakerLayer::builder()
        .name("dep")
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(1))
        .half_open_probes(1)
        .half_open_max_wait(Duration::from_secs(60))
        .metrics(palisade_core::Metrics::new(sink.clone()))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(dependency));
    let handle = layer.handle();
    let _ = svc.clone().oneshot(FAIL).await;
    assert_eq!(handle.state(), Open);
    advance(1).await;
    // The probe runs, and its success closes the breaker.
    sink.answered_despite_it(svc.clone().oneshot(OK), "admitted as the probe")
        .await;
    assert_eq!(handle.state(), Closed);
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_reporting_a_completion_leaves_the_answer_alone() {
    let sink = PanicsOnce::on("palisade.request.completed");
    let layer = opens_after_two_failures(sink.clone());
    let svc = layer.layer(service_fn(dependency));
    let handle = layer.handle();
    // The call's answer reaches the caller as the service gave it.
    sink.answered_despite_it(svc.clone().oneshot(OK), "the service's answer")
        .await;
    for _ in 0..2 {
        let _ = svc.clone().oneshot(FAIL).await;
    }
    assert_eq!(handle.state(), Open, "later outcomes are still counted");
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_reporting_a_panicked_call_aborts_nothing() {
    let sink = PanicsOnce::on("palisade.request.completed");
    let layer = opens_after_two_failures(sink.clone());
    // `resume_unwind` skips the panic hook: no noise in the output.
    let svc = layer.layer(service_fn(|(): ()| async {
        std::panic::resume_unwind(Box::new("the service failed"));
        #[allow(unreachable_code)]
        Ok::<(), BoxError>(())
    }));
    let handle = layer.handle();
    for _ in 0..2 {
        // The breaker reports the failure as the service's panic unwinds
        // through it: the sink's panic there stays in the report (escaping
        // the destructor, it would abort the process), and the service's
        // reaches the caller.
        sink.arm();
        let joined = tokio::spawn(svc.clone().oneshot(())).await;
        let payload = joined.unwrap_err().into_panic();
        assert_eq!(payload.downcast_ref::<&str>(), Some(&"the service failed"));
        assert!(!sink.armed.load(Ordering::SeqCst), "the sink panicked");
    }
    assert_eq!(handle.state(), Open, "both panics counted as failures");
}

/// A scrape's `refresh()` does what a call arriving then would do: past
/// the half-open maximum wait, with a slow probe still running, both
/// re-open the breaker, where a probe left alone would have closed it.
#[tokio::test(start_paused = true)]
async fn a_refresh_past_the_max_wait_does_what_a_call_then_would() {
    async fn next_call_after_a_slow_probe(look: Option<bool>) -> Result<(), BoxError> {
        let layer = CircuitBreakerLayer::builder()
            .count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(5))
            .half_open_probes(1)
            .half_open_max_wait(Duration::from_secs(10))
            .build()
            .unwrap();
        let svc = layer.layer(service_fn(|takes: Option<u64>| async move {
            match takes {
                None => Err::<(), BoxError>("down".into()),
                Some(secs) => {
                    tokio::time::sleep(Duration::from_secs(secs)).await;
                    Ok(())
                }
            }
        }));
        let handle = layer.handle();
        let _ = svc.clone().oneshot(None).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        // The probe starts at 5 s and takes 15 s: past the 10 s max wait.
        let probe = tokio::spawn(svc.clone().oneshot(Some(15)));
        tokio::task::yield_now().await;
        tokio::time::advance(Duration::from_secs(11)).await;
        match look {
            Some(true) => assert_eq!(handle.refresh(), Open),
            Some(false) => assert!(svc.clone().oneshot(Some(0)).await.is_err()),
            None => {}
        }
        tokio::time::advance(Duration::from_secs(4)).await;
        probe.await.unwrap().unwrap();
        svc.clone().oneshot(Some(0)).await
    }
    assert!(
        next_call_after_a_slow_probe(None).await.is_ok(),
        "left alone"
    );
    let by_scrape = next_call_after_a_slow_probe(Some(true)).await.unwrap_err();
    let by_call = next_call_after_a_slow_probe(Some(false)).await.unwrap_err();
    assert!(by_scrape.is::<CircuitOpen>() && by_call.is::<CircuitOpen>());
}

//! Keyed breakers: one per key, bounded in number, never evicting a
//! breaker within its open or half-open wait.

mod common;

use std::time::Duration;

use common::Events;
use palisade_breaker::CircuitBreakerLayer;
use palisade_breaker::error::CircuitOpen;
use palisade_core::{BoxError, CircuitState, ManualClock, TransitionReason};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Clone, Copy)]
struct Req {
    host: u32,
    fail: bool,
}

/// One failure opens a key's breaker, for 10 s.
fn builder(clock: &ManualClock) -> palisade_breaker::CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(10))
}

type Keyed = palisade_breaker::KeyedCircuitBreakerLayer<u32, fn(&Req) -> u32>;

fn keyed(builder: palisade_breaker::CircuitBreakerBuilder, max_keys: usize) -> Keyed {
    builder
        .build_keyed(max_keys, (|r: &Req| r.host) as fn(&Req) -> u32)
        .unwrap()
}

fn layer(max_keys: usize, clock: &ManualClock) -> Keyed {
    keyed(builder(clock), max_keys)
}

/// The service and handle of `layer` around [`inner`].
fn mount(
    layer: Keyed,
) -> (
    impl tower::Service<Req, Response = (), Error = BoxError, Future = impl Send> + Clone,
    palisade_breaker::keyed::KeyedCircuitBreakerHandle<u32>,
) {
    (layer.layer(inner()), layer.handle())
}

/// As [`layer`], with `probes` half-open probes and a half-open maximum
/// wait of 30 s.
fn half_open_layer(max_keys: usize, clock: &ManualClock, probes: u32) -> Keyed {
    let builder = builder(clock)
        .half_open_probes(probes)
        .half_open_max_wait(Duration::from_secs(30));
    keyed(builder, max_keys)
}

async fn hit<S>(svc: &S, host: u32, fail: bool) -> Result<(), BoxError>
where
    S: tower::Service<Req, Response = (), Error = BoxError> + Clone,
{
    svc.clone().oneshot(Req { host, fail }).await
}

/// Sends one call for each host of `hosts`, failing (so opening its
/// breaker) where `open` says so.
async fn track<S>(svc: &S, hosts: std::ops::Range<u32>, open: impl Fn(u32) -> bool)
where
    S: tower::Service<Req, Response = (), Error = BoxError> + Clone,
{
    for host in hosts {
        let result = hit(svc, host, open(host)).await;
        assert_eq!(result.is_err(), open(host), "host {host}");
    }
}

fn inner() -> impl tower::Service<Req, Response = (), Error = BoxError, Future = impl Send> + Clone
{
    service_fn(|r: Req| async move {
        if r.fail {
            Err::<(), BoxError>("down".into())
        } else {
            Ok(())
        }
    })
}

#[tokio::test]
async fn each_key_has_its_own_breaker() {
    let clock = ManualClock::new();
    let layer = layer(8, &clock);
    let svc = layer.layer(inner());
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, false).await.unwrap();
    let handle = layer.handle();
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Open);
    assert_eq!(handle.get(&2).unwrap().state(), CircuitState::Closed);
    assert!(hit(&svc, 1, false).await.unwrap_err().is::<CircuitOpen>());
    hit(&svc, 2, false).await.unwrap();
    assert_eq!(handle.len(), 2);
    // Clones of the layer share the map.
    let other = layer.clone().layer(inner());
    assert!(hit(&other, 1, false).await.unwrap_err().is::<CircuitOpen>());
}

/// As for one breaker: a panic in the service's `call` is the key's
/// failure, and a call dropped by some other panic is cancelled.
#[test]
fn a_keys_service_panicking_in_call_fails_and_a_call_dropped_by_a_panic_does_not() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tower::Service;

    let clock = ManualClock::new();
    let layer = layer(8, &clock);
    let mut svc = layer.layer(service_fn(|r: Req| {
        // `resume_unwind` skips the panic hook: no noise in the output.
        if r.fail {
            std::panic::resume_unwind(Box::new("the service's bug in call"));
        }
        async { Ok::<(), BoxError>(()) }
    }));
    let handle = layer.handle();
    // Host 1: the call is dropped by the caller's own panic.
    let call = svc.call(Req {
        host: 1,
        fail: false,
    });
    catch_unwind(AssertUnwindSafe(move || {
        let _held = call;
        std::panic::resume_unwind(Box::new("the caller's bug"));
    }))
    .unwrap_err();
    assert_eq!(handle.get(&1).unwrap().counts().calls, 0, "cancelled");
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Closed);
    // Host 2: the service panics in `call`.
    catch_unwind(AssertUnwindSafe(|| {
        svc.call(Req {
            host: 2,
            fail: true,
        })
    }))
    .unwrap_err();
    assert_eq!(handle.get(&2).unwrap().state(), CircuitState::Open);
}

#[tokio::test]
async fn evicting_a_breaker_that_is_not_closed_reports_its_key_closed() {
    // Every key reports under the policy: a state gauge follows the latest
    // transition. A key whose open breaker is evicted faces a fresh closed
    // one next time, and the report says so, rather than leaving the
    // policy's gauge open with no breaker open.
    let clock = ManualClock::new();
    let events = Events::default();
    let layer = keyed(builder(&clock).metrics(events.metrics()), 1);
    let (svc, handle) = mount(layer);
    hit(&svc, 1, true).await.unwrap_err();
    assert_eq!(
        events.transitions(),
        [(
            CircuitState::Closed,
            CircuitState::Open,
            TransitionReason::FailureRate
        )]
    );
    clock.advance(Duration::from_secs(10));
    hit(&svc, 2, false).await.unwrap();
    assert!(handle.get(&1).is_none(), "key 1 was evicted");
    assert_eq!(
        events.transitions().last(),
        Some(&(
            CircuitState::Open,
            CircuitState::Closed,
            TransitionReason::Evicted
        ))
    );
    // A closed breaker goes without a word.
    events.clear();
    hit(&svc, 3, false).await.unwrap();
    assert!(handle.get(&2).is_none());
    assert_eq!(events.transitions(), []);
}

#[test]
fn an_evicted_breaker_reports_no_transition_after_its_eviction() {
    use std::future::Future;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    use std::task::{Context, Poll, Waker};

    // Key A's probe hangs past the time its breaker may be evicted; key B
    // takes its place; then the probe fails. The evicted breaker moves
    // back to open, but only the map's breakers speak for the policy.
    let clock = ManualClock::new();
    let events = Events::default();
    let layer = keyed(
        builder(&clock)
            .half_open_probes(1)
            .half_open_max_wait(Duration::from_secs(5))
            .metrics(events.metrics()),
        1,
    );
    let handle = layer.handle();
    let release = Arc::new(AtomicBool::new(false));
    let released = release.clone();
    let mut svc = layer.layer(service_fn(move |r: Req| {
        let released = released.clone();
        std::future::poll_fn(move |_| {
            if r.host == 1 && !r.fail && !released.load(Relaxed) {
                return Poll::Pending;
            }
            Poll::Ready(if r.fail || r.host == 1 {
                Err::<(), BoxError>("down".into())
            } else {
                Ok(())
            })
        })
    }));
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |host, fail| {
        assert!(tower::Service::poll_ready(&mut svc, &mut cx).is_ready());
        Box::pin(tower::Service::call(&mut svc, Req { host, fail }))
    };
    let mut cx = Context::from_waker(Waker::noop());
    assert!(call(1, true).as_mut().poll(&mut cx).is_ready());
    clock.advance(Duration::from_secs(10));
    let mut probe = call(1, false);
    assert!(probe.as_mut().poll(&mut cx).is_pending());
    // Evictable once its half-open wait and the longest open wait after
    // it are over.
    clock.advance(Duration::from_secs(15));
    assert!(matches!(
        call(2, false).as_mut().poll(&mut cx),
        Poll::Ready(Ok(()))
    ));
    assert!(handle.get(&1).is_none(), "key 1 was evicted");
    assert_eq!(
        events.transitions().last(),
        Some(&(
            CircuitState::HalfOpen,
            CircuitState::Closed,
            TransitionReason::Evicted
        ))
    );
    let before = events.transitions().len();
    release.store(true, Relaxed);
    assert!(matches!(probe.as_mut().poll(&mut cx), Poll::Ready(Err(_))));
    assert_eq!(
        events.transitions().len(),
        before,
        "{:?}",
        events.transitions()
    );
}

#[tokio::test]
async fn every_key_draws_its_own_jitter() {
    // One key at most, so that the second host shares the overflow
    // breaker; every breaker opens at the same instant.
    let clock = ManualClock::new();
    let layer = keyed(builder(&clock).jitter(0.9).jitter_seed(1), 1);
    let (svc, _handle) = mount(layer);
    let mut waits = Vec::new();
    for host in [1, 2] {
        hit(&svc, host, true).await.unwrap_err();
        let refused = hit(&svc, host, false).await.unwrap_err();
        let open = refused.downcast_ref::<CircuitOpen>().expect("open");
        waits.push(open.retry_after().expect("a wait"));
    }
    assert_ne!(waits[0], waits[1], "the key and the overflow drew alike");
}

#[tokio::test]
async fn the_least_recently_used_closed_breaker_makes_room() {
    let clock = ManualClock::new();
    let layer = layer(3, &clock);
    let svc = layer.layer(inner());
    for host in [1, 2, 3] {
        hit(&svc, host, false).await.unwrap();
    }
    hit(&svc, 1, false).await.unwrap(); // 2 is now the least recently used
    hit(&svc, 4, false).await.unwrap();
    assert_eq!(sorted(layer.handle().keys()), vec![1, 3, 4]);
}

#[tokio::test]
async fn an_open_breaker_is_not_evicted_within_its_open_wait() {
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2, &clock));
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, false).await.unwrap();
    // Key 1 (open) is older, but key 2 (closed) is the one evicted.
    hit(&svc, 3, false).await.unwrap();
    assert_eq!(sorted(handle.keys()), vec![1, 3]);
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Open);

    // With every tracked breaker open, new keys share the overflow breaker
    // and the open ones stay.
    hit(&svc, 3, true).await.unwrap_err();
    hit(&svc, 5, false).await.unwrap();
    hit(&svc, 6, true).await.unwrap_err();
    assert_eq!(handle.len(), 2);
    assert!(handle.get(&5).is_none());
    assert_eq!(handle.overflow().state(), CircuitState::Open);
    assert!(hit(&svc, 1, false).await.unwrap_err().is::<CircuitOpen>());
    assert!(hit(&svc, 7, false).await.unwrap_err().is::<CircuitOpen>());
}

#[tokio::test]
async fn keys_that_failed_and_were_never_called_again_give_their_places_back() {
    // Keys a client chooses can fail once each and never come back: their
    // open breakers must not hold the map for good.
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2, &clock));
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, true).await.unwrap_err();
    clock.advance(Duration::from_millis(9_999));
    hit(&svc, 3, false).await.unwrap();
    assert!(handle.get(&3).is_none(), "both open waits still run");

    clock.advance(Duration::from_secs(3_600));
    hit(&svc, 3, false).await.unwrap();
    assert!(
        handle.get(&3).is_some(),
        "an open wait that ended freed a place"
    );
    assert_eq!(handle.len(), 2);
    // A closed breaker goes before one whose wait is over.
    hit(&svc, 4, false).await.unwrap();
    assert_eq!(sorted(handle.keys()), vec![2, 4]);
}

#[tokio::test]
async fn a_closed_breaker_goes_before_an_open_one_whose_wait_ended() {
    // Evicting an open breaker loses its failures and backoff; evicting a
    // closed one loses only its window's counts.
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2, &clock));
    hit(&svc, 1, true).await.unwrap_err();
    hit(&svc, 2, false).await.unwrap();
    clock.advance(Duration::from_secs(60));
    // Key 1 is the least recently used and its wait is over, but key 2 is
    // closed.
    hit(&svc, 3, false).await.unwrap();
    assert_eq!(sorted(handle.keys()), vec![1, 3]);
    assert_eq!(handle.get(&1).unwrap().state(), CircuitState::Open);
}

#[tokio::test]
async fn a_large_map_known_to_be_full_opens_up_at_the_earliest_wait_of_any_search() {
    // 2,048 keys: the first 1,024 open at 0 s, the rest at 5 s. Two
    // searches of 1,024 examine them, the first only early ones, the
    // second only late ones; the map is known full until the earliest
    // wait of both ends (10 s), not that of the last search (15 s).
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2_048, &clock));
    track(&svc, 0..1_024, |_| true).await;
    clock.advance(Duration::from_secs(5));
    track(&svc, 1_024..2_048, |_| true).await;
    for host in 10_000..10_010 {
        hit(&svc, host, false).await.unwrap();
        assert!(handle.get(&host).is_none());
    }
    clock.advance(Duration::from_secs(5));
    hit(&svc, 20_000, false).await.unwrap();
    assert!(handle.get(&20_000).is_some(), "an early key's wait is over");
    assert_eq!(handle.len(), 2_048);
}

fn sorted(mut keys: Vec<u32>) -> Vec<u32> {
    keys.sort_unstable();
    keys
}

#[tokio::test]
async fn a_half_open_breaker_left_without_calls_gives_its_place_back_after_its_waits() {
    // Key 1 opens, and after its open wait one probe of two runs; then no
    // call comes. If the probe succeeded, its place is free once the
    // half-open maximum wait (30 s) is over. If it failed, the breaker
    // would open again on its next call, so it is kept for the open wait
    // (10 s) that would impose on top: evicting it earlier would hand its
    // key a closed breaker.
    for (probe_fails, kept_for) in [
        (false, Duration::from_secs(30)),
        (true, Duration::from_secs(40)),
    ] {
        let clock = ManualClock::new();
        let (svc, handle) = mount(half_open_layer(1, &clock, 2));
        hit(&svc, 1, true).await.unwrap_err();
        clock.advance(Duration::from_secs(10));
        let _ = hit(&svc, 1, probe_fails).await;
        assert_eq!(handle.get(&1).unwrap().state(), CircuitState::HalfOpen);
        clock.advance(kept_for - Duration::from_millis(1));
        hit(&svc, 2, false).await.unwrap();
        assert!(
            handle.get(&2).is_none(),
            "kept (probe fails: {probe_fails})"
        );
        clock.advance(Duration::from_millis(1));
        hit(&svc, 2, false).await.unwrap();
        assert!(
            handle.get(&2).is_some(),
            "freed (probe fails: {probe_fails})"
        );
        assert!(handle.get(&1).is_none());
    }
}

#[tokio::test]
async fn a_breaker_an_operator_holds_is_never_evicted() {
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2, &clock));
    hit(&svc, 1, false).await.unwrap();
    hit(&svc, 2, false).await.unwrap();
    handle.get(&1).unwrap().force_open();
    handle.get(&2).unwrap().disable();
    clock.advance(Duration::from_secs(3_600));
    hit(&svc, 3, false).await.unwrap();
    assert!(handle.get(&3).is_none());
    handle.get(&2).unwrap().reset();
    hit(&svc, 3, false).await.unwrap();
    assert_eq!(sorted(handle.keys()), vec![1, 3]);
}

#[tokio::test]
async fn a_large_full_map_makes_room_past_a_run_of_open_breakers() {
    // 300 keys; the first 150 tracked open, the rest closed. New keys
    // must each find a closed breaker to replace, even when the search
    // starts in the run of open ones, and never evict an open one.
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(300, &clock));
    track(&svc, 0..300, |host| host < 150).await;
    assert_eq!(handle.len(), 300);
    for host in 1_000..1_400 {
        hit(&svc, host, false).await.unwrap();
        assert!(handle.get(&host).is_some(), "{host} was tracked");
        assert_eq!(handle.len(), 300);
    }
    for host in 0..150 {
        let breaker = handle.get(&host).expect("an open breaker is never evicted");
        assert_eq!(breaker.state(), CircuitState::Open);
    }
    assert_eq!(handle.overflow().state(), CircuitState::Closed);
}

#[tokio::test]
async fn new_keys_past_a_map_of_open_breakers_share_the_overflow_breaker() {
    // 2,000 keys, every one open: more than one search examines. New keys
    // fall back to the overflow breaker, and nothing tracked is evicted.
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2_000, &clock));
    track(&svc, 0..2_000, |_| true).await;
    for host in 10_000..10_100 {
        hit(&svc, host, false).await.unwrap();
        assert!(handle.get(&host).is_none());
    }
    assert_eq!(handle.len(), 2_000);
    // Once their open waits end, new keys take their places.
    clock.advance(Duration::from_secs(10));
    for host in 10_100..10_200 {
        hit(&svc, host, false).await.unwrap();
        assert!(handle.get(&host).is_some(), "{host} was tracked");
    }
    assert_eq!(handle.len(), 2_000);
}

#[tokio::test]
async fn a_search_goes_round_a_large_map_to_the_one_breaker_it_may_evict() {
    // 2,000 keys an operator holds open. Once one is released, a new key
    // finds it, wherever it is: the searches go round the whole map.
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(2_000, &clock));
    track(&svc, 0..2_000, |_| false).await;
    for host in 0..2_000 {
        handle.get(&host).unwrap().force_open();
    }
    for host in 10_000..10_010 {
        hit(&svc, host, false).await.unwrap();
        assert!(handle.get(&host).is_none());
    }
    handle.get(&1_234).unwrap().reset();
    // Each search examines up to 1,024 of the 2,000 slots from where the
    // last one stopped, so the second at the latest reaches it.
    let mut taker = None;
    for host in 20_000..20_002 {
        hit(&svc, host, false).await.unwrap();
        if handle.get(&host).is_some() {
            taker = Some(host);
            break;
        }
    }
    let taker = taker.expect("a new key took the freed place within two searches");
    assert!(
        handle.get(&1_234).is_none(),
        "the released breaker made room for {taker}"
    );
    assert_eq!(handle.len(), 2_000);
}

/// One step of the property below.
#[derive(Clone, Debug)]
enum Op {
    Call { key: u32, fail: bool },
    Advance(Duration),
    Refresh(u32),
    ForceOpen(u32),
    Disable(u32),
    Reset(u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    let key = 0_u32..10;
    let wait = prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_secs(1)),
        Just(Duration::from_secs(10)),
        Just(Duration::from_secs(31)),
    ];
    prop_oneof![
        6 => (key.clone(), any::<bool>()).prop_map(|(key, fail)| Op::Call { key, fail }),
        2 => wait.prop_map(Op::Advance),
        1 => key.clone().prop_map(Op::Refresh),
        1 => key.clone().prop_map(Op::ForceOpen),
        1 => key.clone().prop_map(Op::Disable),
        1 => key.prop_map(Op::Reset),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// In a map of at most 16 keys every search is exhaustive, so a new key
    /// is tracked exactly when some tracked breaker may be evicted: closed
    /// in normal mode, or open or half-open past its wait. Whatever the
    /// order of calls, transitions, operator actions and time, the map
    /// never outgrows its cap and never drops a breaker that may not be
    /// evicted.
    #[test]
    fn a_new_key_is_tracked_exactly_when_a_tracked_breaker_may_be_evicted(
        max_keys in 1_usize..6,
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let clock = ManualClock::new();
        let (svc, handle) = mount(half_open_layer(max_keys, &clock, 1));
        // When each half-open key's period began, on the test's clock.
        let mut half_open_since = std::collections::HashMap::new();
        let mut elapsed = Duration::ZERO;

        for op in ops {
            let before: Vec<u32> = handle.keys();
            let evictable = |key: &u32, since: &std::collections::HashMap<u32, Duration>| {
                let breaker = handle.get(key).unwrap();
                match breaker.state() {
                    CircuitState::Closed => true,
                    CircuitState::Open => breaker.retry_after() == Some(Duration::ZERO),
                    CircuitState::HalfOpen => elapsed >= since[key] + Duration::from_secs(30),
                    _ => false,
                }
            };
            let keep: Vec<u32> = before.iter().copied().filter(|k| !evictable(k, &half_open_since)).collect();
            let room = before.len() < max_keys || keep.len() < before.len();
            match op {
                Op::Call { key, fail } => {
                    let new = !before.contains(&key);
                    let _ = runtime.block_on(hit(&svc, key, fail));
                    if new {
                        proptest::prop_assert_eq!(handle.get(&key).is_some(), room, "key {}", key);
                    }
                }
                Op::Advance(by) => {
                    clock.advance(by);
                    elapsed += by;
                }
                Op::Refresh(key) => {
                    if let Some(breaker) = handle.get(&key) {
                        let was = breaker.state();
                        let expired = was == CircuitState::HalfOpen
                            && elapsed >= half_open_since[&key] + Duration::from_secs(30);
                        if breaker.refresh() == CircuitState::HalfOpen
                            && (was == CircuitState::Open || expired)
                        {
                            half_open_since.insert(key, elapsed);
                        }
                    }
                }
                Op::ForceOpen(key) => handle.get(&key).into_iter().for_each(|b| b.force_open()),
                Op::Disable(key) => handle.get(&key).into_iter().for_each(|b| b.disable()),
                Op::Reset(key) => handle.get(&key).into_iter().for_each(|b| b.reset()),
            }
            proptest::prop_assert!(handle.len() <= max_keys);
            for key in &keep {
                proptest::prop_assert!(handle.get(key).is_some(), "{} was evicted", key);
            }
        }
    }
}

/// Keeps every event, and panics on the first eviction it hears of.
#[derive(Clone, Default)]
struct PanicsOnEviction {
    events: Events,
    panicked: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl palisade_core::MetricsSink for PanicsOnEviction {
    fn record(&self, event: &palisade_core::Event<'_>) {
        if let palisade_core::Event::StateChanged {
            reason: TransitionReason::Evicted,
            ..
        } = event
            && !self
                .panicked
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            panic!("a sink with a bug");
        }
        self.events.record(event);
    }
}

#[tokio::test]
async fn a_sink_that_panics_reporting_an_eviction_leaves_the_map_whole() {
    let clock = ManualClock::new();
    let sink = PanicsOnEviction::default();
    let (svc, handle) = mount(keyed(
        builder(&clock).metrics(palisade_core::Metrics::new(sink.clone())),
        1,
    ));
    assert!(hit(&svc, 1, true).await.is_err());
    clock.advance(Duration::from_secs(10));
    // Key 3 evicts key 1, whose open wait is over; the report of that
    // eviction panics, and the panic stays in the report.
    let call = tokio::spawn({
        let svc = svc.clone();
        async move { hit(&svc, 3, false).await }
    });
    call.await
        .expect("no panic reaches the caller")
        .expect("key 3 is served");
    assert!(
        sink.panicked.load(std::sync::atomic::Ordering::SeqCst),
        "the sink panicked"
    );
    assert!(handle.get(&1).is_none(), "key 1 was evicted");
    assert!(handle.get(&3).is_some(), "key 3 is tracked");
}

#[tokio::test]
async fn a_mode_set_through_with_holds_the_key_against_eviction() {
    let clock = ManualClock::new();
    let (svc, handle) = mount(layer(1, &clock));
    assert!(hit(&svc, 2, false).await.is_ok());
    // Through `get`, the handle stays with the breaker it found: evicted
    // in between, the mode it sets no longer governs the key.
    let stale = handle.get(&2).unwrap();
    assert!(hit(&svc, 4, false).await.is_ok(), "key 4 evicts key 2");
    stale.force_open();
    assert!(
        hit(&svc, 2, false).await.is_ok(),
        "key 2 meets a fresh breaker"
    );
    // Through `with`, the map cannot evict the breaker while the mode is
    // set: a new key arriving meanwhile waits, then finds key 2 held and
    // goes to the overflow breaker.
    let held = handle.with(&2, |h| {
        let svc = svc.clone();
        let (arriving, arrived) = std::sync::mpsc::channel();
        let newcomer = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap()
                .block_on(async move {
                    arriving.send(()).unwrap();
                    hit(&svc, 6, false).await
                })
        });
        arrived.recv().unwrap();
        // Time for the newcomer to evict key 2, were that possible now: it
        // is still waiting.
        std::thread::sleep(Duration::from_millis(100));
        assert!(!newcomer.is_finished(), "key 6 waits while key 2 is held");
        h.force_open();
        (h.state(), newcomer)
    });
    let (state, newcomer) = held.expect("key 2 is tracked");
    assert_eq!(state, CircuitState::ForcedOpen);
    assert!(newcomer.join().unwrap().is_ok(), "key 6 is served");
    assert!(
        handle.get(&6).is_none(),
        "key 6 went to the overflow breaker"
    );
    let err = hit(&svc, 2, false).await.unwrap_err();
    let open = err
        .downcast_ref::<CircuitOpen>()
        .expect("refused by key 2's breaker");
    assert_eq!(open.state(), CircuitState::ForcedOpen);
}

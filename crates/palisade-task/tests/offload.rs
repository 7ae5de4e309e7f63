//! Offload: pushes never block, every drop is counted by reason, and the
//! counts add up exactly.

mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{AttemptFailure, DropReason, Metrics};
use palisade_task::offload::{Offload, OffloadStats, Pushed};
use palisade_task::{Backoff, TaskGroup};
use proptest::prelude::*;
use support::{Booby, Faulty, Recorder, Seen};
use tokio::time::Instant;

type Call = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

/// A dependency that takes `latency` per call and fails a seeded
/// `failure_rate` share of the calls; records what it accepted.
#[derive(Clone)]
struct Flaky {
    rng: Arc<Mutex<fastrand::Rng>>,
    failure_rate: f64,
    latency: Duration,
    accepted: Arc<Mutex<Vec<u32>>>,
}

impl Flaky {
    fn new(seed: u64, failure_rate: f64, latency: Duration) -> Self {
        Self {
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            failure_rate,
            latency,
            accepted: Arc::default(),
        }
    }
}

impl tower::Service<u32> for Flaky {
    type Response = ();
    type Error = String;
    type Future = Call;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), String>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: u32) -> Call {
        let fail = self.rng.lock().unwrap().f64() < self.failure_rate;
        let latency = self.latency;
        let accepted = self.accepted.clone();
        Box::pin(async move {
            tokio::time::sleep(latency).await;
            if fail {
                Err(format!("item {item} refused"))
            } else {
                accepted.lock().unwrap().push(item);
                Ok(())
            }
        })
    }
}

fn assert_adds_up(stats: &OffloadStats, recorder: &Recorder) {
    assert_eq!(stats.queued, 0);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(
        stats.dropped_total(),
        stats.pushed - stats.delivered,
        "drops by reason add up to pushed minus delivered: {stats:?}"
    );
    let events = recorder.events();
    for reason in DropReason::ALL {
        let seen = events
            .iter()
            .filter(|e| **e == Seen::Dropped(*reason))
            .count() as u64;
        assert_eq!(seen, stats.dropped(*reason), "{reason:?} events");
    }
    let delivered = events
        .iter()
        .filter(|e| matches!(e, Seen::Delivered(_)))
        .count() as u64;
    assert_eq!(delivered, stats.delivered);
}

#[tokio::test(start_paused = true)]
async fn drops_by_reason_add_up_under_a_dependency_failing_half_the_time() {
    let recorder = Arc::new(Recorder::default());
    let service = Flaky::new(2024, 0.5, Duration::from_millis(20));
    let offload: Offload<u32> = Offload::builder(service.clone())
        .name("audit")
        .metrics(Metrics::from_arc(recorder.clone()))
        .queue_capacity(16)
        .workers(2)
        .max_attempts(3)
        .backoff(Backoff::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .seed(9)
        .drain_deadline(Duration::from_millis(300))
        .build()
        .unwrap();

    // Bursts faster than the dependency can take.
    let mut item = 0;
    for _ in 0..40 {
        for _ in 0..10 {
            let started = Instant::now();
            offload.push(item);
            assert_eq!(started.elapsed(), Duration::ZERO, "push never waits");
            item += 1;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    let stats = offload.shutdown().await;
    for late in 0..5 {
        assert_eq!(
            offload.push(10_000 + late),
            Pushed::Dropped(DropReason::Closed)
        );
    }
    let stats_after = offload.stats();

    assert_eq!(stats.pushed, 400);
    assert_eq!(stats_after.pushed, 405);
    assert_adds_up(&stats_after, &recorder);
    for reason in [
        DropReason::QueueFull,
        DropReason::RetriesExhausted,
        DropReason::Shutdown,
        DropReason::Closed,
    ] {
        assert!(
            stats_after.dropped(reason) > 0,
            "no {reason:?} drop: {stats_after:?}"
        );
    }
    assert!(stats_after.delivered > 0);
    assert_eq!(
        service.accepted.lock().unwrap().len() as u64,
        stats_after.delivered,
        "every delivery reached the dependency once"
    );
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_backoff() {
    let recorder = Arc::new(Recorder::default());
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = calls.clone();
    let origin = Instant::now();
    let service = tower::service_fn(move |_: u32| {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(Instant::now() - origin);
            Err::<(), _>("down")
        }
    });
    let offload = Offload::builder(service)
        .metrics(Metrics::from_arc(recorder.clone()))
        .max_attempts(4)
        .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0))
        .build()
        .unwrap();
    assert_eq!(offload.push(1_u32), Pushed::Queued);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let ms = Duration::from_millis;
    assert_eq!(*calls.lock().unwrap(), [ms(0), ms(100), ms(300), ms(700)]);
    let stats = offload.stats();
    assert_eq!(stats.dropped_retries_exhausted, 1);
    let failed = |attempt| Seen::AttemptFailed(attempt, AttemptFailure::Error);
    assert_eq!(
        recorder.events(),
        [
            failed(1),
            failed(2),
            failed(3),
            failed(4),
            Seen::Dropped(DropReason::RetriesExhausted)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_dependency_never_blocks_the_caller() {
    let service = tower::service_fn(|_: u32| std::future::pending::<Result<(), String>>());
    let offload = Offload::builder(service)
        .queue_capacity(4)
        .drain_deadline(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut outcomes = Vec::new();
    for i in 0..10 {
        outcomes.push(offload.push(i));
        tokio::task::yield_now().await;
    }
    // One in flight, four queued, five refused.
    let queued = outcomes.iter().filter(|o| **o == Pushed::Queued).count();
    assert_eq!(queued, 5);
    let started = Instant::now();
    let stats = offload.shutdown().await;
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(2),
        "bounded by the drain deadline"
    );
    assert_eq!(stats.dropped_queue_full, 5);
    assert_eq!(stats.dropped_shutdown, 5);
    assert_eq!(stats.delivered, 0);
}

/// An offload queue named "reports" in front of `service`, reporting to
/// the returned recorder, with `max_attempts` 1 ms apart.
/// Retries 1 ms apart.
fn quick_retries() -> Backoff {
    Backoff::new(Duration::from_millis(1), Duration::from_millis(1))
}

fn recorded_offload<S>(service: S, max_attempts: u32) -> (Offload<u32>, Arc<Recorder>)
where
    S: tower::Service<u32, Response = (), Error = String> + Clone + Send + 'static,
    S::Future: Send,
{
    let recorder = Arc::new(Recorder::default());
    let offload = Offload::builder(service)
        .name("reports")
        .metrics(Metrics::from_arc(recorder.clone()))
        .max_attempts(max_attempts)
        .backoff(quick_retries())
        .build()
        .unwrap();
    (offload, recorder)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_dependency_is_a_failed_attempt() {
    let service = tower::service_fn(|i: u32| async move {
        if i.is_multiple_of(2) {
            panic!("serializer bug on {i}");
        }
        Ok::<_, String>(())
    });
    let (offload, recorder) = recorded_offload(service, 2);
    for i in 0..4 {
        offload.push(i);
    }
    let stats = offload.shutdown().await;
    assert_eq!(stats.delivered, 2);
    assert_eq!(stats.dropped_retries_exhausted, 2);
    // Two failed attempts for each bad item, each counted as a panic, then
    // a drop; no task or panic-catch event: the queue's workers are no
    // group's tasks, the queue no policy.
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Dropped(DropReason::RetriesExhausted))),
        2
    );
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::AttemptFailed(_, AttemptFailure::Panic))),
        4
    );
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Panicked(..) | Seen::Caught(..))),
        0
    );
}

/// An item whose clone panics for the value 13 (a user's `Clone` with a
/// bug in it).
#[derive(Debug)]
struct Fragile(u32);

impl Clone for Fragile {
    fn clone(&self) -> Self {
        assert_ne!(self.0, 13, "clone of a broken item");
        Self(self.0)
    }
}

#[tokio::test(start_paused = true)]
async fn an_item_whose_clone_panics_is_a_failed_attempt_and_the_worker_lives_on() {
    let service = tower::service_fn(|_: Fragile| async { Ok::<_, String>(()) });
    let offload = Offload::builder(service)
        .name("fragile")
        .workers(1)
        .max_attempts(2)
        .backoff(quick_retries())
        .build()
        .unwrap();
    for i in [13, 1, 2] {
        assert_eq!(offload.push(Fragile(i)), Pushed::Queued);
    }
    let stats = offload.shutdown().await;
    assert_eq!(stats.dropped_retries_exhausted, 1, "{stats:?}");
    assert_eq!(stats.delivered, 2, "the one worker went on: {stats:?}");
    assert_eq!(stats.dropped_shutdown, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn an_item_whose_destructor_panics_is_delivered_and_the_worker_lives_on() {
    let service = tower::service_fn(|_: Booby| async { Ok::<_, String>(()) });
    let offload = Offload::builder(service)
        .name("booby")
        .workers(1)
        .build()
        .unwrap();
    assert_eq!(offload.push(Booby(true)), Pushed::Queued);
    assert_eq!(offload.push(Booby(false)), Pushed::Queued);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(offload.stats().delivered, 2, "{:?}", offload.stats());
    let stats = offload.shutdown().await;
    assert_eq!(stats.delivered, 2, "the one worker went on: {stats:?}");
    assert_eq!(stats.dropped_shutdown, 0, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_on_every_report_neither_stops_a_worker_nor_loses_a_count() {
    let recorder = Arc::new(Recorder::default());
    // Even items are accepted, odd ones refused on every attempt.
    let service = tower::service_fn(|i: u32| async move {
        if i.is_multiple_of(2) {
            Ok(())
        } else {
            Err(format!("item {i} refused"))
        }
    });
    let offload = Offload::builder(service)
        .name("faulty")
        .metrics(Faulty::metrics(&recorder, |event| {
            matches!(
                event,
                palisade_core::Event::OffloadDelivered { .. }
                    | palisade_core::Event::OffloadAttemptFailed { .. }
                    | palisade_core::Event::OffloadDropped { .. }
            )
        }))
        .workers(1)
        .queue_capacity(4)
        .max_attempts(2)
        .backoff(quick_retries())
        .build()
        .unwrap();
    for i in 0..4 {
        assert_eq!(offload.push(i), Pushed::Queued);
    }
    // The queue is full: the drop is counted and reported, and the push
    // still answers instead of panicking.
    assert_eq!(offload.push(4), Pushed::Dropped(DropReason::QueueFull));
    let stats = offload.shutdown().await;
    assert_eq!(stats.delivered, 2, "the one worker went on: {stats:?}");
    assert_eq!(stats.dropped_retries_exhausted, 2, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, 1, "{stats:?}");
    assert_eq!(stats.dropped_shutdown, 0, "{stats:?}");
    assert_adds_up(&stats, &recorder);
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::AttemptFailed(..))),
        4,
        "{:?}",
        recorder.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_a_retry_recovers_from_is_still_counted() {
    let calls = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let service = tower::service_fn(move |_: u32| {
        let first = calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 0;
        async move {
            assert!(!first, "first attempt panics");
            Ok::<_, String>(())
        }
    });
    let (offload, recorder) = recorded_offload(service, 3);
    offload.push(7);
    let stats = offload.shutdown().await;
    assert_eq!(stats.delivered, 1);
    assert_eq!(
        recorder.events(),
        [
            Seen::AttemptFailed(1, AttemptFailure::Panic),
            Seen::Delivered(2)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_every_handle_delivers_what_is_queued() {
    let service = Flaky::new(1, 0.0, Duration::from_millis(5));
    let offload = Offload::builder(service.clone())
        .queue_capacity(100)
        .build()
        .unwrap();
    for i in 0..50 {
        offload.push(i);
    }
    drop(offload);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(service.accepted.lock().unwrap().len(), 50);
}

#[tokio::test(start_paused = true)]
async fn a_second_shutdown_waits_for_the_first_and_steals_nothing() {
    let service = Flaky::new(1, 0.0, Duration::from_millis(10));
    let offload = Offload::builder(service.clone())
        .queue_capacity(64)
        .drain_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..40 {
        offload.push(i);
    }
    let other = offload.clone();
    let (first, second) = tokio::join!(offload.shutdown(), other.shutdown());
    assert_eq!(first, second);
    assert_eq!(first.delivered, 40, "everything fits in the drain deadline");
    assert_eq!(first.dropped_total(), 0);
}

#[test]
fn the_builder_checks_its_values() {
    let service = tower::service_fn(|_: u32| async { Ok::<_, String>(()) });
    let err = Offload::builder(service)
        .max_attempts(0)
        .build::<u32>()
        .unwrap_err();
    assert_eq!(err.field(), "max_attempts");
    assert_eq!(err.layer(), palisade_core::LayerKind::Offload);
    let err = Offload::builder(service)
        .queue_capacity(0)
        .build::<u32>()
        .unwrap_err();
    assert_eq!(err.field(), "queue_capacity");
    let err = Offload::builder(service)
        .drain_deadline(Duration::ZERO)
        .build::<u32>()
        .unwrap_err();
    assert_eq!(err.field(), "drain_deadline");
    let err = Offload::builder(service)
        .abort_grace(Duration::ZERO)
        .build::<u32>()
        .unwrap_err();
    assert_eq!(err.field(), "abort_grace");
    let err = Offload::builder(service).build::<u32>().unwrap_err();
    assert_eq!(err.field(), "runtime");
}

/// Seeded stress on a multi-threaded runtime: eight producers push
/// concurrently while four workers deliver; the counts stay exact.
#[test]
fn concurrent_pushes_on_many_threads_add_up_exactly() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let recorder = Arc::new(Recorder::default());
        let offload = Offload::builder(Flaky::new(5, 0.5, Duration::from_micros(50)))
            .metrics(Metrics::from_arc(recorder.clone()))
            .queue_capacity(32)
            .workers(4)
            .max_attempts(2)
            .backoff(Backoff::new(
                Duration::from_micros(10),
                Duration::from_micros(100),
            ))
            .seed(3)
            .drain_deadline(Duration::from_millis(50))
            .build()
            .unwrap();
        let group = TaskGroup::new("producers").unwrap();
        for p in 0..8_u32 {
            let offload = offload.clone();
            group.spawn(format!("producer-{p}"), async move {
                for i in 0..500 {
                    offload.push(p * 1_000 + i);
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            });
        }
        group.idle().await;
        let stats = offload.shutdown().await;
        assert_eq!(stats.pushed, 4_000);
        assert_adds_up(&stats, &recorder);
    });
}

/// Seeded stress: producers on their own threads push while the queue
/// shuts down; once they stop, every push is accounted for exactly.
#[test]
fn pushes_racing_a_shutdown_are_all_accounted_for() {
    for round in 0..20_u64 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let recorder = Arc::new(Recorder::default());
        let offload: Offload<u32> = {
            let _entered = runtime.enter();
            Offload::builder(Flaky::new(round, 0.2, Duration::ZERO))
                .metrics(Metrics::from_arc(recorder.clone()))
                .queue_capacity(4)
                .workers(2)
                .max_attempts(1)
                .seed(round)
                .drain_deadline(Duration::from_millis(1))
                // A starved worker thread must not end the wait for the
                // aborted workers before they are gone.
                .abort_grace(Duration::from_secs(30))
                .build()
                .unwrap()
        };
        let start = Arc::new(std::sync::Barrier::new(4));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let (offload, start) = (offload.clone(), start.clone());
                std::thread::spawn(move || {
                    start.wait();
                    // Bounded: the queue refuses everything once shut down.
                    for i in 0..1_000_000 {
                        if offload.push(p * 1_000_000 + i) == Pushed::Dropped(DropReason::Closed) {
                            return;
                        }
                    }
                })
            })
            .collect();
        start.wait();
        runtime.block_on(offload.shutdown());
        for producer in producers {
            producer.join().unwrap();
        }
        assert_adds_up(&offload.stats(), &recorder);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn the_counts_add_up_for_any_configuration(
        seed: u64,
        failure_rate in 0.0_f64..=1.0,
        capacity in 1_usize..32,
        workers in 1_usize..4,
        attempts in 1_u32..4,
        items in 0_u32..200,
        drain_ms in 1_u64..500,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let (stats, recorder) = runtime.block_on(async {
            let recorder = Arc::new(Recorder::default());
            let offload = Offload::builder(Flaky::new(seed, failure_rate, Duration::from_millis(3)))
                .metrics(Metrics::from_arc(recorder.clone()))
                .queue_capacity(capacity)
                .workers(workers)
                .max_attempts(attempts)
                .seed(seed)
                .drain_deadline(Duration::from_millis(drain_ms))
                .build()
                .unwrap();
            for i in 0..items {
                offload.push(i);
                if i % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
            (offload.shutdown().await, recorder)
        });
        prop_assert_eq!(stats.pushed, u64::from(items));
        assert_adds_up(&stats, &recorder);
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_whose_caller_stops_waiting_still_counts_every_item() {
    let recorder = Arc::new(Recorder::default());
    let service = tower::service_fn(|_: u32| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<(), String>(())
    });
    let offload = Offload::builder(service)
        .metrics(Metrics::from_arc(recorder.clone()))
        .workers(1)
        .queue_capacity(32)
        .drain_deadline(Duration::from_secs(5))
        .build()
        .unwrap();
    for i in 0..20 {
        assert_eq!(offload.push(i), Pushed::Queued);
    }
    // The caller's own deadline: 5 s, the drain deadline's length, so it
    // runs out while the shutdown stops the workers.
    let waited = tokio::time::timeout(Duration::from_secs(5), offload.shutdown()).await;
    assert!(waited.is_err());
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = offload.stats();
    assert_eq!((stats.queued, stats.in_flight), (0, 0), "{stats:?}");
    assert_eq!(
        stats.pushed,
        stats.delivered + stats.dropped_total(),
        "{stats:?}"
    );
    assert!(stats.dropped_shutdown > 0, "{stats:?}");
    assert_adds_up(&stats, &recorder);
}

#[tokio::test(start_paused = true)]
async fn items_whose_destructors_panic_are_counted_when_refused_or_left_at_shutdown() {
    let service = tower::service_fn(|_: Booby| std::future::pending::<Result<(), String>>());
    let offload = Offload::builder(service)
        .name("booby")
        .workers(1)
        .queue_capacity(2)
        .drain_deadline(Duration::from_millis(10))
        .build()
        .unwrap();
    // One in the worker's hands, two queued, one refused.
    assert_eq!(offload.push(Booby(true)), Pushed::Queued);
    tokio::task::yield_now().await;
    for _ in 0..2 {
        assert_eq!(offload.push(Booby(true)), Pushed::Queued);
    }
    assert_eq!(
        offload.push(Booby(true)),
        Pushed::Dropped(DropReason::QueueFull)
    );
    let stats = offload.shutdown().await;
    assert_eq!(stats.pushed, 4, "{stats:?}");
    assert_eq!(stats.dropped_queue_full, 1, "{stats:?}");
    assert_eq!(stats.dropped_shutdown, 3, "{stats:?}");
    assert_eq!(stats.pushed, stats.delivered + stats.dropped_total());
    assert_eq!(
        offload.push(Booby(true)),
        Pushed::Dropped(DropReason::Closed)
    );
}

/// An error whose destructor panics (a drop check in a user's error type).
#[derive(Debug)]
struct BoobyError;

impl std::fmt::Display for BoobyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for BoobyError {}

impl Drop for BoobyError {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped an error");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn an_error_whose_destructor_panics_neither_ends_the_worker_nor_counts_twice() {
    let service = tower::service_fn(|_: u32| async { Err::<(), _>(BoobyError) });
    let offload = Offload::builder(service)
        .name("booby-error")
        .workers(1)
        .max_attempts(2)
        .backoff(Backoff::new(
            Duration::from_millis(1),
            Duration::from_millis(1),
        ))
        .build()
        .unwrap();
    for i in 0..3 {
        assert_eq!(offload.push(i), Pushed::Queued);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let stats = offload.shutdown().await;
    assert_eq!(stats.dropped_retries_exhausted, 3, "{stats:?}");
    assert_eq!(stats.pushed, stats.delivered + stats.dropped_total());
}

/// A service whose readiness has failed for good, as a `Buffer` whose
/// worker is gone reports: every `poll_ready` is an error.
#[derive(Clone, Default)]
struct DeadService {
    ready_checks: Arc<Mutex<u32>>,
}

impl tower::Service<u32> for DeadService {
    type Response = ();
    type Error = String;
    type Future = std::future::Ready<Result<(), String>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), String>> {
        *self.ready_checks.lock().unwrap() += 1;
        std::task::Poll::Ready(Err("the service is gone".to_owned()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        unreachable!("never ready")
    }
}

#[tokio::test(start_paused = true)]
async fn work_for_a_service_whose_readiness_failed_is_dropped_without_retries() {
    let service = DeadService::default();
    let recorder = Arc::new(Recorder::default());
    let offload = Offload::builder(service.clone())
        .metrics(Metrics::from_arc(recorder.clone()))
        .max_attempts(4)
        .backoff(Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).jitter(0.0))
        .build()
        .unwrap();
    let started = Instant::now();
    for i in 0..3 {
        assert_eq!(offload.push(i), Pushed::Queued);
    }
    let stats = offload.shutdown().await;
    // tower services do not recover from a readiness error: no retry, no
    // backoff, and the reason says so.
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(*service.ready_checks.lock().unwrap(), 3);
    assert_eq!(stats.dropped(DropReason::ServiceFailed), 3, "{stats:?}");
    assert_eq!(stats.dropped_total(), 3);
    assert_adds_up(&stats, &recorder);
}

/// What decides the readiness of a [`ReadyBy`] service.
trait Readiness {
    fn ready(&mut self) -> Result<(), String>;
}

/// A service that answers every call at once, ready as `T` says.
#[derive(Clone, Default)]
struct ReadyBy<T>(T);

impl<T: Readiness> tower::Service<u32> for ReadyBy<T> {
    type Response = ();
    type Error = String;
    type Future = std::future::Ready<Result<(), String>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), String>> {
        std::task::Poll::Ready(self.0.ready())
    }

    fn call(&mut self, _: u32) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

/// The clone that first asks for readiness fails it for good; every other
/// clone is healthy.
#[derive(Clone, Default)]
struct FirstPolledFails {
    tripped: Arc<std::sync::atomic::AtomicBool>,
    failed: bool,
}

impl Readiness for FirstPolledFails {
    fn ready(&mut self) -> Result<(), String> {
        if !self.tripped.swap(true, std::sync::atomic::Ordering::SeqCst) {
            self.failed = true;
        }
        if self.failed {
            Err("broken".to_owned())
        } else {
            Ok(())
        }
    }
}

/// Pushes `items` to an offload of `workers` around `service`, 10 ms
/// apart, then shuts it down.
async fn serve_one_by_one<T>(service: ReadyBy<T>, workers: usize, items: u32) -> OffloadStats
where
    T: Readiness + Clone + Send + 'static,
{
    let offload = Offload::builder(service)
        .workers(workers)
        .queue_capacity(4)
        .build()
        .unwrap();
    for i in 0..items {
        assert_eq!(offload.push(i), Pushed::Queued);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    offload.shutdown().await
}

#[tokio::test(start_paused = true)]
async fn a_worker_whose_service_failed_goes_on_with_a_fresh_one() {
    let stats = serve_one_by_one(ReadyBy(FirstPolledFails::default()), 2, 20).await;
    // The worker with the failed clone drops one item, then serves with a
    // fresh clone instead of using the failed one again.
    assert_eq!(stats.dropped_service_failed, 1, "{stats:?}");
    assert_eq!(stats.delivered, 19, "{stats:?}");
}

/// Fails its first readiness (any clone's), and panics on its third
/// clone: the two the queue's single worker takes at build, then the
/// fresh one after the failure.
#[derive(Default)]
struct FailsOnceThenCloneBreaks {
    clones: Arc<std::sync::atomic::AtomicUsize>,
    failed_once: Arc<std::sync::atomic::AtomicBool>,
}

impl Clone for FailsOnceThenCloneBreaks {
    fn clone(&self) -> Self {
        let n = self
            .clones
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        assert_ne!(n, 2, "a clone with a bug");
        Self {
            clones: self.clones.clone(),
            failed_once: self.failed_once.clone(),
        }
    }
}

impl Readiness for FailsOnceThenCloneBreaks {
    fn ready(&mut self) -> Result<(), String> {
        if self
            .failed_once
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            Ok(())
        } else {
            Err("broken once".to_owned())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_fresh_service_that_cannot_be_cloned_leaves_the_worker_serving() {
    let stats = serve_one_by_one(ReadyBy(FailsOnceThenCloneBreaks::default()), 1, 3).await;
    assert_eq!(stats.dropped_service_failed, 1, "{stats:?}");
    assert_eq!(stats.delivered, 2, "{stats:?}");
}

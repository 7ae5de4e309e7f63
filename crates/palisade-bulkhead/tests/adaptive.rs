//! The adaptive limit against a simulated backend whose latency rises
//! steeply past a concurrency knee, driven with tokio's paused clock.
//!
//! The backend answers in 10 ms while at most `knee` calls run in it; each
//! call beyond the knee adds 5 ms for every call (queueing inside the
//! backend). 64 closed-loop clients keep it saturated; a rejected client
//! retries after 20 ms. After a first phase with the knee at 32, the
//! backend degrades (knee 16) and the limit must come back down.

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_bulkhead::BulkheadLayer;
use palisade_bulkhead::adaptive::{AdaptiveLimit, Aimd};
use palisade_bulkhead::error::Overloaded;
use palisade_core::{Event, Metrics, MetricsSink};
use tokio::time::Instant;
use tower::{Layer, ServiceExt, service_fn};

const BASE: Duration = Duration::from_millis(10);
const CLIENTS: usize = 64;

#[derive(Debug, Default)]
struct LimitLog {
    changes: AtomicUsize,
    rejected_limits: Mutex<Vec<usize>>,
}

impl MetricsSink for LimitLog {
    fn record(&self, event: &Event<'_>) {
        if let Event::LimitChanged { from, to, .. } = event {
            assert_ne!(from, to);
            self.changes.fetch_add(1, Ordering::Relaxed);
        }
    }
}

struct Backend {
    in_flight: AtomicUsize,
    knee: AtomicUsize,
}

impl Backend {
    fn latency(&self, running: usize) -> Duration {
        let knee = self.knee.load(Ordering::Relaxed);
        let over = running.saturating_sub(knee) as u32;
        BASE + BASE * over / 2
    }
}

/// Runs the two phases and returns the limits sampled every 50 ms in the
/// second half of each phase.
async fn simulate(adaptive: AdaptiveLimit) -> (Vec<usize>, Vec<usize>, Arc<LimitLog>) {
    let log = Arc::new(LimitLog::default());
    let layer = BulkheadLayer::builder()
        .name("sim")
        .adaptive(adaptive.min_limit(4).max_limit(200).initial_limit(20))
        .metrics(Metrics::from_arc(log.clone()))
        .build()
        .unwrap();
    let backend = Arc::new(Backend {
        in_flight: AtomicUsize::new(0),
        knee: AtomicUsize::new(32),
    });
    let inner = {
        let backend = backend.clone();
        service_fn(move |_: ()| {
            let backend = backend.clone();
            async move {
                let running = backend.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::time::sleep(backend.latency(running)).await;
                backend.in_flight.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, Infallible>(())
            }
        })
    };
    let svc = layer.layer(inner);

    let phase = Duration::from_secs(6);
    let start = Instant::now();
    let end = start + phase * 2;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let svc = svc.clone();
        let layer = layer.clone();
        let log = log.clone();
        clients.push(tokio::spawn(async move {
            while Instant::now() < end {
                match svc.clone().oneshot(()).await {
                    Ok(()) => {}
                    Err(err) => {
                        let overloaded = err.downcast_ref::<Overloaded>().expect("only overloads");
                        // The rejection carries the limit in force.
                        assert_eq!(overloaded.limit(), layer.limit());
                        log.rejected_limits.lock().unwrap().push(overloaded.limit());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }

    let mut first = Vec::new();
    let mut second = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        let now = start.elapsed();
        if now >= phase * 2 {
            break;
        }
        if now >= phase && backend.knee.load(Ordering::Relaxed) == 32 {
            backend.knee.store(16, Ordering::Relaxed);
        }
        if now >= phase / 2 && now < phase {
            first.push(layer.limit());
        } else if now >= phase + phase / 2 {
            second.push(layer.limit());
        }
    }
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(layer.in_flight(), 0);
    (first, second, log)
}

fn within(samples: &[usize], low: usize, high: usize) -> bool {
    let (min, max) = (samples.iter().min(), samples.iter().max());
    eprintln!("limit sampled between {min:?} and {max:?}, expected {low}..={high}");
    !samples.is_empty() && samples.iter().all(|l| (low..=high).contains(l))
}

#[tokio::test(start_paused = true)]
async fn gradient_settles_at_the_knee_and_comes_down_when_latency_rises() {
    let (first, second, log) = simulate(AdaptiveLimit::gradient()).await;
    // Within ±25% of the knee of 32, then of 16.
    assert!(within(&first, 24, 40), "phase 1 limits {first:?}");
    assert!(within(&second, 12, 20), "phase 2 limits {second:?}");
    assert!(log.changes.load(Ordering::Relaxed) > 0);
    assert!(!log.rejected_limits.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn aimd_with_a_latency_threshold_settles_at_the_knee_and_comes_down() {
    let aimd = Aimd::new().latency_threshold(BASE * 2);
    let (first, second, _) = simulate(AdaptiveLimit::new(aimd)).await;
    assert!(within(&first, 24, 40), "phase 1 limits {first:?}");
    assert!(within(&second, 12, 20), "phase 2 limits {second:?}");
}

/// Who gives up on a call that takes too long.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// palisade's timeout above the bulkhead, as `palisade::Stack` orders
    /// them: it marks the cut.
    ByTimeout,
    /// The caller itself, with a deadline of its own.
    ByCaller,
}

/// Runs `rounds` rounds of `width` concurrent calls, each asking the
/// service to take five times `deadline`, and given up on at `deadline`.
async fn rounds<S>(service: &S, rounds: usize, width: usize, deadline: Duration, cut: Cut)
where
    S: tower::Service<Duration, Response = (), Error = palisade_core::BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let timeout = palisade_timeout::TimeoutLayer::builder()
        .timeout(deadline)
        .build()
        .unwrap();
    for _ in 0..rounds {
        let calls: Vec<_> = (0..width)
            .map(|_| {
                let service = service.clone();
                let timed = timeout.layer(service.clone());
                tokio::spawn(async move {
                    match cut {
                        Cut::ByTimeout => drop(timed.oneshot(deadline * 5).await),
                        Cut::ByCaller => drop(
                            tokio::time::timeout(deadline, service.oneshot(deadline * 5)).await,
                        ),
                    }
                })
            })
            .collect();
        for call in calls {
            call.await.unwrap();
        }
    }
}

fn sleeping_bulkhead(
    aimd: Aimd,
) -> (
    palisade_bulkhead::BulkheadLayer,
    impl tower::Service<Duration, Response = (), Error = palisade_core::BoxError, Future: Send>
    + Clone
    + Send
    + 'static,
) {
    let layer = BulkheadLayer::builder()
        .name("cut")
        .adaptive(
            AdaptiveLimit::new(aimd)
                .min_limit(1)
                .max_limit(100)
                .initial_limit(20)
                .window(10),
        )
        .build()
        .unwrap();
    let service = layer.layer(service_fn(|takes: Duration| async move {
        tokio::time::sleep(takes).await;
        Ok::<_, Infallible>(())
    }));
    (layer, service)
}

#[tokio::test(start_paused = true)]
async fn calls_a_timeout_above_cuts_off_bring_the_limit_down() {
    let (layer, service) = sleeping_bulkhead(Aimd::new());
    // Healthy: every call answers (in 10 ms, well inside its deadline).
    let healthy = service.clone().map_request(|_: Duration| BASE);
    rounds(&healthy, 25, 8, Duration::from_secs(1), Cut::ByTimeout).await;
    let before = layer.limit();
    assert!(before >= 20, "healthy limit {before}");
    // The service now needs 1 s; the timeout gives up after 200 ms, so no
    // call ever completes: only the cut-off calls can tell the limit.
    rounds(&service, 10, 8, Duration::from_millis(200), Cut::ByTimeout).await;
    let after = layer.limit();
    assert!(
        after < before / 2,
        "limit {before} -> {after}: timed-out calls were not sampled"
    );
}

#[tokio::test(start_paused = true)]
async fn calls_their_callers_give_up_on_say_nothing() {
    let (layer, service) = sleeping_bulkhead(Aimd::new());
    let healthy = service.clone().map_request(|_: Duration| BASE);
    rounds(&healthy, 25, 8, Duration::from_secs(1), Cut::ByCaller).await;
    let before = layer.limit();
    // The same slow calls as above, given up on by their callers (a user
    // leaving, a hedged request losing) instead of by the timeout:
    // nothing is learned, the limit stays.
    rounds(&service, 10, 8, Duration::from_millis(200), Cut::ByCaller).await;
    assert_eq!(layer.limit(), before);
}

#[tokio::test(start_paused = true)]
async fn a_short_step_dropped_with_a_slow_call_says_nothing() {
    let (layer, step) = sleeping_bulkhead(Aimd::new());
    let healthy = step.clone().map_request(|_: Duration| BASE);
    rounds(&healthy, 25, 8, Duration::from_secs(1), Cut::ByTimeout).await;
    let before = layer.limit();
    // A handler under a 100 ms timeout spends 95 ms elsewhere, then calls
    // the healthy step (10 ms) behind this bulkhead: the timeout cuts the
    // handler off 5 ms into the step. The step did not make it late.
    let handler = service_fn(move |_: Duration| {
        let step = step.clone();
        async move {
            tokio::time::sleep(Duration::from_millis(95)).await;
            let _ = step.oneshot(BASE).await;
            Ok::<_, palisade_core::BoxError>(())
        }
    });
    rounds(&handler, 10, 8, Duration::from_millis(100), Cut::ByTimeout).await;
    assert_eq!(
        layer.limit(),
        before,
        "the short step was sampled as a failure"
    );
}

/// Runs `clients` closed-loop clients for `run` through a 200 ms timeout
/// over an adaptive bulkhead (a queue of 1,000, waits up to 1 s) in front
/// of a service that takes `takes(elapsed since start)`; returns the
/// bulkhead and the answers that came back in time.
async fn queued_behind_an_adaptive_limit(
    clients: u64,
    initial_limit: usize,
    run: Duration,
    takes: fn(Duration) -> Duration,
) -> (palisade_bulkhead::BulkheadLayer, usize) {
    let layer = BulkheadLayer::builder()
        .name("queued")
        .queue(1000)
        .max_wait(Duration::from_secs(1))
        .adaptive(
            AdaptiveLimit::new(Aimd::new())
                .min_limit(1)
                .max_limit(200)
                .initial_limit(initial_limit)
                .window(10),
        )
        .build()
        .unwrap();
    let timeout = palisade_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let start = Instant::now();
    let service = timeout.layer(layer.layer(service_fn(move |()| async move {
        tokio::time::sleep(takes(start.elapsed())).await;
        Ok::<_, Infallible>(())
    })));
    let answered = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..clients)
        .map(|i| {
            let (service, answered) = (service.clone(), answered.clone());
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(i)).await;
                while start.elapsed() < run {
                    if service.clone().oneshot(()).await.is_ok() {
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for client in clients {
        client.await.unwrap();
    }
    let answered = answered.load(Ordering::Relaxed);
    (layer, answered)
}

#[tokio::test(start_paused = true)]
async fn calls_late_from_the_limits_own_queue_do_not_lower_it() {
    // A healthy 60 ms service and a limit that starts too low for 100
    // clients: calls queue most of their 200 ms, and many are cut soon
    // after they start. That is the limit's doing, not the service's: the
    // limit must grow, not collapse.
    let (layer, answered) =
        queued_behind_an_adaptive_limit(100, 4, Duration::from_secs(10), |_| {
            Duration::from_millis(60)
        })
        .await;
    assert!(layer.limit() >= 100, "limit {}", layer.limit());
    assert!(answered > 10_000, "{answered} answers in time");
}

#[tokio::test(start_paused = true)]
async fn the_limit_recovers_after_a_slow_spell() {
    // 300 ms (past the deadline) for the first second, then 60 ms again.
    let (layer, answered) = queued_behind_an_adaptive_limit(64, 50, Duration::from_secs(20), |t| {
        Duration::from_millis(if t < Duration::from_secs(1) { 300 } else { 60 })
    })
    .await;
    assert!(layer.limit() >= 64, "limit {}", layer.limit());
    assert!(answered > 15_000, "{answered} answers in time");
}

/// AIMD from a limit of 10, each completion a window of its own.
fn aimd_from_10_one_completion_a_window() -> palisade_bulkhead::BulkheadLayer {
    BulkheadLayer::builder()
        .adaptive(
            AdaptiveLimit::new(Aimd::new())
                .min_limit(1)
                .initial_limit(10)
                .max_limit(100)
                .window(1),
        )
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_panic_caught_above_the_bulkhead_counts_as_a_failure() {
    use std::future::Future;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::{Context, Waker};
    use tower::Service;

    let layer = aimd_from_10_one_completion_a_window();
    let mut svc = layer.layer(service_fn(|(): ()| async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        panic!("a handler with a bug");
        #[allow(unreachable_code)]
        Ok::<(), Infallible>(())
    }));
    let mut call = Box::pin(svc.ready().await.unwrap().call(()));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(call.as_mut().poll(&mut cx).is_pending());
    tokio::time::advance(Duration::from_millis(1)).await;
    // A layer above catches the panic of a poll, and drops the future only
    // later, once the thread is no longer unwinding.
    let caught = catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(&mut cx)));
    assert!(caught.is_err());
    drop(call);
    assert_eq!(layer.limit(), 9, "AIMD backs off on the failure");
}

#[test]
fn unset_bounds_follow_the_ones_set() {
    fn build(adaptive: AdaptiveLimit) -> Result<BulkheadLayer, palisade_core::ConfigError> {
        BulkheadLayer::builder().adaptive(adaptive).build()
    }
    // The default start (20) and minimum (4) move within the bounds given.
    let limit = |adaptive| build(adaptive).unwrap().limit();
    assert_eq!(limit(AdaptiveLimit::aimd().max_limit(10)), 10);
    assert_eq!(
        limit(AdaptiveLimit::gradient().min_limit(50).max_limit(500)),
        50
    );
    assert_eq!(limit(AdaptiveLimit::aimd().max_limit(3)), 3);
    assert_eq!(limit(AdaptiveLimit::aimd()), 20);
    // What the user set is still checked as given.
    let field = |adaptive| build(adaptive).unwrap_err().field();
    assert_eq!(
        field(AdaptiveLimit::aimd().max_limit(10).initial_limit(20)),
        "initial_limit"
    );
    assert_eq!(field(AdaptiveLimit::aimd().max_limit(0)), "max_limit");
}

/// An adaptive bulkhead whose calls never end, one window a completion.
fn pending_adaptive() -> (
    palisade_bulkhead::BulkheadLayer,
    impl tower::Service<
        bool,
        Response = (),
        Error = palisade_core::BoxError,
        Future = impl std::future::Future<Output = Result<(), palisade_core::BoxError>>,
    > + Clone,
) {
    let layer = aimd_from_10_one_completion_a_window();
    let svc = layer.clone().layer(service_fn(|panic_in_call: bool| {
        assert!(!panic_in_call, "a service whose call panics");
        std::future::pending::<Result<(), Infallible>>()
    }));
    (layer, svc)
}

#[tokio::test(start_paused = true)]
async fn a_call_dropped_by_someone_elses_panic_is_cancelled() {
    use std::future::Future;
    use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
    use std::task::{Context, Waker};
    use tower::Service;

    let (layer, mut svc) = pending_adaptive();
    let mut call = Box::pin(svc.ready().await.unwrap().call(false));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(call.as_mut().poll(&mut cx).is_pending());
    // Another branch of the caller panics; the call is dropped while the
    // thread unwinds. The service did not fail.
    let caught = catch_unwind(AssertUnwindSafe(move || {
        let _held = call;
        resume_unwind(Box::new("a bug elsewhere in the handler"));
    }));
    assert!(caught.is_err());
    assert_eq!(layer.limit(), 10, "a cancellation says nothing");
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_services_call_counts_as_a_failure() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use tower::Service;

    let (layer, mut svc) = pending_adaptive();
    let ready = svc.ready().await.unwrap();
    let caught = catch_unwind(AssertUnwindSafe(|| drop(ready.call(true))));
    assert!(caught.is_err());
    assert_eq!(layer.limit(), 9, "AIMD backs off on the failure");
    assert_eq!(layer.in_flight(), 0);
}

//! Behaviour of the fixed-limit bulkhead: admission, waiting, release,
//! events, and the in-flight count under random interleavings.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_bulkhead::BulkheadLayer;
use palisade_bulkhead::error::{OverloadKind, Overloaded};
use palisade_core::{BoxError, Event, LayerKind, Metrics, MetricsSink, RejectReason};
use proptest::prelude::*;
use tower::{Layer, Service, ServiceExt, service_fn};

// ---------------------------------------------------------------------
// A backend whose calls finish when the test says so.

/// Requests from this id on make the backend panic in `call` itself.
const PANICS_IN_CALL: u64 = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Complete,
    Fail,
    Panic,
}

#[derive(Default)]
struct BackendState {
    commands: HashMap<u64, Command>,
    running: HashSet<u64>,
    started: Vec<u64>,
}

#[derive(Clone, Default)]
struct Backend(Arc<Mutex<BackendState>>);

impl Backend {
    fn order(&self, id: u64, command: Command) {
        self.0.lock().unwrap().commands.insert(id, command);
    }

    fn running(&self) -> usize {
        self.0.lock().unwrap().running.len()
    }

    fn started(&self) -> Vec<u64> {
        self.0.lock().unwrap().started.clone()
    }
}

impl Service<u64> for Backend {
    type Response = u64;
    type Error = BoxError;
    type Future = BackendCall;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, id: u64) -> BackendCall {
        if id >= PANICS_IN_CALL {
            std::panic::resume_unwind(Box::new("backend panicked in call"));
        }
        let mut state = self.0.lock().unwrap();
        state.running.insert(id);
        state.started.push(id);
        BackendCall {
            id,
            backend: self.clone(),
        }
    }
}

struct BackendCall {
    id: u64,
    backend: Backend,
}

impl Future for BackendCall {
    type Output = Result<u64, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let command = self
            .backend
            .0
            .lock()
            .unwrap()
            .commands
            .get(&self.id)
            .copied();
        match command {
            // Only ever polled by hand, after each step: no waker needed.
            None => {
                let _ = cx;
                Poll::Pending
            }
            Some(Command::Complete) => Poll::Ready(Ok(self.id)),
            Some(Command::Fail) => Poll::Ready(Err("backend failed".into())),
            // `resume_unwind` skips the panic hook: no noise in the output.
            Some(Command::Panic) => std::panic::resume_unwind(Box::new("backend panicked")),
        }
    }
}

impl Drop for BackendCall {
    fn drop(&mut self) {
        if let Ok(mut state) = self.backend.0.lock() {
            state.running.remove(&self.id);
        }
    }
}

// ---------------------------------------------------------------------
// A sink that checks the in-flight events and counts the rest.

#[derive(Debug, Default)]
struct Recorder {
    gauge: AtomicI64,
    admitted: AtomicUsize,
    rejected: Mutex<Vec<RejectReason>>,
    limits_seen: Mutex<HashSet<usize>>,
}

impl MetricsSink for Recorder {
    fn record(&self, event: &Event<'_>) {
        match *event {
            Event::InFlightChanged {
                policy,
                layer,
                change,
                in_flight,
                limit,
            } => {
                assert_eq!((policy, layer), ("bh", LayerKind::Bulkhead));
                let now = self.gauge.fetch_add(change.delta(), Ordering::SeqCst) + change.delta();
                // Single-threaded tests: the reported count is the running sum.
                assert_eq!(now, in_flight as i64, "{change:?}");
                assert!(
                    in_flight <= limit,
                    "{in_flight} in flight over limit {limit}"
                );
                self.limits_seen.lock().unwrap().insert(limit);
            }
            Event::Admitted { policy, .. } => {
                assert_eq!(policy, "bh");
                self.admitted.fetch_add(1, Ordering::SeqCst);
            }
            Event::Rejected { reason, .. } => self.rejected.lock().unwrap().push(reason),
            _ => {}
        }
    }
}

fn layer(
    limit: usize,
    wait: Duration,
    queue: Option<usize>,
    recorder: &Arc<Recorder>,
) -> BulkheadLayer {
    let mut builder = BulkheadLayer::builder()
        .name("bh")
        .max_concurrent(limit)
        .max_wait(wait)
        .metrics(Metrics::from_arc(recorder.clone()));
    if let Some(queue) = queue {
        builder = builder.queue(queue);
    }
    builder.build().unwrap()
}

type Call = Pin<Box<dyn Future<Output = Result<u64, BoxError>>>>;

fn start<S>(svc: &mut S, id: u64) -> Call
where
    S: Service<u64, Response = u64, Error = BoxError>,
    S::Future: 'static,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        svc.poll_ready(&mut cx).is_ready(),
        "poll_ready never waits for a slot"
    );
    Box::pin(svc.call(id))
}

fn poll(call: &mut Call) -> Poll<Result<u64, BoxError>> {
    call.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

fn overload_kind(result: &Result<u64, BoxError>) -> Option<OverloadKind> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.downcast_ref::<Overloaded>())
        .map(Overloaded::kind)
}

// ---------------------------------------------------------------------

#[test]
fn a_full_bulkhead_rejects_at_once_by_default_and_poll_ready_never_waits() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(2, Duration::ZERO, None, &recorder);
    let mut svc = layer.layer(backend.clone());

    let mut a = start(&mut svc, 1);
    let b = start(&mut svc, 2);
    assert_eq!(layer.in_flight(), 2);
    // A clone per request, as axum does: still ready, still one limit.
    let mut c = start(&mut svc.clone(), 3);
    match poll(&mut c) {
        Poll::Ready(Err(err)) => {
            let overloaded = err.downcast_ref::<Overloaded>().expect("Overloaded");
            assert_eq!(overloaded.kind(), OverloadKind::Full);
            assert_eq!(overloaded.limit(), 2);
            assert_eq!(overloaded.policy(), "bh");
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(backend.started(), vec![1, 2], "the rejected call never ran");

    backend.order(1, Command::Complete);
    assert!(matches!(poll(&mut a), Poll::Ready(Ok(1))));
    assert_eq!(layer.in_flight(), 1);
    drop(b);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
    assert_eq!(recorder.admitted.load(Ordering::SeqCst), 2);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        vec![RejectReason::ConcurrencyFull]
    );
}

#[test]
fn one_layer_is_one_limit_across_services_and_clones() {
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::ZERO, None, &recorder);
    let backend = Backend::default();
    let mut route_a = layer.layer(backend.clone());
    let mut route_b = layer.clone().layer(backend.clone());
    let _a = start(&mut route_a, 1);
    let mut b = start(&mut route_b, 2);
    assert_eq!(
        overload_kind(&ready(poll(&mut b))),
        Some(OverloadKind::Full)
    );
    assert_eq!(route_b.in_flight(), 1);
}

fn ready<T: std::fmt::Debug>(poll: Poll<T>) -> T {
    match poll {
        Poll::Ready(value) => value,
        Poll::Pending => panic!("expected Ready"),
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_fifo_order_and_newcomers_queue_behind_them() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(1, Duration::from_secs(10), Some(8), &recorder);
    let mut svc = layer.layer(backend.clone());

    let mut calls: Vec<(u64, Call)> = (1..=4).map(|id| (id, start(&mut svc, id))).collect();
    for (_, call) in &mut calls {
        assert!(poll(call).is_pending());
    }
    assert_eq!(layer.waiting(), 3);
    assert_eq!(backend.started(), vec![1]);

    // Finish the running call; the slot goes to the oldest waiter, even if
    // a newcomer arrives before the waiter is polled again.
    backend.order(1, Command::Complete);
    assert!(matches!(poll(&mut calls[0].1), Poll::Ready(Ok(1))));
    let mut newcomer = start(&mut svc, 5);
    assert!(poll(&mut newcomer).is_pending());
    for (_, call) in calls.iter_mut().skip(1) {
        assert!(poll(call).is_pending());
    }
    calls.push((5, newcomer));

    for id in 2..=5 {
        backend.order(id, Command::Complete);
        for (call_id, call) in calls.iter_mut().filter(|(i, _)| *i >= id) {
            let p = poll(call);
            if *call_id == id {
                assert!(matches!(p, Poll::Ready(Ok(done)) if done == id));
            } else {
                assert!(p.is_pending());
            }
        }
    }
    assert_eq!(backend.started(), vec![1, 2, 3, 4, 5]);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(layer.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_rejected_when_its_wait_runs_out_and_not_before() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(1, Duration::from_millis(100), None, &recorder);
    let mut svc = layer.layer(backend.clone());

    let mut holder = start(&mut svc, 1);
    assert!(poll(&mut holder).is_pending());
    let mut waiter = start(&mut svc, 2);
    assert!(poll(&mut waiter).is_pending());

    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(poll(&mut waiter).is_pending());
    assert_eq!(layer.waiting(), 1);

    tokio::time::advance(Duration::from_millis(1)).await;
    let result = ready(poll(&mut waiter));
    assert_eq!(overload_kind(&result), Some(OverloadKind::WaitTimedOut));
    assert_eq!(layer.waiting(), 0);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        vec![RejectReason::WaitTimedOut]
    );

    // A waiter that gets a slot within its wait runs.
    let mut lucky = start(&mut svc, 3);
    assert!(poll(&mut lucky).is_pending());
    tokio::time::advance(Duration::from_millis(60)).await;
    backend.order(1, Command::Complete);
    assert!(matches!(poll(&mut holder), Poll::Ready(Ok(1))));
    tokio::time::advance(Duration::from_millis(60)).await;
    assert!(poll(&mut lucky).is_pending(), "running, past its wait");
    backend.order(3, Command::Complete);
    assert!(matches!(poll(&mut lucky), Poll::Ready(Ok(3))));
    assert_eq!(backend.started(), vec![1, 3]);
}

#[tokio::test(start_paused = true)]
async fn a_slot_freed_after_a_waiters_wait_ran_out_goes_to_the_next_one() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(1, Duration::from_millis(100), Some(4), &recorder);
    let mut svc = layer.layer(backend.clone());

    let mut holder = start(&mut svc, 1);
    assert!(poll(&mut holder).is_pending());
    let mut late = start(&mut svc, 2);
    assert!(poll(&mut late).is_pending());
    tokio::time::advance(Duration::from_millis(50)).await;
    let mut next = start(&mut svc, 3);
    assert!(poll(&mut next).is_pending());

    // The first waiter's wait ends at 100 ms, but its task is not polled
    // again (a busy executor) before the holder finishes, at 120 ms.
    tokio::time::advance(Duration::from_millis(70)).await;
    backend.order(1, Command::Complete);
    assert!(matches!(poll(&mut holder), Poll::Ready(Ok(1))));
    assert_eq!(layer.waiting(), 0);
    assert_eq!(layer.in_flight(), 1, "the slot went to the next waiter");

    // 120 ms into a 100 ms wait: turned away, without having run.
    let result = ready(poll(&mut late));
    assert_eq!(overload_kind(&result), Some(OverloadKind::WaitTimedOut));
    // The next one, 70 ms into its wait, runs.
    assert!(poll(&mut next).is_pending());
    backend.order(3, Command::Complete);
    assert!(matches!(poll(&mut next), Poll::Ready(Ok(3))));
    assert_eq!(backend.started(), vec![1, 3]);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(
        *recorder.rejected.lock().unwrap(),
        vec![RejectReason::WaitTimedOut]
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_rejects_at_once() {
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::from_secs(1), Some(1), &recorder);
    let mut svc = layer.layer(Backend::default());
    let _holder = start(&mut svc, 1);
    let mut waiter = start(&mut svc, 2);
    assert!(poll(&mut waiter).is_pending());
    let mut third = start(&mut svc, 3);
    let result = ready(poll(&mut third));
    assert_eq!(overload_kind(&result), Some(OverloadKind::QueueFull));
    let overloaded = result.unwrap_err();
    assert_eq!(overloaded.downcast_ref::<Overloaded>().unwrap().limit(), 1);
}

#[tokio::test(start_paused = true)]
async fn permits_are_released_on_error_panic_and_cancellation() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(3, Duration::from_secs(1), None, &recorder);
    let mut svc = layer.layer(backend.clone());

    let mut failing = start(&mut svc, 1);
    let mut panicking = start(&mut svc, 2);
    let cancelled = start(&mut svc, 3);
    let mut waiting = start(&mut svc, 4);
    assert!(poll(&mut waiting).is_pending());
    assert_eq!((layer.in_flight(), layer.waiting()), (3, 1));

    backend.order(1, Command::Fail);
    assert!(
        ready(poll(&mut failing))
            .unwrap_err()
            .to_string()
            .contains("backend failed")
    );
    // The freed slot went to the waiter.
    assert_eq!((layer.in_flight(), layer.waiting()), (3, 0));

    backend.order(2, Command::Panic);
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| poll(&mut panicking)));
    assert!(unwound.is_err());
    drop(panicking);
    assert_eq!(layer.in_flight(), 2);

    drop(cancelled);
    assert_eq!(layer.in_flight(), 1);
    assert_eq!(
        backend.running(),
        0,
        "the waiter has its slot but has not run yet"
    );
    drop(waiting);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_the_inner_call_itself_releases_the_slot() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(1, Duration::from_secs(1), None, &recorder);
    let mut svc = layer.layer(backend.clone());

    // Admitted at once.
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| start(&mut svc, PANICS_IN_CALL)));
    assert!(unwound.is_err());
    assert_eq!(layer.in_flight(), 0);

    // Admitted after waiting: the inner call happens inside the poll.
    let mut holder = start(&mut svc, 1);
    let mut waiter = start(&mut svc, PANICS_IN_CALL + 1);
    assert!(poll(&mut waiter).is_pending());
    backend.order(1, Command::Complete);
    assert!(poll(&mut holder).is_ready());
    assert_eq!(layer.in_flight(), 1, "handed to the waiter");
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| poll(&mut waiter)));
    assert!(unwound.is_err());
    drop(waiter);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
}

/// A service whose clones panic once `armed` is set.
struct PanicsOnClone<S> {
    inner: S,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl<S: Clone> Clone for PanicsOnClone<S> {
    fn clone(&self) -> Self {
        assert!(!self.armed.load(Ordering::SeqCst), "clone failed");
        Self {
            inner: self.inner.clone(),
            armed: self.armed.clone(),
        }
    }
}

impl<S: Service<u64>> Service<u64> for PanicsOnClone<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: u64) -> Self::Future {
        self.inner.call(request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_joining_the_queue_leaves_neither_a_place_nor_a_slot() {
    let recorder = Arc::new(Recorder::default());
    let backend = Backend::default();
    let layer = layer(1, Duration::from_secs(1), None, &recorder);
    let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut svc = layer.layer(PanicsOnClone {
        inner: backend.clone(),
        armed: armed.clone(),
    });
    let mut holder = start(&mut svc, 1);
    // The second request joins the queue, then cloning the service for
    // its wait panics.
    armed.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| start(&mut svc, 2)));
    armed.store(false, Ordering::SeqCst);
    assert!(unwound.is_err());
    assert_eq!(layer.waiting(), 0, "the place in the queue is given back");
    backend.order(1, Command::Complete);
    assert!(poll(&mut holder).is_ready());
    assert_eq!(layer.in_flight(), 0, "the slot is not handed to nobody");
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_panic_inside_a_task_releases_the_permit() {
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::ZERO, None, &recorder);
    let svc = layer.layer(service_fn(|_: u64| async {
        tokio::task::yield_now().await;
        std::panic::resume_unwind(Box::new("handler panicked"));
        #[allow(unreachable_code)]
        Ok::<u64, Infallible>(0)
    }));
    let joined = tokio::spawn(svc.clone().oneshot(1)).await;
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(layer.in_flight(), 0);
    // The slot is usable again.
    let again = tokio::spawn(svc.oneshot(2)).await;
    assert!(again.unwrap_err().is_panic());
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
}

/// Panics once, on the first slot acquisition after it is armed.
#[derive(Default)]
struct PanicsOnce {
    armed: std::sync::atomic::AtomicBool,
}

impl MetricsSink for PanicsOnce {
    fn record(&self, event: &Event<'_>) {
        if let Event::InFlightChanged {
            change: palisade_core::InFlightChange::Acquired,
            ..
        } = event
            && self.armed.swap(false, Ordering::SeqCst)
        {
            panic!("the metrics sink failed");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_loses_no_slot() {
    let sink = Arc::new(PanicsOnce::default());
    let backend = Backend::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .queue(1)
        .max_wait(Duration::from_secs(1))
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());

    // On admission: the panic leaves with the call, the slot stays free.
    sink.armed.store(true, Ordering::SeqCst);
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| start(&mut svc, 1)));
    assert!(unwound.is_err());
    assert_eq!(layer.in_flight(), 0);

    // On a hand-off to a waiter: the waiter still gets the slot.
    let mut holder = start(&mut svc, 2);
    let mut waiter = start(&mut svc, 3);
    assert!(poll(&mut waiter).is_pending());
    sink.armed.store(true, Ordering::SeqCst);
    backend.order(2, Command::Complete);
    let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| poll(&mut holder)));
    assert!(unwound.is_err(), "the hand-off's event panicked");
    drop(holder);
    assert!(poll(&mut waiter).is_pending(), "running in the backend");
    backend.order(3, Command::Complete);
    assert_eq!(ready(poll(&mut waiter)).unwrap(), 3);
    assert_eq!(layer.in_flight(), 0);

    // The bulkhead still admits.
    let mut next = start(&mut svc, 4);
    backend.order(4, Command::Complete);
    assert_eq!(ready(poll(&mut next)).unwrap(), 4);
}

/// Panics on every change of the slot count.
struct PanicsOnEveryChange;

impl MetricsSink for PanicsOnEveryChange {
    fn record(&self, event: &Event<'_>) {
        if let Event::InFlightChanged { change, .. } = event {
            panic!("the metrics sink failed on {change:?}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_on_every_slot_change_aborts_nothing() {
    let backend = Backend::default();
    let layer = BulkheadLayer::builder()
        .max_concurrent(1)
        .metrics(Metrics::new(PanicsOnEveryChange))
        .build()
        .unwrap();
    let mut svc = layer.layer(backend.clone());

    // The slot's event panics on admission, and the slot given back as
    // that panic unwinds reports too: contained there (escaping, it would
    // abort the process), with the slot freed.
    for id in 1..=3 {
        let unwound = std::panic::catch_unwind(AssertUnwindSafe(|| start(&mut svc, id)));
        assert!(unwound.is_err());
        assert_eq!(layer.in_flight(), 0);
    }
    assert!(backend.started().is_empty(), "no call reached the service");
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_holds_no_capacity_of_the_inner_service() {
    // The inner service admits two calls at once (tower's
    // `ConcurrencyLimit`, whose readiness holds a permit), and another
    // route calls it directly. A request queued by the bulkhead must not
    // keep a permit through its wait.
    let backend = Backend::default();
    let inner = tower::limit::ConcurrencyLimitLayer::new(2).layer(backend.clone());
    let mut direct = inner.clone();
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::from_secs(10), Some(1), &recorder);
    let svc = layer.layer(inner);
    // One service clone per request, as axum makes.
    let mut running = start(&mut svc.clone(), 1);
    let mut queued = start(&mut svc.clone(), 2);
    assert!(poll(&mut queued).is_pending(), "queued behind call 1");
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        direct.poll_ready(&mut cx).is_ready(),
        "the queued request kept the inner service's second permit"
    );
    drop(direct);
    backend.order(1, Command::Complete);
    assert_eq!(ready(poll(&mut running)).unwrap(), 1);
    assert!(poll(&mut queued).is_pending(), "granted, now running");
    assert_eq!(backend.started(), [1, 2]);
    backend.order(2, Command::Complete);
    assert_eq!(ready(poll(&mut queued)).unwrap(), 2);
    assert_eq!(layer.in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_granted_request_gets_its_service_readiness_error_and_frees_the_slot() {
    #[derive(Clone)]
    struct Breakable {
        backend: Backend,
        broken: Arc<std::sync::atomic::AtomicBool>,
    }
    impl Service<u64> for Breakable {
        type Response = u64;
        type Error = BoxError;
        type Future = BackendCall;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
            if self.broken.load(Ordering::SeqCst) {
                Poll::Ready(Err("backend gone".into()))
            } else {
                Poll::Ready(Ok(()))
            }
        }
        fn call(&mut self, id: u64) -> BackendCall {
            self.backend.call(id)
        }
    }
    let backend = Backend::default();
    let broken = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::from_secs(10), Some(1), &recorder);
    let mut svc = layer.layer(Breakable {
        backend: backend.clone(),
        broken: broken.clone(),
    });
    let mut running = start(&mut svc, 1);
    let mut queued = start(&mut svc, 2);
    assert!(poll(&mut queued).is_pending());
    broken.store(true, Ordering::SeqCst);
    backend.order(1, Command::Complete);
    assert_eq!(ready(poll(&mut running)).unwrap(), 1);
    let err = ready(poll(&mut queued)).unwrap_err();
    assert_eq!(err.to_string(), "backend gone");
    assert_eq!(backend.started(), [1]);
    assert_eq!(layer.in_flight(), 0);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
}

/// One slot with room to queue for 30 s, around a service that sleeps the
/// milliseconds it is asked: the bulkhead's layer, the service through it
/// alone, and the service through a 1 s timeout around it.
fn deadline_rig() -> (
    BulkheadLayer,
    impl Service<u64, Response = u64, Error = BoxError, Future: Send + 'static> + Clone,
    impl Service<u64, Response = u64, Error = BoxError> + Clone,
) {
    let bulkhead = layer(
        1,
        Duration::from_secs(30),
        Some(10),
        &Arc::new(Recorder::default()),
    );
    let sleeper = service_fn(|takes: u64| async move {
        tokio::time::sleep(Duration::from_millis(takes)).await;
        Ok::<_, BoxError>(takes)
    });
    let unbounded = bulkhead.layer(sleeper);
    let bounded = palisade_timeout::TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(bulkhead.layer(sleeper));
    (bulkhead, unbounded, bounded)
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_is_turned_away_before_an_enclosing_timeout_fires() {
    // The slot is held for 5 s by a call no timeout bounds. A request
    // behind the 1 s timeout may queue for 30 s by the bulkhead's
    // settings: it is rejected as overloaded at 1 s, not left to time out.
    let (_, unbounded, bounded) = deadline_rig();
    let start = tokio::time::Instant::now();
    let holder = tokio::spawn(unbounded.oneshot(5_000));
    tokio::task::yield_now().await;
    let err = bounded.oneshot(1).await.unwrap_err();
    let overloaded = err
        .downcast_ref::<Overloaded>()
        .unwrap_or_else(|| panic!("not Overloaded: {err}"));
    assert_eq!(overloaded.kind(), OverloadKind::WaitTimedOut);
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    // The holder, outside any timeout, keeps its slot to the end.
    assert_eq!(holder.await.unwrap().unwrap(), 5_000);
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_arrives_at_the_enclosing_deadline_is_handed_on() {
    // The holder frees the slot at 1 s, the instant the queued request's
    // 1 s deadline passes: the request is turned away as overloaded (its
    // call could only time out) and the slot is not lost.
    let (bulkhead, unbounded, bounded) = deadline_rig();
    let holder = tokio::spawn(unbounded.oneshot(1_000));
    tokio::task::yield_now().await;
    let err = bounded.clone().oneshot(10).await.unwrap_err();
    assert!(err.is::<Overloaded>(), "not Overloaded: {err}");
    assert_eq!(holder.await.unwrap().unwrap(), 1_000);
    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(bounded.oneshot(10).await.unwrap(), 10);
}

#[test]
fn invalid_configurations_are_typed_errors() {
    let err = BulkheadLayer::builder()
        .max_concurrent(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
    let err = BulkheadLayer::builder().queue(10).build().unwrap_err();
    assert_eq!(err.field(), "max_wait");
    let err = BulkheadLayer::builder()
        .max_wait(Duration::from_millis(1))
        .queue(0)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "queue");
    let err = BulkheadLayer::builder()
        .max_concurrent(10)
        .adaptive(palisade_bulkhead::adaptive::AdaptiveLimit::gradient())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_concurrent");
    let err = BulkheadLayer::builder()
        .adaptive(
            palisade_bulkhead::adaptive::AdaptiveLimit::gradient()
                .min_limit(10)
                .max_limit(5),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "max_limit");
    let err = BulkheadLayer::builder()
        .adaptive(palisade_bulkhead::adaptive::AdaptiveLimit::new(
            palisade_bulkhead::adaptive::Gradient::new().smoothing(0.0),
        ))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "smoothing");
}

#[test]
fn the_happy_path_allocates_nothing() {
    let ready_backend = service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)));
    let fixed = BulkheadLayer::builder()
        .max_concurrent(4)
        .metrics(Metrics::new(Recorder::default()))
        .name("bh")
        .build()
        .unwrap();
    let adaptive = BulkheadLayer::builder()
        .adaptive(palisade_bulkhead::adaptive::AdaptiveLimit::gradient())
        .clock(palisade_core::ManualClock::new().clock())
        .build()
        .unwrap();
    let waiting = BulkheadLayer::builder()
        .max_concurrent(4)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    for layer in [fixed, adaptive, waiting] {
        let mut svc = layer.layer(ready_backend);
        let mut cx = Context::from_waker(Waker::noop());
        // Warm up once, then count.
        for round in 0..2 {
            let allocations = allocation_counter::measure(|| {
                for _ in 0..10 {
                    assert!(svc.poll_ready(&mut cx).is_ready());
                    let call = pin!(svc.call(7));
                    assert!(matches!(call.poll(&mut cx), Poll::Ready(Ok(7))));
                }
            });
            if round == 1 {
                assert_eq!(allocations.count_total, 0, "{layer:?}");
            }
        }
        assert_eq!(layer.in_flight(), 0);
    }
}

// ---------------------------------------------------------------------
// Random interleavings.

#[derive(Clone, Debug)]
enum Op {
    Start,
    Complete(usize),
    Fail(usize),
    Panic(usize),
    Cancel(usize),
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Start),
        2 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Fail),
        1 => any::<usize>().prop_map(Op::Panic),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => (1_u64..40).prop_map(Op::Advance),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn in_flight_never_exceeds_the_limit_and_ends_at_zero(
        limit in 1_usize..4,
        wait_ms in prop_oneof![Just(0_u64), 10_u64..60],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async move {
            let recorder = Arc::new(Recorder::default());
            let backend = Backend::default();
            let queue = (wait_ms > 0).then_some(2);
            let layer = layer(limit, Duration::from_millis(wait_ms), queue, &recorder);
            let svc = layer.layer(backend.clone());
            let mut live: Vec<(u64, Call)> = Vec::new();
            let mut next = 0;
            for op in ops {
                match op {
                    Op::Start => {
                        next += 1;
                        // A fresh clone per request, as axum does.
                        live.push((next, start(&mut svc.clone(), next)));
                    }
                    Op::Complete(i) | Op::Fail(i) | Op::Panic(i) if !live.is_empty() => {
                        let id = live[i % live.len()].0;
                        let command = match op {
                            Op::Complete(_) => Command::Complete,
                            Op::Fail(_) => Command::Fail,
                            _ => Command::Panic,
                        };
                        backend.order(id, command);
                    }
                    Op::Cancel(i) if !live.is_empty() => {
                        let index = i % live.len();
                        drop(live.swap_remove(index));
                    }
                    Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
                    _ => {}
                }
                // Poll everything once; drop what finished or panicked.
                live.retain_mut(|(_, call)| {
                    match std::panic::catch_unwind(AssertUnwindSafe(|| poll(call))) {
                        Ok(Poll::Pending) => true,
                        Ok(Poll::Ready(_)) | Err(_) => false,
                    }
                });
                let in_flight = layer.in_flight();
                prop_assert!(in_flight <= limit, "{} in flight, limit {}", in_flight, limit);
                prop_assert!(backend.running() <= in_flight);
                prop_assert_eq!(recorder.gauge.load(Ordering::SeqCst), in_flight as i64);
            }
            drop(live);
            prop_assert_eq!(layer.in_flight(), 0);
            prop_assert_eq!(layer.waiting(), 0);
            prop_assert_eq!(backend.running(), 0);
            prop_assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
            Ok(())
        })?;
    }
}

#[test]
fn in_flight_events_report_acquire_and_release_exactly_once() {
    let recorder = Arc::new(Recorder::default());
    let layer = layer(1, Duration::ZERO, None, &recorder);
    let backend = Backend::default();
    let mut svc = layer.layer(backend.clone());
    let mut call = start(&mut svc, 1);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 1);
    backend.order(1, Command::Complete);
    assert!(poll(&mut call).is_ready());
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
    drop(call);
    assert_eq!(recorder.gauge.load(Ordering::SeqCst), 0);
    assert_eq!(*recorder.limits_seen.lock().unwrap(), HashSet::from([1]));
}

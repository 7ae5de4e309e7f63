//! Behaviour of the timeout layer, driven by tokio's paused clock.

use std::convert::Infallible;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{BoxError, Elapsed, Event, LayerKind, Metrics, MetricsSink};
use palisade_timeout::{Deadline, HttpDeadline, RequestTimeout, TimeoutLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

#[derive(Debug, Default)]
struct Recorder {
    timed_out: Mutex<Vec<(String, Duration, bool)>>,
    malformed: Mutex<Vec<(String, &'static str)>>,
}

impl MetricsSink for Recorder {
    fn record(&self, event: &Event<'_>) {
        match *event {
            Event::TimedOut {
                policy,
                timeout,
                caller,
            } => {
                self.timed_out
                    .lock()
                    .unwrap()
                    .push((policy.to_owned(), timeout, caller));
            }
            Event::MalformedHeader {
                policy,
                layer,
                header,
            } => {
                assert_eq!(layer, LayerKind::Timeout);
                self.malformed
                    .lock()
                    .unwrap()
                    .push((policy.to_owned(), header));
            }
            _ => {}
        }
    }
}

fn http_layer(default: Duration, recorder: &Arc<Recorder>) -> TimeoutLayer<HttpDeadline> {
    TimeoutLayer::builder()
        .name("api")
        .timeout(default)
        .metrics(Metrics::from_arc(recorder.clone()))
        .http()
        .build()
        .unwrap()
}

/// A plain timeout of `timeout`, reading no per-request deadline.
fn plain_layer(timeout: Duration) -> TimeoutLayer {
    TimeoutLayer::builder().timeout(timeout).build().unwrap()
}

/// A handler that answers with the `Deadline` in its request's extensions.
fn extension_reader()
-> impl Service<http::Request<()>, Response = Option<Deadline>, Error = Infallible> + Clone {
    service_fn(|req: http::Request<()>| async move {
        Ok::<_, Infallible>(req.extensions().get::<Deadline>().copied())
    })
}

/// A handler that sleeps for ever and reports the deadline it was given.
fn never_answers(
    seen: Arc<Mutex<Option<Deadline>>>,
) -> impl Service<http::Request<()>, Response = (), Error = Infallible, Future: Send> + Clone {
    service_fn(move |req: http::Request<()>| {
        let current = Deadline::current();
        if let Some(exposed) = req.extensions().get::<Deadline>() {
            assert_eq!(Some(*exposed), current, "the extension agrees");
        }
        *seen.lock().unwrap() = current;
        async {
            std::future::pending::<()>().await;
            Ok(())
        }
    })
}

fn request(grpc_timeout: Option<&[u8]>, extension: Option<Duration>) -> http::Request<()> {
    let mut req = http::Request::new(());
    if let Some(value) = grpc_timeout {
        req.headers_mut().insert(
            "grpc-timeout",
            http::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    if let Some(timeout) = extension {
        req.extensions_mut().insert(RequestTimeout(timeout));
    }
    req
}

/// Sends `req` to a handler that never answers and returns the deadline the
/// handler saw and how much virtual time passed before the layer gave up.
async fn expiry_of(
    layer: &TimeoutLayer<HttpDeadline>,
    req: http::Request<()>,
) -> (Option<Deadline>, Duration, Elapsed) {
    let seen = Arc::new(Mutex::new(None));
    let svc = layer.layer(never_answers(seen.clone()));
    let start = Instant::now();
    let err = svc.oneshot(req).await.unwrap_err();
    let waited = start.elapsed();
    let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed").clone();
    let deadline = *seen.lock().unwrap();
    (deadline, waited, elapsed)
}

#[tokio::test(start_paused = true)]
async fn the_deadline_extension_is_opt_in() {
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_secs(2))
        .deadline_source(HttpDeadline::new().expose_deadline(true))
        .build()
        .unwrap();
    let svc = layer.layer(extension_reader());
    let exposed = svc.oneshot(request(Some(b"700m"), None)).await.unwrap();
    assert_eq!(
        exposed,
        Some(Deadline::with_origin(Duration::from_millis(700), true))
    );
    // The handler that checks the extension against `Deadline::current()`.
    let (seen, waited, _) = expiry_of(&layer, request(Some(b"700m"), None)).await;
    assert_eq!(
        seen,
        Some(Deadline::with_origin(Duration::from_millis(700), true))
    );
    assert_eq!(waited, Duration::from_millis(700));
    let svc = http_layer(Duration::from_secs(2), &Arc::default()).layer(extension_reader());
    assert_eq!(svc.oneshot(request(None, None)).await.unwrap(), None);
}

#[tokio::test(start_paused = true)]
async fn the_default_applies_without_overrides() {
    let recorder = Arc::new(Recorder::default());
    let layer = http_layer(Duration::from_secs(2), &recorder);
    let (deadline, waited, elapsed) = expiry_of(&layer, request(None, None)).await;
    assert_eq!(waited, Duration::from_secs(2));
    assert_eq!(elapsed.timeout(), Duration::from_secs(2));
    assert_eq!(elapsed.policy(), "api");
    assert!(!elapsed.is_caller_deadline());
    assert_eq!(deadline, Some(Deadline::new(Duration::from_secs(2))));
    assert_eq!(
        *recorder.timed_out.lock().unwrap(),
        vec![("api".to_owned(), Duration::from_secs(2), false)]
    );
}

#[tokio::test(start_paused = true)]
async fn a_shorter_extension_wins_and_a_longer_one_is_ignored() {
    let recorder = Arc::new(Recorder::default());
    let layer = http_layer(Duration::from_secs(2), &recorder);

    let (deadline, waited, elapsed) =
        expiry_of(&layer, request(None, Some(Duration::from_millis(300)))).await;
    assert_eq!(waited, Duration::from_millis(300));
    assert_eq!(elapsed.timeout(), Duration::from_millis(300));
    assert_eq!(deadline.unwrap().budget(), Duration::from_millis(300));
    // The extension is set by the server's own code: its deadline is the
    // service's, not the caller's.
    assert!(!elapsed.is_caller_deadline());

    let (_, waited, elapsed) =
        expiry_of(&layer, request(None, Some(Duration::from_secs(60)))).await;
    assert_eq!(waited, Duration::from_secs(2));
    assert_eq!(elapsed.timeout(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_shorter_grpc_timeout_wins_and_a_longer_one_is_ignored() {
    let recorder = Arc::new(Recorder::default());
    let layer = http_layer(Duration::from_secs(2), &recorder);

    let (deadline, waited, elapsed) = expiry_of(&layer, request(Some(b"150m"), None)).await;
    assert_eq!(waited, Duration::from_millis(150));
    assert_eq!(elapsed.timeout(), Duration::from_millis(150));
    assert_eq!(deadline.unwrap().budget(), Duration::from_millis(150));
    assert!(elapsed.is_caller_deadline(), "the header is the client's");

    let (_, waited, elapsed) = expiry_of(&layer, request(Some(b"1H"), None)).await;
    assert_eq!(waited, Duration::from_secs(2));
    assert!(
        !elapsed.is_caller_deadline(),
        "the policy's deadline applied"
    );
    // The events say whose deadline ran out.
    assert_eq!(
        *recorder.timed_out.lock().unwrap(),
        vec![
            ("api".to_owned(), Duration::from_millis(150), true),
            ("api".to_owned(), Duration::from_secs(2), false)
        ]
    );

    // Asking for exactly the policy's deadline leaves it the policy's.
    let (_, waited, elapsed) = expiry_of(&layer, request(Some(b"2S"), None)).await;
    assert_eq!(waited, Duration::from_secs(2));
    assert!(!elapsed.is_caller_deadline());
    assert!(recorder.malformed.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn on_a_client_side_stack_the_grpc_timeout_is_the_stacks_own_deadline() {
    let recorder = Arc::new(Recorder::default());
    let layer_with = |source: HttpDeadline| {
        TimeoutLayer::builder()
            .name("api")
            .timeout(Duration::from_secs(10))
            .metrics(Metrics::from_arc(recorder.clone()))
            .deadline_source(source)
            .build()
            .unwrap()
    };

    // A client stack: the application wrote the header itself, so a
    // dependency that never answers within it is the stack's own timeout,
    // which a circuit breaker counts.
    let client = layer_with(HttpDeadline::new().client_side(true));
    let (deadline, waited, elapsed) = expiry_of(&client, request(Some(b"100m"), None)).await;
    assert_eq!(waited, Duration::from_millis(100));
    assert_eq!(elapsed.timeout(), Duration::from_millis(100));
    assert!(!elapsed.is_caller_deadline());
    assert!(!palisade_core::classify::is_local_rejection(
        &elapsed.clone().into()
    ));
    assert_eq!(deadline, Some(Deadline::new(Duration::from_millis(100))));

    // A server stack (the default): the same header is the remote caller's.
    let server = layer_with(HttpDeadline::new());
    let (deadline, waited, elapsed) = expiry_of(&server, request(Some(b"100m"), None)).await;
    assert_eq!(waited, Duration::from_millis(100));
    assert!(elapsed.is_caller_deadline());
    assert!(palisade_core::classify::is_local_rejection(&elapsed.into()));
    assert_eq!(
        deadline,
        Some(Deadline::with_origin(Duration::from_millis(100), true))
    );
    assert_eq!(
        *recorder.timed_out.lock().unwrap(),
        vec![
            ("api".to_owned(), Duration::from_millis(100), false),
            ("api".to_owned(), Duration::from_millis(100), true)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_timeout_beyond_thirty_years_fires_then_and_counts_down_from_then() {
    const THIRTY_YEARS: Duration = Duration::from_secs(86_400 * 365 * 30);
    let held = Duration::from_nanos(u64::MAX >> 2);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let svc = plain_layer(Duration::MAX).layer(service_fn({
        let seen = seen.clone();
        move |_: ()| {
            let seen = seen.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push(Deadline::current().unwrap().budget());
                tokio::time::sleep(Duration::from_secs(1)).await;
                seen.lock()
                    .unwrap()
                    .push(Deadline::current().unwrap().budget());
                std::future::pending::<Result<(), Infallible>>().await
            }
        }
    }));
    let start = Instant::now();
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(start.elapsed(), THIRTY_YEARS);
    assert_eq!(err.downcast_ref::<Elapsed>().unwrap().timeout(), held);
    // About 146 years before the first wait; the timer's 30 years, less
    // the second waited, after it.
    let seen = seen.lock().unwrap();
    assert!(seen[0] > THIRTY_YEARS * 4, "{:?}", seen[0]);
    assert_eq!(seen[1..], [THIRTY_YEARS - Duration::from_secs(1)]);
}

#[tokio::test(start_paused = true)]
async fn the_smallest_of_default_extension_and_header_wins() {
    let recorder = Arc::new(Recorder::default());
    let layer = http_layer(Duration::from_secs(2), &recorder);
    let cases: [(&[u8], u64, u64, bool); 4] = [
        // (header, extension ms, expected ms, whether the caller's applied)
        (b"700m", 900, 700, true),
        (b"900m", 700, 700, false),
        // A tie between the client and the server is the server's.
        (b"700m", 700, 700, false),
        (b"5S", 3000, 2000, false),
    ];
    for (header, extension, expected, caller) in cases {
        let req = request(Some(header), Some(Duration::from_millis(extension)));
        let (deadline, waited, elapsed) = expiry_of(&layer, req).await;
        let expected = Duration::from_millis(expected);
        assert_eq!(waited, expected);
        assert_eq!(elapsed.timeout(), expected);
        assert_eq!(deadline.unwrap().budget(), expected);
        assert_eq!(
            elapsed.is_caller_deadline(),
            caller,
            "{header:?} vs {extension} ms"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn garbage_grpc_timeouts_are_ignored_and_reported() {
    let garbage: [&[u8]; 10] = [
        b"",                         // empty
        b"100",                      // no unit
        b"10x",                      // unknown unit
        b"99999999999999999999999S", // overflow
        b"-5S",                      // negative
        b"123456789m",               // nine digits
        b"1.5S",                     // not an integer
        b"S",                        // no digits
        b" 1S",                      // leading space
        b"\xff1S",                   // not ASCII
    ];
    for value in garbage {
        let recorder = Arc::new(Recorder::default());
        let layer = http_layer(Duration::from_secs(2), &recorder);
        // A slow handler gets the default deadline, as if no header was sent.
        let (deadline, waited, _) =
            expiry_of(&layer, request(Some(value), Some(Duration::from_secs(1)))).await;
        assert_eq!(waited, Duration::from_secs(1), "value {value:?}");
        assert_eq!(deadline.unwrap().budget(), Duration::from_secs(1));
        // A fast handler answers normally.
        let fast = layer.layer(service_fn(|_: http::Request<()>| async {
            Ok::<_, Infallible>("ok")
        }));
        assert_eq!(
            fast.oneshot(request(Some(value), None)).await.unwrap(),
            "ok"
        );
        assert_eq!(
            *recorder.malformed.lock().unwrap(),
            vec![("api".to_owned(), "grpc-timeout"); 2],
            "value {value:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_plain_request_type_gets_the_default_or_a_closure_override() {
    let inner = service_fn(|ms: u64| async move {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok::<_, Infallible>(ms)
    });
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    assert_eq!(svc.clone().oneshot(99).await.unwrap(), 99);
    let err = svc.oneshot(101).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Elapsed>().unwrap().timeout(),
        Duration::from_millis(100)
    );

    // Odd numbers ask for 10ms.
    let layer = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .deadline_source(|ms: &u64| (ms % 2 == 1).then_some(Duration::from_millis(10)))
        .build()
        .unwrap();
    let svc = layer.layer(inner);
    assert_eq!(svc.clone().oneshot(50).await.unwrap(), 50);
    let start = Instant::now();
    let err = svc.oneshot(51).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    assert!(err.is::<Elapsed>());
}

/// Sets a flag when dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn on_expiry_the_inner_future_is_dropped_before_the_error_is_returned() {
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let mut svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(service_fn(move |_: ()| {
            let guard = DropFlag(flag.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
                Ok::<_, Infallible>(())
            }
        }));
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(()));
    let err = (&mut fut).await.unwrap_err();
    assert!(err.is::<Elapsed>());
    // The response future still exists, but the call it wrapped is gone.
    assert!(dropped.load(Ordering::SeqCst));
    // Polling again answers the same way instead of panicking.
    let again = std::future::poll_fn(|cx| fut.as_mut().poll(cx)).await;
    assert!(again.unwrap_err().is::<Elapsed>());
}

#[test]
fn a_finished_call_polled_again_answers_an_error_without_polling_the_service() {
    let mut svc = plain_layer(Duration::from_secs(1)).layer(service_fn(|x: u64| async move {
        Ok::<_, Infallible>(x + 1)
    }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let mut fut = pin!(svc.call(41));
    assert!(matches!(fut.as_mut().poll(&mut cx), Poll::Ready(Ok(42))));
    // An `async` block resumed after completion panics: the layer answers
    // instead of polling it, every time.
    for _ in 0..2 {
        let Poll::Ready(Err(again)) = fut.as_mut().poll(&mut cx) else {
            panic!("a poll after completion did not answer an error");
        };
        assert_eq!(
            again.to_string(),
            "timeout response future polled after completion"
        );
    }
}

#[test]
fn a_call_ready_on_its_first_poll_needs_no_timer_and_no_runtime() {
    // No tokio runtime here: creating a timer would panic. The call
    // completes because the timer is never created.
    let mut svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(service_fn(|x: u64| {
            std::future::ready(Ok::<_, Infallible>(x + 1))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let fut = svc.call(41);
    assert!(!fut.is_timer_started());
    let mut fut = pin!(fut);
    match fut.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(answer)) => assert_eq!(answer, 42),
        other => panic!("expected Ready(Ok), got {other:?}"),
    }
    assert!(!fut.is_timer_started());
}

#[tokio::test(start_paused = true)]
async fn the_timer_starts_when_the_call_first_waits() {
    let mut svc = TimeoutLayer::builder()
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async {
            tokio::time::sleep(Duration::from_millis(600)).await;
            Ok::<_, Infallible>(())
        }));
    svc.ready().await.unwrap();
    let mut fut = pin!(svc.call(()));
    // Time that passes before the first poll does not count.
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!fut.is_timer_started());
    let first = std::future::poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    assert!(first.is_pending());
    assert!(fut.is_timer_started());
    tokio::time::advance(Duration::from_millis(600)).await;
    fut.await.unwrap();
}

#[derive(Debug)]
struct Boom;

impl std::fmt::Display for Boom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("boom")
    }
}

impl std::error::Error for Boom {}

/// What a handler behind `outer` and `inner` timeouts reads from
/// `Deadline::current()`: in `call`, in its first poll, and after waiting
/// 200 ms, in milliseconds.
async fn deadlines_seen_through(outer: Duration, inner: Duration) -> Vec<Option<u128>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let read = || Deadline::current().map(|deadline| deadline.budget().as_millis());
    let handler = service_fn(move |_: u64| {
        log.lock().unwrap().push(read());
        let log = log.clone();
        async move {
            log.lock().unwrap().push(read());
            tokio::time::sleep(Duration::from_millis(200)).await;
            log.lock().unwrap().push(read());
            Ok::<_, Infallible>(())
        }
    });
    let svc = plain_layer(outer).layer(plain_layer(inner).layer(handler));
    // A neighbour in the same task, polled outside the call, sees nothing.
    let neighbour = async {
        let mut seen = Vec::new();
        for _ in 0..3 {
            seen.push(read());
            tokio::time::sleep(Duration::from_millis(90)).await;
        }
        seen
    };
    let (served, neighbour) = tokio::join!(svc.oneshot(1), neighbour);
    served.unwrap();
    assert_eq!(neighbour, [None, None, None]);
    assert_eq!(read(), None, "nothing is left set");
    seen.lock().unwrap().clone()
}

#[tokio::test(start_paused = true)]
async fn nested_timeouts_publish_the_tighter_deadline_as_it_counts_down() {
    let counting = [Some(1000), Some(1000), Some(800)];
    // The outer one tighter, then the inner one.
    assert_eq!(
        deadlines_seen_through(Duration::from_secs(1), Duration::from_secs(5)).await,
        counting
    );
    assert_eq!(
        deadlines_seen_through(Duration::from_secs(5), Duration::from_secs(1)).await,
        counting
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_made_after_waiting_sees_what_is_left_of_the_outer_deadline() {
    // A handler that waits, then calls a client through a timeout of its
    // own: the client sees the tighter of its fresh budget and what is
    // left of the server's.
    let svc = plain_layer(Duration::from_secs(1)).layer(service_fn(
        move |client_timeout: u64| async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            let downstream = plain_layer(Duration::from_millis(client_timeout)).layer(service_fn(
                |_: ()| async {
                    Ok::<_, Infallible>(Deadline::current().map(|deadline| deadline.budget()))
                },
            ));
            downstream.oneshot(()).await
        },
    ));
    let left = |ms| Some(Duration::from_millis(ms));
    assert_eq!(svc.clone().oneshot(2000).await.unwrap(), left(300));
    assert_eq!(svc.oneshot(100).await.unwrap(), left(100));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deadline_follows_the_call_across_worker_threads() {
    let svc = plain_layer(Duration::from_secs(60)).layer(service_fn(|_: u64| async {
        let mut seen = Vec::new();
        for _ in 0..20 {
            seen.push(Deadline::current().is_some());
            tokio::task::yield_now().await;
        }
        Ok::<_, Infallible>(seen)
    }));
    let calls: Vec<_> = (0..8)
        .map(|n| tokio::spawn(svc.clone().oneshot(n)))
        .collect();
    for call in calls {
        assert!(call.await.unwrap().unwrap().iter().all(|seen| *seen));
    }
    let outside = tokio::spawn(async { Deadline::current() }).await.unwrap();
    assert_eq!(outside, None);
}

#[tokio::test(start_paused = true)]
async fn a_panicking_inner_service_leaves_no_deadline_behind() {
    let layer = plain_layer(Duration::from_secs(1));
    let mut in_call = layer.layer(service_fn(
        |_: u64| -> std::future::Ready<Result<(), Infallible>> {
            panic!("the inner call panicked")
        },
    ));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| in_call.call(1)));
    assert!(caught.is_err());
    assert_eq!(Deadline::current(), None);

    let mut in_poll = layer.layer(service_fn(|_: u64| async {
        tokio::task::yield_now().await;
        panic!("the inner future panicked");
        #[allow(unreachable_code)]
        Ok::<(), Infallible>(())
    }));
    let mut call = pin!(in_poll.call(1));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(call.as_mut().poll(&mut cx).is_pending());
    let caught =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| call.as_mut().poll(&mut cx)));
    assert!(caught.is_err());
    assert_eq!(Deadline::current(), None);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_are_not_timeouts() {
    let recorder = Arc::new(Recorder::default());
    let layer = TimeoutLayer::builder()
        .metrics(Metrics::from_arc(recorder.clone()))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|_: ()| async {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Err::<(), _>(Boom)
    }));
    let err: BoxError = svc.oneshot(()).await.unwrap_err();
    assert!(err.is::<Boom>());
    assert!(recorder.timed_out.lock().unwrap().is_empty());
}

#[tokio::test]
async fn readiness_errors_pass_through() {
    struct NeverReady;
    impl Service<()> for NeverReady {
        type Response = ();
        type Error = Boom;
        type Future = std::future::Ready<Result<(), Boom>>;
        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Boom>> {
            Poll::Ready(Err(Boom))
        }
        fn call(&mut self, _: ()) -> Self::Future {
            std::future::ready(Ok(()))
        }
    }
    let svc = TimeoutLayer::builder().build().unwrap().layer(NeverReady);
    assert!(svc.oneshot(()).await.unwrap_err().is::<Boom>());
}

#[test]
fn invalid_configuration_is_a_typed_error() {
    let err = TimeoutLayer::builder()
        .name("api")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "timeout");
    assert_eq!(
        err.to_string(),
        r#"timeout "api": timeout = 0ns, expected x > 0s"#
    );
    let err = TimeoutLayer::builder().name("").build().unwrap_err();
    assert_eq!(err.field(), "name");
}

#[tokio::test(start_paused = true)]
async fn every_clone_and_route_shares_one_policy() {
    let counter = Arc::new(AtomicUsize::new(0));
    #[derive(Debug)]
    struct Count(Arc<AtomicUsize>);
    impl MetricsSink for Count {
        fn record(&self, event: &Event<'_>) {
            if let Event::TimedOut {
                policy: "shared", ..
            } = event
            {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let layer = TimeoutLayer::builder()
        .name("shared")
        .timeout(Duration::from_millis(5))
        .metrics(Metrics::new(Count(counter.clone())))
        .build()
        .unwrap();
    let slow = service_fn(|_: ()| std::future::pending::<Result<(), Infallible>>());
    let route_a = layer.layer(slow);
    let route_b = layer.clone().layer(slow);
    route_a.clone().oneshot(()).await.unwrap_err();
    route_a.oneshot(()).await.unwrap_err();
    route_b.oneshot(()).await.unwrap_err();
    assert_eq!(counter.load(Ordering::SeqCst), 3);
}

/// Returns `Pending` once (waking itself), then `Ready`.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            Poll::Ready(Ok(1))
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

#[test]
fn a_ready_call_allocates_nothing() {
    let mut svc = TimeoutLayer::builder()
        .metrics(Metrics::new(Recorder::default()))
        .build()
        .unwrap()
        .layer(service_fn(|x: u64| {
            std::future::ready(Ok::<_, Infallible>(x))
        }));
    let mut cx = Context::from_waker(Waker::noop());
    for round in 0..2 {
        let allocations = allocation_counter::measure(|| {
            for _ in 0..10 {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let call = pin!(svc.call(3));
                assert!(matches!(call.poll(&mut cx), Poll::Ready(Ok(3))));
            }
        });
        if round == 1 {
            assert_eq!(allocations.count_total, 0);
        }
    }
}

#[test]
fn a_call_that_waits_allocates_no_more_than_the_bare_service() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let bare = service_fn(|_: u64| PendingOnce(false));
    let timed = TimeoutLayer::builder().build().unwrap().layer(bare);
    let mut counts = Vec::new();
    for round in 0..2 {
        let bare_count = allocation_counter::measure(|| {
            rt.block_on(async {
                let mut svc = bare;
                svc.ready().await.unwrap();
                svc.call(1).await.unwrap();
            });
        });
        let timed_count = allocation_counter::measure(|| {
            rt.block_on(async {
                let mut svc = timed.clone();
                svc.ready().await.unwrap();
                svc.call(1).await.unwrap();
            });
        });
        if round == 1 {
            counts.push((bare_count.count_total, timed_count.count_total));
        }
    }
    // The first round's timer slot is reused by the second.
    let (bare, timed) = counts[0];
    assert_eq!(timed, bare, "the timer allocates nothing");
}

#[test]
fn the_http_flavour_allocates_only_to_insert_the_deadline_extension() {
    let handler = service_fn(|_: http::Request<()>| std::future::ready(Ok::<_, Infallible>(())));
    let mut cx = Context::from_waker(Waker::noop());
    let mut measure = |source: HttpDeadline| {
        let mut svc = TimeoutLayer::builder()
            .deadline_source(source)
            .build()
            .unwrap()
            .layer(handler);
        let mut counts = Vec::new();
        for _ in 0..2 {
            let req = request(Some(b"5S"), Some(Duration::from_secs(1)));
            let allocations = allocation_counter::measure(|| {
                assert!(svc.poll_ready(&mut cx).is_ready());
                let call = pin!(svc.call(req));
                assert!(call.poll(&mut cx).is_ready());
            });
            counts.push(allocations.count_total);
        }
        counts[1]
    };
    assert_eq!(measure(HttpDeadline::new()), 0);
    // One box for the Deadline in a map that already exists (the request
    // carries a RequestTimeout).
    assert_eq!(measure(HttpDeadline::new().expose_deadline(true)), 1);
}

/// A call that always has work ready spends its task's whole cooperative
/// budget on every poll, which leaves none for tokio's timer: the timeout
/// must still see its deadline pass. Real time on a current-thread
/// runtime (a paused clock never moves while the task stays busy),
/// bounded by an outer timeout.
#[tokio::test]
async fn a_call_that_spends_its_whole_budget_still_times_out() {
    let svc = plain_layer(Duration::from_millis(20)).layer(service_fn(|()| async {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        loop {
            tx.send(()).unwrap();
            rx.recv().await;
        }
        #[allow(unreachable_code)]
        Ok::<(), Infallible>(())
    }));
    let outcome = tokio::time::timeout(Duration::from_secs(5), svc.oneshot(()))
        .await
        .expect("the layer's 20 ms deadline ends the call");
    assert!(outcome.unwrap_err().is::<Elapsed>());
}

//! Behaviour of the chaos layer: determinism, each fault kind, overrides,
//! virtual-time delays and the cost of a disabled layer.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_chaos::{ChaosLayer, Fault, FaultOverride, HttpFaults, InjectedFault, PanicPoint};
use palisade_core::{Event, Metrics, MetricsSink};
use tower::{Layer, Service, ServiceExt, service_fn};

type Echo = tower::util::ServiceFn<fn(u32) -> std::future::Ready<Result<u32, std::io::Error>>>;

fn echo() -> Echo {
    service_fn(|x: u32| std::future::ready(Ok(x)))
}

fn poll_once<F: Future>(fut: F) -> Poll<F::Output> {
    let mut fut = pin!(fut);
    fut.as_mut().poll(&mut Context::from_waker(Waker::noop()))
}

/// Outcome of one request as a letter: o(k), e(rror), p(anic).
fn run_one(layer: &ChaosLayer, i: u32) -> char {
    let mut svc = layer.layer(echo());
    let result = caught(|| poll_once(svc.call(i)));
    match result {
        Err(_) => 'p',
        Ok(Poll::Ready(Ok(v))) => {
            assert_eq!(v, i);
            'o'
        }
        Ok(Poll::Ready(Err(e))) => {
            assert!(e.is::<InjectedFault>(), "{e}");
            'e'
        }
        Ok(Poll::Pending) => unreachable!("no latency configured"),
    }
}

fn quiet_panics() {
    // Injected panics are expected here; keep the test output readable.
    palisade_core::panic::install_hook();
}

/// Catches an injected panic as palisade's own layers do, without printing
/// it: the panics here are expected.
fn caught<T>(f: impl FnOnce() -> T) -> std::thread::Result<T> {
    let quiet = palisade_core::panic::CaptureOptions {
        backtrace: false,
        print: false,
    };
    palisade_core::panic::catch(quiet, f)
}

#[test]
fn same_seed_same_faults_different_seed_different_faults() {
    quiet_panics();
    let make = |seed| {
        ChaosLayer::builder()
            .seed(seed)
            .error_rate(0.2)
            .panic_rate(0.2)
            .build()
            .unwrap()
    };
    let run = |layer: &ChaosLayer| -> String { (0..200).map(|i| run_one(layer, i)).collect() };
    let (a, b, c) = (make(11), make(11), make(12));
    let (ra, rb, rc) = (run(&a), run(&b), run(&c));
    assert_eq!(ra, rb);
    assert_ne!(ra, rc);
    assert!(ra.contains('o') && ra.contains('e') && ra.contains('p'));
    let stats = a.stats();
    assert_eq!(stats.errors as usize, ra.matches('e').count());
    assert_eq!(stats.panics as usize, ra.matches('p').count());
    assert_eq!(stats.requests, 200);
}

#[test]
fn panic_point_call_panics_before_any_future_exists() {
    quiet_panics();
    let layer = ChaosLayer::builder()
        .panic_rate(1.0)
        .panic_point(PanicPoint::Call)
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let payload = caught(|| {
        let _future = svc.call(1);
    })
    .unwrap_err();
    assert_eq!(
        &*palisade_core::panic::payload_message(&*payload),
        r#"chaos "chaos": injected panic"#
    );
}

#[tokio::test(start_paused = true)]
async fn a_panic_in_call_is_not_delayed_nor_counted_as_delayed() {
    quiet_panics();
    let layer = ChaosLayer::builder()
        .panic_rate(1.0)
        .latency(Duration::from_secs(5), Duration::from_secs(5))
        .panic_point(PanicPoint::Call)
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let start = tokio::time::Instant::now();
    for i in 0..3 {
        let result = caught(|| {
            let _future = svc.call(i);
        });
        assert!(result.is_err(), "call {i} did not panic");
    }
    assert_eq!(start.elapsed(), Duration::ZERO);
    let stats = layer.stats();
    assert_eq!((stats.requests, stats.panics), (3, 3));
    assert_eq!(stats.delayed, 0);
    assert_eq!(stats.total_delay, Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_panic_on_poll_comes_after_the_delay() {
    quiet_panics();
    let layer = ChaosLayer::builder()
        .panic_rate(1.0)
        .latency(Duration::from_secs(5), Duration::from_secs(5))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut call = pin!(svc.call(1));
    assert!(poll_once(call.as_mut()).is_pending());
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(caught(|| poll_once(call.as_mut())).is_err());
    let stats = layer.stats();
    assert_eq!((stats.panics, stats.delayed), (1, 1));
    assert_eq!(stats.total_delay, Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_request_dropped_before_its_first_poll_counts_no_fault() {
    let panics = ChaosLayer::builder()
        .panic_rate(1.0)
        .latency(Duration::from_secs(1), Duration::from_secs(1))
        .build()
        .unwrap();
    let errors = ChaosLayer::builder().error_rate(1.0).build().unwrap();
    for layer in [&panics, &errors] {
        drop(layer.layer(echo()).call(1));
        let stats = layer.stats();
        assert_eq!(stats.requests, 1, "{layer:?}");
        assert_eq!((stats.panics, stats.errors), (0, 0), "{layer:?}");
        assert_eq!(stats.delayed, 0, "{layer:?}");
        assert_eq!(stats.total_delay, Duration::ZERO, "{layer:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_delay_cut_short_counts_only_the_time_waited() {
    let layer = ChaosLayer::builder()
        .panic_rate(1.0)
        .latency(Duration::from_secs(1), Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut call = Box::pin(svc.call(1));
    assert!(poll_once(call.as_mut()).is_pending());
    let stats = layer.stats();
    assert_eq!((stats.delayed, stats.total_delay), (1, Duration::ZERO));

    tokio::time::advance(Duration::from_millis(300)).await;
    drop(call);
    let stats = layer.stats();
    assert_eq!(stats.delayed, 1);
    assert_eq!(stats.total_delay, Duration::from_millis(300));
    assert_eq!(stats.panics, 0, "the panic never came");
}

#[tokio::test(start_paused = true)]
async fn the_total_delay_is_the_time_waited_on_the_clock() {
    // tokio's timer rounds a deadline up to its next millisecond: 150 µs
    // drawn is a 1 ms wait, and the stats count the wait.
    let layer = ChaosLayer::builder()
        .latency(Duration::from_micros(150), Duration::from_micros(150))
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    layer.layer(echo()).oneshot(1).await.unwrap();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_micros(150), "{waited:?}");
    assert_eq!(layer.stats().total_delay, waited);
}

#[tokio::test(start_paused = true)]
async fn a_delay_past_the_end_of_the_clock_starts_without_overflow() {
    let layer = ChaosLayer::builder()
        .latency(Duration::MAX, Duration::MAX)
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut call = Box::pin(svc.call(1));
    assert!(poll_once(call.as_mut()).is_pending());
    tokio::time::advance(Duration::from_secs(1)).await;
    drop(call);
    let stats = layer.stats();
    assert_eq!(stats.delayed, 1);
    assert_eq!(stats.total_delay, Duration::from_secs(1));
}

#[test]
fn panic_point_poll_panics_on_first_poll() {
    quiet_panics();
    let layer = ChaosLayer::builder().panic_rate(1.0).build().unwrap();
    let mut svc = layer.layer(echo());
    let fut = svc.call(1);
    assert!(caught(|| poll_once(fut)).is_err());
}

#[tokio::test(start_paused = true)]
async fn delays_follow_virtual_time() {
    let layer = ChaosLayer::builder()
        .latency(Duration::from_millis(100), Duration::from_millis(100))
        .build()
        .unwrap();
    let mut svc = layer.layer(echo());
    let mut call = pin!(svc.call(5));
    assert!(poll_once(call.as_mut()).is_pending());
    tokio::time::advance(Duration::from_millis(99)).await;
    assert!(
        poll_once(call.as_mut()).is_pending(),
        "ready before the delay"
    );
    tokio::time::advance(Duration::from_millis(1)).await;
    match poll_once(call.as_mut()) {
        Poll::Ready(Ok(5)) => {}
        other => panic!("expected the answer after 100ms, got {other:?}"),
    }
    assert_eq!(layer.stats().delayed, 1);
    assert_eq!(layer.stats().total_delay, Duration::from_millis(100));
}

#[tokio::test(start_paused = true)]
async fn spikes_add_to_the_delay_of_some_requests() {
    let layer = ChaosLayer::builder()
        .seed(3)
        .latency_spikes(0.5, Duration::from_secs(2))
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let mut slow = 0;
    for i in 0..100 {
        let start = tokio::time::Instant::now();
        svc.clone().oneshot(i).await.unwrap();
        match start.elapsed() {
            d if d == Duration::ZERO => {}
            d if d == Duration::from_secs(2) => slow += 1,
            d => panic!("unexpected delay {d:?}"),
        }
    }
    assert_eq!(slow, layer.stats().delayed);
    assert!((30..70).contains(&slow), "{slow}");
}

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl MetricsSink for Recorded {
    fn record(&self, event: &Event<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}

fn request(header: Option<&str>) -> http::Request<()> {
    let mut b = http::Request::builder().uri("/");
    if let Some(h) = header {
        b = b.header("x-palisade-chaos", h);
    }
    b.body(()).unwrap()
}

fn http_echo() -> impl Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = std::io::Error,
    Future = std::future::Ready<Result<http::Response<()>, std::io::Error>>,
> + Clone {
    service_fn(|_req: http::Request<()>| std::future::ready(Ok(http::Response::new(()))))
}

#[tokio::test]
async fn overrides_force_faults_even_when_disabled() {
    let sink = Arc::new(Recorded::default());
    let layer = ChaosLayer::builder()
        .enabled(false)
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    let ext_only = layer.layer(http_echo()).http(HttpFaults::new());
    let with_header = layer
        .layer(http_echo())
        .http(HttpFaults::new().with_header());

    // Disabled, no override: untouched and uncounted.
    assert!(ext_only.clone().oneshot(request(None)).await.is_ok());
    assert_eq!(layer.stats().requests, 0);

    // The extension forces an error.
    let mut req = request(None);
    req.extensions_mut().insert(FaultOverride(Fault::error()));
    let err = ext_only.clone().oneshot(req).await.unwrap_err();
    assert!(err.is::<InjectedFault>());

    // The header is ignored unless enabled.
    assert!(
        ext_only
            .clone()
            .oneshot(request(Some("error")))
            .await
            .is_ok()
    );
    let err = with_header
        .clone()
        .oneshot(request(Some("error")))
        .await
        .unwrap_err();
    assert!(err.is::<InjectedFault>());

    // A malformed header is reported and ignored.
    assert!(
        with_header
            .clone()
            .oneshot(request(Some("explode")))
            .await
            .is_ok()
    );
    let events = sink.0.lock().unwrap().clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].contains("MalformedHeader"), "{events:?}");
    assert!(events[0].contains("x-palisade-chaos"), "{events:?}");
    assert_eq!(layer.stats().errors, 2);

    // Two lines of the header are one list, as HTTP reads them.
    let two_lines = |first: &'static str, second: &'static str| {
        let mut req = request(Some(first));
        req.headers_mut()
            .append("x-palisade-chaos", http::HeaderValue::from_static(second));
        req
    };
    let err = with_header
        .clone()
        .oneshot(two_lines("none", "error"))
        .await
        .unwrap_err();
    assert!(err.is::<InjectedFault>());
    assert_eq!(layer.stats().errors, 3);
    // A malformed second line makes the whole header malformed.
    assert!(
        with_header
            .clone()
            .oneshot(two_lines("error", "explode"))
            .await
            .is_ok()
    );
    assert_eq!(sink.0.lock().unwrap().len(), 2);
    assert_eq!(layer.stats().errors, 3);
}

#[tokio::test]
async fn switching_on_and_off_at_run_time() {
    let layer = ChaosLayer::builder()
        .error_rate(1.0)
        .enabled(false)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    assert!(svc.clone().oneshot(1).await.is_ok());
    layer.set_enabled(true);
    assert!(svc.clone().oneshot(1).await.is_err());
    layer.set_enabled(false);
    assert!(svc.clone().oneshot(1).await.is_ok());
    assert_eq!(layer.stats().requests, 1);
}

#[test]
fn a_disabled_or_idle_layer_allocates_nothing() {
    for layer in [
        ChaosLayer::disabled(),
        ChaosLayer::builder().build().unwrap(),
    ] {
        let mut svc = layer.layer(echo());
        let info = allocation_counter::measure(|| {
            for i in 0..1000 {
                assert!(matches!(poll_once(svc.call(i)), Poll::Ready(Ok(v)) if v == i));
            }
        });
        assert_eq!(info.count_total, 0, "{layer:?}: {info:?}");
    }
    let control = allocation_counter::measure(|| {
        std::hint::black_box(Box::new(0_u8));
    });
    assert_eq!(control.count_total, 1);
}

proptest::proptest! {
    #[test]
    fn the_header_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
        let _ = palisade_chaos::parse_header(&bytes);
    }

    #[test]
    fn well_formed_headers_parse(
        error in proptest::bool::ANY,
        panic in proptest::bool::ANY,
        delay_ms in proptest::option::of(0_u64..60_000),
    ) {
        let mut items = Vec::new();
        if error { items.push("error".to_owned()); }
        if panic { items.push("panic".to_owned()); }
        if let Some(ms) = delay_ms { items.push(format!("delay={ms}ms")); }
        if items.is_empty() { items.push("none".to_owned()); }
        let parsed = palisade_chaos::parse_header(items.join(", ").as_bytes());
        let expected = Fault {
            error,
            panic,
            delay: Duration::from_millis(delay_ms.unwrap_or(0)),
        };
        proptest::prop_assert_eq!(parsed, Some(expected));
    }
}

#[tokio::test]
async fn a_layer_built_for_http_forces_the_faults_requests_ask_for() {
    let chaos = ChaosLayer::disabled();
    let plain = tower::ServiceBuilder::new()
        .layer(chaos.clone())
        .service(http_echo());
    let http = tower::ServiceBuilder::new()
        .layer(chaos.http(HttpFaults::new().with_header()))
        .service(http_echo());

    // The plain layer reads neither the extension nor the header.
    let mut req = request(Some("error"));
    req.extensions_mut().insert(FaultOverride(Fault::error()));
    assert!(plain.clone().oneshot(req).await.is_ok());
    assert_eq!(chaos.stats().requests, 0);

    // The HTTP layer reads both, and counts in the policy it came from.
    let mut req = request(None);
    req.extensions_mut().insert(FaultOverride(Fault::error()));
    let err = http.clone().oneshot(req).await.unwrap_err();
    assert!(err.is::<InjectedFault>());
    let err = http
        .clone()
        .oneshot(request(Some("error")))
        .await
        .unwrap_err();
    assert!(err.is::<InjectedFault>());
    assert!(http.clone().oneshot(request(None)).await.is_ok());
    assert_eq!(chaos.stats().errors, 2);

    // Switching the policy on, through either layer, reaches the services
    // of both: with every request drawn to fail, both fail.
    let always = ChaosLayer::builder()
        .enabled(false)
        .error_rate(1.0)
        .build()
        .unwrap();
    let plain = tower::ServiceBuilder::new()
        .layer(always.clone())
        .service(http_echo());
    let http_layer = always.http(HttpFaults::new());
    let http = tower::ServiceBuilder::new()
        .layer(http_layer.clone())
        .service(http_echo());
    assert!(plain.clone().oneshot(request(None)).await.is_ok());
    http_layer.chaos().set_enabled(true);
    assert!(plain.oneshot(request(None)).await.is_err());
    assert!(http.oneshot(request(None)).await.is_err());
    assert_eq!(always.stats().errors, 2);
}

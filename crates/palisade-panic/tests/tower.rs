//! The tower flavour: panics in `poll_ready`, in `call` and in any poll of
//! the response future become `Panicked` errors.

mod support;

use std::future::{Ready, ready};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use palisade_core::{LayerKind, Metrics, RejectReason, find_rejection};
use palisade_panic::error::{BoxError, Panicked};
use palisade_panic::{CatchPanic, CatchPanicLayer};
use support::{PanicOnPoll, PanicSink, panicked, poll_once};
use tower::{Layer, Service, ServiceExt, service_fn};

fn layer(name: &str, sink: &Arc<PanicSink>) -> CatchPanicLayer {
    CatchPanicLayer::builder()
        .name(name)
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn a_panic_in_call_becomes_an_error_and_the_service_keeps_serving() {
    let sink = Arc::new(PanicSink::default());
    let line = line!() + 3;
    let mut svc = layer("orders", &sink).layer(service_fn(|id: u32| {
        if id == 0 {
            panic!("id {id} is reserved");
        }
        ready(Ok::<_, std::io::Error>(id * 2))
    }));

    let err = svc.ready().await.unwrap().call(0).await.unwrap_err();
    let p = panicked(&err);
    assert_eq!(p.message(), "id 0 is reserved");
    assert_eq!(p.policy().as_str(), "orders");
    let location = p
        .location()
        .expect("the palisade hook recorded the location");
    assert!(location.file().ends_with("tower.rs"), "{location}");
    assert_eq!(location.line(), line);
    assert!(
        p.backtrace().is_some(),
        "backtraces are captured by default"
    );

    assert_eq!(svc.ready().await.unwrap().call(21).await.unwrap(), 42);
    assert_eq!(
        sink.events(),
        vec![support::Caught {
            policy: "orders".into(),
            message: "id 0 is reserved".into(),
            line: Some(line),
        }]
    );
}

#[tokio::test]
async fn a_panic_on_the_first_poll_drops_the_inner_future() {
    let sink = Arc::new(PanicSink::default());
    let (future, dropped) = PanicOnPoll::new(1);
    let mut slot = Some(future);
    let mut svc = layer("first-poll", &sink).layer(service_fn(move |_: ()| slot.take().unwrap()));

    let mut response = svc.call(());
    match poll_once(&mut response) {
        Poll::Ready(Err(err)) => assert_eq!(panicked(&err).message(), "panic on poll 1"),
        other => panic!("expected a caught panic, got {other:?}"),
    }
    assert!(
        dropped.load(Ordering::SeqCst),
        "dropped right after the panic"
    );
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn a_panic_on_a_later_poll_is_caught_too() {
    let sink = Arc::new(PanicSink::default());
    let (future, dropped) = PanicOnPoll::new(3);
    let mut slot = Some(future);
    let mut svc = layer("later-poll", &sink).layer(service_fn(move |_: ()| slot.take().unwrap()));

    let mut response = svc.call(());
    assert!(poll_once(&mut response).is_pending());
    assert!(poll_once(&mut response).is_pending());
    assert!(!dropped.load(Ordering::SeqCst));
    assert_eq!(sink.count(), 0);
    match poll_once(&mut response) {
        Poll::Ready(Err(err)) => {
            let p = panicked(&err);
            assert_eq!(p.message(), "panic on poll 3");
            assert!(p.location().unwrap().file().ends_with("mod.rs"));
        }
        other => panic!("expected a caught panic, got {other:?}"),
    }
    assert!(dropped.load(Ordering::SeqCst));
    assert_eq!(sink.count(), 1);

    // Driven by a runtime, the same thing happens through the waker.
    let (future, _) = PanicOnPoll::new(5);
    let mut slot = Some(future);
    let svc = layer("later-poll", &sink).layer(service_fn(move |_: ()| slot.take().unwrap()));
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(panicked(&err).message(), "panic on poll 5");
}

#[tokio::test]
async fn non_string_payloads_are_described_by_type() {
    #[derive(Debug)]
    struct Custom;

    let sink = Arc::new(PanicSink::default());
    let svc = layer("payloads", &sink).layer(service_fn(|kind: u8| async move {
        match kind {
            0 => std::panic::panic_any(42_u32),
            1 => std::panic::panic_any(Custom),
            _ => std::panic::panic_any(String::from("owned message")),
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    }));

    let messages: Vec<String> = futures_messages(&svc, [0, 1, 2]).await;
    assert_eq!(
        messages,
        [
            "panic payload of type u32",
            "panic payload of a non-string type",
            "owned message"
        ]
    );
    assert_eq!(sink.count(), 3);
}

async fn futures_messages<S>(svc: &S, kinds: [u8; 3]) -> Vec<String>
where
    S: Service<u8, Error = BoxError> + Clone,
    S::Response: std::fmt::Debug,
{
    let mut out = Vec::new();
    for kind in kinds {
        let err = svc.clone().oneshot(kind).await.unwrap_err();
        out.push(panicked(&err).message().to_owned());
    }
    out
}

#[tokio::test]
async fn nested_layers_inner_catches_and_outer_sees_an_ordinary_error() {
    let inner_sink = Arc::new(PanicSink::default());
    let outer_sink = Arc::new(PanicSink::default());
    let service = service_fn(|_: ()| async {
        if true {
            panic!("deep");
        }
        Ok::<(), std::io::Error>(())
    });
    let svc = layer("outer", &outer_sink).layer(layer("inner", &inner_sink).layer(service));

    let err = svc.oneshot(()).await.unwrap_err();
    let p = panicked(&err);
    assert_eq!(p.policy().as_str(), "inner");
    assert_eq!(p.message(), "deep");
    let rejection = find_rejection(&*err).unwrap();
    assert_eq!(rejection.layer(), LayerKind::PanicCatch);
    assert_eq!(rejection.reason(), RejectReason::Panicked);
    assert_eq!(inner_sink.count(), 1);
    assert_eq!(
        outer_sink.count(),
        0,
        "the outer layer saw an error, not a panic"
    );
}

#[derive(Clone)]
struct PanicsWhenReady;

impl Service<()> for PanicsWhenReady {
    type Response = ();
    type Error = std::io::Error;
    type Future = Ready<Result<(), std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        panic!("not ready, ever")
    }

    fn call(&mut self, _: ()) -> Self::Future {
        ready(Ok(()))
    }
}

#[tokio::test]
async fn a_panic_in_poll_ready_becomes_an_error() {
    let sink = Arc::new(PanicSink::default());
    let svc: CatchPanic<PanicsWhenReady> = layer("ready", &sink).layer(PanicsWhenReady);
    let err = svc.oneshot(()).await.unwrap_err();
    assert_eq!(panicked(&err).message(), "not ready, ever");
    assert_eq!(sink.count(), 1);
}

#[tokio::test]
async fn inner_errors_pass_through_untouched() {
    let sink = Arc::new(PanicSink::default());
    let svc = layer("errors", &sink).layer(service_fn(|_: ()| async {
        Err::<(), _>(std::io::Error::other("plain failure"))
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    assert!(!err.is::<Panicked>());
    assert_eq!(err.to_string(), "plain failure");
    assert_eq!(sink.count(), 0);
}

#[tokio::test]
async fn backtrace_capture_can_be_disabled() {
    let svc = CatchPanicLayer::builder()
        .backtrace(false)
        .build()
        .unwrap()
        .layer(service_fn(|_: ()| async {
            if true {
                panic!("no trace");
            }
            Ok::<(), std::io::Error>(())
        }));
    let err = svc.oneshot(()).await.unwrap_err();
    let p = panicked(&err);
    assert!(p.backtrace().is_none());
    assert!(p.location().is_some(), "the location is still recorded");
}

#[test]
fn the_builder_refuses_an_invalid_name() {
    let err = CatchPanicLayer::builder().name("").build().unwrap_err();
    assert_eq!(err.field(), "name");
    assert_eq!(err.layer(), LayerKind::PanicCatch);
    assert!(
        CatchPanicLayer::builder()
            .require_unwind(true)
            .build()
            .is_ok()
    );
    assert!(CatchPanicLayer::can_catch());
}

#[tokio::test]
async fn a_destructor_that_panics_never_escapes_the_layer() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use support::PanicOnDrop;

    let sink = Arc::new(PanicSink::default());
    let mut svc = layer("drops", &sink).layer(service_fn(|pending_polls: u32| PanicOnDrop {
        pending_polls,
    }));

    // Finished: the future is dropped as it completes, its panic is
    // contained and logged, and the call's result stands.
    let mut call = svc.ready().await.unwrap().call(0);
    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(&mut call)));
    assert!(matches!(polled, Ok(Poll::Ready(Ok(7)))));
    assert!(catch_unwind(AssertUnwindSafe(|| drop(call))).is_ok());

    // Cancelled while pending (a timeout above, a client gone): contained
    // and logged, never unwound into the caller.
    let mut call = svc.ready().await.unwrap().call(1);
    assert!(poll_once(&mut call).is_pending());
    assert!(catch_unwind(AssertUnwindSafe(|| drop(call))).is_ok());
}

/// A metrics backend with a bug: it panics on every caught panic, and
/// counts them.
#[derive(Debug, Default)]
struct PanicsOnReport(std::sync::atomic::AtomicUsize);

impl palisade_core::MetricsSink for PanicsOnReport {
    fn record(&self, event: &palisade_core::Event<'_>) {
        if let palisade_core::Event::PanicCaught { .. } = event {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            panic!("the metrics backend failed");
        }
    }
}

#[tokio::test]
async fn a_sink_that_panics_on_the_report_lets_no_panic_out() {
    use std::panic::{AssertUnwindSafe, catch_unwind};

    let sink = Arc::new(PanicsOnReport::default());
    let layer = CatchPanicLayer::builder()
        .name("reports")
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|_: u32| async {
        panic!("the handler failed");
        #[allow(unreachable_code)]
        Ok::<u32, std::io::Error>(0)
    }));
    let mut call = Box::pin(svc.ready().await.unwrap().call(1));
    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(&mut call)));
    let Ok(Poll::Ready(Err(err))) = polled else {
        panic!("the panic became the call's error");
    };
    assert_eq!(panicked(&err).message(), "the handler failed");
    assert_eq!(
        sink.0.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the sink panicked"
    );
}

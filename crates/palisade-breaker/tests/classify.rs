//! Outcome classification through the breaker: HTTP status codes, gRPC
//! status in headers or trailers (recorded at the end of the body), bodies
//! dropped early, and a user predicate.

mod common;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use palisade_breaker::CircuitBreakerLayer;
use palisade_core::classify::{ClassifyFn, GrpcErrorsAsFailures, ServerErrorsAsFailures};
use palisade_core::{BoxError, CircuitState, Outcome};
use tower::{Layer, ServiceExt, service_fn};

/// A body of fixed frames.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(Ok))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }
}

fn grpc(status: &'static str) -> Response<Frames> {
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static(status));
    Response::builder()
        .header("content-type", "application/grpc")
        .body(Frames(VecDeque::from([
            Frame::data(Bytes::from_static(b"message")),
            Frame::trailers(trailers),
        ])))
        .unwrap()
}

#[tokio::test]
async fn server_errors_count_client_errors_do_not() {
    let layer = CircuitBreakerLayer::builder()
        .classifier(ServerErrorsAsFailures)
        .count_window(4)
        .minimum_calls(4)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: u16| async move {
        Ok::<_, BoxError>(Response::builder().status(status).body(()).unwrap())
    }));
    for status in [200, 404, 503] {
        let res = svc.clone().oneshot(status).await.unwrap();
        assert_eq!(res.status().as_u16(), status, "the response passes through");
    }
    let counts = layer.handle().counts();
    assert_eq!((counts.calls, counts.failures), (3, 1));
    svc.clone().oneshot(500).await.unwrap();
    assert_eq!(layer.handle().state(), CircuitState::Open, "2 of 4 are 5xx");
}

#[tokio::test]
async fn grpc_status_is_recorded_when_the_trailers_arrive() {
    let events = common::Events::default();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcErrorsAsFailures::new())
        .metrics(events.metrics())
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: &'static str| async move {
        Ok::<_, BoxError>(grpc(status))
    }));

    let res = svc.clone().oneshot("14").await.unwrap(); // UNAVAILABLE
    assert_eq!(
        layer.handle().counts().calls,
        0,
        "nothing known before the trailers"
    );
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "14");
    assert_eq!(layer.handle().counts().failures, 1);

    // A body dropped before its trailers is a cancelled call: ignored.
    let res = svc.clone().oneshot("0").await.unwrap();
    drop(res);
    assert_eq!(layer.handle().counts().calls, 1);
    assert_eq!(
        events.count(|e| matches!(e, common::Seen::Completed(Outcome::Cancelled, _))),
        1
    );

    let res = svc.clone().oneshot("5").await.unwrap(); // NOT_FOUND: not a failure
    res.into_body().collect().await.unwrap();
    let counts = layer.handle().counts();
    assert_eq!((counts.calls, counts.failures), (2, 1));
    assert_eq!(layer.handle().state(), CircuitState::Open, "1 of 2 = 0.5");
}

#[tokio::test]
async fn a_dropped_grpc_probe_body_gives_its_slot_back() {
    let clock = palisade_core::ManualClock::new();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcErrorsAsFailures::new())
        .clock(clock.clock())
        .count_window(1)
        .minimum_calls(1)
        .open_wait(std::time::Duration::from_secs(1))
        .half_open_probes(1)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: &'static str| async move {
        Ok::<_, BoxError>(grpc(status))
    }));
    svc.clone()
        .oneshot("13")
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    assert_eq!(layer.handle().state(), CircuitState::Open);
    clock.advance(std::time::Duration::from_secs(1));
    let probe = svc.clone().oneshot("0").await.unwrap();
    assert_eq!(layer.handle().probes().admitted, 1);
    assert!(
        svc.clone().oneshot("0").await.is_err(),
        "the slot is held by the body"
    );
    drop(probe);
    assert_eq!(layer.handle().probes().admitted, 0);
    let probe = svc.clone().oneshot("0").await.unwrap();
    probe.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_user_predicate_decides() {
    let layer = CircuitBreakerLayer::builder()
        .classifier(ClassifyFn::new(|res: Result<&u32, &BoxError>| match res {
            Ok(n) if *n >= 100 => Outcome::Failure,
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Ignored,
        }))
        .count_window(10)
        .minimum_calls(10)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|n: u32| async move {
        if n == 0 {
            Err::<u32, BoxError>("zero".into())
        } else {
            Ok(n)
        }
    }));
    for n in [1, 150, 0] {
        let _ = svc.clone().oneshot(n).await;
    }
    let counts = layer.handle().counts();
    assert_eq!((counts.calls, counts.failures), (2, 1));
}

/// A load balancer answering for a dead backend (an HTML 503, no
/// `grpc-status`), then streams cut off without one: a gRPC client reads
/// UNAVAILABLE and UNKNOWN, and the breaker opens.
#[tokio::test]
async fn a_proxys_error_page_and_a_cut_off_stream_open_a_grpc_breaker() {
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcErrorsAsFailures::new())
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|proxy: bool| async move {
        let body = Frames(VecDeque::from([Frame::data(Bytes::from_static(
            b"<html>bad gateway</html>",
        ))]));
        let res = if proxy {
            Response::builder()
                .status(503)
                .header("content-type", "text/html")
        } else {
            Response::builder().header("content-type", "application/grpc")
        };
        Ok::<_, BoxError>(res.body(body).unwrap())
    }));
    let res = svc.clone().oneshot(true).await.unwrap();
    assert_eq!(layer.handle().counts().failures, 1, "decided at once");
    drop(res);
    let res = svc.clone().oneshot(false).await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(
        layer.handle().counts().failures,
        2,
        "the cut-off stream too"
    );
    assert_eq!(layer.handle().state(), CircuitState::Open);
}

#[tokio::test]
async fn a_classifier_answering_cancelled_is_ignored_even_when_cancellations_fail() {
    // A client that closed the connection (HTTP 499, say) mapped to
    // `Cancelled` by the user: an outcome a classifier gives as cancelled
    // is ignored; only a call dropped unfinished is the cancellation
    // `cancelled_as_failure` counts.
    let layer = CircuitBreakerLayer::builder()
        .cancelled_as_failure(true)
        .classifier(ClassifyFn::new(|res: Result<&u16, &BoxError>| match res {
            Ok(499) => Outcome::Cancelled,
            _ => Outcome::Success,
        }))
        .count_window(2)
        .minimum_calls(2)
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|n: u16| async move { Ok::<_, BoxError>(n) }));
    for _ in 0..2 {
        assert_eq!(svc.clone().oneshot(499).await.unwrap(), 499);
    }
    assert_eq!(layer.handle().state(), CircuitState::Closed);
    assert_eq!(layer.handle().counts().calls, 0);
}

#[tokio::test]
async fn a_grpc_stream_is_timed_to_its_answer_not_to_its_end() {
    // A watch-style call: the answer comes in 100 ms, its stream runs for
    // a minute and ends OK. It is not a slow call.
    let clock = palisade_core::ManualClock::new();
    let events = common::Events::default();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcErrorsAsFailures::new())
        .clock(clock.clock())
        .metrics(events.metrics())
        .count_window(1)
        .minimum_calls(1)
        .slow_call_duration(std::time::Duration::from_secs(1))
        .slow_call_rate_threshold(1.0)
        .build()
        .unwrap();
    let answering = clock.clone();
    let svc = layer.layer(service_fn(move |status: &'static str| {
        answering.advance(std::time::Duration::from_millis(100));
        async move { Ok::<_, BoxError>(grpc(status)) }
    }));
    let res = svc.oneshot("0").await.unwrap();
    clock.advance(std::time::Duration::from_secs(60));
    res.into_body().collect().await.unwrap();
    let latencies: Vec<_> = events
        .all()
        .into_iter()
        .filter_map(|e| match e {
            common::Seen::Completed(Outcome::Success, latency) => latency,
            _ => None,
        })
        .collect();
    assert_eq!(latencies, [std::time::Duration::from_millis(100)]);
    assert_eq!(layer.handle().state(), CircuitState::Closed);
}

#[tokio::test]
async fn a_grpc_call_reads_the_clock_once_at_its_start_and_once_at_its_answer() {
    // The breaker's docs promise two reads per timed call; a gRPC call
    // whose status is in its trailers reads at its answer, not again when
    // the trailers come (a count window needs no end of its own).
    let clock = palisade_core::ManualClock::new();
    let layer = CircuitBreakerLayer::builder()
        .classifier(GrpcErrorsAsFailures::new())
        .clock(clock.clock())
        .slow_call_duration(std::time::Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(|status: &'static str| async move {
        Ok::<_, BoxError>(grpc(status))
    }));
    let res = svc.clone().oneshot("0").await.unwrap();
    res.into_body().collect().await.unwrap();
    let before = clock.reads();
    let res = svc.oneshot("0").await.unwrap();
    res.into_body().collect().await.unwrap();
    assert_eq!(layer.handle().counts().calls, 2);
    assert_eq!(clock.reads() - before, 2, "reads for one gRPC call");
}

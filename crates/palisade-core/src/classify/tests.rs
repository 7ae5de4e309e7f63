use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;

use super::*;
use crate::error::{CircuitOpen, Elapsed, MissingKey, OverloadKind, Overloaded, RateLimited};
use crate::metrics::{CircuitState, KeyKind};
use crate::policy::PolicyName;

/// A body that yields the given frames, then ends.
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

/// A body that fails after its first frame.
struct Failing(bool);

impl Body for Failing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        if self.0 {
            Poll::Ready(Some(Err(std::io::Error::other("reset"))))
        } else {
            self.0 = true;
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }
}

/// A body whose first poll panics: a streaming handler with a bug.
struct Panics;

impl Body for Panics {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        // `resume_unwind` skips the panic hook: no noise in the output.
        std::panic::resume_unwind(Box::new("a streaming handler's bug"))
    }
}

/// A recorder that stores what it was told; `None` until recorded.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Option<Outcome>>>);

impl Seen {
    fn recorder(&self) -> impl RecordOutcome {
        let slot = self.0.clone();
        move |o: Outcome| *slot.lock().unwrap() = Some(o)
    }

    fn get(&self) -> Option<Outcome> {
        *self.0.lock().unwrap()
    }
}

fn trailers(code: &'static str) -> HeaderMap {
    let mut t = HeaderMap::new();
    t.insert("grpc-status", HeaderValue::from_static(code));
    t
}

/// A gRPC answer of one message, its status only in the trailers.
fn message_then_status(code: &'static str) -> Response<Frames> {
    grpc_response(vec![
        Frame::data(Bytes::from_static(b"\0\0\0\0\x01a")),
        Frame::trailers(trailers(code)),
    ])
}

/// A 200 answer of `content_type` with `body`.
fn typed<B>(content_type: &'static str, body: B) -> Response<B> {
    Response::builder()
        .header("content-type", content_type)
        .body(body)
        .unwrap()
}

fn grpc_response(frames: Vec<Frame<Bytes>>) -> Response<Frames> {
    typed("application/grpc", Frames(frames.into()))
}

fn plain<C: Classify<u32, &'static str>>(c: &C, r: Result<u32, &'static str>) -> Outcome {
    let seen = Seen::default();
    let _ = c.classify(r, seen.recorder());
    seen.get().expect("decided at once")
}

#[test]
fn errors_as_failures_table() {
    assert_eq!(plain(&ErrorsAsFailures, Ok(1)), Outcome::Success);
    assert_eq!(plain(&ErrorsAsFailures, Err("x")), Outcome::Failure);
}

#[test]
fn user_predicate_decides() {
    let c = ClassifyFn::new(|r: Result<&u32, &&'static str>| match r {
        Ok(0) => Outcome::Ignored,
        Ok(_) => Outcome::Success,
        Err(_) => Outcome::Failure,
    });
    assert_eq!(plain(&c, Ok(0)), Outcome::Ignored);
    assert_eq!(plain(&c, Ok(7)), Outcome::Success);
    assert_eq!(plain(&c, Err("e")), Outcome::Failure);
}

#[test]
fn http_status_table() {
    let cases = [
        (StatusCode::OK, Outcome::Success),
        (StatusCode::NO_CONTENT, Outcome::Success),
        (StatusCode::MOVED_PERMANENTLY, Outcome::Success),
        (StatusCode::NOT_FOUND, Outcome::Success),
        (StatusCode::TOO_MANY_REQUESTS, Outcome::Success),
        (StatusCode::INTERNAL_SERVER_ERROR, Outcome::Failure),
        (StatusCode::BAD_GATEWAY, Outcome::Failure),
        (StatusCode::SERVICE_UNAVAILABLE, Outcome::Failure),
        (StatusCode::GATEWAY_TIMEOUT, Outcome::Failure),
    ];
    for (status, expected) in cases {
        let seen = Seen::default();
        let res = Response::builder().status(status).body(()).unwrap();
        let out = ServerErrorsAsFailures.classify(Ok::<_, Infallible>(res), seen.recorder());
        assert_eq!(out.unwrap().status(), status, "response is unchanged");
        assert_eq!(seen.get(), Some(expected), "{status}");
    }
    let seen = Seen::default();
    let _ = ServerErrorsAsFailures.classify(Err::<Response<()>, _>("io"), seen.recorder());
    assert_eq!(seen.get(), Some(Outcome::Failure));
}

#[test]
fn grpc_status_in_headers_is_decided_at_once() {
    let cases = [
        ("0", Outcome::Success),
        ("5", Outcome::Success),  // NOT_FOUND: the caller's business
        ("3", Outcome::Success),  // INVALID_ARGUMENT
        ("14", Outcome::Failure), // UNAVAILABLE
        ("4", Outcome::Failure),  // DEADLINE_EXCEEDED
        ("13", Outcome::Failure), // INTERNAL
        ("2", Outcome::Failure),  // UNKNOWN
        ("8", Outcome::Failure),  // RESOURCE_EXHAUSTED
    ];
    for (code, expected) in cases {
        let seen = Seen::default();
        let res = Response::builder()
            .header("grpc-status", code)
            .body(Frames(VecDeque::new()))
            .unwrap();
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        assert_eq!(seen.get(), Some(expected), "grpc-status {code}");
        assert!(!out.body().is_pending());
    }
}

#[tokio::test]
async fn grpc_status_only_in_trailers_is_decided_at_end_of_stream() {
    let cases = [
        ("0", Outcome::Success),
        ("5", Outcome::Success),
        ("14", Outcome::Failure),
        ("4", Outcome::Failure),
        ("13", Outcome::Failure),
    ];
    for (code, expected) in cases {
        let seen = Seen::default();
        let res = message_then_status(code);
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        assert_eq!(seen.get(), None, "not decided before the trailers");
        let collected = out.into_body().collect().await.unwrap();
        assert_eq!(
            collected.trailers().unwrap()["grpc-status"],
            code,
            "trailers pass through"
        );
        assert_eq!(seen.get(), Some(expected), "trailer grpc-status {code}");
    }
}

#[tokio::test]
async fn grpc_body_without_any_status_is_unknown() {
    // A stream cut off (a proxy's RST_STREAM, read as a clean end): the
    // client sees UNKNOWN, a failure by default.
    for (classifier, outcome) in [
        (GrpcErrorsAsFailures::new(), Outcome::Failure),
        (
            GrpcErrorsAsFailures::failing_on(&[GrpcCode::Unavailable]),
            Outcome::Success,
        ),
    ] {
        let seen = Seen::default();
        let res = grpc_response(vec![Frame::data(Bytes::from_static(b"abc"))]);
        let out = classifier
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        let _ = out.into_body().collect().await.unwrap();
        assert_eq!(seen.get(), Some(outcome));
    }
    // Trailers without a status are no better.
    let seen = Seen::default();
    let mut trailers = HeaderMap::new();
    trailers.insert("x-other", "1".parse().unwrap());
    let res = grpc_response(vec![Frame::trailers(trailers)]);
    let out = GrpcErrorsAsFailures::new()
        .classify(Ok::<_, Infallible>(res), seen.recorder())
        .unwrap();
    let _ = out.into_body().collect().await.unwrap();
    assert_eq!(seen.get(), Some(Outcome::Failure));
}

#[test]
fn grpc_empty_body_is_decided_at_once() {
    let seen = Seen::default();
    let res = grpc_response(vec![]);
    let out = GrpcErrorsAsFailures::new()
        .classify(Ok::<_, Infallible>(res), seen.recorder())
        .unwrap();
    assert!(!out.body().is_pending());
    assert_eq!(seen.get(), Some(Outcome::Failure), "no status at all");
}

#[tokio::test]
async fn a_plain_http_answer_without_a_grpc_status_is_judged_by_its_status() {
    // A plain route of a gRPC server, or a proxy's page: 200 and 4xx are
    // successes, 5xx and 429 failures.
    for (status, outcome) in [
        (200, Outcome::Success),
        (404, Outcome::Success),
        (400, Outcome::Success),
        (503, Outcome::Failure),
        (500, Outcome::Failure),
        (429, Outcome::Failure),
    ] {
        let seen = Seen::default();
        let res = Response::builder()
            .status(status)
            .header("content-type", "text/html")
            .body(Frames(
                vec![Frame::data(Bytes::from_static(b"<html>"))].into(),
            ))
            .unwrap();
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        let _ = out.into_body().collect().await.unwrap();
        assert_eq!(seen.get(), Some(outcome), "{status}");
    }
}

#[test]
fn a_plain_200_is_a_success_before_its_body_ends() {
    // An endless stream (server-sent events) or gRPC-Web, whose status
    // travels in the body: judged by its headers, never left waiting.
    for content_type in ["text/event-stream", "application/grpc-web"] {
        let seen = Seen::default();
        let res = typed(
            content_type,
            Frames(vec![Frame::data(Bytes::from_static(b"data: 1"))].into()),
        );
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        assert!(!out.body().is_pending(), "{content_type}");
        assert_eq!(seen.get(), Some(Outcome::Success), "{content_type}");
    }
}

#[test]
fn a_non_200_answer_without_a_grpc_status_is_read_as_a_client_reads_it() {
    for (status, outcome) in [
        (503, Outcome::Failure),
        (502, Outcome::Failure),
        (504, Outcome::Failure),
        (429, Outcome::Failure),
        (400, Outcome::Failure),
        (500, Outcome::Failure),
        (404, Outcome::Success),
        (403, Outcome::Success),
        (401, Outcome::Success),
    ] {
        let seen = Seen::default();
        let mut res = grpc_response(vec![Frame::data(Bytes::from_static(b"<html>"))]);
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        assert!(!out.body().is_pending(), "{status}");
        assert_eq!(seen.get(), Some(outcome), "{status}");
    }
}

#[tokio::test]
async fn grpc_body_error_is_a_failure() {
    let seen = Seen::default();
    let res = typed("application/grpc", Failing(false));
    let out = GrpcErrorsAsFailures::new()
        .classify(Ok::<_, Infallible>(res), seen.recorder())
        .unwrap();
    assert!(out.into_body().collect().await.is_err());
    assert_eq!(seen.get(), Some(Outcome::Failure));
}

#[test]
fn grpc_body_dropped_early_records_nothing() {
    let seen = Seen::default();
    let res = grpc_response(vec![
        Frame::data(Bytes::from_static(b"abc")),
        Frame::trailers(trailers("14")),
    ]);
    let out = GrpcErrorsAsFailures::new()
        .classify(Ok::<_, Infallible>(res), seen.recorder())
        .unwrap();
    drop(out);
    assert_eq!(seen.get(), None, "a dropped body is a cancellation");
}

#[test]
fn a_grpc_body_that_panics_is_a_failure() {
    let seen = Seen::default();
    let res = typed("application/grpc", Panics);
    let out = GrpcErrorsAsFailures::new()
        .classify(Ok::<_, Infallible>(res), seen.recorder())
        .unwrap();
    let mut body = std::pin::pin!(out.into_body());
    let mut cx = Context::from_waker(std::task::Waker::noop());
    let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        body.as_mut().poll_frame(&mut cx)
    }));
    assert!(polled.is_err());
    assert_eq!(
        seen.get(),
        Some(Outcome::Failure),
        "recorded as the panic unwound, not left to a drop"
    );
}

#[test]
fn grpc_transport_error_is_a_failure() {
    let seen = Seen::default();
    let out =
        GrpcErrorsAsFailures::new().classify(Err::<Response<Frames>, _>("io"), seen.recorder());
    assert!(out.is_err());
    assert_eq!(seen.get(), Some(Outcome::Failure));
}

#[test]
fn grpc_failure_codes_are_configurable() {
    let only_unavailable = GrpcErrorsAsFailures::failing_on(&[GrpcCode::Unavailable, GrpcCode::Ok]);
    for (code, expected) in [
        ("14", Outcome::Failure),
        ("13", Outcome::Success),
        ("0", Outcome::Success),
    ] {
        let seen = Seen::default();
        let res = Response::builder()
            .header("grpc-status", code)
            .body(Frames(VecDeque::new()))
            .unwrap();
        let _ = only_unavailable.classify(Ok::<_, Infallible>(res), seen.recorder());
        assert_eq!(seen.get(), Some(expected), "grpc-status {code}");
    }
}

#[test]
fn local_rejections_are_ignored_and_other_rejections_are_not() {
    let c = IgnoreLocalRejections::new(ErrorsAsFailures);
    let p = || PolicyName::new("p");
    let cases: Vec<(BoxError, Outcome)> = vec![
        (
            RateLimited::new(p(), Duration::from_secs(1), KeyKind::Global).into(),
            Outcome::Ignored,
        ),
        (
            Overloaded::new(p(), 3, OverloadKind::Full).into(),
            Outcome::Ignored,
        ),
        (
            MissingKey::new(p(), KeyKind::Header).into(),
            Outcome::Ignored,
        ),
        (
            CircuitOpen::new(p(), None, CircuitState::Open).into(),
            Outcome::Failure,
        ),
        (
            Elapsed::new(p(), Duration::from_secs(1)).into(),
            Outcome::Failure,
        ),
        (
            Elapsed::caller_deadline(p(), Duration::from_millis(1)).into(),
            Outcome::Ignored,
        ),
        ("plain".into(), Outcome::Failure),
    ];
    for (err, expected) in cases {
        let seen = Seen::default();
        let description = err.to_string();
        let out = c.classify(Err::<u32, _>(err), seen.recorder());
        assert!(out.is_err(), "the error is passed on");
        assert_eq!(seen.get(), Some(expected), "{description}");
    }
    let seen = Seen::default();
    let _ = c.classify(Ok::<u32, BoxError>(1), seen.recorder());
    assert_eq!(seen.get(), Some(Outcome::Success));
}

#[test]
fn unit_recorder_ignores() {
    let r = ErrorsAsFailures.classify(Ok::<u8, ()>(3), ());
    assert_eq!(r, Ok(3));
}

#[test]
fn cut_off_marks_only_its_own_scope_even_when_it_unwinds() {
    let (outer, inner) = (Duration::from_secs(2), Duration::from_millis(5));
    assert_eq!(being_cut_off(), None);
    cut_off(outer, || {
        assert_eq!(being_cut_off(), Some(outer));
        cut_off(inner, || assert_eq!(being_cut_off(), Some(inner)));
        assert_eq!(being_cut_off(), Some(outer), "restored to the outer mark");
    });
    assert_eq!(being_cut_off(), None);
    let unwound = std::panic::catch_unwind(|| cut_off(outer, || panic!("a destructor panicked")));
    assert!(unwound.is_err());
    assert_eq!(being_cut_off(), None, "cleared on unwind");
}

#[test]
fn a_grpc_status_that_is_no_code_is_unknown_in_the_headers() {
    // A gRPC client reads anything but `0` to `16`, spelled exactly, as
    // UNKNOWN, which the default codes count as a failure.
    for code in ["abc", "", "1 4", " 14", "00", "+0", "017"] {
        let seen = Seen::default();
        let res = Response::builder()
            .header("content-type", "application/grpc")
            .header("grpc-status", code)
            .body(Frames(VecDeque::new()))
            .unwrap();
        let _ = GrpcErrorsAsFailures::new().classify(Ok::<_, Infallible>(res), seen.recorder());
        assert_eq!(seen.get(), Some(Outcome::Failure), "grpc-status {code:?}");
    }
    // Unless UNKNOWN is not one of the failure codes.
    let seen = Seen::default();
    let res = Response::builder()
        .header("content-type", "application/grpc")
        .header("grpc-status", "abc")
        .body(Frames(VecDeque::new()))
        .unwrap();
    let _ = GrpcErrorsAsFailures::failing_on(&[GrpcCode::Unavailable])
        .classify(Ok::<_, Infallible>(res), seen.recorder());
    assert_eq!(seen.get(), Some(Outcome::Success));
}

#[tokio::test]
async fn a_grpc_status_that_is_no_code_is_unknown_in_the_trailers() {
    for code in ["abc", "00", " 0"] {
        let seen = Seen::default();
        let res = message_then_status(code);
        let out = GrpcErrorsAsFailures::new()
            .classify(Ok::<_, Infallible>(res), seen.recorder())
            .unwrap();
        let _ = out.into_body().collect().await.unwrap();
        assert_eq!(seen.get(), Some(Outcome::Failure), "grpc-status {code:?}");
    }
}

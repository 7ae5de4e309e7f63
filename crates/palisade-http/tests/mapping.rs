//! The mapping tables, the problem-details body and the HTTP layer,
//! without a network.

mod support;

use std::convert::Infallible;
use std::future::ready;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use palisade_core::{BoxError, Elapsed, KeyKind, PolicyName, RateLimited};
use palisade_http::{
    ErrorBody, ErrorToResponseLayer, HttpMapping, Problem, ProblemJson, TimeoutStatus,
    retry_after_seconds, to_response, to_status_code,
};
use serde_json::Value;
use support::{SECRET, TABLE, error};
use tower::{Layer, Service, ServiceExt, service_fn};

fn json(res: &http::Response<Bytes>) -> Value {
    serde_json::from_slice(res.body()).expect("the body is JSON")
}

#[test]
fn http_table_status_retry_after_and_body() {
    for &(kind, status, retry_after, _, reason) in TABLE {
        let err = error(kind).unwrap();
        assert_eq!(to_status_code(&*err), status, "{kind}");
        let res = to_response::<Bytes>(&*err);
        assert_eq!(res.status(), status, "{kind}");
        assert_eq!(
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after,
            "{kind}"
        );
        assert_eq!(res.headers()["content-type"], "application/problem+json");

        let body = json(&res);
        assert_eq!(body["type"], "about:blank", "{kind}");
        assert_eq!(body["status"], status, "{kind}");
        assert_eq!(
            body["title"],
            StatusCode::from_u16(status)
                .unwrap()
                .canonical_reason()
                .unwrap()
        );
        assert!(body["detail"].as_str().unwrap().ends_with('.'), "{kind}");
        assert_eq!(body["reason"].as_str(), reason, "{kind}");
        match reason {
            Some(_) => {
                assert_eq!(body["policy"], "api", "{kind}");
                assert!(body["layer"].is_string(), "{kind}");
                assert!(body["detail"].as_str().unwrap().contains("\"api\"") || kind == "panicked");
            }
            None => {
                assert!(body.get("policy").is_none(), "{kind}");
                assert!(body.get("layer").is_none(), "{kind}");
            }
        }
        assert_eq!(
            body.get("retry_after_seconds").map(|v| v.to_string()),
            retry_after.map(str::to_owned),
            "{kind}"
        );
        let text = std::str::from_utf8(res.body()).unwrap();
        assert!(
            !text.contains(SECRET),
            "{kind} leaked internal text: {text}"
        );
        assert!(!text.contains("hunter2"), "{kind}");
    }
}

#[test]
fn layer_labels_name_the_refusing_layer() {
    let cases = [
        ("rate_limited", "rate_limit"),
        ("missing_key", "rate_limit"),
        ("circuit_open", "circuit_breaker"),
        ("overloaded", "bulkhead"),
        ("elapsed", "timeout"),
        ("panicked", "panic_catch"),
    ];
    for (kind, layer) in cases {
        let res = to_response::<Bytes>(&*error(kind).unwrap());
        assert_eq!(json(&res)["layer"], layer, "{kind}");
    }
}

#[test]
fn retry_after_rounds_up_to_whole_seconds_and_at_least_one() {
    let cases = [
        (0, 1),
        (1, 1),
        (999, 1),
        (1000, 1),
        (1001, 2),
        (1999, 2),
        (2000, 2),
        (2001, 3),
    ];
    for (millis, secs) in cases {
        assert_eq!(
            retry_after_seconds(Duration::from_millis(millis)),
            secs,
            "{millis}ms"
        );
        let err: BoxError = RateLimited::new(
            PolicyName::new("api"),
            Duration::from_millis(millis),
            KeyKind::Global,
        )
        .into();
        let res = to_response::<Bytes>(&*err);
        assert_eq!(res.headers()["retry-after"], secs.to_string().as_str());
        assert_eq!(json(&res)["retry_after_seconds"], secs);
    }
    assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
    assert_eq!(retry_after_seconds(Duration::MAX), u64::MAX);
}

#[test]
fn timeouts_can_answer_408() {
    let mapping = HttpMapping::new().timeout_status(TimeoutStatus::RequestTimeout);
    for kind in ["elapsed", "wrapped_elapsed"] {
        let err = error(kind).unwrap();
        let res = mapping.to_response::<Bytes>(&*err);
        assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT, "{kind}");
        assert_eq!(json(&res)["status"], 408);
        assert_eq!(json(&res)["title"], "Request Timeout");
        assert_eq!(mapping.status_code(&*err), 408);
    }
    // Only timeouts change.
    let err = error("rate_limited").unwrap();
    assert_eq!(mapping.to_response::<Bytes>(&*err).status(), 429);
}

#[test]
fn policy_names_are_escaped_in_json() {
    let name = "we\"ird\\na\nme\u{1}";
    let err: BoxError = Elapsed::new(PolicyName::new(name), Duration::from_secs(1)).into();
    let res = to_response::<Bytes>(&*err);
    let body = json(&res);
    assert_eq!(body["policy"], name);
    // The sentence holds the name as it is, in quotes: JSON escapes it.
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("policy \"{name}\"")), "{detail}");
}

#[test]
fn type_base_names_the_reason() {
    let mapping =
        HttpMapping::new().body(ProblemJson::new().type_base("https://errors.example.com/p/"));
    let res = mapping.to_response::<Bytes>(&*error("overloaded").unwrap());
    assert_eq!(
        json(&res)["type"],
        "https://errors.example.com/p/queue_full"
    );
    let res = mapping.to_response::<Bytes>(&*error("other").unwrap());
    assert_eq!(json(&res)["type"], "about:blank");
}

#[test]
fn a_custom_body_hook_replaces_the_body_but_not_the_head() {
    let mapping = HttpMapping::new().body(|problem: &Problem<'_>| {
        ErrorBody::text(format!(
            "{} {}",
            problem.status().as_u16(),
            problem.reason().map_or("error", |r| r.as_str())
        ))
    });
    let res = mapping.to_response::<Bytes>(&*error("rate_limited").unwrap());
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "2");
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.body(), "429 rate_limited");

    let empty = HttpMapping::new().body(|_: &Problem<'_>| ErrorBody::empty());
    let res = empty.to_response::<Bytes>(&*error("other").unwrap());
    assert_eq!(res.status(), 500);
    assert!(res.headers().get("content-type").is_none());
    assert!(res.body().is_empty());
}

#[test]
fn a_body_hook_that_panics_leaves_the_default_body() {
    let mapping = HttpMapping::new().body(|problem: &Problem<'_>| -> ErrorBody {
        let policy = problem.policy().expect("a policy");
        ErrorBody::text(policy.to_owned())
    });
    // A plain service error has no policy: the hook panics, and the
    // answer keeps its head and gets the default body.
    let res = mapping.to_response::<Bytes>(&*error("other").unwrap());
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert_eq!(json(&res)["status"], 500);
    let res = mapping.to_response::<Bytes>(&*error("rate_limited").unwrap());
    assert_eq!(res.status(), 429);
    assert_eq!(res.body(), "api");
}

#[tokio::test]
async fn the_layer_keeps_responses_and_maps_errors() {
    let inner = service_fn(|req: http::Request<()>| async move {
        let kind = req.uri().path().trim_start_matches('/').to_owned();
        match error(&kind) {
            Some(err) => Err(err),
            None => Ok(http::Response::new(Bytes::from_static(b"fine"))),
        }
    });
    let svc = ErrorToResponseLayer::new().layer(inner);
    for &(kind, status, retry_after, _, _) in TABLE {
        let req = http::Request::builder()
            .uri(format!("/{kind}"))
            .body(())
            .unwrap();
        let res: http::Response<Bytes> = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), status, "{kind}");
        assert_eq!(
            res.headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap()),
            retry_after
        );
    }
    let res = svc
        .oneshot(http::Request::builder().uri("/ok").body(()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.body(), "fine");
}

#[tokio::test]
async fn the_layer_uses_its_mapping() {
    let layer = ErrorToResponseLayer::with_mapping(
        HttpMapping::new()
            .timeout_status(TimeoutStatus::RequestTimeout)
            .body(|_: &Problem<'_>| ErrorBody::text("custom")),
    );
    let inner =
        service_fn(|_req: ()| async { Err::<http::Response<Bytes>, _>(error("elapsed").unwrap()) });
    let res = layer.layer(inner).oneshot(()).await.unwrap();
    assert_eq!(res.status(), 408);
    assert_eq!(res.body(), "custom");
}

/// Fails `poll_ready` with an overload, and counts calls.
#[derive(Clone, Default)]
struct NeverReady {
    calls: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl Service<()> for NeverReady {
    type Response = http::Response<Bytes>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Err(error("overloaded").unwrap()))
    }

    fn call(&mut self, _req: ()) -> Self::Future {
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ready(Ok(http::Response::new(Bytes::new())))
    }
}

#[tokio::test]
async fn a_readiness_error_is_answered_by_the_next_call() {
    let inner = NeverReady::default();
    let calls = inner.calls.clone();
    let mut svc = ErrorToResponseLayer::new().layer(inner);
    let res = svc.ready().await.unwrap().call(()).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[test]
fn the_layer_is_infallible_clone_send_and_sync() {
    fn check<S>(_: &S)
    where
        S: Service<http::Request<()>, Error = Infallible> + Clone + Send + Sync + 'static,
    {
    }
    let inner = service_fn(|_req: http::Request<()>| async {
        Ok::<_, BoxError>(http::Response::new(Bytes::new()))
    });
    check(&ErrorToResponseLayer::new().layer(inner));
}

#[test]
fn the_happy_path_allocates_nothing() {
    let inner = service_fn(|_req: u32| ready(Ok::<_, BoxError>(http::Response::new(Bytes::new()))));
    let mut svc = ErrorToResponseLayer::new().layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    let mut once = |svc: &mut palisade_http::ErrorToResponse<_>| {
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let fut = pin!(svc.call(0));
        matches!(fut.poll(&mut cx), Poll::Ready(Ok(res)) if res.status() == 200)
    };
    assert!(once(&mut svc));
    let info = allocation_counter::measure(|| {
        for _ in 0..100 {
            assert!(once(&mut svc));
        }
    });
    assert_eq!(info.count_total, 0, "happy path allocated: {info:?}");
}

proptest::proptest! {
    /// `Retry-After` is never early and never a whole second late.
    #[test]
    fn retry_after_is_the_ceiling_in_seconds(nanos in 0_u64..=u64::MAX / 2) {
        let delay = Duration::from_nanos(nanos);
        let secs = retry_after_seconds(delay);
        proptest::prop_assert!(secs >= 1);
        proptest::prop_assert!(Duration::from_secs(secs) >= delay);
        proptest::prop_assert!(secs == 1 || Duration::from_secs(secs - 1) < delay);
    }

    /// Whatever the policy name, the body is valid JSON that gives the name
    /// back exactly.
    #[test]
    fn any_policy_name_round_trips_through_the_json(name in "\\PC*|[\\x00-\\x1f\"\\\\\u{2028}]{0,8}") {
        let err: BoxError = RateLimited::new(
            PolicyName::new(name.as_str()),
            Duration::from_millis(10),
            KeyKind::Global,
        )
        .into();
        let res = to_response::<Bytes>(&*err);
        let body: Value = serde_json::from_slice(res.body()).unwrap();
        proptest::prop_assert_eq!(body["policy"].as_str(), Some(name.as_str()));
    }
}

#[test]
fn polling_a_finished_response_again_answers_instead_of_polling_the_service() {
    // An `async` block panics when resumed after completion: the layer,
    // whose service is `Infallible`, must not reach it again.
    for fails in [false, true] {
        let inner = service_fn(move |()| async move {
            if fails {
                Err::<http::Response<Bytes>, BoxError>(error("overloaded").unwrap())
            } else {
                Ok(http::Response::new(Bytes::new()))
            }
        });
        let mut svc = ErrorToResponseLayer::new().layer(inner);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let mut future = pin!(svc.call(()));
        let Poll::Ready(Ok(first)) = future.as_mut().poll(&mut cx) else {
            panic!("answers at once")
        };
        assert_eq!(first.status(), if fails { 503 } else { 200 });
        let Poll::Ready(Ok(again)) = future.as_mut().poll(&mut cx) else {
            panic!("answers again at once")
        };
        assert_eq!(again.status(), 500, "fails: {fails}");
    }
}

/// An error whose `source()` is the service's code with a bug: it panics,
/// or it names the error itself.
#[derive(Debug)]
struct OddSource {
    panics: bool,
}

impl std::fmt::Display for OddSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("odd source")
    }
}

impl std::error::Error for OddSource {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        if self.panics {
            panic!("a source() with a bug")
        }
        Some(self)
    }
}

#[test]
fn an_error_whose_source_panics_or_loops_still_gets_a_500() {
    for panics in [true, false] {
        let inner = service_fn(move |()| async move {
            Err::<http::Response<Bytes>, BoxError>(Box::new(OddSource { panics }))
        });
        let mut svc = ErrorToResponseLayer::new().layer(inner);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let future = pin!(svc.call(()));
        let Poll::Ready(Ok(res)) = future.poll(&mut cx) else {
            panic!("answers at once")
        };
        assert_eq!(res.status(), 500, "panics: {panics}");
        let err = OddSource { panics };
        assert_eq!(to_status_code(&err), 500);
        assert!(palisade_core::find_rejection(&OddSource { panics: false }).is_none());
    }
}

#[test]
fn a_callers_own_deadline_is_named_as_the_callers() {
    let policy = PolicyName::new("api");
    let own = Elapsed::new(policy.clone(), Duration::from_millis(5));
    let callers = Elapsed::caller_deadline(policy, Duration::from_millis(5));
    let own = Problem::new(&own, TimeoutStatus::default());
    let callers = Problem::new(&callers, TimeoutStatus::default());
    assert_eq!(own.status(), callers.status());
    assert_eq!(
        own.detail().to_string(),
        r#"The request took longer than policy "api" allows."#
    );
    assert_eq!(
        callers.detail().to_string(),
        r#"The request ran out of the deadline its caller set (policy "api")."#
    );
}

/// A panicking body hook is caught quietly, with the mapping built as the
/// only palisade part of the process: building it installs palisade's
/// panic hook, so the panic is logged, not printed to stderr. Run in a
/// child process, whose stderr is read.
#[test]
fn a_body_hook_panic_is_not_printed_by_a_mapping_alone() {
    const CHILD: &str = "PALISADE_MAPPING_HOOK_CHILD";
    if std::env::var_os(CHILD).is_some() {
        let mapping = HttpMapping::new()
            .body(|_: &Problem<'_>| -> ErrorBody { panic!("a body hook with a bug") });
        let res = mapping.to_response::<Bytes>(&*error("rate_limited").unwrap());
        assert_eq!(res.status(), 429);
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_body_hook_panic_is_not_printed_by_a_mapping_alone",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("panicked at"), "printed:\n{stderr}");
}

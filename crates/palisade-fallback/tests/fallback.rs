//! Behaviour of the fallback layer: triggers, sources, pass-through,
//! events, readiness failures and the cost of the happy path.

use std::error::Error;
use std::fmt;
use std::future::{Ready, ready};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::find_rejection;
use palisade_core::{
    BoxError, CircuitOpen, CircuitState, Event, FallbackTrigger, KeyKind, LayerKind, Metrics,
    MetricsSink, PolicyName, RateLimited,
};
use palisade_fallback::error::FallbackFailed;
use palisade_fallback::predicate::{AnyError, Or, Rejections, ServerErrors};
use palisade_fallback::{Cause, FallbackLayer, source};
use tower::{Layer, Service, ServiceExt, service_fn};

/// Records every `FallbackUsed` event.
#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<(String, FallbackTrigger)>>);

impl MetricsSink for Recorder {
    fn record(&self, event: &Event<'_>) {
        if let Event::FallbackUsed { policy, trigger } = event {
            self.0
                .lock()
                .unwrap()
                .push(((*policy).to_owned(), *trigger));
        }
    }
}

impl Recorder {
    fn take(&self) -> Vec<(String, FallbackTrigger)> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn rate_limited() -> BoxError {
    RateLimited::new(
        PolicyName::new("api"),
        Duration::from_secs(2),
        KeyKind::Global,
    )
    .into()
}

/// An error that wraps another, as a client library would.
#[derive(Debug)]
struct Wrapped(BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call failed")
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

/// A request type that is deliberately not `Clone`.
#[derive(Debug)]
struct NotClone(u32);

/// A service answering `Ok(n)` for even `n` and a given error for odd `n`.
fn odd_fails<Req>(
    make_error: fn() -> BoxError,
    n: fn(&Req) -> u32,
) -> impl Service<Req, Response = String, Error = BoxError, Future = Ready<Result<String, BoxError>>>
+ Clone {
    service_fn(move |req: Req| {
        let n = n(&req);
        ready(if n.is_multiple_of(2) {
            Ok(format!("ok {n}"))
        } else {
            Err(make_error())
        })
    })
}

#[tokio::test]
async fn a_rejection_is_answered_and_reported_as_a_rejection() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .name("catalog")
        .metrics(recorder.clone())
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));

    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fallback");
    assert_eq!(
        recorder.take(),
        [("catalog".to_owned(), FallbackTrigger::Rejection)]
    );
    // The happy path answers the service's response and reports nothing.
    assert_eq!(svc.oneshot(2).await.unwrap(), "ok 2");
    assert!(recorder.take().is_empty());
}

#[tokio::test]
async fn a_plain_error_is_reported_as_an_error() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
        assert!(cause.rejection().is_none());
        format!("{}: {}", cause.trigger().as_str(), cause.error().unwrap())
    }))
    .name("catalog")
    .metrics(recorder.clone())
    .build()
    .unwrap();
    let svc = layer.layer(odd_fails(|| "disk on fire".into(), |n: &u32| *n));

    assert_eq!(svc.oneshot(3).await.unwrap(), "error: disk on fire");
    assert_eq!(
        recorder.take(),
        [("catalog".to_owned(), FallbackTrigger::Error)]
    );
}

#[tokio::test]
async fn a_matching_response_is_replaced_and_reported_as_a_response() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
        let stale = cause.into_response().expect("the rejected response");
        format!("{stale} replaced")
    }))
    .metrics(recorder.clone())
    .on_response_if(|res: &String| res.ends_with('4'))
    .build()
    .unwrap();
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));

    assert_eq!(svc.clone().oneshot(4).await.unwrap(), "ok 4 replaced");
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), "ok 2");
    assert_eq!(
        recorder.take(),
        [("default".to_owned(), FallbackTrigger::Response)]
    );
    // A response predicate alone lets errors through.
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(err.is::<RateLimited>());
    assert!(recorder.take().is_empty());
}

#[tokio::test]
async fn server_errors_or_rejections_on_http_responses() {
    let inner = service_fn(|status: u16| async move {
        if status == 0 {
            return Err::<http::Response<&'static str>, BoxError>(rate_limited());
        }
        if status == 1 {
            return Err("boom".into());
        }
        Ok(http::Response::builder()
            .status(status)
            .body("inner")
            .unwrap())
    });
    let layer = FallbackLayer::builder(source::from_fn(
        |_cause: Cause<http::Response<&'static str>>| http::Response::new("fallback"),
    ))
    .when(Or::new(Rejections, ServerErrors))
    .build()
    .unwrap();
    let svc = layer.layer(inner);

    for (status, expected) in [
        (200, "inner"),
        (404, "inner"),
        (503, "fallback"),
        (0, "fallback"),
    ] {
        let res = svc.clone().oneshot(status).await.unwrap();
        assert_eq!(*res.body(), expected, "status {status}");
    }
    // Neither a rejection nor a response: the error passes through.
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
}

#[tokio::test]
async fn rejections_only_lets_other_errors_through_unchanged() {
    let layer = FallbackLayer::builder(source::value(String::new()))
        .on_rejections()
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(
        || std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset").into(),
        |n: &u32| *n,
    ));
    let err = svc.oneshot(1).await.unwrap_err();
    let io = err
        .downcast_ref::<std::io::Error>()
        .expect("the same error");
    assert_eq!(io.kind(), std::io::ErrorKind::ConnectionReset);
}

#[tokio::test]
async fn rejections_are_found_through_wrappers() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .metrics(recorder.clone())
        .on_rejections()
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(
        || Wrapped(Box::new(Wrapped(rate_limited()))).into(),
        |n: &u32| *n,
    ));
    assert_eq!(svc.oneshot(1).await.unwrap(), "fallback");
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Rejection);
}

#[tokio::test]
async fn error_type_predicate_searches_the_chain_and_passes_others() {
    let layer = FallbackLayer::builder(source::value("io fallback".to_owned()))
        .on_error::<std::io::Error>()
        .build()
        .unwrap();

    let wrapped_io = layer.layer(odd_fails(
        || Wrapped(Box::new(std::io::Error::other("eof"))).into(),
        |n: &u32| *n,
    ));
    assert_eq!(wrapped_io.oneshot(1).await.unwrap(), "io fallback");

    let limited = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    let err = limited.oneshot(1).await.unwrap_err();
    assert!(err.is::<RateLimited>(), "not an io error: passes through");
}

#[tokio::test]
async fn error_closure_predicate_decides() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::value("closed".to_owned()))
        .metrics(recorder.clone())
        .on_error_if(|err| err.is::<CircuitOpen>())
        .build()
        .unwrap();
    let open = layer.layer(odd_fails(
        || CircuitOpen::new(PolicyName::new("db"), None, CircuitState::Open).into(),
        |n: &u32| *n,
    ));
    assert_eq!(open.oneshot(1).await.unwrap(), "closed");
    // A rejection claimed by a closure is still reported as a rejection.
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Rejection);

    let limited = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    assert!(limited.oneshot(1).await.unwrap_err().is::<RateLimited>());
}

/// A custom predicate that claims every error and says it is a plain error.
#[derive(Clone, Copy, Debug)]
struct ClaimsEverythingAsError;

impl<Res> palisade_fallback::predicate::Predicate<Res> for ClaimsEverythingAsError {
    fn check_error(&self, _err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        Some(FallbackTrigger::Error)
    }

    fn check_response(&self, _res: &Res) -> bool {
        false
    }
}

#[tokio::test]
async fn a_rejection_claimed_by_a_custom_predicate_is_reported_as_a_rejection() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
        let rejected = matches!(cause, Cause::Rejection(_)) && cause.rejection().is_some();
        format!("{} {rejected}", cause.trigger().as_str())
    }))
    .metrics(recorder.clone())
    .when(ClaimsEverythingAsError)
    .build()
    .unwrap();

    let limited = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    assert_eq!(limited.oneshot(1).await.unwrap(), "rejection true");
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Rejection);

    // The same holds for a rejection met while the inner service gets ready.
    let mut not_ready = layer.layer(FailsReadinessOnce::default());
    let answer = not_ready.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(answer, "rejection true");
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Rejection);

    // An error without a rejection in its chain stays an error.
    let failing = layer.layer(odd_fails(|| "disk on fire".into(), |n: &u32| *n));
    assert_eq!(failing.oneshot(1).await.unwrap(), "error false");
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Error);
}

#[tokio::test]
async fn or_when_widens_the_predicate() {
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .on_rejections()
        .or_when(palisade_fallback::predicate::ResponseIf::new(
            |res: &String| res == "ok 0",
        ))
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    assert_eq!(svc.clone().oneshot(0).await.unwrap(), "fallback");
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fallback");
    assert_eq!(svc.oneshot(2).await.unwrap(), "ok 2");
}

#[tokio::test]
async fn async_source_answers_and_its_error_reaches_the_caller() {
    let layer = FallbackLayer::builder(source::from_async_fn(|cause: Cause<String>| async move {
        if cause.rejection().is_some() {
            Ok(format!("async {}", cause.trigger().as_str()))
        } else {
            Err(std::io::Error::other("the cache is down too"))
        }
    }))
    .build()
    .unwrap();

    let limited = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    assert_eq!(limited.oneshot(1).await.unwrap(), "async rejection");

    let failing = layer.layer(odd_fails(|| "boom".into(), |n: &u32| *n));
    let err = failing.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "the cache is down too");
    assert!(err.is::<std::io::Error>());
}

#[tokio::test]
async fn service_source_gets_a_clone_of_the_request() {
    let backup_calls = Arc::new(AtomicUsize::new(0));
    let calls = backup_calls.clone();
    let backup = service_fn(move |req: u32| {
        calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok::<_, std::convert::Infallible>(format!("backup {req}")))
    });
    let layer = FallbackLayer::builder(source::service(backup))
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));

    assert_eq!(svc.clone().oneshot(7).await.unwrap(), "backup 7");
    assert_eq!(svc.oneshot(8).await.unwrap(), "ok 8");
    assert_eq!(backup_calls.load(Ordering::SeqCst), 1, "only the failure");
}

#[tokio::test]
async fn service_with_keeps_part_of_a_request_that_is_not_clone() {
    let backup = service_fn(|path: String| async move {
        Ok::<_, BoxError>(http::Response::new(format!("cached {path}")))
    });
    let layer = FallbackLayer::builder(source::service_with(backup, |req: &http::Request<()>| {
        req.uri().path().to_owned()
    }))
    .build()
    .unwrap();
    let inner = service_fn(|_req: http::Request<()>| async {
        Err::<http::Response<String>, BoxError>(rate_limited())
    });
    let svc = layer.layer(inner);
    let req = http::Request::builder().uri("/books/1").body(()).unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.body(), "cached /books/1");
}

#[tokio::test]
async fn a_fallback_that_fails_for_a_rejection_answers_that_rejection() {
    let backup =
        service_fn(|_req: u32| async { Err::<String, _>(std::io::Error::other("backup down")) });
    let layer = FallbackLayer::builder(source::service(backup))
        .name("catalog")
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    let err = svc.oneshot(1).await.unwrap_err();
    // The rejection the fallback stood in for is still the answer (what
    // the HTTP and gRPC mappings find along the chain), with the fallback's
    // own failure beside it.
    let failed = err
        .downcast_ref::<FallbackFailed>()
        .unwrap_or_else(|| panic!("expected FallbackFailed, got {err:?}"));
    assert_eq!(failed.policy().as_str(), "catalog");
    assert_eq!(failed.fallback_error().to_string(), "backup down");
    assert!(failed.fallback_error().is::<std::io::Error>());
    let rejection = find_rejection(&*err).expect("the rejection is in the chain");
    assert_eq!(rejection.layer(), LayerKind::RateLimit);
    assert_eq!(rejection.policy().as_str(), "api");
    assert_eq!(rejection.retry_after(), Some(Duration::from_secs(2)));
    assert_eq!(
        err.to_string(),
        format!("fallback \"catalog\" failed (backup down) standing in for: {rejection}")
    );
}

#[tokio::test]
async fn a_fallback_that_fails_for_a_plain_error_returns_its_own_error() {
    let backup =
        service_fn(|_req: u32| async { Err::<String, _>(std::io::Error::other("backup down")) });
    let layer = FallbackLayer::builder(source::service(backup))
        .build()
        .unwrap();
    let svc = layer.layer(odd_fails(|| "boom".into(), |n: &u32| *n));
    let err = svc.oneshot(1).await.unwrap_err();
    assert_eq!(err.to_string(), "backup down");
    assert!(err.is::<std::io::Error>());
}

#[tokio::test]
async fn requests_that_are_not_clone_work_with_every_non_service_source() {
    fn n(req: &NotClone) -> u32 {
        req.0
    }
    let value = FallbackLayer::builder(source::value("v".to_owned()))
        .build()
        .unwrap()
        .layer(odd_fails(rate_limited, n));
    assert_eq!(value.oneshot(NotClone(1)).await.unwrap(), "v");

    let sync = FallbackLayer::builder(source::from_fn(|_: Cause<String>| "f".to_owned()))
        .build()
        .unwrap()
        .layer(odd_fails(rate_limited, n));
    assert_eq!(sync.oneshot(NotClone(1)).await.unwrap(), "f");

    let asynchronous = FallbackLayer::builder(source::from_async_fn(|_: Cause<String>| async {
        Ok::<_, BoxError>("a".to_owned())
    }))
    .build()
    .unwrap()
    .layer(odd_fails(rate_limited, n));
    assert_eq!(asynchronous.oneshot(NotClone(1)).await.unwrap(), "a");

    let keyed = FallbackLayer::builder(source::service_with(
        service_fn(|n: u32| async move { Ok::<_, BoxError>(format!("s {n}")) }),
        |req: &NotClone| req.0,
    ))
    .build()
    .unwrap()
    .layer(odd_fails(rate_limited, n));
    assert_eq!(keyed.oneshot(NotClone(3)).await.unwrap(), "s 3");
}

/// Fails `poll_ready` with a rate limit once, then is ready; counts calls.
#[derive(Clone, Default)]
struct FailsReadinessOnce {
    failed: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
}

impl Service<u32> for FailsReadinessOnce {
    type Response = String;
    type Error = BoxError;
    type Future = Ready<Result<String, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.failed.fetch_add(1, Ordering::SeqCst) == 0 {
            Poll::Ready(Err(rate_limited()))
        } else {
            Poll::Ready(Ok(()))
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(format!("inner {req}")))
    }
}

#[tokio::test]
async fn a_claimed_readiness_error_is_answered_without_calling_the_inner_service() {
    let recorder = Arc::new(Recorder::default());
    let inner = FailsReadinessOnce::default();
    let calls = inner.calls.clone();
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .metrics(recorder.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);

    assert_eq!(
        svc.ready().await.unwrap().call(1).await.unwrap(),
        "fallback"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    assert_eq!(recorder.take()[0].1, FallbackTrigger::Rejection);
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), "inner 2");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_readiness_error_is_answered_when_its_future_is_polled() {
    let recorder = Arc::new(Recorder::default());
    let inner = FailsReadinessOnce::default();
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .metrics(recorder.clone())
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);

    // Dropped unpolled: the source never ran, and nothing was reported.
    drop(svc.ready().await.unwrap().call(1));
    assert!(recorder.take().is_empty());
    // The readiness error was spent on that call: the next one is served.
    assert_eq!(svc.ready().await.unwrap().call(2).await.unwrap(), "inner 2");
    assert!(recorder.take().is_empty());
}

#[test]
fn an_answered_readiness_error_polled_again_is_an_error_not_a_panic() {
    let inner = FailsReadinessOnce::default();
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = pin!(svc.call(1));
    assert!(
        matches!(future.as_mut().poll(&mut cx), Poll::Ready(Ok(ref answer)) if answer == "fallback")
    );
    let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        future.as_mut().poll(&mut cx)
    }))
    .expect("no panic");
    assert!(matches!(again, Poll::Ready(Err(_))));
}

#[tokio::test]
async fn a_readiness_error_whose_request_a_panicking_keep_lost_is_returned() {
    // Nothing kept, nothing to answer with: the claimed readiness error
    // itself is the answer, and the source is never asked.
    let asked = Arc::new(AtomicUsize::new(0));
    let fallback = service_fn({
        let asked = asked.clone();
        move |_: ()| {
            asked.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, BoxError>("fallback".to_owned()) }
        }
    });
    let layer = FallbackLayer::builder(source::service_with(fallback, |_: &u32| {
        panic!("a keep with a bug");
    }))
    .build()
    .unwrap();
    let mut svc = layer.layer(FailsReadinessOnce::default());
    let err = svc.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<RateLimited>(), "{err}");
    assert_eq!(asked.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn an_unclaimed_readiness_error_is_returned() {
    let inner = FailsReadinessOnce::default();
    let layer = FallbackLayer::builder(source::value(String::new()))
        .on_error::<std::io::Error>()
        .build()
        .unwrap();
    let mut svc = layer.layer(inner);
    let err = svc.ready().await.map(|_| ()).unwrap_err();
    assert!(err.is::<RateLimited>());
}

#[test]
fn an_invalid_name_is_a_config_error() {
    let err = FallbackLayer::builder(source::value(()))
        .name("")
        .build()
        .unwrap_err();
    assert_eq!(err.layer(), LayerKind::Fallback);
    assert_eq!(err.field(), "name");
    assert!(
        FallbackLayer::builder(source::value(()))
            .name("x".repeat(65))
            .build()
            .is_err()
    );
}

#[tokio::test]
async fn debug_names_the_policy_and_into_inner_unwraps() {
    let builder = FallbackLayer::builder(source::value("fallback".to_owned())).name("catalog");
    assert!(format!("{builder:?}").contains("catalog"));
    let layer = builder.build().unwrap();
    assert!(format!("{layer:?}").contains("catalog"));
    assert_eq!(layer.name(), "catalog");
    let svc = layer.layer(odd_fails(rate_limited, |n: &u32| *n));
    assert_eq!(svc.clone().oneshot(1).await.unwrap(), "fallback");
    // Without the layer, the rejection comes back.
    let err = svc.into_inner().oneshot(1).await.unwrap_err();
    assert!(err.is::<RateLimited>());
}

/// One scripted outcome of the inner service.
#[derive(Clone, Copy, Debug)]
enum Outcome {
    Ok,
    BadResponse,
    Rejection,
    WrappedRejection,
    OtherError,
}

fn outcome_strategy() -> impl proptest::strategy::Strategy<Value = Outcome> {
    use proptest::prelude::*;
    prop_oneof![
        Just(Outcome::Ok),
        Just(Outcome::BadResponse),
        Just(Outcome::Rejection),
        Just(Outcome::WrappedRejection),
        Just(Outcome::OtherError),
    ]
}

proptest::proptest! {
    /// Over any sequence of outcomes, exactly the claimed ones are answered
    /// by the fallback and reported once each, with the right trigger, and
    /// everything else comes back as the service gave it.
    #[test]
    fn every_claimed_outcome_is_answered_and_reported_once(
        script in proptest::collection::vec(outcome_strategy(), 0..64),
    ) {
        let recorder = Arc::new(Recorder::default());
        let layer = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
            format!("fallback {}", cause.trigger().as_str())
        }))
        .metrics(recorder.clone())
        .on_rejections()
        .or_when(palisade_fallback::predicate::ResponseIf::new(|res: &String| res == "bad"))
        .build()
        .unwrap();
        let inner = service_fn(|outcome: Outcome| {
            ready(match outcome {
                Outcome::Ok => Ok("good".to_owned()),
                Outcome::BadResponse => Ok("bad".to_owned()),
                Outcome::Rejection => Err(rate_limited()),
                Outcome::WrappedRejection => Err(Wrapped(rate_limited()).into()),
                Outcome::OtherError => Err::<String, BoxError>("other".into()),
            })
        });
        let mut svc = layer.layer(inner);
        let mut expected_events = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());
        for outcome in &script {
            let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else { panic!("ready") };
            let Poll::Ready(result) = pin!(svc.call(*outcome)).poll(&mut cx) else {
                panic!("the inner service answers at once")
            };
            match outcome {
                Outcome::Ok => proptest::prop_assert_eq!(result.unwrap(), "good"),
                Outcome::BadResponse => {
                    proptest::prop_assert_eq!(result.unwrap(), "fallback response");
                    expected_events.push(("default".to_owned(), FallbackTrigger::Response));
                }
                Outcome::Rejection | Outcome::WrappedRejection => {
                    proptest::prop_assert_eq!(result.unwrap(), "fallback rejection");
                    expected_events.push(("default".to_owned(), FallbackTrigger::Rejection));
                }
                Outcome::OtherError => {
                    proptest::prop_assert_eq!(result.unwrap_err().to_string(), "other");
                }
            }
        }
        proptest::prop_assert_eq!(recorder.take(), expected_events);
    }
}

/// Polls `svc` for one call by hand: the inner service answers at once.
fn call_once<S: Service<u32, Response = String>>(svc: &mut S, req: u32) -> bool {
    let mut cx = Context::from_waker(Waker::noop());
    let Poll::Ready(Ok(())) = svc.poll_ready(&mut cx) else {
        return false;
    };
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

#[test]
fn the_happy_path_allocates_nothing() {
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::from_fn(|_: Cause<String>| String::new()))
        .metrics(Metrics::from(recorder.clone()))
        .when(AnyError)
        .build()
        .unwrap();
    // The inner response is built without allocating: an empty `String`.
    let inner = service_fn(|_n: u32| ready(Ok::<_, BoxError>(String::new())));
    let mut svc = layer.layer(inner);
    assert!(call_once(&mut svc, 0));

    let info = allocation_counter::measure(|| {
        for n in 0..100 {
            assert!(call_once(&mut svc, n));
        }
    });
    assert_eq!(info.count_total, 0, "happy path allocated: {info:?}");
    assert!(recorder.take().is_empty());

    // The same harness sees the error path allocate (the boxed error).
    let failing = service_fn(|_n: u32| ready(Err::<String, BoxError>(rate_limited())));
    let mut svc = layer.layer(failing);
    let info = allocation_counter::measure(|| {
        assert!(call_once(&mut svc, 1));
    });
    assert!(info.count_total > 0);
    assert_eq!(recorder.take().len(), 1);
}

/// Not ready until `open` is set.
#[derive(Clone, Default)]
struct Gate {
    open: Arc<std::sync::atomic::AtomicBool>,
}

impl Service<u32> for Gate {
    type Response = String;
    type Error = BoxError;
    type Future = Ready<Result<String, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    }

    fn call(&mut self, req: u32) -> Self::Future {
        ready(Ok(format!("inner {req}")))
    }
}

#[test]
fn readiness_is_the_inner_services() {
    let gate = Gate::default();
    let open = gate.open.clone();
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .build()
        .unwrap();
    let mut svc = layer.layer(gate);
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_pending());
    open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let Poll::Ready(Ok(res)) = pin!(svc.call(5)).poll(&mut cx) else {
        panic!("answers at once")
    };
    assert_eq!(res, "inner 5");
}

/// Fails with a rate-limit rejection for odd requests, answers even ones.
fn limited_when_odd() -> impl Service<
    u32,
    Response = String,
    Error = BoxError,
    Future = impl std::future::Future<Output = Result<String, BoxError>> + Send,
> + Clone {
    service_fn(|n: u32| async move {
        if n % 2 == 1 {
            Err(rate_limited())
        } else {
            Ok(format!("served {n}"))
        }
    })
}

#[tokio::test]
async fn a_source_that_panics_answers_with_the_panic_and_the_service_goes_on() {
    let layer = FallbackLayer::builder(source::from_fn(|_: Cause<String>| -> String {
        panic!("a fallback with a bug")
    }))
    .build()
    .unwrap();
    let svc = layer.layer(limited_when_odd());
    let err = svc.clone().oneshot(1).await.unwrap_err();
    let panicked = err
        .downcast_ref::<palisade_core::Panicked>()
        .unwrap_or_else(|| panic!("not a panic: {err}"));
    assert_eq!(panicked.message(), "a fallback with a bug");
    assert_eq!(svc.oneshot(2).await.unwrap(), "served 2");
}

#[tokio::test]
async fn a_fallible_source_whose_answer_panics_answers_with_the_rejection() {
    let layer = FallbackLayer::builder(source::from_async_fn(|_: Cause<String>| async {
        if true {
            panic!("a fallback with a bug");
        }
        Ok::<String, BoxError>(String::new())
    }))
    .build()
    .unwrap();
    let svc = layer.layer(limited_when_odd());
    let err = svc.oneshot(1).await.unwrap_err();
    let failed = err
        .downcast_ref::<FallbackFailed>()
        .unwrap_or_else(|| panic!("not a failed fallback: {err}"));
    assert!(find_rejection(&*err).unwrap().retry_after().is_some());
    assert!(failed.fallback_error().is::<palisade_core::Panicked>());
}

#[tokio::test]
async fn a_predicate_that_panics_lets_the_error_go_on() {
    struct Panics;
    impl palisade_fallback::predicate::Predicate<String> for Panics {
        fn check_error(&self, _: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
            panic!("a predicate with a bug")
        }
        fn check_response(&self, _: &String) -> bool {
            false
        }
    }
    let layer = FallbackLayer::builder(source::from_fn(|_: Cause<String>| "fallback".to_owned()))
        .when(Panics)
        .build()
        .unwrap();
    let svc = layer.layer(limited_when_odd());
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(find_rejection(&*err).is_some(), "{err}");
}

#[tokio::test]
async fn a_response_predicate_that_panics_lets_the_response_go_on() {
    let layer = FallbackLayer::builder(source::from_fn(|_: Cause<String>| "fallback".to_owned()))
        .on_response_if(|res: &String| -> bool { panic!("a response predicate with a bug: {res}") })
        .build()
        .unwrap();
    let svc = layer.layer(limited_when_odd());
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), "served 2");
    // The service goes on, its errors judged as before (this predicate
    // claims none).
    assert_eq!(svc.clone().oneshot(4).await.unwrap(), "served 4");
    let err = svc.oneshot(1).await.unwrap_err();
    assert!(find_rejection(&*err).is_some(), "{err}");
}

#[tokio::test]
async fn a_keep_that_panics_lets_the_call_go_on_and_its_error_through() {
    // What the source keeps of each request is the user's code, run on
    // every call: a panic there neither leaves the layer nor stops a call
    // that needs no fallback; one that does gets its own error.
    let fallback = service_fn(|_: ()| async { Ok::<_, BoxError>("fallback".to_owned()) });
    let layer = FallbackLayer::builder(source::service_with(fallback, |n: &u32| {
        assert!(*n < 100, "a keep with a bug");
    }))
    .build()
    .unwrap();
    let svc = layer.layer(limited_when_odd());
    assert_eq!(svc.clone().oneshot(102).await.unwrap(), "served 102");
    let err = svc.clone().oneshot(101).await.unwrap_err();
    assert!(find_rejection(&*err).is_some(), "{err}");
    // A request it keeps is answered as before.
    assert_eq!(svc.oneshot(1).await.unwrap(), "fallback");
}

#[test]
fn polling_a_finished_response_again_is_an_error_not_a_panic() {
    // An `async` block panics when resumed after completion: the fallback,
    // outermost, must not reach a finished inner or answer future again.
    let layer = FallbackLayer::builder(source::value("fallback".to_owned()))
        .build()
        .unwrap();
    let mut svc = layer.layer(limited_when_odd());
    let mut cx = Context::from_waker(Waker::noop());
    for (n, first) in [(2, "served 2"), (1, "fallback")] {
        assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
        let mut future = pin!(svc.call(n));
        let Poll::Ready(Ok(res)) = future.as_mut().poll(&mut cx) else {
            panic!("answers at once")
        };
        assert_eq!(res, first);
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            future.as_mut().poll(&mut cx)
        }))
        .expect("no panic");
        let Poll::Ready(Err(err)) = again else {
            panic!("an error at once")
        };
        assert!(
            err.downcast_ref::<palisade_fallback::error::FallbackFailed>()
                .is_none(),
            "{err}"
        );
    }
}

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("a destructor with a bug");
        }
    }
}

#[test]
fn dropping_a_pending_answer_contains_its_destructors_panic() {
    let layer = FallbackLayer::builder(source::from_async_fn(|_: Cause<String>| async {
        let _guard = PanicsOnDrop;
        std::future::pending::<Result<String, BoxError>>().await
    }))
    .build()
    .unwrap();
    let mut svc = layer.layer(limited_when_odd());
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut future = Box::pin(svc.call(1));
    assert!(future.as_mut().poll(&mut cx).is_pending());
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(future)));
    assert!(dropped.is_ok(), "the destructor's panic left the layer");
}

#[test]
fn dropping_a_call_whose_kept_request_panics_as_it_drops_contains_the_panic() {
    // What the source keeps of a request is dropped unused with any call
    // it does not answer: its destructor is the user's code too.
    let fallback = service_fn(|_: PanicsOnDrop| async { Ok::<_, BoxError>("fallback".to_owned()) });
    let layer = FallbackLayer::builder(source::service_with(fallback, |_: &u32| PanicsOnDrop))
        .build()
        .unwrap();
    let mut svc = layer.layer(limited_when_odd());
    let mut cx = Context::from_waker(Waker::noop());
    // One call answered by the service, one abandoned before it finished.
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let mut answered = Box::pin(svc.call(2));
    let Poll::Ready(Ok(res)) = answered.as_mut().poll(&mut cx) else {
        panic!("answers at once")
    };
    assert_eq!(res, "served 2");
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let abandoned = Box::pin(svc.call(4));
    for future in [answered, abandoned] {
        let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(future)));
        assert!(dropped.is_ok(), "the kept request's panic left the layer");
    }
}

/// An error whose `source()` panics: the chain a rejection is looked for
/// in is the service's code.
#[derive(Debug)]
struct BrokenChain;

impl fmt::Display for BrokenChain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an error with a broken chain")
    }
}

impl Error for BrokenChain {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        panic!("a source() with a bug")
    }
}

#[tokio::test]
async fn a_claimed_error_whose_chain_panics_is_answered_as_the_services_error() {
    // A predicate that claims without looking at the chain leaves the
    // layer to look for a rejection in it.
    struct ClaimsAll;
    impl palisade_fallback::predicate::Predicate<String> for ClaimsAll {
        fn check_error(&self, _: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
            Some(FallbackTrigger::Error)
        }
        fn check_response(&self, _: &String) -> bool {
            false
        }
    }
    let recorder = Arc::new(Recorder::default());
    let layer = FallbackLayer::builder(source::from_fn(|cause: Cause<String>| {
        format!("fallback for {:?}", cause.trigger())
    }))
    .name("catalog")
    .when(ClaimsAll)
    .metrics(recorder.clone())
    .build()
    .unwrap();
    let svc = layer.layer(service_fn(|_: u32| {
        ready(Err::<String, BoxError>(Box::new(BrokenChain)))
    }));
    let answered = svc.oneshot(1).await.unwrap();
    assert_eq!(answered, "fallback for Error");
    assert_eq!(
        recorder.take(),
        vec![("catalog".to_owned(), FallbackTrigger::Error)]
    );
}

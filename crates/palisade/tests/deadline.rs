//! A client stack inside a served call follows that call's deadline: when
//! the deadline was a remote caller's, a downstream call that runs out of
//! it does not count against the dependency.

#![cfg(all(feature = "breaker", feature = "timeout"))]

use std::time::Duration;

use palisade::breaker::CircuitBreakerLayer;
use palisade::core::CircuitState;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::timeout::{FollowDeadline, TimeoutLayer};
use palisade::{BoxError, Elapsed};
use tower::{Layer, ServiceBuilder, ServiceExt, service_fn};

#[tokio::test(start_paused = true)]
async fn a_client_in_a_hurry_cannot_open_the_breaker_every_client_shares() {
    // The downstream client: a breaker that opens on half of four calls
    // failing, and a 1 s timeout that follows the served call's deadline.
    // The dependency is healthy and answers in 200 ms.
    let breaker = CircuitBreakerLayer::builder()
        .name("inventory")
        .count_window(4)
        .minimum_calls(4)
        .failure_rate_threshold(0.5)
        .build()
        .unwrap();
    let handle = breaker.handle();
    let client = ServiceBuilder::new()
        .layer(breaker)
        .layer(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .deadline_source(FollowDeadline)
                .build()
                .unwrap(),
        )
        .service(service_fn(|(): ()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, BoxError>("stock")
        }));
    // The server: 5 s of its own, shorter if the caller asks.
    let server = TimeoutLayer::builder()
        .timeout(Duration::from_secs(5))
        .http()
        .build()
        .unwrap()
        .layer(service_fn(move |_: http::Request<()>| {
            let client = client.clone();
            async move { client.oneshot(()).await }
        }));
    let hurried = || {
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", "50m".parse().unwrap());
        request
    };

    // One client asks for 50 ms, four times: each downstream call runs out
    // of the caller's deadline, and says so.
    for _ in 0..4 {
        let error = server.clone().oneshot(hurried()).await.unwrap_err();
        let elapsed = error.downcast_ref::<Elapsed>().expect("timed out");
        assert!(elapsed.is_caller_deadline(), "{elapsed}");
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    // The next client, with no deadline of its own, is served.
    let served = server.clone().oneshot(http::Request::new(())).await;
    assert_eq!(served.unwrap(), "stock");

    // A deadline of the service's own is the dependency's problem: too
    // slow for it, three calls (with the success, half of four) open the
    // breaker.
    let strict = TimeoutLayer::builder()
        .timeout(Duration::from_millis(100))
        .build()
        .unwrap()
        .layer(server);
    for _ in 0..3 {
        let error = strict
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap_err();
        assert!(
            !error
                .downcast_ref::<Elapsed>()
                .unwrap()
                .is_caller_deadline()
        );
    }
    assert_eq!(handle.state(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn an_answer_at_the_callers_deadline_does_not_count_against_the_server() {
    // A server whose breaker counts 5xx answers, and whose handler answers
    // 504 when its downstream call (following the served call's deadline)
    // runs out of time. A client in a hurry makes both deadlines fire in
    // the same instant: the handler's 504 is too late for that client, and
    // says nothing of the server's health.
    let downstream = TimeoutLayer::builder()
        .timeout(Duration::from_secs(5))
        .deadline_source(FollowDeadline)
        .build()
        .unwrap()
        .layer(service_fn(|(): ()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, BoxError>("stock")
        }));
    let policy = palisade::Stack::new("api")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .count_window(4)
                .minimum_calls(4)
                .failure_rate_threshold(0.5),
        )
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(5))
                .http(),
        )
        .build()
        .unwrap();
    let handle = policy.circuit_breaker().handle();
    let server = policy.layer(service_fn(move |_: http::Request<()>| {
        let downstream = downstream.clone();
        async move {
            let status = match downstream.oneshot(()).await {
                Ok(_) => http::StatusCode::OK,
                Err(err) if err.is::<Elapsed>() => http::StatusCode::GATEWAY_TIMEOUT,
                Err(_) => http::StatusCode::BAD_GATEWAY,
            };
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }
    }));
    for _ in 0..4 {
        let mut request = http::Request::new(());
        request
            .headers_mut()
            .insert("grpc-timeout", "50m".parse().unwrap());
        let err = server.clone().oneshot(request).await.unwrap_err();
        let elapsed = err.downcast_ref::<Elapsed>().expect("the caller's timeout");
        assert!(elapsed.is_caller_deadline());
    }
    assert_eq!(handle.state(), CircuitState::Closed);
    assert_eq!(handle.counts().failures, 0);
    // Without a deadline of the caller's, the same 504 counts.
    let slow = TimeoutLayer::builder()
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap()
        .layer(service_fn(|(): ()| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Ok::<_, BoxError>("stock")
        }));
    let server = policy.layer(service_fn(move |_: http::Request<()>| {
        let slow = slow.clone();
        async move {
            let status = match slow.oneshot(()).await {
                Ok(_) => http::StatusCode::OK,
                Err(_) => http::StatusCode::GATEWAY_TIMEOUT,
            };
            Ok::<_, BoxError>(http::Response::builder().status(status).body(()).unwrap())
        }
    }));
    for _ in 0..4 {
        let res = server
            .clone()
            .oneshot(http::Request::new(()))
            .await
            .unwrap();
        assert_eq!(res.status(), http::StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(handle.state(), CircuitState::Open);
}

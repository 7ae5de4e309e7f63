//! The palisade stack on real axum servers (127.0.0.1:0) queried by a real
//! HTTP client: every rejection reaches the client with the right status,
//! and one policy value is one shared policy.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Response, StatusCode};
use axum::routing::get;
use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::CircuitState;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::fallback::{Cause, FallbackLayer, source};
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{Metrics, Stack};
use palisade_metrics::snapshot::SnapshotSink;
use support::{HttpClient, serve, serve_service};
use tower::Layer;

fn quota(requests: u32) -> palisade::ratelimit::RateLimitBuilder {
    // A long period: nothing refills while a test runs.
    RateLimitLayer::builder().quota(requests, Duration::from_secs(3600))
}

#[tokio::test]
async fn the_burst_is_served_then_429_with_retry_after() {
    let policy = Stack::new("api")
        .rate_limit(quota(3))
        .http_errors()
        .build()
        .unwrap();
    let server = serve(
        Router::new()
            .route("/", get(|| async { "ok" }))
            .layer(policy),
    )
    .await;
    let client = HttpClient::new(&server);

    for _ in 0..3 {
        let answer = client.get("/").await;
        assert_eq!(answer.status, StatusCode::OK);
        assert_eq!(answer.body, "ok");
    }
    let answer = client.get("/").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    let retry_after = answer.retry_after().expect("Retry-After is set");
    assert!(
        (1190..=1200).contains(&retry_after),
        "one request refills in 20 minutes: {retry_after}"
    );
    assert_eq!(
        answer.headers["content-type"], "application/problem+json",
        "{answer:?}"
    );
    let problem = answer.json();
    assert_eq!(problem["status"], 429);
    assert_eq!(problem["policy"], "api");
    assert_eq!(problem["reason"], "rate_limited");
}

#[tokio::test]
async fn an_open_breaker_answers_503_without_calling_the_handler() {
    let calls = Arc::new(AtomicU64::new(0));
    let counted = calls.clone();
    let policy = Stack::new("orders")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .count_window(4)
                .minimum_calls(4)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(600)),
        )
        .http_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let app = Router::new()
        .route(
            "/",
            get(move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { (StatusCode::INTERNAL_SERVER_ERROR, "database down") }
            }),
        )
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    for _ in 0..4 {
        assert_eq!(
            client.get("/").await.status,
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    for _ in 0..3 {
        let answer = client.get("/").await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(answer.retry_after().is_some_and(|s| s > 500), "{answer:?}");
        assert_eq!(answer.json()["reason"], "circuit_open");
        assert!(!answer.body.contains("database down"));
    }
    assert_eq!(
        calls.load(Ordering::Relaxed),
        4,
        "rejected calls never reach the handler"
    );
}

#[tokio::test]
async fn a_slow_handler_answers_504() {
    let policy = Stack::new("search")
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .http_errors()
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .route("/fast", get(|| async { "fast" }))
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    let started = std::time::Instant::now();
    let answer = client.get("/slow").await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    // Cut at 1 s; the handler would take 30 s, and the client gives up
    // after 10 s on its own, so only a bound well below that tells.
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the handler was cut short"
    );
    assert_eq!(answer.json()["reason"], "timed_out");
    assert_eq!(client.get("/fast").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_clients_short_grpc_timeout_answers_504_without_opening_the_circuit() {
    let policy = Stack::new("search")
        .circuit_breaker(
            CircuitBreakerLayer::builder()
                .classifier(ServerErrorsAsFailures)
                .count_window(4)
                .minimum_calls(4)
                .failure_rate_threshold(0.5)
                .open_wait(Duration::from_secs(600)),
        )
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .http_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                // Far past the deadline, so a slow machine cannot let it
                // answer first; the timeout drops it.
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/fast", get(|| async { "fast" }))
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    // One client asks for deadlines nothing can meet: its own requests
    // time out, and the circuit every client shares stays closed.
    for _ in 0..8 {
        let answer = client
            .send_with("GET", "/slow", &[("grpc-timeout", "5m")])
            .await;
        assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(client.get("/fast").await.status, StatusCode::OK);

    // The policy's own deadline passing is the dependency's failure: with
    // the one success above, three make the window of four fail at 75%.
    for _ in 0..3 {
        assert_eq!(
            client.get("/slow").await.status,
            StatusCode::GATEWAY_TIMEOUT
        );
    }
    assert_eq!(breaker.state(), CircuitState::Open);
    let answer = client.get("/fast").await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_serving() {
    let snapshot = SnapshotSink::new();
    let policy = Stack::new("api")
        .metrics(Metrics::new(snapshot.clone()))
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(4))
        .catch_panic(CatchPanicLayer::builder())
        .http_errors()
        .build()
        .unwrap();
    let bulkhead = policy.concurrency_limit().clone();
    let app = Router::new()
        .route(
            "/panic",
            get(|| async {
                panic!("secret internal detail");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .route("/ok", get(|| async { "fine" }))
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    for _ in 0..3 {
        let answer = client.get("/panic").await;
        assert_eq!(answer.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(
            !answer.body.contains("secret internal detail"),
            "{answer:?}"
        );
        assert_eq!(answer.json()["reason"], "panicked");
        let ok = client.get("/ok").await;
        assert_eq!(ok.status, StatusCode::OK);
        assert_eq!(ok.body, "fine");
    }
    assert_eq!(bulkhead.in_flight(), 0, "panics gave their permits back");
    let policy = snapshot
        .snapshot()
        .policies
        .into_iter()
        .find(|p| p.name == "api")
        .expect("the policy reported");
    assert_eq!(policy.panics.total, 3);
}

#[tokio::test]
async fn the_fallback_answers_when_configured() {
    let policy = Stack::new("catalog")
        .fallback(
            FallbackLayer::builder(source::from_fn(|cause: Cause<Response<Body>>| {
                Response::builder()
                    .header("x-fallback", cause.trigger().as_str())
                    .body(Body::from("cached catalog"))
                    .unwrap()
            }))
            .on_rejections(),
        )
        .circuit_breaker(CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures))
        .http_errors()
        .build()
        .unwrap();
    let breaker = policy.circuit_breaker().handle();
    let server = serve(
        Router::new()
            .route("/", get(|| async { "live catalog" }))
            .layer(policy),
    )
    .await;
    let client = HttpClient::new(&server);

    assert_eq!(client.get("/").await.body, "live catalog");
    breaker.force_open();
    let answer = client.get("/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "cached catalog");
    assert_eq!(answer.headers["x-fallback"], "rejection");
    breaker.reset();
    assert_eq!(client.get("/").await.body, "live catalog");
}

#[tokio::test]
async fn one_policy_on_the_router_shares_one_limiter_across_routes() {
    let policy = Stack::new("shared")
        .rate_limit(quota(4))
        .http_errors()
        .build()
        .unwrap();
    let app = Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    assert_eq!(client.get("/a").await.status, StatusCode::OK);
    assert_eq!(client.get("/b").await.status, StatusCode::OK);
    assert_eq!(client.get("/a").await.status, StatusCode::OK);
    assert_eq!(client.get("/b").await.status, StatusCode::OK);
    assert_eq!(client.get("/a").await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(client.get("/b").await.status, StatusCode::TOO_MANY_REQUESTS);
}

#[tokio::test]
async fn a_policy_around_the_router_meets_every_request_before_routing() {
    let policy = Stack::new("edge")
        .rate_limit(quota(3))
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(30))
                .http(),
        )
        .http_errors()
        .build()
        .unwrap();
    let router = Router::new().route(
        "/",
        get(|| async {
            // The timeout ran before routing, and its deadline reached the
            // handler.
            palisade::timeout::Deadline::current()
                .map_or(0, |d| d.budget().as_secs())
                .to_string()
        }),
    );
    let server = serve_service(policy.layer(router)).await;
    let client = HttpClient::new(&server);

    let answer = client.get("/").await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(answer.body, "30");
    // A path no route matches still meets the policy: it is answered by
    // the router, and it counts against the shared limit.
    assert_eq!(client.get("/missing").await.status, StatusCode::NOT_FOUND);
    assert_eq!(client.get("/").await.status, StatusCode::OK);
    let refused = client.get("/missing").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["policy"], "edge");
    assert!(refused.retry_after().is_some(), "{refused:?}");
}

#[tokio::test]
async fn a_per_route_policy_is_independent() {
    let strict = Stack::new("strict")
        .rate_limit(quota(2))
        .http_errors()
        .build()
        .unwrap();
    let relaxed = Stack::new("relaxed")
        .rate_limit(quota(5))
        .http_errors()
        .build()
        .unwrap();
    let app = Router::new()
        .route("/strict", get(|| async { "s" }).route_layer(strict))
        .route("/relaxed", get(|| async { "r" }).route_layer(relaxed))
        .route("/open", get(|| async { "o" }));
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    assert_eq!(client.get("/strict").await.status, StatusCode::OK);
    assert_eq!(client.get("/strict").await.status, StatusCode::OK);
    let refused = client.get("/strict").await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.json()["policy"], "strict");
    for _ in 0..5 {
        assert_eq!(client.get("/relaxed").await.status, StatusCode::OK);
    }
    assert_eq!(
        client.get("/relaxed").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    for _ in 0..10 {
        assert_eq!(client.get("/open").await.status, StatusCode::OK);
    }
}

#[tokio::test]
async fn a_full_bulkhead_answers_503() {
    let policy = Stack::new("reports")
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(1))
        .http_errors()
        .build()
        .unwrap();
    let (release, released) = tokio::sync::watch::channel(false);
    let app = Router::new()
        .route(
            "/hold",
            get(move || {
                let mut released = released.clone();
                async move {
                    let _ = released.wait_for(|r| *r).await;
                    "report"
                }
            }),
        )
        .route("/quick", get(|| async { "quick" }))
        .layer(policy);
    let server = serve(app).await;
    let client = HttpClient::new(&server);

    let held = tokio::spawn({
        let client = client.clone();
        async move { client.get("/hold").await }
    });
    // Until `/hold` takes the only slot, `/quick` gets it and answers.
    let mut refused = None;
    for _ in 0..1000 {
        let answer = client.get("/quick").await;
        if answer.status == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(answer);
            break;
        }
        assert_eq!(answer.status, StatusCode::OK);
    }
    let refused = refused.expect("a request is refused while the only slot is held");
    assert_eq!(refused.json()["reason"], "concurrency_full");
    release.send(true).unwrap();
    let held = held.await.unwrap();
    assert_eq!(held.status, StatusCode::OK);
    assert_eq!(held.body, "report");
    assert_eq!(client.get("/quick").await.status, StatusCode::OK);
}

#[tokio::test]
async fn a_leaked_policy_around_the_router_answers_every_rejection() {
    let policy = Stack::new("leaked")
        .rate_limit(quota(4))
        .circuit_breaker(CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures))
        .timeout(
            TimeoutLayer::builder()
                .timeout(Duration::from_secs(1))
                .http(),
        )
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(4))
        .catch_panic(palisade::panic::http::CatchPanicHttpLayer::builder())
        .http_errors()
        .build()
        .unwrap()
        .leak();
    let bulkhead = policy.concurrency_limit().clone();
    let router = Router::new()
        .route("/ok", get(|| async { "fine" }))
        .route(
            "/panic",
            get(|| async {
                panic!("leaked stack handler bug");
                #[allow(unreachable_code)]
                ""
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    // hyper clones the service for every connection and axum for every
    // request: with a leaked stack those clones copy plain references.
    let server = serve_service(policy.layer(router)).await;
    let client = HttpClient::new(&server);

    let ok = client.get("/ok").await;
    assert_eq!((ok.status, ok.body.as_str()), (StatusCode::OK, "fine"));
    let panicked = client.get("/panic").await;
    assert_eq!(panicked.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        !panicked.body.contains("leaked stack handler bug"),
        "{panicked:?}"
    );
    let slow = client.get("/slow").await;
    assert_eq!(slow.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(slow.json()["policy"], "leaked");
    assert_eq!(client.get("/ok").await.status, StatusCode::OK);
    let limited = client.get("/ok").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(limited.retry_after().is_some(), "{limited:?}");
    assert_eq!(bulkhead.in_flight(), 0, "every slot was given back");
}

#[tokio::test]
async fn a_fallback_that_fails_still_answers_the_rejection_it_stood_in_for() {
    let policy = Stack::new("catalog")
        .fallback(
            FallbackLayer::builder(source::from_async_fn(|_: Cause<Response<Body>>| async {
                Err::<Response<Body>, _>(std::io::Error::other("the cache is down too"))
            }))
            .on_rejections(),
        )
        .rate_limit(quota(1))
        .http_errors()
        .build()
        .unwrap();
    let server = serve(
        Router::new()
            .route("/", get(|| async { "live catalog" }))
            .layer(policy),
    )
    .await;
    let client = HttpClient::new(&server);

    assert_eq!(client.get("/").await.body, "live catalog");
    // Limited, and the fallback fails too: the caller still learns it was
    // rate limited and when to come back, not that something broke.
    let answer = client.get("/").await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS, "{answer:?}");
    assert!(answer.retry_after().is_some(), "{answer:?}");
    let problem = answer.json();
    assert_eq!(problem["reason"], "rate_limited");
    assert_eq!(problem["policy"], "catalog");
}

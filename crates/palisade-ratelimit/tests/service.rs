//! The tower service on tokio's paused clock: one policy across clones and
//! routes, `poll_ready`, waiting, keys from requests, missing keys,
//! headers and errors.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use palisade_core::{Event, KeyKind, Metrics, MetricsSink, RejectReason};
use palisade_ratelimit::error::{BoxError, MissingKey, RateLimited};
use palisade_ratelimit::key::{ClientIp, ForwardedHeader, HeaderKey, PeerIp};
use palisade_ratelimit::{HeaderStyle, OnMissingKey, RateLimitLayer};
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready_ok};
use tower::{Layer, Service, ServiceExt, service_fn};

fn echo() -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<()>, Infallible>> + Send,
> + Clone {
    service_fn(|_req: Request<()>| async { Ok(Response::new(())) })
}

fn from(peer: &str) -> Request<()> {
    let mut request = Request::new(());
    let addr: IpAddr = peer.parse().unwrap();
    request.extensions_mut().insert(SocketAddr::new(addr, 443));
    request
}

fn with_xff(peer: &str, xff: &str) -> Request<()> {
    let mut request = from(peer);
    request
        .headers_mut()
        .insert("x-forwarded-for", xff.parse().unwrap());
    request
}

async fn send<S>(svc: &S, request: Request<()>) -> Result<Response<()>, BoxError>
where
    S: Service<Request<()>, Response = Response<()>, Error = BoxError> + Clone,
{
    svc.clone().oneshot(request).await
}

fn limited(result: Result<Response<()>, BoxError>) -> RateLimited {
    result
        .expect_err("expected a rejection")
        .downcast::<RateLimited>()
        .map(|boxed| *boxed)
        .expect("a RateLimited rejection")
}

#[tokio::test(start_paused = true)]
async fn one_layer_is_one_policy_across_clones_and_routes() {
    let layer = RateLimitLayer::builder()
        .quota(2, Duration::from_secs(1))
        .build()
        .unwrap();
    let route_a = layer.layer(echo());
    let route_b = layer.clone().layer(echo());
    send(&route_a, Request::new(())).await.unwrap();
    send(&route_b.clone(), Request::new(())).await.unwrap();
    let refused = limited(send(&route_a, Request::new(())).await);
    assert_eq!(refused.retry_after(), Duration::from_millis(500));
    limited(send(&route_b, Request::new(())).await);
    tokio::time::advance(Duration::from_millis(500)).await;
    send(&route_b, Request::new(())).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn poll_ready_never_waits_for_the_bucket() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .build()
        .unwrap();
    let (mock, mut handle) = tower_test::mock::pair::<u32, u32>();
    let spare = mock.clone();
    let mut svc = tower_test::mock::Spawn::new(layer.layer(mock));

    handle.allow(2);
    assert_ready_ok!(svc.poll_ready());
    let first = svc.call(1);
    let (request, respond) = handle.next_request().await.unwrap();
    assert_eq!(request, 1);
    respond.send_response(10);
    assert_eq!(first.await.unwrap(), 10);

    // The bucket is empty, yet the service is ready: the request is
    // refused when called, and the inner service never sees it.
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(2).await.unwrap_err();
    assert!(err.is::<RateLimited>());

    // Readiness still follows the inner service.
    handle.allow(0);
    let mut other = tower_test::mock::Spawn::new(layer.layer(spare));
    assert_pending!(other.poll_ready());
}

/// A global layer of one request per `period` that holds a refused
/// request for up to `max_delay`.
fn waiting_layer(period: Duration, max_delay: Duration) -> RateLimitLayer {
    RateLimitLayer::builder()
        .quota(1, period)
        .wait_up_to(max_delay)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_holds_a_request_until_its_turn() {
    let layer = waiting_layer(Duration::from_secs(1), Duration::from_secs(2));
    let svc = layer.layer(echo());
    let start = Instant::now();
    send(&svc, Request::new(())).await.unwrap();
    send(&svc, Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    send(&svc, Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
}

#[tokio::test(start_paused = true)]
async fn waiters_get_the_whole_rate_when_the_bucket_holds_a_millisecond() {
    // 5,000 a second with a bucket of 5 (one millisecond of the quota, the
    // least a waiting layer accepts): waiters wake once a millisecond and
    // 5 go through each time, so 100 requests take 19 ms.
    let layer = RateLimitLayer::builder()
        .quota(5_000, Duration::from_secs(1))
        .burst(5)
        .wait_up_to(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let start = Instant::now();
    let mut waiting = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let svc = svc.clone();
        waiting.spawn(async move { send(&svc, Request::new(())).await });
    }
    while let Some(result) = waiting.join_next().await {
        result.unwrap().unwrap();
    }
    // Never faster than the quota (the first 5 at once, then 5 a
    // millisecond), and no later than the next whole millisecond.
    let elapsed = start.elapsed();
    assert!(
        (Duration::from_millis(19)..=Duration::from_millis(20)).contains(&elapsed),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_mode_rejects_at_once_past_the_maximum_delay() {
    let layer = waiting_layer(Duration::from_secs(10), Duration::from_secs(2));
    let svc = layer.layer(echo());
    send(&svc, Request::new(())).await.unwrap();
    let start = Instant::now();
    let refused = limited(send(&svc, Request::new(())).await);
    assert_eq!(refused.retry_after(), Duration::from_secs(10));
    assert_eq!(start.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn waiting_without_a_practical_limit_waits_as_long_as_it_takes() {
    // A maximum delay past what the clock can represent is a wait with no
    // deadline, not an overflow.
    for max_delay in [Duration::MAX, Duration::from_secs(u64::MAX / 2)] {
        let layer = waiting_layer(Duration::from_secs(3600), max_delay);
        let svc = layer.layer(echo());
        send(&svc, Request::new(())).await.unwrap();
        let start = Instant::now();
        send(&svc, Request::new(())).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(3600), "{max_delay:?}");
        // Losing a race re-arms the wait the same way.
        let (a, b) = tokio::join!(send(&svc, Request::new(())), send(&svc, Request::new(())));
        a.unwrap();
        b.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(3 * 3600),
            "{max_delay:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_that_lose_the_race_wait_again_within_their_deadline() {
    let layer = waiting_layer(Duration::from_secs(1), Duration::from_millis(1500));
    let svc = layer.layer(echo());
    send(&svc, Request::new(())).await.unwrap();
    let start = Instant::now();
    // Two waiters for one refill: one is admitted at 1 s; the other would
    // need until 2 s, past its 1.5 s budget, and is refused at 1 s.
    let (a, b) = tokio::join!(send(&svc, Request::new(())), send(&svc, Request::new(())));
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(usize::from(a.is_ok()) + usize::from(b.is_ok()), 1);
    let refused = limited(if a.is_err() { a } else { b });
    assert_eq!(refused.retry_after(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_takes_nothing_from_the_bucket() {
    let layer = waiting_layer(Duration::from_secs(1), Duration::from_secs(5));
    let svc = layer.layer(echo());
    send(&svc, Request::new(())).await.unwrap();
    let waiter = tokio::time::timeout(Duration::from_millis(100), send(&svc, Request::new(())));
    assert!(waiter.await.is_err(), "the waiter was cancelled");
    tokio::time::advance(Duration::from_millis(900)).await;
    // The refill is still there for the next request, with no wait.
    let start = Instant::now();
    send(&svc, Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO);
}

/// A service that takes `takes` per call, behind tower's
/// `ConcurrencyLimit` of one: readiness holds its only permit.
fn one_at_a_time(
    takes: Duration,
) -> impl Service<
    Request<()>,
    Response = Response<()>,
    Error = BoxError,
    Future = impl Future<Output = Result<Response<()>, BoxError>> + Send,
> + Clone {
    tower::limit::ConcurrencyLimitLayer::new(1).layer(service_fn(
        move |_req: Request<()>| async move {
            tokio::time::sleep(takes).await;
            Ok::<_, BoxError>(Response::new(()))
        },
    ))
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_holds_no_capacity_of_the_inner_service() {
    // Key "a" spends its bucket and its next request waits 10 s; key "b",
    // with a full bucket, must not wait behind it for the inner service's
    // only permit.
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(10))
        .wait_up_to(Duration::from_secs(10))
        .keyed_by(HeaderKey::new(http::HeaderName::from_static("x-client")))
        .build()
        .unwrap();
    let svc = layer.layer(one_at_a_time(Duration::ZERO));
    let client = |name: &'static str| {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert("x-client", name.parse().unwrap());
        request
    };
    send(&svc, client("a")).await.unwrap();
    let waiter = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, client("a")).await }
    });
    tokio::task::yield_now().await;
    let start = Instant::now();
    send(&svc, client("b")).await.unwrap();
    assert_eq!(start.elapsed(), Duration::ZERO, "b waited behind a's wait");
    waiter.await.unwrap().unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn an_admitted_waiter_then_waits_for_its_service_to_be_ready() {
    // One token a second; every call takes 3 s, one at a time. The second
    // request is admitted at 1 s and called at 3 s, when the first ends.
    let layer = waiting_layer(Duration::from_secs(1), Duration::from_secs(2));
    let svc = layer.layer(one_at_a_time(Duration::from_secs(3)));
    let start = Instant::now();
    let first = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, Request::new(())).await }
    });
    tokio::task::yield_now().await;
    send(&svc, Request::new(())).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    first.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn an_admitted_waiter_gets_the_error_of_its_service_readiness() {
    #[derive(Clone)]
    struct Failing(Arc<AtomicUsize>);
    impl Service<Request<()>> for Failing {
        type Response = Response<()>;
        type Error = BoxError;
        type Future = std::future::Ready<Result<Response<()>, BoxError>>;
        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), BoxError>> {
            // Ready twice (the first request, and the second's
            // `poll_ready` before its wait), then broken.
            if self.0.fetch_add(1, Ordering::SeqCst) < 2 {
                std::task::Poll::Ready(Ok(()))
            } else {
                std::task::Poll::Ready(Err("backend gone".into()))
            }
        }
        fn call(&mut self, _: Request<()>) -> Self::Future {
            std::future::ready(Ok(Response::new(())))
        }
    }
    let layer = waiting_layer(Duration::from_secs(1), Duration::from_secs(2));
    let svc = layer.layer(Failing(Arc::new(AtomicUsize::new(0))));
    send(&svc, Request::new(())).await.unwrap();
    let err = send(&svc, Request::new(())).await.unwrap_err();
    assert_eq!(err.to_string(), "backend gone");
}

#[tokio::test(start_paused = true)]
async fn a_spoofed_forwarded_for_from_an_untrusted_peer_does_not_change_the_key() {
    let layer = RateLimitLayer::builder()
        .quota(2, Duration::from_secs(60))
        .keyed_by(ClientIp::new().trust("10.0.0.0/8".parse().unwrap()))
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let peer = "203.0.113.50";
    send(&svc, with_xff(peer, "1.1.1.1")).await.unwrap();
    send(&svc, with_xff(peer, "2.2.2.2")).await.unwrap();
    // A third "client" from the same peer shares the peer's bucket.
    let refused = limited(send(&svc, with_xff(peer, "3.3.3.3, 10.0.0.1")).await);
    assert_eq!(refused.key_kind(), KeyKind::ClientIp);
    limited(send(&svc, from(peer)).await);
    // Another peer is another key.
    send(&svc, from("203.0.113.51")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_client_ip_layer_trusts_nobody_by_default() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(ClientIp::new())
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    send(&svc, with_xff("127.0.0.1", "1.1.1.1")).await.unwrap();
    limited(send(&svc, with_xff("127.0.0.1", "2.2.2.2")).await);
}

#[tokio::test(start_paused = true)]
async fn behind_a_trusted_proxy_the_right_most_untrusted_address_is_the_key() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(
            ClientIp::new()
                .trust("10.0.0.0/8".parse().unwrap())
                .trust("192.168.0.0/16".parse().unwrap()),
        )
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let proxy = "10.0.0.1";
    send(&svc, with_xff(proxy, "6.6.6.6, 198.51.100.1, 192.168.1.1"))
        .await
        .unwrap();
    // Whatever the client wrote on the left, 198.51.100.1 is the key.
    limited(send(&svc, with_xff(proxy, "7.7.7.7, 198.51.100.1, 192.168.9.9")).await);
    limited(send(&svc, with_xff(proxy, "198.51.100.1")).await);
    // Other clients behind the same proxy have their own buckets.
    send(&svc, with_xff(proxy, "198.51.100.2")).await.unwrap();
    send(&svc, with_xff(proxy, "198.51.100.1, 198.51.100.3"))
        .await
        .unwrap();
    // The proxy's own bucket (no header) is separate too.
    send(&svc, from(proxy)).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn forwarded_header_behind_a_trusted_proxy() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(
            ClientIp::new()
                .trust("10.0.0.0/8".parse().unwrap())
                .header(ForwardedHeader::Forwarded),
        )
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let request = |forwarded: &str| {
        let mut request = from("10.1.1.1");
        request
            .headers_mut()
            .insert("forwarded", forwarded.parse().unwrap());
        request
    };
    send(
        &svc,
        request("for=\"[2001:db8:aa:bb::1]:4000\";proto=https"),
    )
    .await
    .unwrap();
    // Same /64, through another trusted hop.
    limited(send(&svc, request("for=\"[2001:db8:aa:bb::2]\", for=10.2.2.2")).await);
    send(&svc, request("for=\"[2001:db8:aa:cc::1]\""))
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn ipv6_peers_in_one_slash_64_share_a_bucket() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(PeerIp::new())
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    send(&svc, from("2001:db8:5:6:1::1")).await.unwrap();
    let refused = limited(send(&svc, from("2001:db8:5:6:ffff::abcd")).await);
    assert_eq!(refused.key_kind(), KeyKind::PeerIp);
    send(&svc, from("2001:db8:5:7::1")).await.unwrap();
    // A /48 prefix groups wider.
    let wide = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(PeerIp::new().ipv6_prefix(48))
        .build()
        .unwrap()
        .layer(echo());
    send(&wide, from("2001:db8:5:6::1")).await.unwrap();
    limited(send(&wide, from("2001:db8:5:ffff::1")).await);
}

#[derive(Debug, Default)]
struct Counts {
    admitted: AtomicUsize,
    rate_limited: AtomicUsize,
    missing: AtomicUsize,
    overflow: AtomicUsize,
    malformed: std::sync::Mutex<Vec<(String, &'static str)>>,
}

impl MetricsSink for Counts {
    fn record(&self, event: &Event<'_>) {
        match event {
            Event::Admitted { .. } => {
                self.admitted.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected {
                reason: RejectReason::RateLimited,
                ..
            } => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
            Event::Rejected {
                reason: RejectReason::MissingKey,
                ..
            } => {
                self.missing.fetch_add(1, Ordering::Relaxed);
            }
            Event::OverflowUsed { .. } => {
                self.overflow.fetch_add(1, Ordering::Relaxed);
            }
            Event::MalformedHeader {
                policy,
                layer: palisade_core::LayerKind::RateLimit,
                header,
            } => {
                self.malformed
                    .lock()
                    .unwrap()
                    .push(((*policy).to_owned(), header));
            }
            _ => {}
        }
    }
}

#[tokio::test(start_paused = true)]
async fn missing_keys_follow_the_configured_policy() {
    let build = |policy: OnMissingKey, counts: &Arc<Counts>| {
        RateLimitLayer::builder()
            .name("keys")
            .quota(1, Duration::from_secs(60))
            .keyed_by(PeerIp::new())
            .on_missing_key(policy)
            .metrics(Metrics::from_arc(counts.clone()))
            .build()
            .unwrap()
            .layer(echo())
    };

    let counts = Arc::new(Counts::default());
    let reject = build(OnMissingKey::Reject, &counts);
    let err = send(&reject, Request::new(())).await.unwrap_err();
    let missing = err.downcast_ref::<MissingKey>().expect("a MissingKey");
    assert_eq!(missing.key_kind(), KeyKind::PeerIp);
    assert_eq!(missing.policy(), "keys");
    assert_eq!(counts.missing.load(Ordering::Relaxed), 1);

    let counts = Arc::new(Counts::default());
    let fallback = build(OnMissingKey::Fallback, &counts);
    send(&fallback, Request::new(())).await.unwrap();
    let refused = limited(send(&fallback, Request::new(())).await);
    assert_eq!(refused.key_kind(), KeyKind::Fallback);
    // Keyed requests are unaffected by the shared bucket.
    send(&fallback, from("192.0.2.1")).await.unwrap();
    assert_eq!(counts.admitted.load(Ordering::Relaxed), 2);
    assert_eq!(counts.rate_limited.load(Ordering::Relaxed), 1);

    let counts = Arc::new(Counts::default());
    let allow = build(OnMissingKey::Allow, &counts);
    for _ in 0..5 {
        send(&allow, Request::new(())).await.unwrap();
    }
    assert_eq!(counts.admitted.load(Ordering::Relaxed), 5);
}

#[tokio::test(start_paused = true)]
async fn a_header_can_be_the_key() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(60))
        .keyed_by(HeaderKey::new(http::header::AUTHORIZATION))
        .on_missing_key(OnMissingKey::Reject)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let with_key = |key: &str| {
        let mut request = Request::new(());
        request
            .headers_mut()
            .insert(http::header::AUTHORIZATION, key.parse().unwrap());
        request
    };
    send(&svc, with_key("token-a")).await.unwrap();
    assert_eq!(
        limited(send(&svc, with_key("token-a")).await).key_kind(),
        KeyKind::Header
    );
    send(&svc, with_key("token-b")).await.unwrap();
    assert!(
        send(&svc, with_key(""))
            .await
            .unwrap_err()
            .is::<MissingKey>()
    );
}

/// 100 requests a minute under `name`, with draft headers.
fn draft(
    name: &str,
) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone
{
    RateLimitLayer::builder()
        .name(name)
        .quota(100, Duration::from_secs(60))
        .headers(HeaderStyle::Draft)
        .build()
        .unwrap()
        .layer(echo())
}

/// `q` per `w` is the quota's rate. With the default burst, `w` is the
/// quota's period, even where the interval per request is cut to whole
/// nanoseconds, and `q` its requests; with another burst, `w` is the time
/// that burst takes at the quota's rate. When `w` had to be rounded up to
/// whole seconds, `q` is what the rate allows in it, rounded down.
#[tokio::test(start_paused = true)]
async fn the_policy_states_the_quotas_rate() {
    let policy = |requests, period, burst: Option<u32>| {
        let builder = RateLimitLayer::builder()
            .name("api")
            .quota(requests, period)
            .headers(HeaderStyle::Draft);
        let builder = match burst {
            Some(burst) => builder.burst(burst),
            None => builder,
        };
        let layer = builder.build().unwrap();
        async move {
            let response = send(&layer.layer(echo()), Request::new(())).await.unwrap();
            response.headers()["ratelimit-policy"].clone()
        }
    };
    assert_eq!(
        policy(3, Duration::from_secs(10), None).await,
        "\"api\";q=3;w=10"
    );
    // 10 a minute with room for 5: 30 s to fill.
    assert_eq!(
        policy(10, Duration::from_secs(60), Some(5)).await,
        "\"api\";q=5;w=30"
    );
    // Rounded up: 2 per 1.000000001 s allow 3.999999996 in 2 s.
    let just_over = Duration::from_nanos(1_000_000_001);
    assert_eq!(policy(2, just_over, None).await, "\"api\";q=3;w=2");
    assert_eq!(
        policy(100, Duration::from_millis(1500), None).await,
        "\"api\";q=133;w=2"
    );
    // 10 a second with room for 5 fills in 0.5 s; 100 a second with no
    // burst, in 10 ms: each states its rate per second, not its burst.
    assert_eq!(
        policy(10, Duration::from_secs(1), Some(5)).await,
        "\"api\";q=10;w=1"
    );
    assert_eq!(
        policy(1, Duration::from_millis(10), None).await,
        "\"api\";q=100;w=1"
    );
    assert_eq!(
        policy(100, Duration::from_secs(1), Some(1)).await,
        "\"api\";q=100;w=1"
    );
}

#[tokio::test(start_paused = true)]
async fn draft_headers_on_admitted_responses() {
    let svc = draft("api");
    let response = send(&svc, Request::new(())).await.unwrap();
    assert_eq!(response.headers()["ratelimit-policy"], "\"api\";q=100;w=60");
    // One request spent: 99 left, full again in 0.6 s, rounded up.
    assert_eq!(response.headers()["ratelimit"], "\"api\";r=99;t=1");
    for _ in 0..49 {
        send(&svc, Request::new(())).await.unwrap();
    }
    let response = send(&svc, Request::new(())).await.unwrap();
    assert_eq!(response.headers()["ratelimit"], "\"api\";r=49;t=31");
}

/// The longest policy names, escaped or not, still give a whole
/// `RateLimit` field (formatted in a fixed buffer), agreeing with
/// `RateLimit-Policy`.
#[tokio::test(start_paused = true)]
async fn draft_headers_are_whole_for_the_longest_policy_names() {
    for name in ["a".repeat(64), "\"".repeat(64), "\\".repeat(64)] {
        let svc = draft(&name);
        let response = send(&svc, Request::new(())).await.unwrap();
        let item = format!("\"{}\"", name.replace('\\', "\\\\").replace('"', "\\\""));
        assert_eq!(
            response.headers()["ratelimit-policy"],
            format!("{item};q=100;w=60").as_str()
        );
        assert_eq!(
            response.headers()["ratelimit"],
            format!("{item};r=99;t=1").as_str()
        );
    }
}

#[tokio::test(start_paused = true)]
async fn legacy_headers_on_admitted_responses() {
    let layer = RateLimitLayer::builder()
        .quota(10, Duration::from_secs(10))
        .burst(3)
        .headers(HeaderStyle::Legacy)
        .build()
        .unwrap();
    let svc = layer.layer(echo());
    let response = send(&svc, Request::new(())).await.unwrap();
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    assert_eq!(header("x-ratelimit-limit"), "3");
    assert_eq!(header("x-ratelimit-remaining"), "2");
    assert_eq!(header("x-ratelimit-reset"), "1");
    assert!(response.headers().get("ratelimit").is_none());
}

/// Two limits in a row: draft fields list both policies, legacy fields
/// say the one with the fewest requests left, whichever layer it is.
#[tokio::test(start_paused = true)]
async fn two_limits_in_a_row_report_both_or_the_tightest() {
    let limit = |name: &str, requests: u32, style: HeaderStyle| {
        RateLimitLayer::builder()
            .name(name)
            .quota(requests, Duration::from_secs(60))
            .headers(style)
            .build()
            .unwrap()
    };
    let both = limit("outer", 100, HeaderStyle::Draft)
        .layer(limit("inner", 10, HeaderStyle::Draft).layer(echo()));
    let response = send(&both, Request::new(())).await.unwrap();
    let all = |name: &str| -> Vec<String> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        all("ratelimit-policy"),
        ["\"inner\";q=10;w=60", "\"outer\";q=100;w=60"]
    );
    assert_eq!(
        all("ratelimit"),
        ["\"inner\";r=9;t=6", "\"outer\";r=99;t=1"]
    );

    for (outer, inner) in [(100, 10), (10, 100)] {
        let legacy = limit_pair(outer, inner);
        let response = send(&legacy, Request::new(())).await.unwrap();
        let headers = response.headers();
        assert_eq!(headers.get_all("x-ratelimit-limit").iter().count(), 1);
        assert_eq!(headers["x-ratelimit-limit"], "10", "the tightest limit");
        assert_eq!(headers["x-ratelimit-remaining"], "9");
        assert_eq!(headers["x-ratelimit-reset"], "6");
    }

    fn limit_pair(
        outer: u32,
        inner: u32,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = BoxError, Future = impl Send> + Clone
    {
        let legacy = |requests| {
            RateLimitLayer::builder()
                .quota(requests, Duration::from_secs(60))
                .headers(HeaderStyle::Legacy)
                .build()
                .unwrap()
        };
        legacy(outer).layer(legacy(inner).layer(echo()))
    }
}

#[tokio::test(start_paused = true)]
async fn inner_errors_and_responses_pass_through() {
    let layer = RateLimitLayer::builder().build().unwrap();
    let failing = layer.layer(service_fn(|_req: Request<()>| async {
        Err::<Response<()>, _>(std::io::Error::other("boom"))
    }));
    let err = failing.oneshot(Request::new(())).await.unwrap_err();
    assert!(err.is::<std::io::Error>());

    let teapot = layer.layer(service_fn(|_req: Request<()>| async {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::IM_A_TEAPOT;
        Ok::<_, Infallible>(response)
    }));
    let response = teapot.oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert!(response.headers().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_reports_its_header_and_its_overflow_once() {
    // One request a second, held up to 5 s; one key slot.
    let counts = Arc::new(Counts::default());
    let svc = RateLimitLayer::builder()
        .name("edge")
        .quota(1, Duration::from_secs(1))
        .wait_up_to(Duration::from_secs(5))
        .keyed_by(ClientIp::new().trust("10.0.0.0/8".parse().unwrap()))
        .max_keys(1)
        .metrics(Metrics::from_arc(counts.clone()))
        .build()
        .unwrap()
        .layer(echo());

    // The walk stops at the malformed entry: both requests are keyed by
    // the proxy, and the second waits a second for its turn, checked
    // again after its wait. Each request reports the header once.
    let start = Instant::now();
    for _ in 0..2 {
        send(&svc, with_xff("10.0.0.1", "203.0.113.7, 1.2.3.4.5"))
            .await
            .unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(counts.malformed.lock().unwrap().len(), 2);

    // The proxy holds the one slot: another client is charged to the
    // overflow bucket, and its second request waits there. Each request
    // reports the overflow once.
    for _ in 0..2 {
        send(&svc, from("192.0.2.1")).await.unwrap();
    }
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(counts.overflow.load(Ordering::Relaxed), 2);
    assert_eq!(counts.admitted.load(Ordering::Relaxed), 4);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_request_that_lands_in_the_overflow_bucket_on_its_recheck_reports_it() {
    use std::task::{Context, Waker};

    // One request a second, held up to 5 s; one key slot.
    let counts = Arc::new(Counts::default());
    let svc = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(1))
        .wait_up_to(Duration::from_secs(5))
        .keyed_by(ClientIp::new())
        .max_keys(1)
        .metrics(Metrics::from_arc(counts.clone()))
        .build()
        .unwrap()
        .layer(echo());
    send(&svc, from("192.0.2.1")).await.unwrap();
    // The client's second request waits a second for its own key...
    let mut waiting = Box::pin(svc.clone().oneshot(from("192.0.2.1")));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(waiting.as_mut().poll(&mut cx).is_pending());
    assert_eq!(counts.overflow.load(Ordering::Relaxed), 0);
    // ...during which another client takes the slot its full bucket frees,
    // so its check after the wait lands in the overflow bucket.
    tokio::time::advance(Duration::from_secs(1)).await;
    send(&svc, from("192.0.2.2")).await.unwrap();
    assert_eq!(counts.overflow.load(Ordering::Relaxed), 0);
    waiting.await.unwrap();
    assert_eq!(counts.overflow.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_malformed_forwarding_entry_the_walk_reaches_is_reported_and_ignored() {
    let counts = Arc::new(Counts::default());
    let svc = RateLimitLayer::builder()
        .name("edge")
        .quota(100, Duration::from_secs(60))
        .keyed_by(ClientIp::new().trust("10.0.0.0/8".parse().unwrap()))
        .metrics(Metrics::from_arc(counts.clone()))
        .build()
        .unwrap()
        .layer(echo());
    let proxy = "10.0.0.1";
    let malformed = || counts.malformed.lock().unwrap().clone();

    // Well formed, `unknown` and obfuscated entries are not malformed.
    send(&svc, with_xff(proxy, "203.0.113.7")).await.unwrap();
    send(&svc, with_xff(proxy, "unknown")).await.unwrap();
    send(&svc, from(proxy)).await.unwrap();
    assert_eq!(malformed(), []);
    // Garbage left of the client's address is never read.
    send(&svc, with_xff(proxy, "garbage, 203.0.113.7"))
        .await
        .unwrap();
    assert_eq!(malformed(), []);

    // Garbage the walk reaches ends it (the key is the proxy), and says so.
    send(&svc, with_xff(proxy, "203.0.113.7, 1.2.3.4.5"))
        .await
        .unwrap();
    assert_eq!(malformed(), [("edge".to_owned(), "x-forwarded-for")]);

    let forwarded = RateLimitLayer::builder()
        .name("edge")
        .quota(100, Duration::from_secs(60))
        .keyed_by(
            ClientIp::new()
                .trust("10.0.0.0/8".parse().unwrap())
                .header(ForwardedHeader::Forwarded),
        )
        .metrics(Metrics::from_arc(counts.clone()))
        .build()
        .unwrap()
        .layer(echo());
    let with_forwarded = |value: &str| {
        let mut request = from(proxy);
        request
            .headers_mut()
            .insert("forwarded", value.parse().unwrap());
        request
    };
    send(&forwarded, with_forwarded("for=_hidden"))
        .await
        .unwrap();
    send(&forwarded, with_forwarded("for=unknown;proto=https"))
        .await
        .unwrap();
    assert_eq!(malformed().len(), 1);
    send(&forwarded, with_forwarded("for=\"[2001:db8::1\""))
        .await
        .unwrap();
    assert_eq!(
        malformed(),
        [
            ("edge".to_owned(), "x-forwarded-for"),
            ("edge".to_owned(), "forwarded")
        ]
    );
}

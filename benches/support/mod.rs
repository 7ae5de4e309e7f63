//! What the root benches (and the allocation test) share: the service
//! being protected, the palisade and peer stacks built the same way
//! everywhere, and the timed loops.
//!
//! Every timed loop follows one rule: the layered service is built before
//! timing starts, and each iteration is one `ready().await` plus one
//! `call().await`, on the runtime given, with one `block_on` per batch so
//! the runtime's entry cost is not measured.

#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::core::classify::ServerErrorsAsFailures;
use palisade::fallback::{Cause, FallbackLayer, source};
use palisade::panic::CatchPanicLayer;
use palisade::panic::http::CatchPanicHttpLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::{HttpDeadline, TimeoutLayer, TimeoutLayerBuilder};
use palisade::{BoxError, Stack};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// A rate that no bench can reach: a limiter configured with it admits
/// every request of a run.
pub(crate) const PLENTY: u32 = 1_000_000_000;

/// Concurrency limit of the stacks: far above the calls in flight of any
/// bench, so the bulkheads admit every request.
pub(crate) const SLOTS: usize = 1024;

/// The timeout of every timeout layer: far above any call of a run.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);

/// The answer of every fallback; the protected service never returns it,
/// so seeing it means something below rejected.
pub(crate) const FALLBACK: u64 = u64::MAX;

/// The request that [`Holding`] never answers: it keeps its slot taken.
pub(crate) const HOLD: u64 = u64::MAX;

/// The protected service: answers at once, for `u64` requests (echoing
/// the request) and for `http::Request<()>` (a 200 with a static body).
/// Neither answer allocates.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Echo;

impl Service<u64> for Echo {
    type Response = u64;
    type Error = Infallible;
    type Future = Ready<Result<u64, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: u64) -> Self::Future {
        ready(Ok(request))
    }
}

impl Service<Request<()>> for Echo {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Full<Bytes>>, Infallible>>;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, _request: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
    }
}

/// An `http::Request` as a server would hand it over: GET with a path and
/// the headers every client sends, so that a layer looking a header up
/// pays for searching a map that is not empty.
pub(crate) fn http_request(_n: u64) -> Request<()> {
    let mut request = Request::new(());
    *request.uri_mut() = http::Uri::from_static("/api/v1/items/42");
    let headers = request.headers_mut();
    headers.insert(
        http::header::HOST,
        http::HeaderValue::from_static("127.0.0.1:8080"),
    );
    headers.insert(
        http::header::USER_AGENT,
        http::HeaderValue::from_static("bench/1.0"),
    );
    headers.insert(http::header::ACCEPT, http::HeaderValue::from_static("*/*"));
    request
}

/// The `u64` request of iteration `n`.
pub(crate) fn u64_request(n: u64) -> u64 {
    n
}

/// The answer of the HTTP fallbacks.
pub(crate) fn unavailable<B: Default>() -> Response<B> {
    let mut response = Response::new(B::default());
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// Answers at once, or never (without allocating either way).
#[derive(Debug)]
pub(crate) enum Answer {
    /// Ready with this value.
    Now(u64),
    /// Pending for ever.
    Never,
}

impl Future for Answer {
    type Output = Result<u64, Infallible>;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
        match *self {
            Answer::Now(x) => Poll::Ready(Ok(x)),
            Answer::Never => Poll::Pending,
        }
    }
}

/// Like [`Echo`] for `u64` requests, except that its answer comes on the
/// second poll: the first wakes the task and returns `Pending`, as a call
/// waiting on I/O that is ready at once does. A timeout around it starts
/// its timer.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct WaitsOnce;

impl Service<u64> for WaitsOnce {
    type Response = u64;
    type Error = Infallible;
    type Future = Waited;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: u64) -> Waited {
        Waited {
            value: request,
            waited: false,
        }
    }
}

/// The answer of [`WaitsOnce`].
#[derive(Debug)]
pub(crate) struct Waited {
    value: u64,
    waited: bool,
}

impl Future for Waited {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.waited {
            Poll::Ready(Ok(self.value))
        } else {
            self.waited = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Like [`Echo`], except that request [`HOLD`] never answers: a bulkhead
/// in front of it stays full for as long as that call is kept.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Holding;

impl Service<u64> for Holding {
    type Response = u64;
    type Error = Infallible;
    type Future = Answer;

    #[inline]
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: u64) -> Answer {
        if request == HOLD {
            Answer::Never
        } else {
            Answer::Now(request)
        }
    }
}

/// Takes one slot of `svc`'s concurrency limit with a call that never
/// ends, and keeps it until the returned future is dropped. Must run
/// inside `rt` for limiters that need its timer.
pub(crate) fn hold_a_slot<S>(rt: &Runtime, svc: &S) -> Pin<Box<S::Future>>
where
    S: Service<u64> + Clone,
    S::Error: fmt::Debug,
{
    let mut holder = svc.clone();
    let _context = rt.enter();
    let mut cx = Context::from_waker(std::task::Waker::noop());
    assert!(
        matches!(holder.poll_ready(&mut cx), Poll::Ready(Ok(()))),
        "ready"
    );
    let mut call = Box::pin(holder.call(HOLD));
    assert!(
        call.as_mut().poll(&mut cx).is_pending(),
        "the held call never answers"
    );
    call
}

/// A current-thread runtime with the timer, for the sequential benches.
pub(crate) fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A multi-thread runtime with `workers` worker threads.
pub(crate) fn multi_thread(workers: usize) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Whether every request of a timed loop must succeed, or every one must
/// fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expect {
    /// The happy path: no request fails.
    Ok,
    /// The rejection path: every request fails.
    Err,
}

/// A benched service's answer: whether the service served it, rather than
/// a fallback standing in for a rejection (the stacks' fallbacks turn any
/// rejection into an `Ok`, which a happy-path bench must not count).
pub(crate) trait Served {
    /// Served by the service.
    fn served(&self) -> bool;
}

impl Served for u64 {
    fn served(&self) -> bool {
        *self != FALLBACK
    }
}

impl<B> Served for Response<B> {
    fn served(&self) -> bool {
        self.status() == StatusCode::OK
    }
}

/// Times `iters` sequential `ready().await` + `call().await` on a clone
/// of `svc` (cloned before timing starts), and checks afterwards that the
/// calls succeeded or failed as `expect` says.
pub(crate) fn drive<S, R>(
    rt: &Runtime,
    svc: &S,
    iters: u64,
    request: fn(u64) -> R,
    expect: Expect,
) -> Duration
where
    S: Service<R> + Clone,
    S::Response: Served,
    S::Error: fmt::Debug,
{
    drive_mut(rt, &mut svc.clone(), iters, request, expect)
}

/// [`drive`] for a service that cannot be cloned.
pub(crate) fn drive_mut<S, R>(
    rt: &Runtime,
    svc: &mut S,
    iters: u64,
    request: fn(u64) -> R,
    expect: Expect,
) -> Duration
where
    S: Service<R>,
    S::Response: Served,
    S::Error: fmt::Debug,
{
    let (elapsed, failed) = rt.block_on(async {
        let mut failed = 0_u64;
        let start = Instant::now();
        for n in 0..iters {
            let ready = svc
                .ready()
                .await
                .expect("the benched services are always ready");
            let result = ready.call(black_box(request(n))).await;
            failed += u64::from(!result.as_ref().is_ok_and(Served::served));
            black_box(result.ok());
        }
        (start.elapsed(), failed)
    });
    match expect {
        Expect::Ok => assert_eq!(failed, 0, "a happy-path request failed"),
        Expect::Err => assert_eq!(failed, iters, "a rejection-path request got through"),
    }
    elapsed
}

/// How many requests a contention task sends between two yields.
pub(crate) const YIELD_EVERY: u64 = 256;

/// Times `iters` requests in total through `tasks` clones of `svc`, each
/// driven by its own task on `rt` (a multi-thread runtime), all started
/// together. Spawning happens before timing starts.
pub(crate) fn contend<S, R>(
    rt: &Runtime,
    svc: &S,
    tasks: usize,
    iters: u64,
    request: fn(u64) -> R,
) -> Duration
where
    S: Service<R> + Clone + Send + 'static,
    S::Response: Served,
    S::Future: Send,
    S::Error: fmt::Debug + Send,
    R: Send + 'static,
{
    let per_task = iters.div_ceil(tasks as u64).max(1);
    let start_line = Arc::new(tokio::sync::Barrier::new(tasks + 1));
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let mut svc = svc.clone();
            let start_line = start_line.clone();
            rt.spawn(async move {
                start_line.wait().await;
                for n in 0..per_task {
                    let ready = svc.ready().await.expect("ready");
                    let served = ready
                        .call(black_box(request(n)))
                        .await
                        .as_ref()
                        .is_ok_and(Served::served);
                    assert!(
                        served,
                        "a happy-path request failed or was answered by a fallback"
                    );
                    // The services answer at once, so a task would never
                    // give its worker back: yield now and then, as a task
                    // waiting on I/O would, so that the tasks interleave
                    // and the runtime can balance them across workers.
                    if n % YIELD_EVERY == YIELD_EVERY - 1 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    let elapsed = rt.block_on(async move {
        start_line.wait().await;
        let start = Instant::now();
        for handle in handles {
            handle.await.expect("task");
        }
        start.elapsed()
    });
    // Scale to exactly `iters` requests.
    elapsed.mul_f64(iters as f64 / (per_task * tasks as u64) as f64)
}

/// One `poll_ready` + `call` + polls of the response future, by hand with
/// a no-op waker, on the current thread. Panics if the service is not
/// ready at once or its answer within two polls (every happy path benched
/// here answers on the first, or on the second after [`WaitsOnce`]'s
/// wait).
pub(crate) fn call_now<S: Service<R>, R>(svc: &mut S, request: R) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(std::task::Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(err)) => return Err(err),
        Poll::Pending => panic!("the service is not ready at once"),
    }
    let mut future = std::pin::pin!(svc.call(request));
    for _ in 0..2 {
        if let Poll::Ready(result) = future.as_mut().poll(&mut cx) {
            return result;
        }
    }
    panic!("the answer is not ready within two polls")
}

// ---------------------------------------------------------------------------
// palisade, one layer at a time

/// palisade's rate limiter, global, that admits every request of a run.
pub(crate) fn palisade_rate_limit() -> palisade::ratelimit::RateLimitLayer {
    RateLimitLayer::builder()
        .quota(PLENTY, Duration::from_secs(1))
        .build()
        .expect("valid")
}

/// palisade's circuit breaker with its defaults.
pub(crate) fn palisade_breaker() -> palisade::breaker::CircuitBreakerLayer {
    CircuitBreakerLayer::builder().build().expect("valid")
}

/// A service that fails every call at once: a dependency that is down.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Failing;

impl Service<u64> for Failing {
    type Response = u64;
    type Error = std::io::Error;
    type Future = Ready<Result<u64, std::io::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), std::io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: u64) -> Self::Future {
        ready(Err(std::io::Error::other("the dependency is down")))
    }
}

/// Trips the breaker of `layer` open the way a failing dependency does:
/// 200 failed calls, enough for palisade's at its defaults (it opens after
/// 20, its minimum) and for tower-resilience's (within a window of 100).
pub(crate) fn trip<L>(rt: &Runtime, layer: &L)
where
    L: Layer<Failing>,
    L::Service: Service<u64> + Clone,
    <L::Service as Service<u64>>::Response: Served,
    <L::Service as Service<u64>>::Error: fmt::Debug,
{
    drive(rt, &layer.layer(Failing), 200, u64_request, Expect::Err);
}

/// palisade's timeout.
pub(crate) fn palisade_timeout() -> palisade::timeout::TimeoutLayer {
    TimeoutLayer::builder()
        .timeout(TIMEOUT)
        .build()
        .expect("valid")
}

/// palisade's bulkhead with [`SLOTS`] slots.
pub(crate) fn palisade_bulkhead(slots: usize) -> palisade::bulkhead::BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent(slots)
        .build()
        .expect("valid")
}

/// palisade's fallback answering [`FALLBACK`] on any error.
pub(crate) fn palisade_fallback()
-> FallbackLayer<palisade::fallback::predicate::AnyError, source::Value<u64>> {
    FallbackLayer::builder(source::value(FALLBACK))
        .build()
        .expect("valid")
}

/// palisade's catch-panic layer (panics become `Panicked` errors).
pub(crate) fn palisade_catch_panic() -> CatchPanicLayer {
    CatchPanicLayer::builder().build().expect("valid")
}

// ---------------------------------------------------------------------------
// tower-resilience, one layer at a time

/// tower-resilience's rate limiter that admits every request of a run
/// and refuses at once (no wait) when it has no permit.
pub(crate) fn peer_rate_limit(
    limit: usize,
    period: Duration,
) -> tower_resilience::ratelimiter::RateLimiterLayer {
    tower_resilience::ratelimiter::RateLimiterLayer::builder()
        .limit_for_period(limit)
        .refresh_period(period)
        .timeout_duration(Duration::ZERO)
        .build()
        .expect("valid")
}

/// tower-resilience's circuit breaker with its defaults, and its handle.
pub(crate) fn peer_breaker() -> (
    tower_resilience::circuitbreaker::CircuitBreakerLayer,
    tower_resilience::circuitbreaker::CircuitBreakerHandle,
) {
    tower_resilience::circuitbreaker::CircuitBreakerLayer::builder()
        .build_with_handle()
        .expect("valid")
}

/// tower-resilience's bulkhead, rejecting at once when full (as palisade's
/// does by default).
pub(crate) fn peer_bulkhead(slots: usize) -> tower_resilience::bulkhead::BulkheadLayer {
    tower_resilience::bulkhead::BulkheadLayer::builder()
        .max_concurrent_calls(slots)
        .reject_when_full()
        .build()
        .expect("valid")
}

/// tower-resilience's time limiter.
pub(crate) fn peer_time_limiter() -> tower_resilience::timelimiter::TimeLimiterLayer {
    tower_resilience::timelimiter::TimeLimiterLayer::builder()
        .timeout_duration(TIMEOUT)
        .build()
}

// ---------------------------------------------------------------------------
// the full stacks

/// The palisade `u64` stack's policy: every layer, limits set so that
/// nothing is rejected.
macro_rules! palisade_u64_policy {
    () => {
        Stack::new("bench")
            .fallback(FallbackLayer::builder(source::value(FALLBACK)))
            .rate_limit(RateLimitLayer::builder().quota(PLENTY, Duration::from_secs(1)))
            .circuit_breaker(CircuitBreakerLayer::builder())
            .timeout(TimeoutLayer::builder().timeout(TIMEOUT))
            .concurrency_limit(BulkheadLayer::builder().max_concurrent(SLOTS))
            .catch_panic(CatchPanicLayer::builder())
            .build()
            .expect("valid")
    };
}

/// palisade's full stack (all six layers, defaults but for limits no run
/// can reach) around `Echo`, for `u64` requests.
pub(crate) fn palisade_stack_u64()
-> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static {
    palisade_u64_policy!().layer(Echo)
}

/// [`palisade_stack_u64`] with its layers leaked
/// ([`StackLayer::leak`](palisade::StackLayer::leak)): services and calls
/// count no references.
pub(crate) fn palisade_stack_u64_leaked()
-> impl Service<u64, Response = u64, Error = BoxError, Future: Send> + Clone + Send + 'static {
    palisade_u64_policy!().leak().layer(Echo)
}

/// The peer stack for `u64` requests: tower-resilience's fallback, rate
/// limiter, breaker and bulkhead, and tower's `Timeout` (tower-http's
/// layers take HTTP requests only, and no peer catches panics of a
/// non-HTTP service, so that slot stays empty).
pub(crate) fn peer_stack_u64()
-> impl Service<u64, Response = u64, Error: fmt::Debug + Send, Future: Send> + Clone + Send + 'static
{
    let (breaker, _handle) = peer_breaker();
    ServiceBuilder::new()
        .layer(tower_resilience::fallback::FallbackLayer::<u64, u64, _>::value(FALLBACK))
        .layer(peer_rate_limit(PLENTY as usize, Duration::from_secs(1)))
        .layer(breaker)
        .layer(tower::timeout::TimeoutLayer::new(TIMEOUT))
        .layer(peer_bulkhead(SLOTS))
        .service(Echo)
}

/// The palisade HTTP stack builder, as an axum server would configure it:
/// 5xx count as breaker failures, the timeout reads per-request deadlines,
/// panics become 500s and every rejection becomes a response.
macro_rules! palisade_http_policy {
    ($timeout:expr) => {
        Stack::new("bench")
            .fallback(FallbackLayer::builder(source::from_fn(
                |_: Cause<Response<Full<Bytes>>>| unavailable(),
            )))
            .rate_limit(RateLimitLayer::builder().quota(PLENTY, Duration::from_secs(1)))
            .circuit_breaker(CircuitBreakerLayer::builder().classifier(ServerErrorsAsFailures))
            .timeout($timeout)
            .concurrency_limit(BulkheadLayer::builder().max_concurrent(SLOTS))
            .catch_panic(CatchPanicHttpLayer::builder())
            .http_errors()
            .build()
            .expect("valid")
    };
}

/// palisade's full HTTP stack around `Echo`, with the timeout's HTTP
/// flavour at its defaults (the handler reads the deadline with
/// `Deadline::current`).
pub(crate) fn palisade_stack_http()
-> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    palisade_http_policy!(http_timeout()).layer(Echo)
}

/// The timeout's HTTP flavour at its defaults, as the HTTP stacks use it.
pub(crate) fn http_timeout() -> TimeoutLayerBuilder<HttpDeadline> {
    TimeoutLayer::builder().timeout(TIMEOUT).http()
}

/// [`http_timeout`] that also puts the applied deadline in the request's
/// extensions.
pub(crate) fn http_timeout_with_extension() -> TimeoutLayerBuilder<HttpDeadline> {
    TimeoutLayer::builder()
        .timeout(TIMEOUT)
        .deadline_source(HttpDeadline::new().expose_deadline(true))
}

/// Same as [`palisade_stack_http`], with the applied deadline also put in
/// the request's extensions (`expose_deadline(true)`: one insertion per
/// request).
pub(crate) fn palisade_stack_http_extension()
-> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    palisade_http_policy!(http_timeout_with_extension()).layer(Echo)
}

/// [`palisade_stack_http`] with its layers leaked.
pub(crate) fn palisade_stack_http_leaked()
-> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ 'static {
    palisade_http_policy!(http_timeout()).leak().layer(Echo)
}

/// The body of tower-http's catch-panic responses, so of every response
/// of the peer HTTP stack.
pub(crate) type PeerBody = tower_http::body::UnsyncBoxBody<Bytes, BoxError>;

/// The peer HTTP stack: tower-resilience's fallback (a backup service),
/// rate limiter, breaker and bulkhead, and tower-http's timeout and
/// catch-panic, in palisade's order.
pub(crate) fn peer_stack_http()
-> impl Service<Request<()>, Response = Response<PeerBody>, Error: fmt::Debug + Send, Future: Send>
+ Clone
+ Send
+ 'static {
    let backup =
        tower::service_fn(|_: Request<()>| ready(Ok::<_, Infallible>(unavailable::<PeerBody>())));
    let (breaker, _handle) = peer_breaker();
    ServiceBuilder::new()
        .layer(tower_resilience::fallback::FallbackLayer::<
            Request<()>,
            Response<PeerBody>,
            _,
        >::tower_service(backup))
        .layer(peer_rate_limit(PLENTY as usize, Duration::from_secs(1)))
        .layer(breaker)
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::GATEWAY_TIMEOUT,
            TIMEOUT,
        ))
        .layer(peer_bulkhead(SLOTS))
        .layer(tower_http::catch_panic::CatchPanicLayer::new())
        .service(Echo)
}

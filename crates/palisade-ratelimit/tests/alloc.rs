//! The admitted path allocates nothing after warm-up, global and keyed;
//! a rejection allocates exactly its boxed error. Services are polled by
//! hand on this thread, since the counter counts this thread only.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{Event, Metrics, MetricsSink};
use palisade_ratelimit::RateLimitLayer;
use palisade_ratelimit::error::RateLimited;
use palisade_ratelimit::key::{KeyFn, PeerIp};
use tower::{Layer, Service, service_fn};

/// Calls a service whose readiness and response are immediate.
fn call_now<S: Service<Req>, Req>(svc: &mut S, request: Req) -> Result<S::Response, S::Error> {
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => return Err(e),
        Poll::Pending => panic!("the service should be ready"),
    }
    let mut future = pin!(svc.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("the response should be ready"),
    }
}

#[derive(Debug, Default)]
struct CountEvents(AtomicU64);

impl MetricsSink for CountEvents {
    fn record(&self, _event: &Event<'_>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn plenty() -> (u32, Duration) {
    (1_000_000_000, Duration::from_secs(1))
}

#[test]
fn admitting_globally_allocates_nothing() {
    let events = Arc::new(CountEvents::default());
    let (requests, period) = plenty();
    let layer = RateLimitLayer::builder()
        .quota(requests, period)
        .metrics(Metrics::from_arc(events.clone()))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    for n in 0..10 {
        call_now(&mut svc, n).unwrap();
    }
    let info = allocation_counter::measure(|| {
        for n in 0..1_000 {
            assert_eq!(call_now(&mut svc, n).unwrap(), n);
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(events.0.load(Ordering::Relaxed), 1_010);
}

#[test]
fn admitting_a_known_key_allocates_nothing() {
    let (requests, period) = plenty();
    let layer = RateLimitLayer::builder()
        .quota(requests, period)
        .metrics(Metrics::from_arc(Arc::new(CountEvents::default())))
        .keyed_by(KeyFn::new(|n: &u64| Some(*n % 4)))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    for n in 0..4 {
        call_now(&mut svc, n).unwrap();
    }
    let info = allocation_counter::measure(|| {
        for n in 0..1_000 {
            call_now(&mut svc, n).unwrap();
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    assert_eq!(layer.limiter().tracked_keys(), 4);
}

#[test]
fn admitting_a_known_peer_allocates_nothing() {
    let (requests, period) = plenty();
    let layer = RateLimitLayer::builder()
        .quota(requests, period)
        .keyed_by(PeerIp::new())
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|request: http::Request<()>| {
        std::future::ready(Ok::<_, Infallible>(request.headers().len()))
    }));
    let peer: SocketAddr = "[2001:db8::1]:443".parse().unwrap();
    let request = || {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(peer);
        request
    };
    call_now(&mut svc, request()).unwrap();
    // Requests are built before counting: their extensions allocate.
    let mut requests: Vec<_> = (0..1_000).map(|_| request()).collect();
    let info = allocation_counter::measure(|| {
        for request in requests.drain(..) {
            call_now(&mut svc, request).unwrap();
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn a_rejection_allocates_only_its_error() {
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(3600))
        .keyed_by(KeyFn::new(|n: &u64| Some(*n)))
        .build()
        .unwrap();
    let mut svc = layer.layer(service_fn(|n: u64| {
        std::future::ready(Ok::<_, Infallible>(n))
    }));
    call_now(&mut svc, 1).unwrap();
    let info = allocation_counter::measure(|| {
        for _ in 0..1_000 {
            let err = call_now(&mut svc, 1).unwrap_err();
            assert!(err.is::<RateLimited>());
        }
    });
    assert_eq!(info.count_total, 1_000, "{info:?}");
}

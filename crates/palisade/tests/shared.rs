//! What a stack shares with its layers: a sink or clock given to the stack
//! replaces the builders' own; without one, each builder keeps its own.

#![cfg(feature = "ratelimit")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::ratelimit::RateLimitLayer;
use palisade::{BoxError, Event, ManualClock, Metrics, MetricsSink, Stack};
use tower::{Layer, Service, ServiceExt, service_fn};

/// Counts rejections.
#[derive(Debug, Default)]
struct Rejections(AtomicU64);

impl MetricsSink for Rejections {
    fn record(&self, event: &Event<'_>) {
        if let Event::Rejected { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Rejections {
    fn count(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

fn echo() -> impl Service<(), Response = (), Error = BoxError, Future: Send> + Clone {
    service_fn(|()| async { Ok::<_, BoxError>(()) })
}

/// One request admitted, the next refused: one rejection event.
async fn spend_and_refuse<S>(svc: &S)
where
    S: Service<(), Response = (), Error = BoxError> + Clone,
{
    svc.clone().oneshot(()).await.unwrap();
    assert!(svc.clone().oneshot(()).await.is_err());
}

#[tokio::test]
async fn a_builders_own_sink_is_kept_when_the_stack_has_none() {
    let own = Arc::new(Rejections::default());
    let policy = Stack::new("api")
        .rate_limit(
            RateLimitLayer::builder()
                .quota(1, Duration::from_secs(60))
                .metrics(Metrics::from_arc(own.clone())),
        )
        .build()
        .unwrap();
    spend_and_refuse(&policy.layer(echo())).await;
    assert_eq!(own.count(), 1);
}

#[tokio::test]
async fn the_stacks_sink_replaces_a_builders_own() {
    let own = Arc::new(Rejections::default());
    let stacks = Arc::new(Rejections::default());
    let policy = Stack::new("api")
        .metrics(Metrics::from_arc(stacks.clone()))
        .rate_limit(
            RateLimitLayer::builder()
                .quota(1, Duration::from_secs(60))
                .metrics(Metrics::from_arc(own.clone())),
        )
        .build()
        .unwrap();
    spend_and_refuse(&policy.layer(echo())).await;
    assert_eq!((own.count(), stacks.count()), (0, 1));
}

#[tokio::test]
async fn a_builders_own_clock_is_kept_when_the_stack_has_none() {
    let clock = ManualClock::new();
    let policy = Stack::new("api")
        .rate_limit(
            RateLimitLayer::builder()
                .quota(1, Duration::from_secs(60))
                .clock(clock.clock()),
        )
        .build()
        .unwrap();
    let svc = policy.layer(echo());
    spend_and_refuse(&svc).await;
    // Only the manual clock moves: the bucket refills on it.
    clock.advance(Duration::from_secs(60));
    svc.clone().oneshot(()).await.unwrap();
}

#[tokio::test]
async fn the_stacks_clock_replaces_a_builders_own() {
    let own = ManualClock::new();
    let stacks = ManualClock::new();
    let policy = Stack::new("api")
        .clock(stacks.clock())
        .rate_limit(
            RateLimitLayer::builder()
                .quota(1, Duration::from_secs(60))
                .clock(own.clock()),
        )
        .build()
        .unwrap();
    let svc = policy.layer(echo());
    spend_and_refuse(&svc).await;
    own.advance(Duration::from_secs(60));
    assert!(
        svc.clone().oneshot(()).await.is_err(),
        "read the builder's clock"
    );
    stacks.advance(Duration::from_secs(60));
    svc.clone().oneshot(()).await.unwrap();
}

//! What a stack shares with its layers: a sink or clock given to the stack
//! replaces the builders' own; without one, each builder keeps its own.

#![cfg(feature = "ratelimit")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade::ratelimit::{RateLimitBuilder, RateLimitLayer};
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

/// A service behind `stack` with a rate limit of one request a minute,
/// built from `limit` (the quota already set).
fn limited(
    stack: Stack,
    limit: RateLimitBuilder,
) -> impl Service<(), Response = (), Error = BoxError> + Clone {
    stack.rate_limit(limit).build().unwrap().layer(echo())
}

fn one_a_minute() -> RateLimitBuilder {
    RateLimitLayer::builder().quota(1, Duration::from_secs(60))
}

#[tokio::test]
async fn a_builders_own_sink_is_kept_unless_the_stack_has_one() {
    let own = Arc::new(Rejections::default());
    let builders = || one_a_minute().metrics(Metrics::from_arc(own.clone()));
    spend_and_refuse(&limited(Stack::new("api"), builders())).await;
    assert_eq!(own.count(), 1, "kept without a stack sink");

    let stacks = Arc::new(Rejections::default());
    let stack = Stack::new("api").metrics(Metrics::from_arc(stacks.clone()));
    spend_and_refuse(&limited(stack, builders())).await;
    assert_eq!(
        (own.count(), stacks.count()),
        (1, 1),
        "replaced by the stack's"
    );
}

#[tokio::test]
async fn a_builders_own_clock_is_kept_unless_the_stack_has_one() {
    let own = ManualClock::new();
    let svc = limited(Stack::new("api"), one_a_minute().clock(own.clock()));
    spend_and_refuse(&svc).await;
    // Only the manual clock moves: the bucket refills on it.
    own.advance(Duration::from_secs(60));
    svc.clone().oneshot(()).await.unwrap();

    let stacks = ManualClock::new();
    let stack = Stack::new("api").clock(stacks.clock());
    let svc = limited(stack, one_a_minute().clock(own.clock()));
    spend_and_refuse(&svc).await;
    own.advance(Duration::from_secs(60));
    let refused = svc.clone().oneshot(()).await;
    assert!(refused.is_err(), "read the builder's clock");
    stacks.advance(Duration::from_secs(60));
    svc.clone().oneshot(()).await.unwrap();
}

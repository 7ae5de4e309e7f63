//! The timeout layer against the bare service and `tower::timeout::Timeout`,
//! for a call that is ready at once and for one that waits once.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_timeout::TimeoutLayer;
use tower::{Layer, Service, ServiceExt, service_fn};

/// Returns `Pending` once (waking itself), then `Ready`.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<u64, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.0 {
            Poll::Ready(Ok(1))
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn bench_service<S>(c: &mut Criterion, group: &str, name: &str, svc: S)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let mut group = c.benchmark_group(group);
    group.bench_function(name, |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move {
                svc.ready().await.unwrap();
                svc.call(1).await.unwrap()
            }
        });
    });
    group.finish();
}

fn timeout(c: &mut Criterion) {
    let palisade = TimeoutLayer::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let tower = tower::timeout::TimeoutLayer::new(Duration::from_secs(30));

    let ready = service_fn(|x: u64| std::future::ready(Ok::<_, Infallible>(x)));
    bench_service(c, "timeout/ready", "bare", ready);
    bench_service(c, "timeout/ready", "palisade", palisade.layer(ready));
    bench_service(c, "timeout/ready", "tower", tower.layer(ready));

    let pending_once = service_fn(|_: u64| PendingOnce(false));
    bench_service(c, "timeout/pending_once", "bare", pending_once);
    bench_service(
        c,
        "timeout/pending_once",
        "palisade",
        palisade.layer(pending_once),
    );
    bench_service(
        c,
        "timeout/pending_once",
        "tower",
        tower.layer(pending_once),
    );
}

criterion_group!(benches, timeout);
criterion_main!(benches);

//! The bulkhead against the bare service, `tower::limit::ConcurrencyLimit`
//! and `tower::load_shed::LoadShed` over it: admitting a call with room to
//! spare, and rejecting one when every slot is taken.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_bulkhead::BulkheadLayer;
use palisade_bulkhead::adaptive::AdaptiveLimit;
use tower::limit::ConcurrencyLimitLayer;
use tower::load_shed::LoadShedLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt, service_fn};

/// Answers at once, or never (without allocating either way).
enum Answer {
    Now(u64),
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

/// Answers at once, except request 0, which never answers (it holds a slot).
fn backend() -> impl Service<u64, Response = u64, Error = Infallible, Future = Answer> + Clone {
    service_fn(|x: u64| {
        if x == 0 {
            Answer::Never
        } else {
            Answer::Now(x)
        }
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

fn bench<S>(c: &mut Criterion, group: &str, name: &str, svc: S, expect_ok: bool)
where
    S: Service<u64, Response = u64> + Clone,
    S::Error: std::fmt::Debug,
{
    let rt = runtime();
    let mut group = c.benchmark_group(group);
    group.bench_function(name, |b| {
        b.to_async(&rt).iter(|| {
            let mut svc = svc.clone();
            async move {
                svc.ready().await.unwrap();
                let result = svc.call(1).await;
                assert_eq!(result.is_ok(), expect_ok);
            }
        });
    });
    group.finish();
}

/// Takes the only slot of `svc` with a call that never ends, and keeps it.
fn hold_the_slot<S>(svc: &S) -> Pin<Box<S::Future>>
where
    S: Service<u64> + Clone,
{
    let mut holder = svc.clone();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(holder.poll_ready(&mut cx).is_ready());
    let mut call = Box::pin(holder.call(0));
    assert!(call.as_mut().poll(&mut cx).is_pending());
    call
}

fn admit(c: &mut Criterion) {
    let group = "bulkhead/admit";
    bench(c, group, "bare", backend(), true);
    let fixed = BulkheadLayer::builder().max_concurrent(64).build().unwrap();
    bench(c, group, "palisade", fixed.layer(backend()), true);
    let adaptive = BulkheadLayer::builder()
        .adaptive(AdaptiveLimit::gradient())
        .build()
        .unwrap();
    bench(
        c,
        group,
        "palisade_adaptive",
        adaptive.layer(backend()),
        true,
    );
    let tower = ConcurrencyLimitLayer::new(64).layer(backend());
    bench(c, group, "tower_concurrency_limit", tower, true);
    let shed = ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(64))
        .service(backend());
    bench(c, group, "tower_load_shed", shed, true);
}

fn reject(c: &mut Criterion) {
    let group = "bulkhead/reject_full";
    let palisade = BulkheadLayer::builder()
        .max_concurrent(1)
        .build()
        .unwrap()
        .layer(backend());
    let _held = hold_the_slot(&palisade);
    bench(c, group, "palisade", palisade, false);

    // ConcurrencyLimit alone would wait for ever here; LoadShed turns the
    // wait into a rejection.
    let shed = ServiceBuilder::new()
        .layer(LoadShedLayer::new())
        .layer(ConcurrencyLimitLayer::new(1))
        .service(backend());
    let _held_tower = hold_the_slot(&shed);
    bench(c, group, "tower_load_shed", shed, false);
}

criterion_group!(benches, admit, reject);
criterion_main!(benches);

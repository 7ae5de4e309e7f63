//! The cost of the fallback layer on the happy path (no fallback needed),
//! against the bare service and tower-resilience's fallback.
//!
//! Run with:
//! `cargo bench -p palisade-fallback --bench fallback -- --warm-up-time 1 --measurement-time 3`

use std::future::ready;
use std::hint::black_box;

use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use palisade_core::BoxError;
use palisade_fallback::{Cause, FallbackLayer, source};
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

/// One `ready().await` + `call().await` per iteration on `rt`.
fn drive<S>(b: &mut Bencher<'_>, rt: &Runtime, mut svc: S)
where
    S: Service<u64, Response = u64>,
    S::Error: std::fmt::Debug,
{
    b.iter(|| {
        rt.block_on(async {
            let svc = svc.ready().await.unwrap();
            black_box(svc.call(black_box(1)).await.unwrap())
        })
    });
}

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("fallback_happy_path");

    let bare = service_fn(|n: u64| ready(Ok::<_, BoxError>(n)));
    group.bench_function("bare", |b| drive(b, &rt, bare));

    let value = FallbackLayer::builder(source::value(0_u64))
        .build()
        .unwrap()
        .layer(bare);
    group.bench_function("palisade_value", |b| drive(b, &rt, value.clone()));

    let closure = FallbackLayer::builder(source::from_fn(|_: Cause<u64>| 0))
        .on_rejections()
        .build()
        .unwrap()
        .layer(bare);
    group.bench_function("palisade_from_fn_rejections", |b| {
        drive(b, &rt, closure.clone())
    });

    let peer =
        tower_resilience::fallback::FallbackLayer::<u64, u64, BoxError>::value(0).layer(bare);
    group.bench_function("tower_resilience_value", |b| drive(b, &rt, peer.clone()));

    group.finish();
}

criterion_group!(benches, happy_path);
criterion_main!(benches);

//! The cost of `ErrorToResponseLayer` on the happy path (the inner service
//! answers), against the bare service and axum's `HandleErrorLayer`, and
//! the cost of mapping one rejection to a response.
//!
//! Run with:
//! `cargo bench -p palisade-http --bench http -- --warm-up-time 1 --measurement-time 3`

use std::future::ready;
use std::hint::black_box;
use std::time::Duration;

use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use criterion::{Bencher, Criterion, criterion_group, criterion_main};
use http::StatusCode;
use palisade_core::{BoxError, KeyKind, PolicyName, RateLimited};
use palisade_http::ErrorToResponseLayer;
use tokio::runtime::Runtime;
use tower::{Layer, Service, ServiceExt, service_fn};

type Request = http::Request<Body>;

/// One `ready().await` + `call().await` per iteration on `rt`.
fn drive<S>(b: &mut Bencher<'_>, rt: &Runtime, mut svc: S)
where
    S: Service<Request>,
    S::Error: std::fmt::Debug,
{
    b.iter(|| {
        rt.block_on(async {
            let svc = svc.ready().await.unwrap();
            black_box(svc.call(Request::new(Body::empty())).await.unwrap())
        })
    });
}

fn happy_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("error_to_response_happy_path");

    let bare =
        service_fn(|_req: Request| ready(Ok::<_, BoxError>(http::Response::new(Body::empty()))));
    group.bench_function("bare", |b| drive(b, &rt, bare));

    let palisade = ErrorToResponseLayer::new().layer(bare);
    group.bench_function("palisade_error_to_response", |b| {
        drive(b, &rt, palisade.clone())
    });

    let axum = HandleErrorLayer::new(|_err: BoxError| async { StatusCode::INTERNAL_SERVER_ERROR })
        .layer(bare);
    group.bench_function("axum_handle_error", |b| drive(b, &rt, axum.clone()));
    group.finish();
}

fn error_path(c: &mut Criterion) {
    let err: BoxError = RateLimited::new(
        PolicyName::new("api"),
        Duration::from_millis(1500),
        KeyKind::Global,
    )
    .into();
    c.bench_function("to_response_rate_limited", |b| {
        b.iter(|| black_box(palisade_http::to_response::<Body>(black_box(&*err))));
    });
}

criterion_group!(benches, happy_path, error_path);
criterion_main!(benches);

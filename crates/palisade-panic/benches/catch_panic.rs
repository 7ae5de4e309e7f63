//! The catch-panic layers on the happy path, side by side with the bare
//! service and tower-http's `CatchPanic`.
//!
//! Each iteration is `ready().await` + `call().await` on a current-thread
//! runtime; services are built outside the timed closure. The request is
//! `Request<()>` with the default URI, built in the loop for every variant.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body_util::Full;
use palisade_panic::CatchPanicLayer;
use palisade_panic::http::CatchPanicHttpLayer;
use tower::{Layer, Service, ServiceExt};

fn handler(_request: Request<()>) -> Ready<Result<Response<Full<Bytes>>, Infallible>> {
    ready(Ok(Response::new(Full::new(Bytes::from_static(b"ok")))))
}

fn request() -> Request<()> {
    Request::new(())
}

fn run<S>(c: &mut Criterion, name: &str, mut svc: S)
where
    S: Service<Request<()>>,
    S::Error: std::fmt::Debug,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    c.bench_function(name, |b| {
        // One `block_on` per batch, so the runtime's entry cost is not
        // measured: each iteration is one `ready().await` + `call().await`.
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let response = svc.ready().await.unwrap().call(request()).await;
                    std::hint::black_box(response.is_ok());
                }
                start.elapsed()
            })
        });
    });
}

fn bench(c: &mut Criterion) {
    run(c, "bare", tower::service_fn(handler));
    run(
        c,
        "palisade_catch_panic",
        CatchPanicLayer::new().layer(tower::service_fn(handler)),
    );
    run(
        c,
        "palisade_catch_panic_http",
        CatchPanicHttpLayer::new().layer(tower::service_fn(handler)),
    );
    run(
        c,
        "tower_http_catch_panic",
        tower_http::catch_panic::CatchPanicLayer::new().layer(tower::service_fn(handler)),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);

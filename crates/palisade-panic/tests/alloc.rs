//! The happy path allocates nothing, in both flavours.

use std::convert::Infallible;
use std::future::{Future, ready};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Full;
use palisade_panic::CatchPanicLayer;
use palisade_panic::http::CatchPanicHttpLayer;
use tower::{Layer, Service, service_fn};

/// One request through `svc`, polled by hand on this thread.
fn drive<S, R>(svc: &mut S, request: R) -> bool
where
    S: Service<R>,
{
    let mut cx = Context::from_waker(Waker::noop());
    assert!(svc.poll_ready(&mut cx).is_ready());
    let future = pin!(svc.call(request));
    matches!(future.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// Serves one batch of `requests` to warm up, then measures the
/// allocations of serving a second; the requests are built before
/// measuring, so the client's allocations are not the layer's.
fn serve_measured<S>(
    svc: &mut S,
    requests: impl Fn() -> Vec<Request<()>>,
) -> allocation_counter::AllocationInfo
where
    S: Service<Request<()>>,
{
    for request in requests() {
        assert!(drive(svc, request));
    }
    let mut batch = requests();
    allocation_counter::measure(|| {
        for request in batch.drain(..) {
            assert!(drive(svc, request));
        }
    })
}

#[test]
fn the_tower_flavour_allocates_nothing_per_request() {
    let mut svc = CatchPanicLayer::builder()
        .name("alloc")
        .build()
        .unwrap()
        .layer(service_fn(|x: u64| ready(Ok::<_, Infallible>(x + 1))));
    for i in 0..10 {
        assert!(drive(&mut svc, i));
    }
    let info = allocation_counter::measure(|| {
        for i in 0..1_000 {
            assert!(drive(&mut svc, i));
        }
    });
    assert_eq!(info.count_total, 0, "{info:?}");
    // The counter does count on this thread.
    let boxed = allocation_counter::measure(|| drop(std::hint::black_box(Box::new(7_u64))));
    assert_eq!(boxed.count_total, 1);
}

/// The HTTP flavour, named `name`, around a service that answers "ok".
fn http_answering_ok(
    name: &'static str,
) -> impl Service<Request<()>, Response = Response<Full<Bytes>>, Error = Infallible> {
    CatchPanicHttpLayer::builder()
        .name(name)
        .build()
        .unwrap()
        .layer(service_fn(|_: Request<()>| {
            ready(Ok::<_, Infallible>(Response::new(Full::new(
                Bytes::from_static(b"ok"),
            ))))
        }))
}

#[test]
fn the_http_flavour_allocates_nothing_per_request() {
    let mut svc = http_answering_ok("alloc-http");
    let long_path = format!("/{}", "segment/".repeat(40));
    // Requests are built before measuring: the client's allocations are not
    // the layer's. Long paths, extension methods (of up to 15 bytes, which
    // `http` keeps inline; a longer one is copied with one allocation, as
    // the docs say) and gRPC calls included.
    let requests = || -> Vec<Request<()>> {
        (0..500)
            .map(|i| {
                let (method, path, grpc) = match i % 4 {
                    0 => (Method::GET, "/users/42?x=1".to_owned(), false),
                    1 => (Method::POST, long_path.clone(), false),
                    2 => (
                        Method::from_bytes(b"PURGE").unwrap(),
                        "/cache".to_owned(),
                        false,
                    ),
                    _ => (Method::POST, "/pkg.Svc/Call".to_owned(), true),
                };
                let mut builder = Request::builder().method(method).uri(path);
                if grpc {
                    builder = builder.header("content-type", "application/grpc");
                }
                builder.body(()).unwrap()
            })
            .collect()
    };
    let info = serve_measured(&mut svc, requests);
    // Dropping a request frees its parts; nothing else happens on the heap.
    assert_eq!(info.count_total, 0, "{info:?}");
}

#[test]
fn an_extension_method_longer_than_http_keeps_inline_costs_one_allocation() {
    let mut svc = http_answering_ok("alloc-long-method");
    const METHOD: &[u8] = b"VERSION-CONTROL-EXTENDED";
    let requests = || -> Vec<Request<()>> {
        (0..100)
            .map(|_| {
                Request::builder()
                    .method(Method::from_bytes(METHOD).unwrap())
                    .uri("/repo")
                    .body(())
                    .unwrap()
            })
            .collect()
    };
    let info = serve_measured(&mut svc, requests);
    // The documented exception, and nothing more: one copy of the method.
    assert_eq!(
        (info.count_total, info.bytes_total),
        (100, 100 * METHOD.len() as u64),
        "{info:?}"
    );
}

//! The HTTP flavour: 500 without the message, gRPC INTERNAL, custom
//! answers. The log event is checked in `tracing.rs`.

mod support;

use std::convert::Infallible;
use std::future::Ready;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use palisade_core::Metrics;
use palisade_panic::http::{CatchPanicHttpLayer, PanicContext};
use support::PanicSink;
use tower::{Layer, ServiceExt, service_fn};

type Body = Full<Bytes>;

const SECRET: &str = "connection string postgres://admin:hunter2@db";

async fn handler(request: Request<()>) -> Result<Response<Body>, Infallible> {
    if request.uri().path().starts_with("/boom") {
        panic!("{SECRET}");
    }
    Ok(Response::new(Body::from("fine")))
}

fn get(path: &str) -> Request<()> {
    Request::builder().uri(path).body(()).unwrap()
}

fn grpc(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri(path)
        .header("content-type", "application/grpc+proto")
        .body(())
        .unwrap()
}

async fn body_text(response: Response<Body>) -> String {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn a_panic_answers_500_without_the_message() {
    let sink = Arc::new(PanicSink::default());
    let layer = CatchPanicHttpLayer::builder()
        .name("api")
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    let svc = layer.layer(service_fn(handler));

    let response = svc.clone().oneshot(get("/boom")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    let body = body_text(response).await;
    assert_eq!(body, "internal server error");
    assert!(!body.contains("hunter2"));

    let response = svc.oneshot(get("/ok")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body_text(response).await, "fine");

    let events = sink.events();
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message, SECRET,
        "metrics and logs get the message"
    );
}

#[tokio::test]
async fn the_message_is_shown_only_when_exposed() {
    let svc = CatchPanicHttpLayer::builder()
        .expose_message(true)
        .build()
        .unwrap()
        .layer(service_fn(handler));
    let response = svc.oneshot(get("/boom")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        body_text(response).await,
        format!("internal server error: {SECRET}")
    );
}

#[tokio::test]
async fn a_grpc_call_gets_a_trailers_only_internal_status() {
    let svc = CatchPanicHttpLayer::new().layer(service_fn(handler));
    let response = svc.oneshot(grpc("/boom.Svc/Call")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/grpc");
    assert_eq!(response.headers()["grpc-status"], "13");
    assert!(response.headers().get("grpc-message").is_none());
    let status = tonic::Status::from_header_map(response.headers()).expect("a gRPC status");
    assert_eq!(status.code(), tonic::Code::Internal);
    assert!(body_text(response).await.is_empty());
}

#[tokio::test]
async fn grpc_is_told_by_its_media_type_in_any_case_and_grpc_web_keeps_its_own() {
    let svc = CatchPanicHttpLayer::new().layer(service_fn(handler));
    for (sent, answered) in [
        ("Application/gRPC", "application/grpc"),
        ("APPLICATION/GRPC+proto", "application/grpc"),
        ("application/grpc-web+proto", "application/grpc-web"),
        ("application/grpc-web-text", "application/grpc-web-text"),
    ] {
        let request = Request::builder()
            .method(Method::POST)
            .uri("/boom.Svc/Call")
            .header("content-type", sent)
            .body(())
            .unwrap();
        let response = svc.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{sent}");
        assert_eq!(response.headers()["content-type"], answered, "{sent}");
        assert_eq!(response.headers()["grpc-status"], "13", "{sent}");
    }
}

#[tokio::test]
async fn an_exposed_grpc_message_is_percent_encoded_and_read_back_by_tonic() {
    let svc = CatchPanicHttpLayer::builder()
        .expose_message(true)
        .build()
        .unwrap()
        .layer(service_fn(|_: Request<()>| async {
            if true {
                panic!("100% broken\nsecond line é");
            }
            Ok::<_, Infallible>(Response::new(Body::default()))
        }));
    let response = svc.oneshot(grpc("/x.Svc/Call")).await.unwrap();
    assert_eq!(
        response.headers()["grpc-message"],
        "100%25 broken%0Asecond line %C3%A9"
    );
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(status.message(), "100% broken\nsecond line é");
}

#[tokio::test]
async fn a_panic_in_call_is_answered_too() {
    let svc = CatchPanicHttpLayer::new().layer(service_fn(
        |_: Request<()>| -> Ready<Result<Response<Body>, Infallible>> { panic!("in call") },
    ));
    let response = svc.oneshot(get("/")).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn a_closure_shapes_the_answer() {
    let svc = CatchPanicHttpLayer::builder()
        .response_for_panic(|ctx: &PanicContext<'_>| {
            let text = format!(
                "{} {} failed (grpc: {}, exposed: {})",
                ctx.method(),
                ctx.path(),
                ctx.is_grpc(),
                ctx.expose_message()
            );
            let mut response = Response::new(Body::from(text));
            *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
            response
        })
        .build()
        .unwrap()
        .layer(service_fn(handler));
    let response = svc.oneshot(get("/boom/7?token=abc")).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        body_text(response).await,
        "GET /boom/7 failed (grpc: false, exposed: false)"
    );
}

#[tokio::test]
async fn inner_errors_stay_errors() {
    let svc = CatchPanicHttpLayer::new().layer(service_fn(|_: Request<()>| async {
        Err::<Response<Body>, _>(std::io::Error::other("upstream down"))
    }));
    let err = svc.oneshot(get("/")).await.unwrap_err();
    assert_eq!(err.to_string(), "upstream down");
}

#[tokio::test]
async fn a_tonic_body_gets_internal_through_the_grpc_hook() {
    use palisade_panic::http::GrpcResponseForPanic;
    type TonicBody = tonic::body::Body;
    let svc = CatchPanicHttpLayer::builder()
        .expose_message(true)
        .response_hook(GrpcResponseForPanic)
        .build()
        .unwrap()
        .layer(service_fn(|_: Request<TonicBody>| async {
            if true {
                panic!("handler bug");
            }
            Ok::<_, Infallible>(Response::new(TonicBody::default()))
        }));
    let response: Response<TonicBody> =
        svc.oneshot(Request::new(TonicBody::empty())).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let status = tonic::Status::from_header_map(response.headers()).unwrap();
    assert_eq!(status.code(), tonic::Code::Internal);
    assert_eq!(status.message(), "handler bug");
}

#[tokio::test]
async fn a_destructor_that_panics_never_escapes_the_http_layer() {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::task::Poll;
    use support::{PanicOnDrop, poll_once};

    let svc = CatchPanicHttpLayer::new().layer(service_fn(|request: Request<()>| {
        let pending_polls = u32::from(request.uri().path() == "/slow");
        let future = PanicOnDrop { pending_polls };
        async move {
            future.await.unwrap();
            Ok::<_, Infallible>(Response::new(Body::from("fine")))
        }
    }));

    // The future the layer wraps ends, dropping the trapped one within its
    // poll: a panic of the call, answered 500.
    let mut call = Box::pin(svc.clone().oneshot(get("/")));
    let Poll::Ready(Ok(response)) = poll_once(&mut call) else {
        panic!("answered");
    };
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let mut call = Box::pin(svc.oneshot(get("/slow")));
    assert!(poll_once(&mut call).is_pending());
    assert!(catch_unwind(AssertUnwindSafe(|| drop(call))).is_ok());

    // The wrapped future itself panics as it is dropped once finished:
    // contained, and the answer stands.
    struct Trapped;
    impl std::future::Future for Trapped {
        type Output = Result<Response<Body>, Infallible>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> Poll<Self::Output> {
            Poll::Ready(Ok(Response::new(Body::from("fine"))))
        }
    }
    impl Drop for Trapped {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                panic!("dropped in the wrong place");
            }
        }
    }
    let svc = CatchPanicHttpLayer::new().layer(service_fn(|_: Request<()>| Trapped));
    let mut call = Box::pin(svc.oneshot(get("/")));
    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(&mut call)));
    let Ok(Poll::Ready(Ok(response))) = polled else {
        panic!("answered, and no panic let out");
    };
    assert_eq!(response.status(), StatusCode::OK);
}

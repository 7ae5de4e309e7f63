//! A real axum server on 127.0.0.1:0 whose handler panics, exercised by a
//! real HTTP/1.1 client over one kept-alive connection.

mod support;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use palisade_core::Metrics;
use palisade_panic::http::CatchPanicHttpLayer;
use support::PanicSink;
use tokio::net::{TcpListener, TcpStream};

const SECRET: &str = "session key 0xDEADBEEF leaked";

async fn boom() -> &'static str {
    panic!("{SECRET}")
}

async fn ok() -> &'static str {
    "still here"
}

async fn send(
    sender: &mut http1::SendRequest<Empty<Bytes>>,
    request: Request<Empty<Bytes>>,
) -> (StatusCode, http::HeaderMap, String) {
    sender.ready().await.expect("connection usable");
    let response = sender.send_request(request).await.expect("an answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

fn request(method: &str, path: &str, grpc: bool) -> Request<Empty<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "127.0.0.1");
    if grpc {
        builder = builder.header("content-type", "application/grpc");
    }
    builder.body(Empty::new()).unwrap()
}

#[tokio::test]
async fn a_panicking_handler_answers_500_and_the_server_keeps_answering() {
    let sink = Arc::new(PanicSink::default());
    let layer = CatchPanicHttpLayer::builder()
        .name("axum-app")
        .metrics(Metrics::from_arc(sink.clone()))
        .build()
        .unwrap();
    let app: Router = Router::new()
        .route("/boom", get(boom))
        .route("/ok", get(ok))
        .route("/grpc.Svc/Call", post(boom))
        .layer(layer);

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    let exchange = async {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await.unwrap();
        let connection = tokio::spawn(connection);

        for round in 0..5 {
            let (status, _, body) = send(&mut sender, request("GET", "/boom", false)).await;
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "round {round}");
            assert!(!body.contains("0xDEADBEEF"), "leaked: {body}");
            assert_eq!(body, "internal server error");

            let (status, _, body) = send(&mut sender, request("GET", "/ok", false)).await;
            assert_eq!(status, StatusCode::OK, "round {round}");
            assert_eq!(body, "still here");
        }

        let (status, headers, body) =
            send(&mut sender, request("POST", "/grpc.Svc/Call", true)).await;
        assert_eq!(status, StatusCode::OK);
        assert!(body.is_empty());
        assert!(headers.get("grpc-message").is_none());
        let status = tonic::Status::from_header_map(&headers).expect("a gRPC status");
        assert_eq!(status.code(), tonic::Code::Internal);

        // The same connection carried every exchange.
        assert!(!connection.is_finished());
        drop(sender);
        connection.await.unwrap().unwrap();
    };
    tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the exchange finishes");

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server stops")
        .unwrap()
        .unwrap();

    let events = sink.events();
    assert_eq!(events.len(), 6, "five HTTP panics and one gRPC panic");
    assert!(
        events
            .iter()
            .all(|e| e.message == SECRET && e.policy == "axum-app")
    );
}

#[tokio::test]
async fn axum_body_is_kept_as_the_response_body() {
    // Compile-time check made at run time: the layer's service answers
    // with axum's own body type, so nothing is boxed or converted.
    use tower::{Layer, ServiceExt};
    let svc = CatchPanicHttpLayer::new().layer(tower::service_fn(|_: Request<Body>| async {
        if true {
            panic!("x");
        }
        Ok::<_, std::convert::Infallible>(http::Response::new(Body::empty()))
    }));
    let response: http::Response<Body> = svc.oneshot(Request::new(Body::empty())).await.unwrap();
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
}

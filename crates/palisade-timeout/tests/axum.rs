//! The HTTP flavour in an axum app, against a real server on 127.0.0.1:0
//! and a real HTTP client. The server runs on tokio's paused clock, so the
//! deadlines pass without waiting.

use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use palisade_core::{BoxError, Elapsed};
use palisade_timeout::{Deadline, TimeoutLayer};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

/// Sends one GET, with an optional `grpc-timeout`, and returns the status
/// and the body.
async fn fetch(
    addr: std::net::SocketAddr,
    path: &str,
    grpc_timeout: Option<&[u8]>,
) -> (StatusCode, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = axum::http::Request::get(path).header("host", "localhost");
    if let Some(value) = grpc_timeout {
        req = req.header(
            "grpc-timeout",
            axum::http::HeaderValue::from_bytes(value).unwrap(),
        );
    }
    let res = sender
        .send_request(req.body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

async fn timeout_to_504(err: BoxError) -> (StatusCode, String) {
    match err.downcast_ref::<Elapsed>() {
        Some(elapsed) => (
            StatusCode::GATEWAY_TIMEOUT,
            format!("{:?}", elapsed.timeout()),
        ),
        None => (StatusCode::INTERNAL_SERVER_ERROR, err.to_string()),
    }
}

#[tokio::test(start_paused = true)]
async fn deadlines_from_headers_apply_and_garbage_never_fails_a_request() {
    let timeout = TimeoutLayer::builder()
        .name("api")
        .timeout(Duration::from_secs(30))
        .http()
        .build()
        .unwrap();
    let app = Router::new()
        .route(
            "/budget",
            get(|| async { format!("{:?}", Deadline::current().unwrap().budget()) }),
        )
        .route(
            "/later",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(100)).await;
                format!("{:?}", Deadline::current().unwrap().budget())
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(timeout_to_504))
                .layer(timeout),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // The handler sees the budget it was given.
    assert_eq!(
        fetch(addr, "/budget", None).await,
        (StatusCode::OK, "30s".to_owned())
    );
    assert_eq!(
        fetch(addr, "/budget", Some(b"250m")).await,
        (StatusCode::OK, "250ms".to_owned())
    );
    // Once the handler has waited, what is left counts down.
    assert_eq!(
        fetch(addr, "/later", Some(b"250m")).await,
        (StatusCode::OK, "150ms".to_owned())
    );
    assert_eq!(
        fetch(addr, "/later", None).await,
        (StatusCode::OK, "29.9s".to_owned())
    );

    // A hanging handler is cut at the smallest deadline.
    assert_eq!(
        fetch(addr, "/hang", Some(b"2S")).await,
        (StatusCode::GATEWAY_TIMEOUT, "2s".to_owned())
    );
    assert_eq!(
        fetch(addr, "/hang", None).await,
        (StatusCode::GATEWAY_TIMEOUT, "30s".to_owned())
    );

    // Garbage is ignored: never a 500, the default deadline applies.
    let garbage: [&[u8]; 5] = [b"", b"100", b"99999999999999999999S", b"-5S", b"123456789m"];
    for value in garbage {
        assert_eq!(
            fetch(addr, "/budget", Some(value)).await,
            (StatusCode::OK, "30s".to_owned())
        );
        assert_eq!(
            fetch(addr, "/hang", Some(value)).await,
            (StatusCode::GATEWAY_TIMEOUT, "30s".to_owned())
        );
    }
    server.abort();
}

//! A real axum server on 127.0.0.1:0, keyed by `ConnectInfo`, with a plain
//! HTTP/1.1 client: admitted responses carry the draft headers, and the
//! rejection maps to 429 with `Retry-After` rounded up.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use palisade_ratelimit::error::{BoxError, RateLimited};
use palisade_ratelimit::key::PeerIp;
use palisade_ratelimit::{HeaderStyle, RateLimitLayer, retry_after_seconds};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;

/// What the HTTP mapping does with a rate-limit rejection, reduced to the
/// essentials for this test.
async fn to_response(err: BoxError) -> Response {
    match err.downcast_ref::<RateLimited>() {
        Some(limited) => {
            let mut response = StatusCode::TOO_MANY_REQUESTS.into_response();
            response.headers_mut().insert(
                "retry-after",
                HeaderValue::from(retry_after_seconds(limited.retry_after())),
            );
            response
        }
        None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

async fn get_root(addr: SocketAddr) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.to_ascii_lowercase()
}

#[tokio::test]
async fn a_real_server_limits_by_peer_and_answers_429() {
    let limit = RateLimitLayer::builder()
        .name("api")
        .quota(2, Duration::from_secs(60))
        .keyed_by(PeerIp::new())
        .headers(HeaderStyle::Draft)
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(to_response))
            .layer(limit),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let exchange = async {
        let first = get_root(addr).await;
        assert!(first.starts_with("http/1.1 200"), "{first}");
        assert!(
            first.contains("ratelimit-policy: \"api\";q=2;w=60"),
            "{first}"
        );
        assert!(first.contains("ratelimit: \"api\";r=1;t=30"), "{first}");
        let second = get_root(addr).await;
        assert!(second.contains("ratelimit: \"api\";r=0;t="), "{second}");
        let third = get_root(addr).await;
        assert!(third.starts_with("http/1.1 429"), "{third}");
        // The bucket refills one request every 30 s, counted from the first
        // request: the wait is a little under 30 s by now (real time has
        // passed, seconds of it on a loaded machine) and rounds up to whole
        // seconds.
        let retry_after: u64 = third
            .split("retry-after: ")
            .nth(1)
            .and_then(|rest| rest.split("\r\n").next())
            .and_then(|value| value.parse().ok())
            .expect("a Retry-After header");
        assert!((15..=30).contains(&retry_after), "{third}");
    };
    tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .expect("the exchange finishes");
    server.abort();
}

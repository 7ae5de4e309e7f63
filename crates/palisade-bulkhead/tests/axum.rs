//! The bulkhead in an axum app, against a real server on 127.0.0.1:0 and a
//! real HTTP client: axum clones the service for every request, and each
//! request is admitted or rejected on its own, across routes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::error_handling::HandleErrorLayer;
use axum::http::StatusCode;
use axum::routing::get;
use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use palisade_bulkhead::BulkheadLayer;
use palisade_bulkhead::error::Overloaded;
use palisade_core::BoxError;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tower::ServiceBuilder;

/// Sends one GET on its own connection and returns the status.
async fn get_status(addr: std::net::SocketAddr, path: &str) -> StatusCode {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = axum::http::Request::get(path)
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    sender.send_request(req).await.unwrap().status()
}

async fn overloaded_to_503(err: BoxError) -> StatusCode {
    if err.is::<Overloaded>() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Reports when a handler's future is dropped.
struct Dropped(mpsc::UnboundedSender<&'static str>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send("dropped");
    }
}

#[tokio::test]
async fn one_limit_across_routes_and_a_rejection_per_request() {
    // Every wait below ends within milliseconds; a bound on the whole
    // scenario turns a lost wake-up into a failure instead of a hang.
    tokio::time::timeout(Duration::from_secs(60), one_limit_across_routes())
        .await
        .expect("the scenario finished within 60 s");
}

async fn one_limit_across_routes() {
    let bulkhead = BulkheadLayer::builder()
        .name("api")
        .max_concurrent(2)
        .build()
        .unwrap();
    let (entered_tx, mut entered) = mpsc::unbounded_channel();
    let (dropped_tx, mut dropped) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(0));

    let slow = {
        let gate = gate.clone();
        move || {
            let gate = gate.clone();
            let entered_tx = entered_tx.clone();
            let guard = Dropped(dropped_tx.clone());
            async move {
                let _guard = guard;
                entered_tx.send(()).unwrap();
                gate.acquire().await.unwrap().forget();
                "slow"
            }
        }
    };
    let app = Router::new()
        .route("/slow", get(slow))
        .route("/fast", get(|| async { "fast" }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded_to_503))
                .layer(bulkhead.clone()),
        );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Two slow requests take both slots.
    let first = tokio::spawn(get_status(addr, "/slow"));
    let second = tokio::spawn(get_status(addr, "/slow"));
    entered.recv().await.unwrap();
    entered.recv().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 2);

    // Another route under the same layer shares the limit: rejected at
    // once, not parked in poll_ready.
    assert_eq!(
        get_status(addr, "/fast").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    gate.add_permits(2);
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    assert_eq!(second.await.unwrap(), StatusCode::OK);
    assert_eq!(dropped.recv().await, Some("dropped"));
    assert_eq!(dropped.recv().await, Some("dropped"));
    assert_eq!(get_status(addr, "/fast").await, StatusCode::OK);
    assert_eq!(bulkhead.in_flight(), 0);

    // A client that goes away: the handler is dropped and so is its slot.
    let abandoned = tokio::spawn(get_status(addr, "/slow"));
    entered.recv().await.unwrap();
    assert_eq!(bulkhead.in_flight(), 1);
    abandoned.abort();
    assert_eq!(dropped.recv().await, Some("dropped"));
    // The server task dropped the whole response future before this task
    // ran again (current-thread runtime).
    assert_eq!(bulkhead.in_flight(), 0);

    server.abort();
}

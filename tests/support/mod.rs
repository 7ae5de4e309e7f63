//! Helpers shared by the integration tests: real servers on 127.0.0.1:0
//! and a real HTTP client.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use axum::{Router, ServiceExt};
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::Service;

/// No test waits longer than this for one answer.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// A running axum server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Serves `app` on 127.0.0.1:0, with the peer address in `ConnectInfo`.
pub async fn serve(app: Router) -> TestServer {
    serve_service(app).await
}

/// Serves any HTTP service (a router inside a palisade stack, for
/// example) on 127.0.0.1:0, with the peer address in `ConnectInfo`.
pub async fn serve_service<S>(app: S) -> TestServer
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = ServiceExt::<Request<Body>>::into_make_service_with_connect_info::<SocketAddr>(app);
    tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    TestServer {
        addr,
        stop: Some(stop),
    }
}

/// One answer, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Answer {
    /// The `Retry-After` header as whole seconds.
    pub fn retry_after(&self) -> Option<u64> {
        self.headers
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// A real HTTP/1.1 client.
#[derive(Clone)]
pub struct HttpClient {
    client: Client<HttpConnector, Body>,
    base: String,
}

impl HttpClient {
    pub fn new(server: &TestServer) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: format!("http://{}", server.addr),
        }
    }

    pub async fn send(&self, method: &str, path: &str) -> Answer {
        self.send_with(method, path, &[]).await
    }

    /// Sends a request with extra headers.
    pub async fn send_with(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request.body(Body::empty()).unwrap();
        let response = tokio::time::timeout(ANSWER_WITHIN, self.client.request(request))
            .await
            .expect("the server answers in time")
            .expect("the server answers");
        let status = response.status();
        let headers = response.headers().clone();
        let body: Bytes = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path).await
    }
}

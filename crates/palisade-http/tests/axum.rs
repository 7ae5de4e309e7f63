//! A real axum server on 127.0.0.1:0, queried with a real HTTP client:
//! failing route services behind `ErrorToResponseLayer` answer the mapped
//! responses, on a single route, with `route_layer`, and on a whole
//! `Router`.

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_core::BoxError;
use palisade_http::ErrorToResponseLayer;
use serde_json::Value;
use support::{RejectLayer, SECRET, TABLE, error};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::{Layer, ServiceBuilder, service_fn};

/// A route service that fails with the error its last path segment names.
async fn fail_by_path(req: http::Request<Body>) -> Result<http::Response<Body>, BoxError> {
    let kind = req.uri().path().rsplit('/').next().unwrap_or_default();
    match error(kind) {
        Some(err) => Err(err),
        None => Ok(http::Response::new(Body::from("fine"))),
    }
}

fn app() -> Router {
    // One route whose service fails, behind the layer.
    let failing = ErrorToResponseLayer::new().layer(service_fn(fail_by_path));
    // Routes whose handlers are fine, behind a failing layer applied with
    // `route_layer`: the layer stack must be `Infallible` for axum.
    let guarded = Router::new()
        .route("/guarded", get(|| async { "guarded ok" }))
        .route_layer(
            ServiceBuilder::new()
                .layer(ErrorToResponseLayer::new())
                .layer(RejectLayer),
        );
    Router::new()
        .route_service("/fail/{kind}", failing)
        .merge(guarded)
}

/// The same, with the failing layer applied to a whole `Router`.
fn router_wide() -> Router {
    Router::new()
        .route("/", get(|| async { "root ok" }))
        .route("/other", get(|| async { "other ok" }))
        .layer(
            ServiceBuilder::new()
                .layer(ErrorToResponseLayer::new())
                .layer(RejectLayer),
        )
}

struct Server {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(app: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Self {
            addr,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(std::time::Duration::from_secs(5), self.task)
            .await
            .expect("the server stops")
            .unwrap();
    }
}

type HttpClient = Client<HttpConnector, http_body_util::Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn get_from(
    client: &HttpClient,
    uri: String,
    reject: Option<&str>,
) -> (http::StatusCode, http::HeaderMap, Bytes) {
    let mut req = http::Request::builder().uri(uri);
    if let Some(kind) = reject {
        req = req.header("x-reject", kind);
    }
    let res = client
        .request(req.body(http_body_util::Empty::new()).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, bytes)
}

fn check(kind: &str, status: http::StatusCode, headers: &http::HeaderMap, body: &Bytes) {
    let (_, want_status, want_retry, _, reason) = *TABLE.iter().find(|row| row.0 == kind).unwrap();
    assert_eq!(status, want_status, "{kind}");
    assert_eq!(
        headers.get("retry-after").map(|v| v.to_str().unwrap()),
        want_retry,
        "{kind}"
    );
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "{kind}"
    );
    let json: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(json["status"], want_status);
    assert_eq!(json["reason"].as_str(), reason, "{kind}");
    let text = std::str::from_utf8(body).unwrap();
    assert!(!text.contains(SECRET), "{kind} leaked: {text}");
}

#[tokio::test]
async fn a_failing_route_service_answers_every_mapping() {
    let server = Server::start(app()).await;
    let client = client();
    for &(kind, ..) in TABLE {
        let (status, headers, body) =
            get_from(&client, format!("http://{}/fail/{kind}", server.addr), None).await;
        check(kind, status, &headers, &body);
    }
    let (status, _, body) =
        get_from(&client, format!("http://{}/fail/none", server.addr), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, "fine");
    server.stop().await;
}

#[tokio::test]
async fn route_layer_maps_rejections_and_lets_requests_through() {
    let server = Server::start(app()).await;
    let client = client();
    for kind in ["rate_limited", "circuit_open", "elapsed", "panicked"] {
        let (status, headers, body) = get_from(
            &client,
            format!("http://{}/guarded", server.addr),
            Some(kind),
        )
        .await;
        check(kind, status, &headers, &body);
    }
    let (status, _, body) =
        get_from(&client, format!("http://{}/guarded", server.addr), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, "guarded ok");
    server.stop().await;
}

#[tokio::test]
async fn router_layer_maps_rejections_on_every_route() {
    let server = Server::start(router_wide()).await;
    let client = client();
    for path in ["/", "/other"] {
        let (status, headers, body) = get_from(
            &client,
            format!("http://{}{path}", server.addr),
            Some("rate_limited"),
        )
        .await;
        check("rate_limited", status, &headers, &body);
    }
    let (status, _, body) = get_from(&client, format!("http://{}/other", server.addr), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, "other ok");
    server.stop().await;
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn a_handler_returning_rejected_answers_the_mapping() {
    use palisade_http::Rejected;

    async fn handler(
        axum::extract::Path(kind): axum::extract::Path<String>,
    ) -> Result<&'static str, Rejected> {
        match error(&kind) {
            Some(err) => Err(Rejected(err)),
            None => Ok("handled"),
        }
    }
    async fn with_question_mark() -> Result<&'static str, Rejected> {
        let downstream: Result<&'static str, std::io::Error> = Err(std::io::Error::other(SECRET));
        Ok(downstream?)
    }

    let app = Router::new()
        .route("/handler/{kind}", get(handler))
        .route("/io", get(with_question_mark));
    let server = Server::start(app).await;
    let client = client();
    for &(kind, ..) in TABLE {
        let (status, headers, body) = get_from(
            &client,
            format!("http://{}/handler/{kind}", server.addr),
            None,
        )
        .await;
        check(kind, status, &headers, &body);
    }
    let (status, headers, body) =
        get_from(&client, format!("http://{}/io", server.addr), None).await;
    check("other", status, &headers, &body);
    server.stop().await;
}

//! The dashboard served by a real axum server on loopback, fetched with
//! hyper's client.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use palisade_core::{
    AttemptFailure, CircuitState, Event, InFlightChange, LayerKind, Metrics, RejectReason,
    TransitionReason,
};
use palisade_metrics::{SnapshotSink, dashboard};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

const HOSTILE: &str = r#"<img src=x onerror="alert('x')">&co"#;

struct Server {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(app: Router) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    Server { addr, task }
}

async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    drop(sender);
    let _ = connection.await;
    (
        parts.status,
        parts.headers,
        String::from_utf8(body.to_vec()).unwrap(),
    )
}

fn populated() -> SnapshotSink {
    let sink = SnapshotSink::new();
    let metrics = Metrics::new(sink.clone());
    metrics.emit(&Event::StateChanged {
        policy: "payments",
        from: CircuitState::Closed,
        to: CircuitState::Open,
        reason: TransitionReason::FailureRate,
    });
    metrics.emit(&Event::BreakerRates {
        policy: "payments",
        failure_rate: 0.62,
        slow_rate: 0.0,
        calls: 50,
    });
    metrics.emit(&Event::Rejected {
        policy: HOSTILE,
        layer: LayerKind::RateLimit,
        reason: RejectReason::RateLimited,
    });
    metrics.emit(&Event::InFlightChanged {
        policy: "search",
        layer: LayerKind::Bulkhead,
        change: InFlightChange::Acquired,
        in_flight: 1,
        limit: 8,
    });
    metrics.emit(&Event::TaskStarted {
        group: "workers",
        task: "mailer",
    });
    metrics.emit(&Event::OffloadAttemptFailed {
        queue: "audit",
        attempt: 1,
        cause: AttemptFailure::Panic,
    });
    metrics.emit(&Event::OffloadDelivered {
        queue: "audit",
        attempts: 2,
    });
    sink
}

async fn bounded<F: std::future::Future<Output = ()>>(test: F) {
    tokio::time::timeout(Duration::from_secs(20), test)
        .await
        .expect("test finished in time");
}

#[tokio::test]
async fn page_and_json_are_served_when_nested() {
    bounded(async {
        let app = Router::new().nest("/palisade", dashboard::router(populated()));
        let server = serve(app).await;

        let (status, headers, html) = get(server.addr, "/palisade").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert!(headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'"));

        // Every policy, with its state as text and stable hooks.
        assert!(html.contains(r#"<tr class="policy" data-policy="payments" data-health="critical" data-state="open">"#), "{html}");
        assert!(html.contains(r#"<span class="breaker-state" data-state="open">open</span>"#));
        assert!(html.contains(r#"<td class="num failure-rate">62.0%</td>"#));
        assert!(html.contains(r#"data-policy="search" data-health="ok" data-state="none">"#));
        assert!(html.contains(r#"<span class="breaker-state" data-state="none">no breaker</span>"#));
        assert!(html.contains("1 / 8"));
        assert!(html.contains(r#"<td class="group-name">workers</td>"#));
        assert!(html.contains(r#"<td class="queue-name">audit</td>"#));
        assert!(html.contains(r#"<td class="num failed-attempts">1</td><td class="num panicked-attempts hot">1</td>"#), "{html}");
        assert!(html.contains(r#"id="stale-banner" role="alert" hidden"#));

        // The user-chosen name is escaped, in text and in attributes.
        let escaped = "&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;co";
        assert!(html.contains(&format!(r#"data-policy="{escaped}""#)), "{html}");
        assert!(html.contains(&format!(r#"<td class="policy-name">{escaped}<span"#)));
        assert!(!html.contains("<img"), "raw markup leaked");

        // Self-contained: nothing loaded from elsewhere.
        assert!(!html.contains("<link"));
        assert!(!html.contains("src=\"http"));
        assert!(!html.contains("://"), "no absolute URL in the page");

        let (status, headers, body) = get(server.addr, "/palisade/snapshot.json").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        let json: Value = serde_json::from_str(&body).unwrap();
        let names: Vec<_> = json["policies"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, ["payments", HOSTILE, "search"]);
        assert_eq!(json["policies"][0]["breaker"]["state"], "open");
        assert_eq!(json["summary"]["critical"], 1);
    })
    .await;
}

#[tokio::test]
async fn page_without_policies_says_so() {
    bounded(async {
        let server = serve(dashboard::router(SnapshotSink::new())).await;
        let (status, _, html) = get(server.addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("No policy has reported yet."));
        assert!(html.contains(r#"<span class="count" id="count-critical" data-health="critical" data-zero="true">0 critical</span>"#));
        let (status, _, body) = get(server.addr, "/snapshot.json").await;
        assert_eq!(status, StatusCode::OK);
        let json: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["policies"], Value::Array(vec![]));
        let (status, _, _) = get(server.addr, "/missing").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    })
    .await;
}

#[cfg(feature = "prometheus")]
#[tokio::test]
async fn metrics_route_serves_the_registry() {
    use std::sync::Arc;

    use palisade_core::MetricsSink;
    use palisade_metrics::PrometheusSink;
    use prometheus_client::registry::Registry;

    bounded(async {
        let mut registry = Registry::default();
        let sink = PrometheusSink::new();
        sink.register(&mut registry);
        sink.record(&Event::StateChanged {
            policy: "payments",
            from: CircuitState::Closed,
            to: CircuitState::HalfOpen,
            reason: TransitionReason::WaitElapsed,
        });
        let app = Router::new().route("/metrics", dashboard::metrics_route(Arc::new(registry)));
        let server = serve(app).await;
        let (status, headers, text) = get(server.addr, "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers[header::CONTENT_TYPE],
            palisade_metrics::prometheus::CONTENT_TYPE
        );
        assert!(text.contains(r#"palisade_breaker_state{policy="payments",state="half_open"} 1"#));
        assert!(text.ends_with("# EOF\n"));
    })
    .await;
}

#[tokio::test]
async fn page_shows_what_a_metrics_only_breaker_would_be() {
    bounded(async {
        let sink = SnapshotSink::new();
        let metrics = Metrics::new(sink.clone());
        metrics.emit(&Event::StateChanged {
            policy: "shadow",
            from: CircuitState::Closed,
            to: CircuitState::MetricsOnly,
            reason: TransitionReason::Forced,
        });
        metrics.emit(&Event::ShadowStateChanged {
            policy: "shadow",
            from: CircuitState::Closed,
            to: CircuitState::HalfOpen,
            reason: TransitionReason::WaitElapsed,
        });
        let server = serve(dashboard::router(sink)).await;
        let (status, _, html) = get(server.addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            html.contains(concat!(
                r#"<span class="breaker-state" data-state="metrics_only">metrics only</span>"#,
                r#"<span class="since">would be half open</span>"#,
            )),
            "{html}"
        );
    })
    .await;
}

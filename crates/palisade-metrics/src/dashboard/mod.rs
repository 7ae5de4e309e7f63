//! A live status page and its JSON, as an axum [`Router`] to mount.
//!
//! [`router`] serves, relative to where it is mounted (nested at
//! `/palisade`, the page is `/palisade`, without a trailing slash, and the
//! JSON `/palisade/snapshot.json`):
//!
//! - `GET /`: a self-contained HTML page (inline style and script, no CDN,
//!   works offline) that lists every policy worst first: breaker state in
//!   colour and since when, failure rate, in-flight against the limit,
//!   rejections per second by reason, requests per second, panics,
//!   timeouts, fallback answers and, in words, what is wrong. Task groups
//!   and offload queues follow. The page is rendered on the server with the
//!   current state, so `curl` and a browser without script show it too;
//!   its script then polls the JSON every second (`?refresh=5` for five)
//!   and, when a refresh fails or the data is older than a few refreshes,
//!   shows a red *stale data* banner with the time of the last good update.
//! - `GET /snapshot.json`: the [`Snapshot`](crate::snapshot::Snapshot) as
//!   JSON.
//!
//! Both answer with `Cache-Control: no-store`. The page builds every element
//! from text (policy names are user strings: they are escaped on the server
//! and set with `textContent` by the script) and sends a content security
//! policy that allows no other origin.
//!
//! For tests and scripts, the rendered page carries stable hooks: one
//! `tr.policy` per policy with `data-policy` (its name), `data-health` and
//! `data-state`; inside it `.policy-name` and `.breaker-state` (whose text
//! is the state, such as `open` or `half open`, and whose `data-state` is
//! the label, such as `half_open`); the tables `#policies`, `#task-groups`
//! and `#offload-queues`; `#summary`; `#updated-at`; and `#stale-banner`,
//! hidden while the data is fresh (`body[data-stale]` says the same).
//!
//! With the `prometheus` feature, [`metrics_route`] serves a
//! `prometheus-client` registry's text exposition.
//!
//! The page is meant for operators: mount it behind the same
//! authentication as your other internal endpoints.
//!
//! # Example
//!
//! ```
//! use axum::Router;
//! use palisade_core::Metrics;
//! use palisade_metrics::{dashboard, SnapshotSink};
//!
//! let snapshot = SnapshotSink::new();
//! let metrics = Metrics::new(snapshot.clone()); // give this to the layers
//! let app: Router = Router::new().nest("/palisade", dashboard::router(snapshot));
//! # let _ = (app, metrics);
//! ```

mod page;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::snapshot::SnapshotSink;

const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// The dashboard's routes, reading `sink`; see the [module docs](self).
///
/// The router fits any application state, so it can be nested in an
/// existing `Router<S>`.
pub fn router<S>(sink: SnapshotSink) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/", get(page))
        .route("/snapshot.json", get(snapshot_json))
        .with_state(sink)
}

fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

async fn page(State(sink): State<SnapshotSink>) -> Response {
    let html = page::render(&sink.snapshot());
    let mut response = (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        )],
        html,
    )
        .into_response();
    response.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    no_store(response)
}

async fn snapshot_json(State(sink): State<SnapshotSink>) -> Response {
    let response = match serde_json::to_vec(&sink.snapshot()) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            body,
        )
            .into_response(),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("snapshot could not be serialised: {err}"),
        )
            .into_response(),
    };
    no_store(response)
}

/// A `GET` route serving `registry` in the OpenMetrics text format, for
/// `Router::route("/metrics", metrics_route(registry))`.
///
/// ```
/// use std::sync::Arc;
/// use axum::Router;
/// use palisade_metrics::{dashboard, PrometheusSink};
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// PrometheusSink::new().register(&mut registry);
/// let app: Router = Router::new().route("/metrics", dashboard::metrics_route(Arc::new(registry)));
/// # let _ = app;
/// ```
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub fn metrics_route<S>(
    registry: std::sync::Arc<prometheus_client::registry::Registry>,
) -> axum::routing::MethodRouter<S>
where
    S: Clone + Send + Sync + 'static,
{
    get(move || {
        let registry = std::sync::Arc::clone(&registry);
        async move {
            let text = crate::prometheus::render(&registry);
            no_store(
                (
                    [(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static(crate::prometheus::CONTENT_TYPE),
                    )],
                    text,
                )
                    .into_response(),
            )
        }
    })
}

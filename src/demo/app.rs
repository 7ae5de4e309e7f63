//! The demo's routes, protected and bare, and the dependency they call.

use std::fmt;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::State;
use axum::http::header::{CONTENT_TYPE, HeaderName};
use axum::http::{HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade::breaker::{CircuitBreakerBuilder, CircuitBreakerHandle, CircuitBreakerLayer};
use palisade::bulkhead::BulkheadLayer;
use palisade::chaos::ChaosLayer;
use palisade::fallback::{Cause, FallbackLayer, source};
use palisade::metrics::{PrometheusSink, SnapshotSink, TracingSink, dashboard};
use palisade::panic::CatchPanicLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ConfigError, Fanout, Metrics, Stack};
use prometheus_client::registry::Registry;
use tower::util::BoxCloneSyncService;
use tower::{Layer, ServiceBuilder, ServiceExt};

use super::config::{DemoConfig, DependencyFaults, Protection, RouteFaults};

/// The response header that marks an answer given by a fallback; its value
/// is what the fallback answered for (`rejection` or `error`).
pub const DEGRADED_HEADER: &str = "x-degraded";

/// Where the dashboard is mounted.
pub const DASHBOARD_PATH: &str = "/palisade";

/// Where the Prometheus text exposition is served.
pub const METRICS_PATH: &str = "/metrics";

/// One of the demo's chaotic routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DemoRoute {
    /// The route's name, and the name of the palisade policy behind it.
    pub name: &'static str,
    /// The protected route.
    pub path: &'static str,
    /// The same handler and faults, without palisade.
    pub bare_path: &'static str,
    /// Out of 10 requests of the loopback load, how many go here.
    pub weight: u32,
    /// What the route shows.
    pub what: &'static str,
}

/// The chaotic routes, in the order the banner lists them.
pub const ROUTES: [DemoRoute; 3] = [
    DemoRoute {
        name: "orders",
        path: "/api/orders",
        bare_path: "/bare/api/orders",
        weight: 5,
        what: "errors, panics and latency spikes; no fallback: failures are answered fast with 5xx",
    },
    DemoRoute {
        name: "catalog",
        path: "/api/catalog",
        bare_path: "/bare/api/catalog",
        weight: 3,
        what: "the same faults, with a fallback that answers a cached catalog",
    },
    DemoRoute {
        name: "recommendations",
        path: "/api/recommendations",
        bare_path: "/bare/api/recommendations",
        weight: 2,
        what: "calls a slow, flaky dependency through a client-side breaker, timeout and fallback",
    },
];

/// The HTTP client the demo calls its dependency with, and loads itself with.
pub(crate) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub(crate) fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// The chaos layers of one side (protected or bare), one per route, in the
/// order of [`ROUTES`] (the recommendations route has none of its own).
#[derive(Clone, Debug)]
pub(crate) struct SideChaos {
    pub(crate) orders: ChaosLayer,
    pub(crate) catalog: ChaosLayer,
}

impl SideChaos {
    fn new(config: &DemoConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            orders: route_chaos("orders", config.seed, &config.orders)?,
            catalog: route_chaos("catalog", config.seed.wrapping_add(1), &config.catalog)?,
        })
    }

    pub(crate) fn layers(&self) -> [&ChaosLayer; 2] {
        [&self.orders, &self.catalog]
    }
}

fn route_chaos(name: &str, seed: u64, faults: &RouteFaults) -> Result<ChaosLayer, ConfigError> {
    ChaosLayer::builder()
        .name(name)
        .seed(seed)
        .error_rate(faults.error_rate)
        .panic_rate(faults.panic_rate)
        .latency(faults.work_min, faults.work_max)
        .latency_spikes(faults.spike_rate, faults.spike)
        .build()
}

/// The dependency: a router to serve on its own listener, and its faults.
pub(crate) fn dependency(
    config: &DependencyFaults,
    seed: u64,
) -> Result<(Router, ChaosLayer), ConfigError> {
    let chaos = ChaosLayer::builder()
        .name("dependency")
        .seed(seed.wrapping_add(2))
        .error_rate(config.error_rate)
        .latency(config.latency_min, config.latency_max)
        .latency_spikes(config.slow_rate, config.slow)
        .build()?;
    let router = Router::new().route(
        "/recommendations",
        get(|| async { json(Bytes::from_static(LIVE_RECOMMENDATIONS)) }).layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(internal_error))
                .layer(chaos.clone()),
        ),
    );
    Ok((router, chaos))
}

/// Everything the demo server serves, and the handles it reports from.
pub(crate) struct App {
    pub(crate) router: Router,
    pub(crate) snapshot: SnapshotSink,
    pub(crate) breakers: Vec<(&'static str, CircuitBreakerHandle)>,
    pub(crate) protected: SideChaos,
    pub(crate) bare: SideChaos,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

fn breaker(p: &Protection) -> CircuitBreakerBuilder {
    CircuitBreakerLayer::builder()
        .count_window(p.breaker_window)
        .minimum_calls(p.breaker_minimum_calls)
        .failure_rate_threshold(p.breaker_failure_rate)
        .open_wait(p.breaker_open_wait)
}

/// Builds the demo's routes: `/api/*` behind palisade, `/bare/api/*`
/// without it, the dashboard, `/metrics` and an index.
pub(crate) fn app(config: &DemoConfig, dependency: Uri) -> Result<App, ConfigError> {
    let p = &config.protection;

    // One metrics handle for every policy: Prometheus text, the snapshot
    // behind the dashboard, and `tracing` events.
    let mut registry = Registry::default();
    let prometheus = PrometheusSink::new();
    prometheus.register(&mut registry);
    let snapshot = SnapshotSink::new();
    let metrics = Metrics::new(
        Fanout::new()
            .with(prometheus)
            .with(snapshot.clone())
            .with(TracingSink::new()),
    );
    let catch_panic = || CatchPanicLayer::builder().backtrace(false);

    // Orders cannot be made up: failures stay failures, but fast ones.
    let orders = Stack::new("orders")
        .metrics(metrics.clone())
        .rate_limit(RateLimitLayer::builder().quota(p.orders_per_second, SECOND))
        .circuit_breaker(breaker(p))
        .timeout(TimeoutLayer::builder().timeout(p.server_timeout).http())
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(p.max_concurrent))
        .catch_panic(catch_panic())
        .http_errors()
        .build()?;

    // A catalog a few minutes old is better than none.
    let catalog = Stack::new("catalog")
        .metrics(metrics.clone())
        .fallback(FallbackLayer::builder(source::from_fn(cached_catalog)))
        .rate_limit(RateLimitLayer::builder().quota(p.catalog_per_second, SECOND))
        .circuit_breaker(breaker(p))
        .timeout(TimeoutLayer::builder().timeout(p.server_timeout).http())
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(p.max_concurrent))
        .catch_panic(catch_panic())
        .http_errors()
        .build()?;

    // The client side: calls to the dependency are bounded in time and
    // number, stop while it is failing, and fall back to defaults.
    let client = http_client();
    let calls = Stack::new("recommendations")
        .metrics(metrics.clone())
        .fallback(FallbackLayer::builder(source::from_fn(
            default_recommendations,
        )))
        .circuit_breaker(breaker(p))
        .timeout(TimeoutLayer::builder().timeout(p.dependency_timeout))
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(p.dependency_max_concurrent))
        .build()?;

    let breakers = vec![
        ("orders", orders.circuit_breaker().handle()),
        ("catalog", catalog.circuit_breaker().handle()),
        ("recommendations", calls.circuit_breaker().handle()),
    ];
    let protected_chaos = SideChaos::new(config)?;
    let bare_chaos = SideChaos::new(config)?;

    let fetch = {
        let client = client.clone();
        let uri = dependency.clone();
        tower::service_fn(move |()| {
            let (client, uri) = (client.clone(), uri.clone());
            async move {
                let body = fetch(&client, uri).await?;
                Ok::<_, BoxError>(Recommendations {
                    body,
                    degraded: None,
                })
            }
        })
    };
    let recommendations_client = BoxCloneSyncService::new(calls.layer(fetch));

    let protected = Router::new()
        .route(
            ROUTES[0].path,
            get(place_order).layer(
                ServiceBuilder::new()
                    .layer(orders)
                    .layer(protected_chaos.orders.clone()),
            ),
        )
        .route(
            ROUTES[1].path,
            get(live_catalog).layer(
                ServiceBuilder::new()
                    .layer(catalog)
                    .layer(protected_chaos.catalog.clone()),
            ),
        )
        .route(ROUTES[2].path, get(recommendations))
        .with_state(recommendations_client);

    let bare = Router::new()
        .route(
            ROUTES[0].bare_path,
            get(place_order).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(internal_error))
                    .layer(bare_chaos.orders.clone()),
            ),
        )
        .route(
            ROUTES[1].bare_path,
            get(live_catalog).layer(
                ServiceBuilder::new()
                    .layer(HandleErrorLayer::new(internal_error))
                    .layer(bare_chaos.catalog.clone()),
            ),
        )
        .route(ROUTES[2].bare_path, get(bare_recommendations))
        .with_state(BareDependency {
            client,
            uri: dependency,
        });

    let router = Router::new()
        .route("/", get(index))
        .route(METRICS_PATH, dashboard::metrics_route(Arc::new(registry)))
        .nest(DASHBOARD_PATH, dashboard::router(snapshot.clone()))
        .merge(protected)
        .merge(bare);

    Ok(App {
        router,
        snapshot,
        breakers,
        protected: protected_chaos,
        bare: bare_chaos,
    })
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);

const LIVE_CATALOG: &[u8] = br#"{"source":"live","items":["lamp","desk","chair"]}"#;
const CACHED_CATALOG: &[u8] = br#"{"source":"cache","items":["lamp","desk"]}"#;
const LIVE_RECOMMENDATIONS: &[u8] = br#"{"source":"live","items":["desk lamp","standing desk"]}"#;
const DEFAULT_RECOMMENDATIONS: &[u8] = br#"{"source":"defaults","items":["bestsellers"]}"#;

fn json(body: Bytes) -> Response {
    (
        [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
        body,
    )
        .into_response()
}

fn degraded(body: Bytes, why: &'static str) -> Response {
    let mut response = json(body);
    response.headers_mut().insert(
        HeaderName::from_static(DEGRADED_HEADER),
        HeaderValue::from_static(why),
    );
    response
}

async fn place_order() -> Response {
    json(Bytes::from_static(br#"{"order":"accepted"}"#))
}

async fn live_catalog() -> Response {
    json(Bytes::from_static(LIVE_CATALOG))
}

fn cached_catalog(cause: Cause<Response>) -> Response {
    degraded(Bytes::from_static(CACHED_CATALOG), cause.trigger().as_str())
}

/// What the recommendations client answers: the dependency's body, or
/// defaults when the fallback stepped in.
#[derive(Clone, Debug)]
struct Recommendations {
    body: Bytes,
    degraded: Option<&'static str>,
}

fn default_recommendations(cause: Cause<Recommendations>) -> Recommendations {
    Recommendations {
        body: Bytes::from_static(DEFAULT_RECOMMENDATIONS),
        degraded: Some(cause.trigger().as_str()),
    }
}

type RecommendationsClient = BoxCloneSyncService<(), Recommendations, BoxError>;

async fn recommendations(State(client): State<RecommendationsClient>) -> Response {
    match client.oneshot(()).await {
        Ok(Recommendations {
            body,
            degraded: Some(why),
        }) => degraded(body, why),
        Ok(Recommendations { body, .. }) => json(body),
        // The fallback answers every error; should one get through, it is
        // answered as palisade maps errors everywhere else.
        Err(err) => palisade::http::to_response::<Body>(&*err),
    }
}

/// The dependency answered, but not with a success.
#[derive(Debug)]
struct DependencyFailed(StatusCode);

impl fmt::Display for DependencyFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the recommendation service answered {}", self.0)
    }
}

impl std::error::Error for DependencyFailed {}

async fn fetch(client: &HttpClient, uri: Uri) -> Result<Bytes, BoxError> {
    let response = client.get(uri).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    if status.is_success() {
        Ok(body)
    } else {
        Err(DependencyFailed(status).into())
    }
}

#[derive(Clone, Debug)]
struct BareDependency {
    client: HttpClient,
    uri: Uri,
}

async fn bare_recommendations(State(dependency): State<BareDependency>) -> Response {
    match fetch(&dependency.client, dependency.uri).await {
        Ok(body) => json(body),
        Err(_) => (StatusCode::BAD_GATEWAY, "the recommendation service failed").into_response(),
    }
}

/// What a plain axum app does with an error it has no better answer for.
async fn internal_error(_err: BoxError) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, "internal server error").into_response()
}

async fn index() -> String {
    let mut text = String::from(
        "palisade demo\n\n\
         dashboard:  /palisade   (JSON: /palisade/snapshot.json)\n\
         metrics:    /metrics\n\n\
         routes behind palisade, and the same routes bare:\n",
    );
    for route in ROUTES {
        text.push_str(&format!(
            "  {:<22} {:<28} {}\n",
            route.path, route.bare_path, route.what
        ));
    }
    text.push_str(&format!(
        "\nAnswers from a fallback carry the header `{DEGRADED_HEADER}`.\n"
    ));
    text
}

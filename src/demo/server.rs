//! The demo server: the app on one listener, its dependency on another.

use std::collections::BTreeMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::http::Uri;
use palisade::BoxError;
use palisade::chaos::ChaosLayer;
use palisade::core::CircuitState;
use palisade::metrics::snapshot::Snapshot;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::app::{self, App, DASHBOARD_PATH, METRICS_PATH, SideChaos};
use super::config::DemoConfig;

/// Which routes a load phase calls.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    /// `/bare/api/*`: the handlers and faults, without palisade.
    Bare,
    /// `/api/*`: the same, behind palisade.
    Protected,
}

impl Side {
    /// How the summary names the side.
    pub fn label(self) -> &'static str {
        match self {
            Side::Bare => "without palisade",
            Side::Protected => "with palisade",
        }
    }
}

/// Running totals read from the server: what its fault generators
/// injected and what palisade did about it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerCounts {
    /// Panics injected into the bare routes.
    pub bare_panics: u64,
    /// Panics injected into the protected routes.
    pub protected_panics: u64,
    /// Calls that reached the dependency.
    pub dependency_calls: u64,
    /// Panics palisade caught, over all policies.
    pub panics_caught: u64,
    /// Requests palisade cut off at their deadline, over all policies.
    pub timeouts: u64,
    /// Answers given by a fallback, over all policies.
    pub fallbacks: u64,
    /// Requests palisade turned away, by reason, over all policies.
    pub rejections: BTreeMap<&'static str, u64>,
}

impl ServerCounts {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &ServerCounts) -> ServerCounts {
        let mut rejections = self.rejections.clone();
        for (reason, n) in &mut rejections {
            *n -= earlier.rejections.get(reason).copied().unwrap_or(0).min(*n);
        }
        rejections.retain(|_, n| *n > 0);
        ServerCounts {
            bare_panics: self.bare_panics.saturating_sub(earlier.bare_panics),
            protected_panics: self
                .protected_panics
                .saturating_sub(earlier.protected_panics),
            dependency_calls: self
                .dependency_calls
                .saturating_sub(earlier.dependency_calls),
            panics_caught: self.panics_caught.saturating_sub(earlier.panics_caught),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            fallbacks: self.fallbacks.saturating_sub(earlier.fallbacks),
            rejections,
        }
    }

    /// Panics injected into `side`'s routes.
    pub fn panics_injected(&self, side: Side) -> u64 {
        match side {
            Side::Bare => self.bare_panics,
            Side::Protected => self.protected_panics,
        }
    }
}

/// The demo server, running on the current tokio runtime.
///
/// It serves, on one listener, the chaotic routes behind palisade
/// (`/api/orders`, `/api/catalog`, `/api/recommendations`), the same
/// routes bare (`/bare/api/...`), the dashboard at `/palisade` and the
/// Prometheus text at `/metrics`; and, on a second loopback listener, the
/// slow dependency that the recommendations route calls.
pub struct DemoServer {
    addr: SocketAddr,
    dependency_addr: SocketAddr,
    app: App,
    dependency_chaos: ChaosLayer,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

impl fmt::Debug for DemoServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DemoServer")
            .field("addr", &self.addr)
            .field("dependency_addr", &self.dependency_addr)
            .finish_non_exhaustive()
    }
}

fn serve(
    listener: TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<io::Result<()>> {
    tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|stop| *stop).await;
            })
            .await
    })
}

impl DemoServer {
    /// Starts the demo on `listener`, and its dependency on a free
    /// loopback port.
    ///
    /// # Errors
    ///
    /// The dependency's listener cannot be bound, or a setting of `config`
    /// is out of range (the [`ConfigError`](palisade::ConfigError) names
    /// it).
    pub async fn start(config: DemoConfig, listener: TcpListener) -> Result<Self, BoxError> {
        let addr = listener.local_addr()?;
        let dependency_listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let dependency_addr = dependency_listener.local_addr()?;
        let (dependency_router, dependency_chaos) =
            app::dependency(&config.dependency, config.seed)?;
        let uri: Uri = format!("http://{dependency_addr}/recommendations").parse()?;
        let app = app::app(&config, uri)?;

        let (stop, stopped) = watch::channel(false);
        let tasks = vec![
            serve(dependency_listener, dependency_router, stopped.clone()),
            serve(listener, app.router.clone(), stopped),
        ];
        Ok(Self {
            addr,
            dependency_addr,
            app,
            dependency_chaos,
            stop,
            tasks,
        })
    }

    /// The address the demo listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the dependency.
    pub fn dependency_addr(&self) -> SocketAddr {
        self.dependency_addr
    }

    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The dashboard's URL.
    pub fn dashboard_url(&self) -> String {
        self.url(DASHBOARD_PATH)
    }

    /// The URL of the Prometheus text exposition.
    pub fn metrics_url(&self) -> String {
        self.url(METRICS_PATH)
    }

    /// The snapshot the dashboard shows.
    pub fn snapshot(&self) -> Snapshot {
        self.app.snapshot.snapshot()
    }

    /// Every breaker's policy name and current state.
    pub fn breaker_states(&self) -> Vec<(&'static str, CircuitState)> {
        self.app
            .breakers
            .iter()
            .map(|(name, handle)| (*name, handle.state()))
            .collect()
    }

    /// The running totals; subtract two readings with
    /// [`ServerCounts::since`].
    pub fn counts(&self) -> ServerCounts {
        fn panics(side: &SideChaos) -> u64 {
            side.layers().iter().map(|l| l.stats().panics).sum()
        }
        let mut counts = ServerCounts {
            bare_panics: panics(&self.app.bare),
            protected_panics: panics(&self.app.protected),
            dependency_calls: self.dependency_chaos.stats().requests,
            ..ServerCounts::default()
        };
        for policy in self.snapshot().policies {
            counts.panics_caught += policy.panics.total;
            counts.timeouts += policy.timeouts.total;
            counts.fallbacks += policy.fallbacks.total;
            for reason in policy.rejections.by_reason {
                *counts.rejections.entry(reason.reason).or_default() += reason.total;
            }
        }
        counts
    }

    /// Stops accepting connections, lets the requests in flight finish
    /// (for at most `grace`), and stops both servers.
    ///
    /// # Errors
    ///
    /// A server failed while it ran.
    pub async fn shutdown(self, grace: Duration) -> io::Result<()> {
        let _ = self.stop.send(true);
        // One deadline for both servers, not `grace` each; tokio's sleep
        // caps a `grace` too long for an instant.
        let deadline = tokio::time::sleep(grace).deadline();
        let mut result = Ok(());
        for task in self.tasks {
            let abort = task.abort_handle();
            match tokio::time::timeout_at(deadline, task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(err))) => result = Err(err),
                Ok(Err(join)) if join.is_cancelled() => {}
                Ok(Err(join)) => result = Err(io::Error::other(join)),
                Err(_) => abort.abort(),
            }
        }
        result
    }
}

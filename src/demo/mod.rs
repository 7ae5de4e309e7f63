//! The demo: a chaotic HTTP service, served bare and behind palisade, with
//! a loopback load that compares the two.
//!
//! `cargo run --release --example demo` runs it; the browser test starts
//! the same server in-process. [`DemoServer`] serves:
//!
//! | path | what |
//! |---|---|
//! | `/api/orders` | errors, panics and latency spikes, behind a palisade [`Stack`](palisade::Stack) without fallback |
//! | `/api/catalog` | the same faults, behind a stack whose fallback answers a cached catalog |
//! | `/api/recommendations` | calls a slow, flaky dependency (a second loopback server) through a client-side stack: fallback, breaker, timeout, bulkhead |
//! | `/bare/api/...` | the same handlers and faults without palisade, as a plain axum app would serve them |
//! | `/palisade` | the live dashboard ([`palisade::metrics::dashboard`]) |
//! | `/metrics` | every policy's Prometheus text |
//!
//! Faults come from [`palisade::chaos`], seeded: a bare route and its
//! protected twin have the same seed and fault rates, so their fault mix
//! matches, though not request by request (see [`DemoConfig::seed`]).
//! Every policy reports to one [`Fanout`](palisade::Fanout) of a
//! Prometheus sink, the dashboard's snapshot sink and a `tracing` sink.
//! Answers given by a fallback carry the [`DEGRADED_HEADER`].
//!
//! [`compare`] runs the same [`LoadPlan`] against the bare routes, then
//! against the protected ones, and [`report::render`] prints the two side
//! by side.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::core::CircuitState;
//! use palisade_workspace::demo::{DemoConfig, DemoServer};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let server = DemoServer::start(DemoConfig::default(), listener).await?;
//! assert!(server.dashboard_url().ends_with("/palisade"));
//! assert!(server.breaker_states().iter().all(|(_, state)| *state == CircuitState::Closed));
//! server.shutdown(Duration::from_secs(1)).await?;
//! # Ok(())
//! # }
//! ```

mod app;
pub mod args;
mod config;
pub mod load;
pub mod report;
mod server;

use std::panic::PanicHookInfo;
use std::sync::atomic::{AtomicU64, Ordering};

pub use self::app::{DASHBOARD_PATH, DEGRADED_HEADER, DemoRoute, METRICS_PATH, ROUTES};
pub use self::config::{DemoConfig, DependencyFaults, LoadPlan, Protection, RouteFaults};
pub use self::load::{ProgressStyle, Tally};
pub use self::report::PhaseReport;
pub use self::server::{DemoServer, ServerCounts, Side};

/// Runs `plan` against the bare routes, then against the protected ones,
/// and returns both phases.
pub async fn compare(
    server: &DemoServer,
    plan: LoadPlan,
    style: ProgressStyle,
) -> Vec<PhaseReport> {
    let mut phases = Vec::with_capacity(2);
    for side in [Side::Bare, Side::Protected] {
        let before = server.counts();
        let tally = load::run(server.addr(), side, plan, style).await;
        phases.push(PhaseReport {
            side,
            tally,
            server: server.counts().since(&before),
        });
    }
    phases
}

static SILENCED: AtomicU64 = AtomicU64::new(0);

fn is_injected(info: &PanicHookInfo<'_>) -> bool {
    let payload = info.payload();
    let message = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
    message.is_some_and(|m| m.starts_with("chaos ") && m.ends_with(": injected panic"))
}

/// Keeps the panics that the demo injects on purpose off stderr; every
/// other panic is printed as before.
///
/// The bare routes do not catch their panics, so each one would otherwise
/// print a message and break a connection; the summary counts them
/// instead. Call it before building any palisade layer: palisade's own
/// hook, installed when a panic-catch layer is built, then wraps this one
/// and still records where each panic it catches happened.
pub fn silence_injected_panics() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if is_injected(info) {
            SILENCED.fetch_add(1, Ordering::Relaxed);
        } else {
            previous(info);
        }
    }));
}

/// How many injected panics [`silence_injected_panics`] kept off stderr.
pub fn silenced_panics() -> u64 {
    SILENCED.load(Ordering::Relaxed)
}

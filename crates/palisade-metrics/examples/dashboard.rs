//! Serves the palisade dashboard fed by simulated policies, to see it move.
//!
//! ```text
//! cargo run -p palisade-metrics --features dashboard,prometheus --example dashboard -- --port 3000 --seconds 120
//! ```
//!
//! Then open <http://127.0.0.1:3000/palisade>. `/metrics` serves the same
//! events in the Prometheus text format. Without `--seconds` it runs until
//! interrupted.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use palisade_core::{
    CircuitState, DropReason, Event, FallbackTrigger, InFlightChange, LayerKind, Metrics, Outcome,
    PanicLocation, RejectReason, TaskEnd, TransitionReason,
};
use palisade_metrics::{PrometheusSink, SnapshotSink, dashboard};
use prometheus_client::registry::Registry;

struct Args {
    port: u16,
    seconds: Option<u64>,
}

fn args() -> Result<Args, String> {
    let mut args = Args {
        port: 3000,
        seconds: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => args.port = value.parse().map_err(|e| format!("--port: {e}"))?,
            "--seconds" => {
                args.seconds = Some(value.parse().map_err(|e| format!("--seconds: {e}"))?);
            }
            _ => {
                return Err(format!(
                    "unknown flag {flag} (expected --port or --seconds)"
                ));
            }
        }
    }
    Ok(args)
}

/// A breaker that fails for a while every minute.
fn breaker_step(metrics: &Metrics, tick: u64, state: &mut CircuitState, rng: &mut fastrand::Rng) {
    let policy = "payments";
    let phase = tick % 600;
    let failing = (200..330).contains(&phase);
    let next = match *state {
        CircuitState::Closed if failing && phase > 230 => {
            Some((CircuitState::Open, TransitionReason::FailureRate))
        }
        CircuitState::Open if phase.is_multiple_of(50) => {
            Some((CircuitState::HalfOpen, TransitionReason::WaitElapsed))
        }
        CircuitState::HalfOpen if failing => {
            Some((CircuitState::Open, TransitionReason::FailureRate))
        }
        CircuitState::HalfOpen => Some((CircuitState::Closed, TransitionReason::ProbesSucceeded)),
        _ => None,
    };
    if let Some((to, reason)) = next {
        metrics.emit(&Event::StateChanged {
            policy,
            from: *state,
            to,
            reason,
        });
        *state = to;
    }
    for _ in 0..5 {
        if *state == CircuitState::Open {
            metrics.emit(&Event::Rejected {
                policy,
                layer: LayerKind::CircuitBreaker,
                reason: RejectReason::CircuitOpen,
            });
            metrics.emit(&Event::FallbackUsed {
                policy,
                trigger: FallbackTrigger::Rejection,
            });
            continue;
        }
        let failed = failing && rng.f64() < 0.7;
        metrics.emit(&Event::Completed {
            policy,
            layer: LayerKind::CircuitBreaker,
            outcome: if failed {
                Outcome::Failure
            } else {
                Outcome::Success
            },
            latency: Some(Duration::from_millis(rng.u64(5..40))),
        });
    }
    let failure_rate = if failing { 0.7 } else { 0.02 };
    metrics.emit(&Event::BreakerRates {
        policy,
        failure_rate,
        slow_rate: 0.0,
        calls: 100,
    });
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args = match args() {
        Ok(args) => args,
        Err(err) => {
            eprintln!("error: {err}");
            std::process::exit(2);
        }
    };

    let snapshot = SnapshotSink::new();
    let prometheus = PrometheusSink::new();
    let mut registry = Registry::default();
    prometheus.register(&mut registry);
    let metrics = Metrics::new((snapshot.clone(), prometheus));

    let app = Router::new()
        .nest("/palisade", dashboard::router(snapshot))
        .route("/metrics", dashboard::metrics_route(Arc::new(registry)));
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on 127.0.0.1:{}: {err}", args.port);
            std::process::exit(1);
        }
    };
    let addr = listener
        .local_addr()
        .map_or_else(|_| args.port.to_string(), |a| a.to_string());
    eprintln!("dashboard: http://{addr}/palisade   metrics: http://{addr}/metrics");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let location = PanicLocation::new("src/handlers/checkout.rs", 88, 17);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut state = CircuitState::Closed;
    let mut in_flight = 0_usize;
    let mut limit = 16_usize;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    let ticks = args.seconds.map(|s| s * 10);
    let mut tick = 0_u64;
    metrics.emit(&Event::TaskStarted {
        group: "workers",
        task: "mailer",
    });
    while ticks.is_none_or(|t| tick < t) {
        interval.tick().await;
        tick += 1;
        breaker_step(&metrics, tick, &mut state, &mut rng);

        // search: a keyed rate limiter with bursts of rejections.
        let burst = if tick % 300 < 80 { rng.usize(3..12) } else { 0 };
        for _ in 0..burst {
            metrics.emit(&Event::Rejected {
                policy: "search",
                layer: LayerKind::RateLimit,
                reason: RejectReason::RateLimited,
            });
        }
        if tick.is_multiple_of(10) {
            metrics.emit(&Event::KeysTracked {
                policy: "search",
                keys: 400 + rng.usize(0..200),
                cap: 10_000,
            });
        }

        // inventory: an adaptive bulkhead that fills up now and then.
        let target = if tick % 400 < 60 {
            limit
        } else {
            rng.usize(0..limit / 2)
        };
        while in_flight < target {
            in_flight += 1;
            metrics.emit(&Event::InFlightChanged {
                policy: "inventory",
                layer: LayerKind::Bulkhead,
                change: InFlightChange::Acquired,
                in_flight,
                limit,
            });
        }
        while in_flight > target {
            in_flight -= 1;
            metrics.emit(&Event::InFlightChanged {
                policy: "inventory",
                layer: LayerKind::Bulkhead,
                change: InFlightChange::Released,
                in_flight,
                limit,
            });
        }
        if in_flight == limit {
            metrics.emit(&Event::Rejected {
                policy: "inventory",
                layer: LayerKind::Bulkhead,
                reason: RejectReason::ConcurrencyFull,
            });
        }
        if tick.is_multiple_of(50) {
            let to = (limit + rng.usize(0..5)).saturating_sub(2).clamp(8, 32);
            metrics.emit(&Event::LimitChanged {
                policy: "inventory",
                from: limit,
                to,
            });
            limit = to;
        }

        // checkout: a panic now and then, and timeouts.
        if rng.u32(0..100) == 0 {
            metrics.emit(&Event::PanicCaught {
                policy: "checkout",
                message: "called `Option::unwrap()` on a `None` value",
                location: Some(&location),
            });
        }
        if rng.u32(0..40) == 0 {
            metrics.emit(&Event::TimedOut {
                policy: "checkout",
                timeout: Duration::from_secs(2),
                caller: false,
            });
        }
        metrics.emit(&Event::Admitted {
            policy: "checkout",
            layer: LayerKind::RateLimit,
        });

        // background work.
        if tick.is_multiple_of(25) {
            metrics.emit(&Event::OffloadDelivered {
                queue: "audit",
                attempts: 1,
            });
        }
        if rng.u32(0..200) == 0 {
            metrics.emit(&Event::OffloadDropped {
                queue: "audit",
                reason: DropReason::QueueFull,
            });
        }
        if rng.u32(0..300) == 0 {
            metrics.emit(&Event::TaskPanicked {
                group: "workers",
                task: "mailer",
                message: "smtp connection reset",
                location: None,
            });
            metrics.emit(&Event::TaskEnded {
                group: "workers",
                task: "mailer",
                end: TaskEnd::Panicked,
            });
            metrics.emit(&Event::TaskRestarted {
                group: "workers",
                task: "mailer",
                attempt: 1,
                backoff: Duration::from_millis(500),
            });
            metrics.emit(&Event::TaskStarted {
                group: "workers",
                task: "mailer",
            });
        }
    }
    server.abort();
}

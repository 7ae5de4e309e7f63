//! palisade's demo: a chaotic HTTP service, bare and behind palisade.
//!
//! ```text
//! cargo run --release --example demo                  # serve until Ctrl-C, with a little traffic
//! cargo run --release --example demo -- --load 10     # 10 s bare, 10 s protected, a summary, exit
//! cargo run --release --example demo -- --help        # every option
//! ```
//!
//! The routes fail on purpose (errors, panics, latency spikes, a slow and
//! flaky dependency). `/api/*` is protected by palisade stacks; `/bare/api/*`
//! serves the same handlers and faults without them. The dashboard is at
//! `/palisade`, the Prometheus text at `/metrics`. The server lives in
//! `palisade_workspace::demo`, which the browser test starts in-process.

#![allow(clippy::print_stdout)]

use std::io::{ErrorKind, IsTerminal};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use palisade_workspace::demo::args::{self, Command, DEFAULT_PORT, DemoArgs};
use palisade_workspace::demo::report::{self, setting};
use palisade_workspace::demo::{
    self, DemoConfig, DemoServer, LoadPlan, ProgressStyle, ROUTES, Side,
};
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

/// How long requests in flight may take to finish once the demo stops.
const GRACE: Duration = Duration::from_secs(3);

/// What the demo logs unless `RUST_LOG` says otherwise: breaker
/// transitions, from palisade's `tracing` sink. The panics its routes
/// raise on purpose are counted on the dashboard; `RUST_LOG=palisade=debug`
/// logs each one as it is caught.
const DEFAULT_LOG: &str = "off,palisade=warn,palisade_http=off,palisade_panic=off";

#[tokio::main]
async fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Command::Run(args)) => args,
        Ok(Command::Help) => {
            print!("{}", args::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}\n(run with --help for every option)");
            return ExitCode::from(2);
        }
    };

    // Before any layer is built: palisade's panic hook then wraps this one.
    demo::silence_injected_panics();
    init_tracing(args.load.is_none());

    let (listener, note) = match bind(args.port).await {
        Ok(bound) => bound,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    let server = match DemoServer::start(args.config, listener).await {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: the demo could not start: {err}");
            return ExitCode::FAILURE;
        }
    };
    print_banner(&server, &args, note.as_deref());

    let result = match args.load_plan() {
        Some(plan) => {
            run_load(&server, plan).await;
            Ok(())
        }
        None => serve(&server, &args).await,
    };
    let stopped = server.shutdown(GRACE).await;
    match result.and(stopped) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(serving: bool) {
    let filter = match EnvFilter::try_from_default_env() {
        Ok(filter) => filter,
        // With --load the progress bar owns stderr: log only on request.
        Err(_) if !serving => return,
        Err(_) => EnvFilter::new(DEFAULT_LOG),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
}

/// Binds `--port`, or the default port, or any free port when the default
/// one is taken.
async fn bind(port: Option<u16>) -> Result<(TcpListener, Option<String>), String> {
    let at = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    match port {
        Some(port) => TcpListener::bind(at(port))
            .await
            .map(|l| (l, None))
            .map_err(|err| format!("cannot listen on {}: {err}", at(port))),
        None => match TcpListener::bind(at(DEFAULT_PORT)).await {
            Ok(listener) => Ok((listener, None)),
            Err(err) if err.kind() == ErrorKind::AddrInUse => TcpListener::bind(at(0))
                .await
                .map(|l| {
                    let note = format!("port {DEFAULT_PORT} is taken, so the demo took a free one");
                    (l, Some(note))
                })
                .map_err(|err| format!("cannot listen on 127.0.0.1: {err}")),
            Err(err) => Err(format!("cannot listen on {}: {err}", at(DEFAULT_PORT))),
        },
    }
}

fn percent(share: f64) -> String {
    format!("{:.0} %", share * 100.0)
}

fn print_banner(server: &DemoServer, args: &DemoArgs, note: Option<&str>) {
    let config: &DemoConfig = &args.config;
    let faults = &config.orders;
    let dependency = &config.dependency;
    let protection = &config.protection;
    println!("palisade demo: a small shop API that fails on purpose");
    println!();
    println!(
        "Its handlers answer {} errors, panic on {} of requests and stall {} of them for {};",
        percent(faults.error_rate),
        percent(faults.panic_rate),
        percent(faults.spike_rate),
        setting(faults.spike),
    );
    println!(
        "its dependency is slow ({} of calls take {} more) and flaky ({} fail).",
        percent(dependency.slow_rate),
        setting(dependency.slow),
        percent(dependency.error_rate),
    );
    println!();
    if let Some(note) = note {
        println!("  ({note})");
    }
    println!(
        "  dashboard  {:<36} every policy live: breaker state, rejections, panics",
        server.dashboard_url()
    );
    println!(
        "  metrics    {:<36} the same, as Prometheus text",
        server.metrics_url()
    );
    println!();
    println!(
        "  {:<24} {:<28} what it shows",
        "behind palisade", "bare (no protection)"
    );
    for route in ROUTES {
        println!(
            "  {:<24} {:<28} {}",
            route.path, route.bare_path, route.what
        );
    }
    println!();
    println!(
        "Protection: server timeout {}, dependency timeout {}, breakers open at {} failures",
        setting(protection.server_timeout),
        setting(protection.dependency_timeout),
        percent(protection.breaker_failure_rate),
    );
    println!(
        "and wait {} before probing; panics become 500s (orders) or the cached catalog; rate limits {}/s (orders), {}/s (catalog).",
        setting(protection.breaker_open_wait),
        protection.orders_per_second,
        protection.catalog_per_second,
    );
    println!();
}

async fn run_load(server: &DemoServer, plan: LoadPlan) {
    println!(
        "Load: {} workers send {} requests/s for {} s to the bare routes, then for {} s to the",
        plan.workers,
        plan.rate,
        plan.duration.as_secs(),
        plan.duration.as_secs(),
    );
    println!(
        "protected ones; a worker gives up on an answer after {}. Watch the dashboard meanwhile.",
        setting(plan.patience)
    );
    println!();
    let phases = demo::compare(server, plan, ProgressStyle::detect()).await;
    println!();
    println!("Summary (both sides get the same fault seed and rates):");
    println!();
    print!("{}", report::render(&phases, plan.patience));
    println!();
    println!("What palisade did, policy by policy (from its metrics, as on the dashboard):");
    println!();
    print!("{}", report::render_policies(&server.snapshot()));
    println!();
    println!("Reading it: a degraded answer is a 2xx that a fallback gave (header `x-degraded`);");
    println!("a rejection is a fast 429/503/504 that names its reason. Without palisade a panic");
    println!("breaks the connection and a stall holds the caller until it gives up, so the same");
    println!("workers get fewer requests sent.");
}

async fn serve(server: &DemoServer, args: &DemoArgs) -> Result<(), std::io::Error> {
    let traffic = args.background_plan().map(|plan| {
        let addr = server.addr();
        println!(
            "A loopback client sends {} requests/s to the protected routes so the dashboard moves",
            plan.rate
        );
        println!("(--rate 0 to stop it). Try the routes yourself:");
        tokio::spawn(async move {
            demo::load::run(addr, Side::Protected, plan, ProgressStyle::Quiet).await
        })
    });
    if traffic.is_none() {
        println!("Try the routes yourself:");
    }
    let example = server.url(ROUTES[1].path);
    let bare = server.url(ROUTES[0].bare_path);
    println!("  curl -i {example}      # now and then `x-degraded`: a fallback answered");
    println!("  curl -i {bare}    # now and then a stall, or a connection a panic broke");
    println!();
    println!(
        "Breaker transitions are logged below (RUST_LOG=palisade=debug adds every caught panic). \
         Ctrl-C stops."
    );
    println!();
    let stopped = tokio::signal::ctrl_c().await;
    if let Some(traffic) = traffic {
        traffic.abort();
    }
    println!();
    println!(
        "Stopping: requests in flight get {} to finish.",
        setting(GRACE)
    );
    stopped
}

//! The loopback load: a fixed number of workers, paced to a total rate,
//! each sending one request at a time and giving up after a while, as a
//! user would.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::Uri;
use http_body_util::BodyExt;
use tokio::time::{Instant, MissedTickBehavior};

use super::app::{self, DEGRADED_HEADER, DemoRoute, HttpClient, ROUTES};
use super::config::LoadPlan;
use super::server::Side;

/// How one request ended, seen from the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// A `2xx` with the full answer.
    Full,
    /// A `2xx` given by a fallback (it carries [`DEGRADED_HEADER`]).
    Degraded,
    /// A palisade rejection (`429`, `503`, `504`, ...), with the `reason`
    /// of its problem details.
    Rejected(String),
    /// A `500` for a panic that palisade caught.
    PanicAnswer,
    /// Any other error status.
    ErrorStatus,
    /// The connection broke before an answer: what a panic does to a
    /// server that does not catch it.
    Broken,
    /// No answer within the worker's patience.
    GaveUp,
}

/// What one load phase saw, from the client's side.
///
/// A default tally keeps every request's latency for
/// [`percentile`](Self::percentile); one made with
/// [`counts_only`](Self::counts_only) keeps counts alone, so that an endless
/// run uses constant memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tally {
    /// Requests sent.
    pub requests: u64,
    /// [`Answer::Full`] answers.
    pub full: u64,
    /// [`Answer::Degraded`] answers.
    pub degraded: u64,
    /// [`Answer::Rejected`] answers, by reason.
    pub rejected: BTreeMap<String, u64>,
    /// [`Answer::PanicAnswer`] answers.
    pub panic_answers: u64,
    /// [`Answer::ErrorStatus`] answers.
    pub error_statuses: u64,
    /// [`Answer::Broken`] requests.
    pub broken: u64,
    /// [`Answer::GaveUp`] requests.
    pub gave_up: u64,
    /// Every request's latency, or `None` when only counts are kept.
    latencies: Option<Vec<Duration>>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            requests: 0,
            full: 0,
            degraded: 0,
            rejected: BTreeMap::new(),
            panic_answers: 0,
            error_statuses: 0,
            broken: 0,
            gave_up: 0,
            latencies: Some(Vec::new()),
        }
    }
}

impl Tally {
    /// A tally that counts answers but keeps no latency: its memory does not
    /// grow with the number of requests, and it has no percentiles.
    pub fn counts_only() -> Self {
        Self {
            latencies: None,
            ..Self::default()
        }
    }

    /// Counts one request.
    pub fn record(&mut self, answer: Answer, latency: Duration) {
        self.requests += 1;
        match answer {
            Answer::Full => self.full += 1,
            Answer::Degraded => self.degraded += 1,
            Answer::Rejected(reason) => *self.rejected.entry(reason).or_default() += 1,
            Answer::PanicAnswer => self.panic_answers += 1,
            Answer::ErrorStatus => self.error_statuses += 1,
            Answer::Broken => self.broken += 1,
            Answer::GaveUp => self.gave_up += 1,
        }
        if let Some(latencies) = &mut self.latencies {
            latencies.push(latency);
        }
    }

    /// Adds `other`'s counts and latencies to this tally. If either keeps
    /// only counts, so does the result: partial latencies would give wrong
    /// percentiles.
    pub fn merge(&mut self, other: Tally) {
        self.requests += other.requests;
        self.full += other.full;
        self.degraded += other.degraded;
        for (reason, n) in other.rejected {
            *self.rejected.entry(reason).or_default() += n;
        }
        self.panic_answers += other.panic_answers;
        self.error_statuses += other.error_statuses;
        self.broken += other.broken;
        self.gave_up += other.gave_up;
        match (&mut self.latencies, other.latencies) {
            (Some(mine), Some(theirs)) => mine.extend(theirs),
            _ => self.latencies = None,
        }
    }

    /// Requests answered with a `2xx`, full or degraded.
    pub fn answered(&self) -> u64 {
        self.full + self.degraded
    }

    /// Requests turned away by palisade.
    pub fn rejections(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Requests that failed: an error status, a broken connection, or no
    /// answer in time.
    pub fn failures(&self) -> u64 {
        self.panic_answers + self.error_statuses + self.broken + self.gave_up
    }

    /// The share of requests answered with a `2xx`, `None` without
    /// requests.
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.answered() as f64 / self.requests as f64)
    }

    /// The latency under which a share `q` (`0.0..=1.0`) of the requests
    /// completed (nearest rank), `None` without requests or for a
    /// [`counts_only`](Self::counts_only) tally.
    pub fn percentile(&self, q: f64) -> Option<Duration> {
        let mut sorted = self.latencies.clone()?;
        sorted.sort_unstable();
        let n = sorted.len();
        if n == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * n as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, n) - 1])
    }
}

/// How a load phase shows its progress on stderr.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressStyle {
    /// A bar redrawn in place (`\r`) ten times a second, for a terminal.
    Bar,
    /// One line per second, for logs.
    Lines,
    /// Nothing.
    Quiet,
}

impl ProgressStyle {
    /// [`Bar`](Self::Bar) when stderr is a terminal,
    /// [`Lines`](Self::Lines) otherwise.
    pub fn detect() -> Self {
        if std::io::stderr().is_terminal() {
            ProgressStyle::Bar
        } else {
            ProgressStyle::Lines
        }
    }
}

/// Live counters for the progress display.
#[derive(Debug, Default)]
struct Live {
    sent: AtomicU64,
    done: AtomicU64,
    answered: AtomicU64,
}

/// The route of request `n` of worker `worker`: across workers, each route
/// gets its weight out of every 10 requests.
fn route_for(worker: usize, n: u64, workers: usize) -> &'static DemoRoute {
    let total: u32 = ROUTES.iter().map(|r| r.weight).sum();
    let mut slot = ((n * workers as u64 + worker as u64) % u64::from(total)) as u32;
    for route in &ROUTES {
        if slot < route.weight {
            return route;
        }
        slot -= route.weight;
    }
    &ROUTES[0]
}

/// Reads the `reason` of a problem-details body.
fn problem_reason(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    value.get("reason")?.as_str().map(str::to_owned)
}

/// Sends one request and reads its answer to the end.
async fn send(client: &HttpClient, uri: Uri) -> Answer {
    let Ok(response) = client.get(uri).await else {
        return Answer::Broken;
    };
    let status = response.status();
    let degraded = response.headers().contains_key(DEGRADED_HEADER);
    let Ok(body) = response.into_body().collect().await else {
        return Answer::Broken;
    };
    if status.is_success() {
        return if degraded {
            Answer::Degraded
        } else {
            Answer::Full
        };
    }
    match problem_reason(&body.to_bytes()) {
        Some(reason) if reason == "panicked" => Answer::PanicAnswer,
        Some(reason) => Answer::Rejected(reason),
        None => Answer::ErrorStatus,
    }
}

async fn worker(
    index: usize,
    client: HttpClient,
    base: Arc<str>,
    side: Side,
    plan: LoadPlan,
    start: Instant,
    live: Arc<Live>,
) -> Tally {
    let end = start.checked_add(plan.duration);
    let rate = f64::from(plan.rate.max(1));
    let period = Duration::from_secs_f64(plan.workers as f64 / rate);
    // Stagger the workers so the load is spread over each period.
    let offset = Duration::from_secs_f64(index as f64 / rate);
    let mut ticks = tokio::time::interval_at(start + offset, period);
    // Users keep arriving whatever the server does: a worker held up by a
    // slow answer sends the requests it owes as soon as it is free, so the
    // bare and the protected side get about the same requests.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    // An endless run (background traffic) keeps counts only, or memory
    // would grow with every request.
    let mut tally = match end {
        Some(_) => Tally::default(),
        None => Tally::counts_only(),
    };
    // The phase's end is waited for too: a worker whose next turn comes
    // after it (few requests a second for many workers) stops then. One
    // timer for the whole phase, not one a request.
    let phase_end = async move {
        match end {
            Some(end) => tokio::time::sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    tokio::pin!(phase_end);
    for n in 0.. {
        let at = tokio::select! {
            at = ticks.tick() => at,
            () = &mut phase_end => break,
        };
        if end.is_some_and(|end| at >= end || Instant::now() >= end) {
            break;
        }
        let route = route_for(index, n, plan.workers);
        let path = match side {
            Side::Bare => route.bare_path,
            Side::Protected => route.path,
        };
        let Ok(uri) = format!("{base}{path}").parse::<Uri>() else {
            break;
        };
        live.sent.fetch_add(1, Ordering::Relaxed);
        let began = Instant::now();
        let answer = tokio::time::timeout(plan.patience, send(&client, uri))
            .await
            .unwrap_or(Answer::GaveUp);
        if matches!(answer, Answer::Full | Answer::Degraded) {
            live.answered.fetch_add(1, Ordering::Relaxed);
        }
        live.done.fetch_add(1, Ordering::Relaxed);
        tally.record(answer, began.elapsed());
    }
    tally
}

/// Drives `plan` against `side` of the demo at `addr`, showing progress as
/// `style` says, and returns what the client saw.
///
/// Every worker stops sending when the phase's time is up and waits for
/// its last answer (for at most `plan.patience`), so a phase lasts at most
/// `plan.duration + plan.patience`. With `Duration::MAX` it runs until its
/// task is dropped, and its workers keep counts but no latencies
/// ([`Tally::counts_only`]), so its memory stays bounded.
pub async fn run(addr: SocketAddr, side: Side, plan: LoadPlan, style: ProgressStyle) -> Tally {
    let client = app::http_client();
    let base: Arc<str> = format!("http://{addr}").into();
    let live = Arc::new(Live::default());
    let start = Instant::now();
    // Owned here: when this task is dropped (background traffic stopped),
    // its workers are aborted with it.
    let mut workers = tokio::task::JoinSet::new();
    for index in 0..plan.workers.max(1) {
        workers.spawn(worker(
            index,
            client.clone(),
            base.clone(),
            side,
            plan,
            start,
            live.clone(),
        ));
    }
    // Owned here too, for the same reason.
    let mut progress = tokio::task::JoinSet::new();
    if style != ProgressStyle::Quiet {
        progress.spawn(show_progress(side, plan, start, live.clone(), style));
    }
    let mut tally = Tally::default();
    while let Some(worker) = workers.join_next().await {
        if let Ok(worker_tally) = worker {
            tally.merge(worker_tally);
        }
    }
    if !progress.is_empty() {
        progress.shutdown().await;
        draw(side, plan, start.elapsed(), &live, style, true);
    }
    tally
}

async fn show_progress(
    side: Side,
    plan: LoadPlan,
    start: Instant,
    live: Arc<Live>,
    style: ProgressStyle,
) {
    let every = match style {
        ProgressStyle::Bar => Duration::from_millis(100),
        _ => Duration::from_secs(1),
    };
    let mut ticks = tokio::time::interval_at(start + every, every);
    loop {
        ticks.tick().await;
        draw(side, plan, start.elapsed(), &live, style, false);
    }
}

const BAR_WIDTH: usize = 30;

fn draw(
    side: Side,
    plan: LoadPlan,
    elapsed: Duration,
    live: &Live,
    style: ProgressStyle,
    last: bool,
) {
    let sent = live.sent.load(Ordering::Relaxed);
    let done = live.done.load(Ordering::Relaxed);
    let answered = live.answered.load(Ordering::Relaxed);
    let total = plan.duration.as_secs_f64();
    let shown = elapsed.as_secs_f64().min(total);
    let share = if done > 0 {
        format!("{:5.1} % answered", 100.0 * answered as f64 / done as f64)
    } else {
        "    - % answered".to_owned()
    };
    let status = format!(
        "{:<16} {:>4.1} / {} s  {:>7} requests  {share}",
        side.label(),
        shown,
        plan.duration.as_secs(),
        sent,
    );
    let mut err = std::io::stderr().lock();
    let _ = match style {
        ProgressStyle::Bar => {
            let filled = ((shown / total) * BAR_WIDTH as f64).round() as usize;
            let bar = format!(
                "{}{}",
                "#".repeat(filled.min(BAR_WIDTH)),
                ".".repeat(BAR_WIDTH - filled.min(BAR_WIDTH))
            );
            let end = if last { "  done\n" } else { "" };
            write!(err, "\r  [{bar}] {status}{end}")
        }
        ProgressStyle::Lines => {
            let end = if last { "  done" } else { "" };
            writeln!(err, "  {status}{end}")
        }
        ProgressStyle::Quiet => Ok(()),
    };
    let _ = err.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_follow_their_weights() {
        let workers = 7;
        let mut counts = [0_u32; 3];
        for worker in 0..workers {
            for n in 0..10 {
                let route = route_for(worker, n, workers);
                let i = ROUTES.iter().position(|r| r == route).unwrap();
                counts[i] += 1;
            }
        }
        assert_eq!(counts, [35, 21, 14]);
    }

    #[test]
    fn tally_counts_and_percentiles() {
        let mut a = Tally::default();
        for ms in 1..=98 {
            a.record(Answer::Full, Duration::from_millis(ms));
        }
        let mut b = Tally::default();
        b.record(
            Answer::Rejected("timed_out".to_owned()),
            Duration::from_millis(250),
        );
        b.record(Answer::GaveUp, Duration::from_millis(1000));
        a.merge(b);
        assert_eq!(a.requests, 100);
        assert_eq!(a.rejections(), 1);
        assert_eq!(a.failures(), 1);
        assert_eq!(a.success_rate(), Some(0.98));
        assert_eq!(a.percentile(0.5), Some(Duration::from_millis(50)));
        assert_eq!(a.percentile(0.99), Some(Duration::from_millis(250)));
        assert_eq!(a.percentile(1.0), Some(Duration::from_millis(1000)));
        assert_eq!(Tally::default().percentile(0.5), None);
    }

    #[test]
    fn a_counts_only_tally_keeps_no_latency() {
        let mut endless = Tally::counts_only();
        for ms in 0..10_000 {
            endless.record(Answer::Full, Duration::from_millis(ms));
        }
        endless.record(Answer::Broken, Duration::from_secs(1));
        assert_eq!(endless.latencies, None);
        assert_eq!((endless.requests, endless.full), (10_001, 10_000));
        assert_eq!(endless.failures(), 1);
        assert_eq!(endless.percentile(0.5), None);

        // Merging either way keeps counts only: no partial percentiles.
        let mut kept = Tally::default();
        kept.record(Answer::Full, Duration::from_millis(5));
        let mut merged = kept.clone();
        merged.merge(endless.clone());
        assert_eq!(merged.requests, 10_002);
        assert_eq!(merged.percentile(0.5), None);
        endless.merge(kept);
        assert_eq!(endless.requests, 10_002);
        assert_eq!(endless.latencies, None);
    }

    #[test]
    fn problem_reasons_are_read_from_the_body() {
        assert_eq!(
            problem_reason(br#"{"status":503,"reason":"circuit_open"}"#).as_deref(),
            Some("circuit_open")
        );
        assert_eq!(problem_reason(b"internal server error"), None);
    }
}

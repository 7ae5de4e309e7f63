//! The dashboard as a browser renders it: the demo server runs in-process,
//! a little traffic opens one breaker, and headless Chromium loads
//! `/palisade`, runs its polling script, and dumps the DOM and a
//! screenshot.
//!
//! The browser is `/usr/bin/chromium` (Debian's `chromium` package), or
//! the path in `PALISADE_CHROMIUM`. Without it the test says that it was
//! skipped, and why, and passes; with `PALISADE_REQUIRE_BROWSER=1` (as CI
//! sets it) a missing browser fails the test. The screenshot is saved to
//! `ci-artifacts/dashboard.png` at the workspace root, next to the DOM it
//! was checked against (`ci-artifacts/dashboard.html`).

#![cfg(unix)]

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::Write as _;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use palisade_core::CircuitState;
use palisade_workspace::demo::{
    DEGRADED_HEADER, DemoConfig, DemoServer, DependencyFaults, Protection, ROUTES,
};
use tokio::net::TcpListener;

/// Where Debian's `chromium` package puts the browser.
const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Names another browser binary.
const CHROMIUM_ENV: &str = "PALISADE_CHROMIUM";
/// Set to `1` to fail, rather than skip, without a browser.
const REQUIRE_ENV: &str = "PALISADE_REQUIRE_BROWSER";
/// The longest one browser run may take before it is killed.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);

/// The flags of every run: headless, nothing fetched but the page, no
/// state kept between runs (each gets a fresh `--user-data-dir`), and a
/// virtual-time budget so the page's polling script has run several times
/// before the DOM is dumped or the screenshot taken.
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-dev-shm-usage",
    "--run-all-compositor-stages-before-draw",
    "--virtual-time-budget=5000",
];

/// Writes to the terminal even while the test harness captures output, so
/// that a skip is seen.
fn note(text: &str) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// What to do about the browser.
#[derive(Debug, PartialEq, Eq)]
enum Browser {
    Found(PathBuf),
    Skip(String),
    Fail(String),
}

fn find_browser(path: Option<OsString>, required: bool) -> Browser {
    let (path, from) = match path {
        Some(path) => (PathBuf::from(path), format!("{CHROMIUM_ENV} names")),
        None => (
            PathBuf::from(DEFAULT_CHROMIUM),
            "the default browser path is".to_owned(),
        ),
    };
    if path.is_file() {
        return Browser::Found(path);
    }
    let why = format!("no browser at {} ({from} it)", path.display());
    if required {
        Browser::Fail(format!(
            "{why}, and {REQUIRE_ENV}=1 requires one: install Debian's `chromium` package"
        ))
    } else {
        Browser::Skip(format!(
            "SKIPPED the dashboard browser test: {why}. Install Debian's `chromium` package, \
             or set {CHROMIUM_ENV} to a Chromium binary, to run it; set {REQUIRE_ENV}=1 to \
             make a missing browser a failure."
        ))
    }
}

fn required() -> bool {
    std::env::var(REQUIRE_ENV).is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

#[test]
fn a_missing_browser_is_skipped_unless_required() {
    let nowhere = || Some(OsString::from("/nonexistent/palisade/chromium"));
    let Browser::Skip(why) = find_browser(nowhere(), false) else {
        panic!("a missing browser must be a skip");
    };
    assert!(why.starts_with("SKIPPED"), "{why}");
    assert!(why.contains("/nonexistent/palisade/chromium"), "{why}");
    assert!(matches!(find_browser(nowhere(), true), Browser::Fail(_)));
    // A directory is not a browser either.
    assert!(matches!(
        find_browser(Some(OsString::from("/")), true),
        Browser::Fail(_)
    ));
}

/// A scratch directory under Cargo's temporary directory for tests,
/// removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Self {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "browser-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        ));
        fs::create_dir_all(&dir).expect("scratch directory");
        Self(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Kills every process left in the browser's process group: with procps'
/// `kill`, or else with the `kill` builtin of `sh`.
fn kill_group(pgid: u32) {
    let group = format!("-{pgid}");
    let quiet = |command: &mut Command| {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    if quiet(Command::new("kill").args(["-KILL", "--", &group])).is_err() {
        let _ = quiet(Command::new("sh").args(["-c", r#"kill -9 "$1""#, "sh", &group]));
    }
}

/// Runs the browser once with a fresh profile, in its own process group,
/// and returns its stdout. Killed, with every process it started, after
/// [`BROWSER_TIMEOUT`].
fn run_browser(
    chromium: &Path,
    scratch: &Path,
    run: &str,
    args: &[String],
) -> Result<String, String> {
    let profile = scratch.join(format!("profile-{run}"));
    let stdout_path = scratch.join(format!("{run}.stdout"));
    let stderr_path = scratch.join(format!("{run}.stderr"));
    let file = |path: &Path| File::create(path).map_err(|err| format!("{}: {err}", path.display()));
    let mut child = Command::new(chromium)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(file(&stdout_path)?)
        .stderr(file(&stderr_path)?)
        .process_group(0)
        .spawn()
        .map_err(|err| format!("cannot start {}: {err}", chromium.display()))?;
    let pgid = child.id();
    let (done, exited) = mpsc::channel::<std::io::Result<ExitStatus>>();
    let waiter = std::thread::spawn(move || {
        let _ = done.send(child.wait());
    });
    let status = exited.recv_timeout(BROWSER_TIMEOUT);
    // Whether it finished or not, nothing it started outlives it.
    kill_group(pgid);
    let status = match status {
        Ok(status) => {
            let _ = waiter.join();
            Ok(status)
        }
        Err(_) => {
            // Give the kill a moment to land; a waiter still blocked after
            // that is left behind rather than hanging the test.
            let _ = exited.recv_timeout(Duration::from_secs(5));
            Err(())
        }
    };
    match status {
        Err(()) => Err(format!(
            "chromium ({run}) did not finish within {BROWSER_TIMEOUT:?} and was killed; \
             its stderr ends with:\n{}",
            tail(&stderr_path)
        )),
        Ok(Err(err)) => Err(format!("waiting for chromium ({run}): {err}")),
        Ok(Ok(status)) if !status.success() => Err(format!(
            "chromium ({run}) failed with {status}; its stderr ends with:\n{}",
            tail(&stderr_path)
        )),
        Ok(Ok(_)) => fs::read_to_string(&stdout_path)
            .map_err(|err| format!("chromium's stdout ({run}): {err}")),
    }
}

fn tail(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// Sends a GET and reads the answer; returns the status and whether a
/// fallback gave it.
async fn get(client: &HttpClient, addr: SocketAddr, path: &str) -> (u16, bool) {
    let uri = format!("http://{addr}{path}").parse().expect("uri");
    let response = client.get(uri).await.expect("the demo answers");
    let status = response.status().as_u16();
    let degraded = response.headers().contains_key(DEGRADED_HEADER);
    response.into_body().collect().await.expect("body");
    (status, degraded)
}

/// The `<tr>` of `policy` in the dumped DOM: its start tag and its content.
fn policy_row<'a>(dom: &'a str, policy: &str) -> Option<(&'a str, &'a str)> {
    let at = dom.find(&format!(r#"data-policy="{policy}""#))?;
    let start = dom[..at].rfind("<tr")?;
    let tag_end = start + dom[start..].find('>')?;
    let end = tag_end + dom[tag_end..].find("</tr>")?;
    Some((&dom[start..=tag_end], &dom[tag_end + 1..end]))
}

/// The value of `name` in a start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let key = format!(r#" {name}=""#);
    let from = tag.find(&key)? + key.len();
    Some(&tag[from..from + tag[from..].find('"')?])
}

/// The start tag and text of the first element with class `class`.
fn element<'a>(html: &'a str, class: &str) -> Option<(&'a str, &'a str)> {
    let at = html.find(&format!(r#"class="{class}""#))?;
    let start = html[..at].rfind('<')?;
    let tag_end = start + html[start..].find('>')?;
    let text_end = tag_end + html[tag_end..].find('<')?;
    Some((&html[start..=tag_end], &html[tag_end + 1..text_end]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_every_policy_and_its_breaker_state() {
    let chromium = match find_browser(std::env::var_os(CHROMIUM_ENV), required()) {
        Browser::Found(path) => path,
        Browser::Skip(why) => {
            note(&why);
            return;
        }
        Browser::Fail(why) => panic!("{why}"),
    };

    // The dependency fails every call, fast, so the recommendations
    // breaker opens after its minimum calls and stays open while the
    // browser looks.
    let config = DemoConfig {
        dependency: DependencyFaults {
            error_rate: 1.0,
            slow_rate: 0.0,
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(2),
            ..DependencyFaults::default()
        },
        protection: Protection {
            breaker_open_wait: Duration::from_secs(600),
            ..Protection::default()
        },
        ..DemoConfig::default()
    };
    let minimum_calls = config.protection.breaker_minimum_calls;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let server = DemoServer::start(config, listener)
        .await
        .expect("demo server");
    let addr = server.addr();

    // A little traffic on every route: fewer calls than a breaker needs to
    // judge on orders and catalog, more on recommendations.
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // One request at a time per route, so that no call is turned away by
    // a bulkhead (which a breaker does not count).
    let calls: Vec<_> = ROUTES
        .into_iter()
        .map(|route| {
            let n = if route.name == "recommendations" {
                minimum_calls + 5
            } else {
                minimum_calls / 2
            };
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..n {
                    get(&client, addr, route.path).await;
                }
            })
        })
        .collect();
    for call in calls {
        call.await.expect("request task");
    }
    // Once open, the breaker answers from the fallback at once.
    let (status, degraded) = get(&client, addr, ROUTES[2].path).await;
    assert_eq!((status, degraded), (200, true));

    let states = server.breaker_states();
    assert_eq!(
        states,
        [
            ("orders", CircuitState::Closed),
            ("catalog", CircuitState::Closed),
            ("recommendations", CircuitState::Open),
        ]
    );

    let scratch = Scratch::new();
    let url = server.dashboard_url();
    let dom = {
        let (chromium, dir, url) = (chromium.clone(), scratch.0.clone(), url.clone());
        tokio::task::spawn_blocking(move || {
            run_browser(&chromium, &dir, "dom", &["--dump-dom".to_owned(), url])
        })
        .await
        .expect("browser task")
        .unwrap_or_else(|err| panic!("{err}"))
    };

    let artifacts = Path::new(env!("CARGO_MANIFEST_DIR")).join("ci-artifacts");
    fs::create_dir_all(&artifacts).expect("ci-artifacts directory");
    fs::write(artifacts.join("dashboard.html"), &dom).expect("save the DOM");

    assert!(
        dom.contains(r#"id="policies""#),
        "no #policies table in\n{dom}"
    );
    for (policy, state) in &states {
        let (tag, row) = policy_row(&dom, policy)
            .unwrap_or_else(|| panic!("no row for policy {policy:?} in\n{dom}"));
        assert_eq!(attribute(tag, "class"), Some("policy"), "{tag}");
        assert_eq!(attribute(tag, "data-state"), Some(state.as_str()), "{tag}");
        let (name_tag, name) = element(row, "policy-name")
            .unwrap_or_else(|| panic!("no .policy-name in the row of {policy}: {row}"));
        assert_eq!(name, *policy, "{name_tag}");
        let (state_tag, text) = element(row, "breaker-state")
            .unwrap_or_else(|| panic!("no .breaker-state in the row of {policy}: {row}"));
        assert_eq!(attribute(state_tag, "data-state"), Some(state.as_str()));
        assert_eq!(text, state.as_str().replace('_', " "), "{state_tag}");
    }
    // The open breaker makes its policy critical, the others are not.
    let (open_tag, _) = policy_row(&dom, "recommendations").expect("row");
    assert_eq!(attribute(open_tag, "data-health"), Some("critical"));

    // The script ran and its polls succeeded: it wrote the age of the data
    // and keeps the stale banner hidden.
    let age = dom
        .split(r#"id="age">"#)
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .unwrap_or_default();
    assert!(age.starts_with('(') && age.contains("ago"), "age {age:?}");
    assert!(!age.contains("STALE"), "age {age:?}");
    let banner = dom
        .split(r#"<p id="stale-banner""#)
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .unwrap_or_default();
    assert!(banner.contains("hidden"), "stale banner shown: {banner}");

    let screenshot = artifacts.join("dashboard.png");
    let _ = fs::remove_file(&screenshot);
    {
        let (chromium, dir, shot) = (chromium.clone(), scratch.0.clone(), screenshot.clone());
        tokio::task::spawn_blocking(move || {
            run_browser(
                &chromium,
                &dir,
                "screenshot",
                &[
                    "--hide-scrollbars".to_owned(),
                    "--window-size=1280,800".to_owned(),
                    format!("--screenshot={}", shot.display()),
                    url,
                ],
            )
        })
        .await
        .expect("browser task")
        .unwrap_or_else(|err| panic!("{err}"));
    }
    let png = fs::read(&screenshot).expect("the screenshot was written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(
        png.len() > 10_000,
        "a {}-byte screenshot is blank",
        png.len()
    );
    note(&format!("dashboard screenshot: {}", screenshot.display()));

    server
        .shutdown(Duration::from_secs(5))
        .await
        .expect("the demo stops");
}

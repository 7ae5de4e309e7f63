//! Configuration fuzzing: random values for every palisade builder.
//!
//! Each test draws a configuration that is valid by the builder's
//! documentation, then corrupts none, one or two of its fields with a value
//! out of the documented range. Whatever the values, `build()` never
//! panics; a valid configuration builds (and serves a few requests where
//! that is cheap), and an invalid one returns a `ConfigError` whose
//! `field()` names a value that was made invalid and whose `layer()` names
//! the component. With a single corruption the field must be exactly the
//! corrupted one.
//!
//! More cases: `PROPTEST_CASES=20000 cargo test -p palisade-workspace --release --test config_fuzz`.

use std::convert::Infallible;
use std::fmt::Debug;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use palisade::breaker::CircuitBreakerLayer;
use palisade::bulkhead::BulkheadLayer;
use palisade::bulkhead::adaptive::{AdaptiveLimit, Aimd, Gradient};
use palisade::chaos::ChaosLayer;
use palisade::core::{
    CircuitOpen, CircuitState, Elapsed, KeyKind, LayerKind, MissingKey, OverloadKind, Overloaded,
    PolicyName, RateLimited,
};
use palisade::fallback::{FallbackLayer, source};
use palisade::metrics::SnapshotSink;
use palisade::metrics::prometheus::PrometheusSink;
use palisade::panic::CatchPanicLayer;
use palisade::panic::http::CatchPanicHttpLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::ratelimit::key::{ClientIp, PeerIp};
use palisade::task::offload::Offload;
use palisade::task::{Backoff, RestartPolicy, TaskGroup, WorkerPool};
use palisade::timeout::TimeoutLayer;
use palisade::{BoxError, ConfigError, Event, ManualClock, Panicked, Stack};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::{Layer, Service, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// Harness

/// `cases` cases, unless `PROPTEST_CASES` says otherwise.
fn config(cases: u32) -> Config {
    let mut config = Config {
        // Failures are kept as corpus files or tests, not in regression files.
        failure_persistence: None,
        ..Config::default()
    };
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime")
}

/// One way to make a configuration invalid: the field it breaks, and how.
struct Corruption<P> {
    field: &'static str,
    apply: fn(&mut P, u64),
}

/// A configuration and the fields made invalid in it.
#[derive(Clone, Debug)]
struct Case<P> {
    plan: P,
    invalid: Vec<&'static str>,
}

/// Valid plans from `valid`, with zero to two of `corruptions` applied
/// (none in about half the cases).
fn cases<P: Clone + Debug + 'static>(
    valid: impl Strategy<Value = P> + 'static,
    corruptions: &'static [Corruption<P>],
) -> impl Strategy<Value = Case<P>> {
    let picks = prop_oneof![
        Just(Vec::new()),
        prop::collection::vec((0..corruptions.len(), any::<u64>()), 1..=1),
        prop::collection::vec((0..corruptions.len(), any::<u64>()), 2..=2),
    ];
    (valid, picks).prop_map(move |(mut plan, picks)| {
        let mut invalid = Vec::new();
        for (which, bits) in picks {
            let corruption = &corruptions[which];
            (corruption.apply)(&mut plan, bits);
            invalid.push(corruption.field);
        }
        Case { plan, invalid }
    })
}

/// Builds `case` with `build`: it must not panic; a valid case must build,
/// an invalid one must name a field that was made invalid (exactly that
/// one when there is a single corruption) and the component `layer`.
fn verify<P: Debug, T>(
    case: &Case<P>,
    layer: LayerKind,
    build: impl FnOnce() -> Result<T, ConfigError>,
) -> Result<Option<T>, TestCaseError> {
    let built = catch_unwind(AssertUnwindSafe(build))
        .map_err(|_| TestCaseError::fail(format!("build panicked for {:?}", case.plan)))?;
    match (built, case.invalid.as_slice()) {
        (Ok(built), []) => Ok(Some(built)),
        (Ok(_), invalid) => Err(TestCaseError::fail(format!(
            "built although {invalid:?} invalid: {:?}",
            case.plan
        ))),
        (Err(err), []) => Err(TestCaseError::fail(format!(
            "refused a valid configuration ({err}): {:?}",
            case.plan
        ))),
        (Err(err), invalid) => {
            prop_assert!(
                invalid.contains(&err.field()),
                "error names {} ({}), corrupted {:?}: {:?}",
                err.field(),
                err,
                invalid,
                case.plan
            );
            if let [only] = invalid {
                prop_assert_eq!(err.field(), *only);
            }
            prop_assert_eq!(err.layer(), layer);
            prop_assert!(err.to_string().contains(err.field()));
            Ok(None)
        }
    }
}

/// A policy name: 1 to 64 characters, none of them a control character.
fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("api".to_owned()),
        "[a-z0-9_.-]{1,64}",
        "\\PC{1,64}".prop_filter("64 characters at most", |s| s.chars().count() <= 64),
    ]
}

/// Makes a name invalid: empty, too long, or with a control character.
fn bad_name(bits: u64) -> String {
    match bits % 3 {
        0 => String::new(),
        1 => "n".repeat(65 + (bits % 100) as usize),
        _ => format!("a{}b", char::from(b"\n\t\0\x1b"[(bits % 4) as usize])),
    }
}

/// A duration from a nanosecond count spread over every order of magnitude
/// (up to `Duration::MAX` when `max_secs` is `u64::MAX`).
fn duration(min_nanos: u64, max_secs: u64) -> impl Strategy<Value = Duration> {
    (0_u32..64, any::<u64>(), 0_u32..1_000_000_000).prop_map(move |(bits, raw, nanos)| {
        let secs = if bits == 0 { 0 } else { raw >> (64 - bits) }.min(max_secs);
        Duration::new(secs, nanos).max(Duration::from_nanos(min_nanos))
    })
}

/// A rate in `0.0 < x <= 1.0`.
fn fraction() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(1.0),
        (1_u32..=1_000_000).prop_map(|n| f64::from(n) / 1e6)
    ]
}

/// A value that is not in `0.0 < x <= 1.0`.
fn bad_fraction(bits: u64) -> f64 {
    [
        0.0,
        -0.5,
        1.000_000_000_000_001,
        2.0,
        f64::NAN,
        f64::INFINITY,
        -0.0,
    ][(bits % 7) as usize]
}

// ---------------------------------------------------------------------------
// Rate limit

#[derive(Clone, Debug)]
enum Key {
    Global,
    PeerIp { v4: u8, v6: u8 },
    ClientIp { v4: u8, v6: u8 },
}

#[derive(Clone, Debug)]
struct RateLimitPlan {
    name: String,
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    wait: Option<Duration>,
    key: Key,
    max_keys: usize,
}

/// Valid limits. The emission interval (`period / requests`) is at most
/// 1000 s, a layer that waits holds at least a millisecond of the quota,
/// and a full bucket (`interval * burst`) stays under 2^62 ns, well
/// inside the `u64` nanoseconds GCRA needs (see
/// `rate_limit_with_a_bucket_past_584_years_is_refused`).
fn rate_limit_plan() -> impl Strategy<Value = RateLimitPlan> {
    let key = prop_oneof![
        Just(Key::Global),
        (0_u8..=32, 0_u8..=128).prop_map(|(v4, v6)| Key::PeerIp { v4, v6 }),
        (0_u8..=32, 0_u8..=128).prop_map(|(v4, v6)| Key::ClientIp { v4, v6 }),
    ];
    (
        name(),
        1_u32..=1_000_000,
        (0_u32..40).prop_flat_map(|bits| 1_u64..=(1_u64 << bits).min(1_000_000_000_000)),
        prop::option::of(any::<u32>()),
        prop::option::of(duration(1_000_000, u64::MAX)),
        key,
        1_usize..=1024,
    )
        .prop_map(|(name, requests, interval, burst, wait, key, max_keys)| {
            let period = Duration::from_nanos(interval * u64::from(requests));
            let room = ((1_u64 << 62) / interval).clamp(1, u64::from(u32::MAX));
            let burst = burst.map(|b| 1 + u32::try_from(u64::from(b) % room).unwrap_or(0));
            let requests_fit = u64::from(requests) <= room;
            // Without a burst, the bucket holds `requests`.
            let mut burst = if requests_fit {
                burst
            } else {
                burst.or(Some(1))
            };
            // Waiting requests wake once a millisecond: the bucket holds
            // at least a millisecond of the quota.
            let tick = 1_000_000_u64.div_ceil(interval);
            if wait.is_some() && u64::from(burst.unwrap_or(requests)) < tick {
                burst = Some(u32::try_from(tick).unwrap_or(u32::MAX));
            }
            RateLimitPlan {
                name,
                burst,
                requests,
                period,
                wait,
                key,
                max_keys,
            }
        })
}

static RATE_LIMIT_CORRUPTIONS: [Corruption<RateLimitPlan>; 10] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "requests",
        apply: |p, _| p.requests = 0,
    },
    Corruption {
        field: "period",
        apply: |p, _| p.period = Duration::ZERO,
    },
    Corruption {
        field: "period",
        // Less than a nanosecond per request.
        apply: |p, b| {
            p.requests = p.requests.max(2);
            p.period = Duration::from_nanos(b % u64::from(p.requests));
        },
    },
    Corruption {
        field: "burst",
        apply: |p, _| p.burst = Some(0),
    },
    Corruption {
        field: "burst",
        // A full bucket longer than u64 nanoseconds.
        apply: |p, _| {
            p.period = Duration::from_secs(10).saturating_mul(p.requests);
            p.burst = Some(u32::MAX);
        },
    },
    Corruption {
        field: "max_delay",
        // Shorter than a tick of tokio's timer, zero included.
        apply: |p, b| p.wait = Some(Duration::from_nanos(b % 1_000_000)),
    },
    Corruption {
        field: "max_keys",
        apply: |p, b| {
            if matches!(p.key, Key::Global) {
                p.key = Key::PeerIp { v4: 32, v6: 64 };
            }
            p.max_keys = if b % 2 == 0 {
                0
            } else {
                (1 << 24) + 1 + (b % 1000) as usize
            };
        },
    },
    Corruption {
        field: "ipv4_prefix",
        apply: |p, b| {
            let v4 = 33 + (b % 223) as u8;
            p.key = match p.key {
                Key::ClientIp { v6, .. } => Key::ClientIp { v4, v6 },
                Key::PeerIp { v6, .. } => Key::PeerIp { v4, v6 },
                Key::Global => Key::PeerIp { v4, v6: 64 },
            };
        },
    },
    Corruption {
        field: "ipv6_prefix",
        apply: |p, b| {
            let v6 = 129 + (b % 127) as u8;
            p.key = match p.key {
                Key::PeerIp { v4, .. } => Key::PeerIp { v4, v6 },
                Key::ClientIp { v4, .. } => Key::ClientIp { v4, v6 },
                Key::Global => Key::ClientIp { v4: 32, v6 },
            };
        },
    },
];

/// Builds the plan's limiter and sends it a few requests, keyed by peer.
fn rate_limit_case(case: &Case<RateLimitPlan>) -> Result<(), TestCaseError> {
    let p = &case.plan;
    let clock = ManualClock::new();
    let builder = |p: &RateLimitPlan| {
        let mut b = RateLimitLayer::builder()
            .name(p.name.as_str())
            .quota(p.requests, p.period)
            .max_keys(p.max_keys)
            .clock(clock.clock());
        if let Some(burst) = p.burst {
            b = b.burst(burst);
        }
        if let Some(wait) = p.wait {
            b = b.wait_up_to(wait);
        }
        b
    };
    let request = |i: u8| {
        let mut req = http::Request::new(());
        req.extensions_mut()
            .insert(std::net::SocketAddr::from(([192, 0, 2, i], 80)));
        req
    };
    let ok = |_req: http::Request<()>| async { Ok::<_, Infallible>(()) };
    let rt = runtime();
    match p.key {
        Key::Global => {
            if let Some(layer) = verify(case, LayerKind::RateLimit, || builder(p).build())? {
                let svc = layer.layer(service_fn(ok));
                for i in 0..3 {
                    let _ = rt.block_on(svc.clone().oneshot(request(i)));
                }
            }
        }
        Key::PeerIp { v4, v6 } => {
            let key = PeerIp::new().ipv4_prefix(v4).ipv6_prefix(v6);
            if let Some(layer) = verify(case, LayerKind::RateLimit, || {
                builder(p).keyed_by(key).build()
            })? {
                let svc = layer.layer(service_fn(ok));
                for i in 0..3 {
                    let _ = rt.block_on(svc.clone().oneshot(request(i)));
                }
            }
        }
        Key::ClientIp { v4, v6 } => {
            let key = ClientIp::new().ipv4_prefix(v4).ipv6_prefix(v6);
            verify(case, LayerKind::RateLimit, || {
                builder(p).keyed_by(key).build()
            })?;
        }
    }
    Ok(())
}

#[test]
fn rate_limit_configurations() {
    TestRunner::new(config(512))
        .run(&cases(rate_limit_plan(), &RATE_LIMIT_CORRUPTIONS), |case| {
            rate_limit_case(&case)
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Circuit breaker

#[derive(Clone, Debug)]
enum Window {
    Count(usize),
    Time(Duration, usize),
}

#[derive(Clone, Debug)]
struct BreakerPlan {
    name: String,
    window: Window,
    minimum_calls: u64,
    failure_rate: f64,
    slow_call: Option<Duration>,
    slow_rate: f64,
    open_wait: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    probes: u32,
    half_open_max_wait: Duration,
    keyed: Option<usize>,
}

fn breaker_plan() -> impl Strategy<Value = BreakerPlan> {
    let window = prop_oneof![
        (1_usize..=16_384).prop_map(Window::Count),
        (1_usize..=128, 1_u64..=1_000_000)
            .prop_map(|(b, ms)| Window::Time(Duration::from_millis(ms.max(b as u64)), b)),
    ];
    (
        name(),
        window,
        any::<u64>(),
        (
            fraction(),
            prop::option::of(duration(1, u64::MAX)),
            fraction(),
        ),
        duration(1, u64::MAX),
        prop::option::of((100_u32..=10_000, any::<u64>())),
        (0_u32..1_000_000, 1_u32..=1000, duration(1, u64::MAX)),
        prop::option::of(1_usize..=65_536),
    )
        .prop_map(
            |(
                name,
                window,
                calls,
                (failure_rate, slow_call, slow_rate),
                open_wait,
                backoff,
                (jitter, probes, half_open_max_wait),
                keyed,
            )| {
                let minimum_calls = match window {
                    Window::Count(n) => 1 + calls % n as u64,
                    // A time bucket counts at most 65,535 calls.
                    Window::Time(_, buckets) => 1 + calls % (buckets as u64 * 65_535).min(100_000),
                };
                let backoff = backoff.map(|(m, extra)| {
                    let max_wait =
                        open_wait.saturating_add(Duration::from_nanos(extra >> (extra % 64)));
                    (f64::from(m) / 100.0, max_wait)
                });
                BreakerPlan {
                    name,
                    window,
                    minimum_calls,
                    failure_rate,
                    slow_call,
                    slow_rate,
                    open_wait,
                    backoff,
                    jitter: f64::from(jitter) / 1e6,
                    probes,
                    half_open_max_wait,
                    keyed,
                }
            },
        )
}

static BREAKER_CORRUPTIONS: [Corruption<BreakerPlan>; 15] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "count_window",
        apply: |p, b| {
            p.window = Window::Count(if b % 2 == 0 {
                0
            } else {
                16_385 + (b % 1000) as usize
            });
        },
    },
    Corruption {
        field: "minimum_calls",
        apply: |p, b| {
            p.minimum_calls = match p.window {
                Window::Count(n) if b % 2 == 1 => n as u64 + 1 + b % 1000,
                Window::Time(_, buckets) if b % 2 == 1 => buckets as u64 * 65_535 + 1 + b % 1000,
                _ => 0,
            };
        },
    },
    Corruption {
        field: "time_window.buckets",
        apply: |p, b| {
            let length = Duration::from_secs(3600);
            p.window = Window::Time(
                length,
                if b % 2 == 0 {
                    0
                } else {
                    129 + (b % 1000) as usize
                },
            );
        },
    },
    Corruption {
        field: "time_window.length",
        apply: |p, b| {
            let buckets = 1 + (b % 128) as usize;
            let length = Duration::from_nanos(b % (buckets as u64 * 1_000_000));
            p.window = Window::Time(length, buckets);
        },
    },
    Corruption {
        field: "failure_rate_threshold",
        apply: |p, b| p.failure_rate = bad_fraction(b),
    },
    Corruption {
        field: "slow_call_duration",
        apply: |p, _| p.slow_call = Some(Duration::ZERO),
    },
    Corruption {
        field: "slow_call_rate_threshold",
        apply: |p, b| p.slow_rate = bad_fraction(b),
    },
    Corruption {
        field: "open_wait",
        apply: |p, _| {
            p.open_wait = Duration::ZERO;
            // The backoff's cap is then valid whatever it is.
        },
    },
    Corruption {
        field: "open_wait_backoff.multiplier",
        apply: |p, b| {
            let max = p.open_wait;
            p.backoff = Some((
                [0.0, 0.99, 100.01, f64::NAN, -1.0, f64::INFINITY][(b % 6) as usize],
                max,
            ));
        },
    },
    Corruption {
        field: "open_wait_backoff.max_wait",
        apply: |p, b| {
            p.open_wait = p.open_wait.max(Duration::from_nanos(1));
            let below = p.open_wait - Duration::from_nanos(1 + b % 1000).min(p.open_wait);
            p.backoff = Some((2.0, below));
        },
    },
    Corruption {
        field: "jitter",
        apply: |p, b| p.jitter = [1.0, 1.5, -0.1, f64::NAN][(b % 4) as usize],
    },
    Corruption {
        field: "half_open_probes",
        apply: |p, b| {
            p.probes = if b % 2 == 0 {
                0
            } else {
                1001 + (b % 1000) as u32
            }
        },
    },
    Corruption {
        field: "half_open_max_wait",
        apply: |p, _| p.half_open_max_wait = Duration::ZERO,
    },
    Corruption {
        field: "max_keys",
        apply: |p, b| {
            p.keyed = Some(if b % 2 == 0 {
                0
            } else {
                65_537 + (b % 1000) as usize
            })
        },
    },
];

fn breaker_builder(
    p: &BreakerPlan,
    clock: &ManualClock,
) -> palisade::breaker::CircuitBreakerBuilder {
    let mut b = CircuitBreakerLayer::builder()
        .name(p.name.as_str())
        .clock(clock.clock())
        .minimum_calls(p.minimum_calls)
        .failure_rate_threshold(p.failure_rate)
        .slow_call_rate_threshold(p.slow_rate)
        .open_wait(p.open_wait)
        .jitter(p.jitter)
        .jitter_seed(7)
        .half_open_probes(p.probes)
        .half_open_max_wait(p.half_open_max_wait);
    b = match p.window {
        Window::Count(n) => b.count_window(n),
        Window::Time(length, buckets) => b.time_window(length, buckets),
    };
    if let Some(slow) = p.slow_call {
        b = b.slow_call_duration(slow);
    }
    if let Some((multiplier, max_wait)) = p.backoff {
        b = b.open_wait_backoff(multiplier, max_wait);
    }
    b
}

/// Trips a valid breaker, lets its open wait pass, probes and refreshes:
/// the time arithmetic holds for every valid wait, `Duration::MAX`
/// included.
fn exercise_breaker(layer: &CircuitBreakerLayer, clock: &ManualClock, minimum_calls: u64) {
    let rt = runtime();
    let svc = layer.layer(service_fn(|fail: bool| async move {
        if fail { Err("failed") } else { Ok(()) }
    }));
    for _ in 0..minimum_calls.min(64) {
        let _ = rt.block_on(svc.clone().oneshot(true));
    }
    let handle = layer.handle();
    for round in 0..3 {
        clock.advance(handle.retry_after().unwrap_or(Duration::from_secs(1)));
        clock.advance(Duration::from_nanos(1));
        let _ = handle.refresh();
        for _ in 0..3 {
            let _ = rt.block_on(svc.clone().oneshot(round == 2));
        }
    }
    let _ = handle.consecutive_openings();
}

fn breaker_case(case: &Case<BreakerPlan>) -> Result<(), TestCaseError> {
    let p = &case.plan;
    let clock = ManualClock::new();
    match p.keyed {
        None => {
            if let Some(layer) = verify(case, LayerKind::CircuitBreaker, || {
                breaker_builder(p, &clock).build()
            })? {
                exercise_breaker(&layer, &clock, p.minimum_calls);
            }
        }
        Some(max_keys) => {
            verify(case, LayerKind::CircuitBreaker, || {
                breaker_builder(p, &clock).build_keyed(max_keys, |req: &u64| *req % 7)
            })?;
        }
    }
    Ok(())
}

#[test]
fn breaker_configurations() {
    TestRunner::new(config(512))
        .run(&cases(breaker_plan(), &BREAKER_CORRUPTIONS), |case| {
            breaker_case(&case)
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Timeout

#[derive(Clone, Debug)]
struct TimeoutPlan {
    name: String,
    timeout: Duration,
}

static TIMEOUT_CORRUPTIONS: [Corruption<TimeoutPlan>; 2] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "timeout",
        apply: |p, _| p.timeout = Duration::ZERO,
    },
];

#[test]
fn timeout_configurations() {
    let plan =
        (name(), duration(1, u64::MAX)).prop_map(|(name, timeout)| TimeoutPlan { name, timeout });
    TestRunner::new(config(256))
        .run(&cases(plan, &TIMEOUT_CORRUPTIONS), |case| {
            let p = &case.plan;
            let built = verify(&case, LayerKind::Timeout, || {
                TimeoutLayer::builder()
                    .name(p.name.as_str())
                    .timeout(p.timeout)
                    .http()
                    .build()
            })?;
            if let Some(layer) = built {
                // A call that is pending once arms the timer, whatever its
                // length.
                let svc = layer.layer(service_fn(|_req: http::Request<()>| async {
                    tokio::task::yield_now().await;
                    Ok::<_, Infallible>(())
                }));
                let _ = runtime().block_on(svc.oneshot(http::Request::new(())));
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Bulkhead

#[derive(Clone, Debug)]
enum Algorithm {
    Gradient {
        tolerance: f64,
        smoothing: f64,
        long_window: u32,
        backoff: f64,
        failure_threshold: f64,
    },
    Aimd {
        backoff: f64,
        latency: Option<Duration>,
    },
}

#[derive(Clone, Debug)]
struct Adaptive {
    algorithm: Algorithm,
    min: usize,
    max: usize,
    initial: usize,
    window: Option<usize>,
}

#[derive(Clone, Debug)]
struct BulkheadPlan {
    name: String,
    max_concurrent: Option<usize>,
    adaptive: Option<Adaptive>,
    max_wait: Duration,
    queue: Option<usize>,
}

const MAX_LIMIT: usize = 1 << 20;

fn bulkhead_plan() -> impl Strategy<Value = BulkheadPlan> {
    let backoff = (0_u32..1_000_000).prop_map(|n| 0.5 + f64::from(n) / 2e6);
    let algorithm = prop_oneof![
        (
            prop_oneof![Just(1.0), 1.0_f64..1e6, Just(1e12)],
            fraction(),
            1_u32..=u32::MAX,
            backoff.clone(),
            fraction()
        )
            .prop_map(
                |(tolerance, smoothing, long_window, backoff, failure_threshold)| {
                    Algorithm::Gradient {
                        tolerance,
                        smoothing,
                        long_window,
                        backoff,
                        failure_threshold,
                    }
                }
            ),
        (backoff, prop::option::of(duration(1, u64::MAX)))
            .prop_map(|(backoff, latency)| Algorithm::Aimd { backoff, latency }),
    ];
    let adaptive = (
        algorithm,
        1_usize..=MAX_LIMIT,
        any::<u64>(),
        any::<u64>(),
        prop::option::of(1_usize..=1_000_000),
    )
        .prop_map(|(algorithm, min, a, b, window)| {
            let max = min + (a % (MAX_LIMIT - min + 1) as u64) as usize;
            let initial = min + (b % (max - min + 1) as u64) as usize;
            Adaptive {
                algorithm,
                min,
                max,
                initial,
                window,
            }
        });
    (
        name(),
        prop_oneof![
            Just((None, None)),
            (1_usize..=MAX_LIMIT).prop_map(|m| (Some(m), None)),
            adaptive.prop_map(|a| (None, Some(a))),
        ],
        duration(0, u64::MAX),
        prop::option::of(1_usize..=65_536),
    )
        .prop_map(
            |(name, (max_concurrent, adaptive), max_wait, queue)| BulkheadPlan {
                name,
                max_concurrent,
                adaptive,
                max_wait: if queue.is_some() {
                    max_wait.max(Duration::from_nanos(1))
                } else {
                    max_wait
                },
                queue,
            },
        )
}

fn adaptive_mut(p: &mut BulkheadPlan) -> &mut Adaptive {
    p.max_concurrent = None;
    p.adaptive.get_or_insert(Adaptive {
        algorithm: Algorithm::Aimd {
            backoff: 0.9,
            latency: None,
        },
        min: 4,
        max: 1000,
        initial: 20,
        window: None,
    })
}

fn gradient_mut(p: &mut BulkheadPlan) -> &mut Algorithm {
    let a = adaptive_mut(p);
    if !matches!(a.algorithm, Algorithm::Gradient { .. }) {
        a.algorithm = Algorithm::Gradient {
            tolerance: 1.5,
            smoothing: 0.2,
            long_window: 20,
            backoff: 0.9,
            failure_threshold: 0.5,
        };
    }
    &mut a.algorithm
}

static BULKHEAD_CORRUPTIONS: [Corruption<BulkheadPlan>; 15] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "max_concurrent",
        apply: |p, b| {
            p.adaptive = None;
            p.max_concurrent = Some(if b % 2 == 0 {
                0
            } else {
                MAX_LIMIT + 1 + (b % 1000) as usize
            });
        },
    },
    Corruption {
        field: "max_concurrent",
        // A fixed limit and an adaptive one at once.
        apply: |p, b| {
            adaptive_mut(p);
            p.max_concurrent = Some(1 + (b % 100) as usize);
        },
    },
    Corruption {
        field: "min_limit",
        apply: |p, b| {
            let a = adaptive_mut(p);
            a.min = if b % 2 == 0 { 0 } else { MAX_LIMIT + 1 };
        },
    },
    Corruption {
        field: "max_limit",
        apply: |p, b| {
            let a = adaptive_mut(p);
            if b % 2 == 0 {
                a.min = a.min.max(2);
                a.max = a.min - 1;
            } else {
                a.max = MAX_LIMIT + 1 + (b % 1000) as usize;
            }
        },
    },
    Corruption {
        field: "initial_limit",
        apply: |p, b| {
            let a = adaptive_mut(p);
            if b % 2 == 0 && a.min > 1 {
                a.initial = a.min - 1;
            } else {
                a.max = a.max.min(MAX_LIMIT - 1);
                a.initial = a.max + 1;
            }
        },
    },
    Corruption {
        field: "window",
        apply: |p, b| {
            adaptive_mut(p).window = Some(if b % 2 == 0 {
                0
            } else {
                1_000_001 + (b % 1000) as usize
            });
        },
    },
    Corruption {
        field: "tolerance",
        apply: |p, b| {
            if let Algorithm::Gradient { tolerance, .. } = gradient_mut(p) {
                *tolerance = [0.999, 0.0, -1.0, f64::NAN, f64::INFINITY][(b % 5) as usize];
            }
        },
    },
    Corruption {
        field: "latency_threshold",
        apply: |p, _| {
            adaptive_mut(p).algorithm = Algorithm::Aimd {
                backoff: 0.9,
                latency: Some(Duration::ZERO),
            };
        },
    },
    Corruption {
        field: "smoothing",
        apply: |p, b| {
            if let Algorithm::Gradient { smoothing, .. } = gradient_mut(p) {
                *smoothing = bad_fraction(b);
            }
        },
    },
    Corruption {
        field: "long_window",
        apply: |p, _| {
            if let Algorithm::Gradient { long_window, .. } = gradient_mut(p) {
                *long_window = 0;
            }
        },
    },
    Corruption {
        field: "backoff",
        apply: |p, b| {
            let bad = [0.49, 1.0, 0.0, 2.0, f64::NAN, -0.7][(b % 6) as usize];
            match &mut adaptive_mut(p).algorithm {
                Algorithm::Gradient { backoff, .. } | Algorithm::Aimd { backoff, .. } => {
                    *backoff = bad;
                }
            }
        },
    },
    Corruption {
        field: "failure_threshold",
        apply: |p, b| {
            if let Algorithm::Gradient {
                failure_threshold, ..
            } = gradient_mut(p)
            {
                *failure_threshold = bad_fraction(b);
            }
        },
    },
    Corruption {
        field: "queue",
        apply: |p, b| {
            p.max_wait = p.max_wait.max(Duration::from_millis(1));
            p.queue = Some(if b % 2 == 0 {
                0
            } else {
                65_537 + (b % 1000) as usize
            });
        },
    },
    Corruption {
        field: "max_wait",
        // A queue with no time to wait in it.
        apply: |p, b| {
            p.queue = Some(1 + (b % 100) as usize);
            p.max_wait = Duration::ZERO;
        },
    },
];

fn adaptive_limit(a: &Adaptive) -> AdaptiveLimit {
    let limit = match a.algorithm {
        Algorithm::Gradient {
            tolerance,
            smoothing,
            long_window,
            backoff,
            failure_threshold,
        } => AdaptiveLimit::new(
            Gradient::new()
                .tolerance(tolerance)
                .smoothing(smoothing)
                .long_window(long_window)
                .backoff(backoff)
                .failure_threshold(failure_threshold),
        ),
        Algorithm::Aimd { backoff, latency } => {
            let mut aimd = Aimd::new().backoff(backoff);
            if let Some(latency) = latency {
                aimd = aimd.latency_threshold(latency);
            }
            AdaptiveLimit::new(aimd)
        }
    };
    let limit = limit
        .min_limit(a.min)
        .max_limit(a.max)
        .initial_limit(a.initial);
    match a.window {
        Some(window) => limit.window(window),
        None => limit,
    }
}

#[test]
fn bulkhead_configurations() {
    TestRunner::new(config(512))
        .run(&cases(bulkhead_plan(), &BULKHEAD_CORRUPTIONS), |case| {
            let p = &case.plan;
            let built = verify(&case, LayerKind::Bulkhead, || {
                let mut b = BulkheadLayer::builder()
                    .name(p.name.as_str())
                    .max_wait(p.max_wait);
                if let Some(max) = p.max_concurrent {
                    b = b.max_concurrent(max);
                }
                if let Some(a) = &p.adaptive {
                    b = b.adaptive(adaptive_limit(a));
                }
                if let Some(queue) = p.queue {
                    b = b.queue(queue);
                }
                b.build()
            })?;
            if let Some(layer) = built {
                let rt = runtime();
                let svc = layer.layer(service_fn(|fail: bool| async move {
                    tokio::task::yield_now().await;
                    if fail { Err("failed") } else { Ok(()) }
                }));
                for i in 0..24 {
                    let _ = rt.block_on(svc.clone().oneshot(i % 3 == 0));
                }
                prop_assert_eq!(layer.in_flight(), 0);
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Chaos

#[derive(Clone, Debug)]
struct ChaosPlan {
    name: String,
    error_rate: f64,
    panic_rate: f64,
    latency: Option<(Duration, Duration)>,
    spikes: Option<(f64, Duration)>,
    seed: u64,
}

fn chaos_plan() -> impl Strategy<Value = ChaosPlan> {
    (
        name(),
        (0_u32..=1000, 0_u32..=1000),
        prop::option::of((duration(0, u64::MAX), duration(0, u64::MAX))),
        prop::option::of((0_u32..=1000, duration(0, u64::MAX))),
        any::<u64>(),
    )
        .prop_map(|(name, (e, p), latency, spikes, seed)| {
            let p = p.min(1000 - e);
            ChaosPlan {
                name,
                error_rate: f64::from(e) / 1000.0,
                panic_rate: f64::from(p) / 1000.0,
                latency: latency.map(|(a, b)| (a.min(b), a.max(b))),
                spikes: spikes.map(|(p, d)| (f64::from(p) / 1000.0, d)),
                seed,
            }
        })
}

static CHAOS_CORRUPTIONS: [Corruption<ChaosPlan>; 6] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "error_rate",
        apply: |p, b| p.error_rate = [1.01, -0.01, f64::NAN, f64::INFINITY][(b % 4) as usize],
    },
    Corruption {
        field: "panic_rate",
        apply: |p, b| p.panic_rate = [1.01, -0.01, f64::NAN, f64::NEG_INFINITY][(b % 4) as usize],
    },
    Corruption {
        field: "error_rate",
        // Each rate valid, their sum over 1.
        apply: |p, b| {
            p.error_rate = 0.5 + (b % 500) as f64 / 1000.0;
            p.panic_rate = 1.0 - p.error_rate + 0.01;
        },
    },
    Corruption {
        field: "latency",
        apply: |p, b| {
            let min = Duration::from_nanos(1 + b % 1_000_000_000);
            p.latency = Some((min, min - Duration::from_nanos(1)));
        },
    },
    Corruption {
        field: "latency_spikes",
        apply: |p, b| p.spikes = Some((bad_fraction(b).max(1.5), Duration::from_millis(1))),
    },
];

#[test]
fn chaos_configurations() {
    TestRunner::new(config(512))
        .run(&cases(chaos_plan(), &CHAOS_CORRUPTIONS), |case| {
            let p = &case.plan;
            let built = verify(&case, LayerKind::Chaos, || {
                let mut b = ChaosLayer::builder()
                    .name(p.name.as_str())
                    .seed(p.seed)
                    .error_rate(p.error_rate)
                    .panic_rate(p.panic_rate);
                if let Some((min, max)) = p.latency {
                    b = b.latency(min, max);
                }
                if let Some((probability, spike)) = p.spikes {
                    b = b.latency_spikes(probability, spike);
                }
                b.build()
            })?;
            if let Some(layer) = built {
                // Faults are drawn and counted in `call`; the futures are
                // not polled, so no injected panic or delay runs.
                let rt = runtime();
                let _enter = rt.enter();
                let mut svc =
                    layer.layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
                for i in 0..16 {
                    let call = catch_unwind(AssertUnwindSafe(|| drop(svc.call(i))));
                    prop_assert!(call.is_ok(), "call {} panicked: {:?}", i, p);
                }
                prop_assert_eq!(layer.stats().requests, 16);
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Panic-catch, fallback and task group: a name is all they check

#[test]
fn name_only_configurations() {
    let plan = name();
    static NAME: [Corruption<String>; 1] = [Corruption {
        field: "name",
        apply: |p, b| *p = bad_name(b),
    }];
    TestRunner::new(config(256))
        .run(&cases(plan, &NAME), |case| {
            let name = case.plan.as_str();
            verify(&case, LayerKind::PanicCatch, || {
                CatchPanicLayer::builder().name(name).build()
            })?;
            verify(&case, LayerKind::PanicCatch, || {
                CatchPanicHttpLayer::builder().name(name).build()
            })?;
            verify(&case, LayerKind::Fallback, || {
                FallbackLayer::builder(source::value(0_u8))
                    .name(name)
                    .build()
            })?;
            verify(&case, LayerKind::Task, || {
                TaskGroup::builder()
                    .name(name)
                    .abort_grace(Duration::MAX)
                    .build()
            })?;
            verify(&case, LayerKind::Task, || TaskGroup::new(name))?;
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Restart policy, worker pool and offload queue

#[derive(Clone, Debug)]
struct BackoffPlan {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: f64,
}

fn backoff_plan() -> impl Strategy<Value = BackoffPlan> {
    (
        duration(1, u64::MAX),
        duration(0, u64::MAX),
        0_u32..=15_000,
        0_u32..=1000,
    )
        .prop_map(|(initial, extra, m, j)| BackoffPlan {
            initial,
            max: initial.saturating_add(extra),
            multiplier: 1.0 + f64::from(m) / 1000.0,
            jitter: f64::from(j) / 1000.0,
        })
}

fn backoff(p: &BackoffPlan) -> Backoff {
    Backoff::new(p.initial, p.max)
        .multiplier(p.multiplier)
        .jitter(p.jitter)
}

/// Corruptions of a backoff inside a plan `P`.
macro_rules! backoff_corruptions {
    ($plan:ty, $field:ident) => {
        [
            Corruption {
                field: "initial_backoff",
                apply: |p: &mut $plan, _| p.$field.initial = Duration::ZERO,
            },
            Corruption {
                field: "max_backoff",
                apply: |p: &mut $plan, b| {
                    p.$field.initial = p.$field.initial.max(Duration::from_nanos(2));
                    p.$field.max = p.$field.initial
                        - Duration::from_nanos(1 + b % 1000)
                            .min(p.$field.initial - Duration::from_nanos(1));
                },
            },
            Corruption {
                field: "backoff_multiplier",
                apply: |p: &mut $plan, b| {
                    p.$field.multiplier = [0.99, 16.01, f64::NAN, 0.0][(b % 4) as usize];
                },
            },
            Corruption {
                field: "jitter",
                apply: |p: &mut $plan, b| {
                    p.$field.jitter = [1.01, -0.01, f64::NAN][(b % 3) as usize]
                },
            },
        ]
    };
}

#[derive(Clone, Debug)]
struct RestartPlan {
    backoff: BackoffPlan,
    max_restarts: u32,
    window: Duration,
    reset_after: Duration,
}

static RESTART_CORRUPTIONS: [Corruption<RestartPlan>; 7] = {
    let [a, b, c, d] = backoff_corruptions!(RestartPlan, backoff);
    [
        a,
        b,
        c,
        d,
        Corruption {
            field: "max_restarts",
            apply: |p, _| p.max_restarts = 0,
        },
        Corruption {
            field: "window",
            apply: |p, _| p.window = Duration::ZERO,
        },
        Corruption {
            field: "reset_after",
            apply: |p, _| p.reset_after = Duration::ZERO,
        },
    ]
};

#[test]
fn restart_policy_configurations() {
    let plan = (
        backoff_plan(),
        1_u32..=u32::MAX,
        duration(1, u64::MAX),
        duration(1, u64::MAX),
    )
        .prop_map(|(backoff, max_restarts, window, reset_after)| RestartPlan {
            backoff,
            max_restarts,
            window,
            reset_after,
        });
    TestRunner::new(config(256))
        .run(&cases(plan, &RESTART_CORRUPTIONS), |case| {
            let p = &case.plan;
            let built = verify(&case, LayerKind::Task, || {
                RestartPolicy::builder()
                    .backoff(backoff(&p.backoff))
                    .max_restarts(p.max_restarts)
                    .window(p.window)
                    .reset_after(p.reset_after)
                    .seed(1)
                    .build()
            })?;
            if let Some(policy) = built {
                // Every wait is between the jittered floor and the cap.
                let b = policy.backoff();
                for attempt in [0, 1, 2, 30, 1000, u32::MAX] {
                    prop_assert!(b.base(attempt) <= b.max());
                }
            }
            Ok(())
        })
        .unwrap();
}

#[derive(Clone, Debug)]
struct PoolPlan {
    name: String,
    workers: usize,
    capacity: usize,
    in_runtime: bool,
}

static POOL_CORRUPTIONS: [Corruption<PoolPlan>; 4] = [
    Corruption {
        field: "name",
        apply: |p, b| p.name = bad_name(b),
    },
    Corruption {
        field: "workers",
        apply: |p, b| {
            p.workers = if b % 2 == 0 {
                0
            } else {
                4097 + (b % 1000) as usize
            }
        },
    },
    Corruption {
        field: "queue_capacity",
        apply: |p, b| p.capacity = if b % 2 == 0 { 0 } else { (1 << 20) + 1 },
    },
    Corruption {
        field: "runtime",
        apply: |p, _| p.in_runtime = false,
    },
];

#[test]
fn worker_pool_configurations() {
    let plan = (name(), 1_usize..=64, 1_usize..=(1 << 20)).prop_map(|(name, workers, capacity)| {
        PoolPlan {
            name,
            workers,
            capacity,
            in_runtime: true,
        }
    });
    TestRunner::new(config(128))
        .run(&cases(plan, &POOL_CORRUPTIONS), |case| {
            let p = &case.plan;
            let rt = runtime();
            let build = || {
                WorkerPool::builder()
                    .name(p.name.as_str())
                    .workers(p.workers)
                    .queue_capacity(p.capacity)
                    .build()
            };
            let built = if p.in_runtime {
                let _enter = rt.enter();
                verify(&case, LayerKind::Task, build)?
            } else {
                verify(&case, LayerKind::Task, build)?
            };
            if let Some(pool) = built {
                let report = rt.block_on(async {
                    pool.submit(async {}).await.expect("an open pool");
                    pool.shutdown(Duration::from_secs(5)).await
                });
                prop_assert!(report.is_clean());
            }
            Ok(())
        })
        .unwrap();
}

#[derive(Clone, Debug)]
struct OffloadPlan {
    name: String,
    capacity: usize,
    workers: usize,
    max_attempts: u32,
    backoff: BackoffPlan,
    drain_deadline: Duration,
    in_runtime: bool,
}

static OFFLOAD_CORRUPTIONS: [Corruption<OffloadPlan>; 10] = {
    let [a, b, c, d] = backoff_corruptions!(OffloadPlan, backoff);
    [
        Corruption {
            field: "name",
            apply: |p, b| p.name = bad_name(b),
        },
        Corruption {
            field: "queue_capacity",
            apply: |p, b| p.capacity = if b % 2 == 0 { 0 } else { (1 << 20) + 1 },
        },
        Corruption {
            field: "workers",
            apply: |p, b| {
                p.workers = if b % 2 == 0 {
                    0
                } else {
                    257 + (b % 1000) as usize
                }
            },
        },
        Corruption {
            field: "max_attempts",
            apply: |p, b| {
                p.max_attempts = if b % 2 == 0 {
                    0
                } else {
                    101 + (b % 1000) as u32
                }
            },
        },
        a,
        b,
        c,
        d,
        Corruption {
            field: "drain_deadline",
            apply: |p, _| p.drain_deadline = Duration::ZERO,
        },
        Corruption {
            field: "runtime",
            apply: |p, _| p.in_runtime = false,
        },
    ]
};

#[test]
fn offload_configurations() {
    let plan = (
        name(),
        1_usize..=(1 << 20),
        1_usize..=16,
        1_u32..=100,
        backoff_plan(),
        duration(1, 3600),
    )
        .prop_map(
            |(name, capacity, workers, max_attempts, backoff, drain_deadline)| OffloadPlan {
                name,
                capacity,
                workers,
                max_attempts,
                backoff,
                drain_deadline,
                in_runtime: true,
            },
        );
    TestRunner::new(config(128))
        .run(&cases(plan, &OFFLOAD_CORRUPTIONS), |case| {
            let p = &case.plan;
            let rt = runtime();
            let build = || {
                Offload::builder(service_fn(|_item: u32| async { Ok::<_, Infallible>(()) }))
                    .name(p.name.as_str())
                    .queue_capacity(p.capacity)
                    .workers(p.workers)
                    .max_attempts(p.max_attempts)
                    .backoff(backoff(&p.backoff))
                    .drain_deadline(p.drain_deadline)
                    .seed(3)
                    .build::<u32>()
            };
            let built = if p.in_runtime {
                let _enter = rt.enter();
                verify(&case, LayerKind::Offload, build)?
            } else {
                verify(&case, LayerKind::Offload, build)?
            };
            if let Some(offload) = built {
                let stats = rt.block_on(async {
                    let _ = offload.push(1);
                    offload.shutdown().await
                });
                prop_assert_eq!(stats.delivered, 1);
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Metrics sinks

#[derive(Clone, Debug)]
struct SinkPlan {
    window: Duration,
    max_names: usize,
    buckets: Vec<f64>,
}

static SINK_CORRUPTIONS: [Corruption<SinkPlan>; 4] = [
    Corruption {
        field: "window",
        apply: |p, b| {
            p.window = if b % 2 == 0 {
                Duration::from_nanos(b % 1_000_000_000)
            } else {
                Duration::from_secs(3600) + Duration::from_nanos(1 + b % 1_000_000)
            };
        },
    },
    Corruption {
        field: "max_names",
        apply: |p, b| p.max_names = if b % 2 == 0 { 0 } else { (1 << 20) + 1 },
    },
    Corruption {
        field: "duration_buckets",
        apply: |p, b| {
            let bad = [f64::NAN, f64::INFINITY, 0.0, -1.0][(b % 4) as usize];
            let at = (b as usize) % (p.buckets.len() + 1);
            p.buckets.insert(at, bad);
        },
    },
    Corruption {
        field: "duration_buckets",
        apply: |p, b| {
            if b % 2 == 0 {
                p.buckets = (1..=65).map(f64::from).collect();
            } else {
                p.buckets = vec![1.0, 0.5];
            }
        },
    },
];

/// One event of every kind a layer emits per request, for a sink to take.
fn feed(sink: &dyn palisade::MetricsSink, name: &str) {
    use palisade::core::metrics::{InFlightChange, RejectReason};
    use palisade::{Outcome, core::FallbackTrigger};
    let events = [
        Event::Admitted {
            policy: name,
            layer: LayerKind::RateLimit,
        },
        Event::Rejected {
            policy: name,
            layer: LayerKind::Bulkhead,
            reason: RejectReason::QueueFull,
        },
        Event::Completed {
            policy: name,
            layer: LayerKind::CircuitBreaker,
            outcome: Outcome::Failure,
            latency: Some(Duration::MAX),
        },
        Event::InFlightChanged {
            policy: name,
            layer: LayerKind::Bulkhead,
            change: InFlightChange::Acquired,
            in_flight: usize::MAX,
            limit: 0,
        },
        Event::FallbackUsed {
            policy: name,
            trigger: FallbackTrigger::Rejection,
        },
    ];
    for event in &events {
        sink.record(event);
    }
}

#[test]
fn metrics_sink_configurations() {
    let plan = (
        duration(1_000_000_000, 3599),
        1_usize..=(1 << 20),
        prop::collection::vec(1e-9_f64..1e9, 0..=64),
    )
        .prop_map(|(window, max_names, mut buckets)| {
            buckets.sort_by(f64::total_cmp);
            buckets.dedup();
            SinkPlan {
                window: window.min(Duration::from_secs(3600)),
                max_names,
                buckets,
            }
        });
    TestRunner::new(config(256))
        .run(&cases(plan, &SINK_CORRUPTIONS), |case| {
            let p = &case.plan;
            let metrics = LayerKind::Metrics;
            // Each builder sees only its own fields as corrupted.
            let own = |fields: &[&'static str]| Case {
                plan: p.clone(),
                invalid: case
                    .invalid
                    .iter()
                    .copied()
                    .filter(|f| fields.contains(f))
                    .collect(),
            };
            let snapshot = verify(&own(&["window", "max_names"]), metrics, || {
                SnapshotSink::builder()
                    .window(p.window)
                    .max_names(p.max_names)
                    .build()
            })?;
            if let Some(sink) = snapshot {
                feed(&sink, "p");
                prop_assert_eq!(sink.snapshot().policies.len(), 1);
            }
            let prometheus = verify(&own(&["duration_buckets", "max_names"]), metrics, || {
                PrometheusSink::builder()
                    .duration_buckets(p.buckets.iter().copied())
                    .max_names(p.max_names)
                    .build()
            })?;
            if let Some(sink) = prometheus {
                feed(&sink, "p");
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// The stack: the first invalid part, outermost first, is named

#[test]
fn stack_names_the_invalid_part() {
    let err = Stack::new("api")
        .rate_limit(RateLimitLayer::builder().quota(0, Duration::from_secs(1)))
        .circuit_breaker(CircuitBreakerLayer::builder().failure_rate_threshold(2.0))
        .build()
        .unwrap_err();
    assert_eq!(
        (err.layer(), err.field()),
        (LayerKind::RateLimit, "requests")
    );
    assert_eq!(err.policy(), "api");

    let err = Stack::new("api")
        .rate_limit(RateLimitLayer::builder())
        .circuit_breaker(CircuitBreakerLayer::builder().failure_rate_threshold(2.0))
        .timeout(TimeoutLayer::builder().timeout(Duration::ZERO))
        .build()
        .unwrap_err();
    assert_eq!(
        (err.layer(), err.field()),
        (LayerKind::CircuitBreaker, "failure_rate_threshold")
    );

    let err = Stack::new("api")
        .timeout(TimeoutLayer::builder())
        .concurrency_limit(BulkheadLayer::builder().max_concurrent(0))
        .catch_panic(CatchPanicLayer::builder())
        .build()
        .unwrap_err();
    assert_eq!(
        (err.layer(), err.field()),
        (LayerKind::Bulkhead, "max_concurrent")
    );

    // The stack's name is every part's name: an invalid one is refused by
    // the outermost part.
    let err = Stack::new("")
        .fallback(FallbackLayer::builder(source::value(())))
        .catch_panic(CatchPanicLayer::builder())
        .build()
        .unwrap_err();
    assert_eq!((err.layer(), err.field()), (LayerKind::Fallback, "name"));
}

// ---------------------------------------------------------------------------
// HTTP and gRPC mapping: no builder to check, but every rejection value
// maps without a panic

#[derive(Clone, Debug)]
enum Reject {
    RateLimited(Duration),
    MissingKey,
    CircuitOpen(Option<Duration>, bool),
    Overloaded(usize, u8),
    Elapsed(Duration),
    Panicked(String),
    Other(String),
}

fn reject() -> impl Strategy<Value = Reject> {
    prop_oneof![
        duration(0, u64::MAX).prop_map(Reject::RateLimited),
        Just(Reject::MissingKey),
        (prop::option::of(duration(0, u64::MAX)), any::<bool>())
            .prop_map(|(d, half)| Reject::CircuitOpen(d, half)),
        (any::<usize>(), 0_u8..3).prop_map(|(l, k)| Reject::Overloaded(l, k)),
        duration(0, u64::MAX).prop_map(Reject::Elapsed),
        "\\PC{0,40}".prop_map(Reject::Panicked),
        "\\PC{0,40}".prop_map(Reject::Other),
    ]
}

#[test]
fn http_mapping_of_every_rejection() {
    let policy = "(\\PC|[\"\\\\\n\t\u{0}]){0,80}";
    TestRunner::new(config(512))
        .run(&(reject(), policy), |(reject, policy)| {
            let name = PolicyName::new(policy.as_str());
            let err: BoxError = match &reject {
                Reject::RateLimited(d) => RateLimited::new(name, *d, KeyKind::PeerIp).into(),
                Reject::MissingKey => MissingKey::new(name, KeyKind::Header).into(),
                Reject::CircuitOpen(d, half) => CircuitOpen::new(
                    name,
                    *d,
                    if *half {
                        CircuitState::HalfOpen
                    } else {
                        CircuitState::Open
                    },
                )
                .into(),
                Reject::Overloaded(limit, kind) => Overloaded::new(
                    name,
                    *limit,
                    [
                        OverloadKind::Full,
                        OverloadKind::QueueFull,
                        OverloadKind::WaitTimedOut,
                    ][usize::from(*kind)],
                )
                .into(),
                Reject::Elapsed(d) => Elapsed::new(name, *d).into(),
                Reject::Panicked(message) => Panicked::new(name, message.as_str()).into(),
                Reject::Other(message) => message.clone().into(),
            };
            let res = palisade::http::to_response::<Full<Bytes>>(&*err);
            let expected = match reject {
                Reject::RateLimited(_) => 429,
                Reject::MissingKey => 400,
                Reject::CircuitOpen(..) | Reject::Overloaded(..) => 503,
                Reject::Elapsed(_) => 504,
                Reject::Panicked(_) | Reject::Other(_) => 500,
            };
            prop_assert_eq!(res.status().as_u16(), expected);
            // A wait the rejection carries is always sent, never as 0.
            let waits = matches!(
                reject,
                Reject::RateLimited(_) | Reject::CircuitOpen(Some(_), _)
            );
            prop_assert_eq!(res.headers().contains_key("retry-after"), waits);
            if let Some(retry) = res.headers().get("retry-after") {
                let secs: u64 = retry.to_str().unwrap_or("x").parse().unwrap_or(0);
                prop_assert!(secs >= 1, "Retry-After {:?}", retry);
            }
            let body = runtime()
                .block_on(res.into_body().collect())
                .map_err(|never: Infallible| match never {})?
                .to_bytes();
            if !body.is_empty() {
                let json: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|e| TestCaseError::fail(format!("not JSON ({e}): {body:?}")))?;
                prop_assert_eq!(json["status"].as_u64(), Some(u64::from(expected)));
                // A panic message or another error's text never reaches
                // the client.
                if let Reject::Panicked(m) | Reject::Other(m) = &reject
                    && m.len() > 8
                {
                    prop_assert!(!String::from_utf8_lossy(&body).contains(m.as_str()));
                }
            }
            let status = palisade::http::grpc::to_grpc_status(&*err);
            prop_assert!(status.code() != tonic::Code::Ok);
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Known defects, reduced to their smallest form

/// An emission interval (`period / requests`) longer than `u64::MAX`
/// nanoseconds (about 584 years) cannot be represented by GCRA: `build`
/// refuses it, naming `period`.
#[test]
fn rate_limit_with_an_interval_past_584_years_is_refused() {
    let built = catch_unwind(|| {
        RateLimitLayer::builder()
            .quota(1, Duration::from_secs(u64::MAX))
            .build()
            .map(drop)
    });
    let err = built.expect("build never panics").unwrap_err();
    assert_eq!(err.field(), "period", "{err}");
}

/// A full bucket (`interval * burst`) longer than `u64::MAX` nanoseconds
/// would overflow the limiter's tolerance: `build` refuses it, naming
/// `burst`.
#[test]
fn rate_limit_with_a_bucket_past_584_years_is_refused() {
    let built = catch_unwind(|| {
        RateLimitLayer::builder()
            .quota(1, Duration::from_secs(10))
            .burst(u32::MAX)
            .build()
            .map(drop)
    });
    let err = built.expect("build never panics").unwrap_err();
    assert_eq!(err.field(), "burst", "{err}");
}

/// A chaos layer whose latency and spike add up past `Duration::MAX` must
/// draw its faults without overflowing.
#[test]
fn chaos_latency_and_spike_saturate() {
    let rt = runtime();
    let _enter = rt.enter();
    let layer = ChaosLayer::builder()
        .latency(Duration::MAX, Duration::MAX)
        .latency_spikes(1.0, Duration::from_secs(1))
        .build()
        .expect("a valid configuration");
    let mut svc = layer.layer(service_fn(|x: u32| async move { Ok::<_, Infallible>(x) }));
    let call = catch_unwind(AssertUnwindSafe(|| {
        let mut future = std::pin::pin!(svc.call(1));
        // The first poll starts the wait.
        let waker = std::task::Waker::noop();
        future
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_pending()
    }));
    assert_eq!(
        call.ok(),
        Some(true),
        "drawing or starting the delay overflowed"
    );
    assert_eq!(layer.stats().delayed, 1);
}

//! Fuzzing of every header palisade reads from a peer, with proptest
//! generators on stable Rust, plus a replay of the corpus kept in
//! `tests/corpus/<target>/`.
//!
//! | target | what reads it |
//! |---|---|
//! | `grpc_timeout` | `GrpcTimeout::parse` and the timeout layer's `HttpDeadline` |
//! | `forwarded` | `ClientIp` (`X-Forwarded-For` and `Forwarded`, RFC 7239) |
//! | `chaos_header` | `parse_header` and the chaos layer's `HttpFaults` |
//! | `header_key` | the rate limiter's `HeaderKey` |
//! | `grpc_status` | the gRPC outcome classifier (`grpc-status` in headers or trailers) |
//! | `panic_request` | the HTTP panic-catch layer (`content-type`, method and path) |
//!
//! Every target takes arbitrary bytes and must never panic. Where the input
//! is well formed, a reference model built here says what the result must
//! be. Each corpus file is one input (for `forwarded`, one header line per
//! line of the file); add a file to pin an input that once went wrong.
//!
//! More cases: `PROPTEST_CASES=100000 cargo test -p palisade-workspace --release --test fuzz_headers`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use palisade::chaos::{ChaosLayer, Fault, HttpFaults, parse_header};
use palisade::core::classify::{Classify, GrpcErrorsAsFailures};
use palisade::panic::http::CatchPanicHttpLayer;
use palisade::ratelimit::RateLimitLayer;
use palisade::ratelimit::key::{ClientIp, ExtractKey, ForwardedHeader, HeaderKey, IpKey};
use palisade::timeout::grpc_timeout::GrpcTimeout;
use palisade::timeout::{Deadline, TimeoutLayer};
use palisade::{Event, ManualClock, Metrics, MetricsSink, Outcome};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use tower::{Layer, ServiceExt, service_fn};

// ---------------------------------------------------------------------------
// Harness: configuration, runtime, corpus replay.

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

/// Every file of `tests/corpus/<target>/`, sorted, as `(name, bytes)`.
fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("corpus {}: {err}", dir.display()))
        .map(|entry| entry.expect("a corpus entry").path())
        .filter(|path| path.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "corpus {} is empty", dir.display());
    files
        .into_iter()
        .map(|path| {
            let mut bytes = std::fs::read(&path).expect("a readable corpus file");
            // Editors add a final newline; the input is what comes before.
            if bytes.last() == Some(&b'\n') {
                bytes.pop();
            }
            (path.display().to_string(), bytes)
        })
        .collect()
}

/// Runs `check` on every corpus file of `target`, naming the file that
/// fails.
fn replay(target: &str, check: impl Fn(&[u8]) -> Result<(), TestCaseError>) {
    for (name, bytes) in corpus(target) {
        if let Err(err) = check(&bytes) {
            panic!("corpus {name}: {err}");
        }
    }
}

/// Counts the events a layer emits.
#[derive(Default)]
struct Events {
    malformed: AtomicU64,
    panics: AtomicU64,
}

impl MetricsSink for Events {
    fn record(&self, event: &Event<'_>) {
        match event {
            Event::MalformedHeader { .. } => {
                self.malformed.fetch_add(1, Ordering::Relaxed);
            }
            Event::PanicCaught { .. } => {
                self.panics.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

/// Bytes biased towards what a parser of `alphabet` is interested in.
fn bytes_like(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(prop::sample::select(alphabet), 0..max),
        prop::collection::vec(any::<u8>(), 0..max),
    ]
}

// ---------------------------------------------------------------------------
// grpc-timeout

/// The reference grammar: one to eight ASCII digits, then one of `HMSmun`.
fn grpc_timeout_model(input: &[u8]) -> Option<Duration> {
    let (&unit, digits) = input.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(value * 3600),
        b'M' => Duration::from_secs(value * 60),
        b'S' => Duration::from_secs(value),
        b'm' => Duration::from_millis(value),
        b'u' => Duration::from_micros(value),
        b'n' => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The parser agrees with the grammar, and the timeout layer applies what
/// it parsed (never more than its own default) or reports the value as
/// malformed and applies its default.
fn check_grpc_timeout(input: &[u8]) -> Result<(), TestCaseError> {
    let parsed = GrpcTimeout::parse(input);
    let expected = grpc_timeout_model(input);
    prop_assert_eq!(parsed.ok().map(GrpcTimeout::duration), expected);
    if let Ok(value) = parsed {
        // What we parse, we write back in a form we parse the same.
        let written = value.to_header_value();
        prop_assert_eq!(GrpcTimeout::parse(written.as_bytes()), Ok(value));
    }

    let Ok(header) = HeaderValue::from_bytes(input) else {
        // A header value cannot hold these bytes: no server passes them on.
        return Ok(());
    };
    let default = Duration::from_secs(30);
    let events = Arc::new(Events::default());
    let layer = TimeoutLayer::builder()
        .timeout(default)
        .metrics(Metrics::from_arc(events.clone()))
        .http()
        .build()
        .expect("a valid timeout");
    let svc = layer.layer(service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Deadline::current().map(|deadline| deadline.budget()))
    }));
    let mut req = Request::new(());
    req.headers_mut().insert("grpc-timeout", header);
    let budget = runtime()
        .block_on(svc.oneshot(req))
        .map_err(|err| TestCaseError::fail(format!("the layer failed: {err}")))?;
    prop_assert_eq!(budget, Some(expected.map_or(default, |d| d.min(default))));
    prop_assert_eq!(
        events.malformed.load(Ordering::Relaxed),
        u64::from(expected.is_none())
    );
    Ok(())
}

fn grpc_timeout_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        bytes_like(b"0123456789HMSmunhs+-. ", 14),
        ("[0-9]{1,10}", prop::sample::select(b"HMSmunxs".to_vec())).prop_map(|(d, u)| {
            let mut v = d.into_bytes();
            v.push(u);
            v
        }),
    ]
}

#[test]
fn grpc_timeout_fuzz() {
    TestRunner::new(config(512))
        .run(&grpc_timeout_input(), |input| check_grpc_timeout(&input))
        .unwrap();
}

#[test]
fn grpc_timeout_corpus() {
    replay("grpc_timeout", check_grpc_timeout);
}

// ---------------------------------------------------------------------------
// X-Forwarded-For and Forwarded

/// The most hops `ClientIp` walks through trusted proxies.
const MAX_HOPS: usize = 32;

/// An IPv4 or IPv6 network, as the reference model sees it.
#[derive(Clone, Copy, Debug)]
struct Net {
    addr: IpAddr,
    prefix: u8,
}

impl Net {
    fn contains(&self, addr: IpAddr) -> bool {
        match (self.addr, canonical(addr)) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }

    /// An address of this network, with host bits from `host`.
    fn host(&self, host: u128) -> IpAddr {
        match self.addr {
            IpAddr::V4(net) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                #[allow(clippy::cast_possible_truncation)]
                let host = host as u32;
                IpAddr::V4(Ipv4Addr::from((u32::from(net) & mask) | (host & !mask)))
            }
            IpAddr::V6(net) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6(Ipv6Addr::from((u128::from(net) & mask) | (host & !mask)))
            }
        }
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// One hop of a generated chain.
#[derive(Clone, Debug)]
enum Hop {
    /// A trusted proxy's address.
    Trusted(IpAddr),
    /// Anybody else's address.
    Untrusted(IpAddr),
    /// An entry that names no usable address.
    Garbage(&'static str),
}

/// How one address is written in the header.
#[derive(Clone, Copy, Debug)]
struct Style {
    port: Option<u16>,
    obfuscated_port: bool,
    brackets: bool,
    quotes: bool,
    mapped: bool,
    param_case: u8,
    extra_params: bool,
}

fn style() -> impl Strategy<Value = Style> {
    (
        prop::option::of(any::<u16>()),
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
        prop::bool::weighted(0.1),
        0_u8..3,
        any::<bool>(),
    )
        .prop_map(
            |(port, obfuscated_port, brackets, quotes, mapped, param_case, extra_params)| Style {
                port,
                obfuscated_port,
                brackets,
                quotes,
                mapped,
                param_case,
                extra_params,
            },
        )
}

/// Writes `addr` as one node in one of the forms `ClientIp` documents.
fn node(addr: IpAddr, style: Style) -> String {
    let addr = match (addr, style.mapped) {
        (IpAddr::V4(v4), true) => IpAddr::V6(v4.to_ipv6_mapped()),
        _ => addr,
    };
    let port = match (style.port, style.obfuscated_port) {
        (Some(_), true) => Some("_p0rt".to_owned()),
        (Some(port), false) => Some(port.to_string()),
        (None, _) => None,
    };
    let text = match (addr, port) {
        (IpAddr::V4(v4), Some(port)) => format!("{v4}:{port}"),
        (IpAddr::V4(v4), None) => v4.to_string(),
        (IpAddr::V6(v6), Some(port)) => format!("[{v6}]:{port}"),
        (IpAddr::V6(v6), None) if style.brackets => format!("[{v6}]"),
        (IpAddr::V6(v6), None) => v6.to_string(),
    };
    if style.quotes {
        format!("\"{text}\"")
    } else {
        text
    }
}

const XFF_GARBAGE: [&str; 7] = [
    "unknown",
    "_hidden",
    "1.2.3.4.5",
    "[2001:db8::1",
    "192.0.2.1:99999",
    "example.com",
    "192.0.2.1:http",
];

const FORWARDED_GARBAGE: [&str; 8] = [
    "for=unknown",
    "for=_hidden",
    "proto=https",
    "by=192.0.2.9",
    "for=\"[2001:db8::1\"",
    "for=",
    // X-Forwarded-For syntax in the wrong header, and a bare word: not
    // `name=value` pairs.
    "192.0.2.7",
    "garbage",
];

/// Entries that name no address but are well formed (RFC 7239's
/// `unknown`, obfuscated identifiers, an element without `for`): the walk
/// stops there without reporting anything. The rest are malformed.
const UNNAMED: [&str; 6] = [
    "unknown",
    "_hidden",
    "for=unknown",
    "for=_hidden",
    "proto=https",
    "by=192.0.2.9",
];

/// One entry of the header for `hop`.
fn entry(hop: &Hop, header: ForwardedHeader, style: Style) -> String {
    let addr = match hop {
        Hop::Trusted(a) | Hop::Untrusted(a) => *a,
        Hop::Garbage(g) => return (*g).to_owned(),
    };
    let node = node(addr, style);
    match header {
        ForwardedHeader::Forwarded => {
            let name = ["for", "For", "FOR"][usize::from(style.param_case)];
            if style.extra_params {
                // A quoted value the client chose (its `Host`), holding
                // separators and a `for` of its own that must not count.
                format!(
                    r#"proto=https ; {name} = {node};by=203.0.113.1;host="h,for=198.18.0.1;x=\"q,\\""#
                )
            } else {
                format!("{name}={node}")
            }
        }
        _ => node,
    }
}

/// What `ClientIp` must answer: the peer when it is untrusted; otherwise
/// the right-most untrusted address, walking at most `MAX_HOPS` entries and
/// stopping at the first unusable one (then the last trusted hop is the
/// client, never what lies left of the unusable entry).
fn client_model(peer: IpAddr, hops: &[Hop], trusted: &[Net]) -> (IpAddr, usize) {
    let is_trusted = |a: IpAddr| trusted.iter().any(|n| n.contains(a));
    let peer = canonical(peer);
    if !is_trusted(peer) {
        return (peer, hops.len());
    }
    let mut last = peer;
    for (read, hop) in hops.iter().rev().take(MAX_HOPS).enumerate() {
        let stop = hops.len() - 1 - read;
        match hop {
            Hop::Trusted(a) => last = canonical(*a),
            Hop::Untrusted(a) => return (canonical(*a), stop),
            Hop::Garbage(_) => return (last, stop),
        }
    }
    (last, hops.len().saturating_sub(MAX_HOPS))
}

/// Whether the walk ends on a malformed entry, which the rate limiter
/// reports: a malformed garbage entry, or the client's stray quote at the
/// far left when the walk gets that far.
fn malformed_model(chain: &Chain) -> bool {
    let is_trusted = |a: IpAddr| chain.trusted.iter().any(|n| n.contains(a));
    if !is_trusted(canonical(chain.peer)) {
        return false;
    }
    for hop in chain.hops.iter().rev().take(MAX_HOPS) {
        match hop {
            Hop::Trusted(_) => {}
            Hop::Untrusted(_) => return false,
            Hop::Garbage(g) => return !UNNAMED.contains(g),
        }
    }
    chain.stray_quote && chain.hops.len() < MAX_HOPS
}

/// A generated request: trusted networks, the peer, the chain and how it
/// is written.
#[derive(Clone, Debug)]
struct Chain {
    trusted: Vec<Net>,
    peer: IpAddr,
    hops: Vec<Hop>,
    header: ForwardedHeader,
    lines: Vec<String>,
    /// A lone quote left of the first element (`Forwarded` only).
    stray_quote: bool,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

fn net() -> impl Strategy<Value = Net> {
    prop_oneof![
        (any::<[u8; 4]>(), 8_u8..=32).prop_map(|(a, prefix)| Net {
            addr: IpAddr::from(a),
            prefix
        }),
        // Global unicast (2000::/3), so that no network holds IPv4-mapped
        // addresses, which `ClientIp` compares as IPv4.
        (any::<u128>(), 16_u8..=128).prop_map(|(a, prefix)| Net {
            addr: IpAddr::V6(Ipv6Addr::from((a >> 3) | (1 << 125))),
            prefix
        }),
    ]
}

fn chain() -> impl Strategy<Value = Chain> {
    let header = prop_oneof![
        Just(ForwardedHeader::XForwardedFor),
        Just(ForwardedHeader::Forwarded)
    ];
    (
        prop::collection::vec(net(), 1..4),
        header,
        prop::collection::vec((0_u8..10, any::<u128>(), any::<usize>(), style()), 0..40),
        (any::<bool>(), any::<u128>(), any::<usize>()),
        prop::collection::vec(0_usize..40, 0..3),
        prop::collection::vec(prop::sample::select(vec!["", " ", "  ", "\t"]), 4),
        (0_u8..=32, 0_u8..=128),
        prop::bool::weighted(0.3),
    )
        .prop_map(
            |(
                trusted,
                header,
                raw_hops,
                (peer_trusted, peer_bits, peer_net),
                splits,
                pads,
                (p4, p6),
                stray_quote,
            )| {
                let pick = |bits: u128, which: usize, want_trusted: bool| -> Option<IpAddr> {
                    if want_trusted {
                        return Some(trusted[which % trusted.len()].host(bits));
                    }
                    // An address outside every trusted network.
                    let candidates = [
                        IpAddr::V4(Ipv4Addr::from(bits as u32)),
                        IpAddr::V6(Ipv6Addr::from(bits | (1 << 125))),
                        IpAddr::V4(Ipv4Addr::from((bits >> 32) as u32)),
                    ];
                    candidates
                        .into_iter()
                        .find(|a| !trusted.iter().any(|n| n.contains(*a)))
                };
                let hops: Vec<Hop> = raw_hops
                    .iter()
                    .filter_map(|(kind, bits, which, _)| match kind {
                        0..=4 => pick(*bits, *which, true).map(Hop::Trusted),
                        5..=8 => pick(*bits, *which, false).map(Hop::Untrusted),
                        _ => Some(Hop::Garbage(match header {
                            ForwardedHeader::Forwarded => {
                                FORWARDED_GARBAGE[which % FORWARDED_GARBAGE.len()]
                            }
                            _ => XFF_GARBAGE[which % XFF_GARBAGE.len()],
                        })),
                    })
                    .collect();
                let peer =
                    pick(peer_bits, peer_net, peer_trusted).unwrap_or(trusted[0].host(peer_bits));
                let entries: Vec<String> = hops
                    .iter()
                    .zip(raw_hops.iter())
                    .map(|(hop, (_, _, _, style))| entry(hop, header, *style))
                    .collect();
                // Split the list over several header lines, with padding
                // and empty entries, which mean nothing.
                let mut cuts: Vec<usize> =
                    splits.into_iter().map(|s| s.min(entries.len())).collect();
                cuts.sort_unstable();
                cuts.dedup();
                let mut lines = Vec::new();
                let mut start = 0;
                for cut in cuts.into_iter().chain([entries.len()]) {
                    let sep = format!("{},{}", pads[0], pads[1]);
                    let mut line = entries[start..cut].join(&sep);
                    if start % 3 == 1 {
                        line = format!("{}, {}", pads[2], line);
                    }
                    line = format!("{}{}{}", pads[3], line, pads[2]);
                    lines.push(line);
                    start = cut;
                }
                // What a client may send at the far left: a lone quote,
                // which must not change how the elements right of it split.
                // The walk reads it, if it gets that far, as unusable.
                let stray_quote = stray_quote && header == ForwardedHeader::Forwarded;
                if stray_quote {
                    lines[0] = format!("\", {}", lines[0]);
                }
                Chain {
                    trusted,
                    peer,
                    hops,
                    header,
                    lines,
                    stray_quote,
                    ipv4_prefix: p4,
                    ipv6_prefix: p6,
                }
            },
        )
}

fn client_ip(trusted: &[Net], header: ForwardedHeader, p4: u8, p6: u8) -> ClientIp {
    let nets = trusted.iter().map(|n| {
        format!("{}/{}", n.addr, n.prefix)
            .parse()
            .expect("a network")
    });
    ClientIp::new()
        .trust_all(nets)
        .header(header)
        .ipv4_prefix(p4)
        .ipv6_prefix(p6)
}

fn check_chain(chain: &Chain) -> Result<(), TestCaseError> {
    let extractor = client_ip(
        &chain.trusted,
        chain.header,
        chain.ipv4_prefix,
        chain.ipv6_prefix,
    );
    let mut req = Request::new(());
    req.extensions_mut()
        .insert(SocketAddr::new(chain.peer, 443));
    for line in &chain.lines {
        let value = HeaderValue::from_str(line).expect("generated lines are header values");
        req.headers_mut().append(chain.header.name(), value);
    }
    // A header of the other kind is never read.
    req.headers_mut().append(
        match chain.header {
            ForwardedHeader::Forwarded => ForwardedHeader::XForwardedFor.name(),
            _ => ForwardedHeader::Forwarded.name(),
        },
        HeaderValue::from_static("for=198.51.100.66, 198.51.100.66"),
    );

    let (expected, stop) = client_model(chain.peer, &chain.hops, &chain.trusted);
    let got = extractor.client_addr(chain.peer, req.headers());
    prop_assert_eq!(got, expected, "lines {:?}", chain.lines);
    let key = extractor.extract(&req);
    prop_assert_eq!(
        key,
        Some(IpKey::new(expected, chain.ipv4_prefix, chain.ipv6_prefix))
    );
    // The same key, and the header named exactly when the walk ended on a
    // malformed entry.
    let (checked, malformed) = extractor.extract_checked(&req);
    prop_assert_eq!(checked, key);
    let expected_malformed = malformed_model(chain).then(|| chain.header.name().as_str());
    prop_assert_eq!(malformed, expected_malformed, "lines {:?}", chain.lines);

    // The stated properties, independently of the model's walk.
    let addr_of = |h: &Hop| match h {
        Hop::Trusted(a) | Hop::Untrusted(a) => Some(canonical(*a)),
        Hop::Garbage(_) => None,
    };
    let read: HashSet<IpAddr> = chain.hops[stop.min(chain.hops.len())..]
        .iter()
        .filter_map(addr_of)
        .chain([canonical(chain.peer)])
        .collect();
    prop_assert!(
        read.contains(&got),
        "{} was never read: it lies left of the first untrusted hop",
        got
    );
    let first_stop = chain
        .hops
        .iter()
        .rev()
        .take(MAX_HOPS)
        .find(|h| !matches!(h, Hop::Trusted(_)));
    if extractor.is_trusted(chain.peer) && matches!(first_stop, Some(Hop::Untrusted(_))) {
        prop_assert!(!extractor.is_trusted(got), "{} is a trusted proxy", got);
    }
    prop_assert_ne!(got, "198.51.100.66".parse::<IpAddr>().unwrap());
    Ok(())
}

/// Arbitrary header lines, under a few trust settings and peers: nothing
/// panics, an untrusted peer is always the key, and without the header the
/// key is the peer.
fn check_forwarded(input: &[u8]) -> Result<(), TestCaseError> {
    let settings: [&[Net]; 4] = [
        &[],
        &[Net {
            addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
            prefix: 8,
        }],
        &[
            Net {
                addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                prefix: 0,
            },
            Net {
                addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                prefix: 0,
            },
        ],
        &[Net {
            addr: "2001:db8::".parse().unwrap(),
            prefix: 32,
        }],
    ];
    let peers: [IpAddr; 4] = [
        "10.1.2.3".parse().unwrap(),
        "::ffff:10.9.9.9".parse().unwrap(),
        "2001:db8::7".parse().unwrap(),
        "203.0.113.9".parse().unwrap(),
    ];
    for header in [ForwardedHeader::XForwardedFor, ForwardedHeader::Forwarded] {
        let mut headers = HeaderMap::new();
        for line in input.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(header.name(), value);
            }
        }
        for trusted in settings {
            let extractor = client_ip(trusted, header, 32, 64);
            for peer in peers {
                let got = extractor.client_addr(peer, &headers);
                if !extractor.is_trusted(peer) || headers.is_empty() {
                    prop_assert_eq!(got, canonical(peer));
                }
                if trusted.is_empty() {
                    prop_assert_eq!(got, canonical(peer));
                }
                // The key is the address cut to its prefix: never a panic.
                let _ = extractor.key(peer, &headers);
            }
        }
    }
    Ok(())
}

#[test]
fn forwarded_chains_follow_the_model() {
    TestRunner::new(config(1024))
        .run(&chain(), |chain| check_chain(&chain))
        .unwrap();
}

#[test]
fn forwarded_fuzz() {
    let alphabet: &'static [u8] = b",;=\"[]:. \t\n_-abcdefABCDEF0123456789forFORunknownproto";
    TestRunner::new(config(512))
        .run(&bytes_like(alphabet, 120), |input| check_forwarded(&input))
        .unwrap();
}

#[test]
fn forwarded_corpus() {
    replay("forwarded", check_forwarded);
}

// ---------------------------------------------------------------------------
// x-palisade-chaos

#[derive(Clone, Debug)]
enum ChaosItem {
    None,
    Error,
    Panic,
    Delay { digits: String, unit: &'static str },
}

/// The reference grammar of one item list: the fault, or `None` for a
/// malformed list.
fn chaos_model(items: &[ChaosItem]) -> Option<Fault> {
    if items.is_empty() {
        return None;
    }
    let mut fault = Fault::NONE;
    for item in items {
        match item {
            ChaosItem::None => {}
            ChaosItem::Error => fault.error = true,
            ChaosItem::Panic => fault.panic = true,
            ChaosItem::Delay { digits, unit } => {
                if digits.is_empty() || digits.len() > 9 {
                    return None;
                }
                let n: u64 = digits.parse().ok()?;
                let delay = match unit.to_ascii_lowercase().as_str() {
                    "ms" => Duration::from_millis(n),
                    "s" => Duration::from_secs(n),
                    _ => return None,
                };
                if delay > Duration::from_secs(60) {
                    return None;
                }
                fault.delay = delay;
            }
        }
    }
    Some(fault)
}

fn chaos_items() -> impl Strategy<Value = (Vec<ChaosItem>, String)> {
    let item = prop_oneof![
        Just(ChaosItem::None),
        Just(ChaosItem::Error),
        Just(ChaosItem::Panic),
        (
            "[0-9]{0,11}",
            prop::sample::select(vec!["ms", "MS", "s", "S", "m", "us", ""])
        )
            .prop_map(|(digits, unit)| ChaosItem::Delay { digits, unit }),
    ];
    (
        prop::collection::vec((item, any::<bool>(), 0_usize..3), 0..5),
        // HTTP's whitespace pads an item; a NO-BREAK SPACE makes the list
        // malformed (see `chaos_header_follows_the_grammar`).
        prop::collection::vec(prop::sample::select(vec!["", " ", "  ", "\t", "\u{a0}"]), 2),
    )
        .prop_map(|(items, pads)| {
            let text: Vec<String> = items
                .iter()
                .map(|(item, upper, pad)| {
                    let word = match item {
                        ChaosItem::None => "none".to_owned(),
                        ChaosItem::Error => "error".to_owned(),
                        ChaosItem::Panic => "panic".to_owned(),
                        ChaosItem::Delay { digits, unit } => format!("delay={digits}{unit}"),
                    };
                    let word = if *upper { word.to_uppercase() } else { word };
                    format!("{}{word}{}", pads[pad % 2], pads[(pad + 1) % 2])
                })
                .collect();
            (
                items.into_iter().map(|(i, _, _)| i).collect(),
                text.join(","),
            )
        })
}

/// Arbitrary bytes: the parser never panics, never allows more than a
/// minute of delay, and the chaos layer (disabled, with the header on)
/// counts a forced fault exactly when the header parses, and reports it as
/// malformed otherwise.
fn check_chaos_header(input: &[u8]) -> Result<(), TestCaseError> {
    let parsed = parse_header(input);
    if let Some(fault) = parsed {
        prop_assert!(fault.delay <= Duration::from_secs(60));
        prop_assert!(std::str::from_utf8(input).is_ok());
    }
    let Ok(value) = HeaderValue::from_bytes(input) else {
        return Ok(());
    };
    let events = Arc::new(Events::default());
    let chaos = ChaosLayer::builder()
        .enabled(false)
        .metrics(Metrics::from_arc(events.clone()))
        .build()
        .expect("a valid chaos layer");
    let mut svc = chaos
        .layer(service_fn(|_req: Request<()>| async {
            Ok::<_, Infallible>(())
        }))
        .http(HttpFaults::new().with_header());
    let mut req = Request::new(());
    req.headers_mut().insert("x-palisade-chaos", value);
    let rt = runtime();
    let _enter = rt.enter();
    // The fault is chosen in `call`, which counts the request, and happens
    // when the future is polled: one poll answers a forced error at once,
    // or starts a forced delay. A forced panic's future is dropped unpolled
    // (its panic would only add noise): nothing is counted for it.
    let mut future = std::pin::pin!(tower::Service::call(&mut svc, req));
    let forced = parsed.unwrap_or(Fault::NONE);
    let polled = if forced.panic {
        None
    } else {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        Some(future.as_mut().poll(&mut cx))
    };
    let stats = chaos.stats();
    prop_assert_eq!(stats.requests, u64::from(parsed.is_some()));
    prop_assert_eq!(
        events.malformed.load(Ordering::Relaxed),
        u64::from(parsed.is_none())
    );
    prop_assert_eq!(stats.panics, 0);
    if let Some(polled) = polled {
        let delayed = !forced.delay.is_zero();
        prop_assert_eq!(polled.is_pending(), delayed);
        prop_assert_eq!(stats.delayed, u64::from(delayed));
        let errored = matches!(polled, std::task::Poll::Ready(Err(_)));
        prop_assert_eq!(errored, forced.error && !delayed);
        prop_assert_eq!(stats.errors, u64::from(errored));
    } else {
        prop_assert_eq!((stats.errors, stats.delayed), (0, 0));
    }
    Ok(())
}

/// What the corpus entries parse to: at most 9 digits and 60 s, case
/// ignored, whitespace around items allowed, anything else refused.
#[test]
fn chaos_header_corpus_answers() {
    use std::time::Duration;
    let fault = |error, panic, delay_ms| Fault {
        error,
        panic,
        delay: Duration::from_millis(delay_ms),
    };
    let expected: [(&str, Option<Fault>); 12] = [
        ("delay-and-panic", Some(fault(false, true, 250))),
        ("error", Some(fault(true, false, 0))),
        ("max-delay", Some(fault(false, false, 60_000))),
        ("none", Some(Fault::NONE)),
        ("padded", Some(Fault::NONE)),
        ("over-max", None),
        ("ten-digits", None),
        ("no-unit", None),
        ("non-ascii", None),
        ("non-ascii-after-prefix", None),
        ("not-utf8", None),
        ("trailing-comma", None),
    ];
    let corpus = corpus("chaos_header");
    for (entry, answer) in expected {
        let (_, bytes) = corpus
            .iter()
            .find(|(name, _)| name.ends_with(&format!("/{entry}")))
            .unwrap_or_else(|| panic!("no corpus entry {entry}"));
        assert_eq!(parse_header(bytes), answer, "{entry}");
    }
}

#[test]
fn chaos_header_follows_the_grammar() {
    TestRunner::new(config(1024))
        .run(&chaos_items(), |(items, text)| {
            // Only spaces and tabs pad an item.
            let expected = if text.contains('\u{a0}') {
                None
            } else {
                chaos_model(&items)
            };
            prop_assert_eq!(parse_header(text.as_bytes()), expected, "{:?}", text);
            check_chaos_header(text.as_bytes())
        })
        .unwrap();
}

#[test]
fn chaos_header_fuzz() {
    TestRunner::new(config(512))
        .run(
            &bytes_like(b"nonerrorpanicdelay=0123456789msMSE ,\t\xc3\xa9", 40),
            |input| check_chaos_header(&input),
        )
        .unwrap();
}

#[test]
fn chaos_header_corpus() {
    replay("chaos_header", check_chaos_header);
}

// ---------------------------------------------------------------------------
// The rate limiter's header key

/// Arbitrary values of the key header: the key is the first value when it
/// is not empty, and through a keyed limiter allowing one request per key
/// per hour, a key's second request is refused.
fn check_header_key(input: &[u8]) -> Result<(), TestCaseError> {
    let name = HeaderName::from_static("x-api-key");
    let mut req = Request::new(());
    let mut first = None;
    for line in input.split(|b| *b == b'\n') {
        if let Ok(value) = HeaderValue::from_bytes(line) {
            first.get_or_insert_with(|| line.to_vec());
            req.headers_mut().append(name.clone(), value);
        }
    }
    let extractor = HeaderKey::new(name.clone());
    let key = extractor.extract(&req).map(<[u8]>::to_vec);
    prop_assert_eq!(key, first.filter(|v| !v.is_empty()));

    let clock = ManualClock::new();
    let layer = RateLimitLayer::builder()
        .quota(1, Duration::from_secs(3600))
        .keyed_by(extractor)
        .max_keys(16)
        .clock(clock.clock())
        .build()
        .expect("a valid limiter");
    let svc = layer.layer(service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(())
    }));
    let rt = runtime();
    let copy = |req: &Request<()>| {
        let mut again = Request::new(());
        *again.headers_mut() = req.headers().clone();
        again
    };
    let first_answer = rt.block_on(svc.clone().oneshot(copy(&req)));
    prop_assert!(first_answer.is_ok(), "a new key is admitted");
    let second = rt.block_on(svc.oneshot(req));
    prop_assert!(
        second.is_err(),
        "a key's second request in the hour is refused"
    );
    Ok(())
}

#[test]
fn header_key_fuzz() {
    TestRunner::new(config(256))
        .run(&bytes_like(b"abcXYZ019-_=+/ \t\n\x80\xff", 48), |input| {
            check_header_key(&input)
        })
        .unwrap();
}

#[test]
fn header_key_corpus() {
    replay("header_key", check_header_key);
}

// ---------------------------------------------------------------------------
// grpc-status, in response headers or in trailers

/// The reference classification with the default failure codes
/// (UNKNOWN 2, DEADLINE_EXCEEDED 4, RESOURCE_EXHAUSTED 8, INTERNAL 13,
/// UNAVAILABLE 14), as a gRPC client reads the status: `0` to `16`
/// written plainly is that code; anything else (letters, a sign, a space,
/// a leading zero, a number outside the known codes) is UNKNOWN, a
/// failure.
fn grpc_status_model(value: &[u8]) -> Outcome {
    let code = match value {
        [d @ b'0'..=b'9'] => i32::from(d - b'0'),
        [b'1', d @ b'0'..=b'6'] => 10 + i32::from(d - b'0'),
        _ => 2,
    };
    if [2, 4, 8, 13, 14].contains(&code) {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

/// Classifies a trailers-only response, and a response whose status comes
/// in the trailers, both carrying `input` as `grpc-status` (and as a
/// percent-encoded `grpc-message`).
fn check_grpc_status(input: &[u8]) -> Result<(), TestCaseError> {
    let Ok(value) = HeaderValue::from_bytes(input) else {
        return Ok(());
    };
    let expected = grpc_status_model(input);
    let classifier = GrpcErrorsAsFailures::new();

    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = |seen: &Arc<Mutex<Vec<Outcome>>>| {
        let seen = seen.clone();
        move |outcome: Outcome| seen.lock().unwrap().push(outcome)
    };

    let grpc = HeaderValue::from_static("application/grpc");
    // Trailers-only: the status is in the response headers.
    let mut res = Response::new(Empty::<Bytes>::new());
    res.headers_mut().insert("content-type", grpc.clone());
    res.headers_mut().insert("grpc-status", value.clone());
    res.headers_mut().insert("grpc-message", value.clone());
    let out = Classify::<_, Infallible>::classify(&classifier, Ok(res), record(&seen));
    let Ok(res) = out;
    prop_assert_eq!(
        res.headers().get("grpc-status"),
        Some(&value),
        "passed on as sent"
    );
    prop_assert_eq!(seen.lock().unwrap().clone(), vec![expected]);

    // The status in the trailers, at the end of the body.
    seen.lock().unwrap().clear();
    let mut trailers = HeaderMap::new();
    trailers.insert("grpc-status", value.clone());
    trailers.insert("grpc-message", value.clone());
    let body = Empty::<Bytes>::new().with_trailers(async move { Some(Ok(trailers)) });
    let mut res = Response::new(body);
    res.headers_mut().insert("content-type", grpc);
    let out = Classify::<_, Infallible>::classify(&classifier, Ok(res), record(&seen));
    let Ok(res) = out;
    prop_assert!(
        seen.lock().unwrap().is_empty(),
        "decided before the trailers"
    );
    let Ok(collected) = runtime().block_on(res.into_body().collect());
    prop_assert_eq!(
        collected.trailers().and_then(|t| t.get("grpc-status")),
        Some(&value),
        "trailers passed on as sent"
    );
    prop_assert_eq!(seen.lock().unwrap().clone(), vec![expected]);
    Ok(())
}

#[test]
fn grpc_status_fuzz() {
    TestRunner::new(config(512))
        .run(&bytes_like(b"0123456789+- %abcXYZ\x80", 16), |input| {
            check_grpc_status(&input)
        })
        .unwrap();
}

#[test]
fn grpc_status_corpus() {
    replay("grpc_status", check_grpc_status);
}

// ---------------------------------------------------------------------------
// The HTTP panic-catch layer: method, path and content-type

/// A request with method, path and `content-type` from `input` (three
/// fields separated by newlines) to a handler that panics: the layer
/// answers 500, or gRPC INTERNAL for a gRPC content type, and reports the
/// panic once.
fn check_panic_request(input: &[u8]) -> Result<(), TestCaseError> {
    let mut fields = input.splitn(3, |b| *b == b'\n');
    let method = fields.next().unwrap_or_default();
    let path = fields.next().unwrap_or_default();
    let content_type = fields.next().unwrap_or_default();
    let Ok(method) = Method::from_bytes(method) else {
        return Ok(());
    };
    let Ok(uri) = http::Uri::try_from(path) else {
        return Ok(());
    };
    let mut builder = Request::builder().method(method).uri(uri);
    let grpc = match HeaderValue::from_bytes(content_type) {
        Ok(value) => {
            builder = builder.header("content-type", value);
            is_grpc_type(content_type)
        }
        Err(_) => false,
    };
    let Ok(req) = builder.body(()) else {
        return Ok(());
    };

    let events = Arc::new(Events::default());
    let layer = CatchPanicHttpLayer::builder()
        .metrics(Metrics::from_arc(events.clone()))
        .build()
        .expect("a valid panic layer");
    // Odd inputs panic in `call`, even ones in the first poll.
    let in_call = input.len() % 2 == 1;
    let svc = layer.layer(service_fn(move |req: Request<()>| {
        assert!(!in_call, "handler panicked in call on {}", req.uri());
        std::future::poll_fn(
            move |_| -> std::task::Poll<Result<Response<Full<Bytes>>, Infallible>> {
                panic!("handler panicked on {}", req.uri())
            },
        )
    }));
    let res = runtime()
        .block_on(svc.oneshot(req))
        .map_err(|never| match never {})?;
    prop_assert_eq!(events.panics.load(Ordering::Relaxed), 1);
    if grpc {
        prop_assert_eq!(res.status(), StatusCode::OK);
        prop_assert_eq!(
            res.headers().get("grpc-status").map(HeaderValue::as_bytes),
            Some(&b"13"[..])
        );
    } else {
        prop_assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    Ok(())
}

/// The model of a gRPC (or gRPC-Web) content type: the media type,
/// compared without regard to case, ends where the value does or at its
/// `+suffix` or parameters (`application/grpcx` is not gRPC).
fn is_grpc_type(value: &[u8]) -> bool {
    let value = value.to_ascii_lowercase();
    let ends_type = |rest: &[u8]| matches!(rest.first(), None | Some(b'+' | b';' | b' ' | b'\t'));
    let Some(rest) = value.strip_prefix(b"application/grpc") else {
        return false;
    };
    ends_type(rest)
        || rest
            .strip_prefix(b"-web-text")
            .or_else(|| rest.strip_prefix(b"-web"))
            .is_some_and(ends_type)
}

fn panic_request() -> impl Strategy<Value = Vec<u8>> {
    let method = prop_oneof![
        Just(b"GET".to_vec()),
        Just(b"POST".to_vec()),
        bytes_like(b"ABCXYZabc!#$%&'*+-.^_`|~0", 80),
    ];
    let path = prop_oneof![
        "/[a-z0-9/%._~é€-]{0,140}".prop_map(String::into_bytes),
        bytes_like(b"/?#%abcz09.\xc3\xa9\xe2\x82\xac", 160),
    ];
    let content_type = prop_oneof![
        Just(b"application/grpc".to_vec()),
        Just(b"application/grpc+proto".to_vec()),
        Just(b"APPLICATION/GRPC".to_vec()),
        Just(b"application/grpcx".to_vec()),
        Just(b"application/grpc-web-text+proto".to_vec()),
        Just(b"text/plain".to_vec()),
        bytes_like(b"application/grpc+;= \xff", 40),
    ];
    (method, path, content_type).prop_map(|(m, p, c)| [m, p, c].join(&b'\n'))
}

#[test]
fn panic_request_fuzz() {
    TestRunner::new(config(256))
        .run(&panic_request(), |input| check_panic_request(&input))
        .unwrap();
}

#[test]
fn panic_request_corpus() {
    replay("panic_request", check_panic_request);
}

/// What the corpus entries resolve to behind one trusted proxy network
/// (10.0.0.0/8), from a trusted peer: the right-most address that is not
/// a trusted proxy; an entry that names no usable address stops the walk,
/// and the last address reached (the peer, if none) is the client.
#[test]
fn forwarded_corpus_answers() {
    use ForwardedHeader::{Forwarded, XForwardedFor};
    let expected: [(&str, ForwardedHeader, &str); 16] = [
        ("xff-two-hops", XForwardedFor, "203.0.113.9"),
        ("mapped-ipv4", XForwardedFor, "203.0.113.4"),
        ("xff-ports-brackets-quotes", XForwardedFor, "192.0.2.3"),
        // The walk stops after 32 hops, at 10.0.0.2: never as far as the
        // left-most 198.51.100.1.
        ("more-than-32-trusted-hops", XForwardedFor, "10.0.0.2"),
        // Never past the garbage to 6.6.6.6.
        ("xff-garbage-in-middle", XForwardedFor, "10.2.2.2"),
        ("malformed-nodes", XForwardedFor, "10.1.2.3"),
        ("lone-quotes", XForwardedFor, "10.1.2.3"),
        ("only-separators", XForwardedFor, "10.1.2.3"),
        // A quoted value is one value: never 6.6.6.6, 8.8.8.8 or 9.9.9.9
        // from inside the quotes, and an unterminated quote stops the walk.
        ("quoted-host-in-proxy-element", Forwarded, "10.0.0.2"),
        ("quoted-comma", Forwarded, "10.0.0.2"),
        ("non-utf8-and-zone", Forwarded, "10.0.0.1"),
        // `for=_hidden` names no address: the walk stops at the peer.
        ("rfc7239-two-lines", Forwarded, "10.1.2.3"),
        ("lone-quotes", Forwarded, "10.1.2.3"),
        ("only-separators", Forwarded, "10.1.2.3"),
        ("mapped-ipv4", Forwarded, "10.1.2.3"),
        ("xff-two-hops", Forwarded, "10.1.2.3"),
    ];
    let trusted = [Net {
        addr: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 0)),
        prefix: 8,
    }];
    let peer: IpAddr = "10.1.2.3".parse().unwrap();
    let corpus: Vec<_> = corpus("forwarded");
    for (entry, header, answer) in expected {
        let (_, bytes) = corpus
            .iter()
            .find(|(name, _)| name.ends_with(&format!("/{entry}")))
            .unwrap_or_else(|| panic!("no corpus entry {entry}"));
        let mut headers = HeaderMap::new();
        for line in bytes.split(|b| *b == b'\n') {
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(header.name(), value);
            }
        }
        let got = client_ip(&trusted, header, 32, 128).client_addr(peer, &headers);
        assert_eq!(got.to_string(), answer, "{entry} as {header:?}");
    }
}

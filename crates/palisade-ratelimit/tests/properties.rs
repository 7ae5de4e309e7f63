//! Properties: forwarding headers never panic whatever their bytes, and the
//! keyed limiter (with eviction) agrees exactly with a reference GCRA.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use palisade_core::{Clock, ManualClock};
use palisade_ratelimit::RateLimitLayer;
use palisade_ratelimit::key::{ClientIp, ForwardedHeader, KeyFn};
use proptest::prelude::*;

/// Bytes that look like forwarding headers, and anything else.
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    let structural =
        prop::sample::select(b",;=\"[]:. \t_-abcdefABCDEF0123456789forFORunknown".to_vec());
    prop_oneof![
        prop::collection::vec(structural, 0..80),
        prop::collection::vec(any::<u8>(), 0..80),
        (
            prop::collection::vec("[0-9a-f:.\\[\\]\"]{0,24}", 0..6),
            prop::collection::vec(any::<u8>(), 0..8)
        )
            .prop_map(|(parts, noise)| {
                let mut bytes = parts.join(", for=").into_bytes();
                bytes.extend(noise);
                bytes
            }),
    ]
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(IpAddr::from),
        any::<[u8; 16]>().prop_map(IpAddr::from),
        Just("10.0.0.1".parse().unwrap()),
        Just("::ffff:10.0.0.2".parse().unwrap()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn forwarding_headers_never_panic_and_never_move_an_untrusted_peer(
        lines in prop::collection::vec(header_bytes(), 0..3),
        peer in ip(),
        forwarded in any::<bool>(),
    ) {
        let header = if forwarded { ForwardedHeader::Forwarded } else { ForwardedHeader::XForwardedFor };
        let client = ClientIp::new()
            .trust("10.0.0.0/8".parse().unwrap())
            .trust("fc00::/7".parse().unwrap())
            .header(header);
        let mut headers = HeaderMap::new();
        for line in &lines {
            // Bytes a header value cannot hold never reach a server.
            if let Ok(value) = HeaderValue::from_bytes(line) {
                headers.append(header.name(), value);
            }
        }
        let addr = client.client_addr(peer, &headers);
        if !client.is_trusted(peer) {
            let canonical = match peer {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
                v4 @ IpAddr::V4(_) => v4,
            };
            prop_assert_eq!(addr, canonical);
        }
        let _ = client.key(peer, &headers);
    }
}

/// Governor's GCRA, written out for one key.
#[derive(Debug, Default)]
struct Reference {
    tats: HashMap<u8, u64>,
}

impl Reference {
    fn check(&mut self, key: u8, now: u64, emission: u64, tolerance: u64) -> Result<(), u64> {
        let tat = *self.tats.get(&key).unwrap_or(&now);
        let earliest = tat.saturating_sub(tolerance);
        if now < earliest {
            return Err(earliest - now);
        }
        self.tats.insert(key, tat.max(now) + emission);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_keyed_limiter_agrees_with_a_reference_gcra(
        steps in prop::collection::vec((0_u8..8, 0_u64..400), 1..300),
        burst in 1_u32..5,
    ) {
        let manual = ManualClock::new();
        // Eight keys, a cap of eight: keys go idle, are evicted and come
        // back, but never need the overflow bucket.
        let layer = RateLimitLayer::builder()
            .quota(3, Duration::from_secs(1))
            .burst(burst)
            .max_keys(8)
            .clock(Clock::manual(&manual))
            .keyed_by(KeyFn::new(|key: &u8| Some(*key)))
            .build()
            .unwrap();
        let limiter = layer.limiter();
        let emission = 333_333_333;
        let tolerance = emission * u64::from(burst - 1);
        let mut reference = Reference::default();
        let mut now = 0;
        for (key, advance_ms) in steps {
            manual.advance(Duration::from_millis(advance_ms));
            now += advance_ms * 1_000_000;
            let expected = reference.check(key, now, emission, tolerance);
            let actual = limiter
                .check_key(&key)
                .map(|_| ())
                .map_err(|refused| u64::try_from(refused.retry_after().as_nanos()).unwrap());
            prop_assert_eq!(actual, expected);
            prop_assert!(limiter.tracked_keys() <= 8);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn the_global_limiter_agrees_with_governor_decision_by_decision(
        advances_us in prop::collection::vec(0_u64..600_000, 1..300),
        per_period in 1_u32..20,
        period_ms in 1_u64..3_000,
        burst in 1_u32..6,
    ) {
        use governor::clock::{Clock as _, FakeRelativeClock};
        use governor::{Quota, RateLimiter};
        use std::num::NonZeroU32;

        let period = Duration::from_millis(period_ms);
        let manual = ManualClock::new();
        let layer = RateLimitLayer::builder()
            .quota(per_period, period)
            .burst(burst)
            .clock(Clock::manual(&manual))
            .build()
            .unwrap();
        let limiter = layer.limiter();

        // The same quota as governor builds it: one request per
        // `period / per_period`, in bursts of `burst`.
        let quota = Quota::with_period(period / per_period)
            .unwrap()
            .allow_burst(NonZeroU32::new(burst).unwrap());
        let fake = FakeRelativeClock::default();
        let governor = RateLimiter::direct_with_clock(quota, fake.clone());

        for advance in advances_us {
            let step = Duration::from_micros(advance);
            manual.advance(step);
            fake.advance(step);
            let expected = governor
                .check()
                .map_err(|not_until| not_until.wait_time_from(fake.now()));
            let actual = limiter.check().map(|_| ()).map_err(|refused| refused.retry_after());
            prop_assert_eq!(actual, expected.map(|_| ()));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    /// Behind a trusted proxy that appends the address it saw, whatever a
    /// client sent before it (any bytes, stray quotes and backslashes, its
    /// own addresses) cannot change the key: the proxy's entry, read from
    /// the right, is the client.
    #[test]
    fn a_client_cannot_spoof_its_address_behind_a_trusted_proxy(
        sent in prop::collection::vec(header_bytes(), 0..3),
        host in "[ -~]{0,24}",
        forwarded in any::<bool>(),
        own_line in any::<bool>(),
        with_host in any::<bool>(),
    ) {
        let header = if forwarded { ForwardedHeader::Forwarded } else { ForwardedHeader::XForwardedFor };
        let client = ClientIp::new()
            .trust("10.0.0.0/8".parse().unwrap())
            .header(header);
        let seen: IpAddr = "203.0.113.7".parse().unwrap();
        // The proxy's own entry; in `Forwarded`, it may carry client text
        // (the Host it was sent) in a quoted string, escaped.
        let entry = if forwarded {
            let mut entry = format!("for={seen}");
            if with_host {
                let escaped = host.replace('\\', "\\\\").replace('"', "\\\"");
                entry.push_str(&format!(";host=\"{escaped}\""));
            }
            entry
        } else {
            seen.to_string()
        };
        let mut lines: Vec<Vec<u8>> = sent
            .into_iter()
            .filter(|line| HeaderValue::from_bytes(line).is_ok())
            .collect();
        // The proxy adds its entry on a line of its own, or after a comma
        // on the last line the client sent.
        match lines.last_mut() {
            Some(last) if !own_line && !last.is_empty() => {
                last.extend_from_slice(b", ");
                last.extend_from_slice(entry.as_bytes());
            }
            _ => lines.push(entry.into_bytes()),
        }
        let mut headers = HeaderMap::new();
        for line in &lines {
            headers.append(header.name(), HeaderValue::from_bytes(line).unwrap());
        }
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        prop_assert_eq!(client.client_addr(peer, &headers), seen, "{:?}", lines);
    }
}

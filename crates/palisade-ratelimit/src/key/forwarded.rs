//! Reading `X-Forwarded-For` and `Forwarded` (RFC 7239) from the right.
//!
//! Each proxy appends the address it received the request from, so the
//! right end of the list is written by the proxies closest to us and the
//! left end by whoever sent the request first, possibly the client itself.
//! The walk therefore starts at the right and stops at the first hop that
//! is not a trusted proxy; nothing left of that hop is ever read.
//!
//! Splitting on `,` from the right is safe even though `Forwarded` allows
//! quoted strings: the entries right of the first untrusted hop come from
//! trusted proxies, which write plain addresses, and a quoted comma further
//! left can only produce an unusable piece, which ends the walk.
//!
//! Nothing here panics or allocates, whatever the bytes.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::HeaderMap;
use http::header::{FORWARDED, HeaderName};

/// Which header carries the chain of forwarding proxies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2`. The default.
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1;proto=https` (RFC 7239).
    Forwarded,
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

impl ForwardedHeader {
    /// The header's name.
    pub fn name(self) -> &'static HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        }
    }
}

/// One hop of the chain, read from the right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Hop {
    /// The address this hop reported.
    Addr(IpAddr),
    /// An entry that names no address: malformed, `unknown`, or an
    /// obfuscated identifier.
    Unusable,
}

/// The hops of `header` in `headers`, right-most first. Several header
/// lines form one list, in order.
pub(crate) fn hops_from_right(
    header: ForwardedHeader,
    headers: &HeaderMap,
) -> impl Iterator<Item = Hop> + '_ {
    headers
        .get_all(header.name())
        .iter()
        .rev()
        .flat_map(|value| value.as_bytes().rsplit(|byte| *byte == b','))
        .map(trim)
        .filter(|entry| !entry.is_empty())
        .map(move |entry| {
            let node = match header {
                ForwardedHeader::XForwardedFor => Some(entry),
                ForwardedHeader::Forwarded => for_parameter(entry),
            };
            node.and_then(parse_node).map_or(Hop::Unusable, Hop::Addr)
        })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// The value of the `for` parameter of one `Forwarded` element.
fn for_parameter(element: &[u8]) -> Option<&[u8]> {
    element.split(|byte| *byte == b';').find_map(|pair| {
        let eq = pair.iter().position(|byte| *byte == b'=')?;
        let (name, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        name.eq_ignore_ascii_case(b"for").then_some(value)
    })
}

/// Parses a node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080`, optionally in double quotes.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = match node {
        [b'"', inner @ .., b'"'] => trim(inner),
        _ => node,
    };
    let node = std::str::from_utf8(node).ok()?;
    if let Some(rest) = node.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let ip: Ipv6Addr = host.parse().ok()?;
        return match after {
            "" => Some(IpAddr::V6(ip)),
            _ => after
                .strip_prefix(':')
                .filter(|port| is_port(port))
                .map(|_| IpAddr::V6(ip)),
        };
    }
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    let (host, port) = node.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    host.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

/// A port number, or an RFC 7239 obfuscated port (`_` then token chars).
fn is_port(port: &str) -> bool {
    match port.as_bytes() {
        [] => false,
        [b'_', rest @ ..] => rest
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-')),
        digits => digits.iter().all(u8::is_ascii_digit) && port.parse::<u16>().is_ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn hops(header: ForwardedHeader, lines: &[&str]) -> Vec<Hop> {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(header.name(), HeaderValue::from_str(line).unwrap());
        }
        hops_from_right(header, &headers).collect()
    }

    fn addr(s: &str) -> Hop {
        Hop::Addr(s.parse().unwrap())
    }

    #[test]
    fn x_forwarded_for_is_read_right_to_left_across_lines() {
        assert_eq!(
            hops(
                ForwardedHeader::XForwardedFor,
                &["203.0.113.9, 10.0.0.1", " 2001:db8::7 ,, 10.0.0.2 "]
            ),
            vec![
                addr("10.0.0.2"),
                addr("2001:db8::7"),
                addr("10.0.0.1"),
                addr("203.0.113.9")
            ]
        );
    }

    #[test]
    fn nodes_with_ports_brackets_and_quotes() {
        assert_eq!(
            hops(
                ForwardedHeader::XForwardedFor,
                &["192.0.2.1:8080, [2001:db8::1]:443, [2001:db8::2], \"192.0.2.3\""]
            ),
            vec![
                addr("192.0.2.3"),
                addr("2001:db8::2"),
                addr("2001:db8::1"),
                addr("192.0.2.1")
            ]
        );
    }

    #[test]
    fn garbage_entries_are_unusable() {
        assert_eq!(
            hops(
                ForwardedHeader::XForwardedFor,
                &["nonsense, 1.2.3.4.5, [::1, 192.0.2.1:99999, 192.0.2.1:http"]
            ),
            vec![Hop::Unusable; 5]
        );
    }

    #[test]
    fn forwarded_reads_the_for_parameter() {
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[
                    "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\"",
                    "proto=https;for=10.0.0.1, for=unknown, for=_hidden, by=10.0.0.9"
                ]
            ),
            vec![
                Hop::Unusable,
                Hop::Unusable,
                Hop::Unusable,
                addr("10.0.0.1"),
                addr("2001:db8:cafe::17"),
                addr("192.0.2.60"),
            ]
        );
    }

    #[test]
    fn no_header_no_hops() {
        assert!(hops(ForwardedHeader::Forwarded, &[]).is_empty());
        assert!(hops(ForwardedHeader::XForwardedFor, &["  ,  "]).is_empty());
    }
}

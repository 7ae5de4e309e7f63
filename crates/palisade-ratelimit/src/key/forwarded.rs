//! Reading `X-Forwarded-For` and `Forwarded` (RFC 7239) from the right.
//!
//! Each proxy appends the address it received the request from, so the
//! right end of the list is written by the proxies closest to us and the
//! left end by whoever sent the request first, possibly the client itself.
//! The walk therefore starts at the right and stops at the first hop that
//! is not a trusted proxy; nothing left of that hop is ever read.
//!
//! `Forwarded` values may hold quoted strings (RFC 7239 `quoted-string`,
//! with `\` escapes), and a trusted proxy's own element can carry text the
//! client chose, such as its `Host` in `host="…"`. Commas and semicolons are
//! therefore separators only outside quoted strings, and an element whose
//! quotes do not balance, or that has more than one `for` parameter, is
//! unusable, which ends the walk. `X-Forwarded-For` has no quoting and is
//! split at every comma.
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

/// The most hops a walk reads, over all lines of the header.
pub(crate) const MAX_HOPS: usize = 32;

/// The hops of `header` in `headers`, right-most first. Several header
/// lines form one list, in order.
pub(crate) fn hops_from_right(
    header: ForwardedHeader,
    headers: &HeaderMap,
) -> impl Iterator<Item = Hop> + '_ {
    let quoted = header == ForwardedHeader::Forwarded;
    headers
        .get_all(header.name())
        .iter()
        .rev()
        .flat_map(move |value| Elements::new(value.as_bytes(), quoted))
        .filter_map(move |element| {
            let Element::Entry(entry) = element else {
                return Some(Hop::Unusable);
            };
            let entry = trim(entry);
            if entry.is_empty() {
                return None;
            }
            let node = match header {
                ForwardedHeader::XForwardedFor => Some(entry),
                ForwardedHeader::Forwarded => for_parameter(entry),
            };
            Some(node.and_then(parse_node).map_or(Hop::Unusable, Hop::Addr))
        })
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Where a byte stands relative to RFC 7239's quoted strings.
#[derive(Clone, Copy, Debug, Default)]
struct Quoting {
    open: bool,
    escaped: bool,
}

impl Quoting {
    /// Takes the next byte; true when it belongs to a quoted string (its
    /// quotes included), so it separates nothing.
    fn quoted(&mut self, byte: u8) -> bool {
        if self.open {
            if self.escaped {
                self.escaped = false;
            } else if byte == b'\\' {
                self.escaped = true;
            } else if byte == b'"' {
                self.open = false;
            }
            true
        } else if byte == b'"' {
            self.open = true;
            true
        } else {
            false
        }
    }
}

/// True when every quoted string in `bytes` is closed.
fn balanced(bytes: &[u8]) -> bool {
    let mut quoting = Quoting::default();
    for &byte in bytes {
        quoting.quoted(byte);
    }
    !quoting.open
}

/// `bytes` cut at each `separator` outside quoted strings, left to right.
fn split_unquoted(bytes: &[u8], separator: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(bytes);
    std::iter::from_fn(move || {
        let bytes = rest?;
        let mut quoting = Quoting::default();
        for (at, &byte) in bytes.iter().enumerate() {
            if !quoting.quoted(byte) && byte == separator {
                rest = Some(&bytes[at + 1..]);
                return Some(&bytes[..at]);
            }
        }
        rest = None;
        Some(bytes)
    })
}

/// One piece of a header line, as [`Elements`] yields it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Element<'a> {
    /// The bytes between two separators, untrimmed.
    Entry(&'a [u8]),
    /// Stands for the elements left of the last [`MAX_HOPS`] of a line,
    /// which are not kept: it reads as unusable and ends the walk, which
    /// never gets that far.
    Truncated,
}

/// The comma-separated elements of one header line, right-most first.
///
/// The line is read once, left to right (the only direction in which
/// quoted strings can be told apart), keeping where its last `MAX_HOPS`
/// elements start and end; nothing is allocated.
struct Elements<'a> {
    line: &'a [u8],
    kept: [(usize, usize); MAX_HOPS],
    count: usize,
    yielded: usize,
}

impl<'a> Elements<'a> {
    /// `quoted`: commas inside quoted strings do not separate (`Forwarded`).
    fn new(line: &'a [u8], quoted: bool) -> Self {
        let mut elements = Self {
            line,
            kept: [(0, 0); MAX_HOPS],
            count: 0,
            yielded: 0,
        };
        let mut quoting = Quoting::default();
        let mut start = 0;
        for (at, &byte) in line.iter().enumerate() {
            let inside = quoted && quoting.quoted(byte);
            if !inside && byte == b',' {
                elements.keep(start, at);
                start = at + 1;
            }
        }
        elements.keep(start, line.len());
        elements
    }

    fn keep(&mut self, start: usize, end: usize) {
        self.kept[self.count % MAX_HOPS] = (start, end);
        self.count += 1;
    }
}

impl<'a> Iterator for Elements<'a> {
    type Item = Element<'a>;

    fn next(&mut self) -> Option<Element<'a>> {
        let kept = self.count.min(MAX_HOPS);
        if self.yielded < kept {
            let (start, end) = self.kept[(self.count - 1 - self.yielded) % MAX_HOPS];
            self.yielded += 1;
            return Some(Element::Entry(&self.line[start..end]));
        }
        if self.yielded == kept && self.count > kept {
            self.yielded += 1;
            return Some(Element::Truncated);
        }
        None
    }
}

/// The value of the `for` parameter of one `Forwarded` element, unless
/// the element's quotes do not balance or it names `for` more than once.
fn for_parameter(element: &[u8]) -> Option<&[u8]> {
    if !balanced(element) {
        return None;
    }
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        let Some(eq) = pair.iter().position(|byte| *byte == b'=') else {
            continue;
        };
        let (name, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return None;
            }
            found = Some(value);
        }
    }
    found
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
    fn quoted_strings_in_forwarded_separate_nothing() {
        // A trusted proxy's element quoting the client's `Host`: the `for`
        // it carries is the client's, whatever the quoted text holds.
        for line in [
            r#"proto=http;host="example.com";by=10.0.0.1;for=203.0.113.7"#,
            r#"proto=http;host="a;for=6.6.6.6;x=b";by=10.0.0.1;for=203.0.113.7"#,
            r#"proto=http;host="a,for=7.7.7.7;x=b";by=10.0.0.1;for=203.0.113.7"#,
            r#"for=203.0.113.7;host="a,for=8.8.8.8;x=b";proto=http"#,
            r#"for=203.0.113.7;host="a\",for=9.9.9.9;\\";proto=http"#,
        ] {
            assert_eq!(
                hops(ForwardedHeader::Forwarded, &[line]),
                vec![addr("203.0.113.7")],
                "{line}"
            );
        }
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[r#"for=192.0.2.1;host="x,y", for=10.0.0.1"#]
            ),
            vec![addr("10.0.0.1"), addr("192.0.2.1")]
        );
    }

    #[test]
    fn unbalanced_quotes_and_repeated_for_are_unusable() {
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[r#"for=192.0.2.1, for=10.0.0.1;host="open, for=10.0.0.2"#]
            ),
            // The open quote swallows the rest of the line into one element.
            vec![Hop::Unusable, addr("192.0.2.1")]
        );
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &["for=192.0.2.1;for=198.51.100.1", "for=10.0.0.1;x=\\\""]
            ),
            vec![Hop::Unusable, Hop::Unusable]
        );
    }

    #[test]
    fn a_line_longer_than_a_walk_ends_in_an_unusable_hop() {
        let line = vec!["10.0.0.1"; MAX_HOPS + 5].join(", ");
        let read = hops(ForwardedHeader::XForwardedFor, &[&line]);
        assert_eq!(read.len(), MAX_HOPS + 1);
        assert!(read[..MAX_HOPS].iter().all(|hop| *hop == addr("10.0.0.1")));
        assert_eq!(read[MAX_HOPS], Hop::Unusable);
        let exact = vec!["for=10.0.0.1"; MAX_HOPS].join(", ");
        assert_eq!(hops(ForwardedHeader::Forwarded, &[&exact]).len(), MAX_HOPS);
    }

    #[test]
    fn no_header_no_hops() {
        assert!(hops(ForwardedHeader::Forwarded, &[]).is_empty());
        assert!(hops(ForwardedHeader::XForwardedFor, &["  ,  "]).is_empty());
    }
}

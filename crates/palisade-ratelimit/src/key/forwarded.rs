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
//! therefore separators only outside quoted strings. Elements are found
//! from the right, quotes included, so that bytes a client wrote left of
//! the proxies' elements cannot change how those are split; an element
//! whose quotes do not balance, that has no `for` parameter or more than
//! one, is unusable, which ends the walk. `X-Forwarded-For` has no
//! quoting and is split at every comma.
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
    /// A well-formed entry that names no address: `unknown`, an
    /// obfuscated identifier (`_hidden`), or a `Forwarded` element
    /// without `for`.
    Unnamed,
    /// An entry that is neither: garbage, an address that does not parse,
    /// unbalanced quotes, two `for` parameters.
    Malformed,
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
        .flat_map(move |value| FromRight::new(value.as_bytes(), quoted))
        .map(trim)
        .filter(|entry| !entry.is_empty())
        .map(move |entry| match header {
            ForwardedHeader::XForwardedFor => node_hop(entry),
            ForwardedHeader::Forwarded => match for_parameter(entry) {
                ForParameter::Value(node) => node_hop(node),
                ForParameter::Missing => Hop::Unnamed,
                ForParameter::Malformed => Hop::Malformed,
            },
        })
}

/// The hop a node names.
fn node_hop(node: &[u8]) -> Hop {
    match parse_node(node) {
        Some(addr) => Hop::Addr(addr),
        None if is_unnamed(node) => Hop::Unnamed,
        None => Hop::Malformed,
    }
}

/// RFC 7239's nodes that name no address: `unknown` and obfuscated
/// identifiers (`_` then letters, digits, `.`, `_` or `-`), optionally
/// quoted and with a port.
fn is_unnamed(node: &[u8]) -> bool {
    let node = unquote(node);
    let name = match node.iter().rposition(|byte| *byte == b':') {
        Some(colon) => match std::str::from_utf8(&node[colon + 1..]) {
            Ok(port) if is_port(port) => &node[..colon],
            _ => return false,
        },
        None => node,
    };
    match name {
        [b'_', rest @ ..] => is_obfuscated_tail(rest),
        _ => name.eq_ignore_ascii_case(b"unknown"),
    }
}

/// A node without the double quotes it may be written in.
fn unquote(node: &[u8]) -> &[u8] {
    match node {
        [b'"', inner @ .., b'"'] => trim(inner),
        _ => node,
    }
}

/// What follows the `_` of an RFC 7239 obfuscated identifier or port: one
/// or more letters, digits, `.`, `_` and `-`.
fn is_obfuscated_tail(rest: &[u8]) -> bool {
    !rest.is_empty()
        && rest
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
}

fn trim(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Where a byte stands relative to RFC 7239's quoted strings, reading
/// left to right.
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

/// The comma-separated elements of one header line, right-most first,
/// found lazily from the right end: a walk that stops early reads only
/// the end of the line.
///
/// With `quoted` (`Forwarded`), a comma inside a quoted string separates
/// nothing. Quotes are told apart from the right as well: a `"` opens or
/// closes a string unless an odd run of `\` precedes it. Reading from the
/// right keeps the split of the well-formed end that trusted proxies
/// wrote independent of whatever a client put to its left: a stray quote
/// there cannot change how a proxy's element is cut.
struct FromRight<'a> {
    rest: Option<&'a [u8]>,
    quoted: bool,
}

impl<'a> FromRight<'a> {
    fn new(line: &'a [u8], quoted: bool) -> Self {
        Self {
            rest: Some(line),
            quoted,
        }
    }
}

impl<'a> Iterator for FromRight<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let line = self.rest?;
        let mut inside = false;
        for at in (0..line.len()).rev() {
            match line[at] {
                b'"' if self.quoted => {
                    let backslashes = line[..at]
                        .iter()
                        .rev()
                        .take_while(|byte| **byte == b'\\')
                        .count();
                    if backslashes % 2 == 0 {
                        inside = !inside;
                    }
                }
                b',' if !inside => {
                    self.rest = Some(&line[..at]);
                    return Some(&line[at + 1..]);
                }
                _ => {}
            }
        }
        self.rest = None;
        Some(line)
    }
}

/// What one `Forwarded` element says of its `for` parameter.
enum ForParameter<'a> {
    /// Its value.
    Value(&'a [u8]),
    /// The element has none.
    Missing,
    /// The element's quotes do not balance, it names `for` twice, or one
    /// of its pairs is not `name=value` (as a bare address is).
    Malformed,
}

/// The `for` parameter of one `Forwarded` element.
fn for_parameter(element: &[u8]) -> ForParameter<'_> {
    if !balanced(element) {
        return ForParameter::Malformed;
    }
    let mut found = None;
    for pair in split_unquoted(element, b';') {
        if trim(pair).is_empty() {
            // An empty pair (`;;`, a trailing `;`, an empty element).
            continue;
        }
        let Some(eq) = pair.iter().position(|byte| *byte == b'=') else {
            // RFC 7239 allows only `name=value` pairs: an address alone
            // is another header's syntax written into this one.
            return ForParameter::Malformed;
        };
        let (name, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
        if name.is_empty() {
            return ForParameter::Malformed;
        }
        if name.eq_ignore_ascii_case(b"for") {
            if found.is_some() {
                return ForParameter::Malformed;
            }
            found = Some(value);
        }
    }
    found.map_or(ForParameter::Missing, ForParameter::Value)
}

/// Parses a node: `192.0.2.1`, `192.0.2.1:8080`, `2001:db8::1`,
/// `[2001:db8::1]`, `[2001:db8::1]:8080`, optionally in double quotes.
fn parse_node(node: &[u8]) -> Option<IpAddr> {
    let node = std::str::from_utf8(unquote(node)).ok()?;
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
        [b'_', rest @ ..] => is_obfuscated_tail(rest),
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
    fn garbage_entries_are_malformed() {
        assert_eq!(
            hops(
                ForwardedHeader::XForwardedFor,
                &[
                    "nonsense, 1.2.3.4.5, [::1, 192.0.2.1:99999, 192.0.2.1:http, _, unknown:http, _a b"
                ]
            ),
            vec![Hop::Malformed; 8]
        );
    }

    #[test]
    fn unknown_and_obfuscated_nodes_are_unnamed_not_malformed() {
        assert_eq!(
            hops(
                ForwardedHeader::XForwardedFor,
                &["unknown, UNKNOWN:8080, _hidden, \"_proxy-1.a:_port\", _x:443"]
            ),
            vec![Hop::Unnamed; 5]
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
                Hop::Unnamed,
                Hop::Unnamed,
                Hop::Unnamed,
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
    fn an_obfuscated_port_or_identifier_needs_a_character_after_its_underscore() {
        for entry in ["192.0.2.1:_", "_x:_", "[2001:db8::1]:_", "_"] {
            assert_eq!(
                hops(ForwardedHeader::XForwardedFor, &[entry]),
                vec![Hop::Malformed],
                "{entry}"
            );
        }
        assert_eq!(
            hops(ForwardedHeader::XForwardedFor, &["192.0.2.1:_p"]),
            vec![addr("192.0.2.1")]
        );
    }

    #[test]
    fn unbalanced_quotes_and_repeated_for_are_malformed() {
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[r#"for=192.0.2.1, for=10.0.0.1;host="open, for=10.0.0.2"#]
            ),
            // Read from the right, the lone quote swallows everything left
            // of it into one element.
            vec![addr("10.0.0.2"), Hop::Malformed]
        );
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &["for=192.0.2.1;for=198.51.100.1", "for=10.0.0.1;x=\\\""]
            ),
            vec![Hop::Malformed, Hop::Malformed]
        );
    }

    #[test]
    fn elements_that_are_not_name_value_pairs_are_malformed() {
        // A proxy writing `X-Forwarded-For` syntax into `Forwarded`, a bare
        // word, a pair without a name, and a stray word after a good `for`.
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[
                    "203.0.113.7, garbage, for",
                    "=192.0.2.1, for=192.0.2.2;junk"
                ]
            ),
            vec![Hop::Malformed; 5]
        );
        // Empty pairs and elements are list syntax, not errors.
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &["for=192.0.2.1;;proto=http;, , for=192.0.2.2"]
            ),
            vec![addr("192.0.2.2"), addr("192.0.2.1")]
        );
    }

    #[test]
    fn bytes_left_of_the_proxies_elements_cannot_change_their_split() {
        // A client's stray quote, left of the proxy's element that quotes
        // (and escapes) the client's `Host`.
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[r#"", for=203.0.113.7;host="a,for=6.6.6.6;x=\"""#]
            ),
            vec![addr("203.0.113.7"), Hop::Malformed]
        );
        assert_eq!(
            hops(ForwardedHeader::Forwarded, &[r#"x=", for=203.0.113.7"#]),
            vec![addr("203.0.113.7"), Hop::Malformed]
        );
        // An escaped backslash before a closing quote.
        assert_eq!(
            hops(
                ForwardedHeader::Forwarded,
                &[r#"for=192.0.2.1;host="a\\", for=203.0.113.7;host="b\",c""#]
            ),
            vec![addr("203.0.113.7"), addr("192.0.2.1")]
        );
    }

    #[test]
    fn long_lines_and_empty_entries_are_read_in_full() {
        let line = format!("203.0.113.7{}", ",".repeat(40));
        assert_eq!(
            hops(ForwardedHeader::XForwardedFor, &[&line]),
            vec![addr("203.0.113.7")]
        );
        let line = vec!["10.0.0.1"; MAX_HOPS + 5].join(", ");
        assert_eq!(
            hops(ForwardedHeader::XForwardedFor, &[&line]).len(),
            MAX_HOPS + 5
        );
    }

    #[test]
    fn no_header_no_hops() {
        assert!(hops(ForwardedHeader::Forwarded, &[]).is_empty());
        assert!(hops(ForwardedHeader::XForwardedFor, &["  ,  "]).is_empty());
    }
}

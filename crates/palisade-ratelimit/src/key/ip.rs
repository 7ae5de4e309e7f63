//! Keys from IP addresses: the peer's, or the client's behind trusted
//! proxies.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use http::{Extensions, HeaderMap};
use ipnet::{IpNet, Ipv4Net};
use palisade_core::config::Validate;
use palisade_core::{ConfigError, KeyKind};

use super::forwarded::{ForwardedHeader, Hop, MAX_HOPS, hops_from_right};
use super::{ExtractKey, KeyExtractor};

/// An address as a rate-limit key: the address with its host bits cleared
/// past a prefix length, so that, by default, every address of one IPv6
/// /64 (what one customer usually gets) shares a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IpKey {
    addr: IpAddr,
    prefix: u8,
}

impl IpKey {
    /// `addr` with every bit past `prefix` cleared. IPv4-mapped IPv6
    /// addresses (`::ffff:192.0.2.1`, as dual-stack sockets report IPv4
    /// peers) count as IPv4. Prefixes past the address length are clamped.
    pub fn new(addr: IpAddr, ipv4_prefix: u8, ipv6_prefix: u8) -> Self {
        match canonical(addr) {
            IpAddr::V4(v4) => {
                let prefix = ipv4_prefix.min(32);
                let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
                Self {
                    addr: IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask)),
                    prefix,
                }
            }
            IpAddr::V6(v6) => {
                let prefix = ipv6_prefix.min(128);
                let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
                Self {
                    addr: IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask)),
                    prefix,
                }
            }
        }
    }

    /// The network address of the key.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length kept.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl fmt::Display for IpKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = match self.addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        IpAddr::V4(_) => addr,
    }
}

/// `net` as the requests' addresses are compared with it: a network of
/// IPv4-mapped IPv6 addresses becomes the IPv4 network it maps.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => v6
            .addr()
            .to_ipv4_mapped()
            .and_then(|v4| Ipv4Net::new(v4, v6.prefix_len() - 96).ok())
            .map_or(net, IpNet::V4),
        _ => net,
    }
}

/// The peer's address from a request's extensions: axum's
/// `ConnectInfo<SocketAddr>` (with the `axum` feature), a tonic server's
/// `TcpConnectInfo` (with the `tonic` feature), else a [`SocketAddr`],
/// else an [`IpAddr`] that the server inserted.
///
/// A tonic server with TLS inserts `TlsConnectInfo<TcpConnectInfo>`
/// instead, which this does not read: key such a server with a
/// [`KeyFn`](crate::key::KeyFn) that reads it, or insert the address as a
/// [`SocketAddr`] extension in a layer of your own.
pub fn peer_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    peer_from_extensions(request.extensions())
}

fn peer_from_extensions(extensions: &Extensions) -> Option<IpAddr> {
    #[cfg(feature = "axum")]
    if let Some(info) = extensions.get::<axum::extract::ConnectInfo<SocketAddr>>() {
        return Some(info.0.ip());
    }
    #[cfg(feature = "tonic")]
    if let Some(addr) = extensions
        .get::<tonic::transport::server::TcpConnectInfo>()
        .and_then(tonic::transport::server::TcpConnectInfo::remote_addr)
    {
        return Some(addr.ip());
    }
    extensions
        .get::<SocketAddr>()
        .map(SocketAddr::ip)
        .or_else(|| extensions.get::<IpAddr>().copied())
}

fn check_prefixes(check: &Validate<'_>, v4: u8, v6: u8) -> Result<(), ConfigError> {
    check.in_range("ipv4_prefix", v4, 0, 32)?;
    check.in_range("ipv6_prefix", v6, 0, 128)?;
    Ok(())
}

/// Keys requests by the peer's IP address: the other end of the TCP
/// connection. IPv6 peers are keyed by their /64 unless configured.
///
/// Behind a proxy or load balancer every request has the proxy's address;
/// use [`ClientIp`] there.
#[derive(Clone, Copy, Debug)]
pub struct PeerIp {
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl PeerIp {
    /// Keys by the whole IPv4 address and by the IPv6 /64.
    pub fn new() -> Self {
        Self {
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    /// Keys IPv6 peers by their first `prefix` bits (0 to 128, default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    /// Keys IPv4 peers by their first `prefix` bits (0 to 32, default 32).
    #[must_use]
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.ipv4_prefix = prefix;
        self
    }

    /// The key of a peer address.
    pub fn key(&self, peer: IpAddr) -> IpKey {
        IpKey::new(peer, self.ipv4_prefix, self.ipv6_prefix)
    }
}

impl Default for PeerIp {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyExtractor for PeerIp {
    fn kind(&self) -> KeyKind {
        KeyKind::PeerIp
    }

    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        check_prefixes(check, self.ipv4_prefix, self.ipv6_prefix)
    }
}

impl<B> ExtractKey<http::Request<B>> for PeerIp {
    type Key<'r>
        = IpKey
    where
        B: 'r;

    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> Option<IpKey> {
        peer_ip(request).map(|peer| self.key(peer))
    }
}

/// Keys requests by the client's IP address behind trusted proxies.
///
/// The proxies' networks are listed with [`trust`](ClientIp::trust).
/// **Nothing is trusted by default**: until a network is listed, the key is
/// the peer's address and forwarding headers are never read, so a client
/// cannot choose its own key by sending one.
///
/// When the peer is trusted, the forwarding header
/// ([`ForwardedHeader`], `X-Forwarded-For` by default) is read from the
/// right, skipping trusted hops; the key is the right-most untrusted
/// address. A malformed, `unknown` or obfuscated entry ends the walk and the
/// key is the last trusted hop read (the peer itself when the first entry
/// is unusable), never an address the client wrote. The rate limiter
/// reports a malformed one it reached (not `unknown`, not an obfuscated
/// identifier, not a well-formed element without `for`; an element that is
/// not `name=value` pairs, such as a bare address, is malformed) as
/// [`Event::MalformedHeader`](palisade_core::Event::MalformedHeader) for
/// the forwarding header. When every hop is
/// trusted, the left-most one is the key; the walk reads at most 32 hops,
/// and after 32 trusted ones the 32nd from the right is the key.
///
/// In `Forwarded`, separators inside quoted strings separate nothing, so a
/// value the client chose and a trusted proxy quoted (its `Host`, as
/// `host="…"`) cannot pass for a `for`. Elements and their quotes are read
/// from the right, so what a client wrote left of the proxies' elements
/// (a stray quote, say) cannot change how those split. An element whose
/// quotes do not balance, without a `for` parameter (`proto=https` alone,
/// say) or with two, ends the walk. A proxy that writes such a value
/// unquoted makes a header that no reader can split
/// safely: trust it with `X-Forwarded-For` instead, or have it quote or
/// drop the value.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are IPv4 addresses here,
/// in requests and in trusted networks alike: trusting
/// `::ffff:10.0.0.0/104` trusts `10.0.0.0/8`. An IPv6 network wider than
/// the mapped range (a prefix under 96 bits, such as `::/0`) stays IPv6
/// and trusts no IPv4 peer: list IPv4 proxies by their IPv4 networks.
#[derive(Clone, Debug)]
pub struct ClientIp {
    trusted: Arc<[IpNet]>,
    header: ForwardedHeader,
    ipv4_prefix: u8,
    ipv6_prefix: u8,
}

impl ClientIp {
    /// Trusts nobody, reads `X-Forwarded-For`, keys IPv6 by /64.
    pub fn new() -> Self {
        Self {
            trusted: Arc::from(Vec::new()),
            header: ForwardedHeader::default(),
            ipv4_prefix: 32,
            ipv6_prefix: 64,
        }
    }

    /// Trusts the proxies in `network`.
    #[must_use]
    pub fn trust(self, network: IpNet) -> Self {
        self.trust_all([network])
    }

    /// Trusts the proxies in every network of `networks`.
    #[must_use]
    pub fn trust_all(mut self, networks: impl IntoIterator<Item = IpNet>) -> Self {
        let mut all = self.trusted.to_vec();
        all.extend(networks.into_iter().map(|net| canonical_net(net.trunc())));
        self.trusted = all.into();
        self
    }

    /// Reads `header` for the chain of proxies (default `X-Forwarded-For`).
    #[must_use]
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Keys IPv6 clients by their first `prefix` bits (0 to 128, default 64).
    #[must_use]
    pub fn ipv6_prefix(mut self, prefix: u8) -> Self {
        self.ipv6_prefix = prefix;
        self
    }

    /// Keys IPv4 clients by their first `prefix` bits (0 to 32, default 32).
    #[must_use]
    pub fn ipv4_prefix(mut self, prefix: u8) -> Self {
        self.ipv4_prefix = prefix;
        self
    }

    /// Whether `addr` belongs to a trusted proxy.
    pub fn is_trusted(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        self.trusted.iter().any(|net| net.contains(&addr))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_addr(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.walk(peer, headers).0
    }

    /// The client's address, and whether the walk ended on a malformed
    /// entry (one it reached: entries left of where it stops are never
    /// read).
    fn walk(&self, peer: IpAddr, headers: &HeaderMap) -> (IpAddr, bool) {
        let peer = canonical(peer);
        if !self.is_trusted(peer) {
            return (peer, false);
        }
        let mut last_trusted = peer;
        for hop in hops_from_right(self.header, headers).take(MAX_HOPS) {
            match hop {
                Hop::Addr(addr) if self.is_trusted(addr) => last_trusted = canonical(addr),
                Hop::Addr(addr) => return (canonical(addr), false),
                Hop::Unnamed => return (last_trusted, false),
                Hop::Malformed => return (last_trusted, true),
            }
        }
        (last_trusted, false)
    }

    /// The key for a request from `peer` with `headers`.
    pub fn key(&self, peer: IpAddr, headers: &HeaderMap) -> IpKey {
        IpKey::new(
            self.client_addr(peer, headers),
            self.ipv4_prefix,
            self.ipv6_prefix,
        )
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyExtractor for ClientIp {
    fn kind(&self) -> KeyKind {
        KeyKind::ClientIp
    }

    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        check_prefixes(check, self.ipv4_prefix, self.ipv6_prefix)
    }
}

impl<B> ExtractKey<http::Request<B>> for ClientIp {
    type Key<'r>
        = IpKey
    where
        B: 'r;

    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> Option<IpKey> {
        self.extract_checked(request).0
    }

    fn extract_checked<'r>(
        &'r self,
        request: &'r http::Request<B>,
    ) -> (Option<IpKey>, Option<&'static str>) {
        let Some(peer) = peer_ip(request) else {
            return (None, None);
        };
        let (client, malformed) = self.walk(peer, request.headers());
        let key = IpKey::new(client, self.ipv4_prefix, self.ipv6_prefix);
        (Some(key), malformed.then(|| self.header.name().as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", value.parse().unwrap());
        headers
    }

    #[test]
    fn prefixes_clear_host_bits() {
        let a = IpKey::new(ip("2001:db8:1:2:aaaa::1"), 32, 64);
        let b = IpKey::new(ip("2001:db8:1:2:ffff::9"), 32, 64);
        let c = IpKey::new(ip("2001:db8:1:3::1"), 32, 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(
            IpKey::new(ip("192.0.2.77"), 24, 64).to_string(),
            "192.0.2.0/24"
        );
        assert_eq!(IpKey::new(ip("192.0.2.77"), 0, 0).addr(), ip("0.0.0.0"));
        assert_eq!(IpKey::new(ip("::1"), 32, 0).addr(), ip("::"));
        assert_eq!(IpKey::new(ip("::1"), 32, 200).prefix(), 128);
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        assert_eq!(
            IpKey::new(ip("::ffff:192.0.2.1"), 32, 64),
            IpKey::new(ip("192.0.2.1"), 32, 64)
        );
        let client = ClientIp::new().trust("10.0.0.0/8".parse().unwrap());
        assert!(client.is_trusted(ip("::ffff:10.1.1.1")));
        // A trusted network written in its mapped form is the same network.
        let client = ClientIp::new().trust("::ffff:10.0.0.0/104".parse().unwrap());
        assert!(client.is_trusted(ip("10.1.1.1")));
        assert!(client.is_trusted(ip("::ffff:10.1.1.1")));
        assert!(!client.is_trusted(ip("11.0.0.1")));
        let peer = ip("10.0.0.1");
        assert_eq!(
            client.client_addr(peer, &xff("203.0.113.5, 10.9.9.9")),
            ip("203.0.113.5")
        );
        // Shorter prefixes reach past the mapped range: left as IPv6.
        let client = ClientIp::new().trust("::/64".parse().unwrap());
        assert!(!client.is_trusted(ip("10.1.1.1")));
    }

    #[test]
    fn nothing_is_trusted_by_default() {
        let client = ClientIp::new();
        let peer = ip("198.51.100.1");
        assert_eq!(client.client_addr(peer, &xff("1.1.1.1")), peer);
        assert!(!client.is_trusted(ip("127.0.0.1")));
    }

    #[test]
    fn trusted_hops_are_skipped_from_the_right() {
        let client = ClientIp::new()
            .trust("10.0.0.0/8".parse().unwrap())
            .trust("2001:db8:ffff::/48".parse().unwrap());
        let peer = ip("10.0.0.1");
        assert_eq!(
            client.client_addr(
                peer,
                &xff("6.6.6.6, 203.0.113.5, 2001:db8:ffff::2, 10.9.9.9")
            ),
            ip("203.0.113.5")
        );
        // Every hop trusted: the left-most one.
        assert_eq!(
            client.client_addr(peer, &xff("10.1.1.1, 10.2.2.2")),
            ip("10.1.1.1")
        );
        // At most 32 hops are read: past them, the 32nd from the right.
        let chain: Vec<String> = (1..=40).map(|n| format!("10.0.0.{n}")).collect();
        assert_eq!(
            client.client_addr(peer, &xff(&chain.join(", "))),
            ip("10.0.0.9")
        );
        // No header: the peer.
        assert_eq!(client.client_addr(peer, &HeaderMap::new()), peer);
        // An unusable entry: the last trusted hop, never what lies left of it.
        assert_eq!(
            client.client_addr(peer, &xff("6.6.6.6, garbage, 10.2.2.2")),
            ip("10.2.2.2")
        );
        assert_eq!(client.client_addr(peer, &xff("6.6.6.6, garbage")), peer);
    }

    #[test]
    fn an_untrusted_peer_is_the_key_whatever_the_header() {
        let client = ClientIp::new().trust("10.0.0.0/8".parse().unwrap());
        let peer = ip("203.0.113.99");
        assert_eq!(client.client_addr(peer, &xff("10.0.0.5, 1.2.3.4")), peer);
    }

    #[test]
    fn forwarded_header_is_supported() {
        let client = ClientIp::new()
            .trust("10.0.0.0/8".parse().unwrap())
            .header(ForwardedHeader::Forwarded);
        let mut headers = HeaderMap::new();
        headers.insert(
            "forwarded",
            "for=6.6.6.6, for=\"[2001:db8::5]:1234\";proto=https, for=10.3.3.3"
                .parse()
                .unwrap(),
        );
        // X-Forwarded-For is ignored when Forwarded is configured.
        headers.insert("x-forwarded-for", "9.9.9.9".parse().unwrap());
        assert_eq!(
            client.client_addr(ip("10.0.0.1"), &headers),
            ip("2001:db8::5")
        );
    }

    #[test]
    fn peer_comes_from_extensions() {
        let mut request = http::Request::new(());
        assert_eq!(peer_ip(&request), None);
        request.extensions_mut().insert(ip("192.0.2.4"));
        assert_eq!(peer_ip(&request), Some(ip("192.0.2.4")));
        request
            .extensions_mut()
            .insert("192.0.2.5:443".parse::<SocketAddr>().unwrap());
        assert_eq!(peer_ip(&request), Some(ip("192.0.2.5")));
    }

    #[cfg(feature = "axum")]
    #[test]
    fn peer_comes_from_axum_connect_info() {
        let mut request = http::Request::new(());
        request.extensions_mut().insert(axum::extract::ConnectInfo(
            "192.0.2.6:80".parse::<SocketAddr>().unwrap(),
        ));
        assert_eq!(peer_ip(&request), Some(ip("192.0.2.6")));
    }
}

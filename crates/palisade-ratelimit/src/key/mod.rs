//! What a rate limiter keys requests by.
//!
//! An [`ExtractKey`] implementation reads a key from a request; the limiter hashes it
//! with a per-limiter random seed and keeps one bucket per hash. The
//! extractors provided:
//!
//! | extractor | key | request type |
//! |---|---|---|
//! | [`Global`] (the default) | none: one bucket for every request | any |
//! | [`PeerIp`] | the peer's IP address (IPv6 by prefix, /64 by default) | `http::Request<B>` |
//! | [`ClientIp`] | the client's address behind trusted proxies | `http::Request<B>` |
//! | [`HeaderKey`] | a header's value, such as an API key | `http::Request<B>` |
//! | [`KeyFn`] | whatever a closure returns | any |
//!
//! The peer address comes from the request's extensions: a
//! [`SocketAddr`](std::net::SocketAddr) or [`IpAddr`](std::net::IpAddr)
//! the server put there, with the `axum` feature axum's
//! `ConnectInfo<SocketAddr>`, and with the `tonic` feature a tonic
//! server's `TcpConnectInfo` (see [`peer_ip`]).
//!
//! When no key can be extracted (no peer address, no such header, the
//! closure returns `None`), the layer applies its
//! [`OnMissingKey`](crate::OnMissingKey) policy.
//!
//! # Example
//!
//! Keying by client address behind a load balancer at `10.0.0.0/8`:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use palisade_ratelimit::key::{ClientIp, ExtractKey};
//!
//! let client_ip = ClientIp::new().trust("10.0.0.0/8".parse().unwrap());
//!
//! let mut request = http::Request::new(());
//! request.extensions_mut().insert("10.1.2.3:40000".parse::<SocketAddr>().unwrap());
//! request.headers_mut().insert("x-forwarded-for", "198.51.100.7, 10.4.4.4".parse().unwrap());
//!
//! // The load balancer and the proxy it names are trusted; the key is the
//! // right-most untrusted address.
//! let key = client_ip.extract(&request).unwrap();
//! assert_eq!(key.to_string(), "198.51.100.7");
//! ```

mod forwarded;
mod ip;

use std::fmt;
use std::hash::Hash;

use http::HeaderName;
use palisade_core::config::Validate;
use palisade_core::{ConfigError, KeyKind};

pub use self::forwarded::ForwardedHeader;
pub use self::ip::{ClientIp, IpKey, PeerIp, peer_ip};

/// What every key extractor tells the layer when it is built: the kind of
/// key, and whether its settings are valid.
///
/// Split from [`ExtractKey`] because the builder checks it before it knows
/// the request type.
pub trait KeyExtractor: Send + Sync + 'static {
    /// What the key is, for rejections and metrics.
    /// [`KeyKind::Global`] makes the limiter a single bucket that never
    /// calls [`extract`](ExtractKey::extract).
    fn kind(&self) -> KeyKind;

    /// Checks the extractor's settings when the layer is built.
    fn validate(&self, check: &Validate<'_>) -> Result<(), ConfigError> {
        let _ = check;
        Ok(())
    }
}

/// Reads a rate-limit key from a request of type `Req`.
///
/// The key is borrowed from the request where it can be (a header's bytes),
/// so extraction allocates nothing; the limiter only hashes it.
pub trait ExtractKey<Req>: KeyExtractor {
    /// The key, possibly borrowed from the request.
    type Key<'r>: Hash
    where
        Self: 'r,
        Req: 'r;

    /// The key of `request`, or `None` when it has none.
    fn extract<'r>(&'r self, request: &'r Req) -> Option<Self::Key<'r>>;

    /// The key, as [`extract`](Self::extract) gives it, and the name of a
    /// header read for it that was malformed and ignored, which the
    /// limiter reports as
    /// [`Event::MalformedHeader`](palisade_core::Event::MalformedHeader).
    /// [`ClientIp`] names its forwarding header; the default names none.
    fn extract_checked<'r>(
        &'r self,
        request: &'r Req,
    ) -> (Option<Self::Key<'r>>, Option<&'static str>) {
        (self.extract(request), None)
    }
}

/// No key: one bucket shared by every request. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct Global;

impl KeyExtractor for Global {
    fn kind(&self) -> KeyKind {
        KeyKind::Global
    }
}

impl<Req> ExtractKey<Req> for Global {
    type Key<'r>
        = ()
    where
        Req: 'r;

    fn extract<'r>(&'r self, _request: &'r Req) -> Option<()> {
        Some(())
    }
}

/// Keys requests by a header's value, such as an API key or a tenant id.
///
/// A request without the header, or with an empty value, has no key. When
/// the header appears several times, the first value is the key.
///
/// Only key by a header that something upstream vouches for (an API key
/// checked by an earlier layer, a tenant header set by a gateway): a client
/// that can choose the header chooses its bucket.
#[derive(Clone, Debug)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }

    /// The header read.
    pub fn name(&self) -> &HeaderName {
        &self.name
    }
}

impl KeyExtractor for HeaderKey {
    fn kind(&self) -> KeyKind {
        KeyKind::Header
    }
}

impl<B> ExtractKey<http::Request<B>> for HeaderKey {
    type Key<'r>
        = &'r [u8]
    where
        B: 'r;

    fn extract<'r>(&'r self, request: &'r http::Request<B>) -> Option<&'r [u8]> {
        request
            .headers()
            .get(&self.name)
            .map(http::HeaderValue::as_bytes)
            .filter(|value| !value.is_empty())
    }
}

/// Keys requests by what a closure returns; `None` means no key.
///
/// Works for any request type, so the plain (non-HTTP) layer can key
/// messages, jobs or gRPC calls.
///
/// ```
/// use palisade_ratelimit::key::{ExtractKey, KeyFn};
///
/// struct Job { tenant: u64 }
///
/// let by_tenant = KeyFn::new(|job: &Job| Some(job.tenant));
/// assert_eq!(by_tenant.extract(&Job { tenant: 7 }), Some(7));
/// ```
#[derive(Clone)]
pub struct KeyFn<F> {
    f: F,
}

impl<F> KeyFn<F> {
    /// Keys by `f`'s answer.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for KeyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyFn").finish_non_exhaustive()
    }
}

impl<F> KeyExtractor for KeyFn<F>
where
    F: Send + Sync + 'static,
{
    fn kind(&self) -> KeyKind {
        KeyKind::Custom
    }
}

impl<Req, F, K> ExtractKey<Req> for KeyFn<F>
where
    F: Fn(&Req) -> Option<K> + Send + Sync + 'static,
    K: Hash,
{
    type Key<'r>
        = K
    where
        Req: 'r;

    fn extract<'r>(&'r self, request: &'r Req) -> Option<K> {
        (self.f)(request)
    }
}

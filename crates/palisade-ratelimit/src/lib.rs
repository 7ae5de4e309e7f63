//! Rate limiting for tower services on [governor]'s GCRA: one global
//! bucket or one bucket per key, in bounded memory, with honest headers.
//!
//! [`RateLimitLayer`] admits `requests` per `period` on average, with a
//! burst, and refuses the rest with [`RateLimited`](error::RateLimited),
//! which carries how long to wait, the policy name and which bucket said
//! no. It can also hold a limited request for a while instead
//! ([`Mode::Wait`]).
//!
//! - **One policy per layer.** The limiter is created when the layer is
//!   built; every service the layer makes, and every clone, share it.
//! - **Keys** ([`key`]): the peer address, the client address behind
//!   trusted proxies (nothing trusted by default), a header, or a closure;
//!   IPv6 clients by prefix (/64 by default). A request without a key is
//!   charged to a shared bucket, rejected, or allowed ([`OnMissingKey`]).
//! - **Bounded memory.** Keys live in a fixed, lock-free table allocated
//!   when the layer is built (40 bytes per key of capacity). Lock-free
//!   where the CPU has a 128-bit compare-and-swap (x86-64 with
//!   `cmpxchg16b`, checked at run time, and AArch64); elsewhere
//!   `portable-atomic` guards each slot with a lock from a small global
//!   set, which stays correct but serialises colliding updates. Keys whose
//!   bucket is full again are evicted as new keys arrive; at the cap, new
//!   keys share one overflow bucket. See [Memory](#memory).
//! - **Cheap decisions.** An admission reads the clock once and does one
//!   compare-and-swap: no lock, no allocation. A rejection costs the same
//!   plus the boxed error.
//! - **Headers** ([`headers`]): opt-in IETF draft `RateLimit-Policy` /
//!   `RateLimit` or legacy `X-RateLimit-*` on admitted responses, and
//!   [`retry_after_seconds`] for the `Retry-After` of rejections, which the
//!   HTTP mapping in `palisade-http` answers with 429.
//! - **Events**: [`Event::Admitted`](palisade_core::Event::Admitted),
//!   [`Event::Rejected`](palisade_core::Event::Rejected),
//!   [`Event::KeysTracked`](palisade_core::Event::KeysTracked),
//!   [`Event::KeysEvicted`](palisade_core::Event::KeysEvicted),
//!   [`Event::OverflowUsed`](palisade_core::Event::OverflowUsed) and, for a
//!   malformed header read for the key,
//!   [`Event::MalformedHeader`](palisade_core::Event::MalformedHeader), with
//!   the layer's policy name.
//!
//! # Example
//!
//! Ten requests per second per client, in bursts of up to twenty, behind a
//! load balancer in `10.0.0.0/8`, with the draft headers:
//!
//! ```
//! use std::net::SocketAddr;
//! use std::time::Duration;
//! use http::{Request, Response};
//! use palisade_ratelimit::key::ClientIp;
//! use palisade_ratelimit::{HeaderStyle, RateLimitLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RateLimitLayer::builder()
//!     .name("api")
//!     .quota(10, Duration::from_secs(1))
//!     .burst(20)
//!     .keyed_by(ClientIp::new().trust("10.0.0.0/8".parse().unwrap()))
//!     .headers(HeaderStyle::Draft)
//!     .build()
//!     .unwrap();
//!
//! let svc = layer.layer(service_fn(|_req: Request<()>| async {
//!     Ok::<_, std::convert::Infallible>(Response::new(()))
//! }));
//!
//! let mut request = Request::new(());
//! request.extensions_mut().insert("10.0.0.1:5000".parse::<SocketAddr>().unwrap());
//! request.headers_mut().insert("x-forwarded-for", "198.51.100.7".parse().unwrap());
//! let response = svc.oneshot(request).await.unwrap();
//! assert_eq!(response.headers()["ratelimit-policy"], r#""api";q=20;w=2"#);
//! assert_eq!(response.headers()["ratelimit"], r#""api";r=19;t=1"#);
//! # }
//! ```
//!
//! # Memory
#![doc = include_str!("../docs/memory.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod clock;
pub mod headers;
pub mod key;
mod limiter;
mod rate_limit;
mod sync;
mod table;

pub use self::headers::{HeaderStyle, RateLimitHeaders};
pub use self::limiter::{Admission, Limiter};
pub use self::rate_limit::{
    Mode, OnMissingKey, RateLimit, RateLimitBuilder, RateLimitLayer, error, future,
};
pub use palisade_core::error::retry_after_seconds;

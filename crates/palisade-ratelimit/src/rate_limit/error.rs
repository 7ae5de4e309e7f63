//! The errors a [`RateLimit`](super::RateLimit) service returns.
//!
//! Rejections are palisade's shared types, so callers and the HTTP mapping
//! test `err.is::<RateLimited>()` whichever layer produced them:
//!
//! - [`RateLimited`]: the bucket was empty; `retry_after` says how long
//!   until a request with the same key would be admitted, and `key_kind`
//!   which bucket refused (a key, the shared fallback or overflow bucket,
//!   or the global one). HTTP: 429 with `Retry-After`; gRPC:
//!   `RESOURCE_EXHAUSTED`.
//! - [`MissingKey`]: no key could be extracted and the layer is
//!   configured to reject such requests. HTTP: 400; gRPC:
//!   `INVALID_ARGUMENT`.
//!
//! Errors of the inner service pass through unchanged, boxed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_ratelimit::error::{BoxError, RateLimited};
//! use palisade_core::{KeyKind, PolicyName};
//!
//! let err: BoxError = RateLimited::new(PolicyName::new("api"), Duration::from_secs(2), KeyKind::PeerIp).into();
//! let limited = err.downcast_ref::<RateLimited>().unwrap();
//! assert_eq!(limited.retry_after(), Duration::from_secs(2));
//! assert_eq!(limited.key_kind(), KeyKind::PeerIp);
//! ```

pub use palisade_core::{BoxError, MissingKey, RateLimited};

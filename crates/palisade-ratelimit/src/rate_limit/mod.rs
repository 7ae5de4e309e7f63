//! The rate-limit middleware: [`RateLimitLayer`] and [`RateLimit`].
//!
//! See the [crate documentation](crate) for an overview and examples.

pub mod error;
pub mod future;
mod layer;
mod service;

pub use self::layer::{Mode, OnMissingKey, RateLimitBuilder, RateLimitLayer};
pub use self::service::RateLimit;

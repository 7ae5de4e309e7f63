//! Errors of the fallback layer.
//!
//! An error the fallback does not handle passes through unchanged. When
//! the fallback's source fails, its error is returned as the source gave
//! it, except when the fallback was answering for a palisade rejection:
//! then the caller gets [`FallbackFailed`], which keeps that rejection in
//! its chain, so a rate-limited request whose fallback failed is still
//! answered as rate limited (429 with `Retry-After`, or
//! `RESOURCE_EXHAUSTED`), not as a server error. The palisade rejections
//! it may handle are re-exported here for matching.

use std::error::Error;
use std::fmt;

use palisade_core::PolicyName;
pub use palisade_core::{
    BoxError, CircuitOpen, Elapsed, MissingKey, Overloaded, Panicked, RateLimited, Rejection,
    find_rejection,
};

/// The fallback's source failed while it answered for a palisade
/// rejection.
///
/// Its [`source`](Error::source) is that rejection, so
/// [`find_rejection`] and the HTTP and gRPC mappings of `palisade-http`
/// (which search the chain) answer the caller as the rejection says. The
/// source's own error is [`fallback_error`](Self::fallback_error), and was
/// logged as a `tracing` warning when it happened.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{find_rejection, BoxError, KeyKind, PolicyName, RateLimited};
/// use palisade_fallback::error::FallbackFailed;
/// use palisade_fallback::{source, Cause, FallbackLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let limited = service_fn(|_: ()| async {
///     Err::<String, BoxError>(
///         RateLimited::new(PolicyName::new("api"), Duration::from_secs(1), KeyKind::Global).into(),
///     )
/// });
/// let fallback = FallbackLayer::builder(source::from_async_fn(|_: Cause<String>| async {
///     Err::<String, _>(std::io::Error::other("the cache is down"))
/// }))
/// .build()
/// .unwrap();
///
/// let err = fallback.layer(limited).oneshot(()).await.unwrap_err();
/// let failed = err.downcast_ref::<FallbackFailed>().unwrap();
/// assert_eq!(failed.fallback_error().to_string(), "the cache is down");
/// assert!(find_rejection(&*err).unwrap().retry_after().is_some());
/// # }
/// ```
#[derive(Debug)]
pub struct FallbackFailed {
    policy: PolicyName,
    rejection: BoxError,
    error: BoxError,
}

impl FallbackFailed {
    pub(crate) fn new(policy: PolicyName, rejection: BoxError, error: BoxError) -> Self {
        Self {
            policy,
            rejection,
            error,
        }
    }

    /// The fallback layer's policy.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The error the fallback's source answered with.
    pub fn fallback_error(&self) -> &(dyn Error + Send + Sync + 'static) {
        &*self.error
    }

    /// The rejection the fallback was answering for.
    pub fn rejection(&self) -> Option<Rejection<'_>> {
        find_rejection(&*self.rejection)
    }

    /// Splits it into the rejection and the source's error.
    pub fn into_parts(self) -> (BoxError, BoxError) {
        (self.rejection, self.error)
    }
}

impl fmt::Display for FallbackFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fallback {:?} failed ({}) standing in for: {}",
            self.policy.as_str(),
            self.error,
            self.rejection
        )
    }
}

impl Error for FallbackFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.rejection)
    }
}

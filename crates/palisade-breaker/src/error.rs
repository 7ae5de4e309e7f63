//! The errors a circuit breaker returns.
//!
//! A refused call fails with [`CircuitOpen`], which says which policy
//! refused, in which state ([`CircuitState::Open`],
//! [`CircuitState::HalfOpen`] with every probe slot taken, or
//! [`CircuitState::ForcedOpen`]) and, while open, how long until probes are
//! let through. Errors of the inner service pass through as they are.
//!
//! # Example
//!
//! ```
//! use palisade_breaker::error::{CircuitOpen, CircuitState};
//! use palisade_breaker::CircuitBreakerLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder().build().unwrap();
//! layer.handle().force_open();
//! let svc = layer.layer(service_fn(|()| async { Ok::<_, std::io::Error>("hi") }));
//!
//! let err = svc.oneshot(()).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.state(), CircuitState::ForcedOpen);
//! assert_eq!(open.retry_after(), None);
//! # }
//! ```

pub use palisade_core::{BoxError, CircuitOpen, CircuitState, RejectReason};

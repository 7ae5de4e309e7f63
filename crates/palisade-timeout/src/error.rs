//! The error a [`Timeout`](crate::Timeout) returns when a call runs past
//! its deadline.
//!
//! The rejection is palisade's shared [`Elapsed`] type, re-exported here:
//! it carries the policy name and the deadline that was applied. Errors of
//! the inner service pass through unchanged, boxed.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::error::Elapsed;
//! use palisade_timeout::TimeoutLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = TimeoutLayer::builder().timeout(Duration::from_millis(100)).name("api").build().unwrap();
//! let svc = layer.layer(service_fn(|_: ()| async {
//!     tokio::time::sleep(Duration::from_secs(1)).await;
//!     Ok::<_, std::convert::Infallible>(())
//! }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! let elapsed = err.downcast_ref::<Elapsed>().unwrap();
//! assert_eq!(elapsed.timeout(), Duration::from_millis(100));
//! assert_eq!(elapsed.policy(), "api");
//! # }
//! ```

pub use palisade_core::{BoxError, Elapsed};

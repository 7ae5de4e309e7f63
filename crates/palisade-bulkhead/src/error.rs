//! The error a [`Bulkhead`](crate::Bulkhead) returns when it refuses a
//! request.
//!
//! The rejection is palisade's shared [`Overloaded`] type, re-exported
//! here. It names the policy, the limit in force when the request was
//! refused (the current value of an adaptive limit) and why:
//! [`OverloadKind::Full`] (every slot taken, no waiting allowed),
//! [`OverloadKind::QueueFull`] or [`OverloadKind::WaitTimedOut`]. Errors
//! of the inner service pass through unchanged, boxed.
//!
//! # Example
//!
//! ```
//! use palisade_bulkhead::BulkheadLayer;
//! use palisade_bulkhead::error::{OverloadKind, Overloaded};
//! use tower::{service_fn, Layer, Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = BulkheadLayer::builder().name("db").max_concurrent(1).build().unwrap();
//! let mut svc = layer.layer(service_fn(|_: ()| async {
//!     std::future::pending::<()>().await;
//!     Ok::<_, std::convert::Infallible>(())
//! }));
//!
//! let _running = svc.ready().await.unwrap().call(());
//! let err = svc.ready().await.unwrap().call(()).await.unwrap_err();
//! let overloaded = err.downcast_ref::<Overloaded>().unwrap();
//! assert_eq!(overloaded.kind(), OverloadKind::Full);
//! assert_eq!(overloaded.limit(), 1);
//! assert_eq!(overloaded.policy(), "db");
//! # }
//! ```

pub use palisade_core::{BoxError, OverloadKind, Overloaded};

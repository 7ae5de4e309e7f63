//! The error the tower flavour returns for a caught panic.
//!
//! [`Panicked`] is palisade's shared rejection type: callers test
//! `err.is::<Panicked>()` on the `BoxError`, or find it anywhere in an
//! error chain with [`palisade_core::find_rejection`].
//!
//! ```
//! use palisade_panic::error::Panicked;
//! use palisade_panic::CatchPanicLayer;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = CatchPanicLayer::new().layer(service_fn(|_: ()| async {
//!     if true {
//!         panic!("lost the database handle");
//!     }
//!     Ok::<_, std::io::Error>(())
//! }));
//! let err = svc.oneshot(()).await.unwrap_err();
//! let panicked = err.downcast_ref::<Panicked>().unwrap();
//! assert_eq!(panicked.message(), "lost the database handle");
//! assert!(panicked.location().is_some());
//! # }
//! ```

pub use palisade_core::{BoxError, ConfigError, PanicLocation, Panicked};

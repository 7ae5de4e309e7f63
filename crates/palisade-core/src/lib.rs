//! The contracts every palisade layer keeps.
//!
//! `palisade-core` holds what the layers share, so that each layer crate
//! depends on this crate and on nothing else of palisade:
//!
//! - [`metrics`]: the [`MetricsSink`] trait every layer reports to, the
//!   [`Event`]s it receives, a no-op sink and a fan-out to several sinks.
//! - [`PolicyName`]: the name of a layer instance, carried by its events and
//!   its rejections.
//! - [`error`]: the rejection errors ([`Elapsed`], [`RateLimited`],
//!   [`CircuitOpen`], [`Overloaded`], [`Panicked`], [`MissingKey`]) and
//!   [`find_rejection`], which finds one anywhere in an error's
//!   `source()` chain.
//! - [`classify`]: deciding whether a finished call was a success, a
//!   failure or neither, for plain results, HTTP responses and gRPC
//!   responses whose status may only arrive in trailers.
//! - [`clock`]: how layers read time, so every time rule can be driven by
//!   virtual time in tests.
//! - [`ConfigError`]: the typed error every builder returns for an invalid
//!   value, and [`config::Validate`], the checks builders share.
//! - [`queue`]: how a bulkhead tells the layers above it how long a call
//!   waited in its queue, so that a breaker does not time the wait as the
//!   service's.
//! - [`shared`]: the state a layer shares with its services and calls,
//!   reached by counted references or, once the layer is leaked, by plain
//!   ones.
//! - [`panic`](mod@panic): the panic hook and capture scope that the panic-catch layer
//!   and supervised tasks use to record a panic's location and backtrace.
//!
//! # Example
//!
//! A sink that counts rejections, installed next to another sink:
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use std::sync::Arc;
//! use palisade_core::{Event, Fanout, LayerKind, Metrics, MetricsSink, NoopSink, RejectReason};
//!
//! #[derive(Debug, Default)]
//! struct CountRejections(AtomicU64);
//!
//! impl MetricsSink for CountRejections {
//!     fn record(&self, event: &Event<'_>) {
//!         if let Event::Rejected { .. } = event {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let counter = Arc::new(CountRejections::default());
//! let metrics = Metrics::new(Fanout::new().with(counter.clone()).with(NoopSink));
//!
//! metrics.emit(&Event::Rejected {
//!     policy: "checkout",
//!     layer: LayerKind::RateLimit,
//!     reason: RejectReason::RateLimited,
//! });
//! assert_eq!(counter.0.load(Ordering::Relaxed), 1);
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod classify;
pub mod clock;
pub mod config;
pub mod deadline;
pub mod error;
pub mod metrics;
pub mod panic;
mod policy;
pub mod protocol;
pub mod queue;
pub mod shared;

pub use self::classify::{Classify, Outcome, RecordOutcome};
pub use self::clock::{Clock, ManualClock, Origin};
pub use self::config::ConfigError;
pub use self::error::{
    BoxError, CircuitOpen, Elapsed, MissingKey, OverloadKind, Overloaded, PanicLocation, Panicked,
    RateLimited, Rejection, find_rejection,
};
pub use self::metrics::{
    AttemptFailure, CircuitState, DropReason, Event, FallbackTrigger, Fanout, InFlightChange,
    KeyKind, LayerKind, Metrics, MetricsSink, NoopSink, RejectReason, TaskEnd, TransitionReason,
};
pub use self::policy::PolicyName;
pub use self::shared::{Leak, SharedState};

#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(any(feature = "prometheus", feature = "snapshot"))]
mod config;
mod index;
#[cfg(any(feature = "metrics", feature = "prometheus", feature = "snapshot"))]
mod limit_word;
#[cfg(any(feature = "metrics", feature = "prometheus", feature = "snapshot"))]
mod name_map;
pub mod names;
#[cfg(any(feature = "prometheus", feature = "snapshot"))]
mod store;
// The rate window is also compiled for its loom model alone.
#[cfg(any(feature = "prometheus", feature = "snapshot", palisade_loom))]
mod sync;
#[cfg(any(feature = "prometheus", feature = "snapshot", palisade_loom))]
#[cfg_attr(
    not(any(feature = "prometheus", feature = "snapshot")),
    allow(dead_code)
)]
mod window;

#[cfg(feature = "dashboard")]
#[cfg_attr(docsrs, doc(cfg(feature = "dashboard")))]
pub mod dashboard;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod facade;
#[cfg(feature = "prometheus")]
#[cfg_attr(docsrs, doc(cfg(feature = "prometheus")))]
pub mod prometheus;
#[cfg(feature = "snapshot")]
#[cfg_attr(docsrs, doc(cfg(feature = "snapshot")))]
pub mod snapshot;
#[cfg(feature = "tracing")]
#[cfg_attr(docsrs, doc(cfg(feature = "tracing")))]
pub mod tracing;

#[cfg(feature = "metrics")]
pub use self::facade::FacadeSink;
#[cfg(feature = "prometheus")]
pub use self::prometheus::PrometheusSink;
#[cfg(feature = "snapshot")]
pub use self::snapshot::SnapshotSink;
#[cfg(feature = "tracing")]
pub use self::tracing::TracingSink;

//! Integration tests of palisade-metrics, one binary for every feature.

#[allow(dead_code, unreachable_pub)]
mod common;

#[cfg(feature = "snapshot")]
mod alloc;
#[cfg(feature = "dashboard")]
mod dashboard;
#[cfg(feature = "metrics")]
mod facade;
#[cfg(feature = "prometheus")]
mod prometheus;
#[cfg(feature = "snapshot")]
mod snapshot;
#[cfg(all(feature = "snapshot", feature = "prometheus"))]
mod stress;
#[cfg(feature = "tracing")]
mod tracing;

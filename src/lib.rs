//! Support code shared by palisade's examples, integration tests and benches.
//!
//! This package is not published. It owns `examples/`, `tests/` and
//! `benches/` at the root of the workspace.

pub mod demo;
pub mod grpc;

//! Errors of the fallback layer.
//!
//! The fallback adds no error of its own: an error it does not handle
//! passes through unchanged, and an error from the fallback source is
//! returned as the source gave it. The palisade rejections it may handle
//! are re-exported here for matching.

pub use palisade_core::{
    BoxError, CircuitOpen, Elapsed, MissingKey, Overloaded, Panicked, RateLimited, Rejection,
    find_rejection,
};

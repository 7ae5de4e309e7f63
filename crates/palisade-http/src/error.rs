//! The errors this crate maps, re-exported for matching.

pub use palisade_core::{
    BoxError, CircuitOpen, Elapsed, MissingKey, Overloaded, Panicked, RateLimited, Rejection,
    find_rejection,
};

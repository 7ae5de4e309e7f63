//! The atomics of the rate window, from std or, under `--cfg palisade_loom`,
//! from loom so its model checker can explore every interleaving.

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

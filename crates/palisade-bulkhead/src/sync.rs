//! The synchronisation primitives of the permit accounting: std's, or
//! loom's when built with `--cfg palisade_loom` so that the model checker
//! can explore every interleaving.

#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
#[cfg(palisade_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};

/// Locks `mutex`, ignoring poisoning: the data it guards is a queue of
/// waiters that is never left half-updated by a panic.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

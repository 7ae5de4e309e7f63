//! The atomics of the shared bucket and the key table, from
//! `std`/`portable-atomic` normally and from loom under
//! `--cfg palisade_loom`, so the model checker sees every interleaving of
//! their compare-and-swap protocols.

#[cfg(not(palisade_loom))]
pub(crate) use portable_atomic::AtomicU128;
#[cfg(not(palisade_loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(palisade_loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Loom has no 128-bit atomic. A mutex around a `u128` is a faithful model
/// of one: every operation below is a single linearizable step, which is
/// all the table relies on.
#[cfg(palisade_loom)]
#[derive(Debug)]
pub(crate) struct AtomicU128(loom::sync::Mutex<u128>);

#[cfg(palisade_loom)]
impl AtomicU128 {
    pub(crate) fn new(value: u128) -> Self {
        Self(loom::sync::Mutex::new(value))
    }

    pub(crate) fn load(&self, _order: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }

    pub(crate) fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        _success: Ordering,
        _failure: Ordering,
    ) -> Result<u128, u128> {
        let mut value = self.0.lock().unwrap();
        if *value == current {
            *value = new;
            Ok(current)
        } else {
            Err(*value)
        }
    }
}

/// Runs a loom model with at most three preemptions per execution (or the
/// bound `LOOM_MAX_PREEMPTIONS` sets), which keeps every model of this
/// crate to seconds while still reaching the interleavings its tests name.
#[cfg(all(test, palisade_loom))]
pub(crate) fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

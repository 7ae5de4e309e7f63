//! Dense indexes of palisade's label enums, so per-policy state can live in
//! fixed arrays of atomics instead of maps.
//!
//! Each enum is `#[non_exhaustive]` but lists every value in its `ALL`
//! constant, so the position in `ALL` is a stable, dense index that grows
//! with the enum.

// Each sink uses the indexes of the labels it renders.
#![cfg_attr(
    not(all(feature = "metrics", feature = "prometheus", feature = "snapshot")),
    allow(dead_code)
)]

use palisade_core::{
    AttemptFailure, CircuitState, DropReason, FallbackTrigger, LayerKind, Outcome, RejectReason,
    TaskEnd, TransitionReason,
};

/// Number of [`LayerKind`] values.
pub(crate) const LAYERS: usize = LayerKind::ALL.len();
/// Number of [`Outcome`] values.
pub(crate) const OUTCOMES: usize = Outcome::ALL.len();
/// Number of [`RejectReason`] values.
pub(crate) const REASONS: usize = RejectReason::ALL.len();
/// Number of [`CircuitState`] values.
pub(crate) const STATES: usize = CircuitState::ALL.len();
/// Number of [`FallbackTrigger`] values.
pub(crate) const TRIGGERS: usize = FallbackTrigger::ALL.len();
/// Number of [`TaskEnd`] values.
pub(crate) const TASK_ENDS: usize = TaskEnd::ALL.len();
/// Number of [`DropReason`] values.
pub(crate) const DROP_REASONS: usize = DropReason::ALL.len();
/// Number of [`AttemptFailure`] values.
pub(crate) const ATTEMPT_FAILURES: usize = AttemptFailure::ALL.len();

macro_rules! index_fn {
    ($(#[$meta:meta])* $name:ident, $ty:ty) => {
        $(#[$meta])*
        #[inline]
        pub(crate) fn $name(value: $ty) -> usize {
            // `ALL` lists every value, so the search always succeeds; the
            // fallback only keeps this total without a panic path.
            <$ty>::ALL.iter().position(|v| *v == value).unwrap_or(0)
        }
    };
}

index_fn!(
    /// Index of a [`LayerKind`] in [`LayerKind::ALL`].
    layer, LayerKind
);
index_fn!(
    /// Index of an [`Outcome`] in [`Outcome::ALL`].
    outcome, Outcome
);
index_fn!(
    /// Index of a [`RejectReason`] in [`RejectReason::ALL`].
    reason, RejectReason
);
index_fn!(
    /// Index of a [`CircuitState`] in [`CircuitState::ALL`].
    state, CircuitState
);
index_fn!(
    /// Index of a [`TransitionReason`] in [`TransitionReason::ALL`].
    transition_reason, TransitionReason
);
index_fn!(
    /// Index of a [`FallbackTrigger`] in [`FallbackTrigger::ALL`].
    trigger, FallbackTrigger
);
index_fn!(
    /// Index of a [`TaskEnd`] in [`TaskEnd::ALL`].
    task_end, TaskEnd
);
index_fn!(
    /// Index of a [`DropReason`] in [`DropReason::ALL`].
    drop_reason, DropReason
);

index_fn!(
    /// Index of an [`AttemptFailure`] in [`AttemptFailure::ALL`].
    attempt_failure, AttemptFailure
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_are_positions_in_all() {
        for (i, v) in LayerKind::ALL.iter().enumerate() {
            assert_eq!(layer(*v), i);
        }
        for (i, v) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(reason(*v), i);
        }
        for (i, v) in CircuitState::ALL.iter().enumerate() {
            assert_eq!(state(*v), i);
        }
        for (i, v) in Outcome::ALL.iter().enumerate() {
            assert_eq!(outcome(*v), i);
        }
        for (i, v) in DropReason::ALL.iter().enumerate() {
            assert_eq!(drop_reason(*v), i);
        }
        for (i, v) in TaskEnd::ALL.iter().enumerate() {
            assert_eq!(task_end(*v), i);
        }
        for (i, v) in FallbackTrigger::ALL.iter().enumerate() {
            assert_eq!(trigger(*v), i);
        }
        for (i, v) in TransitionReason::ALL.iter().enumerate() {
            assert_eq!(transition_reason(*v), i);
        }
        for (i, v) in AttemptFailure::ALL.iter().enumerate() {
            assert_eq!(attempt_failure(*v), i);
        }
    }
}

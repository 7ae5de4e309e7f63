//! The deadline of the calls this thread is running.
//!
//! palisade's timeout sets it around the inner service's `call` and around
//! each poll of the inner future, then puts back what was there: two
//! thread-local writes and no clock read. Users read it through
//! `palisade_timeout::Deadline::current`; layers read it with
//! [`remaining`] and [`wait_deadline`], so that a wait of their own (a
//! bulkhead's queue) never outlives the caller's deadline.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::deadline::{remaining, Scope};
//!
//! assert_eq!(remaining(), None);
//! let call = Scope::budget(2_000_000_000);
//! assert_eq!(remaining(), Some(Duration::from_secs(2)));
//! drop(call);
//! assert_eq!(remaining(), None);
//! ```

use std::cell::Cell;
use std::marker::PhantomData;
use std::time::Duration;

use tokio::time::Instant;

/// No budget set.
const UNSET: u64 = u64::MAX;

// The tightest deadline among the timeouts whose calls are running here,
// in the two forms a timeout's deadline takes: a budget in nanoseconds
// that starts counting when the call first waits (see the crate docs on
// when the clock starts) and, once it waits, an instant. They are kept
// apart so that the common case, a call that has not waited, reads and
// writes one word: a wider value written in parts and read whole would
// stall the loads that follow.
//
// Each also says whether the deadline is a remote caller's (a
// `grpc-timeout`) rather than the service's own: the budget in its lowest
// bit (`nanos << 1 | caller`), the instant beside it. The smallest wins
// either way, and on a tie the service's own, whose bit is the lower.
std::thread_local! {
    static BUDGET: Cell<u64> = const { Cell::new(UNSET) };
    static UNTIL: Cell<Option<(Instant, bool)>> = const { Cell::new(None) };
}

/// The budget word of `nanos` (held below [`UNSET`]'s), from a remote
/// caller or not.
const fn budget_word(nanos: u64, caller: bool) -> u64 {
    let nanos = if nanos > (UNSET >> 1) - 1 {
        (UNSET >> 1) - 1
    } else {
        nanos
    };
    nanos << 1 | caller as u64
}

/// The budget set on this thread, and whether it is a caller's.
fn budget() -> Option<(Duration, bool)> {
    BUDGET
        .try_with(Cell::get)
        .ok()
        .filter(|word| *word != UNSET)
        .map(|word| (Duration::from_nanos(word >> 1), word & 1 == 1))
}

/// Narrows this thread's deadline until dropped, then puts back the one
/// before, also when the inner service panics. Made by a timeout around
/// the calls it runs; `None` only while the thread is being torn down.
///
/// A scope belongs to the thread that entered it: it is neither `Send` nor
/// `Sync`, so it cannot be held across an `.await` in a future that moves
/// between threads, where it would narrow the deadline of whatever else
/// that thread ran, and put a stale one back on another thread.
///
/// ```compile_fail,E0277
/// fn send<T: Send>(_: T) {}
/// let scope = palisade_core::deadline::Scope::enter(1_000, None, false);
/// send(scope);
/// ```
#[derive(Debug)]
#[must_use = "the deadline is narrowed only while the scope lives"]
pub struct Scope(Previous, PhantomData<*const ()>);

/// What a [`Scope`] puts back.
#[derive(Debug)]
enum Previous {
    /// A call that has not waited yet narrowed the budget from this.
    Budget(u64),
    /// A call that has waited narrowed the instant from this.
    Until(Option<(Instant, bool)>),
}

impl Scope {
    /// Enters the service's own deadline for a call that has not waited
    /// yet: `nanos` from when it first does.
    #[inline]
    pub fn budget(nanos: u64) -> Option<Self> {
        Self::enter_budget(budget_word(nanos, false))
    }

    /// Enters the deadline of a call: `nanos` while its timer has not
    /// started, `until` once it has. `caller` says the deadline is the
    /// remote caller's (a `grpc-timeout` shorter than the policy's), which
    /// [`remaining_with_origin`] passes on.
    #[inline]
    pub fn enter(nanos: u64, until: Option<Instant>, caller: bool) -> Option<Self> {
        match until {
            None => Self::enter_budget(budget_word(nanos, caller)),
            Some(until) => Self::until(until, caller),
        }
    }

    #[inline]
    fn enter_budget(word: u64) -> Option<Self> {
        BUDGET
            .try_with(|budget| {
                let previous = budget.get();
                budget.set(previous.min(word));
                Self(Previous::Budget(previous), PhantomData)
            })
            .ok()
    }

    /// Enters the deadline of a call that has waited: every poll after
    /// its first.
    fn until(until: Instant, caller: bool) -> Option<Self> {
        UNTIL
            .try_with(|current| {
                let previous = current.get();
                let mine = (until, caller);
                current.set(Some(previous.map_or(mine, |outer| outer.min(mine))));
                Self(Previous::Until(previous), PhantomData)
            })
            .ok()
    }
}

impl Drop for Scope {
    #[inline]
    fn drop(&mut self) {
        match self.0 {
            Previous::Budget(previous) => {
                let _ = BUDGET.try_with(|budget| budget.set(previous));
            }
            Previous::Until(previous) => {
                let _ = UNTIL.try_with(|until| until.set(previous));
            }
        }
    }
}

/// What is left of this thread's deadline, if a timeout's call is running
/// here (`None` otherwise). A deadline whose timer has not started yet is
/// its whole budget.
pub fn remaining() -> Option<Duration> {
    remaining_with_origin().map(|(left, _)| left)
}

/// What is left of this thread's deadline, as [`remaining`], and whether
/// that deadline is a remote caller's rather than the service's own.
///
/// A client stack that follows the deadline of the call it serves marks
/// it the same way, so that a downstream call cut short by a client in a
/// hurry is not taken for a failing dependency.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::deadline::{remaining_with_origin, Scope};
///
/// let own = Scope::budget(5_000_000_000);
/// assert_eq!(remaining_with_origin(), Some((Duration::from_secs(5), false)));
/// let asked = Scope::enter(2_000_000_000, None, true);
/// assert_eq!(remaining_with_origin(), Some((Duration::from_secs(2), true)));
/// drop((asked, own));
/// ```
pub fn remaining_with_origin() -> Option<(Duration, bool)> {
    let left = UNTIL
        .try_with(Cell::get)
        .ok()
        .flatten()
        .map(|(until, caller)| (until.saturating_duration_since(Instant::now()), caller));
    match (budget(), left) {
        (Some(budget), Some(left)) => Some(budget.min(left)),
        (budget, left) => budget.or(left),
    }
}

/// When a wait of at most `max` that starts now must end: `max` from now,
/// or this thread's deadline if that comes first.
///
/// Reads the clock once. A started deadline is returned as the very
/// instant its timeout fires at, so a wait timed with
/// `tokio::time::sleep_until` on it ends no later than that timeout,
/// whatever time passes between this read and the timer's registration
/// (a duration from [`remaining`] would be added to a later reading).
/// A `max` too far away to represent is held about 30 years ahead, as
/// `tokio::time::sleep` does.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade_core::deadline::{Scope, wait_deadline};
/// use tokio::time::Instant;
///
/// let start = Instant::now();
/// let call = Scope::budget(2_000_000_000);
/// let end = wait_deadline(Duration::from_secs(10));
/// assert!(end >= start + Duration::from_secs(2));
/// assert!(end <= Instant::now() + Duration::from_secs(2));
/// drop(call);
/// ```
pub fn wait_deadline(max: Duration) -> Instant {
    let now = Instant::now();
    let after = |wait: Duration| {
        now.checked_add(wait)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365 * 30))
    };
    let mut end = after(max);
    if let Some((budget, _)) = budget() {
        end = end.min(after(budget));
    }
    if let Some((until, _)) = UNTIL.try_with(Cell::get).ok().flatten() {
        end = end.min(until);
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> u64 {
        n * 1_000_000_000
    }

    #[test]
    fn nothing_runs_outside_a_scope() {
        assert_eq!(remaining(), None);
    }

    #[test]
    fn scopes_nest_keep_the_tightest_and_unwind() {
        let outer = Scope::budget(secs(5));
        assert_eq!(remaining(), Some(Duration::from_secs(5)));
        {
            let _looser = Scope::budget(secs(9));
            assert_eq!(remaining(), Some(Duration::from_secs(5)));
            let _tighter = Scope::budget(secs(2));
            assert_eq!(remaining(), Some(Duration::from_secs(2)));
        }
        assert_eq!(remaining(), Some(Duration::from_secs(5)));
        drop(outer);
        assert_eq!(remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_deadline_counts_down_and_meets_a_budget() {
        let until = Instant::now() + Duration::from_secs(3);
        let started = Scope::enter(secs(3), Some(until), false);
        assert_eq!(remaining(), Some(Duration::from_secs(3)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(remaining(), Some(Duration::from_secs(2)));
        {
            // An inner call not yet waiting, with more budget than is left.
            let _inner = Scope::budget(secs(4));
            assert_eq!(remaining(), Some(Duration::from_secs(2)));
            let _tight = Scope::budget(500_000_000);
            assert_eq!(remaining(), Some(Duration::from_millis(500)));
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(remaining(), Some(Duration::ZERO));
        drop(started);
        assert_eq!(remaining(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_the_started_deadline_itself() {
        let start = Instant::now();
        assert_eq!(
            wait_deadline(Duration::from_secs(10)),
            start + Duration::from_secs(10)
        );
        assert!(wait_deadline(Duration::MAX) > start + Duration::from_secs(86_400 * 365));
        let until = start + Duration::from_secs(3);
        let started = Scope::enter(secs(3), Some(until), false);
        tokio::time::advance(Duration::from_millis(1_250)).await;
        // The deadline's own instant, not a duration added to a reading.
        assert_eq!(wait_deadline(Duration::from_secs(10)), until);
        assert_eq!(wait_deadline(Duration::MAX), until);
        assert_eq!(
            wait_deadline(Duration::from_secs(1)),
            Instant::now() + Duration::from_secs(1)
        );
        {
            // A call inside that has not waited: its budget from now.
            let _inner = Scope::budget(500_000_000);
            assert_eq!(
                wait_deadline(Duration::from_secs(10)),
                Instant::now() + Duration::from_millis(500)
            );
        }
        drop(started);
        assert_eq!(
            wait_deadline(Duration::from_secs(10)),
            Instant::now() + Duration::from_secs(10)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_tightest_deadline_says_whose_it_is() {
        let own = Scope::budget(secs(5));
        assert_eq!(
            remaining_with_origin(),
            Some((Duration::from_secs(5), false))
        );
        {
            let _asked = Scope::enter(secs(2), None, true);
            assert_eq!(
                remaining_with_origin(),
                Some((Duration::from_secs(2), true))
            );
            // On a tie the service's own wins.
            let _tie = Scope::budget(secs(2));
            assert_eq!(
                remaining_with_origin(),
                Some((Duration::from_secs(2), false))
            );
        }
        // A started caller's deadline, tighter than the budget.
        let until = Instant::now() + Duration::from_secs(3);
        let started = Scope::enter(secs(3), Some(until), true);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            remaining_with_origin(),
            Some((Duration::from_secs(2), true))
        );
        {
            let _own = Scope::enter(secs(1), None, false);
            assert_eq!(
                remaining_with_origin(),
                Some((Duration::from_secs(1), false))
            );
        }
        drop((started, own));
        assert_eq!(remaining_with_origin(), None);
        // The longest budget keeps its origin too.
        let huge = Scope::enter(u64::MAX, None, true);
        assert_eq!(
            remaining_with_origin().map(|(_, caller)| caller),
            Some(true)
        );
        drop(huge);
    }

    #[test]
    fn a_panic_inside_a_scope_puts_the_outer_deadline_back() {
        let _outer = Scope::budget(secs(5));
        let caught = std::panic::catch_unwind(|| {
            let _inner = Scope::budget(secs(1));
            panic!("inner service panicked");
        });
        assert!(caught.is_err());
        assert_eq!(remaining(), Some(Duration::from_secs(5)));
    }
}

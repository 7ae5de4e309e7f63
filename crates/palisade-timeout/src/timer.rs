//! The timer of a pending call, kept out of line in a slot that each thread
//! reuses.
//!
//! A response future holds only a pointer to its timer: tokio's `Sleep` is
//! 96 bytes, and a future that carried it inline would make every
//! future wrapping it (each layer above the timeout, then the caller's own)
//! that much larger to build and move, on every call, whether or not the
//! call ever waits. The slot that holds the `Sleep` is allocated once and
//! reused: when a timer is done, its `Sleep` is dropped in place (which
//! deregisters it from its runtime) and the empty slot goes back to a small
//! per-thread free list, so a call that waits takes a slot without
//! allocating once each thread has a few. Only empty slots are kept, so a
//! slot never carries anything from one runtime to another. On a
//! work-stealing runtime a slot goes back to the list of the thread that
//! drops its future, which need not be the one that took it: a thread
//! whose list runs empty allocates until it has freed slots of its own.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Sleep;

/// Empty slots each thread keeps for reuse: enough for the calls a thread
/// typically has waiting at once; a thread with more allocates the rest
/// and frees them when they end.
const KEPT_PER_THREAD: usize = 64;

type Slot = Pin<Box<Option<Sleep>>>;

std::thread_local! {
    static FREE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A timer started on its first poll, in a reused slot. Dropping it stops
/// the timer and returns the slot. One pointer wide.
pub(crate) struct Timer {
    /// `None` until started.
    slot: Option<Slot>,
}

impl Timer {
    /// A timer not started yet.
    pub(crate) const fn idle() -> Self {
        Self { slot: None }
    }

    /// Whether the timer was started.
    pub(crate) fn is_started(&self) -> bool {
        self.slot.is_some()
    }

    /// When the timer fires, once it has started.
    #[inline]
    pub(crate) fn deadline(&self) -> Option<tokio::time::Instant> {
        self.slot
            .as_ref()
            .and_then(|slot| slot.as_ref().get_ref().as_ref().map(Sleep::deadline))
    }

    /// Whether the timer was started and has fired (read from the timer's
    /// state: no clock read, no registration).
    pub(crate) fn has_fired(&self) -> bool {
        self.slot
            .as_ref()
            .and_then(|slot| slot.as_ref().get_ref().as_ref())
            .is_some_and(Sleep::is_elapsed)
    }

    /// Polls the timer, starting it on the first poll to elapse `after`
    /// from now on tokio's clock: ready once it has elapsed. `exempt` polls
    /// it outside tokio's cooperative budget.
    pub(crate) fn poll_elapsed(
        &mut self,
        after: Duration,
        exempt: bool,
        cx: &mut Context<'_>,
    ) -> Poll<()> {
        let slot = self.slot.get_or_insert_with(|| {
            let reused = FREE
                .try_with(|free| free.try_borrow_mut().ok().and_then(|mut free| free.pop()))
                .ok()
                .flatten();
            let mut slot = reused.unwrap_or_else(|| Box::pin(None));
            slot.set(Some(tokio::time::sleep(after)));
            slot
        });
        match slot.as_mut().as_pin_mut() {
            Some(sleep) if exempt => {
                std::pin::pin!(tokio::task::coop::unconstrained(sleep)).poll(cx)
            }
            Some(sleep) => sleep.poll(cx),
            // Not reachable: a started slot holds its `Sleep` until the
            // timer is dropped.
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Timer {
    #[inline]
    fn drop(&mut self) {
        // Most calls never wait: keep their drop to this one test.
        if let Some(slot) = self.slot.take() {
            give_back(slot);
        }
    }
}

/// Stops the slot's timer and keeps the slot for reuse.
#[cold]
#[inline(never)]
fn give_back(mut slot: Slot) {
    // Drop the `Sleep` in place: the slot is pinned, and an empty slot is
    // tied to no runtime.
    slot.set(None);
    // During thread teardown, or if the list is busy, the slot is freed
    // instead.
    let _ = FREE.try_with(move |free| {
        if let Ok(mut free) = free.try_borrow_mut()
            && free.len() < KEPT_PER_THREAD
        {
            free.push(slot);
        }
    });
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept() -> usize {
        FREE.with(|free| free.borrow().len())
    }

    /// A timer started by one poll.
    fn started(after: Duration) -> Timer {
        let mut timer = Timer::idle();
        let mut cx = Context::from_waker(std::task::Waker::noop());
        assert!(timer.poll_elapsed(after, false, &mut cx).is_pending());
        timer
    }

    fn slot_of(timer: &Timer) -> *const Option<Sleep> {
        &**timer.slot.as_ref().expect("started")
    }

    #[test]
    fn a_timer_is_one_pointer_wide() {
        assert_eq!(std::mem::size_of::<Timer>(), std::mem::size_of::<usize>());
    }

    #[tokio::test(start_paused = true)]
    async fn a_timer_elapses_and_its_slot_is_reused() {
        let before = kept();
        let after = Duration::from_millis(10);
        assert!(!Timer::idle().is_started());
        let mut timer = started(after);
        let slot = slot_of(&timer);
        std::future::poll_fn(|cx| timer.poll_elapsed(after, false, cx)).await;
        drop(timer);
        assert_eq!(kept(), before + 1);
        let again = started(after);
        assert_eq!(slot, slot_of(&again), "the freed slot was taken again");
        assert_eq!(kept(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thread_keeps_a_bounded_number_of_slots() {
        let timers: Vec<_> = (0..KEPT_PER_THREAD * 2)
            .map(|_| started(Duration::from_secs(1)))
            .collect();
        drop(timers);
        assert_eq!(kept(), KEPT_PER_THREAD);
    }

    #[test]
    fn a_slot_freed_on_one_runtime_serves_the_next() {
        for _ in 0..3 {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async {
                let mut timer = Timer::idle();
                std::future::poll_fn(|cx| timer.poll_elapsed(Duration::from_millis(5), false, cx))
                    .await;
            });
            assert!(kept() > 0);
        }
    }
}

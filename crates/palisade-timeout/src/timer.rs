//! The timer of a pending call, kept out of line in a slot that each thread
//! reuses.
//!
//! A response future holds only a pointer to its timer: tokio's `Sleep` is
//! about 112 bytes, and a future that carried it inline would make every
//! future wrapping it (each layer above the timeout, then the caller's own)
//! that much larger to build and move, on every call, whether or not the
//! call ever waits. The slot that holds the `Sleep` is allocated once and
//! reused: when a timer is done, its `Sleep` is dropped in place (which
//! deregisters it from its runtime) and the empty slot goes back to a small
//! per-thread free list, so a call that waits takes a slot without
//! allocating once each thread has a few. Only empty slots are kept, so a
//! slot never carries anything from one runtime to another.

use std::cell::RefCell;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use tokio::time::Sleep;

/// Empty slots each thread keeps for reuse: enough for the calls a thread
/// typically has waiting at once; a thread with more allocates the rest
/// and frees them when they end.
const KEPT_PER_THREAD: usize = 64;

type Slot = Pin<Box<Option<Sleep>>>;

std::thread_local! {
    static FREE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// A started timer in a reused slot. Dropping it stops the timer and
/// returns the slot.
pub(crate) struct Timer {
    slot: Option<Slot>,
}

impl Timer {
    /// Starts a timer that elapses `after` from now on tokio's clock.
    pub(crate) fn start(after: Duration) -> Self {
        let reused = FREE
            .try_with(|free| free.try_borrow_mut().ok().and_then(|mut free| free.pop()))
            .ok()
            .flatten();
        let mut slot = reused.unwrap_or_else(|| Box::pin(None));
        slot.set(Some(tokio::time::sleep(after)));
        Self { slot: Some(slot) }
    }

    /// Polls the timer: ready once it has elapsed.
    pub(crate) fn poll_elapsed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self
            .slot
            .as_mut()
            .and_then(|slot| slot.as_mut().as_pin_mut())
        {
            Some(sleep) => sleep.poll(cx),
            // Not reachable: a timer holds its `Sleep` until it is dropped.
            None => Poll::Ready(()),
        }
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        let Some(mut slot) = self.slot.take() else {
            return;
        };
        // Drop the `Sleep` in place: the slot is pinned, and an empty slot
        // is tied to no runtime.
        slot.set(None);
        // During thread teardown, or if the list is busy, the slot is
        // freed instead.
        let _ = FREE.try_with(move |free| {
            if let Ok(mut free) = free.try_borrow_mut()
                && free.len() < KEPT_PER_THREAD
            {
                free.push(slot);
            }
        });
    }
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

    #[tokio::test(start_paused = true)]
    async fn a_timer_elapses_and_its_slot_is_reused() {
        let before = kept();
        let mut timer = Timer::start(Duration::from_millis(10));
        let slot: *const Option<Sleep> = &**timer.slot.as_ref().unwrap();
        assert!(std::future::poll_fn(|cx| Poll::Ready(timer.poll_elapsed(cx).is_pending())).await);
        std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
        drop(timer);
        assert_eq!(kept(), before + 1);
        let again = Timer::start(Duration::from_millis(10));
        let reused: *const Option<Sleep> = &**again.slot.as_ref().unwrap();
        assert_eq!(slot, reused, "the freed slot was taken again");
        assert_eq!(kept(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_thread_keeps_a_bounded_number_of_slots() {
        let timers: Vec<_> = (0..KEPT_PER_THREAD * 2)
            .map(|_| Timer::start(Duration::from_secs(1)))
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
                let mut timer = Timer::start(Duration::from_millis(5));
                std::future::poll_fn(|cx| timer.poll_elapsed(cx)).await;
            });
            assert!(kept() > 0);
        }
    }
}

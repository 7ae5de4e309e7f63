//! Recent counts per second, for "rejections per second over the last N
//! seconds" without a lock.
//!
//! The window is a ring of one-second slots per category. Each cell packs
//! the second it counts (plus one, so that zero means empty) in its high 32
//! bits and the count in its low 32 bits, so a writer that finds a cell from
//! an older second resets and counts it in one compare-and-swap, and no
//! count is lost to a concurrent reset. Readers sum the cells whose second
//! lies in the window.
//!
//! Only events off the happy path (rejections, panics, timeouts, fallback
//! answers) are counted here, so the clock read each one needs does not
//! touch the request path of a healthy service.

use crate::sync::{AtomicU64, Ordering};

const COUNT_MASK: u64 = u32::MAX as u64;

/// Per-second counts of `categories` kinds of events over the last
/// `seconds` whole seconds plus the current one.
pub(crate) struct RateWindow {
    cells: Box<[AtomicU64]>,
    slots: u64,
    categories: usize,
}

impl RateWindow {
    /// A window of `seconds` whole seconds (at least 1).
    pub(crate) fn new(seconds: u32, categories: usize) -> Self {
        let slots = u64::from(seconds.max(1)) + 1;
        let cells = (0..slots as usize * categories)
            .map(|_| AtomicU64::new(0))
            .collect();
        Self {
            cells,
            slots,
            categories,
        }
    }

    fn cell(&self, category: usize, second: u64) -> Option<&AtomicU64> {
        if category >= self.categories {
            return None;
        }
        let slot = (second % self.slots) as usize;
        self.cells.get(slot * self.categories + category)
    }

    /// Counts one event of `category` in `second` (seconds since the
    /// window's epoch).
    pub(crate) fn record(&self, category: usize, second: u64) {
        let Some(cell) = self.cell(category, second) else {
            return;
        };
        // Seconds past u32::MAX - 1 (136 years of uptime) are not counted.
        let Some(tag) = second.checked_add(1).filter(|t| *t <= COUNT_MASK) else {
            return;
        };
        let mut current = cell.load(Ordering::Acquire);
        loop {
            let next = if current >> 32 == tag {
                // Saturate rather than carry into the tag.
                if current & COUNT_MASK == COUNT_MASK {
                    return;
                }
                current + 1
            } else if current >> 32 > tag {
                // The slot already counts a later second: this event is
                // older than the window can hold.
                return;
            } else {
                (tag << 32) | 1
            };
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// The count of `category` over the seconds `now - seconds ..= now`.
    #[cfg_attr(not(any(test, feature = "snapshot")), allow(dead_code))]
    pub(crate) fn count(&self, category: usize, now: u64) -> u64 {
        // An unknown category would index another category's cells.
        if category >= self.categories {
            return 0;
        }
        let oldest = now.saturating_sub(self.slots - 1);
        (0..self.slots)
            .filter_map(|slot| {
                let value = self
                    .cells
                    .get(slot as usize * self.categories + category)?
                    .load(Ordering::Acquire);
                let tag = value >> 32;
                let second = tag.checked_sub(1)?;
                (second >= oldest && second <= now).then_some(value & COUNT_MASK)
            })
            .sum()
    }

    /// Whole seconds the window spans besides the current one.
    pub(crate) fn seconds(&self) -> u64 {
        self.slots - 1
    }
}

impl std::fmt::Debug for RateWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateWindow")
            .field("seconds", &self.seconds())
            .field("categories", &self.categories)
            .finish()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn counts_the_last_seconds_and_forgets_older_ones() {
        let w = RateWindow::new(3, 2);
        for s in 0..10_u64 {
            for _ in 0..=s {
                w.record(0, s);
            }
        }
        w.record(1, 9);
        // Seconds 6, 7, 8 and 9 are in the window: 7 + 8 + 9 + 10.
        assert_eq!(w.count(0, 9), 34);
        assert_eq!(w.count(1, 9), 1);
        // Later, the window slides and nothing new arrives.
        assert_eq!(w.count(0, 11), 9 + 10);
        assert_eq!(w.count(0, 13), 0);
        // An event for a second older than a slot's current second is
        // dropped instead of corrupting the newer count.
        w.record(0, 20);
        w.record(0, 16);
        assert_eq!(w.count(0, 20), 1);
        // Unknown categories are ignored, and count nothing of another
        // category's cells (index 7 is category 1's cell in slot 3).
        w.record(7, 20);
        w.record(1, 19);
        assert_eq!(w.count(1, 20), 1);
        assert_eq!(w.count(7, 20), 0);
    }

    #[test]
    fn concurrent_writers_lose_no_count_within_a_second() {
        let w = std::sync::Arc::new(RateWindow::new(5, 1));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let w = w.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        w.record(0, 42);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().expect("writer finished");
        }
        assert_eq!(w.count(0, 42), 40_000);
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;

    /// Two writers in a new second race a writer in the old one: the new
    /// second's counts are exact whatever the interleaving.
    #[test]
    fn loom_reset_and_increment_lose_nothing() {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(|| {
            let w = loom::sync::Arc::new(RateWindow::new(1, 1));
            // Slot of second 0 (and of second 2, which shares it).
            w.record(0, 0);
            let a = {
                let w = w.clone();
                loom::thread::spawn(move || w.record(0, 2))
            };
            let b = {
                let w = w.clone();
                loom::thread::spawn(move || w.record(0, 2))
            };
            w.record(0, 0);
            a.join().unwrap();
            b.join().unwrap();
            // Both second-2 events are counted; the second-0 event either
            // landed before the reset (and was wiped with its second) or
            // after it (and was dropped as too old).
            assert_eq!(w.count(0, 2), 2);
        });
    }
}

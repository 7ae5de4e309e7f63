//! The concurrency limit a sink last recorded for a policy, in one word
//! with a mark set once the policy's adaptive limit has moved.
//!
//! From the first move on only `LimitChanged` events write the limit: an
//! in-flight event may carry a limit read before the latest move and
//! arrive after it. With the mark in the limit's own word, an in-flight
//! event checks it and stores its limit in one compare-and-exchange, which
//! fails if a move came in between. `0` means no limit recorded yet
//! (limits are at least 1). A limit that would reach the mark's bit (at
//! least 2^63, which no palisade layer reports) is kept as 2^63 - 1.

use std::sync::atomic::{AtomicU64, Ordering};

/// Set once an adaptive limit has moved.
const MOVED: u64 = 1 << 63;

/// The limit `word` holds, without the mark.
#[inline]
pub(crate) fn limit(word: &AtomicU64) -> u64 {
    word.load(Ordering::Relaxed) & !MOVED
}

/// Stores the `limit` an in-flight event carries, unless the word holds it
/// already or an adaptive move has marked it. Returns whether it stored:
/// a fixed limit never changes, so after the first event this is one load
/// and no write to a line every worker shares.
#[inline]
pub(crate) fn offer(word: &AtomicU64, limit: u64) -> bool {
    let limit = limit.min(!MOVED);
    let last = word.load(Ordering::Relaxed);
    last & MOVED == 0
        && last != limit
        && word
            .compare_exchange(last, limit, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
}

/// Stores the limit an adaptive move set, and marks the word.
#[inline]
pub(crate) fn moved(word: &AtomicU64, to: u64) {
    word.store(to.min(!MOVED) | MOVED, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_moved_limit_is_never_replaced_by_an_in_flight_one() {
        let word = AtomicU64::new(0);
        assert!(offer(&word, 10));
        assert!(!offer(&word, 10), "unchanged: no write");
        moved(&word, 20);
        assert!(!offer(&word, 10));
        assert_eq!(limit(&word), 20);
    }

    #[test]
    fn a_limit_that_reaches_the_mark_bit_is_clamped_not_read_as_moved() {
        let word = AtomicU64::new(0);
        assert!(offer(&word, u64::MAX));
        assert_eq!(limit(&word), !MOVED);
        assert!(offer(&word, 8), "a fixed limit still replaces it");
        assert_eq!(limit(&word), 8);
        moved(&word, u64::MAX);
        assert_eq!(limit(&word), !MOVED);
        assert!(!offer(&word, 8), "marked as moved");
    }
}

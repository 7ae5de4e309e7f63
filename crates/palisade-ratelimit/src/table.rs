//! A fixed-capacity, lock-free table of per-key GCRA states.
//!
//! The table is set-associative: a key's 64-bit hash picks one *set* of
//! [`WAYS`] slots, and the key lives in one slot of that set or nowhere.
//! Each slot is one 128-bit atomic word holding the key's hash (high half)
//! and its theoretical arrival time, the GCRA state (low half). A hash of
//! zero marks an empty slot. Because hash and state change together in one
//! compare-and-swap, a reader can never apply one key's update to another
//! key's state, whatever evictions run in between.
//!
//! - **Lookup** scans the set and updates the matching slot with a CAS
//!   loop; no lock, no allocation.
//! - **Insertion** computes the fresh state first, then claims a slot in
//!   the set with one CAS: an idle slot (a key whose bucket is full again,
//!   so forgetting it loses nothing) is taken over, otherwise an empty slot
//!   is claimed if the count of tracked keys is under the cap.
//! - **Eviction** is amortised: every insertion sweeps one more set,
//!   round-robin, and an insertion that finds the table at its cap sweeps
//!   [`ROOM_SWEEP_SETS`] sets before giving up. No background task.
//! - **Full**: when the key's set holds only active keys, or the cap is
//!   reached and nothing is idle, [`KeyTable::update`] answers `None` and
//!   the caller uses the shared overflow bucket.
//!
//! Memory is allocated once, when the table is built: `2 × cap` slots of
//! 16 bytes plus a 4-byte tag each, so 40 bytes per key of capacity, and
//! it never grows.
//!
//! Trade-offs, documented for users in `docs/memory.md`: two keys with the
//! same 64-bit hash share a bucket (the hash is seeded per limiter, so a
//! client cannot aim for a collision); and when a key is inserted by two
//! threads at once while a slot of its set turns idle, it may briefly hold
//! two slots, which lets it through once more than its quota before the
//! spare slot goes idle and is evicted. Likewise, when two threads insert
//! the same new key while the table is one key short of its cap, the one
//! whose reservation comes second may be charged to the overflow bucket.
//! Both races need a new key to arrive on two threads within nanoseconds
//! and cost at most one request's worth of accuracy. A third: eviction
//! judges idleness by the evicting thread's clock reading, so a thread
//! whose reading is older may find a key evicted just as its bucket
//! refilled and admit it as new, once, early.

use crate::sync::{AtomicU32, AtomicU128, AtomicUsize, Ordering};

/// Slots per set: eight 16-byte slots and their 4-byte tags, 160 bytes.
#[cfg(not(palisade_loom))]
pub(crate) const WAYS: usize = 8;
#[cfg(palisade_loom)]
pub(crate) const WAYS: usize = 2;

/// Slots allocated per key of capacity. At the cap the table is half full,
/// so a set of eight is rarely full of active keys.
pub(crate) const SLOTS_PER_KEY: usize = 2;

/// Sets swept by an insertion that finds the table at its cap.
pub(crate) const ROOM_SWEEP_SETS: usize = 64;

/// The memory the table takes for `cap` keys, in bytes.
pub(crate) fn table_bytes(cap: usize) -> usize {
    set_count(cap) * std::mem::size_of::<Set>()
}

fn set_count(cap: usize) -> usize {
    (cap.saturating_mul(SLOTS_PER_KEY)).div_ceil(WAYS).max(1)
}

/// One set: the slots, and a 32-bit tag per slot (the high half of the
/// hash of the key last claimed there). Tags are hints that spare a lookup
/// the 128-bit loads of a full scan: a matching tag is checked against its
/// slot, and a lookup whose tags match nothing scans the slots themselves,
/// which stay the only authority.
#[cfg_attr(not(palisade_loom), repr(align(32)))]
#[derive(Debug)]
struct Set {
    tags: [AtomicU32; WAYS],
    slots: [AtomicU128; WAYS],
}

#[inline]
fn tag_of(hash: u64) -> u32 {
    ((hash >> 32) as u32).max(1)
}

#[inline]
fn pack(hash: u64, tat: u64) -> u128 {
    (u128::from(hash) << 64) | u128::from(tat)
}

#[inline]
fn hash_of(word: u128) -> u64 {
    (word >> 64) as u64
}

#[inline]
fn tat_of(word: u128) -> u64 {
    word as u64
}

/// What an update did to the table, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Effects {
    /// A new key took a slot (an empty one or an idle one's).
    pub(crate) inserted: bool,
    /// Keys forgotten because their bucket was full again.
    pub(crate) evicted: usize,
}

/// Applies `f` to `slot`, which held `word` for `hash`, until a CAS
/// lands. `None` when the key left the slot meanwhile (evicted).
#[inline]
fn update_slot<T, E>(
    slot: &AtomicU128,
    mut word: u128,
    hash: u64,
    f: &impl Fn(u64) -> Result<(T, u64), E>,
) -> Option<Result<T, E>> {
    loop {
        let (value, next) = match f(tat_of(word)) {
            Ok(ok) => ok,
            Err(e) => return Some(Err(e)),
        };
        debug_assert_ne!(next, 0, "an arrival time is never zero");
        match slot.compare_exchange(word, pack(hash, next), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(Ok(value)),
            Err(actual) if hash_of(actual) != hash => return None,
            Err(actual) => word = actual,
        }
    }
}

/// The table. See the module documentation.
#[derive(Debug)]
pub(crate) struct KeyTable {
    sets: Box<[Set]>,
    cap: usize,
    len: AtomicUsize,
    cursor: AtomicUsize,
}

impl KeyTable {
    /// A table for at most `cap` keys (`cap >= 1`).
    pub(crate) fn new(cap: usize) -> Self {
        let sets = (0..set_count(cap))
            .map(|_| Set {
                tags: std::array::from_fn(|_| AtomicU32::new(0)),
                slots: std::array::from_fn(|_| AtomicU128::new(0)),
            })
            .collect();
        Self {
            sets,
            cap,
            len: AtomicUsize::new(0),
            cursor: AtomicUsize::new(0),
        }
    }

    /// Keys tracked now.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// The most keys the table tracks.
    pub(crate) fn cap(&self) -> usize {
        self.cap
    }

    #[inline]
    fn set_for(&self, hash: u64) -> &Set {
        // Multiply-shift maps the hash onto any number of sets without a
        // division or a power-of-two size.
        let index = ((u128::from(hash) * self.sets.len() as u128) >> 64) as usize;
        &self.sets[index]
    }

    /// Applies `f` to the state of `hash` and stores the state it returns.
    ///
    /// `f` receives the stored arrival time, or `0` for a key the table
    /// does not hold (a full bucket), and returns a value and the new
    /// arrival time (never `0`), or an error that leaves the state as it
    /// was. `now` is the current time in the same unit; a slot whose
    /// arrival time is at or before it is idle and may be evicted.
    ///
    /// Returns `None` when the key has no slot and none can be made: the
    /// caller must use a shared bucket.
    pub(crate) fn update<T, E>(
        &self,
        hash: u64,
        now: u64,
        f: impl Fn(u64) -> Result<(T, u64), E>,
        effects: &mut Effects,
    ) -> Option<Result<T, E>> {
        let hash = hash.max(1);
        let tag = tag_of(hash);
        let set = self.set_for(hash);
        // Fast path: the slots whose tag matches.
        for (slot_tag, slot) in set.tags.iter().zip(&set.slots) {
            if slot_tag.load(Ordering::Relaxed) == tag {
                let word = slot.load(Ordering::Acquire);
                if hash_of(word) == hash {
                    if let Some(result) = update_slot(slot, word, hash, &f) {
                        return Some(result);
                    }
                    break;
                }
            }
        }
        let mut swept_for_room = false;
        'retry: loop {
            let mut empty = None;
            let mut idle = None;
            for (slot_tag, slot) in set.tags.iter().zip(&set.slots) {
                let word = slot.load(Ordering::Acquire);
                let slot_hash = hash_of(word);
                if slot_hash == hash {
                    // Repair a stale tag so the next lookup is fast.
                    if slot_tag.load(Ordering::Relaxed) != tag {
                        slot_tag.store(tag, Ordering::Relaxed);
                    }
                    match update_slot(slot, word, hash, &f) {
                        Some(result) => return Some(result),
                        None => continue 'retry,
                    }
                }
                if slot_hash == 0 {
                    if empty.is_none() {
                        empty = Some((slot_tag, slot));
                    }
                } else if tat_of(word) <= now && idle.is_none() {
                    idle = Some((slot_tag, slot, word));
                }
            }

            // The key is not in the table: its bucket is full.
            let (value, next) = match f(0) {
                Ok(ok) => ok,
                Err(e) => return Some(Err(e)),
            };
            let claimed = pack(hash, next);
            if let Some((slot_tag, slot, word)) = idle {
                // Taking over an idle key's slot keeps the count unchanged.
                if slot
                    .compare_exchange(word, claimed, Ordering::AcqRel, Ordering::Acquire)
                    .is_err()
                {
                    continue 'retry;
                }
                slot_tag.store(tag, Ordering::Relaxed);
                effects.inserted = true;
                effects.evicted += 1;
                effects.evicted += self.sweep(now, 1);
                return Some(Ok(value));
            }
            let (slot_tag, slot) = empty?;
            if !self.reserve() {
                if !swept_for_room {
                    swept_for_room = true;
                    let evicted = self.sweep(now, ROOM_SWEEP_SETS);
                    effects.evicted += evicted;
                    if evicted > 0 {
                        continue 'retry;
                    }
                }
                return None;
            }
            if slot
                .compare_exchange(0, claimed, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                self.len.fetch_sub(1, Ordering::Relaxed);
                continue 'retry;
            }
            slot_tag.store(tag, Ordering::Relaxed);
            effects.inserted = true;
            effects.evicted += self.sweep(now, 1);
            return Some(Ok(value));
        }
    }

    /// Counts one more key if the cap allows it.
    fn reserve(&self) -> bool {
        self.len
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |len| {
                (len < self.cap).then_some(len + 1)
            })
            .is_ok()
    }

    /// Evicts the idle keys of the next `count` sets, round-robin. Returns
    /// how many keys were evicted.
    pub(crate) fn sweep(&self, now: u64, count: usize) -> usize {
        let sets = self.sets.len();
        let start = self.cursor.fetch_add(count, Ordering::Relaxed);
        let mut evicted = 0;
        for step in 0..count.min(sets) {
            let set = &self.sets[start.wrapping_add(step) % sets];
            for slot in &set.slots {
                let word = slot.load(Ordering::Acquire);
                if hash_of(word) != 0
                    && tat_of(word) <= now
                    && slot
                        .compare_exchange(word, 0, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                    evicted += 1;
                }
            }
        }
        evicted
    }

    /// Slots holding a key, counted one by one (tests and measurements).
    #[cfg(test)]
    pub(crate) fn occupied(&self) -> usize {
        self.sets
            .iter()
            .flat_map(|set| set.slots.iter())
            .filter(|slot| hash_of(slot.load(Ordering::Acquire)) != 0)
            .count()
    }

    /// The stored arrival time of `hash`, if the table holds it.
    #[cfg(test)]
    pub(crate) fn get(&self, hash: u64) -> Option<u64> {
        let hash = hash.max(1);
        self.set_for(hash)
            .slots
            .iter()
            .map(|slot| slot.load(Ordering::Acquire))
            .find(|word| hash_of(*word) == hash)
            .map(tat_of)
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    /// GCRA with emission interval `t` and burst `burst`, as governor runs it.
    fn gcra(now: u64, t: u64, burst: u64) -> impl Fn(u64) -> Result<((), u64), u64> {
        let tau = t * (burst - 1);
        move |tat| {
            let tat = if tat == 0 { now } else { tat };
            let earliest = tat.saturating_sub(tau);
            if now < earliest {
                Err(earliest - now)
            } else {
                Ok(((), tat.max(now) + t))
            }
        }
    }

    fn update(table: &KeyTable, hash: u64, now: u64) -> Option<Result<(), u64>> {
        table.update(hash, now, gcra(now, 10, 2), &mut Effects::default())
    }

    #[test]
    fn a_key_keeps_its_state_between_updates() {
        let table = KeyTable::new(16);
        assert_eq!(update(&table, 7, 1), Some(Ok(())));
        assert_eq!(update(&table, 7, 1), Some(Ok(())));
        // Burst of two spent: the third is refused with the exact wait.
        assert_eq!(update(&table, 7, 1), Some(Err(10)));
        assert_eq!(table.get(7), Some(21));
        assert_eq!(table.len(), 1);
        // Another key has its own bucket.
        assert_eq!(update(&table, 8, 1), Some(Ok(())));
        assert_eq!(table.len(), 2);
    }

    #[test]
    fn a_refused_update_changes_nothing() {
        let table = KeyTable::new(4);
        let refuse = |_tat: u64| Err::<((), u64), ()>(());
        assert_eq!(
            table.update(3, 0, refuse, &mut Effects::default()),
            Some(Err(()))
        );
        assert_eq!(table.len(), 0);
        assert_eq!(table.occupied(), 0);
    }

    #[test]
    fn the_cap_holds_and_idle_keys_make_room() {
        let table = KeyTable::new(8);
        let mut overflowed = 0;
        for hash in 1..=1000_u64 {
            if update(&table, hash.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0).is_none() {
                overflowed += 1;
            }
            assert!(table.len() <= 8);
            assert_eq!(table.occupied(), table.len());
        }
        assert_eq!(table.len(), 8);
        assert_eq!(overflowed, 1000 - 8);
        // Once every bucket is full again, new keys take the idle slots.
        let mut effects = Effects::default();
        let later = 1_000;
        assert_eq!(
            table.update(u64::MAX / 3, later, gcra(later, 10, 2), &mut effects),
            Some(Ok(()))
        );
        assert!(effects.inserted);
        assert!(effects.evicted >= 1);
        assert!(table.len() <= 8);
        assert_eq!(table.occupied(), table.len());
    }

    #[test]
    fn sweeps_evict_only_idle_keys() {
        let table = KeyTable::new(64);
        for hash in 1..=32_u64 {
            update(&table, hash.wrapping_mul(0x9E37_79B9_7F4A_7C15), 0);
        }
        let tracked = table.len();
        // At time 5 every bucket still waits for its arrival time 10.
        assert_eq!(table.sweep(5, 1_000), 0);
        assert_eq!(table.len(), tracked);
        assert_eq!(table.sweep(10, 1_000), tracked);
        assert_eq!(table.len(), 0);
        assert_eq!(table.occupied(), 0);
    }

    #[test]
    fn memory_is_two_slots_per_key() {
        assert_eq!(std::mem::size_of::<Set>(), 160);
        assert_eq!(table_bytes(100_000), 100_000 * 40);
        assert_eq!(table_bytes(1), 160);
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    fn admit(now: u64) -> impl Fn(u64) -> Result<((), u64), ()> {
        // A bucket of two at one per 10 time units.
        move |tat| {
            let tat = if tat == 0 { now } else { tat };
            if now < tat.saturating_sub(10) {
                Err(())
            } else {
                Ok(((), tat.max(now) + 10))
            }
        }
    }

    #[test]
    fn loom_concurrent_inserts_of_one_key_share_one_slot() {
        crate::sync::model(|| {
            // Room for two keys: at a cap of one, the thread whose
            // reservation fails first may use the overflow bucket (see the
            // module documentation).
            let table = Arc::new(KeyTable::new(2));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let table = table.clone();
                    thread::spawn(move || table.update(42, 0, admit(0), &mut Effects::default()))
                })
                .collect();
            for handle in handles {
                assert_eq!(handle.join().unwrap(), Some(Ok(())));
            }
            assert_eq!(table.len(), 1);
            assert_eq!(table.occupied(), 1);
            // Both admissions landed in the one bucket.
            assert_eq!(table.get(42), Some(20));
        });
    }

    #[test]
    fn loom_the_cap_holds_under_concurrent_inserts() {
        crate::sync::model(|| {
            let table = Arc::new(KeyTable::new(1));
            let handles: Vec<_> = [5_u64, u64::MAX - 5]
                .into_iter()
                .map(|hash| {
                    let table = table.clone();
                    thread::spawn(move || table.update(hash, 0, admit(0), &mut Effects::default()))
                })
                .collect();
            let stored = handles
                .into_iter()
                .map(|handle| handle.join().unwrap())
                .filter(Option::is_some)
                .count();
            assert_eq!(stored, 1);
            assert_eq!(table.len(), 1);
            assert_eq!(table.occupied(), 1);
        });
    }

    #[test]
    fn loom_eviction_never_moves_state_between_keys() {
        crate::sync::model(|| {
            let table = Arc::new(KeyTable::new(1));
            // Key 9 is admitted at time 0 (arrival time 10), then goes idle.
            assert_eq!(
                table.update(9, 0, admit(0), &mut Effects::default()),
                Some(Ok(()))
            );
            let sweeper = {
                let table = table.clone();
                thread::spawn(move || table.sweep(10, 1))
            };
            let newcomer = {
                let table = table.clone();
                thread::spawn(move || table.update(77, 10, admit(10), &mut Effects::default()))
            };
            let old = {
                let table = table.clone();
                thread::spawn(move || table.update(9, 10, admit(10), &mut Effects::default()))
            };
            let _ = sweeper.join().unwrap();
            let newcomer = newcomer.join().unwrap();
            let old = old.join().unwrap();
            // Whatever the interleaving, a stored key holds exactly its own
            // single admission at time 10, never the other key's.
            for (hash, result) in [(77, newcomer), (9, old)] {
                if let Some(tat) = table.get(hash) {
                    assert_eq!(result, Some(Ok(())));
                    assert_eq!(tat, 20);
                }
            }
            assert!(table.len() <= 1);
            assert_eq!(table.occupied(), table.len());
        });
    }
}

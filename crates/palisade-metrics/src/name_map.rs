//! A lock-free, append-only map from a name to per-name state.
//!
//! Sinks keep state per policy, task group or offload queue. The names come
//! from the events as borrowed `&str`, are few, and are chosen by the user
//! when a layer is built, so the map only grows at start-up. Reads run on
//! the request path: they hash the name, walk a short chain of nodes and
//! compare strings, with no lock, no write to shared memory and no
//! allocation. Only the first event of a new name allocates its node.
//!
//! Each bucket is a chain of `OnceLock` links. An insertion walks to the end
//! of its chain and tries to set the last link; when another thread set it
//! first, the walk goes on (and finds the name if that thread inserted the
//! same one), so a name is never stored twice. Nodes are never removed, so
//! a reference to a value lives as long as the map.
//!
//! The number of names is capped: a sink fed with names taken from
//! requests (a mistake that would explode metric cardinality) stops
//! tracking new names at the cap and counts the events it refused.

use std::fmt;
use std::sync::OnceLock;
#[cfg(test)]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::{AtomicU64, Ordering};

type Link<T> = OnceLock<Box<Node<T>>>;

struct Node<T> {
    name: Box<str>,
    value: T,
    next: Link<T>,
}

/// A place taken in [`NameMap::places`].
const TAKEN: u64 = 1;
/// An insertion under way in [`NameMap::places`].
const UNDER_WAY: u64 = 1 << 32;

/// Places taken, in the low half of a `places` word.
fn taken(places: u64) -> u64 {
    places & (UNDER_WAY - 1)
}

/// Insertions under way, in the high half of a `places` word.
fn under_way(places: u64) -> u64 {
    places >> 32
}

/// Ends an insertion under way when dropped: takes `done` off `places`.
struct InsertionEnd<'a> {
    places: &'a AtomicU64,
    done: u64,
}

impl Drop for InsertionEnd<'_> {
    fn drop(&mut self) {
        self.places.fetch_sub(self.done, Ordering::Release);
    }
}

/// A map from names to `T`, read without locks; see the module docs.
pub(crate) struct NameMap<T> {
    buckets: Box<[Link<T>]>,
    /// Places taken (low half) and insertions under way (high half), in
    /// one word: an insertion takes its place and announces itself in one
    /// step, and only while a place is free, so a lookup that finds the
    /// map at its cap waits for exactly the insertions that hold a place
    /// (one may be inserting its name) and never for another refused one.
    places: AtomicU64,
    cap: u64,
    refused: AtomicU64,
    /// Lookups that found the map at its cap and waited, for tests that
    /// must know a thread got there.
    #[cfg(test)]
    waited_at_cap: AtomicUsize,
    /// Insertions announced to the lookups waiting at the cap.
    #[cfg(test)]
    announced: AtomicUsize,
}

impl<T> NameMap<T> {
    /// A map with `buckets` chains (rounded up to a power of two) that
    /// tracks at most `cap` names (at most `u32::MAX`).
    pub(crate) fn new(buckets: usize, cap: usize) -> Self {
        let buckets = buckets.max(1).next_power_of_two();
        Self {
            buckets: (0..buckets).map(|_| OnceLock::new()).collect(),
            places: AtomicU64::new(0),
            cap: u64::try_from(cap).map_or(UNDER_WAY - 1, |cap| cap.min(UNDER_WAY - 1)),
            refused: AtomicU64::new(0),
            #[cfg(test)]
            waited_at_cap: AtomicUsize::new(0),
            #[cfg(test)]
            announced: AtomicUsize::new(0),
        }
    }

    fn bucket(&self, name: &str) -> &Link<T> {
        // FNV-1a: a few cycles per byte, and names are short.
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in name.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        // The mask keeps the index below the power-of-two length.
        let index = (hash as usize) & (self.buckets.len() - 1);
        &self.buckets[index]
    }

    /// The value of `name`, if it is tracked.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&T> {
        let mut link = self.bucket(name);
        while let Some(node) = link.get() {
            if *node.name == *name {
                return Some(&node.value);
            }
            link = &node.next;
        }
        None
    }

    /// The value of `name`, created with `make` the first time the name is
    /// seen. `None` when the name is new and the map is at its cap; the
    /// refusal is counted.
    #[inline]
    pub(crate) fn get_or_insert_with(&self, name: &str, make: impl FnOnce() -> T) -> Option<&T> {
        match self.get(name) {
            Some(value) => Some(value),
            None => self.insert_slow(name, make),
        }
    }

    /// While a place is free, takes one and links `name`. At the cap,
    /// `name` is tracked only if it is already linked or is being linked
    /// by an insertion under way: those are waited for (they are a few
    /// instructions from done), so an event of a name that another thread
    /// is adding is never refused. A lookup refused at the cap writes
    /// nothing but the refusal count, so it makes no one else wait.
    #[cold]
    fn insert_slow(&self, name: &str, make: impl FnOnce() -> T) -> Option<&T> {
        #[cfg(test)]
        let mut waited = false;
        let mut places = self.places.load(Ordering::Acquire);
        loop {
            if taken(places) < self.cap {
                let take = places + TAKEN + UNDER_WAY;
                match self.places.compare_exchange_weak(
                    places,
                    take,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => {
                        #[cfg(test)]
                        self.announced.fetch_add(1, Ordering::Relaxed);
                        // Ends the insertion even if `make` panics, so that
                        // no lookup at the cap waits for it forever.
                        let mut end = InsertionEnd {
                            places: &self.places,
                            done: UNDER_WAY + TAKEN,
                        };
                        let (found, stored) = self.link(name, make);
                        // An insertion that found its name linked by
                        // another gives its place back as it ends.
                        if stored {
                            end.done = UNDER_WAY;
                        }
                        return Some(found);
                    }
                    Err(now) => {
                        places = now;
                        continue;
                    }
                }
            }
            // Read after `places`: every insertion that had ended by then
            // (all of them, once none is under way) is visible to it.
            if let Some(found) = self.get(name) {
                return Some(found);
            }
            if under_way(places) == 0 {
                // Every place holds a linked name, and only an insertion
                // under way gives one back: the map stays full.
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            #[cfg(test)]
            if !std::mem::replace(&mut waited, true) {
                self.waited_at_cap.fetch_add(1, Ordering::AcqRel);
            }
            std::thread::yield_now();
            places = self.places.load(Ordering::Acquire);
        }
    }

    /// Links a node for `name` under a reservation, unless another thread
    /// linked one first; either way, the value stored for `name`, and
    /// whether this call stored it.
    fn link(&self, name: &str, make: impl FnOnce() -> T) -> (&T, bool) {
        let mut pending = Some(Box::new(Node {
            name: name.into(),
            value: make(),
            next: OnceLock::new(),
        }));
        let mut link = self.bucket(name);
        loop {
            match link.get() {
                // With `pending` still ours, another thread inserted the
                // same name first.
                Some(node) if *node.name == *name => return (&node.value, pending.is_none()),
                Some(node) => link = &node.next,
                None => {
                    if let Some(node) = pending.take() {
                        // On failure the link was set by another thread:
                        // keep our node and look at what they inserted.
                        if let Err(node) = link.set(node) {
                            pending = Some(node);
                        }
                    }
                    // `pending` is `None` only after our node was stored in
                    // this very link, which the next turn finds.
                }
            }
        }
    }

    /// How many names are tracked.
    pub(crate) fn len(&self) -> usize {
        let taken = taken(self.places.load(Ordering::Acquire)).min(self.cap);
        usize::try_from(taken).unwrap_or(usize::MAX)
    }

    /// How many lookups of a new name were refused because the map was full.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Every entry, sorted by name.
    #[cfg_attr(
        not(any(feature = "prometheus", feature = "snapshot")),
        allow(dead_code)
    )]
    pub(crate) fn entries(&self) -> Vec<(&str, &T)> {
        let mut out = Vec::with_capacity(self.len());
        for bucket in &*self.buckets {
            let mut link = bucket;
            while let Some(node) = link.get() {
                out.push((&*node.name, &node.value));
                link = &node.next;
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(b.0));
        out
    }
}

impl<T> fmt::Debug for NameMap<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NameMap")
            .field("len", &self.len())
            .field("cap", &self.cap)
            .field("refused", &self.refused())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use super::*;

    #[test]
    fn inserts_once_and_finds_again() {
        let map = NameMap::new(2, 100);
        assert!(map.get("a").is_none());
        let a = map.get_or_insert_with("a", || 1).copied();
        assert_eq!(a, Some(1));
        // A second insertion keeps the first value.
        assert_eq!(map.get_or_insert_with("a", || 2).copied(), Some(1));
        for i in 0..50 {
            let name = format!("n{i}");
            assert_eq!(map.get_or_insert_with(&name, || i).copied(), Some(i));
        }
        for i in 0..50 {
            assert_eq!(map.get(&format!("n{i}")).copied(), Some(i));
        }
        assert_eq!(map.len(), 51);
        let names: Vec<_> = map.entries().iter().map(|(n, _)| n.to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names.len(), 51);
    }

    #[test]
    fn refuses_new_names_at_the_cap_and_counts_them() {
        let map = NameMap::new(4, 2);
        assert!(map.get_or_insert_with("a", || ()).is_some());
        assert!(map.get_or_insert_with("b", || ()).is_some());
        assert!(map.get_or_insert_with("c", || ()).is_none());
        assert!(map.get_or_insert_with("d", || ()).is_none());
        // Known names are still served.
        assert!(map.get_or_insert_with("a", || ()).is_some());
        assert_eq!(map.len(), 2);
        assert_eq!(map.refused(), 2);
    }

    /// Two threads record the first event of the same name while the map
    /// has room for exactly one more: neither event is refused.
    #[test]
    fn a_name_racing_to_the_last_place_is_never_refused() {
        for round in 0..500 {
            let map = Arc::new(NameMap::<AtomicU64>::new(4, 1));
            let barrier = Arc::new(std::sync::Barrier::new(2));
            let handles: Vec<_> = (0..2)
                .map(|_| {
                    let (map, barrier) = (Arc::clone(&map), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        // A slow `make` (a sink's state is large) widens
                        // the window between reservation and link.
                        let make = || {
                            std::thread::sleep(std::time::Duration::from_micros(20));
                            AtomicU64::new(0)
                        };
                        map.get_or_insert_with("new", make)
                            .map(|count| count.fetch_add(1, Ordering::Relaxed))
                            .is_some()
                    })
                })
                .collect();
            for h in handles {
                assert!(h.join().expect("thread finished"), "round {round}");
            }
            assert_eq!(map.refused(), 0, "round {round}");
            assert_eq!(map.get("new").map(|c| c.load(Ordering::Relaxed)), Some(2));
            assert_eq!(map.len(), 1);
        }
    }

    /// A new name arrives while the map is full of reservations, two of
    /// which are for one name: once those are linked the map has room
    /// again, so the new name is tracked, not refused.
    #[test]
    fn a_new_name_is_tracked_when_a_duplicate_reservation_gives_its_place_back() {
        use std::sync::mpsc;

        let map = Arc::new(NameMap::<AtomicU64>::new(4, 3));
        assert!(map.get_or_insert_with("a", || AtomicU64::new(0)).is_some());
        let (entered_tx, entered) = mpsc::channel();
        let (release_tx, release) = mpsc::channel::<()>();
        let release = Arc::new(std::sync::Mutex::new(release));
        // Two threads reserve a place for "x" (the map is then at its cap)
        // and wait inside `make` until released.
        let inserters: Vec<_> = (0..2)
            .map(|_| {
                let (map, entered_tx, release) =
                    (Arc::clone(&map), entered_tx.clone(), Arc::clone(&release));
                std::thread::spawn(move || {
                    let make = || {
                        entered_tx.send(()).expect("test is waiting");
                        release
                            .lock()
                            .expect("not poisoned")
                            .recv()
                            .expect("released");
                        AtomicU64::new(0)
                    };
                    map.get_or_insert_with("x", make).is_some()
                })
            })
            .collect();
        let within = std::time::Duration::from_secs(30);
        entered.recv_timeout(within).expect("first reservation");
        entered.recv_timeout(within).expect("second reservation");
        let newcomer = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || map.get_or_insert_with("y", || AtomicU64::new(7)).is_some())
        };
        // Released only once "y" found the map full and waits (a test that
        // fails here drops the sender, which releases the inserters).
        let since = std::time::Instant::now();
        while map.waited_at_cap.load(Ordering::Acquire) == 0 {
            assert!(since.elapsed() < within, "\"y\" never waited at the cap");
            std::thread::yield_now();
        }
        release_tx.send(()).expect("first inserter waits");
        release_tx.send(()).expect("second inserter waits");
        for inserter in inserters {
            assert!(inserter.join().expect("inserter finished"));
        }
        assert!(
            newcomer.join().expect("newcomer finished"),
            "\"y\" was refused"
        );
        assert_eq!(map.refused(), 0);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get("y").map(|v| v.load(Ordering::Relaxed)), Some(7));
    }

    /// Lookups of new names refused at the cap announce no insertion, so
    /// a lookup waiting at the cap for an insertion under way never waits
    /// for them as well.
    #[test]
    fn refused_lookups_announce_no_insertion() {
        let map = NameMap::new(4, 1);
        assert!(map.get_or_insert_with("a", || ()).is_some());
        assert_eq!(map.announced.load(Ordering::Relaxed), 1);
        for i in 0..100 {
            assert!(map.get_or_insert_with(&format!("n{i}"), || ()).is_none());
        }
        assert_eq!(map.refused(), 100);
        assert_eq!(
            map.announced.load(Ordering::Relaxed),
            1,
            "refused lookups announced insertions"
        );
    }

    /// A `make` that panics ends its insertion and gives its place back:
    /// the next new name takes that place instead of waiting for it.
    #[test]
    fn a_panicking_make_gives_its_place_back() {
        let map = Arc::new(NameMap::new(4, 1));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            map.get_or_insert_with("a", || panic!("make failed"));
        }));
        assert!(panicked.is_err());
        let (done_tx, done) = std::sync::mpsc::channel();
        let next = {
            let map = Arc::clone(&map);
            std::thread::spawn(move || {
                let tracked = map.get_or_insert_with("b", || 7).copied();
                done_tx.send(tracked).expect("test is waiting");
            })
        };
        let tracked = done
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("\"b\" waited for an insertion that had ended");
        next.join().expect("thread finished");
        assert_eq!(tracked, Some(7));
        assert!(map.get("a").is_none());
        assert_eq!((map.len(), map.refused()), (1, 0));
    }

    /// Threads race to insert overlapping names in seeded random orders and
    /// count into them: every name is stored once and no count is lost.
    #[test]
    fn concurrent_inserts_store_each_name_once_and_lose_no_count() {
        for seed in 0..20_u64 {
            let map = Arc::new(NameMap::<AtomicU64>::new(4, 1000));
            let threads = 4;
            let per_thread = 400;
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let map = Arc::clone(&map);
                    std::thread::spawn(move || {
                        let mut rng = fastrand::Rng::with_seed(seed * 31 + t);
                        for _ in 0..per_thread {
                            let name = format!("policy-{}", rng.u8(..24));
                            map.get_or_insert_with(&name, || AtomicU64::new(0))
                                .expect("under the cap")
                                .fetch_add(1, Ordering::Relaxed);
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("thread finished");
            }
            let entries = map.entries();
            let mut names: Vec<_> = entries.iter().map(|(n, _)| *n).collect();
            names.dedup();
            assert_eq!(
                names.len(),
                entries.len(),
                "seed {seed}: a name stored twice"
            );
            assert_eq!(map.len(), entries.len());
            let total: u64 = entries.iter().map(|(_, c)| c.load(Ordering::Relaxed)).sum();
            assert_eq!(total, threads * per_thread, "seed {seed}");
        }
    }
}

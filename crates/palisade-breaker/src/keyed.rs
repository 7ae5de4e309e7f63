//! One breaker per key (for example per upstream host), with a bounded
//! number of keys.
//!
//! A key extractor `Fn(&Request) -> K` picks the breaker for each call.
//! Breakers are created on first use, from the layer's configuration, and
//! kept in a map of at most `max_keys` entries. When the map is full, a new
//! key takes the place of a breaker a later call does not rely on:
//!
//! - a closed breaker in normal mode, the least recently used of those the
//!   search below examines (recency is tracked between insertions: a
//!   breaker used since the last new key counts as just used);
//! - if the search finds none closed, the least recently used of those
//!   whose wait is over: an open breaker whose open wait has ended, or a
//!   half-open one whose
//!   [`half_open_max_wait`](crate::CircuitBreakerBuilder::half_open_max_wait)
//!   has (plus the longest open wait, if its probes would open it again).
//!   No call has reached it since, or it would have moved on. Its key, if
//!   it comes back, starts with a fresh closed breaker, without the
//!   failures and backoff of the old one; but keys that fail once and are
//!   never called again (client-chosen keys, say) cannot hold the map for
//!   good.
//!
//! An open or half-open breaker within its wait, and one an operator holds
//! in a mode, are never evicted: when the search finds no breaker it may
//! evict, the new key shares one overflow breaker.
//!
//! The search for that breaker is bounded: it examines the next 16 tracked
//! breakers from where the previous search stopped (all of them while at
//! most 16 are tracked, so the choice is then exact), and looks further,
//! up to 1,024, only while it has found none it may evict. Successive
//! searches go round the whole map. So a new key's cost is bounded however
//! many keys are tracked, and a flood of new keys cannot turn every request
//! into a scan of the map (`cargo bench -p palisade-breaker -- keyed`: a new
//! key costs about 0.8 µs with 64 keys tracked and 4 µs with 65,536, where
//! a scan of the whole map took 1.2 ms). Past 16 keys, the breaker evicted
//! is the least recently used of those examined, and a new key whose search
//! found only breakers that may not be evicted uses the overflow breaker
//! for that call.
//!
//! # Locking
//!
//! Finding a key's breaker takes the map's read lock (shared by every
//! reader: an atomic increment and decrement, no waiting while no key is
//! being inserted) and a hash of the key. Only a new key takes the write
//! lock, to insert itself and evict another. Once searches have been round
//! the whole map and found nothing to evict, new keys go straight to the
//! overflow breaker, without the write lock, until the earliest of the
//! tracked breakers' waits ends or a tracked breaker moves in a way that
//! may end one sooner (to closed, out of an operator's mode, from
//! half-open back to open, or a probe ending while its half-open period
//! goes on): an outage that opens every tracked breaker does
//! not make each new key's call stop every other. In a map of more than
//! 1,024 keys that takes several searches, each of up to 1,024 breakers,
//! with none of those moves in between. Admission and recording on the
//! breaker itself stay lock-free.
//! Size `max_keys` to the number of dependencies rather than of clients:
//! keys past it share the overflow breaker's verdict.
//!
//! Every key's breaker reports under the layer's policy name, so a backend's
//! state gauge for that name follows the latest transition of any key, and
//! its rate gauges the latest rates any key reported. Evicting a key whose
//! breaker was open or half-open reports that key's move to closed (reason
//! [`Evicted`](palisade_core::TransitionReason::Evicted)): it meets a
//! fresh breaker next time, and the gauge does not stay open with no
//! breaker open. Read one key's state with
//! [`KeyedCircuitBreakerHandle::get`].
//!
//! # Example
//!
//! ```
//! use palisade_breaker::CircuitBreakerLayer;
//! use palisade_core::CircuitState;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("upstreams")
//!     .count_window(2)
//!     .minimum_calls(2)
//!     .build_keyed(64, |host: &&'static str| *host)
//!     .unwrap();
//! let svc = layer.layer(service_fn(|host: &'static str| async move {
//!     if host == "down.example" { Err("unreachable") } else { Ok(host) }
//! }));
//!
//! for _ in 0..2 {
//!     let _ = svc.clone().oneshot("down.example").await;
//!     svc.clone().oneshot("up.example").await.unwrap();
//! }
//! let handle = layer.handle();
//! assert_eq!(handle.get(&"down.example").unwrap().state(), CircuitState::Open);
//! assert_eq!(handle.get(&"up.example").unwrap().state(), CircuitState::Closed);
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};
use std::time::Instant;

use palisade_core::clock::Origin;
use palisade_core::{BoxError, Classify, Clock, SharedState};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Breaker, Config, Eviction};
use crate::builder::DefaultClassifier;
use crate::future::{OutcomeRecorder, ResponseFuture};
use crate::handle::CircuitBreakerHandle;
use crate::sync::{
    Arc, AtomicU64, CachePadded, Ordering, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

struct Entry {
    breaker: SharedState<Breaker>,
    last_used: AtomicU64,
}

/// The tracked keys: the map, and the same keys in a vector that the search
/// for a victim walks a bounded stretch of at a time.
struct Table<K> {
    map: HashMap<K, Entry>,
    slots: Vec<K>,
    /// Where the next search for a victim starts.
    hand: usize,
    /// The searches that found nothing to evict since the last move that
    /// may have freed a place.
    barren: Barren,
}

/// A run of searches that found no breaker to evict, with no tracked
/// breaker making a move that may let it be evicted sooner in between.
#[derive(Default)]
struct Barren {
    /// The map's count of those moves when the run began.
    changes: u64,
    /// How many slots the run examined.
    examined: usize,
    /// The earliest time one of those may be evicted, if any ever may
    /// without a transition.
    next: Option<Instant>,
}

/// What a search for a breaker to evict found.
#[derive(Debug, PartialEq, Eq)]
enum Search {
    /// It removed one.
    Evicted,
    /// None in the slots it examined.
    NoneHere,
    /// None in the whole map since the last move that may have freed a
    /// place: none may be evicted before the time given (never, without
    /// such a move, if `None`).
    NoneAnywhere(Option<Instant>),
}

/// How many tracked breakers a search for a victim examines at least.
const VICTIM_SEARCH: usize = 16;

/// How many it examines at most, when the first [`VICTIM_SEARCH`] hold
/// none it may evict.
const VICTIM_SEARCH_MAX: usize = 1024;

impl<K: Hash + Eq + Clone> Table<K> {
    /// Removes a breaker that may be evicted (see [`Eviction`]) among the
    /// next [`VICTIM_SEARCH`] slots from the hand (all of them in a smaller
    /// map), looking further, up to [`VICTIM_SEARCH_MAX`], only while it
    /// has found none: the least recently used closed one, or if none is
    /// closed, the least recently used whose wait is over. The hand moves
    /// past what was examined, so successive searches go round the whole
    /// map.
    ///
    /// `changes` is the map's count of moves that may free a place (see
    /// `Breaker::apply` and `Breaker::probe_ended`), read before the search: searches that find
    /// nothing add up to [`Search::NoneAnywhere`] once they have examined
    /// every slot with none of those moves in between.
    fn evict_one(&mut self, clock: &Clock, changes: u64) -> Search {
        let len = self.slots.len();
        if len == 0 {
            return Search::NoneAnywhere(None);
        }
        if self.barren.changes != changes {
            self.barren = Barren {
                changes,
                ..Barren::default()
            };
        }
        // The clock is read only for a breaker that is not closed.
        let mut read = None;
        let mut now = || *read.get_or_insert_with(|| clock.now());
        let start = self.hand % len;
        // Closed ones rank first (0), then those whose wait is over (1);
        // within a rank, the least recently used.
        let mut best: Option<(u8, u64, usize)> = None;
        let mut next: Option<Instant> = None;
        let mut examined = 0;
        while examined < len
            && (examined < VICTIM_SEARCH || (best.is_none() && examined < VICTIM_SEARCH_MAX))
        {
            let slot = (start + examined) % len;
            examined += 1;
            let Some(entry) = self.map.get(&self.slots[slot]) else {
                continue;
            };
            let eviction = entry.breaker.eviction();
            if !eviction.allowed_at(&mut now) {
                if let Eviction::From(at) = eviction {
                    next = earliest(next, Some(at));
                }
                continue;
            }
            let rank = u8::from(eviction != Eviction::Now);
            let candidate = (rank, entry.last_used.load(Ordering::Relaxed), slot);
            best = Some(best.map_or(candidate, |best| best.min(candidate)));
        }
        self.hand = (start + examined) % len;
        let Some((_, _, victim)) = best else {
            let barren = &mut self.barren;
            barren.examined = barren.examined.saturating_add(examined);
            barren.next = earliest(barren.next, next);
            if barren.examined < len {
                return Search::NoneHere;
            }
            // The map is full until `next`. Should a search be needed
            // again (that time passed, and the breaker that held it moved
            // to a later one without a change the map hears of, as to
            // half-open), it starts a new round and learns the times the
            // breakers hold then, not this one again.
            let next = barren.next;
            *barren = Barren {
                changes,
                ..Barren::default()
            };
            return Search::NoneAnywhere(next);
        };
        // Calls reach tracked breakers without the table's lock: the
        // victim may have opened since it was examined, or may open now,
        // which the breaker's own transition lock settles.
        let evicted = self
            .map
            .get(&self.slots[victim])
            .is_some_and(|e| e.breaker.evict_if(|eviction| eviction.allowed_at(&mut now)));
        if !evicted {
            return Search::NoneHere;
        }
        let key = self.slots.swap_remove(victim);
        self.map.remove(&key);
        self.barren = Barren {
            changes,
            ..Barren::default()
        };
        Search::Evicted
    }
}

/// The earlier of two times, where `None` is never.
fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl Entry {
    #[inline]
    fn touch(&self, tick: u64) {
        if self.last_used.load(Ordering::Relaxed) < tick {
            self.last_used.store(tick, Ordering::Relaxed);
        }
    }
}

struct Breakers<K> {
    config: Config,
    max_keys: usize,
    table: RwLock<Table<K>>,
    overflow: SharedState<Breaker>,
    uses: CachePadded<AtomicU64>,
    created: AtomicU64,
    /// Moves of the tracked breakers that may let one be evicted sooner
    /// (to closed, out of an operator's mode, half-open back to open, and
    /// a probe that ends while its half-open period goes on), counted by
    /// each of them.
    changes: Arc<AtomicU64>,
    /// One more than the count of those moves at which searches found no
    /// breaker to evict anywhere in the full map; zero if they have not.
    full: AtomicU64,
    /// Until when that holds without such a move, in nanoseconds since
    /// `origin`.
    full_until: AtomicU64,
    origin: Origin,
    #[cfg(test)]
    searches: std::sync::atomic::AtomicUsize,
}

impl<K: Hash + Eq + Clone> Breakers<K> {
    fn new(mut config: Config, max_keys: usize) -> Self {
        let overflow = SharedState::new(Breaker::new(config.clone()));
        let changes = Arc::new(AtomicU64::new(0));
        config.changes = Some(changes.clone());
        Self {
            overflow,
            origin: Origin::new(config.clock.now()),
            config,
            max_keys,
            table: RwLock::new(Table {
                map: HashMap::new(),
                slots: Vec::new(),
                hand: 0,
                barren: Barren::default(),
            }),
            uses: CachePadded(AtomicU64::new(0)),
            created: AtomicU64::new(0),
            changes,
            full: AtomicU64::new(0),
            full_until: AtomicU64::new(0),
            #[cfg(test)]
            searches: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// The table, for reading. Poisoning is ignored: the worst a panicking
    /// insertion leaves is a key in `slots` without an entry, which the
    /// search for a victim skips.
    fn read(&self) -> RwLockReadGuard<'_, Table<K>> {
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The table, for inserting and evicting.
    fn write(&self) -> RwLockWriteGuard<'_, Table<K>> {
        self.table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn nanos(&self, at: Instant) -> u64 {
        self.origin.nanos(at)
    }

    /// Whether the map is known to hold no breaker a new key may replace
    /// (so a new key goes to the overflow breaker without the write lock).
    fn known_full(&self) -> bool {
        let full = self.full.load(Ordering::Acquire);
        full != 0
            && full == self.changes.load(Ordering::Acquire).wrapping_add(1)
            && self.nanos(self.config.clock.now()) < self.full_until.load(Ordering::Acquire)
    }

    fn breaker_for(&self, key: &K) -> SharedState<Breaker> {
        // Recency is counted in insertions, not calls: a lookup marks its
        // key as used only when it was not yet since the last insertion.
        // It still takes the map's read lock and clones the key's breaker
        // handle, both writes to memory that every caller of a hot key
        // shares.
        let tick = self.uses.load(Ordering::Relaxed);
        if let Some(entry) = self.read().map.get(key) {
            entry.touch(tick);
            return entry.breaker.clone();
        }
        if self.known_full() {
            return self.overflow.clone();
        }
        let mut table = self.write();
        let tick = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(entry) = table.map.get(key) {
            entry.touch(tick);
            return entry.breaker.clone();
        }
        if table.map.len() >= self.max_keys {
            if self.known_full() {
                // Marked while this call waited for the lock.
                return self.overflow.clone();
            }
            // Read before the search reads any breaker's state, so that a
            // move the search misses leaves a stale mark.
            let changes = self.changes.load(Ordering::Acquire);
            #[cfg(test)]
            self.searches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match table.evict_one(&self.config.clock, changes) {
                Search::Evicted => {}
                Search::NoneHere => return self.overflow.clone(),
                Search::NoneAnywhere(next) => {
                    let until = next.map_or(u64::MAX, |at| self.nanos(at));
                    self.full_until.store(until, Ordering::Release);
                    self.full.store(changes.wrapping_add(1), Ordering::Release);
                    return self.overflow.clone();
                }
            }
        }
        let mut config = self.config.clone();
        // Each key's jitter follows its own sequence.
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        config.seed = crate::breaker::key_seed(config.seed, n);
        let breaker = SharedState::new(Breaker::new(config));
        table.slots.push(key.clone());
        table.map.insert(
            key.clone(),
            Entry {
                breaker: breaker.clone(),
                last_used: AtomicU64::new(tick),
            },
        );
        breaker
    }
}

/// Applies one circuit breaker per key to a service. Built by
/// [`CircuitBreakerBuilder::build_keyed`](crate::CircuitBreakerBuilder::build_keyed).
///
/// Like [`CircuitBreakerLayer`](crate::CircuitBreakerLayer), the map of
/// breakers is created when the layer is built and shared by every clone
/// and every service the layer wraps.
pub struct KeyedCircuitBreakerLayer<K, F, C = DefaultClassifier> {
    breakers: Arc<Breakers<K>>,
    key: F,
    classifier: C,
}

impl<K: Hash + Eq + Clone, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    pub(crate) fn from_parts(config: Config, max_keys: usize, key: F, classifier: C) -> Self {
        Self {
            breakers: Arc::new(Breakers::new(config, max_keys)),
            key,
            classifier,
        }
    }
}

impl<K, F, C> KeyedCircuitBreakerLayer<K, F, C> {
    /// A handle to inspect and control the breakers of every key.
    pub fn handle(&self) -> KeyedCircuitBreakerHandle<K> {
        KeyedCircuitBreakerHandle {
            breakers: self.breakers.clone(),
        }
    }
}

impl<K, F: Clone, C: Clone> Clone for KeyedCircuitBreakerLayer<K, F, C> {
    fn clone(&self) -> Self {
        Self {
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<K, F, C> fmt::Debug for KeyedCircuitBreakerLayer<K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerLayer")
            .field("policy", &self.breakers.config.policy)
            .field("max_keys", &self.breakers.max_keys)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, C: Clone> Layer<S> for KeyedCircuitBreakerLayer<K, F, C> {
    type Service = KeyedCircuitBreaker<S, K, F, C>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedCircuitBreaker {
            inner,
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

/// A service guarded by one circuit breaker per key. Made by
/// [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreaker<S, K, F, C> {
    inner: S,
    breakers: Arc<Breakers<K>>,
    key: F,
    classifier: C,
}

impl<S, K, F, C> KeyedCircuitBreaker<S, K, F, C> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, K, F: Clone, C: Clone> Clone for KeyedCircuitBreaker<S, K, F, C> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            breakers: self.breakers.clone(),
            key: self.key.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, C> fmt::Debug for KeyedCircuitBreaker<S, K, F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreaker")
            .field("inner", &self.inner)
            .field("policy", &self.breakers.config.policy)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, C, Req> Service<Req> for KeyedCircuitBreaker<S, K, F, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    F: Fn(&Req) -> K,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = C::Output<OutcomeRecorder>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let breaker = self.breakers.breaker_for(&(self.key)(&req));
        match breaker.admit() {
            Ok(permit) => {
                // See `CircuitBreaker::call`.
                let recorder = OutcomeRecorder::calling(breaker, permit);
                ResponseFuture::admitted(self.inner.call(req), recorder, self.classifier.clone())
            }
            Err(refusal) => ResponseFuture::refused(breaker.refusal_error(refusal)),
        }
    }
}

/// Inspects and controls the breakers of a [`KeyedCircuitBreakerLayer`].
pub struct KeyedCircuitBreakerHandle<K> {
    breakers: Arc<Breakers<K>>,
}

impl<K> Clone for KeyedCircuitBreakerHandle<K> {
    fn clone(&self) -> Self {
        Self {
            breakers: self.breakers.clone(),
        }
    }
}

impl<K: Hash + Eq + Clone> KeyedCircuitBreakerHandle<K> {
    /// The handle of `key`'s breaker, if it is tracked.
    ///
    /// The handle stays with that breaker: once the map evicts it (which
    /// it never does to one held in a mode), the handle no longer governs
    /// the key, and a mode set through it is set on a breaker no call
    /// meets. To hold a key in a mode, use [`with`](Self::with), which
    /// keeps the map from evicting the breaker between the lookup and the
    /// change.
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.breakers
            .read()
            .map
            .get(key)
            .map(|e| CircuitBreakerHandle::new(e.breaker.to_any()))
    }

    /// Runs `f` on the handle of `key`'s breaker while the map cannot evict
    /// it, and returns what `f` returns; `None` when `key` is not tracked.
    /// A mode set in `f` then holds the key, since the map never evicts a
    /// breaker held in a mode.
    ///
    /// The map stays locked for new keys while `f` runs: `f` should only
    /// use the handle it is given, not this keyed handle.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::CircuitState;
    /// use tower::{Layer, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let layer = CircuitBreakerLayer::builder()
    ///     .build_keyed(100, |host: &&'static str| *host)
    ///     .unwrap();
    /// let svc = layer.layer(service_fn(|_: &'static str| async { Ok::<_, std::io::Error>(()) }));
    /// svc.clone().oneshot("db-1").await.unwrap();
    ///
    /// let keyed = layer.handle();
    /// let held = keyed.with(&"db-1", |breaker| {
    ///     breaker.force_open();
    ///     breaker.state()
    /// });
    /// assert_eq!(held, Some(CircuitState::ForcedOpen));
    /// assert!(svc.oneshot("db-1").await.is_err());
    /// # }
    /// ```
    pub fn with<R>(&self, key: &K, f: impl FnOnce(&CircuitBreakerHandle) -> R) -> Option<R> {
        let table = self.breakers.read();
        let handle = CircuitBreakerHandle::new(table.map.get(key)?.breaker.to_any());
        Some(f(&handle))
    }

    /// The keys tracked now.
    pub fn keys(&self) -> Vec<K> {
        self.breakers.read().map.keys().cloned().collect()
    }

    /// How many keys are tracked (at most `max_keys`).
    pub fn len(&self) -> usize {
        self.breakers.read().map.len()
    }

    /// Whether no key is tracked yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The breaker shared by new keys that find no tracked breaker they may
    /// take the place of (see the [module docs](crate::keyed)).
    pub fn overflow(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breakers.overflow.to_any())
    }
}

impl<K> fmt::Debug for KeyedCircuitBreakerHandle<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedCircuitBreakerHandle")
            .field("policy", &self.breakers.config.policy)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use palisade_core::{BoxError, ManualClock};
    use tower::{Layer, ServiceExt, service_fn};

    use crate::CircuitBreakerLayer;

    /// One call decides; an open breaker waits 10 s.
    fn builder(clock: &ManualClock) -> crate::CircuitBreakerBuilder {
        CircuitBreakerLayer::builder()
            .clock(clock.clock())
            .count_window(1)
            .minimum_calls(1)
            .open_wait(Duration::from_secs(10))
    }

    /// Keyed by the request; a request fails when it is odd.
    fn layer(clock: &ManualClock) -> super::KeyedCircuitBreakerLayer<u32, fn(&u32) -> u32> {
        builder(clock)
            .build_keyed(4, (|r: &u32| *r) as fn(&u32) -> u32)
            .unwrap()
    }

    /// Does what the request's last digit says: 1 fails, 2 stays pending
    /// until `release` is set, anything else succeeds.
    fn scripted(
        release: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> impl tower::Service<u32, Response = u32, Error = BoxError> {
        service_fn(move |r: u32| {
            let release = release.clone();
            std::future::poll_fn(move |_| match r % 10 {
                1 => std::task::Poll::Ready(Err::<u32, BoxError>("down".into())),
                2 if !release.load(Relaxed) => std::task::Poll::Pending,
                _ => std::task::Poll::Ready(Ok(r)),
            })
        })
    }

    /// Calls `svc` and polls the call once, with a waker that does nothing.
    fn call_now<S>(
        svc: &mut S,
        req: u32,
    ) -> (
        std::pin::Pin<Box<S::Future>>,
        std::task::Poll<Result<u32, S::Error>>,
    )
    where
        S: tower::Service<u32, Response = u32>,
    {
        use std::future::Future;
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(svc.poll_ready(&mut cx).is_ready());
        let mut call = Box::pin(svc.call(req));
        let polled = call.as_mut().poll(&mut cx);
        (call, polled)
    }

    async fn call<S>(svc: &S, req: u32) -> Result<u32, BoxError>
    where
        S: tower::Service<u32, Response = u32, Error = BoxError> + Clone,
    {
        svc.clone().oneshot(req).await
    }

    fn inner()
    -> impl tower::Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
        service_fn(|r: u32| async move {
            if r % 2 == 1 {
                Err::<u32, BoxError>("down".into())
            } else {
                Ok(r)
            }
        })
    }

    #[tokio::test]
    async fn a_map_known_to_be_full_sends_new_keys_to_the_overflow_breaker_without_searching() {
        let clock = ManualClock::new();
        let layer = layer(&clock);
        let breakers = layer.breakers.clone();
        let handle = layer.handle();
        let svc = layer.layer(inner());
        for key in [1, 3, 5, 7] {
            call(&svc, key).await.unwrap_err();
        }
        // The first new key searches the whole (small) map and finds every
        // breaker within its open wait; the next ones do not search again.
        for key in (100..200).step_by(2) {
            call(&svc, key).await.unwrap();
            assert!(handle.get(&key).is_none());
        }
        assert_eq!(breakers.searches.load(Relaxed), 1);

        // An operator holding a breaker open only puts its eviction later:
        // what the search learned still holds.
        handle.get(&3).unwrap().force_open();
        call(&svc, 200).await.unwrap();
        call(&svc, 202).await.unwrap();
        assert_eq!(breakers.searches.load(Relaxed), 1);
        // Releasing it may let a new key in: the next new key searches.
        handle.get(&3).unwrap().reset();
        call(&svc, 205).await.unwrap_err();
        assert_eq!(breakers.searches.load(Relaxed), 2);
        assert!(
            handle.get(&205).is_some(),
            "took the place of the reset key"
        );
        assert!(handle.get(&3).is_none());

        // 205 opened: the next new key searches again (the mark was made
        // before the reset) and marks the map full until the earliest open
        // wait ends.
        call(&svc, 206).await.unwrap();
        call(&svc, 208).await.unwrap();
        assert_eq!(breakers.searches.load(Relaxed), 3);
        clock.advance(Duration::from_secs(9));
        call(&svc, 210).await.unwrap();
        assert_eq!(breakers.searches.load(Relaxed), 3);
        assert!(handle.get(&210).is_none());
        clock.advance(Duration::from_secs(1));
        call(&svc, 212).await.unwrap();
        assert_eq!(breakers.searches.load(Relaxed), 4);
        assert!(handle.get(&212).is_some());
        assert_eq!(handle.len(), 4);
    }

    #[test]
    fn a_full_map_is_marked_again_with_the_times_its_breakers_hold_now() {
        use std::task::Poll;

        let clock = ManualClock::new();
        // The key is the request's tens; the last digit says what the call
        // does (see `scripted`; 2 never ends here).
        let layer = builder(&clock).build_keyed(4, |r: &u32| *r / 10).unwrap();
        let breakers = layer.breakers.clone();
        let mut svc = layer.layer(scripted(Default::default()));
        let mut call_now = |req: u32| call_now(&mut svc, req);

        // Key 1 opens at 0 s until 10 s, keys 2 to 4 at 5 s until 15 s; a
        // new key then finds the map full until 10 s.
        assert!(call_now(11).1.is_ready());
        clock.advance(Duration::from_secs(5));
        for req in [21, 31, 41] {
            assert!(call_now(req).1.is_ready());
        }
        assert!(matches!(call_now(500).1, Poll::Ready(Ok(500))));
        assert_eq!(breakers.searches.load(Relaxed), 1);
        // At 10 s key 1 runs a probe that does not end, which keeps it past
        // 15 s. The next new key searches again, finds the map full until
        // 15 s, and the keys after it go to the overflow breaker at once.
        clock.advance(Duration::from_secs(5));
        let (_probe, polled) = call_now(12);
        assert!(polled.is_pending());
        for req in [600, 700, 800] {
            assert!(matches!(call_now(req).1, Poll::Ready(Ok(_))));
        }
        assert_eq!(breakers.searches.load(Relaxed), 2);
    }

    #[test]
    fn a_probe_that_ends_without_a_transition_lets_new_keys_search_again() {
        use std::future::Future;
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::task::{Context, Poll, Waker};

        let clock = ManualClock::new();
        // One key at most; two probes per half-open period. The key is the
        // request's tens, the last digit says what the call does (see
        // `scripted`).
        let layer = builder(&clock)
            .half_open_probes(2)
            .half_open_max_wait(Duration::from_secs(5))
            .build_keyed(1, |r: &u32| *r / 10)
            .unwrap();
        let breakers = layer.breakers.clone();
        let handle = layer.handle();
        let release = Arc::new(AtomicBool::new(false));
        let mut svc = layer.layer(scripted(release.clone()));
        let mut cx = Context::from_waker(Waker::noop());
        let mut call_now = |req: u32| call_now(&mut svc, req);

        // Key 1 opens; once its wait is over, a probe starts and runs.
        assert!(matches!(call_now(11).1, Poll::Ready(Err(_))));
        clock.advance(Duration::from_secs(10));
        let (mut probe, polled) = call_now(12);
        assert!(polled.is_pending());
        // A new key finds the map full: a running probe keeps key 1 for
        // its half-open wait and the longest open wait after it.
        assert!(matches!(call_now(20).1, Poll::Ready(Ok(20))));
        assert!(handle.get(&2).is_none());
        assert_eq!(breakers.searches.load(Relaxed), 1);

        // The probe succeeds; one more is needed, so key 1 stays half-open,
        // but only until its half-open wait ends.
        release.store(true, Relaxed);
        assert!(matches!(probe.as_mut().poll(&mut cx), Poll::Ready(Ok(12))));
        clock.advance(Duration::from_secs(5));
        assert!(matches!(call_now(30).1, Poll::Ready(Ok(30))));
        assert_eq!(breakers.searches.load(Relaxed), 2);
        assert!(handle.get(&3).is_some(), "took the place of key 1");
        assert!(handle.get(&1).is_none());
    }
}

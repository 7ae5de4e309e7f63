//! One breaker per key (for example per upstream host), with a bounded
//! number of keys.
//!
//! A key extractor `Fn(&Request) -> K` picks the breaker for each call.
//! Breakers are created on first use, from the layer's configuration, and
//! kept in a map of at most `max_keys` entries. When the map is full, a new
//! key takes the place of a breaker that is closed and in normal mode, the
//! least recently used of those the search below examines (recency is
//! tracked between insertions: a breaker used since the last new key counts
//! as just used). An open, half-open or operator-controlled breaker is never
//! evicted: when the search finds none that may be, the new key shares one
//! overflow breaker.
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
//! being inserted) and a hash of the key. Only inserting a new key takes the
//! write lock. Admission and recording on the breaker itself stay
//! lock-free. Size `max_keys` to the number of dependencies rather than of
//! clients: keys past it share the overflow breaker's verdict.
//!
//! Every key's breaker reports under the layer's policy name, so a backend's
//! state gauge for that name follows the latest transition of any key; read
//! one key's state with [`KeyedCircuitBreakerHandle::get`].
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

use palisade_core::{BoxError, Classify, SharedState};
use tower_layer::Layer;
use tower_service::Service;

use crate::breaker::{Breaker, Config};
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
}

/// How many tracked breakers a search for a victim examines at least.
const VICTIM_SEARCH: usize = 16;

/// How many it examines at most, when the first [`VICTIM_SEARCH`] hold
/// none it may evict.
const VICTIM_SEARCH_MAX: usize = 1024;

impl<K: Hash + Eq + Clone> Table<K> {
    /// Removes the least recently used evictable breaker among the next
    /// [`VICTIM_SEARCH`] slots from the hand (all of them in a smaller
    /// map), looking further, up to [`VICTIM_SEARCH_MAX`], only while it
    /// has found none. `false` if it found none it may evict. The hand
    /// moves past what was examined, so successive searches go round the
    /// whole map.
    fn evict_one(&mut self) -> bool {
        let len = self.slots.len();
        if len == 0 {
            return false;
        }
        let start = self.hand % len;
        let mut best: Option<(u64, usize)> = None;
        let mut examined = 0;
        while examined < len
            && (examined < VICTIM_SEARCH || (best.is_none() && examined < VICTIM_SEARCH_MAX))
        {
            let slot = (start + examined) % len;
            if let Some(entry) = self.map.get(&self.slots[slot])
                && entry.breaker.evictable()
            {
                let candidate = (entry.last_used.load(Ordering::Relaxed), slot);
                best = Some(best.map_or(candidate, |best| best.min(candidate)));
            }
            examined += 1;
        }
        self.hand = (start + examined) % len;
        let Some((_, victim)) = best else {
            return false;
        };
        let key = self.slots.swap_remove(victim);
        self.map.remove(&key);
        true
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
}

impl<K: Hash + Eq + Clone> Breakers<K> {
    fn new(config: Config, max_keys: usize) -> Self {
        Self {
            overflow: SharedState::new(Breaker::new(config.clone())),
            config,
            max_keys,
            table: RwLock::new(Table {
                map: HashMap::new(),
                slots: Vec::new(),
                hand: 0,
            }),
            uses: CachePadded(AtomicU64::new(0)),
            created: AtomicU64::new(0),
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

    fn breaker_for(&self, key: &K) -> SharedState<Breaker> {
        // Recency is counted in insertions, not calls: a lookup writes
        // nothing shared unless its key was not yet marked as used since the
        // last insertion, so hot keys cost no contended write.
        let tick = self.uses.load(Ordering::Relaxed);
        if let Some(entry) = self.read().map.get(key) {
            entry.touch(tick);
            return entry.breaker.clone();
        }
        let mut table = self.write();
        let tick = self.uses.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(entry) = table.map.get(key) {
            entry.touch(tick);
            return entry.breaker.clone();
        }
        if table.map.len() >= self.max_keys && !table.evict_one() {
            return self.overflow.clone();
        }
        let mut config = self.config.clone();
        // Each key's jitter follows its own sequence.
        let n = self.created.fetch_add(1, Ordering::Relaxed);
        config.seed = config
            .seed
            .wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
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
                let recorder = OutcomeRecorder::new(breaker, permit);
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
    pub fn get(&self, key: &K) -> Option<CircuitBreakerHandle> {
        self.breakers
            .read()
            .map
            .get(key)
            .map(|e| CircuitBreakerHandle::new(e.breaker.to_any()))
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

    /// The breaker shared by new keys while every tracked breaker is open,
    /// half-open or held by an operator.
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

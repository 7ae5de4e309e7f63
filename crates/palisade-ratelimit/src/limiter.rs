//! The limiter: governor's GCRA over palisade's own state store.
//!
//! Governor decides; the store (below) decides where the state lives. One
//! governor `RateLimiter` serves every bucket of a policy: the global
//! bucket, the shared buckets for requests without a key and for keys past
//! the cap, and the per-key slots of the lock-free [`KeyTable`].
//!
//! The store writes what it saw into the [`Probe`] that governor hands it
//! as the "key": the instant of the check, the arrival time it stored or
//! refused, and whether the overflow bucket was used. The limiter turns
//! that into an exact `retry_after` or the values of the rate-limit
//! headers, with no second clock read.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use palisade_core::{Event, KeyKind, LayerKind, Metrics, PolicyName, RateLimited, RejectReason};

use crate::clock::{self, GovernorClock};
use crate::table::{Effects, KeyTable};

/// Which shared bucket a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Bucket {
    /// The one bucket of a global limiter.
    Global,
    /// Requests without a key, when configured to share a bucket.
    Fallback,
    /// New keys while the table is at its cap (or their set is full).
    Overflow,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    Bucket(Bucket),
    Key(u64),
}

/// Governor's "key": where to charge the request, and what the store saw.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    target: Target,
    /// The instant of the check, nanoseconds since the limiter started.
    now: Cell<u64>,
    /// After an admission, the new arrival time; after a refusal, the
    /// stored one.
    tat: Cell<u64>,
    overflowed: Cell<bool>,
}

impl Probe {
    fn new(target: Target) -> Self {
        Self {
            target,
            now: Cell::new(0),
            tat: Cell::new(0),
            overflowed: Cell::new(false),
        }
    }
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.target == other.target
    }
}

impl Eq for Probe {}

impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.target.hash(state);
    }
}

#[derive(Debug)]
struct StoreInner {
    global: AtomicU64,
    fallback: AtomicU64,
    overflow: AtomicU64,
    table: Option<KeyTable>,
    /// Governor's start instant on the clock's scale, set once at build.
    start: AtomicU64,
    policy: PolicyName,
    metrics: Metrics,
}

impl StoreInner {
    fn cell(&self, bucket: Bucket) -> &AtomicU64 {
        match bucket {
            Bucket::Global => &self.global,
            Bucket::Fallback => &self.fallback,
            Bucket::Overflow => &self.overflow,
        }
    }

    fn report(&self, effects: Effects) {
        if !self.metrics.is_enabled() || (!effects.inserted && effects.evicted == 0) {
            return;
        }
        let policy = self.policy.as_str();
        if effects.evicted > 0 {
            self.metrics.emit(&Event::KeysEvicted {
                policy,
                count: effects.evicted,
            });
        }
        if let Some(table) = &self.table {
            let keys = table.len();
            // A gauge needs no event per insertion: every eviction, every
            // 64th key and reaching the cap are enough to follow it.
            if effects.evicted > 0 || keys % 64 == 0 || keys == table.cap() {
                self.metrics.emit(&Event::KeysTracked {
                    policy,
                    keys,
                    cap: table.cap(),
                });
            }
        }
    }
}

/// The compare-and-swap loop of one shared bucket (the same loop as
/// governor's in-memory state; `0` is a full bucket).
fn update_cell<T, E>(cell: &AtomicU64, f: impl Fn(u64) -> Result<(T, u64), E>) -> Result<T, E> {
    let mut current = cell.load(Ordering::Acquire);
    loop {
        let (value, next) = f(current)?;
        match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(value),
            Err(actual) => current = actual,
        }
    }
}

#[derive(Debug)]
struct Store(Arc<StoreInner>);

impl StateStore for Store {
    type Key = Probe;

    fn measure_and_replace<T, F, E>(&self, probe: &Probe, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let inner = &*self.0;
        // Governor read the clock just before calling the store.
        let now = clock::last_reading().saturating_sub(inner.start.load(Ordering::Relaxed));
        probe.now.set(now);
        let step = |tat: u64| {
            let result = f(NonZeroU64::new(tat).map(|tat| Nanos::new(tat.get())));
            match &result {
                Ok((_, next)) => probe.tat.set(next.as_u64()),
                Err(_) => probe.tat.set(tat),
            }
            result.map(|(value, next)| (value, next.as_u64()))
        };
        match (probe.target, &inner.table) {
            (Target::Bucket(bucket), _) => update_cell(inner.cell(bucket), step),
            (Target::Key(_), None) => update_cell(&inner.global, step),
            (Target::Key(hash), Some(table)) => {
                let mut effects = Effects::default();
                let result = table.update(hash, now, step, &mut effects);
                inner.report(effects);
                match result {
                    Some(result) => result,
                    None => {
                        probe.overflowed.set(true);
                        inner.metrics.emit(&Event::OverflowUsed {
                            policy: inner.policy.as_str(),
                        });
                        update_cell(inner.cell(Bucket::Overflow), step)
                    }
                }
            }
        }
    }
}

/// What an admission leaves in the bucket, for rate-limit headers.
///
/// Computed on demand from the bucket's state at the admission, so an
/// admission that nobody inspects costs nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Admission {
    now: u64,
    tat: u64,
    emission: u64,
    tolerance: u64,
}

impl Admission {
    /// The bucket's capacity: the most requests admitted at once.
    pub fn limit(&self) -> u32 {
        u32::try_from(self.tolerance / self.emission + 1).unwrap_or(u32::MAX)
    }

    /// Requests that would be admitted right now, after this one.
    pub fn remaining(&self) -> u32 {
        let room = (self.now + self.tolerance + self.emission)
            .saturating_sub(self.tat)
            .min(self.tolerance + self.emission);
        u32::try_from(room / self.emission).unwrap_or(u32::MAX)
    }

    /// How long until the bucket is full again (every request of
    /// [`limit`](Admission::limit) available).
    pub fn reset(&self) -> Duration {
        Duration::from_nanos(self.tat.saturating_sub(self.now))
    }
}

/// A decision before any event is emitted.
#[derive(Debug)]
pub(crate) enum Decision {
    Admitted(Admission),
    Rejected {
        retry_after: Duration,
        kind: KeyKind,
    },
}

/// How a [`Limiter`] is configured; validated by the layer's builder.
#[derive(Debug)]
pub(crate) struct LimiterConfig {
    pub(crate) quota: Quota,
    pub(crate) max_keys: Option<usize>,
    pub(crate) clock: palisade_core::Clock,
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) kind: KeyKind,
}

/// One rate-limit policy: governor's GCRA over a global bucket or over a
/// bounded, lock-free table of per-key buckets.
///
/// A [`RateLimitLayer`](crate::RateLimitLayer) owns one, shared by every
/// service it makes; [`RateLimitLayer::limiter`](crate::RateLimitLayer::limiter)
/// lends it out for checks outside a tower stack (a message on a
/// WebSocket, a job in a queue). Every check emits
/// [`Event::Admitted`] or [`Event::Rejected`].
///
/// Keys given to [`check_key`](Limiter::check_key) are hashed as they are:
/// to share buckets with the requests a layer keys, pass the value its
/// extractor returns (an [`IpKey`](crate::key::IpKey), a header's bytes).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade_ratelimit::RateLimitLayer;
/// use palisade_ratelimit::key::KeyFn;
///
/// struct Job { tenant: u64 }
///
/// let layer = RateLimitLayer::builder()
///     .quota(2, Duration::from_secs(1))
///     .keyed_by(KeyFn::new(|job: &Job| Some(job.tenant)))
///     .build()
///     .unwrap();
/// let limiter = layer.limiter();
/// assert!(limiter.check_key(&7_u64).is_ok());
/// assert!(limiter.check_key(&7_u64).is_ok());
/// let refused = limiter.check_key(&7_u64).unwrap_err();
/// assert!(refused.retry_after() <= Duration::from_millis(500));
/// // Another tenant has its own bucket.
/// assert!(limiter.check_key(&8_u64).is_ok());
/// assert_eq!(limiter.tracked_keys(), 2);
/// ```
pub struct Limiter {
    governor: RateLimiter<Probe, Store, GovernorClock, NoOpMiddleware<Nanos>>,
    store: Arc<StoreInner>,
    hasher: RandomState,
    emission: u64,
    tolerance: u64,
    policy: PolicyName,
    metrics: Metrics,
    kind: KeyKind,
}

impl Limiter {
    pub(crate) fn new(config: LimiterConfig) -> Self {
        let emission = u64::try_from(config.quota.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance = emission.saturating_mul(u64::from(config.quota.burst_size().get() - 1));
        let store = Arc::new(StoreInner {
            global: AtomicU64::new(0),
            fallback: AtomicU64::new(0),
            overflow: AtomicU64::new(0),
            table: config.max_keys.map(KeyTable::new),
            start: AtomicU64::new(0),
            policy: config.policy.clone(),
            metrics: config.metrics.clone(),
        });
        let governor = RateLimiter::new(
            config.quota,
            Store(store.clone()),
            GovernorClock::new(config.clock),
        );
        // `RateLimiter::new` read the clock once for its start instant.
        store.start.store(clock::last_reading(), Ordering::Relaxed);
        Self {
            governor,
            store,
            hasher: RandomState::new(),
            emission,
            tolerance,
            policy: config.policy,
            metrics: config.metrics,
            kind: config.kind,
        }
    }

    /// Whether requests are limited per key.
    pub fn is_keyed(&self) -> bool {
        self.store.table.is_some()
    }

    /// What this limiter keys requests by ([`KeyKind::Global`] for one
    /// bucket).
    pub fn key_kind(&self) -> KeyKind {
        self.kind
    }

    /// The policy name, carried by every event and rejection.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// Keys tracked now (zero for a global limiter).
    pub fn tracked_keys(&self) -> usize {
        self.store.table.as_ref().map_or(0, KeyTable::len)
    }

    /// The most keys tracked at once (zero for a global limiter).
    pub fn max_keys(&self) -> usize {
        self.store.table.as_ref().map_or(0, KeyTable::cap)
    }

    /// Charges one request to `key`'s bucket. A global limiter ignores the
    /// key and charges its one bucket.
    ///
    /// Keys are hashed with a per-limiter random seed; see the crate's
    /// memory notes for what a hash collision means.
    pub fn check_key<Q: Hash + ?Sized>(&self, key: &Q) -> Result<Admission, RateLimited> {
        let decision = self.decide(self.target_of(key));
        self.report(decision)
    }

    /// Charges one request to the shared bucket: the one bucket of a global
    /// limiter, or the bucket that a keyed limiter shares between requests
    /// without a key.
    pub fn check(&self) -> Result<Admission, RateLimited> {
        let target = if self.is_keyed() {
            Target::Bucket(Bucket::Fallback)
        } else {
            Target::Bucket(Bucket::Global)
        };
        let decision = self.decide(target);
        self.report(decision)
    }

    #[inline]
    pub(crate) fn target_of<Q: Hash + ?Sized>(&self, key: &Q) -> Target {
        if self.is_keyed() {
            Target::Key(self.hasher.hash_one(key))
        } else {
            Target::Bucket(Bucket::Global)
        }
    }

    /// Runs GCRA for `target` without emitting anything.
    #[inline]
    pub(crate) fn decide(&self, target: Target) -> Decision {
        let probe = Probe::new(target);
        let admitted = self.governor.check_key(&probe).is_ok();
        let (now, tat) = (probe.now.get(), probe.tat.get());
        if admitted {
            Decision::Admitted(Admission {
                now,
                tat,
                emission: self.emission,
                tolerance: self.tolerance,
            })
        } else {
            let kind = match target {
                _ if probe.overflowed.get() => KeyKind::Overflow,
                Target::Key(_) => self.kind,
                Target::Bucket(Bucket::Global) => KeyKind::Global,
                Target::Bucket(Bucket::Fallback) => KeyKind::Fallback,
                Target::Bucket(Bucket::Overflow) => KeyKind::Overflow,
            };
            // Governor refused because `now < tat - tolerance`.
            let earliest = tat.saturating_sub(self.tolerance);
            Decision::Rejected {
                retry_after: Duration::from_nanos(earliest.saturating_sub(now)),
                kind,
            }
        }
    }

    /// Emits the decision's event and turns it into a result.
    pub(crate) fn report(&self, decision: Decision) -> Result<Admission, RateLimited> {
        match decision {
            Decision::Admitted(admission) => {
                self.emit_admitted();
                Ok(admission)
            }
            Decision::Rejected { retry_after, kind } => {
                self.emit_rejected(RejectReason::RateLimited);
                Err(RateLimited::new(self.policy.clone(), retry_after, kind))
            }
        }
    }

    #[inline]
    pub(crate) fn emit_admitted(&self) {
        self.metrics.emit(&Event::Admitted {
            policy: self.policy.as_str(),
            layer: LayerKind::RateLimit,
        });
    }

    #[inline]
    pub(crate) fn emit_rejected(&self, reason: RejectReason) {
        self.metrics.emit(&Event::Rejected {
            policy: self.policy.as_str(),
            layer: LayerKind::RateLimit,
            reason,
        });
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("policy", &self.policy)
            .field("key_kind", &self.kind)
            .field("emission", &Duration::from_nanos(self.emission))
            .field("limit", &(self.tolerance / self.emission + 1))
            .field("tracked_keys", &self.tracked_keys())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

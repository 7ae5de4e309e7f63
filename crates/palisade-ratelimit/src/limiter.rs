//! The limiter: GCRA on one shared bucket, checked directly, and
//! governor's GCRA over palisade's own state store for per-key buckets.
//!
//! The quota is governor's [`Quota`]; the emission interval and the
//! tolerance are derived from it once, when the limiter is built, exactly
//! as governor derives them.
//!
//! The shared bucket (the one bucket of a global limiter, or the bucket
//! that a keyed limiter shares between requests without a key) is one
//! atomic word holding its theoretical arrival time. A check reads the
//! clock once, loads the word and stores the next arrival time with one
//! compare-and-swap; `retry_after` and the header values come from the
//! same reading. The property tests compare it, decision by decision, with
//! governor's own `RateLimiter` on governor's fake clock.
//!
//! Per-key buckets go through governor: one governor `RateLimiter` serves
//! the per-key slots of the lock-free [`KeyTable`] and the shared bucket
//! for keys past the cap. The store (below) decides where the state lives.
//! It writes what it saw into the [`Probe`] that governor hands it as the
//! "key": the instant of the check, the arrival time it stored or refused,
//! and whether the overflow bucket was used. The limiter turns that into
//! an exact `retry_after` or the values of the rate-limit headers, with no
//! second clock read.

use std::cell::Cell;
use std::fmt;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::StateStore;
use governor::{Quota, RateLimiter};
use palisade_core::clock::Origin;
use palisade_core::{
    Clock, Event, KeyKind, LayerKind, Metrics, PolicyName, RateLimited, RejectReason,
};

use crate::clock::{self, GovernorClock};
use crate::sync::{AtomicU64, Ordering};
use crate::table::{Effects, KeyTable};

/// Whether a request is checked for the first time or again after a
/// wait ([`Mode::Wait`](crate::Mode::Wait)): a request reports what it
/// meets on the way (a charge to the overflow bucket, a malformed header)
/// once, however many times it is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Check {
    First,
    /// A check after a wait; `overflowed` says whether an earlier check of
    /// the request was charged to the overflow bucket (and reported it).
    Again {
        overflowed: bool,
    },
}

impl Check {
    /// Whether a charge to the overflow bucket is still to be reported.
    fn reports_overflow(self) -> bool {
        !matches!(self, Self::Again { overflowed: true })
    }
}

/// Which bucket a request is charged to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Target {
    /// The shared bucket: the one bucket of a global limiter, or the
    /// bucket of the requests without a key of a keyed one.
    Shared,
    /// The bucket of the key with this hash (keyed limiters only).
    Key(u64),
}

/// GCRA's parameters, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Gcra {
    /// The emission interval: the time one request is worth.
    emission: u64,
    /// How far ahead of now the arrival time may run: the burst, less one
    /// request, in time.
    tolerance: u64,
}

impl Gcra {
    /// The parameters governor derives from `quota`: an emission interval
    /// of at least 1 ns, and a tolerance of `burst - 1` intervals.
    pub(crate) fn new(quota: &Quota) -> Self {
        let emission = u64::try_from(quota.replenish_interval().as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let tolerance = emission.saturating_mul(u64::from(quota.burst_size().get() - 1));
        Self {
            emission,
            tolerance,
        }
    }

    /// One GCRA decision at `now` for a bucket whose arrival time is `tat`
    /// (`0`: a full bucket). `Ok` holds the arrival time to store (never
    /// `0`), `Err` the earliest instant a request is admitted (after
    /// `now`).
    #[inline]
    pub(crate) fn step(self, now: u64, tat: u64) -> Result<u64, u64> {
        let tat = if tat == 0 { now } else { tat };
        let earliest = self.earliest(tat);
        if now < earliest {
            Err(earliest)
        } else {
            Ok(tat.max(now).saturating_add(self.emission))
        }
    }

    /// The earliest instant a bucket whose arrival time is `tat` admits a
    /// request.
    #[inline]
    fn earliest(self, tat: u64) -> u64 {
        tat.saturating_sub(self.tolerance)
    }
}

/// One bucket shared by many requests: its theoretical arrival time in
/// nanoseconds since the limiter's origin, `0` for a full bucket.
#[derive(Debug)]
pub(crate) struct SharedBucket {
    tat: AtomicU64,
}

impl SharedBucket {
    pub(crate) fn new() -> Self {
        Self {
            tat: AtomicU64::new(0),
        }
    }

    /// Charges one request at `now`: `Ok` with the new arrival time, or
    /// `Err` with the earliest instant of an admission, leaving the
    /// bucket as it was. One load and, unless another check lands in
    /// between, one compare-and-swap.
    #[inline]
    pub(crate) fn check(&self, gcra: Gcra, now: u64) -> Result<u64, u64> {
        self.update(|tat| gcra.step(now, tat).map(|next| (next, next)))
    }

    /// Replaces the arrival time with what `f` makes of it, or leaves it
    /// when `f` refuses: the compare-and-swap loop of governor's in-memory
    /// state (`0` is a full bucket).
    #[inline]
    fn update<T, E>(&self, f: impl Fn(u64) -> Result<(T, u64), E>) -> Result<T, E> {
        let mut tat = self.tat.load(Ordering::Acquire);
        loop {
            let (value, next) = f(tat)?;
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Ok(value),
                Err(actual) => tat = actual,
            }
        }
    }

    /// The stored arrival time (tests).
    #[cfg(all(test, palisade_loom))]
    fn tat(&self) -> u64 {
        self.tat.load(Ordering::Acquire)
    }
}

/// Governor's "key": the key's hash, and what the store saw.
#[derive(Clone, Debug)]
pub(crate) struct Probe {
    hash: u64,
    /// The instant of the check, nanoseconds since the limiter started.
    now: Cell<u64>,
    /// After an admission, the new arrival time; after a refusal, the
    /// stored one.
    tat: Cell<u64>,
    overflowed: Cell<bool>,
    check: Check,
}

impl Probe {
    fn new(hash: u64, check: Check) -> Self {
        Self {
            hash,
            now: Cell::new(0),
            tat: Cell::new(0),
            overflowed: Cell::new(false),
            check,
        }
    }
}

impl PartialEq for Probe {
    fn eq(&self, other: &Self) -> bool {
        self.hash == other.hash
    }
}

impl Eq for Probe {}

impl Hash for Probe {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.hash.hash(state);
    }
}

#[derive(Debug)]
struct StoreInner {
    /// The bucket shared by keys that find no slot.
    overflow: SharedBucket,
    table: KeyTable,
    /// Governor's start instant on the clock's scale, set once at build.
    start: StdAtomicU64,
    policy: PolicyName,
    metrics: Metrics,
}

impl StoreInner {
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
        let keys = self.table.len();
        // A gauge needs no event per insertion: every eviction, every
        // 64th key and reaching the cap are enough to follow it.
        if effects.evicted > 0 || keys.is_multiple_of(64) || keys == self.table.cap() {
            self.metrics.emit(&Event::KeysTracked {
                policy,
                keys,
                cap: self.table.cap(),
            });
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
        let now = clock::last_reading().saturating_sub(inner.start.load(StdOrdering::Relaxed));
        probe.now.set(now);
        let step = |tat: u64| {
            let result = f(NonZeroU64::new(tat).map(|tat| Nanos::new(tat.get())));
            match &result {
                Ok((_, next)) => probe.tat.set(next.as_u64()),
                Err(_) => probe.tat.set(tat),
            }
            result.map(|(value, next)| (value, next.as_u64()))
        };
        let mut effects = Effects::default();
        let result = inner.table.update(probe.hash, now, step, &mut effects);
        inner.report(effects);
        match result {
            Some(result) => result,
            None => {
                probe.overflowed.set(true);
                if probe.check.reports_overflow() {
                    inner.metrics.emit(&Event::OverflowUsed {
                        policy: inner.policy.as_str(),
                    });
                }
                inner.overflow.update(step)
            }
        }
    }
}

/// The per-key state of a keyed limiter.
struct Keyed {
    governor: RateLimiter<Probe, Store, GovernorClock, NoOpMiddleware<Nanos>>,
    store: Arc<StoreInner>,
    hasher: RandomState,
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
        // `capacity - (tat - now)`, and `capacity` when the bucket is
        // full (`tat <= now`), without a sum that could overflow.
        let capacity = self.tolerance.saturating_add(self.emission);
        let room = capacity.saturating_sub(self.tat.saturating_sub(self.now));
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
    pub(crate) clock: Clock,
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) kind: KeyKind,
}

/// One rate-limit policy: GCRA on a global bucket, or on a bounded,
/// lock-free table of per-key buckets.
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
    /// The global bucket, or the bucket of requests without a key.
    bucket: SharedBucket,
    gcra: Gcra,
    clock: Clock,
    /// The instant the shared bucket's times count from.
    origin: Origin,
    keyed: Option<Keyed>,
    policy: PolicyName,
    metrics: Metrics,
    kind: KeyKind,
}

impl Limiter {
    pub(crate) fn new(config: LimiterConfig) -> Self {
        let gcra = Gcra::new(&config.quota);
        let (keyed, origin) = match config.max_keys {
            Some(max_keys) => {
                let store = Arc::new(StoreInner {
                    overflow: SharedBucket::new(),
                    table: KeyTable::new(max_keys),
                    start: StdAtomicU64::new(0),
                    policy: config.policy.clone(),
                    metrics: config.metrics.clone(),
                });
                let governor_clock = GovernorClock::new(config.clock.clone());
                let base = governor_clock.base();
                let governor = RateLimiter::new(config.quota, Store(store.clone()), governor_clock);
                // `RateLimiter::new` read the clock once for its start
                // instant; the shared bucket counts from the same instant.
                let start = clock::last_reading();
                store.start.store(start, StdOrdering::Relaxed);
                let origin = base
                    .checked_add(Duration::from_nanos(start))
                    .unwrap_or(base);
                let keyed = Keyed {
                    governor,
                    store,
                    hasher: RandomState::new(),
                };
                (Some(keyed), origin)
            }
            None => (None, config.clock.now()),
        };
        let origin = Origin::new(origin);
        Self {
            bucket: SharedBucket::new(),
            gcra,
            clock: config.clock,
            origin,
            keyed,
            policy: config.policy,
            metrics: config.metrics,
            kind: config.kind,
        }
    }

    /// Whether requests are limited per key.
    pub fn is_keyed(&self) -> bool {
        self.keyed.is_some()
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
        self.keyed
            .as_ref()
            .map_or(0, |keyed| keyed.store.table.len())
    }

    /// The most keys tracked at once (zero for a global limiter).
    pub fn max_keys(&self) -> usize {
        self.keyed
            .as_ref()
            .map_or(0, |keyed| keyed.store.table.cap())
    }

    /// Charges one request to `key`'s bucket. A global limiter ignores the
    /// key and charges its one bucket.
    ///
    /// Keys are hashed with a per-limiter random seed; see the crate's
    /// memory notes for what a hash collision means.
    pub fn check_key<Q: Hash + ?Sized>(&self, key: &Q) -> Result<Admission, RateLimited> {
        let decision = self.decide(self.target_of(key), Check::First);
        self.report(decision)
    }

    /// Charges one request to the shared bucket: the one bucket of a global
    /// limiter, or the bucket that a keyed limiter shares between requests
    /// without a key.
    pub fn check(&self) -> Result<Admission, RateLimited> {
        let decision = self.decide(Target::Shared, Check::First);
        self.report(decision)
    }

    #[inline]
    pub(crate) fn target_of<Q: Hash + ?Sized>(&self, key: &Q) -> Target {
        match &self.keyed {
            Some(keyed) => Target::Key(keyed.hasher.hash_one(key)),
            None => Target::Shared,
        }
    }

    /// Runs GCRA for `target`. Emits nothing but, on a first check, a
    /// charge to the overflow bucket.
    #[inline]
    pub(crate) fn decide(&self, target: Target, check: Check) -> Decision {
        match (target, &self.keyed) {
            (Target::Key(hash), Some(keyed)) => self.decide_key(keyed, hash, check),
            _ => self.decide_shared(),
        }
    }

    /// The shared bucket: one clock read, one load, one compare-and-swap.
    #[inline]
    fn decide_shared(&self) -> Decision {
        let now = clock::nanos_since(&self.clock, &self.origin);
        match self.bucket.check(self.gcra, now) {
            Ok(tat) => Decision::Admitted(self.admission(now, tat)),
            Err(earliest) => {
                // The bucket of a global limiter, or of the requests
                // without a key of a keyed one.
                let kind = if self.is_keyed() {
                    KeyKind::Fallback
                } else {
                    KeyKind::Global
                };
                Self::refusal(now, earliest, kind)
            }
        }
    }

    /// A key's bucket, through governor and the key table.
    fn decide_key(&self, keyed: &Keyed, hash: u64, check: Check) -> Decision {
        let probe = Probe::new(hash, check);
        let admitted = keyed.governor.check_key(&probe).is_ok();
        let (now, tat) = (probe.now.get(), probe.tat.get());
        if admitted {
            Decision::Admitted(self.admission(now, tat))
        } else {
            let kind = if probe.overflowed.get() {
                KeyKind::Overflow
            } else {
                self.kind
            };
            // Governor refused because `now < tat - tolerance`.
            Self::refusal(now, self.gcra.earliest(tat), kind)
        }
    }

    /// A refusal at `now` of a bucket that admits again at `earliest`.
    #[inline]
    fn refusal(now: u64, earliest: u64, kind: KeyKind) -> Decision {
        Decision::Rejected {
            retry_after: Duration::from_nanos(earliest.saturating_sub(now)),
            kind,
        }
    }

    #[inline]
    fn admission(&self, now: u64, tat: u64) -> Admission {
        Admission {
            now,
            tat,
            emission: self.gcra.emission,
            tolerance: self.gcra.tolerance,
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
        self.metrics.emit_with(|| Event::Admitted {
            policy: self.policy.as_str(),
            layer: LayerKind::RateLimit,
        });
    }

    /// Reports a header read for the key that was malformed and ignored.
    #[cold]
    pub(crate) fn emit_malformed(&self, header: &'static str) {
        self.metrics.emit(&Event::MalformedHeader {
            policy: self.policy.as_str(),
            layer: LayerKind::RateLimit,
            header,
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
            .field("emission", &Duration::from_nanos(self.gcra.emission))
            .field("limit", &(self.gcra.tolerance / self.gcra.emission + 1))
            .field("tracked_keys", &self.tracked_keys())
            .field("max_keys", &self.max_keys())
            .finish()
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use super::*;

    #[test]
    fn remaining_counts_whole_requests_and_never_overflows() {
        let at = |now, tat, emission, tolerance| Admission {
            now,
            tat,
            emission,
            tolerance,
        };
        // Ten per bucket, one request per 10 ns.
        assert_eq!(at(100, 100, 10, 90).remaining(), 10);
        assert_eq!(at(100, 110, 10, 90).remaining(), 9);
        assert_eq!(at(100, 195, 10, 90).remaining(), 0);
        assert_eq!(at(100, 200, 10, 90).remaining(), 0);
        // A bucket full for longer than its capacity is still just full.
        assert_eq!(at(u64::MAX, 5, 10, 90).remaining(), 10);
        // The largest quotas and instants: sums that would wrap saturate.
        assert_eq!(
            at(u64::MAX - 1, u64::MAX, u64::MAX / 2, u64::MAX / 2 + 2).remaining(),
            2
        );
        assert_eq!(at(u64::MAX, u64::MAX, u64::MAX, u64::MAX).limit(), 2);
    }

    #[test]
    fn a_gcra_step_admits_a_burst_then_refuses_until_the_exact_instant() {
        // One request per 10 ns, in bursts of three.
        let gcra = Gcra {
            emission: 10,
            tolerance: 20,
        };
        let bucket = SharedBucket::new();
        assert_eq!(bucket.check(gcra, 100), Ok(110));
        assert_eq!(bucket.check(gcra, 100), Ok(120));
        assert_eq!(bucket.check(gcra, 100), Ok(130));
        assert_eq!(bucket.check(gcra, 100), Err(110));
        assert_eq!(bucket.check(gcra, 109), Err(110));
        assert_eq!(bucket.check(gcra, 110), Ok(140));
        // A bucket idle long enough is full again, and no fuller.
        assert_eq!(bucket.check(gcra, 1_000), Ok(1_010));
        assert_eq!(bucket.check(gcra, 1_000), Ok(1_020));
        assert_eq!(bucket.check(gcra, 1_000), Ok(1_030));
        assert_eq!(bucket.check(gcra, 1_000), Err(1_010));
    }

    #[test]
    fn a_gcra_step_at_time_zero_stores_a_nonzero_arrival_time() {
        let gcra = Gcra {
            emission: 1,
            tolerance: 0,
        };
        assert_eq!(gcra.step(0, 0), Ok(1));
        assert_eq!(gcra.step(0, 1), Err(1));
        assert_eq!(gcra.step(u64::MAX, 0), Ok(u64::MAX));
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use super::*;
    use loom::sync::Arc;
    use loom::thread;

    #[test]
    fn loom_concurrent_checks_admit_exactly_the_burst() {
        crate::sync::model(|| {
            // A burst of two at one per 10 time units, time standing still.
            let gcra = Gcra {
                emission: 10,
                tolerance: 10,
            };
            let bucket = Arc::new(SharedBucket::new());
            let handles: Vec<_> = (0..3)
                .map(|_| {
                    let bucket = bucket.clone();
                    thread::spawn(move || bucket.check(gcra, 5))
                })
                .collect();
            let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
            let mut admitted: Vec<u64> = results.iter().filter_map(|r| r.ok()).collect();
            admitted.sort_unstable();
            // Every admission stored its own arrival time: none was lost.
            assert_eq!(admitted, [15, 25]);
            assert!(results.contains(&Err(15)));
            assert_eq!(bucket.tat(), 25);
        });
    }
}

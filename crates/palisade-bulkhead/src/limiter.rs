//! Permit accounting: the in-flight count, the limit, and the FIFO queue of
//! waiters.
//!
//! The in-flight count and the number of queued waiters share one atomic
//! word, so every decision that involves both ("take a slot only if nobody
//! is queued", "free the slot only if nobody is waiting for it") is one
//! compare-and-swap. Taking a free slot touches nothing else: no lock.
//! The queue itself is behind a mutex that only requests that wait, and
//! releases that find a waiter, ever take; the queued count only changes
//! under that mutex, so it always equals the queue's length there.

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll, Waker};

use palisade_core::InFlightChange;

use crate::sync::{Arc, AtomicBool, AtomicU64, AtomicUsize, Mutex, Ordering, lock};

/// Observes every change of the in-flight count, with the count right
/// after it and the limit in force.
pub(crate) trait Report {
    fn change(&self, change: InFlightChange, in_flight: usize, limit: usize);

    /// Whether anyone receives the changes: when nobody does, the fast
    /// path skips reading the limit they would carry.
    fn is_enabled(&self) -> bool {
        true
    }
}

/// One packed state word: in-flight count (low half) and queued waiters
/// (high half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct State(u64);

const HALF: u32 = 32;
const LOW: u64 = (1 << HALF) - 1;

impl State {
    #[inline]
    fn in_flight(self) -> usize {
        (self.0 & LOW) as usize
    }

    #[inline]
    fn queued(self) -> usize {
        (self.0 >> HALF) as usize
    }

    #[inline]
    fn with(in_flight: usize, queued: usize) -> Self {
        Self(((queued as u64) << HALF) | (in_flight as u64 & LOW))
    }
}

/// Aligned to 128 bytes: the state word, which every request writes twice,
/// and the limit read with it get cache lines of their own, apart from the
/// configuration around the limiter and from the reference count of a
/// counted layer's state.
#[repr(align(128))]
pub(crate) struct Limiter {
    state: AtomicU64,
    limit: AtomicUsize,
    waiters: Mutex<VecDeque<Arc<WaitNode>>>,
    queue_capacity: usize,
}

/// One queued request.
pub(crate) struct WaitNode {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// When the wait ends, on tokio's clock: a slot freed from then on
    /// passes it over.
    deadline: tokio::time::Instant,
}

/// What a request that could not take a free slot at once gets.
pub(crate) enum Admission {
    /// A slot was free after all; the count right after taking it.
    Acquired(usize),
    /// Queued. The node may already be granted.
    Queued(Arc<WaitNode>),
    /// The queue is full.
    QueueFull,
}

impl Limiter {
    /// `limit` and `queue_capacity` must fit in 32 bits (the builder caps
    /// them far below). A limit is at least 1, which the fast path's first
    /// guess relies on: a limit of 0 is held at 1 (the builder refuses it).
    pub(crate) fn new(limit: usize, queue_capacity: usize) -> Self {
        Self {
            state: AtomicU64::new(0),
            limit: AtomicUsize::new(limit.max(1)),
            waiters: Mutex::new(VecDeque::with_capacity(queue_capacity.min(1024))),
            queue_capacity,
        }
    }

    #[inline]
    fn load(&self) -> State {
        State(self.state.load(Ordering::Acquire))
    }

    #[inline]
    fn swap_state(&self, current: State, new: State) -> Result<(), State> {
        self.state
            .compare_exchange_weak(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(State)
    }

    /// [`swap_state`](Self::swap_state) that fails only when the word is
    /// not `current`.
    #[inline]
    fn swap_state_strong(&self, current: State, new: State) -> Result<(), State> {
        self.state
            .compare_exchange(current.0, new.0, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(State)
    }

    #[inline]
    pub(crate) fn in_flight(&self) -> usize {
        self.load().in_flight()
    }

    pub(crate) fn queued(&self) -> usize {
        self.load().queued()
    }

    #[inline]
    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// The fast path: takes a free slot unless requests are already waiting
    /// (they come first). Returns the count right after taking it.
    ///
    /// The limit is read once, before the slot is taken, and the queue's
    /// lock, under which an adaptive limit changes, is not taken: a call
    /// racing a lowered limit may still be admitted under the limit it read,
    /// at most one per racing call, and counts above the new limit as the
    /// calls already running do until they end.
    ///
    /// The first attempt guesses an idle bulkhead (nothing in flight,
    /// nobody queued), which every limit admits (limits are at least 1):
    /// one compare-and-swap, with no read of the word or the limit before
    /// it. A wrong guess costs little more than the read it replaced: the
    /// swap returns the word, and holds its line for the next attempt.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<usize> {
        let idle = State::with(0, 0);
        let Err(mut current) = self.swap_state_strong(idle, State::with(1, 0)) else {
            return Some(1);
        };
        let limit = self.limit();
        loop {
            if current.queued() > 0 || current.in_flight() >= limit {
                return None;
            }
            let next = State::with(current.in_flight() + 1, 0);
            match self.swap_state(current, next) {
                Ok(()) => return Some(next.in_flight()),
                Err(actual) => current = actual,
            }
        }
    }

    /// The slow path: takes a slot if nobody is queued and one is free,
    /// otherwise joins the queue if it has room.
    ///
    /// A request that queues waits until `deadline()` (on tokio's clock,
    /// read only when it queues): a slot freed from then on passes it over,
    /// and leaves it to turn itself away.
    pub(crate) fn acquire_or_enqueue(
        &self,
        report: &impl Report,
        deadline: impl FnOnce() -> tokio::time::Instant,
    ) -> Admission {
        let mut waiters = lock(&self.waiters);
        // Serve anyone a raised limit left waiting before judging (rare: a
        // raised limit grants at once), woken and reported before this
        // request takes or queues for a place, so that a sink that panics
        // cannot leave that place without an owner.
        let granted = self.grant_free_slots(&mut waiters);
        if !granted.is_empty() {
            drop(waiters);
            granted.wake_and_report(report);
            waiters = lock(&self.waiters);
        }
        self.admit_or_queue(&mut waiters, deadline)
    }

    /// [`acquire_or_enqueue`](Self::acquire_or_enqueue)'s decision, with
    /// the queue locked.
    fn admit_or_queue(
        &self,
        waiters: &mut VecDeque<Arc<WaitNode>>,
        deadline: impl FnOnce() -> tokio::time::Instant,
    ) -> Admission {
        let limit = self.limit();
        let mut current = self.load();
        loop {
            let (in_flight, queued) = (current.in_flight(), current.queued());
            let next = if queued == 0 && in_flight < limit {
                State::with(in_flight + 1, 0)
            } else if queued >= self.queue_capacity {
                return Admission::QueueFull;
            } else {
                State::with(in_flight, queued + 1)
            };
            match self.swap_state(current, next) {
                Ok(()) if next.queued() == 0 => return Admission::Acquired(next.in_flight()),
                Ok(()) => break,
                Err(actual) => current = actual,
            }
        }
        let node = Arc::new(WaitNode {
            granted: AtomicBool::new(false),
            waker: Mutex::new(None),
            deadline: deadline(),
        });
        waiters.push_back(node.clone());
        Admission::Queued(node)
    }

    /// Gives back one slot, which the caller holds: frees it, then hands
    /// it to the oldest waiter when there is one and the limit still allows
    /// it.
    ///
    /// One atomic subtraction when nobody waits, with no read of the word
    /// before it. Freeing first never lets a newcomer take the slot ahead
    /// of a waiter: the fast path refuses while anyone is queued, and the
    /// slow path serves the queue before itself.
    #[inline]
    pub(crate) fn release(&self, report: &impl Report) {
        let before = State(self.state.fetch_sub(1, Ordering::AcqRel));
        debug_assert!(before.in_flight() > 0, "a release without a slot");
        let in_flight = before.in_flight().wrapping_sub(1);
        if before.queued() > 0 {
            return self.serve_waiters(in_flight, report);
        }
        if report.is_enabled() {
            report.change(InFlightChange::Released, in_flight, self.limit());
        }
    }

    /// A slot was freed while requests waited (`in_flight` is the count
    /// right after): grants it, and any other a lowered count left free,
    /// to the oldest waiters the limit allows. Granted under the lock, so
    /// that a waiter leaving the queue sees it; woken after it, so that no
    /// waker or sink runs with the queue locked, and woken before the
    /// events, so that a sink that panics cannot strand a slot.
    #[cold]
    #[inline(never)]
    fn serve_waiters(&self, in_flight: usize, report: &impl Report) {
        let mut waiters = lock(&self.waiters);
        let granted = self.grant_free_slots(&mut waiters);
        drop(waiters);
        let granted = granted.wake();
        report.change(InFlightChange::Released, in_flight, granted.limit);
        granted.report(report);
    }

    /// Changes the limit; a higher limit admits waiters at once.
    ///
    /// Takes the queue's lock (limits change once per window at most): a
    /// request queuing itself reads the limit under that lock, so it either
    /// sees the new limit or is in the queue by the time it is served.
    pub(crate) fn set_limit(&self, limit: usize, report: &impl Report) {
        let mut waiters = lock(&self.waiters);
        self.limit.store(limit.max(1), Ordering::Release);
        let granted = self.grant_free_slots(&mut waiters);
        drop(waiters);
        granted.wake_and_report(report);
    }

    /// Leaves the queue. Returns `true` when the node had been granted a
    /// slot before it could leave: the caller then holds that slot and must
    /// release it.
    pub(crate) fn cancel(&self, node: &Arc<WaitNode>) -> bool {
        let mut waiters = lock(&self.waiters);
        let Some(position) = waiters.iter().position(|n| Arc::ptr_eq(n, node)) else {
            // Only granting, or passing over a node whose wait ran out,
            // takes it out of the queue, under this lock.
            return node.is_granted();
        };
        waiters.remove(position);
        let mut current = self.load();
        loop {
            let next = State::with(current.in_flight(), current.queued().saturating_sub(1));
            match self.swap_state(current, next) {
                Ok(()) => return false,
                Err(actual) => current = actual,
            }
        }
    }

    /// Moves waiters from the queue into free slots, oldest first. Called
    /// with the queue locked; the caller wakes them and reports once it is
    /// unlocked (see [`Granted`]).
    #[must_use]
    fn grant_free_slots(&self, waiters: &mut VecDeque<Arc<WaitNode>>) -> Granted {
        let limit = self.limit();
        let mut current = self.load();
        let mut granted = Granted {
            limit,
            nodes: Vec::new(),
        };
        let mut now = None;
        while current.queued() > 0 && current.in_flight() < limit {
            // A waiter whose wait has run out (its task not polled since,
            // on a busy executor) is passed over: it turns itself away when
            // it next runs, and the slot goes to one still within its wait.
            if let Some(front) = waiters.front()
                && *now.get_or_insert_with(tokio::time::Instant::now) >= front.deadline
            {
                let next = State::with(current.in_flight(), current.queued() - 1);
                match self.swap_state(current, next) {
                    Ok(()) => {
                        waiters.pop_front();
                        current = next;
                    }
                    Err(actual) => current = actual,
                }
                continue;
            }
            let next = State::with(current.in_flight() + 1, current.queued() - 1);
            match self.swap_state(current, next) {
                Ok(()) => {
                    if let Some(node) = waiters.pop_front() {
                        granted.nodes.push((node.grant(), next.in_flight()));
                    }
                    current = next;
                }
                Err(actual) => current = actual,
            }
        }
        granted
    }
}

/// Waiters granted a slot under the queue's lock, to wake and report once
/// it is released: no waker or sink runs with the queue locked.
struct Granted {
    limit: usize,
    nodes: Vec<(Option<Waker>, usize)>,
}

impl Granted {
    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every waiter woken before any event: a sink that panics must not
    /// leave the others asleep while they hold slots.
    fn wake_and_report(self, report: &impl Report) {
        self.wake().report(report);
    }

    /// Wakes every granted waiter.
    fn wake(mut self) -> Self {
        for waker in self.nodes.iter_mut().filter_map(|(waker, _)| waker.take()) {
            waker.wake();
        }
        self
    }

    /// Reports each grant, once every waiter is awake.
    fn report(&self, report: &impl Report) {
        for &(_, in_flight) in &self.nodes {
            report.change(InFlightChange::Acquired, in_flight, self.limit);
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.load();
        f.debug_struct("Limiter")
            .field("in_flight", &state.in_flight())
            .field("queued", &state.queued())
            .field("limit", &self.limit())
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl WaitNode {
    /// Hands the node its slot; returns the waker to wake once the queue
    /// is unlocked.
    #[must_use]
    fn grant(&self) -> Option<Waker> {
        self.granted.store(true, Ordering::Release);
        lock(&self.waker).take()
    }

    /// When the wait ends.
    pub(crate) fn deadline(&self) -> tokio::time::Instant {
        self.deadline
    }

    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Ordering::Acquire)
    }

    /// Ready once a slot was handed to this node.
    pub(crate) fn poll_granted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.is_granted() {
            return Poll::Ready(());
        }
        {
            let mut waker = lock(&self.waker);
            match &mut *waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                slot => *slot = Some(cx.waker().clone()),
            }
        }
        // The granter sets the flag before taking the waker under the same
        // mutex: if it took an older waker, the flag is visible now.
        if self.is_granted() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl fmt::Debug for WaitNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitNode")
            .field("granted", &self.is_granted())
            .finish()
    }
}

/// A deadline no test reaches: a waiter that waits as long as it takes.
#[cfg(test)]
fn far() -> tokio::time::Instant {
    tokio::time::Instant::now() + std::time::Duration::from_secs(3600)
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use std::sync::Mutex as StdMutex;

    use super::*;

    #[derive(Default)]
    struct Gauge(StdMutex<i64>);

    impl Report for Gauge {
        fn change(&self, change: InFlightChange, in_flight: usize, _limit: usize) {
            let mut g = self.0.lock().unwrap();
            *g += change.delta();
            assert_eq!(*g, in_flight as i64, "reported count matches the deltas");
        }
    }

    /// The fast path, reported as the service reports it.
    fn take(limiter: &Limiter, gauge: &Gauge) -> Option<usize> {
        let taken = limiter.try_acquire();
        if let Some(in_flight) = taken {
            gauge.change(InFlightChange::Acquired, in_flight, limiter.limit());
        }
        taken
    }

    #[test]
    fn waiters_are_served_in_order_and_the_queue_is_bounded() {
        let gauge = Gauge::default();
        let limiter = Limiter::new(1, 2);
        assert_eq!(take(&limiter, &gauge), Some(1));
        let Admission::Queued(first) = limiter.acquire_or_enqueue(&gauge, far) else {
            panic!("expected to queue")
        };
        let Admission::Queued(second) = limiter.acquire_or_enqueue(&gauge, far) else {
            panic!("expected to queue")
        };
        assert!(matches!(
            limiter.acquire_or_enqueue(&gauge, far),
            Admission::QueueFull
        ));
        // A newcomer does not overtake the queue even when a slot frees.
        assert_eq!(take(&limiter, &gauge), None);
        limiter.release(&gauge);
        assert!(first.is_granted() && !second.is_granted());
        assert_eq!(limiter.in_flight(), 1);
        limiter.release(&gauge);
        assert!(second.is_granted());
        limiter.release(&gauge);
        assert_eq!(limiter.in_flight(), 0);
        assert_eq!(limiter.queued(), 0);
    }

    #[test]
    fn a_cancelled_waiter_leaves_and_a_granted_one_must_release() {
        let gauge = Gauge::default();
        let limiter = Limiter::new(1, 4);
        assert_eq!(take(&limiter, &gauge), Some(1));
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge, far) else {
            panic!("expected to queue")
        };
        assert!(!limiter.cancel(&node));
        assert_eq!(limiter.queued(), 0);
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge, far) else {
            panic!("expected to queue")
        };
        limiter.release(&gauge);
        assert!(limiter.cancel(&node), "granted before cancelling");
        limiter.release(&gauge);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn a_freed_slot_passes_over_waiters_whose_wait_ran_out() {
        let gauge = Gauge::default();
        let limiter = Limiter::new(1, 4);
        assert_eq!(take(&limiter, &gauge), Some(1));
        let now = tokio::time::Instant::now();
        let queue = |deadline| match limiter.acquire_or_enqueue(&gauge, || deadline) {
            Admission::Queued(node) => node,
            _ => panic!("expected to queue"),
        };
        let (over, also_over) = (queue(now), queue(now));
        let (within, after) = (queue(far()), queue(far()));
        limiter.release(&gauge);
        // Both passed over and out of the queue, neither holding a slot.
        assert!(within.is_granted());
        assert!(!over.is_granted() && !also_over.is_granted() && !after.is_granted());
        assert_eq!((limiter.in_flight(), limiter.queued()), (1, 1));
        assert!(!limiter.cancel(&over) && !limiter.cancel(&also_over));
        assert_eq!(limiter.queued(), 1);
        // A node whose wait is far off is served in its turn.
        limiter.release(&gauge);
        assert!(after.is_granted());
        limiter.release(&gauge);
        assert_eq!((limiter.in_flight(), limiter.queued()), (0, 0));
    }

    #[test]
    fn a_lower_limit_frees_instead_of_handing_off_and_a_higher_one_admits() {
        let gauge = Gauge::default();
        let limiter = Limiter::new(2, 4);
        take(&limiter, &gauge).unwrap();
        take(&limiter, &gauge).unwrap();
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge, far) else {
            panic!("expected to queue")
        };
        limiter.set_limit(1, &gauge);
        limiter.release(&gauge);
        assert!(!node.is_granted());
        assert_eq!(limiter.in_flight(), 1);
        limiter.set_limit(3, &gauge);
        assert!(node.is_granted());
        assert_eq!(limiter.in_flight(), 2);
    }

    /// A waker that notes whether the queue was locked when it was woken
    /// (a waker that polls inline, or a sink that re-enters the bulkhead,
    /// would deadlock on it).
    struct SeesTheQueue {
        limiter: std::sync::Arc<Limiter>,
        locked: StdMutex<Vec<bool>>,
    }

    impl std::task::Wake for SeesTheQueue {
        fn wake(self: std::sync::Arc<Self>) {
            let locked = self.limiter.waiters.try_lock().is_err();
            self.locked.lock().unwrap().push(locked);
        }
    }

    impl Report for std::sync::Arc<SeesTheQueue> {
        fn change(&self, _: InFlightChange, _: usize, _: usize) {
            let locked = self.limiter.waiters.try_lock().is_err();
            self.locked.lock().unwrap().push(locked);
        }
    }

    #[test]
    fn wakers_and_sinks_run_with_the_queue_unlocked() {
        let limiter = std::sync::Arc::new(Limiter::new(1, 4));
        let seen = std::sync::Arc::new(SeesTheQueue {
            limiter: limiter.clone(),
            locked: StdMutex::default(),
        });
        let waker = Waker::from(seen.clone());
        let mut cx = Context::from_waker(&waker);
        assert_eq!(limiter.try_acquire(), Some(1));
        let queue = || match limiter.acquire_or_enqueue(&seen, far) {
            Admission::Queued(node) => node,
            _ => panic!("expected to queue"),
        };
        // A release hands the slot on; a raised limit grants the others.
        let nodes = [queue(), queue(), queue()];
        for node in &nodes {
            assert!(node.poll_granted(&mut cx).is_pending());
        }
        limiter.release(&seen);
        limiter.set_limit(3, &seen);
        assert!(nodes.iter().all(|node| node.is_granted()));
        let locked = seen.locked.lock().unwrap().clone();
        assert_eq!(locked.len(), 3 + 4, "three wakes, four events");
        assert!(locked.iter().all(|locked| !locked), "{locked:?}");
    }

    /// A sink that panics on the first grant's event.
    struct PanicOnGrant;

    impl Report for PanicOnGrant {
        fn change(&self, change: InFlightChange, _in_flight: usize, _limit: usize) {
            assert!(change != InFlightChange::Acquired, "sink failed");
        }
    }

    /// A raised limit grants every waiter it has room for, even when the
    /// sink panics on the first grant's event.
    #[test]
    fn a_panicking_sink_leaves_no_waiter_queued_beside_a_free_slot() {
        let limiter = Limiter::new(1, 4);
        assert_eq!(limiter.try_acquire(), Some(1));
        let queue = |limiter: &Limiter| match limiter.acquire_or_enqueue(&PanicOnGrant, far) {
            Admission::Queued(node) => node,
            _ => panic!("expected to queue"),
        };
        let (first, second) = (queue(&limiter), queue(&limiter));
        let raised = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            limiter.set_limit(3, &PanicOnGrant);
        }));
        assert!(raised.is_err(), "the sink panicked");
        assert!(first.is_granted() && second.is_granted());
        assert_eq!((limiter.in_flight(), limiter.queued()), (3, 0));
    }
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use std::future::poll_fn;

    use loom::sync::atomic::AtomicIsize;

    use super::*;

    /// The model's view: who holds a slot, and the sum of reported deltas.
    struct Model {
        limiter: Limiter,
        holders: AtomicUsize,
        gauge: AtomicIsize,
        max_limit: usize,
    }

    impl Report for Model {
        fn change(&self, change: InFlightChange, _in_flight: usize, _limit: usize) {
            self.gauge
                .fetch_add(change.delta() as isize, Ordering::SeqCst);
        }
    }

    impl Model {
        fn new(limit: usize, queue: usize, max_limit: usize) -> Arc<Self> {
            Arc::new(Self {
                limiter: Limiter::new(limit, queue),
                holders: AtomicUsize::new(0),
                gauge: AtomicIsize::new(0),
                max_limit,
            })
        }

        /// Called once a slot is ours, by whatever path.
        fn hold(&self) {
            let now = self.holders.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(
                now <= self.max_limit,
                "{now} holders, limit {}",
                self.max_limit
            );
        }

        fn fast(&self) -> bool {
            match self.limiter.try_acquire() {
                Some(in_flight) => {
                    self.change(InFlightChange::Acquired, in_flight, 0);
                    self.hold();
                    true
                }
                None => false,
            }
        }

        /// Takes a slot (fast path, else queue and wait), or gives up when
        /// the queue is full.
        fn acquire(&self) -> bool {
            if self.fast() {
                return true;
            }
            match self.limiter.acquire_or_enqueue(self, far) {
                Admission::Acquired(in_flight) => {
                    self.change(InFlightChange::Acquired, in_flight, 0);
                }
                Admission::Queued(node) => {
                    loom::future::block_on(poll_fn(|cx| node.poll_granted(cx)));
                }
                Admission::QueueFull => return false,
            }
            self.hold();
            true
        }

        fn release(&self) {
            self.holders.fetch_sub(1, Ordering::SeqCst);
            self.limiter.release(self);
        }

        /// Takes the one slot, then queues a second request behind it.
        fn queue_behind_a_holder(&self) -> Arc<WaitNode> {
            assert!(self.fast());
            match self.limiter.acquire_or_enqueue(self, far) {
                Admission::Queued(node) => node,
                _ => panic!("expected to queue"),
            }
        }

        fn assert_empty(&self) {
            assert_eq!(self.limiter.in_flight(), 0);
            assert_eq!(self.limiter.queued(), 0);
            assert_eq!(self.gauge.load(Ordering::SeqCst), 0);
        }
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(f);
    }

    #[test]
    fn loom_fast_path_never_exceeds_the_limit() {
        model(|| {
            let state = Model::new(1, 0, 1);
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let state = state.clone();
                    loom::thread::spawn(move || {
                        if state.fast() {
                            state.release();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            state.assert_empty();
        });
    }

    #[test]
    fn loom_a_release_reaches_a_waiter() {
        // Two requests, one slot, room to wait: both must finish (a lost
        // wakeup would leave the waiter blocked, which loom reports).
        model(|| {
            let state = Model::new(1, 1, 1);
            let other = state.clone();
            let t = loom::thread::spawn(move || {
                assert!(other.acquire());
                other.release();
            });
            assert!(state.acquire());
            state.release();
            t.join().unwrap();
            state.assert_empty();
        });
    }

    #[test]
    fn loom_three_requests_one_slot_two_waiters() {
        // Every request gets through, one at a time, whatever the order of
        // the hand-offs.
        model(|| {
            let state = Model::new(1, 2, 1);
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let state = state.clone();
                    loom::thread::spawn(move || {
                        assert!(state.acquire());
                        state.release();
                    })
                })
                .collect();
            assert!(state.acquire());
            state.release();
            for t in threads {
                t.join().unwrap();
            }
            state.assert_empty();
        });
    }

    #[test]
    fn loom_a_waiter_past_its_wait_is_passed_over_never_granted() {
        // The front waiter's wait has run out and it leaves as the holder
        // releases; the one behind it, still within its wait, gets the
        // slot whichever comes first, and the first never does.
        model(|| {
            let state = Model::new(1, 2, 1);
            assert!(state.fast());
            let queue = |deadline| match state.limiter.acquire_or_enqueue(&*state, || deadline) {
                Admission::Queued(node) => node,
                _ => panic!("expected to queue"),
            };
            let expired = queue(tokio::time::Instant::now());
            let waiter = queue(far());
            let holder = state.clone();
            let t = loom::thread::spawn(move || holder.release());
            assert!(!state.limiter.cancel(&expired), "granted past its wait");
            loom::future::block_on(poll_fn(|cx| waiter.poll_granted(cx)));
            state.hold();
            state.release();
            t.join().unwrap();
            state.assert_empty();
        });
    }

    #[test]
    fn loom_a_cancelled_waiter_never_leaks_a_slot() {
        // A holder releases while the waiter gives up: whichever wins, the
        // slot ends up free.
        model(|| {
            let state = Model::new(1, 1, 1);
            let node = state.queue_behind_a_holder();
            let holder = state.clone();
            let t = loom::thread::spawn(move || holder.release());
            if state.limiter.cancel(&node) {
                state.hold();
                state.release();
            }
            t.join().unwrap();
            state.assert_empty();
        });
    }

    #[test]
    fn loom_a_freed_slot_goes_to_the_waiter_not_a_newcomer() {
        // A release frees the slot before it serves the queue: a newcomer
        // on the fast path in between must not take it, and the waiter
        // must get it.
        model(|| {
            let state = Model::new(1, 1, 1);
            let node = state.queue_behind_a_holder();
            let holder = state.clone();
            let releasing = loom::thread::spawn(move || holder.release());
            let newcomer = state.clone();
            let arriving = loom::thread::spawn(move || newcomer.fast());
            assert!(!arriving.join().unwrap(), "a newcomer overtook the waiter");
            releasing.join().unwrap();
            assert!(node.is_granted());
            state.hold();
            state.release();
            state.assert_empty();
        });
    }

    #[test]
    fn loom_a_raised_limit_admits_a_waiter() {
        model(|| {
            let state = Model::new(1, 1, 2);
            assert!(state.fast());
            let raiser = state.clone();
            let t = loom::thread::spawn(move || raiser.limiter.set_limit(2, &*raiser));
            assert!(state.acquire());
            t.join().unwrap();
            assert_eq!(state.limiter.in_flight(), 2);
            state.release();
            state.release();
            state.assert_empty();
        });
    }
}

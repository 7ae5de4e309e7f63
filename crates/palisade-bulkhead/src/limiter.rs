//! Permit accounting: the in-flight count, the limit, and the FIFO queue of
//! waiters.
//!
//! Taking a free slot is one compare-and-swap on `in_flight`; nothing else
//! is touched. Only a request that has to wait takes the queue's lock.
//!
//! The lost-wakeup race between a waiter that queues itself and a holder
//! that releases at the same moment is closed the way a Dekker lock is:
//! the waiter publishes itself (`queued`) and then tries the count again;
//! the releaser decrements the count and then looks at `queued`. Both are
//! sequentially consistent, so at least one of them sees the other and the
//! free slot reaches the waiter.

use std::collections::VecDeque;
use std::fmt;
use std::task::{Context, Poll, Waker};

use palisade_core::InFlightChange;

use crate::sync::{Arc, AtomicBool, AtomicUsize, Mutex, Ordering, lock};

/// Observes every change of the in-flight count, with the count right
/// after it. Called while the change is being made, so the sum of the
/// reported deltas is exact at all times.
pub(crate) trait Report {
    fn change(&self, change: InFlightChange, in_flight: usize, limit: usize);
}

impl<F: Fn(InFlightChange, usize, usize)> Report for F {
    fn change(&self, change: InFlightChange, in_flight: usize, limit: usize) {
        self(change, in_flight, limit);
    }
}

pub(crate) struct Limiter {
    in_flight: AtomicUsize,
    limit: AtomicUsize,
    /// The queue's length, readable without its lock.
    queued: AtomicUsize,
    waiters: Mutex<VecDeque<Arc<WaitNode>>>,
    queue_capacity: usize,
}

/// One queued request.
pub(crate) struct WaitNode {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
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
    pub(crate) fn new(limit: usize, queue_capacity: usize) -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            limit: AtomicUsize::new(limit),
            queued: AtomicUsize::new(0),
            waiters: Mutex::new(VecDeque::with_capacity(queue_capacity.min(1024))),
            queue_capacity,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit.load(Ordering::SeqCst)
    }

    pub(crate) fn queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }

    pub(crate) fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// The fast path: takes a free slot unless requests are already waiting
    /// (they come first). Returns the count right after taking it.
    #[inline]
    pub(crate) fn try_acquire(&self) -> Option<usize> {
        if self.queued.load(Ordering::SeqCst) > 0 {
            return None;
        }
        self.take_slot()
    }

    #[inline]
    fn take_slot(&self) -> Option<usize> {
        let limit = self.limit.load(Ordering::SeqCst);
        let mut current = self.in_flight.load(Ordering::SeqCst);
        loop {
            if current >= limit {
                return None;
            }
            match self.in_flight.compare_exchange_weak(
                current,
                current + 1,
                Ordering::SeqCst,
                Ordering::SeqCst,
            ) {
                Ok(_) => return Some(current + 1),
                Err(actual) => current = actual,
            }
        }
    }

    /// The slow path: takes a slot if nobody is queued and one is free,
    /// otherwise joins the queue if it has room.
    pub(crate) fn acquire_or_enqueue(&self, report: &impl Report) -> Admission {
        let mut waiters = lock(&self.waiters);
        if waiters.is_empty() {
            if let Some(in_flight) = self.take_slot() {
                return Admission::Acquired(in_flight);
            }
        }
        if waiters.len() >= self.queue_capacity {
            return Admission::QueueFull;
        }
        let node = Arc::new(WaitNode {
            granted: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        waiters.push_back(node.clone());
        self.queued.store(waiters.len(), Ordering::SeqCst);
        // A holder may have released between our look at the count and our
        // publishing ourselves: hand out what is free now.
        self.grant_free_slots(&mut waiters, report);
        Admission::Queued(node)
    }

    /// Gives back one slot: hands it to the oldest waiter when there is one
    /// and the limit still allows it, otherwise frees it.
    pub(crate) fn release(&self, report: &impl Report) {
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut waiters = lock(&self.waiters);
            let in_flight = self.in_flight.load(Ordering::SeqCst);
            let limit = self.limit.load(Ordering::SeqCst);
            // An adaptive limit may have dropped below the count: then the
            // slot is freed, not passed on.
            if in_flight <= limit {
                if let Some(node) = waiters.pop_front() {
                    self.queued.store(waiters.len(), Ordering::SeqCst);
                    report.change(InFlightChange::Released, in_flight - 1, limit);
                    report.change(InFlightChange::Acquired, in_flight, limit);
                    node.grant();
                    return;
                }
            }
        }
        let in_flight = self.in_flight.fetch_sub(1, Ordering::SeqCst) - 1;
        report.change(InFlightChange::Released, in_flight, self.limit());
        if self.queued.load(Ordering::SeqCst) > 0 {
            // A waiter queued itself while we were freeing the slot.
            let mut waiters = lock(&self.waiters);
            self.grant_free_slots(&mut waiters, report);
        }
    }

    /// Changes the limit; a higher limit admits waiters at once.
    pub(crate) fn set_limit(&self, limit: usize, report: &impl Report) {
        self.limit.store(limit, Ordering::SeqCst);
        if self.queued.load(Ordering::SeqCst) > 0 {
            let mut waiters = lock(&self.waiters);
            self.grant_free_slots(&mut waiters, report);
        }
    }

    /// Leaves the queue. Returns `true` when the node had been granted a
    /// slot before it could leave: the caller then holds that slot and must
    /// release it.
    pub(crate) fn cancel(&self, node: &Arc<WaitNode>) -> bool {
        let mut waiters = lock(&self.waiters);
        if let Some(position) = waiters.iter().position(|n| Arc::ptr_eq(n, node)) {
            waiters.remove(position);
            self.queued.store(waiters.len(), Ordering::SeqCst);
            false
        } else {
            // Only granting takes a node out of the queue, under this lock.
            node.granted.load(Ordering::SeqCst)
        }
    }

    fn grant_free_slots(&self, waiters: &mut VecDeque<Arc<WaitNode>>, report: &impl Report) {
        while !waiters.is_empty() {
            let Some(in_flight) = self.take_slot() else {
                break;
            };
            if let Some(node) = waiters.pop_front() {
                self.queued.store(waiters.len(), Ordering::SeqCst);
                report.change(InFlightChange::Acquired, in_flight, self.limit());
                node.grant();
            }
        }
    }
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("in_flight", &self.in_flight())
            .field("limit", &self.limit())
            .field("queued", &self.queued())
            .field("queue_capacity", &self.queue_capacity)
            .finish()
    }
}

impl WaitNode {
    fn grant(&self) {
        self.granted.store(true, Ordering::SeqCst);
        let waker = lock(&self.waker).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn is_granted(&self) -> bool {
        self.granted.load(Ordering::SeqCst)
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
        // The granter sets the flag before taking the waker: if it took
        // the old one, the flag is visible now.
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
        let Admission::Queued(first) = limiter.acquire_or_enqueue(&gauge) else {
            panic!("expected to queue")
        };
        let Admission::Queued(second) = limiter.acquire_or_enqueue(&gauge) else {
            panic!("expected to queue")
        };
        assert!(matches!(
            limiter.acquire_or_enqueue(&gauge),
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
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge) else {
            panic!("expected to queue")
        };
        assert!(!limiter.cancel(&node));
        assert_eq!(limiter.queued(), 0);
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge) else {
            panic!("expected to queue")
        };
        limiter.release(&gauge);
        assert!(limiter.cancel(&node), "granted before cancelling");
        limiter.release(&gauge);
        assert_eq!(limiter.in_flight(), 0);
    }

    #[test]
    fn a_lower_limit_frees_instead_of_handing_off_and_a_higher_one_admits() {
        let gauge = Gauge::default();
        let limiter = Limiter::new(2, 4);
        take(&limiter, &gauge).unwrap();
        take(&limiter, &gauge).unwrap();
        let Admission::Queued(node) = limiter.acquire_or_enqueue(&gauge) else {
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
}

#[cfg(all(test, palisade_loom))]
mod loom_tests {
    use std::future::poll_fn;

    use loom::sync::atomic::AtomicUsize as LoomUsize;

    use super::*;

    /// Checks the reported deltas against the real count and the limit.
    struct Checked {
        gauge: LoomUsize,
        limit: usize,
    }

    impl Report for Checked {
        fn change(&self, change: InFlightChange, in_flight: usize, _limit: usize) {
            match change {
                InFlightChange::Acquired => {
                    let now = self.gauge.fetch_add(1, Ordering::SeqCst) + 1;
                    assert!(now <= self.limit, "more than the limit in flight");
                }
                InFlightChange::Released => {
                    self.gauge.fetch_sub(1, Ordering::SeqCst);
                }
            }
            assert!(in_flight <= self.limit);
        }
    }

    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut builder = loom::model::Builder::new();
        if builder.preemption_bound.is_none() {
            builder.preemption_bound = Some(3);
        }
        builder.check(f);
    }

    /// Takes a slot (fast path, else queue and wait) and gives it back.
    fn acquire_and_release(limiter: &Limiter, report: &Checked) {
        match limiter.try_acquire() {
            Some(_) => report.change(InFlightChange::Acquired, 0, 0),
            None => match limiter.acquire_or_enqueue(report) {
                Admission::Acquired(_) => report.change(InFlightChange::Acquired, 0, 0),
                Admission::Queued(node) => {
                    loom::future::block_on(poll_fn(|cx| node.poll_granted(cx)));
                }
                Admission::QueueFull => return,
            },
        }
        limiter.release(report);
    }

    fn shared(limit: usize, queue: usize) -> Arc<(Limiter, Checked)> {
        Arc::new((
            Limiter::new(limit, queue),
            Checked {
                gauge: LoomUsize::new(0),
                limit,
            },
        ))
    }

    #[test]
    fn loom_fast_path_never_exceeds_the_limit() {
        model(|| {
            let state = shared(1, 0);
            let threads: Vec<_> = (0..2)
                .map(|_| {
                    let state = state.clone();
                    loom::thread::spawn(move || {
                        if state.0.try_acquire().is_some() {
                            state.1.change(InFlightChange::Acquired, 0, 0);
                            state.0.release(&state.1);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(state.0.in_flight(), 0);
            assert_eq!(state.1.gauge.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn loom_a_release_reaches_a_waiter() {
        // Two requests, one slot, room to wait: both must finish (a lost
        // wakeup would leave the waiter blocked, which loom reports).
        model(|| {
            let state = shared(1, 1);
            let other = state.clone();
            let t = loom::thread::spawn(move || acquire_and_release(&other.0, &other.1));
            acquire_and_release(&state.0, &state.1);
            t.join().unwrap();
            assert_eq!(state.0.in_flight(), 0);
            assert_eq!(state.0.queued(), 0);
            assert_eq!(state.1.gauge.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn loom_a_cancelled_waiter_never_leaks_a_slot() {
        // A holder releases while the waiter gives up: whichever wins, the
        // slot ends up free.
        model(|| {
            let state = shared(1, 1);
            assert!(state.0.try_acquire().is_some());
            state.1.change(InFlightChange::Acquired, 0, 0);
            let Admission::Queued(node) = state.0.acquire_or_enqueue(&state.1) else {
                panic!("expected to queue")
            };
            let holder = state.clone();
            let t = loom::thread::spawn(move || holder.0.release(&holder.1));
            if state.0.cancel(&node) {
                state.0.release(&state.1);
            }
            t.join().unwrap();
            assert_eq!(state.0.in_flight(), 0);
            assert_eq!(state.0.queued(), 0);
            assert_eq!(state.1.gauge.load(Ordering::SeqCst), 0);
        });
    }

    #[test]
    fn loom_a_raised_limit_admits_a_waiter() {
        model(|| {
            let state = Arc::new((
                Limiter::new(1, 1),
                Checked {
                    gauge: LoomUsize::new(0),
                    limit: 2,
                },
            ));
            assert!(state.0.try_acquire().is_some());
            state.1.change(InFlightChange::Acquired, 0, 0);
            let raiser = state.clone();
            let t = loom::thread::spawn(move || raiser.0.set_limit(2, &raiser.1));
            match state.0.acquire_or_enqueue(&state.1) {
                Admission::Acquired(_) => state.1.change(InFlightChange::Acquired, 0, 0),
                Admission::Queued(node) => {
                    loom::future::block_on(poll_fn(|cx| node.poll_granted(cx)));
                }
                Admission::QueueFull => panic!("the queue has room"),
            }
            t.join().unwrap();
            assert_eq!(state.0.in_flight(), 2);
            state.0.release(&state.1);
            state.0.release(&state.1);
            assert_eq!(state.0.in_flight(), 0);
            assert_eq!(state.1.gauge.load(Ordering::SeqCst), 0);
        });
    }
}

//! Offload: best-effort delivery of work to non-core dependencies.
//!
//! Audit logs, analytics, reporting: work that must not slow down or fail
//! the request that produces it. An [`Offload`] is a cheap, cloneable
//! handle whose [`push`](Offload::push) never blocks and never fails
//! because of the dependency. Pushed items wait in a bounded queue; a few
//! background workers call a tower `Service` with each item, retrying with
//! exponential [`Backoff`] and jitter up to a maximum number of attempts.
//!
//! Work is dropped, never silently, when
//!
//! - the queue is full when it is pushed ([`DropReason::QueueFull`]),
//! - every attempt failed ([`DropReason::RetriesExhausted`]),
//! - the service's readiness failed: `poll_ready` returned an error, after
//!   which a tower service is not used again, so the work is not retried
//!   and the worker goes on with a fresh clone of the service the queue
//!   was built with ([`DropReason::ServiceFailed`]),
//! - it is still queued or in progress when [`shutdown`](Offload::shutdown)'s
//!   drain deadline passes, or its push raced with shutdown and it reached
//!   the queue after the workers had stopped ([`DropReason::Shutdown`]),
//! - it is pushed after shutdown began ([`DropReason::Closed`]).
//!
//! A service that panics fails that attempt: the panic is caught, logged
//! at error level with its stack and the queue's name, and the item is
//! retried like any failed one. Every failed attempt, a panic or an error,
//! is an [`Event::OffloadAttemptFailed`] with its
//! [`cause`](palisade_core::AttemptFailure), so a panic that a retry
//! recovers from is still counted.
//!
//! Every drop is an [`Event::OffloadDropped`]
//! with its reason and is counted in [`OffloadStats`]; every delivery is an
//! [`Event::OffloadDelivered`]. Once
//! the queue is shut down, `pushed == delivered + dropped_total()` exactly
//! (a worker whose service blocks its thread past the shutdown's abort
//! grace counts its item when it stops).
//!
//! Dropping every handle without calling `shutdown` lets the workers
//! deliver what is queued (with no deadline) and stop.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::DropReason;
//! use palisade_task::offload::{Offload, Pushed};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let audit_sink = tower::service_fn(|line: String| async move {
//!     // send `line` to the audit service
//!     Ok::<_, std::io::Error>(())
//! });
//! let audit: Offload<String> = Offload::builder(audit_sink)
//!     .name("audit")
//!     .queue_capacity(1024)
//!     .max_attempts(3)
//!     .build()
//!     .unwrap();
//!
//! assert_eq!(audit.push("user 7 logged in".to_owned()), Pushed::Queued);
//!
//! let stats = audit.shutdown().await;
//! assert_eq!(stats.delivered, 1);
//! assert_eq!(audit.push("too late".to_owned()), Pushed::Dropped(DropReason::Closed));
//! # }
//! ```

mod worker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::panic::{self as capture, CaptureOptions};
use palisade_core::{BoxError, ConfigError, DropReason, Event, LayerKind, Metrics, PolicyName};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_service::Service;

use crate::catch::contained;

pub use crate::backoff::Backoff;

/// What became of a pushed item.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// It is queued for delivery.
    Queued,
    /// It was dropped at once, for this reason (counted and reported).
    Dropped(DropReason),
}

/// The counts of an [`Offload`] queue.
///
/// At any time `pushed == delivered + dropped_total() + queued + in_flight`
/// up to items moving between two of these counts; after
/// [`Offload::shutdown`], `queued` and `in_flight` are 0 and the equality
/// is exact, unless a worker was left running past the abort grace (see
/// [`Offload::shutdown`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OffloadStats {
    /// Items pushed, whatever became of them.
    pub pushed: u64,
    /// Items the service accepted.
    pub delivered: u64,
    /// Items dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Items dropped after every attempt failed.
    pub dropped_retries_exhausted: u64,
    /// Items dropped because the service's readiness failed.
    pub dropped_service_failed: u64,
    /// Items dropped by shutdown: still queued or in progress at the drain
    /// deadline, or queued by a push that raced with shutdown.
    pub dropped_shutdown: u64,
    /// Items pushed after shutdown began.
    pub dropped_closed: u64,
    /// Items waiting in the queue now.
    pub queued: usize,
    /// Items a worker is delivering now.
    pub in_flight: usize,
}

impl OffloadStats {
    /// Items dropped for `reason`.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        match reason {
            DropReason::QueueFull => self.dropped_queue_full,
            DropReason::RetriesExhausted => self.dropped_retries_exhausted,
            DropReason::Shutdown => self.dropped_shutdown,
            DropReason::Closed => self.dropped_closed,
            DropReason::ServiceFailed => self.dropped_service_failed,
            _ => 0,
        }
    }

    /// Items dropped, all reasons together.
    pub fn dropped_total(&self) -> u64 {
        self.dropped_queue_full
            + self.dropped_retries_exhausted
            + self.dropped_service_failed
            + self.dropped_shutdown
            + self.dropped_closed
    }
}

/// A cheap, cloneable handle to a bounded offload queue.
pub struct Offload<Req> {
    inner: Arc<Inner<Req>>,
}

struct Inner<Req> {
    sender: mpsc::Sender<Req>,
    shared: Arc<Shared<Req>>,
    capacity: usize,
    /// Held for the whole of a shutdown, so a second call waits for the
    /// first instead of draining the queue under its workers.
    workers: Mutex<Vec<Worker>>,
    drain_deadline: Duration,
    abort_grace: Duration,
}

/// A worker task and its name, for the log when it will not stop.
struct Worker {
    name: Arc<str>,
    join: JoinHandle<()>,
}

/// What the handle and the workers share.
struct Shared<Req> {
    name: PolicyName,
    metrics: Metrics,
    capture: CaptureOptions,
    backoff: Backoff,
    max_attempts: u32,
    receiver: Mutex<mpsc::Receiver<Req>>,
    closed: AtomicBool,
    /// Fires when shutdown begins: workers empty the queue, then stop.
    closing: CancellationToken,
    /// Fires at the drain deadline: workers stop at once.
    stop: CancellationToken,
    pushed: AtomicU64,
    delivered: AtomicU64,
    dropped: [AtomicU64; 5],
    in_flight: AtomicUsize,
}

fn drop_index(reason: DropReason) -> usize {
    match reason {
        DropReason::QueueFull => 0,
        DropReason::RetriesExhausted => 1,
        DropReason::Shutdown => 2,
        DropReason::ServiceFailed => 4,
        _ => 3,
    }
}

impl<Req> Shared<Req> {
    /// Drops what the user gave or the service returned: an item not
    /// delivered, an error. A destructor that panics (a drop check left in
    /// a user's type) is logged instead of ending a worker, a push or a
    /// shutdown, whose counts it would cut short.
    pub(crate) fn discard<T>(&self, value: T) {
        palisade_core::panic::contain_drop(&self.name, self.capture, move || drop(value));
    }

    /// Counts a dropped item, then reports it. The reports are contained:
    /// a sink or subscriber that panics must not make `push` panic, nor
    /// end a worker (whose item would be dropped, and reported, again).
    fn drop_item(&self, reason: DropReason, detail: Option<&fmt::Arguments<'_>>) {
        self.dropped[drop_index(reason)].fetch_add(1, Ordering::Relaxed);
        contained(|| {
            self.metrics.emit(&Event::OffloadDropped {
                queue: self.name.as_str(),
                reason,
            });
        });
        contained(|| self.log_drop(reason, detail));
    }

    fn log_drop(&self, reason: DropReason, detail: Option<&fmt::Arguments<'_>>) {
        match (reason, detail) {
            (DropReason::QueueFull | DropReason::Closed, _) => {
                tracing::debug!(
                    queue = self.name.as_str(),
                    reason = reason.as_str(),
                    "offloaded work dropped"
                );
            }
            (_, Some(detail)) => {
                tracing::warn!(queue = self.name.as_str(), reason = reason.as_str(), %detail, "offloaded work dropped");
            }
            (_, None) => {
                tracing::warn!(
                    queue = self.name.as_str(),
                    reason = reason.as_str(),
                    "offloaded work dropped"
                );
            }
        }
    }
}

/// Builds an [`Offload`] queue around a service.
pub struct OffloadBuilder<S> {
    service: S,
    name: PolicyName,
    metrics: Metrics,
    capture: CaptureOptions,
    capacity: usize,
    workers: usize,
    max_attempts: u32,
    backoff: Backoff,
    seed: Option<u64>,
    drain_deadline: Duration,
    abort_grace: Duration,
}

impl<S> fmt::Debug for OffloadBuilder<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OffloadBuilder")
            .field("name", &self.name)
            .field("capacity", &self.capacity)
            .field("workers", &self.workers)
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("drain_deadline", &self.drain_deadline)
            .field("abort_grace", &self.abort_grace)
            .finish()
    }
}

impl<S> OffloadBuilder<S> {
    /// The queue's name: the `queue` label of its events. Default:
    /// `"offload"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where delivery and drop events go. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// Items that may wait. Default: 1024. `1 <= x <= 1_048_576`.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Background workers, each calling its own clone of the service.
    /// Default: 1. `1 <= x <= 256`.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// Calls per item, the first included. Default: 3. `1 <= x <= 100`.
    #[must_use]
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// Waits between attempts. Default: 100 ms doubling to 10 s, jitter 0.5.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// Seeds the jitter, for reproducible retries. Default: random.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How long [`Offload::shutdown`] lets the workers deliver what is
    /// queued before it drops the rest. Default: 5 s. `x > 0`.
    #[must_use]
    pub fn drain_deadline(mut self, deadline: Duration) -> Self {
        self.drain_deadline = deadline;
        self
    }

    /// How long [`Offload::shutdown`], once the drain deadline has passed
    /// and it has stopped the workers, waits for them to end before it
    /// returns. Default: 1 s. `x > 0`: a worker stops at its next
    /// `.await`, which takes a turn of the runtime, so with no wait at all
    /// the returned counts would miss what the stopped workers held. One
    /// whose service blocks its thread (synchronous I/O in `poll_ready` or
    /// `call`) cannot be stopped, and is logged and left behind.
    #[must_use]
    pub fn abort_grace(mut self, grace: Duration) -> Self {
        self.abort_grace = grace;
        self
    }

    /// Capture a backtrace when the service panics. Default: `true`.
    #[must_use]
    pub fn backtrace(mut self, capture: bool) -> Self {
        self.capture.backtrace = capture;
        self
    }

    /// Builds the queue and starts its workers on the current tokio
    /// runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a value out of range, or (field `runtime`)
    /// when called outside a tokio runtime.
    pub fn build<Req>(self) -> Result<Offload<Req>, ConfigError>
    where
        S: Service<Req> + Clone + Send + 'static,
        S::Future: Send,
        S::Error: Into<BoxError>,
        Req: Clone + Send + 'static,
    {
        let check = Validate::new(LayerKind::Offload, &self.name);
        check.label("name", self.name.as_str())?;
        check.in_range("queue_capacity", self.capacity, 1, 1 << 20)?;
        check.in_range("workers", self.workers, 1, 256)?;
        check.in_range("max_attempts", self.max_attempts, 1, 100)?;
        self.backoff.validate(&check)?;
        check.positive_duration("drain_deadline", self.drain_deadline)?;
        check.positive_duration("abort_grace", self.abort_grace)?;
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Err(check.error("runtime", "none", "called inside a tokio runtime"));
        };
        capture::install_hook();

        let (sender, receiver) = mpsc::channel(self.capacity);
        let shared = Arc::new(Shared {
            name: self.name,
            metrics: self.metrics,
            capture: self.capture,
            backoff: self.backoff,
            max_attempts: self.max_attempts,
            receiver: Mutex::new(receiver),
            closed: AtomicBool::new(false),
            closing: CancellationToken::new(),
            stop: CancellationToken::new(),
            pushed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            dropped: Default::default(),
            in_flight: AtomicUsize::new(0),
        });
        let mut seeds = crate::backoff::rng(self.seed);
        let workers = (0..self.workers)
            .map(|i| {
                let name: Arc<str> = format!("{}-worker-{i}", shared.name).into();
                let rng = fastrand::Rng::with_seed(seeds.u64(..));
                let join = runtime.spawn(worker::work(
                    shared.clone(),
                    self.service.clone(),
                    self.service.clone(),
                    name.clone(),
                    rng,
                ));
                Worker { name, join }
            })
            .collect();
        Ok(Offload {
            inner: Arc::new(Inner {
                sender,
                shared,
                capacity: self.capacity,
                workers: Mutex::new(workers),
                drain_deadline: self.drain_deadline,
                abort_grace: self.abort_grace,
            }),
        })
    }
}

impl Offload<()> {
    /// A builder for a queue delivering to `service`. The item type is
    /// chosen by [`OffloadBuilder::build`], from the service's request type.
    pub fn builder<S>(service: S) -> OffloadBuilder<S> {
        OffloadBuilder {
            service,
            name: PolicyName::new("offload"),
            metrics: Metrics::noop(),
            capture: CaptureOptions::default(),
            capacity: 1024,
            workers: 1,
            max_attempts: 3,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(10)),
            seed: None,
            drain_deadline: Duration::from_secs(5),
            abort_grace: Duration::from_secs(1),
        }
    }
}

impl<Req> Offload<Req> {
    /// The queue's name.
    pub fn name(&self) -> &PolicyName {
        &self.inner.shared.name
    }

    /// Queues `item` for delivery without waiting.
    ///
    /// Never blocks and never fails because of the dependency: when the
    /// item cannot be queued it is dropped, counted and reported, and the
    /// returned [`Pushed`] says why.
    pub fn push(&self, item: Req) -> Pushed {
        let shared = &self.inner.shared;
        shared.pushed.fetch_add(1, Ordering::Relaxed);
        let (reason, item) = if shared.closed.load(Ordering::Acquire) {
            (DropReason::Closed, item)
        } else {
            match self.inner.sender.try_send(item) {
                Ok(()) => return Pushed::Queued,
                Err(mpsc::error::TrySendError::Full(item)) => (DropReason::QueueFull, item),
                Err(mpsc::error::TrySendError::Closed(item)) => (DropReason::Closed, item),
            }
        };
        shared.drop_item(reason, None);
        shared.discard(item);
        Pushed::Dropped(reason)
    }

    /// The queue's counts now.
    pub fn stats(&self) -> OffloadStats {
        let s = &self.inner.shared;
        let dropped = |reason| s.dropped[drop_index(reason)].load(Ordering::Relaxed);
        OffloadStats {
            pushed: s.pushed.load(Ordering::Relaxed),
            delivered: s.delivered.load(Ordering::Relaxed),
            dropped_queue_full: dropped(DropReason::QueueFull),
            dropped_retries_exhausted: dropped(DropReason::RetriesExhausted),
            dropped_service_failed: dropped(DropReason::ServiceFailed),
            dropped_shutdown: dropped(DropReason::Shutdown),
            dropped_closed: dropped(DropReason::Closed),
            queued: self.inner.capacity - self.inner.sender.capacity(),
            in_flight: s.in_flight.load(Ordering::Acquire),
        }
    }

    /// Shuts the queue down: refuses new items (dropped as
    /// [`DropReason::Closed`]), lets the workers deliver what is queued
    /// until the drain deadline (tokio time), then stops them and drops
    /// what is left as [`DropReason::Shutdown`]. Returns the final counts.
    ///
    /// It returns at most the [abort grace](OffloadBuilder::abort_grace)
    /// after the drain deadline. A worker still running then (its service
    /// blocks a thread) is logged and left to stop by itself at its next
    /// `.await`; until it does, its item is counted in `in_flight`, and then
    /// as delivered or dropped.
    ///
    /// Calling it again (from any clone) waits for the first call to finish,
    /// waits again for the workers left running, and returns the counts.
    ///
    /// The shutdown runs in a task of its own: dropping the returned future
    /// (a deadline of the caller's own around it) stops the wait, not the
    /// shutdown, which still drains, stops the workers and counts every
    /// item left. Only a runtime that shuts down first stops it; the counts
    /// returned then are those of that moment.
    pub async fn shutdown(&self) -> OffloadStats
    where
        Req: Send + 'static,
    {
        let (this, counts) = (self.clone(), self.clone());
        crate::detach::to_completion(async move { this.shut_down().await }, move || {
            counts.stats()
        })
        .await
    }

    async fn shut_down(&self) -> OffloadStats {
        let shared = &self.inner.shared;
        shared.closed.store(true, Ordering::Release);
        shared.closing.cancel();
        let mut workers = self.inner.workers.lock().await;
        let drained = tokio::time::timeout(self.inner.drain_deadline, join_all(&mut workers))
            .await
            .is_ok();
        if !drained {
            contained(|| {
                tracing::warn!(
                    queue = shared.name.as_str(),
                    deadline = ?self.inner.drain_deadline,
                    "offload drain deadline passed; dropping what is left"
                );
            });
            shared.stop.cancel();
            for worker in workers.iter() {
                worker.join.abort();
            }
            let stopped = tokio::time::timeout(self.inner.abort_grace, join_all(&mut workers))
                .await
                .is_ok();
            if !stopped {
                let running: Vec<&str> = workers
                    .iter()
                    .filter(|w| !w.join.is_finished())
                    .map(|w| &*w.name)
                    .collect();
                contained(|| {
                    tracing::warn!(
                        queue = shared.name.as_str(),
                        workers = ?running,
                        grace = ?self.inner.abort_grace,
                        "offload workers did not stop within the abort grace; \
                         a service may be blocking its thread"
                    );
                });
            }
        }
        let mut receiver = shared.receiver.lock().await;
        receiver.close();
        // `recv` ends only once the queue is empty and no push holds a
        // slot: a push that reserved its slot before `close` and sends
        // after it is still counted, here, instead of being lost.
        while let Some(item) = receiver.recv().await {
            shared.drop_item(DropReason::Shutdown, None);
            shared.discard(item);
        }
        drop(receiver);
        drop(workers);
        self.stats()
    }
}

/// Waits for every worker to end, forgetting each one that did.
async fn join_all(workers: &mut Vec<Worker>) {
    while let Some(worker) = workers.last_mut() {
        let _ = (&mut worker.join).await;
        workers.pop();
    }
}

impl<Req> Clone for Offload<Req> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<Req> fmt::Debug for Offload<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Offload")
            .field("name", &self.inner.shared.name)
            .field("stats", &self.stats())
            .finish()
    }
}

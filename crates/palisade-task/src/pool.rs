//! A fixed number of workers serving a bounded queue of jobs.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::atomic::{self, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use futures_core::Stream;
use palisade_core::config::Validate;
use palisade_core::{ConfigError, LayerKind, Metrics, PolicyName};
use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::catch::{CatchUnwind, contained};
use crate::exit::TaskOutput;
use crate::group::{GroupInner, ShutdownReport, TaskGroup};

type Job = Pin<Box<dyn Future<Output = JobEnd> + Send>>;

enum JobEnd {
    Completed,
    Failed,
}

/// Runs jobs on a fixed number of worker tasks, from a bounded queue.
///
/// At most `workers` jobs run at once, and the pool never spawns a task per
/// job: jobs wait in a queue of `queue_capacity` until a worker is free.
/// [`try_submit`](Self::try_submit) refuses a job when the queue is full;
/// [`submit`](Self::submit) waits for room; [`submit_stream`](Self::submit_stream)
/// feeds a whole stream with backpressure.
///
/// A job that panics or fails is counted and logged, and its worker goes
/// on with the next job. The workers are tasks of a [`TaskGroup`] named
/// after the pool, so they are reported like any supervised task.
///
/// # Example
///
/// ```
/// use palisade_task::WorkerPool;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let pool = WorkerPool::builder().name("thumbnails").workers(4).build().unwrap();
/// for i in 0..10_u32 {
///     pool.submit(async move { Ok::<_, std::io::Error>(i * 2) }).await.unwrap();
/// }
/// pool.shutdown(std::time::Duration::from_secs(5)).await;
/// assert_eq!(pool.stats().completed, 10);
/// # }
/// ```
#[derive(Clone)]
pub struct WorkerPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    name: PolicyName,
    workers: usize,
    capacity: usize,
    sender: mpsc::Sender<Job>,
    shared: Arc<WorkerShared>,
    group: TaskGroup,
}

/// What the workers share.
struct WorkerShared {
    /// Taken out by the shutdown that drains it last.
    receiver: Mutex<Option<mpsc::Receiver<Job>>>,
    /// The closed queue, handed over by that shutdown once its workers are
    /// done: the shutdown drains it, and so does a submit that sends into a
    /// slot it reserved before the close, for its own job.
    late: std::sync::Mutex<Option<mpsc::Receiver<Job>>>,
    /// Set once `late` holds the queue.
    handed_over: AtomicBool,
    closed: AtomicBool,
    submitted: AtomicU64,
    rejected: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    panicked: AtomicU64,
    abandoned: AtomicU64,
    dropped_at_shutdown: AtomicU64,
    running: AtomicUsize,
}

/// Counts of a [`WorkerPool`], read with [`WorkerPool::stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Worker tasks.
    pub workers: usize,
    /// Jobs accepted into the queue.
    pub submitted: u64,
    /// Jobs refused because the queue was full or the pool closed.
    pub rejected: u64,
    /// Jobs that completed.
    pub completed: u64,
    /// Jobs that returned an error.
    pub failed: u64,
    /// Jobs that panicked.
    pub panicked: u64,
    /// Jobs stopped half-way when shutdown aborted their worker.
    pub abandoned: u64,
    /// Jobs still queued when shutdown ended, or sent into a slot reserved
    /// before the close after the workers were done; dropped unrun.
    pub dropped_at_shutdown: u64,
    /// Jobs running now.
    pub running: usize,
    /// Jobs waiting in the queue now.
    pub queued: usize,
}

/// Why a job was not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SubmitError {
    /// The queue was full.
    Full,
    /// The pool is shut down.
    Closed,
}

impl fmt::Display for SubmitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubmitError::Full => "worker pool queue full",
            SubmitError::Closed => "worker pool shut down",
        })
    }
}

impl std::error::Error for SubmitError {}

/// Builds a [`WorkerPool`].
#[derive(Clone, Debug)]
pub struct WorkerPoolBuilder {
    name: PolicyName,
    metrics: Metrics,
    workers: usize,
    capacity: usize,
}

impl Default for WorkerPoolBuilder {
    fn default() -> Self {
        Self {
            name: PolicyName::new("pool"),
            metrics: Metrics::noop(),
            workers: 4,
            capacity: 128,
        }
    }
}

impl WorkerPoolBuilder {
    /// The pool's name: the group label of its workers' events. Default:
    /// `"pool"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the workers' events go. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// How many jobs run at once. Default: 4. `1 <= x <= 4096`.
    #[must_use]
    pub fn workers(mut self, workers: usize) -> Self {
        self.workers = workers;
        self
    }

    /// How many jobs may wait. Default: 128. `1 <= x <= 1_048_576`.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Builds the pool and starts its workers on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for a value out of range, or (field `runtime`)
    /// when called outside a tokio runtime.
    pub fn build(self) -> Result<WorkerPool, ConfigError> {
        let check = Validate::new(LayerKind::Task, &self.name);
        check.label("name", self.name.as_str())?;
        check.in_range("workers", self.workers, 1, 4096)?;
        check.in_range("queue_capacity", self.capacity, 1, 1 << 20)?;
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(check.error("runtime", "none", "called inside a tokio runtime"));
        }
        let group = TaskGroup::builder()
            .name(self.name.clone())
            .metrics(self.metrics)
            .build()?;
        let (sender, receiver) = mpsc::channel(self.capacity);
        let shared = Arc::new(WorkerShared {
            receiver: Mutex::new(Some(receiver)),
            late: std::sync::Mutex::new(None),
            handed_over: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            submitted: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            panicked: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            dropped_at_shutdown: AtomicU64::new(0),
            running: AtomicUsize::new(0),
        });
        for i in 0..self.workers {
            let worker_name: Arc<str> = format!("{}-worker-{i}", self.name).into();
            let token = group.token();
            let inner = group.inner().clone();
            let shared = shared.clone();
            let _detached = group.spawn(worker_name.clone(), async move {
                work(&inner, &shared, &token, &worker_name).await;
            });
        }
        Ok(WorkerPool {
            inner: Arc::new(PoolInner {
                name: self.name,
                workers: self.workers,
                capacity: self.capacity,
                sender,
                shared,
                group,
            }),
        })
    }
}

/// Counts a job as running until dropped; a job dropped before it finished
/// was abandoned.
struct Running<'a> {
    shared: &'a WorkerShared,
    finished: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.shared.running.fetch_sub(1, Ordering::AcqRel);
        if !self.finished {
            self.shared.abandoned.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn work(group: &GroupInner, shared: &WorkerShared, token: &CancellationToken, worker: &str) {
    loop {
        let job = {
            let mut receiver = shared.receiver.lock().await;
            let Some(receiver) = receiver.as_mut() else {
                return;
            };
            if token.is_cancelled() {
                // Draining: run what is queued, then stop.
                match receiver.try_recv() {
                    Ok(job) => job,
                    Err(_) => return,
                }
            } else {
                tokio::select! {
                    biased;
                    () = token.cancelled() => continue,
                    job = receiver.recv() => match job {
                        Some(job) => job,
                        None => return,
                    },
                }
            }
        };
        shared.running.fetch_add(1, Ordering::AcqRel);
        let mut running = Running {
            shared,
            finished: false,
        };
        let end = CatchUnwind::new(job, group.name.clone(), group.capture).await;
        running.finished = true;
        drop(running);
        match end {
            Ok(JobEnd::Completed) => shared.completed.fetch_add(1, Ordering::Relaxed),
            Ok(JobEnd::Failed) => shared.failed.fetch_add(1, Ordering::Relaxed),
            Err(panicked) => {
                group.log_panic(worker, &panicked);
                shared.panicked.fetch_add(1, Ordering::Relaxed)
            }
        };
    }
}

impl WorkerPool {
    /// A builder with the defaults: 4 workers, a queue of 128.
    pub fn builder() -> WorkerPoolBuilder {
        WorkerPoolBuilder::default()
    }

    /// The pool's name.
    pub fn name(&self) -> &PolicyName {
        &self.inner.name
    }

    fn boxed<F>(&self, job: F) -> Job
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let pool = self.inner.name.clone();
        let capture = self.inner.group.inner().capture;
        Box::pin(async move {
            // The result is the user's: whatever its formatting for the
            // log or its destructor does, the job ended as it returned.
            match job.await.into_result() {
                Ok(value) => {
                    palisade_core::panic::contain_drop(&pool, capture, move || drop(value));
                    JobEnd::Completed
                }
                Err(error) => {
                    contained(|| {
                        tracing::warn!(pool = pool.as_str(), error = %error, "pool job failed");
                    });
                    palisade_core::panic::contain_drop(&pool, capture, move || drop(error));
                    JobEnd::Failed
                }
            }
        })
    }

    /// Refuses `job`: drops it unrun (see [`discard`](Self::discard)) and
    /// counts it.
    fn refuse<J>(&self, job: J, error: SubmitError) -> Result<(), SubmitError> {
        self.discard(job);
        self.inner.shared.rejected.fetch_add(1, Ordering::Relaxed);
        contained(|| tracing::debug!(pool = self.inner.name.as_str(), %error, "job refused"));
        Err(error)
    }

    /// Queues `job` in the slot reserved for it. Counted before it is
    /// sent: a drain that counts it as dropped never sees more jobs than
    /// were submitted.
    ///
    /// A slot reserved before the queue closed can be sent into after the
    /// shutdown took the queue from its workers. The sender then drains the
    /// job itself, so that it is counted as dropped before this returns.
    fn queue<F>(&self, slot: mpsc::Permit<'_, Job>, job: F) -> Result<(), SubmitError>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let shared = &self.inner.shared;
        shared.submitted.fetch_add(1, Ordering::Relaxed);
        slot.send(self.boxed(job));
        // Pairs with the fence in `shut_down`: either the shutdown's drain
        // sees this job, or this sees that the queue was handed over.
        atomic::fence(Ordering::SeqCst);
        if shared.handed_over.load(Ordering::Relaxed) {
            self.drain_late(Late::Submit);
        }
        Ok(())
    }

    /// Drops whatever the closed queue still holds, counting it.
    ///
    /// Counted under the lock, so that a sender that finds its job already
    /// taken returns only once it is counted; dropped after it, so that a
    /// job's destructor that takes a lock of the caller's cannot deadlock
    /// against a sender waiting here while holding it.
    fn drain_late(&self, by: Late) {
        let shared = &self.inner.shared;
        let jobs: Vec<Job> = {
            let mut late = shared.late.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(receiver) = late.as_mut() else {
                return;
            };
            let jobs: Vec<Job> = std::iter::from_fn(|| receiver.try_recv().ok()).collect();
            shared
                .dropped_at_shutdown
                .fetch_add(jobs.len() as u64, Ordering::Relaxed);
            jobs
        };
        if jobs.is_empty() {
            return;
        }
        let dropped = jobs.len();
        for job in jobs {
            self.discard(job);
        }
        contained(|| match by {
            Late::Shutdown => tracing::warn!(
                pool = self.inner.name.as_str(),
                dropped,
                "jobs still queued at the shutdown deadline were dropped"
            ),
            Late::Submit => tracing::warn!(
                pool = self.inner.name.as_str(),
                dropped,
                "jobs submitted as the pool shut down were dropped unrun"
            ),
        });
    }

    /// Drops a job that will not run. Its future is the user's: a
    /// destructor that panics is logged, not let out into a submit or a
    /// shutdown, whose counts it would cut short.
    fn discard<J>(&self, job: J) {
        let group = self.inner.group.inner();
        palisade_core::panic::contain_drop(&self.inner.name, group.capture, move || drop(job));
    }

    /// Queues a job without waiting.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Full`] when the queue is full, [`SubmitError::Closed`]
    /// after shutdown. The job is dropped unrun and counted as rejected.
    ///
    /// A job accepted while a [`shutdown`](Self::shutdown) closes the queue
    /// can reach it after the workers are done: it is then dropped unrun
    /// and counted in [`PoolStats::dropped_at_shutdown`], before this
    /// returns `Ok`.
    pub fn try_submit<F>(&self, job: F) -> Result<(), SubmitError>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return self.refuse(job, SubmitError::Closed);
        }
        match self.inner.sender.try_reserve() {
            Ok(slot) => self.queue(slot, job),
            Err(mpsc::error::TrySendError::Full(())) => self.refuse(job, SubmitError::Full),
            Err(mpsc::error::TrySendError::Closed(())) => self.refuse(job, SubmitError::Closed),
        }
    }

    /// Queues a job, waiting for room in the queue.
    ///
    /// # Errors
    ///
    /// [`SubmitError::Closed`] after shutdown; the job is dropped unrun and
    /// counted as rejected. A job accepted as a shutdown closes the queue
    /// may be dropped as [`try_submit`](Self::try_submit) says.
    pub async fn submit<F>(&self, job: F) -> Result<(), SubmitError>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        if self.inner.shared.closed.load(Ordering::Acquire) {
            return self.refuse(job, SubmitError::Closed);
        }
        let token = self.inner.group.token();
        let slot = tokio::select! {
            biased;
            () = token.cancelled() => None,
            slot = self.inner.sender.reserve() => slot.ok(),
        };
        match slot {
            Some(slot) => self.queue(slot, job),
            None => self.refuse(job, SubmitError::Closed),
        }
    }

    /// Queues every job of `jobs`, waiting for room as needed, until the
    /// stream ends or the pool shuts down. Returns how many were queued.
    pub async fn submit_stream<S>(&self, jobs: S) -> u64
    where
        S: Stream,
        S::Item: Future + Send + 'static,
        <S::Item as Future>::Output: TaskOutput,
    {
        let mut jobs = pin!(jobs);
        let token = self.inner.group.token();
        let mut queued = 0;
        loop {
            // A stream that has nothing yet must not hold the pool's
            // shutdown up, nor lose the job it would yield afterwards.
            let next = tokio::select! {
                biased;
                () = token.cancelled() => None,
                next = poll_fn(|cx| jobs.as_mut().poll_next(cx)) => next,
            };
            let Some(job) = next else { break };
            if self.submit(job).await.is_err() {
                break;
            }
            queued += 1;
        }
        queued
    }

    /// The pool's counts now.
    pub fn stats(&self) -> PoolStats {
        let s = &self.inner.shared;
        PoolStats {
            workers: self.inner.workers,
            submitted: s.submitted.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            completed: s.completed.load(Ordering::Relaxed),
            failed: s.failed.load(Ordering::Relaxed),
            panicked: s.panicked.load(Ordering::Relaxed),
            abandoned: s.abandoned.load(Ordering::Relaxed),
            dropped_at_shutdown: s.dropped_at_shutdown.load(Ordering::Relaxed),
            running: s.running.load(Ordering::Acquire),
            queued: self.inner.capacity - self.inner.sender.capacity(),
        }
    }

    /// Stops taking jobs, lets the workers run what is queued until
    /// `deadline` (tokio time), then aborts them; jobs still queued are
    /// dropped and counted in [`PoolStats::dropped_at_shutdown`].
    /// Returns the workers' shutdown report.
    ///
    /// The shutdown runs in a task of its own: dropping the returned future
    /// stops the wait, not the shutdown, which still aborts the workers at
    /// the deadline and counts every job left. It does not wait for a
    /// [`submit`](Self::submit) still waiting for room: polled again, that
    /// submit is refused with [`SubmitError::Closed`]. A submit that
    /// reserved its slot before the queue closed and sends into it after
    /// the workers are done counts its job as dropped before it returns,
    /// so once every submit and the first shutdown have returned, each job
    /// accepted is accounted for. A second shutdown, or one racing the
    /// first, returns once the workers are done, without waiting for the
    /// first one's drain: read the stats after the first returns.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let this = self.clone();
        let name = self.inner.name.clone();
        crate::detach::to_completion(async move { this.shut_down(deadline).await }, move || {
            ShutdownReport::cut_short(name)
        })
        .await
    }

    async fn shut_down(&self, deadline: Duration) -> ShutdownReport {
        self.inner.shared.closed.store(true, Ordering::Release);
        // Already in a task of its own: the group's shutdown need not spawn
        // another.
        let report = self.inner.group.shut_down(deadline).await;
        // Taken out of the pool: a later or concurrent shutdown finds it
        // gone and has nothing to drain.
        let Some(mut receiver) = self.inner.shared.receiver.lock().await.take() else {
            return report;
        };
        receiver.close();
        // A submit may hold a slot it has not sent its job into yet: one
        // racing the close, or one that was handed the slot while waiting
        // and is not being polled (the `select!` loop that called it may be
        // this very shutdown's caller). The shutdown does not wait for it;
        // it hands the queue over to where that submit drains its own job.
        *self
            .inner
            .shared
            .late
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(receiver);
        self.inner.shared.handed_over.store(true, Ordering::Relaxed);
        // Pairs with the fence in `queue`.
        atomic::fence(Ordering::SeqCst);
        self.drain_late(Late::Shutdown);
        report
    }
}

/// Who drains the closed queue: the shutdown, or a submit that sent into
/// it after the hand-over.
#[derive(Clone, Copy)]
enum Late {
    Shutdown,
    Submit,
}

impl fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerPool")
            .field("name", &self.inner.name)
            .field("stats", &self.stats())
            .finish()
    }
}

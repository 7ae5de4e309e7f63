//! Task groups: named sets of supervised tasks with one cancellation
//! token, a live-task gauge and a graceful shutdown.

mod report;
mod tracked;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::panic::{self as capture, CaptureOptions};
use palisade_core::{ConfigError, Event, LayerKind, Metrics, Panicked, PolicyName, TaskEnd};
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use self::report::{ShutdownReport, TaskReport};
use self::tracked::Tracked;
use crate::catch::{CatchUnwind, catch_call, contained};
use crate::exit::{SupervisedExit, TaskExit, TaskOutput, Terminal, end_from_u8, end_to_u8};
use crate::handle::{Join, SupervisedHandle, TaskHandle};
use crate::restart::{RestartPolicy, RestartState};

/// A named set of supervised tasks.
///
/// - Every task's panics are caught (message, location, backtrace), logged
///   with `tracing` and reported as [`Event::TaskPanicked`].
/// - The group holds a [`CancellationToken`]: tasks watch
///   [`token`](Self::token) (for example in `tokio::select!`) to stop when
///   the group shuts down.
/// - [`live`](Self::live) counts running tasks; the same gauge is reported
///   through [`Event::TaskStarted`] / [`Event::TaskEnded`], which fire
///   exactly once per task.
/// - [`shutdown`](Self::shutdown) cancels the token, waits up to a
///   deadline, aborts whatever is left and reports by name how every task
///   ended.
///
/// Cloning a group clones a handle to the same group. Dropping every handle
/// neither cancels nor aborts the tasks: they run on, detached, until they
/// end or the runtime shuts down (which reports them as aborted).
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use palisade_core::TaskEnd;
/// use palisade_task::TaskGroup;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let group = TaskGroup::builder().name("workers").build().unwrap();
///
/// let token = group.token();
/// group.spawn("poller", async move {
///     loop {
///         tokio::select! {
///             _ = token.cancelled() => break,
///             _ = tokio::time::sleep(Duration::from_secs(1)) => { /* poll */ }
///         }
///     }
/// });
/// group.spawn("stubborn", async {
///     tokio::time::sleep(Duration::from_secs(3600)).await;
/// });
///
/// let report = group.shutdown(Duration::from_secs(5)).await;
/// assert_eq!(report.with_end(TaskEnd::Cancelled).collect::<Vec<_>>(), ["poller"]);
/// assert_eq!(report.aborted().collect::<Vec<_>>(), ["stubborn"]);
/// assert_eq!(group.live(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct TaskGroup {
    inner: Arc<GroupInner>,
}

pub(crate) struct GroupInner {
    pub(crate) name: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) capture: CaptureOptions,
    pub(crate) token: CancellationToken,
    abort_grace: Duration,
    live: AtomicUsize,
    registry: Mutex<Registry>,
    idle: Notify,
}

#[derive(Default)]
struct Registry {
    closed: bool,
    /// Set when a shutdown starts aborting: a task registered before it
    /// but whose abort handle arrives after is aborted on arrival.
    aborting: bool,
    next_id: u64,
    tasks: HashMap<u64, Entry>,
}

struct Entry {
    name: Arc<str>,
    abort: Option<AbortHandle>,
    end: Arc<AtomicU8>,
}

/// Builds a [`TaskGroup`].
#[derive(Clone, Debug)]
pub struct TaskGroupBuilder {
    name: PolicyName,
    metrics: Metrics,
    capture: CaptureOptions,
    parent: Option<CancellationToken>,
    abort_grace: Duration,
}

impl Default for TaskGroupBuilder {
    fn default() -> Self {
        Self {
            name: PolicyName::new("tasks"),
            metrics: Metrics::noop(),
            capture: CaptureOptions::default(),
            parent: None,
            abort_grace: Duration::from_secs(1),
        }
    }
}

impl TaskGroupBuilder {
    /// The group's name, the `group` label of its events. Default:
    /// `"tasks"`. 1 to 64 characters, no control characters.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where the group's task events go. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// Capture a backtrace when a task panics. Default: `true`.
    #[must_use]
    pub fn backtrace(mut self, capture: bool) -> Self {
        self.capture.backtrace = capture;
        self
    }

    /// Still run the previously installed panic hook (the standard stderr
    /// print) for task panics. Default: `false`; the group logs them with
    /// `tracing`.
    #[must_use]
    pub fn print(mut self, print: bool) -> Self {
        self.capture.print = print;
        self
    }

    /// Make the group's token a child of `parent`, so that cancelling the
    /// parent (an application-wide shutdown token) cancels the group.
    #[must_use]
    pub fn parent(mut self, parent: &CancellationToken) -> Self {
        self.parent = Some(parent.clone());
        self
    }

    /// How long [`TaskGroup::shutdown`] waits, after aborting, for aborted
    /// tasks to unwind before it reports. Default: 1 s. `x > 0`: an aborted
    /// task stops at its next `.await`, which takes a turn of the runtime,
    /// so with no wait at all the report would call every aborted task
    /// still running. One blocking a thread cannot be stopped.
    #[must_use]
    pub fn abort_grace(mut self, grace: Duration) -> Self {
        self.abort_grace = grace;
        self
    }

    /// Builds the group and installs the palisade panic hook.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the name is not a valid label, or
    /// `abort_grace` is zero.
    pub fn build(self) -> Result<TaskGroup, ConfigError> {
        let check = Validate::new(LayerKind::Task, &self.name);
        check.label("name", self.name.as_str())?;
        check.positive_duration("abort_grace", self.abort_grace)?;
        Ok(TaskGroup::from_builder(self))
    }
}

/// Ends a task's life exactly once: records the end, emits
/// [`Event::TaskEnded`], lowers the gauge and unregisters the task, on
/// completion and when the task is dropped (aborted).
struct TaskGuard {
    group: Arc<GroupInner>,
    id: u64,
    name: Arc<str>,
    end: Arc<AtomicU8>,
    finished: Option<TaskEnd>,
}

impl TaskGuard {
    fn finish(&mut self, end: TaskEnd) {
        self.finished = Some(end);
    }

    /// Reports a panic that escaped the task's body and makes it the end.
    ///
    /// The end is settled first, and a panic of the reporting itself (a
    /// metrics sink or a `tracing` subscriber that panics) is contained:
    /// this runs outside any catch, where such a panic would escape the
    /// task and leave it reported as aborted. The hook has already written
    /// that panic to stderr.
    fn panicked(&mut self, panicked: &Panicked) {
        self.finish(TaskEnd::Panicked);
        contained(|| self.group.log_panic(&self.name, panicked));
    }
}

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let end = self.finished.unwrap_or(TaskEnd::Aborted);
        self.end.store(end_to_u8(end), Ordering::Release);
        // A sink that panics here must not keep the task registered: the
        // live gauge would never return to zero and every shutdown would
        // wait out its deadline.
        contained(|| {
            self.group.metrics.emit(&Event::TaskEnded {
                group: self.group.name.as_str(),
                task: &self.name,
                end,
            });
        });
        let now_idle = {
            let mut registry = self.group.lock();
            registry.tasks.remove(&self.id);
            self.group.live.fetch_sub(1, Ordering::AcqRel) == 1
        };
        if now_idle {
            self.group.idle.notify_waiters();
        }
    }
}

impl GroupInner {
    fn lock(&self) -> MutexGuard<'_, Registry> {
        // The registry is only ever left consistent; a panic elsewhere while
        // it was held does not make it unusable.
        self.registry
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Logs and reports a task's panic. The log comes first and each is
    /// contained: a subscriber or sink that panics must neither lose the
    /// task's own panic (its location and backtrace are in the log) nor
    /// replace it, nor make it reported twice.
    pub(crate) fn log_panic(&self, task: &str, panicked: &Panicked) {
        contained(|| {
            tracing::error!(
                group = self.name.as_str(),
                task,
                panic.message = panicked.message(),
                panic.location = panicked.location().map(tracing::field::display),
                panic.backtrace = panicked.backtrace().map(tracing::field::display),
                "supervised task panicked"
            );
        });
        contained(|| {
            self.metrics.emit(&Event::TaskPanicked {
                group: self.name.as_str(),
                task,
                message: panicked.message(),
                location: panicked.location(),
            });
        });
    }

    /// Runs one attempt of a task: polls it with panics caught, and splits
    /// the output.
    async fn run_once<F>(
        &self,
        task: &str,
        future: F,
    ) -> TaskExit<<F::Output as TaskOutput>::Ok, <F::Output as TaskOutput>::Err>
    where
        F: Future,
        F::Output: TaskOutput,
    {
        match CatchUnwind::new(future, self.name.clone(), self.capture).await {
            Ok(output) => self.classify(task, output),
            Err(panicked) => {
                self.log_panic(task, &panicked);
                TaskExit::Panicked(panicked)
            }
        }
    }

    fn classify<O: TaskOutput>(&self, task: &str, output: O) -> TaskExit<O::Ok, O::Err> {
        match output.into_result() {
            Ok(value) if self.token.is_cancelled() => TaskExit::Cancelled(Some(value)),
            Ok(value) => TaskExit::Completed(value),
            Err(error) => {
                // Contained: the run's failure, not a subscriber's panic
                // (nor the error's `Display`), is its exit.
                contained(|| {
                    tracing::warn!(
                        group = self.name.as_str(),
                        task,
                        error = %error,
                        "supervised task failed"
                    );
                });
                TaskExit::Failed(error)
            }
        }
    }
}

impl TaskGroup {
    /// A group with the defaults and the given name.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the name is not a valid label.
    pub fn new(name: impl Into<PolicyName>) -> Result<Self, ConfigError> {
        Self::builder().name(name).build()
    }

    /// A builder to name the group, attach metrics and set its parent
    /// token.
    pub fn builder() -> TaskGroupBuilder {
        TaskGroupBuilder::default()
    }

    pub(crate) fn from_builder(builder: TaskGroupBuilder) -> Self {
        capture::install_hook();
        let token = builder
            .parent
            .as_ref()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        Self {
            inner: Arc::new(GroupInner {
                name: builder.name,
                metrics: builder.metrics,
                capture: builder.capture,
                token,
                abort_grace: builder.abort_grace,
                live: AtomicUsize::new(0),
                registry: Mutex::new(Registry::default()),
                idle: Notify::new(),
            }),
        }
    }

    pub(crate) fn inner(&self) -> &Arc<GroupInner> {
        &self.inner
    }

    /// The group's name.
    pub fn name(&self) -> &PolicyName {
        &self.inner.name
    }

    /// A clone of the group's cancellation token. It fires when the group
    /// shuts down (or its parent token is cancelled).
    pub fn token(&self) -> CancellationToken {
        self.inner.token.clone()
    }

    /// How many of the group's tasks are running now.
    pub fn live(&self) -> usize {
        self.inner.live.load(Ordering::Acquire)
    }

    /// Whether [`shutdown`](Self::shutdown) has begun; tasks spawned after
    /// that are not started.
    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed
    }

    /// Spawns `future` as a task of this group on the current tokio
    /// runtime.
    ///
    /// The handle resolves to [`TaskExit::Aborted`] without running the
    /// future once [`shutdown`](Self::shutdown) has begun (see
    /// [`is_closed`](Self::is_closed); a task that spawns a child on
    /// cancellation is refused too) or when there is no runtime (both
    /// logged at error level). A refused task is in no
    /// [`ShutdownReport`].
    pub fn spawn<F>(
        &self,
        name: impl Into<Arc<str>>,
        future: F,
    ) -> TaskHandle<<F::Output as TaskOutput>::Ok, <F::Output as TaskOutput>::Err>
    where
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let name = name.into();
        let join = self.start(name, |group, task, _| async move {
            group.run_once(&task, future).await
        });
        TaskHandle::new(join)
    }

    /// Spawns a long-running task that is restarted after a panic or an
    /// error, as `policy` says.
    ///
    /// `factory` makes a fresh future for every run and receives the
    /// group's token. A run that completes, or returns after the token was
    /// cancelled, is not restarted. See [`RestartPolicy`] for the backoff,
    /// the restart window and the reset after healthy running.
    ///
    /// Fires [`Event::TaskStarted`] and [`Event::TaskEnded`] once for the
    /// whole supervised life, and [`Event::TaskRestarted`] for every
    /// restart. Refused, as [`spawn`](Self::spawn) is, once shutdown has
    /// begun.
    pub fn spawn_supervised<M, F>(
        &self,
        name: impl Into<Arc<str>>,
        policy: RestartPolicy,
        factory: M,
    ) -> SupervisedHandle<<F::Output as TaskOutput>::Ok, <F::Output as TaskOutput>::Err>
    where
        M: FnMut(CancellationToken) -> F + Send + 'static,
        F: Future + Send + 'static,
        F::Output: TaskOutput,
    {
        let name = name.into();
        let join = self.start(name, move |group, task, id| async move {
            supervise(&group, &task, policy.start(id), factory).await
        });
        SupervisedHandle::new(join)
    }

    /// Registers a task, reports its start and spawns the future that
    /// `body` makes from the group and the task's name, with the guard that
    /// reports its end.
    fn start<O, B, Fut>(&self, name: Arc<str>, body: B) -> Join<O>
    where
        O: Terminal + Send + 'static,
        B: FnOnce(Arc<GroupInner>, Arc<str>, u64) -> Fut,
        Fut: Future<Output = O> + Send + 'static,
    {
        // Installed when the group was built, unless that was during an
        // unwind (a destructor's cleanup), when it cannot be: a start
        // outside one installs it then. A flag check once installed.
        capture::install_hook();
        let inner = &self.inner;
        // A task refused is logged and drops its body, the user's future
        // with it, whose destructor must not panic into the caller of
        // `spawn`.
        let refuse = |body: B, why: &str| {
            contained(|| {
                tracing::error!(
                    group = inner.name.as_str(),
                    task = &*name,
                    "task not started: {why}"
                );
            });
            palisade_core::panic::contain_drop(&inner.name, inner.capture, move || drop(body));
            Join::new(inner.name.clone(), name.clone(), None)
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return refuse(body, "no tokio runtime on this thread");
        };
        let end = Arc::new(AtomicU8::new(0));
        let id = {
            let mut registry = inner.lock();
            if registry.closed {
                drop(registry);
                return refuse(body, "the group is shut down");
            }
            let id = registry.next_id;
            registry.next_id += 1;
            registry.tasks.insert(
                id,
                Entry {
                    name: name.clone(),
                    abort: None,
                    end: end.clone(),
                },
            );
            inner.live.fetch_add(1, Ordering::AcqRel);
            id
        };
        // Registered above: a sink that panics here must not leave the
        // task counted live with no guard to end it.
        contained(|| {
            inner.metrics.emit(&Event::TaskStarted {
                group: inner.name.as_str(),
                task: &name,
            });
        });
        let guard = TaskGuard {
            group: inner.clone(),
            id,
            name: name.clone(),
            end,
            finished: None,
        };
        // The registry lock is not held here: spawning onto a runtime that
        // is shutting down drops the future (and so the guard) at once.
        let join = runtime.spawn(Tracked::new(body(inner.clone(), name.clone(), id), guard));
        {
            let mut registry = inner.lock();
            let aborting = registry.aborting;
            if let Some(entry) = registry.tasks.get_mut(&id) {
                entry.abort = Some(join.abort_handle());
                if aborting {
                    // The shutdown's deadline passed while this task was
                    // being started: it is aborted like the others.
                    join.abort();
                }
            }
        }
        Join::new(inner.name.clone(), name, Some(join))
    }

    /// Shuts the group down: refuses new tasks, cancels the token, waits up
    /// to `deadline` (tokio time) for the running tasks to end, aborts the
    /// ones left and reports how each ended.
    ///
    /// A second call waits again and reports the tasks still running then.
    ///
    /// A zero `deadline` aborts every task still running, even one that
    /// would end as soon as it sees the token: it gets no turn to see it.
    ///
    /// A task of the group that shuts its own group down waits for itself:
    /// it is aborted at `deadline` and never sees the report. Shut a group
    /// down from outside it (its owner, or a task of a parent group).
    ///
    /// The shutdown runs in a task of its own: dropping the returned future
    /// (a deadline of the caller's own around it) stops the wait, not the
    /// shutdown, which still aborts what is left at `deadline`.
    pub async fn shutdown(&self, deadline: Duration) -> ShutdownReport {
        let this = self.clone();
        let name = self.inner.name.clone();
        crate::detach::to_completion(async move { this.shut_down(deadline).await }, move || {
            ShutdownReport::cut_short(name)
        })
        .await
    }

    /// The shutdown itself, run where it is called: for callers already in
    /// a task of their own (the worker pool's shutdown).
    pub(crate) async fn shut_down(&self, deadline: Duration) -> ShutdownReport {
        let inner = &self.inner;
        let started = Instant::now();
        let mut snapshot: Vec<(u64, Arc<str>, Arc<AtomicU8>)> = {
            let mut registry = inner.lock();
            registry.closed = true;
            registry
                .tasks
                .iter()
                .map(|(id, e)| (*id, e.name.clone(), e.end.clone()))
                .collect()
        };
        snapshot.sort_by_key(|(id, _, _)| *id);
        inner.token.cancel();
        contained(|| {
            tracing::info!(
                group = inner.name.as_str(),
                tasks = snapshot.len(),
                deadline = ?deadline,
                "task group shutting down"
            );
        });

        let ended_in_time = tokio::time::timeout(deadline, self.idle()).await.is_ok();
        let waited = started.elapsed();
        if !ended_in_time {
            let left: Vec<(Arc<str>, Option<AbortHandle>)> = {
                let mut registry = inner.lock();
                registry.aborting = true;
                registry
                    .tasks
                    .values()
                    .map(|e| (e.name.clone(), e.abort.clone()))
                    .collect()
            };
            for (name, abort) in &left {
                contained(|| {
                    tracing::warn!(
                        group = inner.name.as_str(),
                        task = &**name,
                        "task ignored cancellation; aborting it at the shutdown deadline"
                    );
                });
                if let Some(abort) = abort {
                    abort.abort();
                }
            }
            if tokio::time::timeout(inner.abort_grace, self.idle())
                .await
                .is_err()
            {
                contained(|| {
                    tracing::error!(
                        group = inner.name.as_str(),
                        "aborted tasks did not stop within the grace period; \
                         a task may be blocking its thread"
                    );
                });
            }
        }

        let tasks = snapshot
            .into_iter()
            .map(|(_, name, end)| {
                // Not ended yet: aborted at the deadline, and still
                // blocking its thread after the grace.
                let end = end_from_u8(end.load(Ordering::Acquire));
                TaskReport {
                    name,
                    end: end.unwrap_or(TaskEnd::Aborted),
                    still_running: end.is_none(),
                }
            })
            .collect();
        ShutdownReport {
            group: inner.name.clone(),
            tasks,
            waited,
            deadline_passed: !ended_in_time,
        }
    }

    /// Waits until no task of the group is running.
    pub async fn idle(&self) {
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.live.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl fmt::Debug for TaskGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskGroup")
            .field("name", &self.inner.name)
            .field("live", &self.live())
            .field("cancelled", &self.inner.token.is_cancelled())
            .field("metrics", &self.inner.metrics)
            .finish()
    }
}

/// The restart loop of a supervised task.
async fn supervise<M, F>(
    group: &Arc<GroupInner>,
    task: &str,
    mut state: RestartState,
    mut factory: M,
) -> SupervisedExit<<F::Output as TaskOutput>::Ok, <F::Output as TaskOutput>::Err>
where
    M: FnMut(CancellationToken) -> F,
    F: Future,
    F::Output: TaskOutput,
{
    let mut restarts = 0_u32;
    loop {
        let run_started = Instant::now();
        let exit = match catch_call(&group.name, group.capture, || factory(group.token.clone())) {
            Ok(future) => group.run_once(task, future).await,
            Err(panicked) => {
                group.log_panic(task, &panicked);
                TaskExit::Panicked(panicked)
            }
        };
        if !matches!(exit, TaskExit::Failed(_) | TaskExit::Panicked(_))
            || group.token.is_cancelled()
        {
            return SupervisedExit {
                exit,
                restarts,
                gave_up: false,
            };
        }
        let Some((attempt, backoff)) = state.next_restart(run_started, Instant::now()) else {
            // Contained: a sink or subscriber that panics must not replace
            // the task's own exit.
            contained(|| {
                tracing::error!(
                    group = group.name.as_str(),
                    task,
                    restarts,
                    max_restarts = state.policy().max_restarts(),
                    window = ?state.policy().window(),
                    "supervised task keeps failing; giving up"
                );
            });
            contained(|| {
                group.metrics.emit(&Event::TaskGaveUp {
                    group: group.name.as_str(),
                    task,
                    restarts,
                });
            });
            return SupervisedExit {
                exit,
                restarts,
                gave_up: true,
            };
        };
        // Contained, as every report of the loop: a sink or subscriber
        // that panics must not end the supervision it reports on.
        contained(|| {
            tracing::warn!(
                group = group.name.as_str(),
                task,
                attempt,
                backoff = ?backoff,
                "restarting supervised task after backoff"
            );
        });
        tokio::select! {
            biased;
            () = group.token.cancelled() => {
                return SupervisedExit { exit: TaskExit::Cancelled(None), restarts, gave_up: false };
            }
            () = tokio::time::sleep(backoff) => {}
        }
        // Reported once the restart happens: a loop cancelled during its
        // backoff is not restarted, and is not counted as restarted.
        contained(|| {
            group.metrics.emit(&Event::TaskRestarted {
                group: group.name.as_str(),
                task,
                attempt,
                backoff,
            });
        });
        restarts += 1;
    }
}

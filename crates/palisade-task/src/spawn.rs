//! `spawn` for tasks that belong to no particular group.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use palisade_core::Metrics;

use crate::exit::TaskOutput;
use crate::group::TaskGroup;
use crate::handle::TaskHandle;

/// The group name of tasks started with [`spawn`].
pub const SPAWN_GROUP: &str = "spawn";

static SPAWN_METRICS: OnceLock<Metrics> = OnceLock::new();
static SPAWN: OnceLock<TaskGroup> = OnceLock::new();

fn spawn_group() -> &'static TaskGroup {
    SPAWN.get_or_init(|| {
        // The first `spawn` fixes the sink for good (no-op if none was
        // set), so that the sink sees every task's start and end or
        // neither.
        let metrics = SPAWN_METRICS.get_or_init(Metrics::noop).clone();
        // A constant, valid name: nothing to validate.
        TaskGroup::from_builder(TaskGroup::builder().name(SPAWN_GROUP).metrics(metrics))
    })
}

/// Sets where the events of tasks started with [`spawn`] go.
///
/// Call it before the first [`spawn`]. It returns `false`, and changes
/// nothing, if it was already set or if [`spawn`] has already run: a sink
/// set while tasks are running would see tasks end that it never saw
/// start, and a live-task gauge would go negative.
///
/// ```
/// use palisade_core::Metrics;
/// use palisade_task::set_spawn_metrics;
///
/// assert!(set_spawn_metrics(Metrics::noop()));
/// assert!(!set_spawn_metrics(Metrics::noop()), "already set");
/// ```
pub fn set_spawn_metrics(metrics: Metrics) -> bool {
    SPAWN_METRICS.set(metrics).is_ok()
}

/// Spawns a supervised task on the current tokio runtime, in the process
/// wide group named `"spawn"`.
///
/// Its panics are caught with message, location and backtrace, logged with
/// `tracing` and counted
/// ([`Event::TaskPanicked`](palisade_core::Event::TaskPanicked)); awaiting
/// the handle says how it ended. For cancellation, a live gauge and a
/// graceful shutdown, use a [`TaskGroup`].
///
/// ```
/// use palisade_task::{spawn, TaskExit};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let handle = spawn("resize-avatar", async {
///     if true {
///         panic!("image too large");
///     }
/// });
/// match handle.await {
///     TaskExit::Panicked(p) => assert_eq!(p.message(), "image too large"),
///     other => panic!("unexpected {other:?}"),
/// }
///
/// let sum = spawn("sum", async { Ok::<_, std::io::Error>(2 + 2) }).await;
/// assert_eq!(sum.into_value(), Some(4));
/// # }
/// ```
pub fn spawn<F>(
    name: impl Into<Arc<str>>,
    future: F,
) -> TaskHandle<<F::Output as TaskOutput>::Ok, <F::Output as TaskOutput>::Err>
where
    F: Future + Send + 'static,
    F::Output: TaskOutput,
{
    spawn_group().spawn(name, future)
}

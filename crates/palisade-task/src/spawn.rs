//! `spawn` for tasks that belong to no particular group.

use std::future::Future;
use std::sync::{Arc, OnceLock};

use palisade_core::{Event, Metrics, MetricsSink};

use crate::exit::TaskOutput;
use crate::group::TaskGroup;
use crate::handle::TaskHandle;

/// The group name of tasks started with [`spawn`].
pub const SPAWN_GROUP: &str = "spawn";

static SPAWN_METRICS: OnceLock<Metrics> = OnceLock::new();
static SPAWN: OnceLock<TaskGroup> = OnceLock::new();

/// Forwards to the metrics set with [`set_spawn_metrics`], whenever that
/// happens.
#[derive(Debug)]
struct LateSink;

impl MetricsSink for LateSink {
    fn record(&self, event: &Event<'_>) {
        if let Some(metrics) = SPAWN_METRICS.get() {
            metrics.emit(event);
        }
    }
}

fn spawn_group() -> &'static TaskGroup {
    SPAWN.get_or_init(|| {
        // A constant, valid name: nothing to validate.
        TaskGroup::from_builder(
            TaskGroup::builder()
                .name(SPAWN_GROUP)
                .metrics(Metrics::from_arc(Arc::new(LateSink))),
        )
    })
}

/// Sets where the events of tasks started with [`spawn`] go. Returns
/// `false` (and changes nothing) if it was already set.
pub fn set_spawn_metrics(metrics: Metrics) -> bool {
    SPAWN_METRICS.set(metrics).is_ok()
}

/// Spawns a supervised task on the current tokio runtime, in the process
/// wide group named `"spawn"`.
///
/// Its panics are caught with message, location and backtrace, logged with
/// `tracing` and counted ([`Event::TaskPanicked`]); awaiting the handle says
/// how it ended. For cancellation, a live gauge and a graceful shutdown, use
/// a [`TaskGroup`].
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

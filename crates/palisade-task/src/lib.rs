//! Supervised background work for tokio: what Go programs build with a
//! `safeGo` wrapper, `recover` and `context`, done for tokio.
//!
//! - [`spawn`] starts a task whose panics are caught with message,
//!   location and backtrace, logged with `tracing` and counted through
//!   palisade's metrics trait; its handle says how the task ended
//!   ([`TaskExit`]: completed, failed, panicked, cancelled or aborted).
//! - [`TaskGroup`] names a set of tasks, holds the
//!   [`CancellationToken`] they watch,
//!   keeps a live-task gauge and shuts down gracefully: cancel, wait up to
//!   a deadline, abort what is left, and report by name.
//! - [`TaskGroup::spawn_supervised`] restarts a long-running loop after a
//!   panic or an error, with exponential [`Backoff`] and jitter, at most N
//!   times within a window ([`RestartPolicy`]), then gives up and reports.
//! - [`WorkerPool`] runs jobs from a bounded queue (or a stream) on a fixed
//!   number of workers: never more than N at once, never a task per job.
//! - [`Offload`] hands work for non-core dependencies (audit logs,
//!   analytics) to background workers that call a tower `Service` with
//!   retries. Pushing never blocks and never fails because of the
//!   dependency; work that cannot be delivered is dropped and counted by
//!   reason, never silently.
//!
//! Every duration is measured with tokio's clock, so tests drive restarts,
//! retries and deadlines with paused time.
//!
//! # Events
//!
//! | event | when |
//! |---|---|
//! | [`TaskStarted`](palisade_core::Event::TaskStarted) | a task is spawned |
//! | [`TaskEnded`](palisade_core::Event::TaskEnded) | exactly once per started task, with its [`TaskEnd`](palisade_core::TaskEnd) |
//! | [`TaskPanicked`](palisade_core::Event::TaskPanicked) | a task (or a pool job) panicked |
//! | [`TaskRestarted`](palisade_core::Event::TaskRestarted) | a supervised task is restarted |
//! | [`TaskGaveUp`](palisade_core::Event::TaskGaveUp) | a supervised task reached its restart limit and is not restarted |
//! | [`OffloadDelivered`](palisade_core::Event::OffloadDelivered) | offloaded work reached its service |
//! | [`OffloadDropped`](palisade_core::Event::OffloadDropped) | offloaded work was dropped, with its [`DropReason`](palisade_core::DropReason) |
//! | [`OffloadAttemptFailed`](palisade_core::Event::OffloadAttemptFailed) | an attempt to deliver offloaded work failed: an error or a panic of its service ([`AttemptFailure`](palisade_core::AttemptFailure)) |
//!
//! # Example
//!
//! A poller restarted when it fails, stopped with its group:
//!
//! ```
//! use std::time::Duration;
//! use palisade_task::{Backoff, RestartPolicy, TaskGroup};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let group = TaskGroup::new("background").unwrap();
//! let policy = RestartPolicy::builder()
//!     .backoff(Backoff::new(Duration::from_millis(100), Duration::from_secs(5)))
//!     .max_restarts(3)
//!     .build()
//!     .unwrap();
//!
//! let poller = group.spawn_supervised("poller", policy, |token| async move {
//!     loop {
//!         tokio::select! {
//!             _ = token.cancelled() => return Ok::<(), std::io::Error>(()),
//!             _ = tokio::time::sleep(Duration::from_secs(1)) => {
//!                 // poll something; an error returned here restarts the loop
//!             }
//!         }
//!     }
//! });
//!
//! tokio::time::sleep(Duration::from_secs(10)).await;
//! let report = group.shutdown(Duration::from_secs(5)).await;
//! assert!(report.is_clean());
//! assert_eq!(poller.await.restarts, 0);
//! # }
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

mod backoff;
mod catch;
mod detach;
mod exit;
mod group;
mod handle;
pub mod offload;
mod pool;
mod restart;
mod spawn;

pub use self::backoff::Backoff;
pub use self::exit::{SupervisedExit, TaskExit, TaskOutput};
pub use self::group::{ShutdownReport, TaskGroup, TaskGroupBuilder, TaskReport};
pub use self::handle::{SupervisedHandle, TaskHandle};
pub use self::offload::{Offload, OffloadBuilder, OffloadStats, Pushed};
pub use self::pool::{PoolStats, SubmitError, WorkerPool, WorkerPoolBuilder};
pub use self::restart::{RestartPolicy, RestartPolicyBuilder};
pub use self::spawn::{SPAWN_GROUP, set_spawn_metrics, spawn};

pub use tokio_util::sync::CancellationToken;

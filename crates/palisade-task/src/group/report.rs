use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::{PolicyName, TaskEnd};

/// How one task that was running when shutdown began ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskReport {
    /// The task's name.
    pub name: Arc<str>,
    /// How it ended. [`TaskEnd::Aborted`] for the tasks that had to be
    /// aborted at the deadline (or that their owner aborted through their
    /// handle meanwhile), or [`TaskEnd::Panicked`] for one of them whose
    /// future panicked in a destructor as it was dropped.
    pub end: TaskEnd,
    /// Whether the task was aborted but had not stopped when the abort
    /// grace ran out: it blocks its thread, out of reach of an abort. It
    /// ends when its blocking call returns; its `TaskEnded` event and its
    /// handle then say how, and until then the group counts it as live.
    pub still_running: bool,
}

/// What [`TaskGroup::shutdown`](crate::TaskGroup::shutdown) did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShutdownReport {
    /// The group's name.
    pub group: PolicyName,
    /// Every task that was running when shutdown began, in the order they
    /// were spawned.
    pub tasks: Vec<TaskReport>,
    /// How long the group waited before the tasks had all ended or the
    /// deadline passed (tokio time).
    pub waited: Duration,
    /// Whether the deadline passed with tasks still running.
    pub deadline_passed: bool,
}

impl ShutdownReport {
    /// The report of a shutdown whose task the runtime dropped before it
    /// finished: nothing is known of the tasks.
    pub(crate) fn cut_short(group: PolicyName) -> Self {
        Self {
            group,
            tasks: Vec::new(),
            waited: Duration::ZERO,
            deadline_passed: true,
        }
    }

    /// The names of the tasks that ignored cancellation and had to be
    /// aborted at the deadline, and of any its owner aborted through its
    /// handle while the group shut down.
    pub fn aborted(&self) -> impl Iterator<Item = &str> {
        self.with_end(TaskEnd::Aborted)
    }

    /// The names of the tasks that were aborted but still ran when the
    /// report was made (see [`TaskReport::still_running`]).
    pub fn still_running(&self) -> impl Iterator<Item = &str> {
        self.tasks
            .iter()
            .filter(|t| t.still_running)
            .map(|t| &*t.name)
    }

    /// The names of the tasks that ended with `end`.
    pub fn with_end(&self, end: TaskEnd) -> impl Iterator<Item = &str> {
        self.tasks
            .iter()
            .filter(move |t| t.end == end)
            .map(|t| &*t.name)
    }

    /// Whether every task ended by itself before the deadline (a task
    /// aborted through its handle did not).
    pub fn is_clean(&self) -> bool {
        !self.deadline_passed && self.tasks.iter().all(|t| t.end != TaskEnd::Aborted)
    }
}

impl fmt::Display for ShutdownReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "task group {:?} shut down after {:?}: {} task(s)",
            self.group.as_str(),
            self.waited,
            self.tasks.len()
        )?;
        for task in &self.tasks {
            write!(f, ", {} {}", task.name, task.end.as_str())?;
            if task.still_running {
                f.write_str(" (still running)")?;
            }
        }
        Ok(())
    }
}

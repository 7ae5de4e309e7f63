//! How a supervised task ended.

use std::convert::Infallible;
use std::fmt;

use palisade_core::{Panicked, TaskEnd};

/// What a task's future returns, split into success and failure.
///
/// Implemented for `()` (always a success) and for `Result<T, E>` (an `Err`
/// is a failure, logged with its `Display` form). A task returning another
/// type can return `Ok::<_, Infallible>(value)`. A future that never
/// returns (`async { loop { .. } }`, whose output is `!`) needs an output
/// type spelled out, for example a `break` out of the loop.
pub trait TaskOutput: Send + 'static {
    /// The value of a successful task.
    type Ok: Send + 'static;
    /// The error of a failed task.
    type Err: fmt::Display + Send + 'static;

    /// Splits the output.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl TaskOutput for () {
    type Ok = ();
    type Err = Infallible;

    fn into_result(self) -> Result<(), Infallible> {
        Ok(())
    }
}

impl<T, E> TaskOutput for Result<T, E>
where
    T: Send + 'static,
    E: fmt::Display + Send + 'static,
{
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }
}

/// How a task ended, with what it returned.
///
/// Awaiting a [`TaskHandle`](crate::TaskHandle) gives one of these;
/// [`end`](Self::end) gives the label that metrics use.
#[derive(Debug)]
pub enum TaskExit<T, E> {
    /// The future returned `Ok` (or `()`), and its group was not cancelled.
    Completed(T),
    /// The future returned an error.
    Failed(E),
    /// The future panicked; the panic was caught with its message,
    /// location and backtrace. Also the end of a task aborted (at a
    /// shutdown deadline, through its handle) whose future panicked in a
    /// destructor as it was dropped, and of a task whose supervision
    /// itself panicked. A metrics sink or `tracing` subscriber that panics
    /// while the group reports on a task is contained and does not change
    /// how the task ended.
    Panicked(Panicked),
    /// The task stopped because its group was cancelled: it returned `Ok`
    /// after the group's token fired (the value is kept), or it was waiting
    /// to be restarted (`None`).
    Cancelled(Option<T>),
    /// The task was aborted (at a shutdown deadline, through its handle, or
    /// because the runtime shut down) or was never started because its
    /// group was already shut down.
    Aborted,
}

impl<T, E> TaskExit<T, E> {
    /// The label of this end, as reported in
    /// [`Event::TaskEnded`](palisade_core::Event::TaskEnded).
    pub fn end(&self) -> TaskEnd {
        match self {
            TaskExit::Completed(_) => TaskEnd::Completed,
            TaskExit::Failed(_) => TaskEnd::Failed,
            TaskExit::Panicked(_) => TaskEnd::Panicked,
            TaskExit::Cancelled(_) => TaskEnd::Cancelled,
            TaskExit::Aborted => TaskEnd::Aborted,
        }
    }

    /// Whether the task completed.
    pub fn is_completed(&self) -> bool {
        matches!(self, TaskExit::Completed(_))
    }

    /// The caught panic, if the task panicked.
    pub fn panicked(&self) -> Option<&Panicked> {
        match self {
            TaskExit::Panicked(p) => Some(p),
            _ => None,
        }
    }

    /// The value, if the task completed (or returned after cancellation).
    pub fn into_value(self) -> Option<T> {
        match self {
            TaskExit::Completed(v) | TaskExit::Cancelled(Some(v)) => Some(v),
            _ => None,
        }
    }
}

/// How a supervised (restarted) task ended.
#[derive(Debug)]
pub struct SupervisedExit<T, E> {
    /// How the last run ended.
    pub exit: TaskExit<T, E>,
    /// How many times the task was restarted in all. An aborted supervisor
    /// (one whose loop ignored cancellation past the shutdown deadline)
    /// cannot report its count, and reads 0 with [`TaskExit::Aborted`] (or
    /// [`TaskExit::Panicked`], when a destructor panicked as it was
    /// aborted or the supervision itself panicked); the `TaskRestarted`
    /// events still counted every restart.
    pub restarts: u32,
    /// Whether the supervisor gave up: the last run failed or panicked and
    /// the restart limit within the window was reached.
    pub gave_up: bool,
}

impl<T, E> SupervisedExit<T, E> {
    /// The label of the last run's end.
    pub fn end(&self) -> TaskEnd {
        self.exit.end()
    }
}

/// The end of a task, packed for an atomic slot: 0 while it runs.
pub(crate) fn end_to_u8(end: TaskEnd) -> u8 {
    TaskEnd::ALL
        .iter()
        .position(|e| *e == end)
        .map_or(u8::MAX, |i| i as u8 + 1)
}

pub(crate) fn end_from_u8(value: u8) -> Option<TaskEnd> {
    value
        .checked_sub(1)
        .and_then(|i| TaskEnd::ALL.get(usize::from(i)).copied())
}

/// What a task resolves to: its end label, and the exits made for it when
/// the task could not report by itself.
pub(crate) trait Terminal {
    fn end(&self) -> TaskEnd;
    fn aborted() -> Self;
    fn panicked(panicked: Panicked) -> Self;
}

impl<T, E> Terminal for TaskExit<T, E> {
    fn end(&self) -> TaskEnd {
        TaskExit::end(self)
    }

    fn aborted() -> Self {
        TaskExit::Aborted
    }

    fn panicked(panicked: Panicked) -> Self {
        TaskExit::Panicked(panicked)
    }
}

impl<T, E> Terminal for SupervisedExit<T, E> {
    fn end(&self) -> TaskEnd {
        SupervisedExit::end(self)
    }

    fn aborted() -> Self {
        SupervisedExit {
            exit: TaskExit::Aborted,
            restarts: 0,
            gave_up: false,
        }
    }

    fn panicked(panicked: Panicked) -> Self {
        SupervisedExit {
            exit: TaskExit::Panicked(panicked),
            restarts: 0,
            gave_up: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_round_trip_through_the_slot_encoding() {
        assert_eq!(end_from_u8(0), None);
        for end in TaskEnd::ALL {
            assert_eq!(end_from_u8(end_to_u8(*end)), Some(*end));
        }
    }
}

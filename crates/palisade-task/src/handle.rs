//! Handles to supervised tasks.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use palisade_core::panic::payload_message;
use palisade_core::{Panicked, PolicyName};
use tokio::task::{AbortHandle, JoinHandle};

use crate::exit::{SupervisedExit, TaskExit, Terminal};

/// The join handle shared by both public handles.
pub(crate) struct Join<O> {
    group: PolicyName,
    name: Arc<str>,
    join: Option<JoinHandle<O>>,
}

impl<O: Terminal> Join<O> {
    pub(crate) fn new(group: PolicyName, name: Arc<str>, join: Option<JoinHandle<O>>) -> Self {
        Self { group, name, join }
    }

    fn poll_exit(&mut self, cx: &mut Context<'_>) -> Poll<O> {
        let Some(join) = self.join.as_mut() else {
            return Poll::Ready(O::aborted());
        };
        let result = ready!(Pin::new(join).poll(cx));
        self.join = None;
        Poll::Ready(match result {
            Ok(exit) => exit,
            Err(err) if err.is_cancelled() => O::aborted(),
            // A destructor panicked as the aborted task was dropped: the
            // task reported the panic and passed it on as the payload.
            Err(err) => match err.try_into_panic() {
                Ok(payload) => O::panicked(match payload.downcast::<Panicked>() {
                    Ok(panicked) => *panicked,
                    Err(payload) => Panicked::new(self.group.clone(), payload_message(&*payload)),
                }),
                Err(_) => O::aborted(),
            },
        })
    }
}

macro_rules! handle_common {
    () => {
        /// The task's name.
        pub fn name(&self) -> &str {
            &self.join.name
        }

        /// Aborts the task: it stops at its next `.await` and ends as
        /// [`TaskExit::Aborted`] ([`TaskExit::Panicked`] if a destructor
        /// panics as its future is dropped). Does nothing if it already
        /// ended.
        pub fn abort(&self) {
            if let Some(join) = &self.join.join {
                join.abort();
            }
        }

        /// A handle that can abort the task without awaiting it.
        pub fn abort_handle(&self) -> Option<AbortHandle> {
            self.join.join.as_ref().map(JoinHandle::abort_handle)
        }

        /// Whether the task has ended (or never started).
        pub fn is_finished(&self) -> bool {
            self.join.join.as_ref().is_none_or(JoinHandle::is_finished)
        }
    };
}

/// A handle to a task started with [`spawn`](crate::spawn) or
/// [`TaskGroup::spawn`](crate::TaskGroup::spawn). Awaiting it gives the
/// task's [`TaskExit`].
///
/// Dropping the handle detaches the task; it keeps running.
pub struct TaskHandle<T, E> {
    join: Join<TaskExit<T, E>>,
}

impl<T, E> TaskHandle<T, E> {
    pub(crate) fn new(join: Join<TaskExit<T, E>>) -> Self {
        Self { join }
    }

    handle_common!();
}

impl<T, E> Future for TaskHandle<T, E> {
    type Output = TaskExit<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.join.poll_exit(cx)
    }
}

impl<T, E> fmt::Debug for TaskHandle<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskHandle")
            .field("group", &self.join.group)
            .field("name", &self.join.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

/// A handle to a task started with
/// [`TaskGroup::spawn_supervised`](crate::TaskGroup::spawn_supervised).
/// Awaiting it gives the [`SupervisedExit`]: how the last run ended, how
/// many restarts happened, and whether the supervisor gave up.
pub struct SupervisedHandle<T, E> {
    join: Join<SupervisedExit<T, E>>,
}

impl<T, E> SupervisedHandle<T, E> {
    pub(crate) fn new(join: Join<SupervisedExit<T, E>>) -> Self {
        Self { join }
    }

    handle_common!();
}

impl<T, E> Future for SupervisedHandle<T, E> {
    type Output = SupervisedExit<T, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.join.poll_exit(cx)
    }
}

impl<T, E> fmt::Debug for SupervisedHandle<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SupervisedHandle")
            .field("group", &self.join.group)
            .field("name", &self.join.name)
            .field("finished", &self.is_finished())
            .finish()
    }
}

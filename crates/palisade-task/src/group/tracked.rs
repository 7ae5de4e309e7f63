//! The future a group spawns for each task: its body, and the guard that
//! ends its life.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::Panicked;
use pin_project_lite::pin_project;

use super::TaskGuard;
use crate::catch::catch_call;
use crate::exit::Terminal;

pin_project! {
    /// Runs a task's body and ends the task through its guard.
    ///
    /// A panic that escapes the body is caught, logged, reported as
    /// [`Event::TaskPanicked`](palisade_core::Event::TaskPanicked) and
    /// recorded as the task's end, so that the handle, the shutdown report
    /// and the `TaskEnded` event all say `Panicked`. It comes from
    /// supervision code while the body is polled (the task's own panics are
    /// caught inside the body), or from a destructor when the unfinished
    /// body is dropped: the task was aborted.
    pub(super) struct Tracked<Fut> {
        #[pin]
        body: Body<Fut>,
        guard: Option<TaskGuard>,
    }

    impl<Fut> PinnedDrop for Tracked<Fut> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(guard) = this.guard.as_mut() else {
                return;
            };
            if let Err(panicked) = drop_body(this.body, guard) {
                guard.panicked(&panicked);
                drop(this.guard.take());
                if !std::thread::panicking() {
                    // The runtime drops an aborted task inside a panic
                    // guard and hands this payload to the task's handle.
                    std::panic::resume_unwind(Box::new(panicked));
                }
            }
        }
    }
}

pin_project! {
    #[project = BodyProj]
    enum Body<Fut> {
        Running { #[pin] future: Fut },
        Done,
    }
}

impl<Fut> Tracked<Fut> {
    pub(super) fn new(body: Fut, guard: TaskGuard) -> Self {
        Self {
            body: Body::Running { future: body },
            guard: Some(guard),
        }
    }
}

/// Drops the body if it still runs, catching a panic of its destructors.
fn drop_body<Fut>(body: Pin<&mut Body<Fut>>, guard: &TaskGuard) -> Result<(), Panicked> {
    if let Body::Done = &*body {
        return Ok(());
    }
    let mut body = body;
    catch_call(&guard.group.name, guard.group.capture, move || {
        body.set(Body::Done);
    })
}

impl<Fut> Future for Tracked<Fut>
where
    Fut: Future,
    Fut::Output: Terminal,
{
    type Output = Fut::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut body = this.body;
        let (BodyProj::Running { future }, Some(guard)) =
            (body.as_mut().project(), this.guard.as_mut())
        else {
            // Never polled again after it resolved: the runtime is the caller.
            return Poll::Pending;
        };
        let polled = catch_call(&guard.group.name, guard.group.capture, || future.poll(cx));
        let output = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => {
                // A finished body holds nothing left to drop.
                body.set(Body::Done);
                output
            }
            Err(panicked) => {
                // A destructor panicking in turn is part of the same failure.
                let _ = drop_body(body, guard);
                guard.panicked(&panicked);
                Fut::Output::panicked(panicked)
            }
        };
        if let Some(mut guard) = this.guard.take() {
            guard.finish(output.end());
        }
        Poll::Ready(output)
    }
}

//! Polls a future inside a panic capture scope.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::panic::{self as capture, CaptureOptions};
use palisade_core::{Panicked, PolicyName};
use pin_project_lite::pin_project;

pin_project! {
    /// Resolves to the future's output, or to the panic it raised while
    /// polled. The future is dropped right after a panic.
    pub(crate) struct CatchUnwind<F> {
        #[pin]
        state: State<F>,
        policy: PolicyName,
        options: CaptureOptions,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Running { #[pin] future: F },
        Done,
    }
}

impl<F> CatchUnwind<F> {
    pub(crate) fn new(future: F, policy: PolicyName, options: CaptureOptions) -> Self {
        Self {
            state: State::Running { future },
            policy,
            options,
        }
    }
}

pub(crate) use palisade_core::panic::contained;

/// Calls `f` inside a capture scope, turning a panic into [`Panicked`].
pub(crate) fn catch_call<T>(
    policy: &PolicyName,
    options: CaptureOptions,
    f: impl FnOnce() -> T,
) -> Result<T, Panicked> {
    capture::catch(options, f).map_err(|payload| {
        let panicked = capture::panicked(policy.clone(), &*payload);
        capture::contain_drop(policy, options, move || drop(payload));
        panicked
    })
}

impl<F: Future> Future for CatchUnwind<F> {
    type Output = Result<F::Output, Panicked>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut state = this.state;
        let StateProj::Running { future } = state.as_mut().project() else {
            // Never polled again after it resolved: the callers are ours.
            return Poll::Pending;
        };
        let output = match catch_call(this.policy, *this.options, || future.poll(cx)) {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(output)) => Ok(output),
            Err(panicked) => Err(panicked),
        };
        // Finished or panicked, the future is dropped now: a destructor
        // that panics then is logged, and neither replaces the output nor
        // escapes.
        capture::contain_drop(this.policy, *this.options, move || {
            state.set(State::Done);
        });
        Poll::Ready(output)
    }
}

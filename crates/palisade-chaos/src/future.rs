//! The response future of [`Chaos`](crate::Chaos).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::error::InjectedFault;
use crate::fault::Fault;
use crate::layer::Shared;

pin_project! {
    /// Polls the inner future untouched, or sleeps for an injected delay and
    /// then panics, answers an injected error, or polls the inner future.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        state: State<F>,
    }
}

pin_project! {
    #[derive(Debug)]
    #[project = Projection]
    enum State<F> {
        Passthrough {
            #[pin]
            inner: F,
        },
        Faulty {
            pending: Pending,
            #[pin]
            inner: Option<F>,
        },
    }
}

/// What is left to do of a request's fault. Each part is counted in the
/// layer's stats as it takes effect, so a request dropped early counts
/// only what it met.
struct Pending {
    shared: Arc<Shared>,
    /// Cleared part by part as each takes effect.
    fault: Fault,
    /// The wait in progress, from the first poll until its delay runs out.
    wait: Option<Wait>,
}

struct Wait {
    // Boxed: a `Sleep` is large and only delayed requests need one.
    sleep: Pin<Box<Sleep>>,
    started: Instant,
}

impl Pending {
    /// Starts the delay on the first call, then waits for it to run out.
    fn poll_delay(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let delay = self.fault.delay;
        let wait = match &mut self.wait {
            Some(wait) => wait,
            None => {
                self.shared.count_delay_started();
                let started = Instant::now();
                // A delay too long for the clock falls back on tokio's own
                // saturation.
                let sleep = started
                    .checked_add(delay)
                    .map_or_else(|| tokio::time::sleep(delay), tokio::time::sleep_until);
                self.wait.insert(Wait {
                    sleep: Box::pin(sleep),
                    started,
                })
            }
        };
        ready!(wait.sleep.as_mut().poll(cx));
        // The time waited, not the delay drawn: tokio's timer ends a wait
        // on a whole millisecond, at or after its deadline.
        let waited = wait.started.elapsed();
        self.wait = None;
        self.fault.delay = Duration::ZERO;
        self.shared.count_waited(waited);
        Poll::Ready(())
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // A wait cut short counts the time it lasted.
        if let Some(wait) = &self.wait {
            self.shared.count_waited(wait.started.elapsed());
        }
    }
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pending")
            .field("policy", &self.shared.name)
            .field("fault", &self.fault)
            .field("waiting", &self.wait.is_some())
            .finish()
    }
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            state: State::Passthrough { inner },
        }
    }

    pub(crate) fn faulty(inner: Option<F>, fault: Fault, shared: Arc<Shared>) -> Self {
        Self {
            state: State::Faulty {
                pending: Pending {
                    shared,
                    fault,
                    wait: None,
                },
                inner,
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            Projection::Passthrough { inner } => inner.poll(cx).map_err(Into::into),
            Projection::Faulty { pending, inner } => {
                if !pending.fault.delay.is_zero() {
                    ready!(pending.poll_delay(cx));
                }
                // Cleared before taking effect, so that a poll after the panic
                // or the error goes on to the inner future, which neither has.
                let (panic, error) = (pending.fault.panic, pending.fault.error);
                (pending.fault.panic, pending.fault.error) = (false, false);
                if panic {
                    pending.shared.count_panic();
                    panic!("chaos {:?}: injected panic", pending.shared.name.as_str());
                }
                if error {
                    pending.shared.count_error();
                    let name = pending.shared.name.clone();
                    return Poll::Ready(Err(InjectedFault::new(name).into()));
                }
                match inner.as_pin_mut() {
                    Some(inner) => inner.poll(cx).map_err(Into::into),
                    None => {
                        Poll::Ready(Err("chaos response future polled after completion".into()))
                    }
                }
            }
        }
    }
}

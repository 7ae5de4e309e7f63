//! The response future of [`Chaos`](crate::Chaos).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::{BoxError, PolicyName};
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::InjectedFault;
use crate::fault::Fault;

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
            // Boxed: a `Sleep` is large and only delayed requests need one.
            sleep: Option<Pin<Box<Sleep>>>,
            #[pin]
            inner: Option<F>,
            action: Action,
        },
    }
}

/// What a faulty future does once its delay is over.
#[derive(Debug)]
enum Action {
    None,
    Error(PolicyName),
    Panic(PolicyName),
}

impl<F> ResponseFuture<F> {
    #[inline]
    pub(crate) fn passthrough(inner: F) -> Self {
        Self {
            state: State::Passthrough { inner },
        }
    }

    pub(crate) fn faulty(inner: Option<F>, fault: Fault, name: PolicyName) -> Self {
        let action = if fault.panic {
            Action::Panic(name)
        } else if fault.error {
            Action::Error(name)
        } else {
            Action::None
        };
        Self {
            state: State::Faulty {
                sleep: (!fault.delay.is_zero()).then(|| Box::pin(tokio::time::sleep(fault.delay))),
                inner,
                action,
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
            Projection::Faulty {
                sleep,
                inner,
                action,
            } => {
                if let Some(delay) = sleep.as_mut() {
                    ready!(delay.as_mut().poll(cx));
                    *sleep = None;
                }
                match std::mem::replace(action, Action::None) {
                    Action::None => {}
                    Action::Error(name) => {
                        return Poll::Ready(Err(InjectedFault::new(name).into()));
                    }
                    Action::Panic(name) => panic!("chaos {:?}: injected panic", name.as_str()),
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

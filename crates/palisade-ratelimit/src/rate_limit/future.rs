//! The response future of [`RateLimit`](super::RateLimit).
//!
//! An admitted request's future is the inner service's future plus the
//! prepared headers, with no allocation. A refused request's future is
//! ready at once with the error. In [`Mode::Wait`](super::Mode::Wait), a
//! waiting request's future holds the request, a clone of the service
//! (made ready only once the request is admitted) and a timer in one box,
//! allocated only for requests that actually wait.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_ratelimit::RateLimitLayer;
//! use palisade_ratelimit::error::RateLimited;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let layer = RateLimitLayer::builder()
//!     .quota(1, Duration::from_secs(60))
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(service_fn(|n: u32| async move { Ok::<_, std::convert::Infallible>(n) }));
//!
//! assert_eq!(svc.clone().oneshot(1).await.unwrap(), 1);
//! let err = svc.oneshot(2).await.unwrap_err();
//! assert!(err.is::<RateLimited>());
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, KeyKind, MissingKey, RateLimited};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::service::{Shared, Verdict};
use crate::headers::ResponseHeaders;
use crate::key::ExtractKey;
use crate::limiter::Check;

pin_project! {
    /// The future of [`RateLimit`](super::RateLimit)'s responses.
    pub struct ResponseFuture<S, Req, K: 'static, H, M: Sharing = Counted>
    where
        S: Service<Req>,
        H: ResponseHeaders<S::Response>,
        H: 'static,
    {
        #[pin]
        state: State<S, Req, K, H, M>,
    }
}

pin_project! {
    // Every variant but `Called` holds at most one pointer, and an
    // admission without headers carries nothing: the state adds one word
    // to the inner future (24 bytes around a 16-byte one).
    #[project = StateProj]
    #[project_replace = StateOwned]
    enum State<S, Req, K: 'static, H, M: Sharing>
    where
        S: Service<Req>,
        H: ResponseHeaders<S::Response>,
        H: 'static,
    {
        // Admitted: the inner call, and the headers of the admission;
        // none for a request let through without a key
        // (`OnMissingKey::Allow`). One variant for both, so that `call`
        // builds it from one inner call, straight into its caller's place.
        Called {
            #[pin]
            future: S::Future,
            pending: Option<H::Pending>,
        },
        Waiting {
            waiting: Pin<Box<Waiting<S, Req, K, H, M, H::Pending>>>,
        },
        Limited {
            error: Box<RateLimited>,
        },
        Missing {
            error: Box<MissingKey>,
        },
        Done,
    }
}

pin_project! {
    struct Waiting<S, Req, K: 'static, H: 'static, M: Sharing, P> {
        #[pin]
        sleep: Sleep,
        // A clone of the service, not the one made ready for this call:
        // readiness can hold capacity (a `ConcurrencyLimit` permit, a
        // `Buffer` slot) that a wait must not keep from other requests.
        // It is made ready once the request is admitted.
        service: S,
        request: Option<Req>,
        shared: SharedState<Shared<K, H>, M>,
        // `None` when `max_delay` reaches past what the clock can
        // represent: the request then waits as long as it takes.
        deadline: Option<Instant>,
        // Whether a check of the request was charged to the overflow
        // bucket, which it reports once.
        overflowed: bool,
        // Set once the bucket admitted the request: what remains is the
        // service's readiness.
        admitted: Option<Grant<P>>,
    }
}

/// How a waiting request was admitted.
enum Grant<P> {
    /// Charged to its bucket; `P` are the admission's headers.
    Admit(P),
    /// Let through without a key.
    Allow,
}

impl<S, Req, K, H, M> ResponseFuture<S, Req, K, H, M>
where
    M: Sharing,
    S: Service<Req>,
    H: ResponseHeaders<S::Response>,
{
    /// An admitted call (with the headers of its admission, if any).
    #[inline]
    pub(crate) fn called(future: S::Future, pending: Option<H::Pending>) -> Self {
        Self {
            state: State::Called { future, pending },
        }
    }

    pub(crate) fn limited(error: Box<RateLimited>) -> Self {
        Self {
            state: State::Limited { error },
        }
    }

    pub(crate) fn missing(error: Box<MissingKey>) -> Self {
        Self {
            state: State::Missing { error },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        shared: SharedState<Shared<K, H>, M>,
        retry_after: Duration,
        max_delay: Duration,
        overflowed: bool,
    ) -> Self {
        let now = Instant::now();
        Self {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    // `sleep` saturates a wait the clock cannot represent.
                    sleep: tokio::time::sleep(retry_after),
                    service,
                    request: Some(request),
                    shared,
                    deadline: now.checked_add(max_delay),
                    overflowed,
                    admitted: None,
                }),
            },
        }
    }
}

const POLLED_AFTER_COMPLETION: &str = "rate-limit response polled after completion";

impl<S, Req, K, H, M> Future for ResponseFuture<S, Req, K, H, M>
where
    M: Sharing,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ExtractKey<Req>,
    H: ResponseHeaders<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            // Admitted calls inline; waits and refusals out of line.
            if let StateProj::Called { future, .. } = state.as_mut().project() {
                let result = ready!(future.poll(cx));
                let finished = state.project_replace(State::Done);
                let mut response = result.map_err(Into::into)?;
                if let StateOwned::Called {
                    pending: Some(pending),
                    ..
                } = finished
                {
                    H::apply(pending, &mut response);
                }
                return Poll::Ready(Ok(response));
            }
            if let ControlFlow::Break(output) = advance(state.as_mut(), cx) {
                return output;
            }
        }
    }
}

/// Moves a request that is not called yet on: a waiting one
/// to its admission and then, once its service is ready, to its call
/// (`Continue`: poll the call), or to its rejection; a refused one to its
/// error.
#[inline(never)]
fn advance<S, Req, K, H, M>(
    mut state: Pin<&mut State<S, Req, K, H, M>>,
    cx: &mut Context<'_>,
) -> ControlFlow<Poll<Result<S::Response, BoxError>>>
where
    M: Sharing,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ExtractKey<Req>,
    H: ResponseHeaders<S::Response>,
{
    loop {
        let StateProj::Waiting { waiting } = state.as_mut().project() else {
            let error: BoxError = match state.project_replace(State::Done) {
                StateOwned::Limited { error } => error,
                StateOwned::Missing { error } => error,
                _ => POLLED_AFTER_COMPLETION.into(),
            };
            return ControlFlow::Break(Poll::Ready(Err(error)));
        };
        let mut waiting = waiting.as_mut().project();
        if waiting.admitted.is_none() {
            if waiting.sleep.as_mut().poll(cx).is_pending() {
                return ControlFlow::Break(Poll::Pending);
            }
            let Some(request) = waiting.request.as_ref() else {
                state.set(State::Done);
                return ControlFlow::Break(Poll::Ready(Err(POLLED_AFTER_COMPLETION.into())));
            };
            let shared = &**waiting.shared;
            let check = Check::Again {
                overflowed: *waiting.overflowed,
            };
            let error: BoxError = match shared.decide::<Req, S::Response>(request, check) {
                Verdict::Admit(pending) => {
                    shared.limiter.emit_admitted();
                    *waiting.admitted = Some(Grant::Admit(pending));
                    continue;
                }
                Verdict::Allow => {
                    shared.limiter.emit_admitted();
                    *waiting.admitted = Some(Grant::Allow);
                    continue;
                }
                Verdict::Limited { retry_after, kind } => {
                    *waiting.overflowed |= kind == KeyKind::Overflow;
                    let wake = Instant::now().checked_add(retry_after);
                    if let Some(wake) =
                        wake.filter(|wake| waiting.deadline.is_none_or(|d| *wake <= d))
                    {
                        waiting.sleep.reset(wake);
                        continue;
                    }
                    shared.reject(retry_after, kind)
                }
                Verdict::Missing => shared.reject_missing(),
            };
            state.set(State::Done);
            return ControlFlow::Break(Poll::Ready(Err(error)));
        }
        // Admitted: the service's own readiness, then the call.
        match waiting.service.poll_ready(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => return ControlFlow::Break(Poll::Pending),
            Poll::Ready(Err(error)) => {
                state.set(State::Done);
                return ControlFlow::Break(Poll::Ready(Err(error.into())));
            }
        }
        let (Some(request), Some(grant)) = (waiting.request.take(), waiting.admitted.take()) else {
            state.set(State::Done);
            return ControlFlow::Break(Poll::Ready(Err(POLLED_AFTER_COMPLETION.into())));
        };
        let future = waiting.service.call(request);
        let pending = match grant {
            Grant::Admit(pending) => Some(pending),
            Grant::Allow => None,
        };
        state.set(State::Called { future, pending });
        return ControlFlow::Continue(());
    }
}

impl<S, Req, K, H, M> fmt::Debug for ResponseFuture<S, Req, K, H, M>
where
    M: Sharing,
    S: Service<Req>,
    H: ResponseHeaders<S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Limited { .. } | State::Missing { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

//! The response future of [`RateLimit`](super::RateLimit).
//!
//! An admitted request's future is the inner service's future plus the
//! prepared headers, with no allocation. A refused request's future is
//! ready at once with the error. In [`Mode::Wait`](super::Mode::Wait), a
//! waiting request's future holds the request, the ready service and a
//! timer in one box, allocated only for requests that actually wait.
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
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::BoxError;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::service::{Shared, Verdict};
use crate::headers::ResponseHeaders;
use crate::key::ExtractKey;

pin_project! {
    /// The future of [`RateLimit`](super::RateLimit)'s responses.
    pub struct ResponseFuture<S, Req, K, H>
    where
        S: Service<Req>,
        H: ResponseHeaders<S::Response>,
    {
        #[pin]
        state: State<S, Req, K, H>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req, K, H>
    where
        S: Service<Req>,
        H: ResponseHeaders<S::Response>,
    {
        Called {
            #[pin]
            future: S::Future,
            pending: Option<H::Pending>,
        },
        Waiting {
            waiting: Pin<Box<Waiting<S, Req, K, H>>>,
        },
        Rejected {
            error: Option<BoxError>,
        },
    }
}

pin_project! {
    struct Waiting<S, Req, K, H> {
        #[pin]
        sleep: Sleep,
        service: S,
        request: Option<Req>,
        shared: Arc<Shared<K, H>>,
        deadline: Instant,
    }
}

impl<S, Req, K, H> ResponseFuture<S, Req, K, H>
where
    S: Service<Req>,
    H: ResponseHeaders<S::Response>,
{
    pub(crate) fn called(future: S::Future, pending: Option<H::Pending>) -> Self {
        Self {
            state: State::Called { future, pending },
        }
    }

    pub(crate) fn rejected(error: BoxError) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
        }
    }

    pub(crate) fn waiting(
        service: S,
        request: Req,
        shared: Arc<Shared<K, H>>,
        retry_after: Duration,
        max_delay: Duration,
    ) -> Self {
        let now = Instant::now();
        Self {
            state: State::Waiting {
                waiting: Box::pin(Waiting {
                    sleep: tokio::time::sleep_until(now + retry_after),
                    service,
                    request: Some(request),
                    shared,
                    deadline: now + max_delay,
                }),
            },
        }
    }
}

impl<S, Req, K, H> Future for ResponseFuture<S, Req, K, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: ExtractKey<Req>,
    H: ResponseHeaders<S::Response>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            let next = match state.as_mut().project() {
                StateProj::Called { future, pending } => {
                    let mut response = ready!(future.poll(cx)).map_err(Into::into)?;
                    if let Some(pending) = pending.take() {
                        H::apply(pending, &mut response);
                    }
                    return Poll::Ready(Ok(response));
                }
                StateProj::Rejected { error } => {
                    return Poll::Ready(Err(error
                        .take()
                        .unwrap_or_else(|| "rate-limit response polled after completion".into())));
                }
                StateProj::Waiting { waiting } => {
                    let mut waiting = waiting.as_mut().project();
                    ready!(waiting.sleep.as_mut().poll(cx));
                    let Some(request) = waiting.request.take() else {
                        return Poll::Ready(Err(
                            "rate-limit response polled after completion".into()
                        ));
                    };
                    let shared = &**waiting.shared;
                    match shared.decide::<Req, S::Response>(&request) {
                        Verdict::Admit(pending) => {
                            shared.limiter.emit_admitted();
                            State::Called {
                                future: waiting.service.call(request),
                                pending,
                            }
                        }
                        Verdict::Limited { retry_after, kind } => {
                            let now = Instant::now();
                            if now + retry_after <= *waiting.deadline {
                                *waiting.request = Some(request);
                                waiting.sleep.reset(now + retry_after);
                                continue;
                            }
                            State::Rejected {
                                error: Some(shared.reject(retry_after, kind)),
                            }
                        }
                        Verdict::Missing => State::Rejected {
                            error: Some(shared.reject_missing()),
                        },
                    }
                }
            };
            state.set(next);
        }
    }
}

impl<S, Req, K, H> fmt::Debug for ResponseFuture<S, Req, K, H>
where
    S: Service<Req>,
    H: ResponseHeaders<S::Response>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

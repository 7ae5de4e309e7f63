//! Response futures of the mapping layers.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use palisade_core::BoxError;
use palisade_core::shared::{Counted, SharedState, Sharing};
use pin_project_lite::pin_project;

use crate::body::MakeErrorBody;
use crate::mapping::{HttpMapping, log_mapped};

pin_project! {
    /// Response future of [`ErrorToResponse`](crate::ErrorToResponse).
    pub struct ResponseFuture<F, H: 'static, M: Sharing = Counted> {
        #[pin]
        state: State<F>,
        mapping: SharedState<HttpMapping<H>, M>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // `finished` once the inner future has answered: it is not polled
        // again (an `async` block panics when resumed after completion).
        // A flag, not a move to another state, which would have to keep
        // the answer aside while the inner future is dropped.
        Inner { #[pin] future: F, finished: bool },
        NotReady { error: Option<BoxError> },
    }
}

impl<F> State<F> {
    /// The inner future, not polled yet.
    #[inline]
    fn inner(future: F) -> Self {
        Self::Inner {
            future,
            finished: false,
        }
    }

    /// The answer to a readiness error, to give once.
    fn not_ready(error: BoxError) -> Self {
        Self::NotReady { error: Some(error) }
    }
}

impl<F, H, M: Sharing> ResponseFuture<F, H, M> {
    pub(crate) fn new(future: F, mapping: SharedState<HttpMapping<H>, M>) -> Self {
        Self {
            state: State::inner(future),
            mapping,
        }
    }

    /// A future answering the mapped response for a readiness error.
    pub(crate) fn not_ready(error: BoxError, mapping: SharedState<HttpMapping<H>, M>) -> Self {
        Self {
            state: State::not_ready(error),
            mapping,
        }
    }
}

impl<F, E, B, H, M> Future for ResponseFuture<F, H, M>
where
    M: Sharing,
    F: Future<Output = Result<http::Response<B>, E>>,
    E: Into<BoxError>,
    B: From<Bytes>,
    H: MakeErrorBody,
{
    type Output = Result<http::Response<B>, Infallible>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let error = match ready!(poll_state(this.state, cx)) {
            Ok(res) => return Poll::Ready(Ok(res)),
            Err(error) => error,
        };
        Poll::Ready(Ok(respond(this.mapping, error)))
    }
}

impl<F, H, M: Sharing> std::fmt::Debug for ResponseFuture<F, H, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("mapping", &self.mapping)
            .finish_non_exhaustive()
    }
}

/// Polls a mapping's state: the inner future's response, or the error to
/// map (the inner future's, a readiness error, or that of a poll after
/// completion). A finished inner future is never polled again.
#[inline]
fn poll_state<F, T, E>(state: Pin<&mut State<F>>, cx: &mut Context<'_>) -> Poll<Result<T, BoxError>>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    Poll::Ready(match state.project() {
        StateProj::Inner { future, finished } => {
            if *finished {
                Err(polled_after_completion())
            } else {
                let result = ready!(future.poll(cx));
                *finished = true;
                result.map_err(Into::into)
            }
        }
        StateProj::NotReady { error } => Err(error.take().unwrap_or_else(polled_after_completion)),
    })
}

/// The error a response future answers when polled after it completed.
#[cold]
fn polled_after_completion() -> BoxError {
    "response future polled after completion".into()
}

/// The mapped response for `error`, logged.
fn respond<B: From<Bytes>, H: MakeErrorBody>(
    mapping: &HttpMapping<H>,
    error: BoxError,
) -> http::Response<B> {
    let res = mapping.to_response(&*error);
    log_mapped(&mapping.problem(&*error), &*error, &res.status());
    res
}

#[cfg(feature = "tonic")]
pub use self::grpc::{ClientStatusFuture, GrpcResponseFuture};

#[cfg(feature = "tonic")]
mod grpc {
    use super::*;
    use crate::grpc::{client_error, grpc_response};
    use palisade_core::protocol::Protocol;

    pin_project! {
        /// Response future of [`ErrorToStatus`](crate::grpc::ErrorToStatus).
        pub struct GrpcResponseFuture<F> {
            #[pin]
            state: State<F>,
            protocol: Protocol,
        }
    }

    impl<F> GrpcResponseFuture<F> {
        pub(crate) fn new(future: F, protocol: Protocol) -> Self {
            Self {
                state: State::inner(future),
                protocol,
            }
        }

        pub(crate) fn not_ready(error: BoxError, protocol: Protocol) -> Self {
            Self {
                state: State::not_ready(error),
                protocol,
            }
        }
    }

    impl<F> std::fmt::Debug for GrpcResponseFuture<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("GrpcResponseFuture").finish_non_exhaustive()
        }
    }

    impl<F, E, B> Future for GrpcResponseFuture<F>
    where
        F: Future<Output = Result<http::Response<B>, E>>,
        E: Into<BoxError>,
        B: Default,
    {
        type Output = Result<http::Response<B>, Infallible>;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            let this = self.project();
            let error = match ready!(poll_state(this.state, cx)) {
                Ok(res) => return Poll::Ready(Ok(res)),
                Err(error) => error,
            };
            Poll::Ready(Ok(grpc_response(error, *this.protocol)))
        }
    }

    pin_project! {
        /// Response future of
        /// [`ClientErrorToStatus`](crate::grpc::ClientErrorToStatus).
        pub struct ClientStatusFuture<F> {
            #[pin]
            state: State<F>,
        }
    }

    impl<F> ClientStatusFuture<F> {
        pub(crate) fn new(future: F) -> Self {
            Self {
                state: State::inner(future),
            }
        }

        /// A future answering the status of a readiness error.
        pub(crate) fn not_ready(error: BoxError) -> Self {
            Self {
                state: State::not_ready(error),
            }
        }
    }

    impl<F> std::fmt::Debug for ClientStatusFuture<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("ClientStatusFuture").finish_non_exhaustive()
        }
    }

    impl<F, T, E> Future for ClientStatusFuture<F>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
    {
        type Output = Result<T, BoxError>;

        #[inline]
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            poll_state(self.project().state, cx).map_err(client_error)
        }
    }
}

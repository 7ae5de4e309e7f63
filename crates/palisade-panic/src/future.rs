//! Response futures of the catch-panic services.
//!
//! [`ResponseFuture`] belongs to the tower flavour and resolves to
//! `Result<Response, BoxError>`; [`HttpResponseFuture`] belongs to the HTTP
//! flavour and resolves to the inner service's result, with a panic turned
//! into a response. Both are plain `pin-project` structs: the layer does
//! not box the future (see [`http`](crate::http) for the one method it
//! keeps by allocating).
//!
//! # Example
//!
//! Naming the future, as a service that wraps the layer's service does:
//!
//! ```
//! use std::future::Ready;
//! use palisade_panic::future::ResponseFuture;
//! use palisade_panic::CatchPanicLayer;
//! use tower::{Layer, Service, service_fn};
//!
//! fn double(x: u32) -> Ready<Result<u32, std::io::Error>> {
//!     std::future::ready(Ok(x * 2))
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let mut svc = CatchPanicLayer::new().layer(service_fn(double));
//! let future: ResponseFuture<Ready<Result<u32, std::io::Error>>> = svc.call(21);
//! assert_eq!(future.await.unwrap(), 42);
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Panicked};
use pin_project_lite::pin_project;

use crate::shared::Shared;

pub use crate::http::future::HttpResponseFuture;

pin_project! {
    /// Response future of [`CatchPanic`](crate::CatchPanic).
    ///
    /// Polls the inner future inside a capture scope. A panic on any poll
    /// becomes a [`Panicked`] error and the inner future is dropped at
    /// once. The inner future's destructor never lets a panic out either:
    /// a future that completed is dropped at once, and a panic there is
    /// logged while the call's result stands; one dropped unfinished (the
    /// call cancelled, by a timeout above or a client gone) is dropped in
    /// a capture scope, and its panic logged.
    ///
    /// # Panics
    ///
    /// Polling again after it returned a `Panicked` error panics, as the
    /// `Future` contract allows.
    pub struct ResponseFuture<F, M: Sharing = Counted> {
        #[pin]
        kind: Kind<F, M>,
    }

    impl<F, M: Sharing> PinnedDrop for ResponseFuture<F, M> {
        fn drop(this: Pin<&mut Self>) {
            let mut kind = this.project().kind;
            if let KindProj::Inner { shared, .. } = kind.as_mut().project() {
                let shared = shared.clone();
                shared.drop_contained(kind, Kind::Done);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, M: Sharing> {
        Inner {
            #[pin]
            future: F,
            shared: SharedState<Shared, M>,
        },
        // Boxed: a panic in `call` is rare, and the box becomes the
        // returned error as it is, while an inline `Panicked` would make
        // every call's future larger.
        Panicked {
            error: Option<Box<Panicked>>,
        },
        Done,
    }
}

impl<F, M: Sharing> ResponseFuture<F, M> {
    pub(crate) fn new(future: F, shared: SharedState<Shared, M>) -> Self {
        Self {
            kind: Kind::Inner { future, shared },
        }
    }

    pub(crate) fn panicked(error: Panicked) -> Self {
        Self {
            kind: Kind::Panicked {
                error: Some(Box::new(error)),
            },
        }
    }
}

impl<F, M, T, E> Future for ResponseFuture<F, M>
where
    M: Sharing,
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut kind = self.project().kind;
        match kind.as_mut().project() {
            KindProj::Inner { future, shared } => match shared.catch(|| future.poll(cx)) {
                Ok(Poll::Ready(result)) => {
                    crate::shared::finish(kind, Kind::Done);
                    Poll::Ready(result.map_err(Into::into))
                }
                Ok(Poll::Pending) => Poll::Pending,
                Err(payload) => {
                    // Build the rejection before dropping the future: a
                    // destructor that panics too must not overwrite what the
                    // hook recorded for this panic.
                    let shared = shared.clone();
                    let panicked = shared.caught(payload, None);
                    shared.drop_contained(kind, Kind::Done);
                    Poll::Ready(Err(panicked.into()))
                }
            },
            KindProj::Panicked { error } => match error.take() {
                Some(panicked) => {
                    kind.set(Kind::Done);
                    // The box itself becomes the error: no second box.
                    let error: BoxError = panicked;
                    Poll::Ready(Err(error))
                }
                None => polled_after_completion(),
            },
            KindProj::Done => polled_after_completion(),
        }
    }
}

#[cold]
#[inline(never)]
pub(crate) fn polled_after_completion() -> ! {
    panic!("catch-panic response future polled after it completed")
}

impl<F, M: Sharing> std::fmt::Debug for ResponseFuture<F, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "running",
            Kind::Panicked { .. } => "panicked",
            Kind::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

//! Response futures of the catch-panic services.
//!
//! [`ResponseFuture`] belongs to the tower flavour and resolves to
//! `Result<Response, BoxError>`; [`HttpResponseFuture`] belongs to the HTTP
//! flavour and resolves to the inner service's result, with a panic turned
//! into a response. Both are plain `pin-project` structs: the layer does
//! not box or allocate per call.
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
    /// Polls the inner future inside a capture scope, and drops it there
    /// as soon as it completes. A panic on any poll, or in the inner
    /// future's destructor as it completes, becomes a [`Panicked`] error
    /// and the inner future is dropped at once. An inner future dropped
    /// unfinished (the call cancelled) is dropped in a capture scope too:
    /// a destructor that panics then is logged, never unwound into the
    /// code that cancelled the call.
    ///
    /// # Panics
    ///
    /// Polling again after it returned a `Panicked` error panics, as the
    /// `Future` contract allows.
    pub struct ResponseFuture<F, M: Sharing = Counted> {
        #[pin]
        kind: Kind<F>,
        shared: SharedState<Shared, M>,
    }

    impl<F, M: Sharing> PinnedDrop for ResponseFuture<F, M> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if matches!(*this.kind, Kind::Inner { .. }) {
                this.shared.drop_contained(this.kind, Kind::Done);
            }
        }
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Inner {
            #[pin]
            future: F,
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
            kind: Kind::Inner { future },
            shared,
        }
    }

    pub(crate) fn panicked(error: Panicked, shared: SharedState<Shared, M>) -> Self {
        Self {
            kind: Kind::Panicked {
                error: Some(Box::new(error)),
            },
            shared,
        }
    }
}

impl<F: Future> Kind<F> {
    /// Polls the inner future, if it runs, and drops it as soon as it
    /// completes, so inside the caller's capture scope: `None` when it
    /// does not run.
    #[inline]
    fn poll_and_finish(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Option<Poll<F::Output>> {
        let KindProj::Inner { future } = self.as_mut().project() else {
            return None;
        };
        let polled = future.poll(cx);
        if polled.is_ready() {
            // The inner future's own destructor runs here, in the scope
            // that polled it: a panic there is the call's.
            self.set(Kind::Done);
        }
        Some(polled)
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
        let this = self.project();
        let mut kind = this.kind;
        let shared: &Shared = this.shared;
        if matches!(*kind, Kind::Inner { .. }) {
            return match shared.catch(|| kind.as_mut().poll_and_finish(cx)) {
                Ok(Some(Poll::Ready(result))) => Poll::Ready(result.map_err(Into::into)),
                Ok(Some(Poll::Pending)) => Poll::Pending,
                Ok(None) => polled_after_completion(),
                Err(payload) => {
                    // Build the rejection before dropping the future: a
                    // destructor that panics too must not overwrite what the
                    // hook recorded for this panic.
                    let panicked = shared.caught(payload, None);
                    shared.drop_contained(kind, Kind::Done);
                    Poll::Ready(Err(panicked.into()))
                }
            };
        }
        match kind.as_mut().project() {
            KindProj::Inner { .. } => polled_after_completion(),
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
    panic!("catch-panic response future polled after it completed with a caught panic")
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

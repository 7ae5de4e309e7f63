//! The response future of the HTTP flavour.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Method, Response};
use palisade_core::Panicked;
use palisade_core::shared::{Counted, SharedState, Sharing};
use pin_project_lite::pin_project;

use super::layer::HttpShared;
use super::path::PathPrefix;
use super::response::{PanicContext, Protocol, ResponseForPanic};
use crate::future::polled_after_completion;
use crate::shared::RequestLabel;

/// What the layer keeps of a request in case it panics: copied without
/// allocating for any path, and for every method but an extension longer
/// than 15 bytes, which `http` keeps on the heap.
pub(crate) struct RequestInfo {
    pub(crate) method: Method,
    pub(crate) path: PathPrefix,
    pub(crate) protocol: Protocol,
}

impl RequestInfo {
    pub(crate) fn label(&self) -> RequestLabel<'_> {
        RequestLabel {
            method: &self.method,
            path: &self.path,
        }
    }
}

pin_project! {
    /// Response future of [`CatchPanicHttp`](super::CatchPanicHttp).
    ///
    /// Polls the inner future inside a capture scope; a panic on any poll
    /// drops the inner future and resolves to the layer's panic response.
    /// The inner future's destructor never lets a panic out either (see
    /// [`ResponseFuture`](crate::future::ResponseFuture)).
    ///
    /// # Panics
    ///
    /// Polling again after it returned the panic response panics, as the
    /// `Future` contract allows.
    pub struct HttpResponseFuture<F, H: 'static, M: Sharing = Counted> {
        #[pin]
        kind: Kind<F>,
        shared: SharedState<HttpShared<H>, M>,
        request: RequestInfo,
    }

    impl<F, H: 'static, M: Sharing> PinnedDrop for HttpResponseFuture<F, H, M> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if matches!(*this.kind, Kind::Inner { .. }) {
                this.shared.core.drop_contained(this.kind, Kind::Done);
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
        Panicked {
            panicked: Option<Box<Panicked>>,
        },
        Done,
    }
}

impl<F, H, M: Sharing> HttpResponseFuture<F, H, M> {
    pub(crate) fn new(
        future: F,
        shared: SharedState<HttpShared<H>, M>,
        request: RequestInfo,
    ) -> Self {
        Self {
            kind: Kind::Inner { future },
            shared,
            request,
        }
    }

    pub(crate) fn panicked(
        panicked: Box<Panicked>,
        shared: SharedState<HttpShared<H>, M>,
        request: RequestInfo,
    ) -> Self {
        Self {
            kind: Kind::Panicked {
                panicked: Some(panicked),
            },
            shared,
            request,
        }
    }
}

fn respond<H, B>(shared: &HttpShared<H>, request: &RequestInfo, panicked: &Panicked) -> Response<B>
where
    H: ResponseForPanic<B>,
{
    shared.hook.response_for_panic(&PanicContext {
        panicked,
        method: &request.method,
        path: request.path.as_str(),
        protocol: request.protocol,
        expose_message: shared.expose_message,
    })
}

impl<F, H, M, B, E> Future for HttpResponseFuture<F, H, M>
where
    M: Sharing,
    F: Future<Output = Result<Response<B>, E>>,
    H: ResponseForPanic<B>,
{
    type Output = Result<Response<B>, E>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut kind = this.kind;
        let shared: &HttpShared<H> = this.shared;
        let request: &RequestInfo = this.request;
        match kind.as_mut().project() {
            KindProj::Inner { future } => match shared.core.catch(|| future.poll(cx)) {
                Ok(Poll::Ready(result)) => {
                    crate::shared::finish(kind, Kind::Done);
                    Poll::Ready(result)
                }
                Ok(Poll::Pending) => Poll::Pending,
                Err(payload) => {
                    let panicked = shared.core.caught(payload, Some(request.label()));
                    shared.core.drop_contained(kind, Kind::Done);
                    Poll::Ready(Ok(respond(shared, request, &panicked)))
                }
            },
            KindProj::Panicked { panicked } => match panicked.take() {
                Some(panicked) => {
                    kind.set(Kind::Done);
                    Poll::Ready(Ok(respond(shared, request, &panicked)))
                }
                None => polled_after_completion(),
            },
            KindProj::Done => polled_after_completion(),
        }
    }
}

impl<F, H, M: Sharing> std::fmt::Debug for HttpResponseFuture<F, H, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.kind {
            Kind::Inner { .. } => "running",
            Kind::Panicked { .. } => "panicked",
            Kind::Done => "done",
        };
        f.debug_struct("HttpResponseFuture")
            .field("state", &state)
            .field("method", &self.request.method)
            .field("path", &self.request.path)
            .finish()
    }
}

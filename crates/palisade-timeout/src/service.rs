use std::task::{Context, Poll};

use palisade_core::deadline::Scope;
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Event, LayerKind};
use tower_service::Service;

use crate::deadline::{Deadline, DeadlineSource, MalformedInput, NoOverride};
use crate::future::{Budget, ResponseFuture};
use crate::layer::Shared;

/// Bounds the time a call to the inner service may take.
///
/// Made by a [`TimeoutLayer`](crate::TimeoutLayer). Each call gets the
/// smallest of the layer's default and what the deadline source `O` reads
/// from the request. When the deadline passes, the inner future is dropped
/// (which cancels the call) and the response future fails with
/// [`Elapsed`](crate::error::Elapsed).
///
/// `M` says how the service and its calls reach the layer's settings: by
/// counted references, or by plain ones once the layer is
/// [leaked](crate::TimeoutLayer::leak).
#[derive(Clone, Debug)]
pub struct Timeout<S, O = NoOverride, M: Sharing = Counted> {
    inner: S,
    shared: SharedState<Shared, M>,
    source: O,
}

impl<S, O, M: Sharing> Timeout<S, O, M> {
    pub(crate) fn from_parts(inner: S, shared: SharedState<Shared, M>, source: O) -> Self {
        Self {
            inner,
            shared,
            source,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Consumes the timeout and returns the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, O, M, Req> Service<Req> for Timeout<S, O, M>
where
    M: Sharing,
    S: Service<Req>,
    S::Error: Into<BoxError>,
    O: DeadlineSource<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Req) -> Self::Future {
        let requested = self.source.requested(&request);
        if let Some(malformed) = requested.malformed() {
            report_malformed(&self.shared, malformed);
        }
        let (timeout, caller) = match requested.timeout() {
            Some(asked) if asked < self.shared.timeout => (asked, requested.is_from_caller()),
            _ => (self.shared.timeout, false),
        };
        self.source
            .expose(&mut request, Deadline::with_origin(timeout, caller));
        let budget = Budget::new(timeout, caller);
        let future = {
            let _running = Scope::enter(budget.nanos(), None, caller);
            self.inner.call(request)
        };
        ResponseFuture::new(future, budget, self.shared.clone())
    }
}

/// Reports a malformed deadline header a client sent. The log line is
/// contained: a log backend that panics must not fail the request of a
/// client that sent a bad header.
#[cold]
fn report_malformed(shared: &Shared, malformed: MalformedInput) {
    shared.metrics.emit(&Event::MalformedHeader {
        policy: shared.policy.as_str(),
        layer: LayerKind::Timeout,
        header: malformed.header,
    });
    palisade_core::panic::contained(|| {
        tracing::debug!(
            policy = shared.policy.as_str(),
            header = malformed.header,
            reason = malformed.reason,
            "ignored a malformed deadline header"
        );
    });
}

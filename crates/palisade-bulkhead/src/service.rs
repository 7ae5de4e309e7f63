use std::task::{Context, Poll};

use palisade_core::classify::{Classify, ErrorsAsFailures, RecordOutcome};
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, InFlightChange, OverloadKind};
use tower_service::Service;

use crate::future::{OutcomeRecorder, ResponseFuture, Ticket};
use crate::layer::{Calling, Core};
use crate::limiter::{Admission, Report};

/// Limits how many calls to the inner service run at once.
///
/// Made by a [`BulkheadLayer`](crate::BulkheadLayer). Admission happens per
/// request, in [`call`](Service::call): `poll_ready` only waits for the
/// inner service. A request that finds a free slot runs at once; otherwise
/// it waits in the FIFO queue (when waiting is configured) or is rejected
/// with [`Overloaded`](crate::error::Overloaded). See the crate docs for
/// how this differs from `tower::limit::ConcurrencyLimit`.
///
/// The service must be `Clone`: a request that has to wait takes a clone
/// of the inner service with it and makes that clone ready only once it
/// has its slot. The service made ready for the call stays in place, so
/// whatever its readiness holds (a `tower::limit::ConcurrencyLimit`
/// permit, a `tower::buffer::Buffer` slot) is never kept through a wait in
/// the queue; an error of that later readiness is the request's answer,
/// judged like a failed call. Requests that do not wait never clone it.
#[derive(Clone, Debug)]
pub struct Bulkhead<S, C = ErrorsAsFailures, M: Sharing = Counted> {
    inner: S,
    core: SharedState<Core, M>,
    classify: C,
}

impl<S, C, M: Sharing> Bulkhead<S, C, M> {
    pub(crate) fn from_parts(inner: S, core: SharedState<Core, M>, classify: C) -> Self {
        Self {
            inner,
            core,
            classify,
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

    /// Consumes the bulkhead and returns the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Calls in flight now, across every clone.
    pub fn in_flight(&self) -> usize {
        self.core.limiter.in_flight()
    }

    /// The limit in force now.
    pub fn limit(&self) -> usize {
        self.core.limiter.limit()
    }
}

impl<S, C, M, Req> Service<Req> for Bulkhead<S, C, M>
where
    M: Sharing,
    OutcomeRecorder<M>: RecordOutcome,
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    C: Classify<S::Response, BoxError> + Clone,
{
    type Response = C::Output<OutcomeRecorder<M>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, S, Req, C, M>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Never waits for a slot here: see the crate docs.
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        if size_of::<Self::Future>() <= BUILT_IN_PLACE {
            self.call_in_place(request)
        } else {
            self.call_out_of_line(request)
        }
    }
}

/// The largest response future [`Bulkhead`]'s `call` builds in the
/// caller's code. Built there, a small future needs no call to come back
/// through (about 1.5 ns of the layer's 16 ns, `u64` bench); a large one
/// inlined the same way was copied between temporaries more often than
/// one built by a call straight into its place (three more copies of the
/// HTTP stack's 312-byte bulkhead future per request).
const BUILT_IN_PLACE: usize = 128;

impl<S, C, M: Sharing> Bulkhead<S, C, M> {
    /// `call`, inlined whole: the admitted path, with the rest out of line.
    #[inline(always)]
    fn call_in_place<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, S, Req, C, M>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        if let Some(in_flight) = self.core.limiter.try_acquire() {
            return self.run(request, in_flight);
        }
        self.call_contended(request)
    }

    /// `call` for a large response future: one call that builds it in
    /// place.
    #[inline(never)]
    fn call_out_of_line<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, S, Req, C, M>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        self.call_in_place(request)
    }

    /// The rest of `call` when no slot was free at once: reject, or queue.
    #[inline(never)]
    fn call_contended<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, S, Req, C, M>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        let core = &self.core;
        if core.limiter.queue_capacity() == 0 {
            let error = core.reject(OverloadKind::Full);
            return ResponseFuture::rejected(error, self.classify.clone());
        }
        match core.limiter.acquire_or_enqueue(&core.events()) {
            Admission::Acquired(in_flight) => self.run(request, in_flight),
            Admission::Queued(node) => {
                // The ticket owns the place before anything that may
                // panic. The wait takes a clone and makes it ready once it
                // has its slot: the ready service stays here, with
                // whatever capacity its readiness holds, for the next call.
                let ticket = Ticket::new(node, self.core.clone());
                ResponseFuture::waiting(
                    self.inner.clone(),
                    request,
                    ticket,
                    core.max_wait,
                    self.classify.clone(),
                )
            }
            Admission::QueueFull => {
                let error = core.reject(OverloadKind::QueueFull);
                ResponseFuture::rejected(error, self.classify.clone())
            }
        }
    }

    /// Runs an admitted request whose slot is already taken (`in_flight`
    /// is the count right after): a [`Calling`] guard owns the slot before
    /// any event is emitted, so a metrics sink or an inner `call` that
    /// panics still gives it back, and the permit takes it over once the
    /// call is made.
    #[inline]
    fn run<Req>(
        &mut self,
        request: Req,
        in_flight: usize,
    ) -> ResponseFuture<S::Future, S, Req, C, M>
    where
        S: Service<Req>,
        C: Clone,
    {
        let calling = Calling::new(&self.core, in_flight);
        let core = &self.core;
        // Checked here, not only inside `emit`: the limit the event carries
        // is an atomic load, which would otherwise wait behind the slot's
        // compare-and-swap for events nobody receives.
        if core.metrics.is_enabled() {
            core.events()
                .change(InFlightChange::Acquired, in_flight, core.limiter.limit());
            core.admitted();
        }
        let future = self.inner.call(request);
        ResponseFuture::running(future, calling.into_permit(), self.classify.clone())
    }
}

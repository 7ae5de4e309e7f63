use std::task::{Context, Poll};

use palisade_core::classify::{Classify, ErrorsAsFailures, RecordOutcome};
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, InFlightChange, OverloadKind, Overloaded};
use tower_service::Service;

use crate::future::{OutcomeRecorder, Queued, ResponseFuture, Ticket};
use crate::layer::{Calling, Core};
use crate::limiter::{Admission, Report, WaitNode};
use crate::sync::Arc as NodeArc;

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
/// caller's code, where a small future needs no call to come back through
/// and goes straight into the caller's place. A large one inlined the
/// same way was copied between temporaries more often than one built by
/// a call straight into its place (the HTTP stack, whose bulkhead future
/// is 312 bytes, took about 10 ns longer per request).
const BUILT_IN_PLACE: usize = 128;

/// How a call that found no slot free at once goes on. Small enough to
/// come back in registers.
enum Contended {
    /// A slot was free after all; the count right after taking it.
    Acquired(usize),
    /// Queued for a slot.
    Queued(NodeArc<WaitNode>),
    /// Turned away, with the error to answer.
    Rejected(Box<Overloaded>),
}

impl<S, C, M: Sharing> Bulkhead<S, C, M> {
    /// `call`, inlined whole: the admitted path, with the rest out of line.
    ///
    /// Every call out of line answers in registers, never with the
    /// response future or a value the future holds: a future that one
    /// branch fills from a call's memory is built in a temporary and
    /// copied to the caller after the branches meet (about 8 ns of the
    /// `u64` bench's 16 ns), where one built only from inline stores goes
    /// straight into the caller's place.
    #[inline(always)]
    fn call_in_place<Req>(&mut self, request: Req) -> ResponseFuture<S::Future, S, Req, C, M>
    where
        S: Service<Req> + Clone,
        C: Clone,
    {
        let in_flight = match self.core.limiter.try_acquire() {
            Some(in_flight) => in_flight,
            // Without a queue, a full bulkhead turns the call away here.
            None if self.core.limiter.queue_capacity() == 0 => {
                let error = self.core.reject(OverloadKind::Full);
                return ResponseFuture::rejected(error, self.classify.clone());
            }
            None => match self.contend() {
                Contended::Acquired(in_flight) => in_flight,
                Contended::Queued(node) => {
                    let queued = self.queue(request, node);
                    return ResponseFuture::waiting(queued, self.classify.clone());
                }
                Contended::Rejected(error) => {
                    return ResponseFuture::rejected(error, self.classify.clone());
                }
            },
        };
        self.run(request, in_flight)
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

    /// No slot was free at once, and requests may queue: take one after
    /// all, queue, or reject.
    #[inline(never)]
    fn contend(&self) -> Contended {
        let core = &self.core;
        // Never past the deadline of an enclosing timeout: a request still
        // queued then is turned away as overloaded (which a breaker does
        // not count as a failure of the service) instead of timing out in
        // the queue.
        let deadline = || palisade_core::deadline::wait_deadline(core.max_wait);
        match core.limiter.acquire_or_enqueue(&core.events(), deadline) {
            Admission::Acquired(in_flight) => Contended::Acquired(in_flight),
            Admission::Queued(node) => Contended::Queued(node),
            Admission::QueueFull => Contended::Rejected(core.reject(OverloadKind::QueueFull)),
        }
    }

    /// The wait of a request queued at `node`.
    #[inline(never)]
    fn queue<Req>(&mut self, request: Req, node: NodeArc<WaitNode>) -> Queued<S, Req, M>
    where
        S: Clone,
    {
        // The ticket owns the place before anything that may panic. The
        // wait takes a clone and makes it ready once it has its slot: the
        // ready service stays here, with whatever capacity its readiness
        // holds, for the next call.
        let ticket = Ticket::new(node, self.core.clone());
        let since = self.core.clock.now();
        Queued::new(self.inner.clone(), request, ticket, since)
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

//! The response future of [`Bulkhead`](crate::Bulkhead), and the recorder
//! that reports a call's outcome to an adaptive limit.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use palisade_core::classify::{Classify, RecordOutcome};
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Outcome, OverloadKind, Overloaded};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use crate::layer::{Core, Permit};
use crate::limiter::WaitNode;
use crate::sync::Arc as NodeArc;

/// The largest output the response future returns in registers.
const IN_REGISTERS: usize = 16;

pin_project! {
    /// The response future of [`Bulkhead`](crate::Bulkhead).
    ///
    /// Holds the request's slot while the inner call runs and gives it
    /// back when the call finishes, fails, panics, or when this future is
    /// dropped. A request that waits for a slot keeps its place in the
    /// FIFO queue here; dropping the future leaves the queue.
    pub struct ResponseFuture<F, S, Req, C, M: Sharing = Counted> {
        #[pin]
        state: State<F, S, Req, M>,
        classify: C,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S, Req, M: Sharing> {
        Running {
            #[pin]
            future: F,
            // Dropped in place when the call ends: the slot is freed
            // once the response is classified, before it is returned.
            permit: Permit<M>,
        },
        // Boxed: waiting is the slow path, and keeping it out of line keeps
        // the future small for calls that never wait.
        Waiting {
            wait: Pin<Box<Wait<S, Req, M>>>,
        },
        Rejected {
            error: Option<Box<Overloaded>>,
        },
        Done,
    }
}

pin_project! {
    struct Wait<S, Req, M: Sharing> {
        // A clone of the service, not the one made ready for this call:
        // readiness can hold capacity (a `ConcurrencyLimit` permit, a
        // `Buffer` slot) that a queued request must not keep from
        // others. It is made ready once the request has its slot.
        service: Option<S>,
        request: Option<Req>,
        ticket: Ticket<M>,
        // The slot, once granted: what remains is the service's readiness.
        permit: Option<Permit<M>>,
        // When the request was queued, on the layer's clock.
        since: Instant,
        #[pin]
        sleep: Sleep,
    }
}

impl<F, S, Req, C, M: Sharing> ResponseFuture<F, S, Req, C, M> {
    #[inline]
    pub(crate) fn running(future: F, permit: Permit<M>, classify: C) -> Self {
        Self {
            state: State::Running { future, permit },
            classify,
        }
    }

    pub(crate) fn rejected(error: Box<Overloaded>, classify: C) -> Self {
        Self {
            state: State::Rejected { error: Some(error) },
            classify,
        }
    }

    /// A request waiting in the queue.
    #[inline]
    pub(crate) fn waiting(queued: Queued<S, Req, M>, classify: C) -> Self {
        Self {
            state: State::Waiting { wait: queued.0 },
            classify,
        }
    }
}

/// The wait of a queued request, boxed as [`State::Waiting`] holds it.
pub(crate) struct Queued<S, Req, M: Sharing>(Pin<Box<Wait<S, Req, M>>>);

impl<S, Req, M: Sharing> Queued<S, Req, M> {
    /// `ticket` owns the request's place from the moment it was queued, so
    /// that a panic while the rest is made (a service whose clone panics,
    /// a runtime without a timer) gives the place back. `since` is when it
    /// was queued, on the layer's clock.
    pub(crate) fn new(service: S, request: Req, ticket: Ticket<M>, since: Instant) -> Self {
        // The wait ends when the node's does (see `Bulkhead::contend`).
        // Ready at the same instant as an enclosing timeout, this inner
        // wait wins, as the timeout polls its inner future first: the wait
        // ends at the deadline's own instant, not a duration from a later
        // reading.
        let sleep = tokio::time::sleep_until(ticket.node.deadline());
        Self(Box::pin(Wait {
            service: Some(service),
            request: Some(request),
            ticket,
            permit: None,
            since,
            sleep,
        }))
    }
}

impl<F, S, Req, C, M: Sharing> fmt::Debug for ResponseFuture<F, S, Req, C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Running { .. } => "running",
            State::Waiting { .. } => "waiting",
            State::Rejected { .. } => "rejected",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

const POLLED_AFTER_COMPLETION: &str = "bulkhead response polled after completion";

impl<F, S, Req, C, M, T, E> Future for ResponseFuture<F, S, Req, C, M>
where
    M: Sharing,
    OutcomeRecorder<M>: RecordOutcome,
    F: Future<Output = Result<T, E>>,
    S: Service<Req, Future = F, Error = E>,
    E: Into<BoxError>,
    C: Classify<T, BoxError>,
{
    type Output = Result<C::Output<OutcomeRecorder<M>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Running { future, permit } => {
                    let polled = FailOnUnwind::run(permit, || future.poll(cx));
                    let result = ready!(polled).map_err(Into::into);
                    let recorder = permit.recorder();
                    // Free the slot now, not when the caller drops this
                    // future: it may be slow to take the response.
                    if size_of::<Self::Output>() > IN_REGISTERS {
                        // Before the response is classified: classified
                        // first, a large response would be built in a
                        // temporary, kept there while the state (which may
                        // unwind) is dropped, and then copied out.
                        this.state.set(State::Done);
                        return Poll::Ready(this.classify.classify(result, recorder));
                    }
                    // A small response is returned in registers: classified
                    // first, it is not held in memory across the drop.
                    let output = this.classify.classify(result, recorder);
                    this.state.set(State::Done);
                    return Poll::Ready(output);
                }
                StateProj::Waiting { wait } => {
                    let mut wait = wait.as_mut().project();
                    if wait.permit.is_none() {
                        let admitted = match wait.ticket.node.poll_granted(cx) {
                            Poll::Ready(()) => true,
                            Poll::Pending => {
                                ready!(wait.sleep.as_mut().poll(cx));
                                // Out of time, unless the slot arrived just now.
                                wait.ticket.leave()
                            }
                        };
                        // A slot that arrives when an enclosing timeout's
                        // deadline has passed is handed on: the call could
                        // only time out, and would count as the service's
                        // failure.
                        let too_late = admitted
                            && palisade_core::deadline::remaining()
                                .is_some_and(|left| left.is_zero());
                        let Some(core) = wait.ticket.take_core() else {
                            this.state.set(State::Done);
                            continue;
                        };
                        if too_late {
                            core.limiter.release(&core.events());
                        }
                        if !admitted || too_late {
                            let error = core.reject(OverloadKind::WaitTimedOut);
                            this.state.set(State::Rejected { error: Some(error) });
                            continue;
                        }
                        let in_flight = core.limiter.in_flight();
                        // The slot is owned by the permit before anything
                        // else runs, so a panic in a metrics sink, in
                        // `poll_ready` or in `call` still frees it.
                        *wait.permit = Some(Permit::new(core.clone(), in_flight));
                        // The wait is local overload: a breaker above that
                        // times the call leaves it out of the latency.
                        palisade_core::queue::report(
                            core.clock.now().saturating_duration_since(*wait.since),
                        );
                        core.admitted();
                    }
                    let ready = match wait.service.as_mut() {
                        Some(service) => {
                            let mut guard = FailOnUnwind(wait.permit.as_mut());
                            let polled = service.poll_ready(cx);
                            guard.0 = None;
                            ready!(polled).map_err(Into::into)
                        }
                        None => Err(BoxError::from(POLLED_AFTER_COMPLETION)),
                    };
                    let (Some(mut permit), Some(mut service), Some(request)) =
                        (wait.permit.take(), wait.service.take(), wait.request.take())
                    else {
                        this.state.set(State::Done);
                        continue;
                    };
                    if let Err(error) = ready {
                        // Judged like a failed call; the slot is freed
                        // with the permit, before the answer is returned.
                        let output = this.classify.classify(Err(error), permit.recorder());
                        drop(permit);
                        this.state.set(State::Done);
                        return Poll::Ready(output);
                    }
                    let future = FailOnUnwind::run(&mut permit, || service.call(request));
                    this.state.set(State::Running { future, permit });
                }
                StateProj::Rejected { error } => {
                    let error = match error.take() {
                        Some(error) => error as BoxError,
                        None => POLLED_AFTER_COMPLETION.into(),
                    };
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => {
                    return Poll::Ready(Err(POLLED_AFTER_COMPLETION.into()));
                }
            }
        }
    }
}

/// Records a failure for the sampled call whose `call` or poll it guards
/// if that unwinds: the service panicked. A call dropped while the thread
/// unwinds from a panic of someone else's (another branch of its caller)
/// is cancelled, as any dropped call; and a layer above that catches the
/// panic may drop this future only later, once the thread is no longer
/// unwinding.
struct FailOnUnwind<'a, M: Sharing>(Option<&'a mut Permit<M>>);

impl<M: Sharing> FailOnUnwind<'_, M> {
    /// Runs `f` (the service's `call`, or a poll of its future), guarded
    /// when the permit samples.
    #[inline(always)]
    fn run<T>(permit: &mut Permit<M>, f: impl FnOnce() -> T) -> T {
        if !permit.is_sampled() {
            return f();
        }
        let mut guard = FailOnUnwind(Some(permit));
        let output = f();
        guard.0 = None;
        output
    }
}

impl<M: Sharing> Drop for FailOnUnwind<'_, M> {
    fn drop(&mut self) {
        if let Some(permit) = self.0.take() {
            permit.recorder().finish(Outcome::Failure);
        }
    }
}

/// A place in the wait queue. Dropped while still queued, it leaves the
/// queue; if a slot was handed to it in the meantime, it gives the slot
/// back.
pub(crate) struct Ticket<M: Sharing> {
    node: NodeArc<WaitNode>,
    /// `None` once the ticket has been turned into a permit or a rejection.
    core: Option<SharedState<Core, M>>,
}

impl<M: Sharing> Ticket<M> {
    /// Owns the place `node` holds in `core`'s queue.
    pub(crate) fn new(node: NodeArc<WaitNode>, core: SharedState<Core, M>) -> Self {
        Self {
            node,
            core: Some(core),
        }
    }

    /// Leaves the queue at the end of the wait. Returns `true` if a slot
    /// was handed over first: the request is admitted after all.
    fn leave(&mut self) -> bool {
        match &self.core {
            Some(core) => core.limiter.cancel(&self.node),
            None => false,
        }
    }

    /// Hands the core over; the ticket no longer owns a place or a slot.
    fn take_core(&mut self) -> Option<SharedState<Core, M>> {
        self.core.take()
    }
}

impl<M: Sharing> Drop for Ticket<M> {
    fn drop(&mut self) {
        if let Some(core) = self.core.take()
            && core.limiter.cancel(&self.node)
        {
            core.limiter.release(&core.events());
        }
    }
}

/// Reports one call's outcome to an adaptive limit.
///
/// The bulkhead hands it to its [`Classify`] with the call's result. With
/// a fixed limit it does nothing. With an adaptive limit it reads the
/// clock when the outcome is recorded and adds the latency and the outcome
/// to the current window. Dropped without recording, it counts the call as
/// cancelled (not sampled), or as a failure if a timeout above cut the
/// call off at its own deadline after it had run at least half of that
/// deadline (see [`adaptive`](crate::adaptive)). A service that panics in
/// `call`, `poll_ready` or a poll has its call counted as failed where the
/// panic is raised.
///
/// `M` is the layer's kind of [shared-state handle](palisade_core::shared).
pub struct OutcomeRecorder<M: Sharing = Counted> {
    sample: Option<SampleStart<M>>,
}

struct SampleStart<M: Sharing> {
    core: SharedState<Core, M>,
    start: Instant,
    in_flight: usize,
    /// When the call answered, if its outcome waits for the end of its
    /// stream ([`RecordOutcome::answered`]): its latency ends there.
    answered: Option<Instant>,
}

impl<M: Sharing> OutcomeRecorder<M> {
    #[inline]
    pub(crate) fn sampled(core: SharedState<Core, M>, start: Instant, in_flight: usize) -> Self {
        Self {
            sample: Some(SampleStart {
                core,
                start,
                in_flight,
                answered: None,
            }),
        }
    }

    #[inline(always)]
    pub(crate) fn none() -> Self {
        Self { sample: None }
    }
}

impl<M: Sharing> RecordOutcome for OutcomeRecorder<M>
where
    SharedState<Core, M>: Send,
{
    #[inline(always)]
    fn record(mut self, outcome: Outcome) {
        // Fixed limits sample nothing: keep their path to one test.
        if self.sample.is_some() {
            self.finish(outcome);
        }
    }

    /// A gRPC answer whose status comes in its trailers: the latency
    /// sample ends with its head, not with a stream that may run for
    /// minutes.
    fn answered(&mut self) {
        if let Some(sample) = &mut self.sample
            && sample.answered.is_none()
        {
            sample.answered = Some(sample.core.clock.now());
        }
    }
}

impl<M: Sharing> OutcomeRecorder<M> {
    /// Feeds the sample, if still held, to the adaptive limit.
    #[inline(never)]
    fn finish(&mut self, outcome: Outcome) {
        if let Some(sample) = self.sample.take() {
            let end = sample.answered.unwrap_or_else(|| sample.core.clock.now());
            sample.core.sample(
                outcome,
                end.saturating_duration_since(sample.start),
                sample.in_flight,
            );
        }
    }

    /// Dropped without an outcome: the call was cancelled, or failed if a
    /// timeout above cut it off at its own deadline. A drop while the
    /// thread unwinds is no different: where the service itself panicked,
    /// the guard around its `call` or poll recorded the failure already.
    #[cold]
    #[inline(never)]
    fn unrecorded(&mut self) {
        let cut_by_timeout = |sample: &SampleStart<M>| {
            // Only a call that ran at least half the cutting deadline is
            // what the timeout gave up on; one started late inside the cut
            // call (another step's bulkhead) was not. Time queued for the
            // slot is left out on purpose (see `adaptive`).
            palisade_core::classify::being_cut_off().is_some_and(|deadline| {
                sample
                    .core
                    .clock
                    .now()
                    .saturating_duration_since(sample.start)
                    >= deadline / 2
            })
        };
        let outcome = match &self.sample {
            Some(sample) if cut_by_timeout(sample) => Outcome::Failure,
            _ => Outcome::Cancelled,
        };
        self.finish(outcome);
    }
}

impl<M: Sharing> Drop for OutcomeRecorder<M> {
    #[inline]
    fn drop(&mut self) {
        if self.sample.is_some() {
            self.unrecorded();
        }
    }
}

impl<M: Sharing> fmt::Debug for OutcomeRecorder<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutcomeRecorder")
            .field("sampling", &self.sample.is_some())
            .finish()
    }
}

//! Futures of the fallback service and of its sources.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use palisade_core::panic::{self as capture, CaptureOptions};
use palisade_core::shared::{Counted, SharedState, Sharing};
use palisade_core::{BoxError, Event, PolicyName};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::error::FallbackFailed;
use crate::layer::Shared;
use crate::predicate::Predicate;
use crate::source::{Cause, Source};

pin_project! {
    /// Response future of [`Fallback`](crate::Fallback).
    ///
    /// Polls the inner call; when the predicate claims its error or its
    /// response, reports the fallback and polls the source's answer
    /// instead.
    pub struct ResponseFuture<Fut, P: 'static, F, Req, Res, M: Sharing = Counted>
    where
        F: Source<Req, Res>,
        F: 'static,
    {
        #[pin]
        state: State<Fut, F::Future>,
        kept: Option<F::Kept>,
        // Set once the inner call's result went out unanswered: the
        // finished future is not polled again (an `async` block panics
        // when resumed after completion). Beside `kept`, not in the
        // state, where it would grow every future of the stack.
        finished: bool,
        shared: SharedState<Shared<P, F>, M>,
        _types: PhantomData<fn(Req) -> Res>,
    }

    impl<Fut, P: 'static, F, Req, Res, M: Sharing> PinnedDrop for ResponseFuture<Fut, P, F, Req, Res, M>
    where
        F: Source<Req, Res>,
        F: 'static,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // The source's answer is the user's code: a destructor that
            // panics as a client gives up on it is contained.
            if matches!(*this.state, State::Answer { .. }) {
                end_answer(&this.shared.name, this.state);
            }
            // So is what the source kept of a request it did not answer
            // for; nothing to do for a source that keeps nothing.
            if std::mem::needs_drop::<F::Kept>()
                && let Some(kept) = this.kept.take()
            {
                capture::contain_drop(&this.shared.name, CAPTURE, move || drop(kept));
            }
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<Fut, A> {
        Inner { #[pin] future: Fut },
        // `stood_for`: what the answer stands in for, kept only by a
        // source that can fail.
        Answer { #[pin] future: A, stood_for: Option<StoodFor> },
        // The source panicked making or polling its answer: the error to
        // answer with instead, taken once.
        Failed { error: Option<BoxError> },
        // The service failed to become ready: the claimed error, answered
        // for when first polled, taken once.
        Unready { error: Option<BoxError> },
    }
}

impl<Fut, P, F, Req, Res, M> ResponseFuture<Fut, P, F, Req, Res, M>
where
    F: Source<Req, Res>,
    M: Sharing,
{
    /// The future of a call; `kept` is what the source kept of its
    /// request, `None` when keeping it panicked.
    pub(crate) fn new(
        future: Fut,
        kept: Option<F::Kept>,
        shared: SharedState<Shared<P, F>, M>,
    ) -> Self {
        Self {
            state: State::Inner { future },
            kept,
            finished: false,
            shared,
            _types: PhantomData,
        }
    }

    /// A future that answers from the source, for a readiness failure,
    /// when first polled; with nothing kept, the failure is the answer.
    ///
    /// Not answered here: a `call` whose branches both built their future
    /// inline has it built straight in its caller's place, while one
    /// filled from the source's answer, made by a call, would have every
    /// call's future built in a temporary and copied.
    #[inline]
    pub(crate) fn unready(
        error: BoxError,
        kept: Option<F::Kept>,
        shared: SharedState<Shared<P, F>, M>,
    ) -> Self {
        Self {
            state: State::Unready { error: Some(error) },
            kept,
            finished: false,
            shared,
            _types: PhantomData,
        }
    }
}

/// What the fallback's own code runs under: the predicate judging an
/// error, the source making and polling its answer. It runs on the
/// degraded path only, and a panic there must not unwind through the
/// stack (the fallback is its outermost layer, above the panic-catch).
const CAPTURE: CaptureOptions = CaptureOptions {
    backtrace: true,
    print: false,
};

/// Whether the predicate claims `err`: a predicate that panics claims
/// nothing, and the error goes on as it is.
pub(crate) fn claims<P, F, Res>(shared: &Shared<P, F>, err: &BoxError) -> bool
where
    P: Predicate<Res>,
{
    match capture::catch(CAPTURE, || shared.predicate.check_error(&**err).is_some()) {
        Ok(claimed) => claimed,
        Err(payload) => {
            let _ = report_panic(
                &shared.name,
                payload,
                "fallback predicate panicked; the error goes on",
            );
            false
        }
    }
}

/// Whether the predicate claims the response `res`: a predicate that
/// panics claims nothing, and the response goes on as it is. Judged on
/// every response, so a plain `catch_unwind` (free unless the predicate
/// can panic at all) and not a capture scope: the panic hook prints the
/// panic with its location as it would without palisade.
#[inline]
fn claims_response<P, F, Res>(shared: &Shared<P, F>, res: &Res) -> bool
where
    P: Predicate<Res>,
{
    let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        shared.predicate.check_response(res)
    }));
    match judged {
        Ok(claimed) => claimed,
        Err(payload) => {
            let _ = report_panic(
                &shared.name,
                payload,
                "fallback predicate panicked; the response goes on",
            );
            false
        }
    }
}

/// What the source keeps of `req`, for an answer it may have to make:
/// `None` when keeping it panicked, logged, so that the call goes on
/// without a fallback instead of the panic leaving the layer. Run on every
/// call, so a plain `catch_unwind`, free for a source whose keeping cannot
/// panic.
#[inline]
pub(crate) fn keep<P, F, Req, Res>(shared: &Shared<P, F>, req: &Req) -> Option<F::Kept>
where
    F: Source<Req, Res>,
{
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.source.keep(req))) {
        Ok(kept) => Some(kept),
        Err(payload) => {
            let _ = report_panic(
                &shared.name,
                payload,
                "fallback source panicked keeping the request; the call goes on without a fallback",
            );
            None
        }
    }
}

/// The result of a call that is not answered by the source: the claimed
/// response or error itself.
fn unanswered<Res>(cause: Cause<Res>) -> Result<Res, BoxError> {
    match cause {
        Cause::Response(res) => Ok(res),
        Cause::Rejection(error) | Cause::Error(error) => Err(error),
    }
}

#[cold]
fn polled_after_completion() -> BoxError {
    "fallback polled after completion".into()
}

/// Drops the source's answer in place: its destructor is the user's code,
/// so a panic there is contained.
fn end_answer<Fut, A>(policy: &PolicyName, mut state: Pin<&mut State<Fut, A>>) {
    capture::contain_drop(policy, CAPTURE, move || {
        state.set(State::Failed { error: None });
    });
}

/// Reports a panic of the fallback's own code (a `tracing` error with its
/// stack; not a `PanicCaught` event, which says the service panicked) and
/// returns it as an error.
#[cold]
#[inline(never)]
fn report_panic(
    policy: &PolicyName,
    payload: Box<dyn std::any::Any + Send>,
    what: &'static str,
) -> BoxError {
    let panicked = capture::panicked(policy.clone(), &*payload);
    capture::contain_drop(policy, CAPTURE, move || drop(payload));
    capture::contained(|| {
        tracing::error!(
            policy = policy.as_str(),
            panic.message = panicked.message(),
            panic.location = panicked.location().map(tracing::field::display),
            panic.backtrace = panicked.backtrace().map(tracing::field::display),
            "{what}"
        );
    });
    Box::new(panicked)
}

/// Reports the fallback and starts the source's answer, with a copy of the
/// rejection it answers for when the answer can fail; a source that panics
/// fails the answer (see [`answer_failed`]).
fn answer<P, F, Req, Res, Fut>(
    shared: &Shared<P, F>,
    kept: F::Kept,
    cause: Cause<Res>,
) -> State<Fut, F::Future>
where
    F: Source<Req, Res>,
{
    let trigger = cause.trigger();
    let policy = shared.name.as_str();
    // The sink and the log backend are the user's code, and the fallback
    // is outermost: nothing of theirs unwinds through the stack.
    capture::contained(|| {
        shared
            .metrics
            .emit(&Event::FallbackUsed { policy, trigger });
        tracing::debug!(policy, trigger = trigger.as_str(), "fallback answered");
    });
    let stood_for = if F::CAN_FAIL {
        StoodFor::of(&cause)
    } else {
        None
    };
    match capture::catch(CAPTURE, || shared.source.answer(kept, cause)) {
        Ok(future) => State::Answer { future, stood_for },
        Err(payload) => {
            let error = report_panic(&shared.name, payload, "fallback source panicked");
            State::Failed {
                error: Some(answer_failed(&shared.name, stood_for, error)),
            }
        }
    }
}

/// What an answer that can fail stands in for, kept to report its failure
/// with: a copy of the palisade rejection, or the text of the service's
/// own error (the error itself goes to the source).
enum StoodFor {
    Rejection(BoxError),
    Error(Box<str>),
}

impl StoodFor {
    #[cold]
    fn of<Res>(cause: &Cause<Res>) -> Option<Self> {
        match cause {
            // The chain is the service's code: contained.
            Cause::Rejection(_) => {
                capture::contained_value(|| cause.rejection().map(|found| found.to_boxed()))
                    .flatten()
                    .map(Self::Rejection)
            }
            // The error's `Display` is the service's code.
            Cause::Error(error) => Some(Self::Error(
                capture::contained_value(|| error.to_string())
                    .unwrap_or_else(|| "an error whose Display panicked".to_owned())
                    .into(),
            )),
            Cause::Response(_) => None,
        }
    }
}

/// The error of an answer that failed: the source's own, or, when the
/// answer stood in for a rejection, [`FallbackFailed`] around both. Where
/// it stood in for the service's own error, that error is logged with the
/// source's, so that neither is lost.
#[cold]
fn answer_failed(policy: &PolicyName, stood_for: Option<StoodFor>, error: BoxError) -> BoxError {
    let rejection = match stood_for {
        None => return error,
        Some(StoodFor::Error(original)) => {
            // The source's error is the user's code, and so is its
            // `Display`.
            capture::contained(|| {
                tracing::warn!(
                    policy = policy.as_str(),
                    error = %error,
                    original = &*original,
                    "fallback failed; answering with its error, not the service's"
                );
            });
            return error;
        }
        Some(StoodFor::Rejection(rejection)) => rejection,
    };
    // The source's error is the user's code, and so is its `Display`.
    capture::contained(|| {
        tracing::warn!(
            policy = policy.as_str(),
            error = %error,
            rejection = %rejection,
            "fallback failed; answering with the rejection it stood in for"
        );
    });
    Box::new(FallbackFailed::new(policy.clone(), rejection, error))
}

impl<Fut, E, P, F, Req, Res, M> Future for ResponseFuture<Fut, P, F, Req, Res, M>
where
    M: Sharing,
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
    P: Predicate<Res>,
    F: Source<Req, Res>,
{
    type Output = Result<Res, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // The inner call's claimed outcome, or the readiness error,
            // for the source to answer.
            let cause = match this.state.as_mut().project() {
                StateProj::Inner { future } => {
                    if *this.finished {
                        return Poll::Ready(Err(polled_after_completion()));
                    }
                    let result = ready!(future.poll(cx));
                    *this.finished = true;
                    match result {
                        Ok(res) => {
                            if !claims_response(this.shared, &res) {
                                return Poll::Ready(Ok(res));
                            }
                            Cause::Response(res)
                        }
                        Err(err) => {
                            let err: BoxError = err.into();
                            if !claims(this.shared, &err) {
                                return Poll::Ready(Err(err));
                            }
                            Cause::from_error(err)
                        }
                    }
                }
                StateProj::Answer {
                    mut future,
                    stood_for,
                } => {
                    let result = match capture::catch(CAPTURE, || future.as_mut().poll(cx)) {
                        Ok(Poll::Pending) => return Poll::Pending,
                        Ok(Poll::Ready(result)) => result,
                        Err(payload) => Err(report_panic(
                            &this.shared.name,
                            payload,
                            "fallback source panicked",
                        )),
                    };
                    let stood_for = stood_for.take();
                    // The answer is done, or broken: dropped now and never
                    // polled again; a destructor that panics is contained.
                    end_answer(&this.shared.name, this.state.as_mut());
                    return Poll::Ready(
                        result.map_err(|error| answer_failed(&this.shared.name, stood_for, error)),
                    );
                }
                StateProj::Failed { error } => {
                    return Poll::Ready(Err(error.take().unwrap_or_else(polled_after_completion)));
                }
                StateProj::Unready { error } => match error.take() {
                    Some(error) => Cause::from_error(error),
                    None => return Poll::Ready(Err(polled_after_completion())),
                },
            };
            // Nothing kept: keeping it panicked, so no answer.
            let Some(kept) = this.kept.take() else {
                return Poll::Ready(unanswered(cause));
            };
            let next = answer(this.shared, kept, cause);
            this.state.set(next);
        }
    }
}

pin_project! {
    /// The answer of a [`FromAsyncFn`](crate::source::FromAsyncFn)
    /// source: the closure's future, with its error boxed.
    pub struct AsyncAnswer<Fut> {
        #[pin]
        future: Fut,
    }
}

impl<Fut> AsyncAnswer<Fut> {
    pub(crate) fn new(future: Fut) -> Self {
        Self { future }
    }
}

impl<Fut, Res, E> Future for AsyncAnswer<Fut>
where
    Fut: Future<Output = Result<Res, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Res, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().future.poll(cx).map_err(Into::into)
    }
}

pin_project! {
    /// The answer of a [`FromService`](crate::source::FromService) source:
    /// waits for the fallback service to be ready, then calls it.
    pub struct ServiceAnswer<T, R>
    where
        T: Service<R>,
    {
        #[pin]
        state: ServiceState<T, R, T::Future>,
    }
}

pin_project! {
    #[project = ServiceStateProj]
    enum ServiceState<T, R, Fut> {
        Ready { service: T, request: Option<R> },
        Call { #[pin] future: Fut },
    }
}

impl<T: Service<R>, R> ServiceAnswer<T, R> {
    pub(crate) fn new(service: T, request: R) -> Self {
        Self {
            state: ServiceState::Ready {
                service,
                request: Some(request),
            },
        }
    }
}

impl<T, R> Future for ServiceAnswer<T, R>
where
    T: Service<R>,
    T::Error: Into<BoxError>,
{
    type Output = Result<T::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                ServiceStateProj::Ready { service, request } => {
                    ready!(service.poll_ready(cx)).map_err(Into::into)?;
                    let Some(request) = request.take() else {
                        return Poll::Ready(Err("fallback service polled after completion".into()));
                    };
                    let future = service.call(request);
                    this.state.set(ServiceState::Call { future });
                }
                ServiceStateProj::Call { future } => {
                    return future.poll(cx).map_err(Into::into);
                }
            }
        }
    }
}

impl<Fut, P, F, Req, Res, M> std::fmt::Debug for ResponseFuture<Fut, P, F, Req, Res, M>
where
    F: Source<Req, Res>,
    M: Sharing,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            State::Inner { .. } => "inner",
            State::Answer { .. } => "answer",
            State::Failed { .. } => "failed",
            State::Unready { .. } => "unready",
        };
        f.debug_struct("ResponseFuture")
            .field("policy", &self.shared.name)
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

impl<Fut> std::fmt::Debug for AsyncAnswer<Fut> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncAnswer").finish_non_exhaustive()
    }
}

impl<T: Service<R>, R> std::fmt::Debug for ServiceAnswer<T, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ServiceState::Ready { .. } => "waiting for readiness",
            ServiceState::Call { .. } => "called",
        };
        f.debug_struct("ServiceAnswer")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}

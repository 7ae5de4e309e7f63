//! Deciding what a finished call means: success, failure, or neither.
//!
//! What counts as a failure is the user's choice. A circuit breaker or an
//! adaptive bulkhead is generic over a [`Classify`] implementation and asks
//! it about every call it let through:
//!
//! | classifier | success | failure | ignored |
//! |---|---|---|---|
//! | [`ErrorsAsFailures`] (the default) | `Ok(_)` | any `Err(_)` | — |
//! | [`ServerErrorsAsFailures`] | `Ok` with status < 500 | `Ok` with 5xx, any `Err` | — |
//! | [`GrpcErrorsAsFailures`] | `grpc-status` OK or a non-failure code | UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN, RESOURCE_EXHAUSTED (configurable), an invalid code, no status (read as UNKNOWN, or from a non-200 HTTP status), any `Err` | — |
//! | [`ClassifyFn`] | whatever the closure says | | |
//! | [`IgnoreLocalRejections`] | as the inner classifier | as the inner classifier | palisade's rate-limit, bulkhead and missing-key rejections, and timeouts on a deadline the caller chose |
//!
//! The HTTP classifiers reuse [`tower_http::classify`]. gRPC puts its status
//! in the response headers only when the call fails before any message
//! ("trailers-only"); otherwise the status arrives in the trailers, after
//! the body. [`GrpcErrorsAsFailures`] therefore wraps the response body in a
//! [`ClassifiedBody`] that reports the outcome when the trailers arrive.
//!
//! # Recording outcomes
//!
//! A layer hands the classifier a [`RecordOutcome`] together with the
//! result. The classifier calls [`RecordOutcome::record`] exactly once when
//! the outcome is known (at once, or at the end of the response body). If
//! the recorder is dropped without being called, the call was cancelled: the
//! future or the body was dropped before the outcome was known. The layer's
//! recorder handles that case in its `Drop` and reports
//! [`Outcome::Cancelled`], which layers ignore by default.
//!
//! # Example
//!
//! ```
//! use std::sync::mpsc::channel;
//! use palisade_core::classify::{ClassifyFn, Classify, ErrorsAsFailures, Outcome};
//!
//! let (tx, rx) = channel();
//! let record = move |o: Outcome| tx.send(o).unwrap();
//! let _ = ErrorsAsFailures.classify(Err::<(), &str>("down"), record);
//! assert_eq!(rx.recv().unwrap(), Outcome::Failure);
//!
//! // A user predicate: 404 from a lookup is not a failure of the dependency.
//! let lookup = ClassifyFn::new(|res: Result<&u16, &std::io::Error>| match res {
//!     Ok(status) if *status >= 500 => Outcome::Failure,
//!     Ok(_) => Outcome::Success,
//!     Err(_) => Outcome::Failure,
//! });
//! let (tx, rx) = channel();
//! let record = move |o: Outcome| tx.send(o).unwrap();
//! let _ = lookup.classify(Ok::<u16, std::io::Error>(404), record);
//! assert_eq!(rx.recv().unwrap(), Outcome::Success);
//! ```

mod body;
mod response;

use std::fmt;
use std::time::Duration;

pub use self::body::{ClassifiedBody, GrpcEos};
pub use self::response::{GrpcErrorsAsFailures, ServerErrorsAsFailures};
pub use crate::metrics::Outcome;
pub use tower_http::classify::GrpcCode;

use crate::error::{BoxError, find_rejection};

std::thread_local! {
    static CUT_OFF: std::cell::Cell<Option<Duration>> = const { std::cell::Cell::new(None) };
}

/// Runs `drop_call`, which drops a call that a timeout cut off at its own
/// deadline of `deadline`, with the cut marked for [`being_cut_off`].
///
/// A layer below the timeout sees only that its call was dropped; a
/// recorder dropped inside `drop_call` can tell that the call ran out of
/// time rather than losing its caller, and count it as a failure (the
/// adaptive bulkhead does). palisade's timeout marks its own deadline; a
/// caller's shorter deadline (a `grpc-timeout`) and a caller that goes away
/// are not marked.
///
/// The mark holds for everything dropped during `drop_call` on this
/// thread, including calls the cut one made further down (another
/// service's bulkhead inside the handler). The deadline lets a recorder
/// weigh what it sees against it: the adaptive bulkhead samples only calls
/// that ran at least half of it.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::classify::{being_cut_off, cut_off};
///
/// let deadline = Duration::from_secs(2);
/// assert_eq!(being_cut_off(), None);
/// assert_eq!(cut_off(deadline, being_cut_off), Some(deadline));
/// assert_eq!(being_cut_off(), None);
/// ```
pub fn cut_off<R>(deadline: Duration, drop_call: impl FnOnce() -> R) -> R {
    struct Restore(Option<Duration>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CUT_OFF.set(self.0);
        }
    }
    let _restore = Restore(CUT_OFF.replace(Some(deadline)));
    drop_call()
}

/// The deadline of the cut in progress while a timeout drops a call it cut
/// off at its own deadline (inside [`cut_off`], on this thread); `None`
/// otherwise.
pub fn being_cut_off() -> Option<Duration> {
    CUT_OFF.get()
}

/// Receives the outcome of one call, once.
///
/// Implemented by layers for their per-call guard, for `()` (which ignores
/// the outcome) and for closures `FnOnce(Outcome)`. Dropping a recorder
/// without calling [`record`](Self::record) means the call was cancelled,
/// or, during [`cut_off`], that a timeout above cut it off.
pub trait RecordOutcome: Send + 'static {
    /// Records the outcome.
    fn record(self, outcome: Outcome);

    /// Told that the call has answered (its response head is in) while
    /// its outcome waits for the end of the response's stream, as a gRPC
    /// status in trailers does ([`ClassifiedBody::pending`] tells it). A
    /// layer that times calls ends the call's latency here, so that a
    /// long healthy stream is not a slow call. The default does nothing.
    #[inline]
    fn answered(&mut self) {}
}

impl RecordOutcome for () {
    #[inline]
    fn record(self, _outcome: Outcome) {}
}

impl<F> RecordOutcome for F
where
    F: FnOnce(Outcome) + Send + 'static,
{
    #[inline]
    fn record(self, outcome: Outcome) {
        self(outcome);
    }
}

/// Decides whether a call's result is a success, a failure or ignored.
///
/// `classify` receives the result and a recorder, calls
/// [`RecordOutcome::record`] once the outcome is known, and gives the result
/// back, possibly with its response body wrapped so that the outcome can be
/// decided at the end of the stream ([`Output`](Self::Output)). Classifiers
/// that decide at once return the result unchanged.
///
/// Implementations should be cheap and allocation-free on the success path:
/// they run for every call.
pub trait Classify<T, E>: Send + Sync + 'static {
    /// The response handed back to the caller: `T` itself, or `T` with its
    /// body wrapped in a [`ClassifiedBody`].
    type Output<R: RecordOutcome>;

    /// Classifies `result`, reporting the outcome to `recorder` now or when
    /// the response body ends.
    fn classify<R: RecordOutcome>(
        &self,
        result: Result<T, E>,
        recorder: R,
    ) -> Result<Self::Output<R>, E>;
}

/// Every `Ok` is a success and every `Err` a failure. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct ErrorsAsFailures;

impl<T, E> Classify<T, E> for ErrorsAsFailures {
    type Output<R: RecordOutcome> = T;

    // Always inlined: called out of line, the result is moved through
    // memory in pieces and read back whole, which stalls the load.
    #[inline(always)]
    fn classify<R: RecordOutcome>(&self, result: Result<T, E>, recorder: R) -> Result<T, E> {
        recorder.record(if result.is_ok() {
            Outcome::Success
        } else {
            Outcome::Failure
        });
        result
    }
}

/// A classifier from a closure over the borrowed result.
///
/// The closure should return [`Outcome::Success`], [`Outcome::Failure`] or
/// [`Outcome::Ignored`]; returning [`Outcome::Cancelled`] is treated as
/// ignored by palisade's layers.
#[derive(Clone, Copy)]
pub struct ClassifyFn<F> {
    f: F,
}

impl<F> ClassifyFn<F> {
    /// Wraps a closure `Fn(Result<&T, &E>) -> Outcome`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for ClassifyFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClassifyFn").finish_non_exhaustive()
    }
}

impl<F, T, E> Classify<T, E> for ClassifyFn<F>
where
    F: Fn(Result<&T, &E>) -> Outcome + Send + Sync + 'static,
{
    type Output<R: RecordOutcome> = T;

    #[inline]
    fn classify<R: RecordOutcome>(&self, result: Result<T, E>, recorder: R) -> Result<T, E> {
        recorder.record((self.f)(result.as_ref()));
        result
    }
}

/// Wraps a classifier so that palisade's rejections that speak of the
/// caller's side only count as neither success nor failure: the
/// local-saturation rejections ([`RateLimited`](crate::RateLimited),
/// [`Overloaded`](crate::Overloaded), [`MissingKey`](crate::MissingKey))
/// and an [`Elapsed`](crate::Elapsed) on a deadline the remote caller chose
/// ([`Elapsed::is_caller_deadline`](crate::Elapsed::is_caller_deadline)).
///
/// A rate limiter or a full bulkhead below a circuit breaker says the
/// *caller* is busy, not that the dependency is failing; a call that
/// outlives a `grpc-timeout` the client sent says the client was in a
/// hurry. Counting either as a failure would let one client's traffic open
/// a circuit every client shares, so breakers use this by default. A
/// timeout on the policy's own deadline is passed to the inner
/// classifier: with a server-side deadline shorter than what clients ask
/// for, a dependency that hangs still opens the circuit.
#[derive(Clone, Copy, Debug, Default)]
pub struct IgnoreLocalRejections<C> {
    inner: C,
}

impl<C> IgnoreLocalRejections<C> {
    /// Wraps `inner`.
    pub fn new(inner: C) -> Self {
        Self { inner }
    }

    /// The wrapped classifier.
    pub fn get_ref(&self) -> &C {
        &self.inner
    }
}

/// Whether `err` is, or wraps, a palisade rejection that speaks of the
/// caller's side only: a rate limit, a full bulkhead, a missing key, or a
/// timeout on a deadline the caller chose (see
/// [`Rejection::is_caller_side`](crate::error::Rejection::is_caller_side)).
pub fn is_local_rejection(err: &BoxError) -> bool {
    find_rejection(&**err).is_some_and(|r| r.is_caller_side())
}

impl<C, T> Classify<T, BoxError> for IgnoreLocalRejections<C>
where
    C: Classify<T, BoxError>,
{
    type Output<R: RecordOutcome> = C::Output<R>;

    #[inline]
    fn classify<R: RecordOutcome>(
        &self,
        result: Result<T, BoxError>,
        recorder: R,
    ) -> Result<Self::Output<R>, BoxError> {
        match result {
            Err(err) if is_local_rejection(&err) => {
                recorder.record(Outcome::Ignored);
                Err(err)
            }
            other => self.inner.classify(other, recorder),
        }
    }
}

#[cfg(test)]
mod tests;

//! What a fallback answers for.
//!
//! A [`Predicate`] looks at each failed call (an `Err` from the service)
//! and at each response (an `Ok`), and decides whether the fallback should
//! answer instead. Errors it does not claim pass through unchanged, and so
//! do responses it does not claim.
//!
//! | predicate | errors it handles | responses it replaces |
//! |---|---|---|
//! | [`AnyError`] (the default) | every error | none |
//! | [`Rejections`] | palisade rejections ([`find_rejection`]) | none |
//! | [`ErrorIs<E>`] | an `E` anywhere in the `source()` chain | none |
//! | [`ErrorIf<F>`] | those the closure accepts | none |
//! | [`ResponseIf<F>`] | none | those the closure accepts |
//! | [`ServerErrors`] | none | HTTP responses with a 5xx status |
//! | [`Or<A, B>`] | those either handles | those either replaces |
//!
//! The [`FallbackTrigger`] reported for an error is
//! [`Rejection`](FallbackTrigger::Rejection) when a palisade rejection is
//! in its chain and [`Error`](FallbackTrigger::Error) otherwise, whichever
//! predicate claimed it and whatever trigger that predicate returned.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{Elapsed, FallbackTrigger, PolicyName};
//! use palisade_fallback::predicate::{ErrorIs, Or, Predicate, Rejections, ServerErrors};
//!
//! let timeout: palisade_core::BoxError =
//!     Elapsed::new(PolicyName::new("api"), Duration::from_secs(1)).into();
//! let io: palisade_core::BoxError = std::io::Error::other("reset").into();
//!
//! let rejections = Rejections;
//! assert_eq!(
//!     Predicate::<()>::check_error(&rejections, &*timeout),
//!     Some(FallbackTrigger::Rejection)
//! );
//! assert_eq!(Predicate::<()>::check_error(&rejections, &*io), None);
//!
//! let io_errors = ErrorIs::<std::io::Error>::new();
//! assert_eq!(
//!     Predicate::<()>::check_error(&io_errors, &*io),
//!     Some(FallbackTrigger::Error)
//! );
//!
//! // Rejections, or any 5xx response.
//! let either = Or::new(Rejections, ServerErrors);
//! let bad = http::Response::builder().status(502).body(()).unwrap();
//! assert!(either.check_response(&bad));
//! ```

use std::error::Error;
use std::fmt;
use std::marker::PhantomData;

use palisade_core::{FallbackTrigger, find_rejection};

/// Decides which failures and which responses a fallback answers for.
///
/// Implemented by the types of this module; implement it for a type of
/// your own when a closure is not enough. Both methods run on every call
/// that reaches them, so they must be cheap and must not block.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a fallback predicate for responses of type `{Res}`",
    note = "a response closure must take `&{Res}`; see `palisade_fallback::predicate`"
)]
pub trait Predicate<Res> {
    /// `Some` when the fallback should answer for this error; `None` lets
    /// the error pass through unchanged.
    ///
    /// Only whether it is `Some` matters to the fallback: the trigger it
    /// reports, and the [`Cause`](crate::Cause) it hands to the source, are
    /// derived from the error itself ([`trigger_for`]), so a predicate
    /// cannot report a palisade rejection as a service error. The
    /// predicates of this module return that same trigger.
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger>;

    /// Whether the fallback should answer instead of this response.
    fn check_response(&self, res: &Res) -> bool;
}

/// The trigger for an error that a predicate claimed: `Rejection` when a
/// palisade rejection is in its chain, `Error` otherwise.
#[inline]
pub fn trigger_for(err: &(dyn Error + 'static)) -> FallbackTrigger {
    if find_rejection(err).is_some() {
        FallbackTrigger::Rejection
    } else {
        FallbackTrigger::Error
    }
}

/// Handles every error; replaces no response. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct AnyError;

impl<Res> Predicate<Res> for AnyError {
    #[inline]
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        Some(trigger_for(err))
    }

    #[inline]
    fn check_response(&self, _res: &Res) -> bool {
        false
    }
}

/// Handles palisade rejections only (rate limit, open circuit, overload,
/// timeout, panic, missing key), found anywhere in the error's `source()`
/// chain. Other errors pass through.
#[derive(Clone, Copy, Debug, Default)]
pub struct Rejections;

impl<Res> Predicate<Res> for Rejections {
    #[inline]
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        find_rejection(err).map(|_| FallbackTrigger::Rejection)
    }

    #[inline]
    fn check_response(&self, _res: &Res) -> bool {
        false
    }
}

/// Handles errors of type `E`, found anywhere in the error's `source()`
/// chain. Other errors pass through.
pub struct ErrorIs<E> {
    _error: PhantomData<fn() -> E>,
}

impl<E> ErrorIs<E> {
    /// A predicate for errors of type `E`.
    pub const fn new() -> Self {
        Self {
            _error: PhantomData,
        }
    }
}

impl<E> Default for ErrorIs<E> {
    fn default() -> Self {
        Self::new()
    }
}

impl<E> Clone for ErrorIs<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for ErrorIs<E> {}

impl<E> fmt::Debug for ErrorIs<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ErrorIs")
            .field(&std::any::type_name::<E>())
            .finish()
    }
}

impl<E: Error + 'static, Res> Predicate<Res> for ErrorIs<E> {
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        palisade_core::error::chain(err)
            .any(<dyn Error>::is::<E>)
            .then(|| trigger_for(err))
    }

    #[inline]
    fn check_response(&self, _res: &Res) -> bool {
        false
    }
}

/// Handles the errors a closure accepts. The closure sees the outermost
/// error; walk `source()` yourself to look deeper.
#[derive(Clone, Copy)]
pub struct ErrorIf<F> {
    f: F,
}

impl<F> ErrorIf<F>
where
    F: Fn(&(dyn Error + 'static)) -> bool,
{
    /// A predicate from a closure.
    pub const fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for ErrorIf<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ErrorIf").finish_non_exhaustive()
    }
}

impl<F, Res> Predicate<Res> for ErrorIf<F>
where
    F: Fn(&(dyn Error + 'static)) -> bool,
{
    #[inline]
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        (self.f)(err).then(|| trigger_for(err))
    }

    #[inline]
    fn check_response(&self, _res: &Res) -> bool {
        false
    }
}

/// Replaces the responses a closure accepts. Errors pass through; combine
/// with an error predicate through [`Or`] to handle both.
#[derive(Clone, Copy)]
pub struct ResponseIf<F> {
    f: F,
}

impl<F> ResponseIf<F> {
    /// A predicate from a closure `Fn(&Res) -> bool`.
    pub const fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for ResponseIf<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseIf").finish_non_exhaustive()
    }
}

impl<F, Res> Predicate<Res> for ResponseIf<F>
where
    F: Fn(&Res) -> bool,
{
    #[inline]
    fn check_error(&self, _err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        None
    }

    #[inline]
    fn check_response(&self, res: &Res) -> bool {
        (self.f)(res)
    }
}

/// Replaces HTTP responses whose status is a server error (5xx). Errors
/// pass through; combine with an error predicate through [`Or`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerErrors;

impl<B> Predicate<http::Response<B>> for ServerErrors {
    #[inline]
    fn check_error(&self, _err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        None
    }

    #[inline]
    fn check_response(&self, res: &http::Response<B>) -> bool {
        res.status().is_server_error()
    }
}

/// Handles what either predicate handles; `A` is asked first.
#[derive(Clone, Copy, Debug, Default)]
pub struct Or<A, B> {
    a: A,
    b: B,
}

impl<A, B> Or<A, B> {
    /// Combines two predicates.
    pub const fn new(a: A, b: B) -> Self {
        Self { a, b }
    }
}

impl<A, B, Res> Predicate<Res> for Or<A, B>
where
    A: Predicate<Res>,
    B: Predicate<Res>,
{
    #[inline]
    fn check_error(&self, err: &(dyn Error + 'static)) -> Option<FallbackTrigger> {
        self.a.check_error(err).or_else(|| self.b.check_error(err))
    }

    #[inline]
    fn check_response(&self, res: &Res) -> bool {
        self.a.check_response(res) || self.b.check_response(res)
    }
}

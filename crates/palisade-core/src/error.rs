//! The rejection errors every palisade layer returns.
//!
//! Each rejection is its own small public type, so callers ask
//! `err.is::<RateLimited>()` on the `BoxError` a layer returns. Each one
//! says which policy refused and carries what a caller needs to decide what
//! to do next: how long to wait, the limit in force, the deadline applied.
//!
//! A rejection may be wrapped by other errors on its way up (a client
//! library, a retry layer). [`find_rejection`] walks an error's `source()`
//! chain and returns the first palisade rejection it finds, as a
//! [`Rejection`] view that gives the layer, the policy, the reason and the
//! `retry_after` without knowing which type it is.
//!
//! Rejections are built on the error path only, from values the layer
//! already holds: cloning a [`PolicyName`] is an atomic increment, and the
//! only allocation is the `Box` of the returned `BoxError` (and the message
//! of a [`Panicked`]).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_core::{find_rejection, BoxError, KeyKind, PolicyName, RateLimited, RejectReason};
//!
//! let err: BoxError = RateLimited::new(
//!     PolicyName::new("api"),
//!     Duration::from_millis(1500),
//!     KeyKind::PeerIp,
//! )
//! .into();
//!
//! assert!(err.is::<RateLimited>());
//! let rejection = find_rejection(&*err).expect("a palisade rejection");
//! assert_eq!(rejection.policy(), "api");
//! assert_eq!(rejection.reason(), RejectReason::RateLimited);
//! assert_eq!(rejection.retry_after(), Some(Duration::from_millis(1500)));
//! ```

use std::backtrace::Backtrace;
use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::metrics::{CircuitState, KeyKind, LayerKind, RejectReason};
use crate::policy::PolicyName;

/// The error type of every palisade service: `Box<dyn Error + Send + Sync>`.
pub type BoxError = Box<dyn Error + Send + Sync>;

/// A request ran past its deadline; the timeout layer dropped (cancelled)
/// the inner call.
///
/// The deadline is either the policy's own (or one the server set for the
/// request), or one the remote caller chose shorter than the policy's, for
/// example with a `grpc-timeout` header:
/// [`is_caller_deadline`](Self::is_caller_deadline) tells which. Only the
/// first says the dependency was too slow; the circuit breaker's
/// classifiers ignore the second (see
/// [`IgnoreLocalRejections`](crate::classify::IgnoreLocalRejections)), so
/// that a client cannot open a circuit every client shares by asking for
/// deadlines nothing can meet.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{Elapsed, PolicyName};
///
/// let own = Elapsed::new(PolicyName::new("api"), Duration::from_secs(2));
/// assert!(!own.is_caller_deadline());
/// let asked = Elapsed::caller_deadline(PolicyName::new("api"), Duration::from_millis(5));
/// assert!(asked.is_caller_deadline());
/// assert_eq!(
///     asked.to_string(),
///     r#"timeout "api": request timed out after 5ms (the caller's deadline)"#
/// );
/// ```
#[derive(Clone, Debug)]
pub struct Elapsed {
    policy: PolicyName,
    timeout: Duration,
    caller: bool,
}

impl Elapsed {
    /// A timeout rejection for `policy` after `timeout`, a deadline the
    /// service chose (the policy's own, or one the server set for the
    /// request).
    pub fn new(policy: PolicyName, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            caller: false,
        }
    }

    /// A timeout rejection for `policy` after `timeout`, a deadline the
    /// remote caller chose, shorter than the policy's own.
    pub fn caller_deadline(policy: PolicyName, timeout: Duration) -> Self {
        Self {
            policy,
            timeout,
            caller: true,
        }
    }

    /// The policy of the timeout layer.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The deadline that was applied to this request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Whether the applied deadline was the remote caller's, shorter than
    /// the policy's own.
    pub fn is_caller_deadline(&self) -> bool {
        self.caller
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timeout {:?}: request timed out after {:?}",
            self.policy.as_str(),
            self.timeout
        )?;
        if self.caller {
            f.write_str(" (the caller's deadline)")?;
        }
        Ok(())
    }
}

impl Error for Elapsed {}

/// A rate limiter refused the request: its bucket was empty.
#[derive(Clone, Debug)]
pub struct RateLimited {
    policy: PolicyName,
    retry_after: Duration,
    key_kind: KeyKind,
}

impl RateLimited {
    /// A rate-limit rejection: the caller may try again after `retry_after`.
    pub fn new(policy: PolicyName, retry_after: Duration, key_kind: KeyKind) -> Self {
        Self {
            policy,
            retry_after,
            key_kind,
        }
    }

    /// The policy of the rate limiter.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// How long until a request with the same key would be admitted.
    pub fn retry_after(&self) -> Duration {
        self.retry_after
    }

    /// What the limiter keyed this request by.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter {:?}: rate limited by {}, retry after {:?}",
            self.policy.as_str(),
            self.key_kind,
            self.retry_after
        )
    }
}

impl Error for RateLimited {}

/// A keyed rate limiter could not extract a key from the request and is
/// configured to reject such requests (HTTP 400).
#[derive(Clone, Debug)]
pub struct MissingKey {
    policy: PolicyName,
    key_kind: KeyKind,
}

impl MissingKey {
    /// A missing-key rejection.
    pub fn new(policy: PolicyName, key_kind: KeyKind) -> Self {
        Self { policy, key_kind }
    }

    /// The policy of the rate limiter.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The kind of key that could not be extracted.
    pub fn key_kind(&self) -> KeyKind {
        self.key_kind
    }
}

impl fmt::Display for MissingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rate limiter {:?}: no {} key in the request",
            self.policy.as_str(),
            self.key_kind
        )
    }
}

impl Error for MissingKey {}

/// A circuit breaker refused the request: the circuit is open, forced open,
/// or half-open with every probe slot taken.
#[derive(Clone, Debug)]
pub struct CircuitOpen {
    policy: PolicyName,
    retry_after: Option<Duration>,
    state: CircuitState,
}

impl CircuitOpen {
    /// A circuit-open rejection. `retry_after` is the time left before the
    /// breaker lets probes through, when known.
    pub fn new(policy: PolicyName, retry_after: Option<Duration>, state: CircuitState) -> Self {
        Self {
            policy,
            retry_after,
            state,
        }
    }

    /// The policy of the breaker.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// How long until the breaker admits probe calls, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// The breaker's state when it refused.
    pub fn state(&self) -> CircuitState {
        self.state
    }

    /// The rejection reason: [`RejectReason::HalfOpenFull`] when refused in
    /// half-open, [`RejectReason::CircuitOpen`] otherwise.
    pub fn reason(&self) -> RejectReason {
        match self.state {
            CircuitState::HalfOpen => RejectReason::HalfOpenFull,
            _ => RejectReason::CircuitOpen,
        }
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "circuit breaker {:?}: {}",
            self.policy.as_str(),
            self.reason()
        )?;
        if let Some(retry_after) = self.retry_after {
            write!(f, ", retry after {retry_after:?}")?;
        }
        Ok(())
    }
}

impl Error for CircuitOpen {}

/// Why a bulkhead refused a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverloadKind {
    /// Every slot was taken and waiting was not allowed.
    Full,
    /// Every slot was taken and the wait queue was full.
    QueueFull,
    /// The request waited for a slot for its maximum wait.
    WaitTimedOut,
}

impl OverloadKind {
    /// The matching metrics reason.
    pub const fn reason(self) -> RejectReason {
        match self {
            OverloadKind::Full => RejectReason::ConcurrencyFull,
            OverloadKind::QueueFull => RejectReason::QueueFull,
            OverloadKind::WaitTimedOut => RejectReason::WaitTimedOut,
        }
    }
}

/// A bulkhead refused the request: too many calls in flight.
#[derive(Clone, Debug)]
pub struct Overloaded {
    policy: PolicyName,
    limit: usize,
    kind: OverloadKind,
}

impl Overloaded {
    /// An overload rejection under `limit` concurrent calls.
    pub fn new(policy: PolicyName, limit: usize, kind: OverloadKind) -> Self {
        Self {
            policy,
            limit,
            kind,
        }
    }

    /// The policy of the bulkhead.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The concurrency limit in force when the request was refused (the
    /// current limit, for an adaptive bulkhead).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Why the request was refused.
    pub fn kind(&self) -> OverloadKind {
        self.kind
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bulkhead {:?}: overloaded, {} (limit {})",
            self.policy.as_str(),
            self.kind.reason(),
            self.limit
        )
    }
}

impl Error for Overloaded {}

/// Where a panic was raised.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PanicLocation {
    file: Box<str>,
    line: u32,
    column: u32,
}

impl PanicLocation {
    /// A location from its parts.
    pub fn new(file: impl Into<Box<str>>, line: u32, column: u32) -> Self {
        Self {
            file: file.into(),
            line,
            column,
        }
    }

    /// Copies a location reported by the standard library.
    pub fn from_std(location: &std::panic::Location<'_>) -> Self {
        Self::new(location.file(), location.line(), location.column())
    }

    /// The source file.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line, starting at 1.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The column, starting at 1.
    pub fn column(&self) -> u32 {
        self.column
    }
}

impl fmt::Display for PanicLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The service panicked; the panic-catch layer caught it.
///
/// The message is for logs and operators. HTTP and gRPC mappings never put
/// it in a response unless the user opts in.
#[derive(Clone, Debug)]
pub struct Panicked {
    policy: PolicyName,
    message: Box<str>,
    location: Option<PanicLocation>,
    backtrace: Option<Arc<Backtrace>>,
}

impl Panicked {
    /// A panic rejection with its message.
    pub fn new(policy: PolicyName, message: impl Into<Box<str>>) -> Self {
        Self {
            policy,
            message: message.into(),
            location: None,
            backtrace: None,
        }
    }

    /// Adds where the panic was raised.
    #[must_use]
    pub fn with_location(mut self, location: Option<PanicLocation>) -> Self {
        self.location = location;
        self
    }

    /// Adds the backtrace captured when the panic was raised.
    #[must_use]
    pub fn with_backtrace(mut self, backtrace: Option<Arc<Backtrace>>) -> Self {
        self.backtrace = backtrace;
        self
    }

    /// The policy of the catching layer.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The panic message (`&str` and `String` payloads), or a description
    /// of the payload's type.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Where the panic was raised, when the palisade panic hook saw it.
    pub fn location(&self) -> Option<&PanicLocation> {
        self.location.as_ref()
    }

    /// The backtrace, when capture was enabled.
    pub fn backtrace(&self) -> Option<&Backtrace> {
        self.backtrace.as_deref()
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "panic caught by {:?}: {}",
            self.policy.as_str(),
            self.message
        )?;
        if let Some(location) = &self.location {
            write!(f, " at {location}")?;
        }
        Ok(())
    }
}

impl Error for Panicked {}

/// A borrowed view of any palisade rejection.
///
/// Obtained from [`find_rejection`] or [`Rejection::of`]; it answers the
/// questions every caller has (who refused, under which policy, why, how
/// long to wait) and gives back the concrete type when more is needed.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Rejection<'a> {
    /// A timeout.
    Elapsed(&'a Elapsed),
    /// A rate limit.
    RateLimited(&'a RateLimited),
    /// A keyed rate limiter found no key.
    MissingKey(&'a MissingKey),
    /// An open circuit.
    CircuitOpen(&'a CircuitOpen),
    /// A full bulkhead.
    Overloaded(&'a Overloaded),
    /// A caught panic.
    Panicked(&'a Panicked),
}

impl<'a> Rejection<'a> {
    /// The rejection `err` itself is, without looking at its sources: one
    /// of palisade's rejection types, or one in a `Box` or an `Arc` of its
    /// own (whose `source()` would skip it).
    pub fn of(err: &'a (dyn Error + 'static)) -> Option<Self> {
        if let Some(e) = held::<RateLimited>(err) {
            Some(Rejection::RateLimited(e))
        } else if let Some(e) = held::<CircuitOpen>(err) {
            Some(Rejection::CircuitOpen(e))
        } else if let Some(e) = held::<Overloaded>(err) {
            Some(Rejection::Overloaded(e))
        } else if let Some(e) = held::<Elapsed>(err) {
            Some(Rejection::Elapsed(e))
        } else if let Some(e) = held::<Panicked>(err) {
            Some(Rejection::Panicked(e))
        } else {
            held::<MissingKey>(err).map(Rejection::MissingKey)
        }
    }

    /// Which layer refused.
    pub fn layer(&self) -> LayerKind {
        match self {
            Rejection::Elapsed(_) => LayerKind::Timeout,
            Rejection::RateLimited(_) | Rejection::MissingKey(_) => LayerKind::RateLimit,
            Rejection::CircuitOpen(_) => LayerKind::CircuitBreaker,
            Rejection::Overloaded(_) => LayerKind::Bulkhead,
            Rejection::Panicked(_) => LayerKind::PanicCatch,
        }
    }

    /// The policy of the layer that refused.
    pub fn policy(&self) -> &'a PolicyName {
        match self {
            Rejection::Elapsed(e) => e.policy(),
            Rejection::RateLimited(e) => e.policy(),
            Rejection::MissingKey(e) => e.policy(),
            Rejection::CircuitOpen(e) => e.policy(),
            Rejection::Overloaded(e) => e.policy(),
            Rejection::Panicked(e) => e.policy(),
        }
    }

    /// Why the request was refused.
    pub fn reason(&self) -> RejectReason {
        match self {
            Rejection::Elapsed(_) => RejectReason::TimedOut,
            Rejection::RateLimited(_) => RejectReason::RateLimited,
            Rejection::MissingKey(_) => RejectReason::MissingKey,
            Rejection::CircuitOpen(e) => e.reason(),
            Rejection::Overloaded(e) => e.kind().reason(),
            Rejection::Panicked(_) => RejectReason::Panicked,
        }
    }

    /// How long the caller should wait before trying again, when the layer
    /// knows.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Rejection::RateLimited(e) => Some(e.retry_after()),
            Rejection::CircuitOpen(e) => e.retry_after(),
            _ => None,
        }
    }

    /// Whether this rejection says something about the caller's side
    /// only, not about the dependency: local saturation (see
    /// [`is_local_saturation`](Self::is_local_saturation)), or the expiry
    /// of a deadline the caller chose ([`Elapsed::is_caller_deadline`]).
    /// Circuit breakers ignore these by default.
    pub fn is_caller_side(&self) -> bool {
        match self {
            Rejection::Elapsed(e) => e.is_caller_deadline(),
            other => other.is_local_saturation(),
        }
    }

    /// Whether this is local saturation (a rate limit, a full bulkhead, a
    /// missing key) rather than evidence that the dependency is failing.
    pub fn is_local_saturation(&self) -> bool {
        matches!(
            self,
            Rejection::RateLimited(_) | Rejection::Overloaded(_) | Rejection::MissingKey(_)
        )
    }

    /// An owned copy of the rejection, boxed: for keeping it once the
    /// error it was found in is gone.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_core::{find_rejection, BoxError, KeyKind, PolicyName, RateLimited};
    ///
    /// let err: BoxError =
    ///     RateLimited::new(PolicyName::new("api"), Duration::from_secs(1), KeyKind::Global).into();
    /// let kept = find_rejection(&*err).unwrap().to_boxed();
    /// drop(err);
    /// assert!(kept.is::<RateLimited>());
    /// ```
    pub fn to_boxed(&self) -> BoxError {
        match *self {
            Rejection::Elapsed(e) => Box::new(e.clone()),
            Rejection::RateLimited(e) => Box::new(e.clone()),
            Rejection::MissingKey(e) => Box::new(e.clone()),
            Rejection::CircuitOpen(e) => Box::new(e.clone()),
            Rejection::Overloaded(e) => Box::new(e.clone()),
            Rejection::Panicked(e) => Box::new(e.clone()),
        }
    }

    /// The rejection as a plain error.
    pub fn as_error(&self) -> &'a (dyn Error + 'static) {
        match *self {
            Rejection::Elapsed(e) => e,
            Rejection::RateLimited(e) => e,
            Rejection::MissingKey(e) => e,
            Rejection::CircuitOpen(e) => e,
            Rejection::Overloaded(e) => e,
            Rejection::Panicked(e) => e,
        }
    }
}

impl fmt::Display for Rejection<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_error(), f)
    }
}

/// The value of a `Retry-After` header (or `retry-after` gRPC metadata)
/// for a wait of `wait`: whole seconds, rounded up, and at least 1, so a
/// client that honours it never retries before the wait is over, nor at
/// once. Saturates at `u64::MAX`.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::error::retry_after_seconds;
///
/// assert_eq!(retry_after_seconds(Duration::ZERO), 1);
/// assert_eq!(retry_after_seconds(Duration::from_millis(1000)), 1);
/// assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
/// assert_eq!(retry_after_seconds(Duration::MAX), u64::MAX);
/// ```
pub fn retry_after_seconds(wait: Duration) -> u64 {
    let whole = wait.as_secs();
    let rounded = if wait.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    };
    rounded.max(1)
}

/// `err` as a `T`, or as the `T` a `Box<T>` or an `Arc<T>` holds.
fn held<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    err.downcast_ref::<T>()
        .or_else(|| err.downcast_ref::<Box<T>>().map(|boxed| &**boxed))
        .or_else(|| err.downcast_ref::<Arc<T>>().map(|shared| &**shared))
}

/// Finds the first palisade rejection in `err` or in its `source()` chain,
/// as [`chain`] walks it (at most [`MAX_CHAIN`] errors deep).
///
/// Accepts a `&BoxError` dereferenced once (`&*err`), or any
/// `&(dyn Error + 'static)`.
///
/// ```
/// use std::fmt;
/// use palisade_core::{find_rejection, Overloaded, OverloadKind, PolicyName, RejectReason};
///
/// #[derive(Debug)]
/// struct ClientError(Overloaded);
/// impl fmt::Display for ClientError {
///     fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
///         f.write_str("client call failed")
///     }
/// }
/// impl std::error::Error for ClientError {
///     fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
///         Some(&self.0)
///     }
/// }
///
/// let err = ClientError(Overloaded::new(PolicyName::new("db"), 16, OverloadKind::Full));
/// let found = find_rejection(&err).unwrap();
/// assert_eq!(found.reason(), RejectReason::ConcurrencyFull);
/// assert_eq!(found.policy(), "db");
/// ```
pub fn find_rejection<'a>(err: &'a (dyn Error + 'static)) -> Option<Rejection<'a>> {
    chain(err).find_map(Rejection::of)
}

/// How many errors of a chain [`chain`] walks at most.
pub const MAX_CHAIN: usize = 64;

/// The errors of `err`'s chain, `err` first, each followed by
/// [`next_in_chain`]; at most [`MAX_CHAIN`] of them, so that a `source()`
/// that leads back into the chain (an error that is its own source) ends
/// the walk instead of looping forever.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::error::chain;
/// use palisade_core::{KeyKind, PolicyName, RateLimited};
///
/// let limited = RateLimited::new(PolicyName::new("api"), Duration::from_secs(1), KeyKind::Global);
/// let io = std::io::Error::other(limited);
/// assert_eq!(chain(&io).count(), 2);
/// ```
pub fn chain<'a>(
    err: &'a (dyn Error + 'static),
) -> impl Iterator<Item = &'a (dyn Error + 'static)> + 'a {
    std::iter::successors(Some(err), |&e: &&'a (dyn Error + 'static)| next_in_chain(e))
        .take(MAX_CHAIN)
}

/// The error after `err` in its chain: its `source()`, except where that
/// skips the error `err` carries and gives the carried error's own source.
/// A `std::io::Error` wrapping a custom error, an `Arc` of a `dyn Error`
/// (how errors are shared, and kept cloneable), and an `Arc` or a `Box` of
/// an `io::Error` (which is not `Clone`) do that; there the next error is
/// the carried one itself, so a rejection carried through an I/O adapter
/// (`io::Error::other(rejection)`), shared or not, or an
/// `Arc<dyn Error + Send + Sync>` is still found.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use palisade_core::error::next_in_chain;
/// use palisade_core::{find_rejection, KeyKind, PolicyName, RateLimited};
///
/// let limited = || RateLimited::new(PolicyName::new("api"), Duration::from_secs(1), KeyKind::Global);
/// let io = std::io::Error::other(limited());
/// assert!(next_in_chain(&io).unwrap().is::<RateLimited>());
/// assert!(find_rejection(&io).is_some());
///
/// let shared: Arc<dyn std::error::Error + Send + Sync> = Arc::new(limited());
/// assert!(next_in_chain(&shared).unwrap().is::<RateLimited>());
/// assert!(find_rejection(&shared).is_some());
///
/// let shared_io = Arc::new(std::io::Error::other(limited()));
/// assert!(next_in_chain(&shared_io).unwrap().is::<std::io::Error>());
/// assert!(find_rejection(&shared_io).is_some());
/// ```
pub fn next_in_chain<'a>(err: &'a (dyn Error + 'static)) -> Option<&'a (dyn Error + 'static)> {
    if let Some(wrapped) = err
        .downcast_ref::<std::io::Error>()
        .and_then(std::io::Error::get_ref)
    {
        return Some(wrapped);
    }
    if let Some(shared) = err.downcast_ref::<Arc<dyn Error + Send + Sync>>() {
        return Some(&**shared);
    }
    if let Some(shared) = err.downcast_ref::<Arc<dyn Error>>() {
        return Some(&**shared);
    }
    if let Some(io) = err.downcast_ref::<Arc<std::io::Error>>() {
        return Some(&**io);
    }
    if let Some(io) = err.downcast_ref::<Box<std::io::Error>>() {
        return Some(&**io);
    }
    err.source()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapped")
        }
    }

    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    fn policy() -> PolicyName {
        PolicyName::new("p")
    }

    #[test]
    fn every_rejection_is_found_through_two_wrappers() {
        let errors: Vec<(BoxError, LayerKind, RejectReason, Option<Duration>)> = vec![
            (
                Elapsed::new(policy(), Duration::from_secs(1)).into(),
                LayerKind::Timeout,
                RejectReason::TimedOut,
                None,
            ),
            (
                RateLimited::new(policy(), Duration::from_secs(2), KeyKind::Global).into(),
                LayerKind::RateLimit,
                RejectReason::RateLimited,
                Some(Duration::from_secs(2)),
            ),
            (
                MissingKey::new(policy(), KeyKind::Header).into(),
                LayerKind::RateLimit,
                RejectReason::MissingKey,
                None,
            ),
            (
                CircuitOpen::new(policy(), Some(Duration::from_secs(3)), CircuitState::Open).into(),
                LayerKind::CircuitBreaker,
                RejectReason::CircuitOpen,
                Some(Duration::from_secs(3)),
            ),
            (
                CircuitOpen::new(policy(), None, CircuitState::HalfOpen).into(),
                LayerKind::CircuitBreaker,
                RejectReason::HalfOpenFull,
                None,
            ),
            (
                Overloaded::new(policy(), 4, OverloadKind::QueueFull).into(),
                LayerKind::Bulkhead,
                RejectReason::QueueFull,
                None,
            ),
            (
                Panicked::new(policy(), "boom").into(),
                LayerKind::PanicCatch,
                RejectReason::Panicked,
                None,
            ),
        ];
        for (err, layer, reason, retry_after) in errors {
            let wrapped = Wrapper(Box::new(Wrapper(err)));
            let found = find_rejection(&wrapped).expect("rejection in the chain");
            assert_eq!(found.layer(), layer);
            assert_eq!(found.reason(), reason);
            assert_eq!(found.retry_after(), retry_after);
            assert_eq!(found.policy(), "p");
        }
    }

    #[test]
    fn a_rejection_carried_in_an_io_error_is_found() {
        let err = std::io::Error::other(Overloaded::new(policy(), 1, OverloadKind::Full));
        let found = find_rejection(&err).expect("through the io::Error");
        assert_eq!(found.reason(), RejectReason::ConcurrencyFull);
        let wrapped = Wrapper(Box::new(std::io::Error::other(Wrapper(
            RateLimited::new(policy(), Duration::ZERO, KeyKind::Global).into(),
        ))));
        assert!(find_rejection(&wrapped).is_some());
        let plain = std::io::Error::other("plain");
        assert!(find_rejection(&plain).is_none());
    }

    /// Shares its cause, as errors that must be cloneable do: a
    /// `dyn Error`, or a transport's `io::Error`, which is not `Clone`.
    #[derive(Debug, Clone)]
    struct SharedCause<E: ?Sized = dyn Error + Send + Sync>(Arc<E>);

    impl<E: ?Sized> fmt::Display for SharedCause<E> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("call failed")
        }
    }

    impl<E: fmt::Debug + ?Sized> Error for SharedCause<E>
    where
        Arc<E>: Error + 'static,
    {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn a_rejection_in_a_box_or_an_arc_is_found() {
        let limited = || RateLimited::new(policy(), Duration::from_secs(1), KeyKind::Global);
        let reason = |err: &(dyn Error + 'static)| find_rejection(err).map(|r| r.reason());
        let shared: Arc<dyn Error + Send + Sync> = Arc::new(limited());
        assert_eq!(reason(&shared), Some(RejectReason::RateLimited));
        let local: Arc<dyn Error> = Arc::new(Overloaded::new(policy(), 1, OverloadKind::Full));
        assert_eq!(reason(&local), Some(RejectReason::ConcurrencyFull));
        // The usual way to share a cause: a wrapper whose source is the `Arc`.
        assert_eq!(
            reason(&SharedCause::<dyn Error + Send + Sync>(Arc::new(limited()))),
            Some(RejectReason::RateLimited)
        );
        assert_eq!(
            reason(&Box::new(limited())),
            Some(RejectReason::RateLimited)
        );
        assert_eq!(
            reason(&Arc::new(MissingKey::new(policy(), KeyKind::Header))),
            Some(RejectReason::MissingKey)
        );
        // A rejection further down a shared cause's chain.
        let deeper: Arc<dyn Error + Send + Sync> = Arc::new(Wrapper(Box::new(limited())));
        assert_eq!(
            reason(&SharedCause(deeper)),
            Some(RejectReason::RateLimited)
        );
        let plain: Arc<dyn Error + Send + Sync> = Arc::new(std::io::Error::other("plain"));
        assert_eq!(reason(&SharedCause(plain)), None);
        // An `io::Error` is not `Clone`: shared in an `Arc` of its own, or
        // boxed, it still gives up what it carries.
        let io = || std::io::Error::other(limited());
        assert_eq!(reason(&Arc::new(io())), Some(RejectReason::RateLimited));
        assert_eq!(reason(&Box::new(io())), Some(RejectReason::RateLimited));
        let cause = SharedCause(Arc::new(io()));
        assert_eq!(reason(&cause), Some(RejectReason::RateLimited));
        let plain = SharedCause(Arc::new(std::io::Error::other("plain")));
        assert_eq!(reason(&plain), None);
    }

    #[test]
    fn an_unrelated_error_has_no_rejection() {
        let err: BoxError = "plain".into();
        assert!(find_rejection(&*err).is_none());
        let wrapped = Wrapper(err);
        assert!(find_rejection(&wrapped).is_none());
    }

    #[test]
    fn local_saturation_is_rate_limit_bulkhead_and_missing_key() {
        let rl = RateLimited::new(policy(), Duration::ZERO, KeyKind::Global);
        let ov = Overloaded::new(policy(), 1, OverloadKind::Full);
        let mk = MissingKey::new(policy(), KeyKind::PeerIp);
        let co = CircuitOpen::new(policy(), None, CircuitState::Open);
        let el = Elapsed::new(policy(), Duration::from_secs(1));
        let pa = Panicked::new(policy(), "x");
        assert!(Rejection::RateLimited(&rl).is_local_saturation());
        assert!(Rejection::Overloaded(&ov).is_local_saturation());
        assert!(Rejection::MissingKey(&mk).is_local_saturation());
        assert!(!Rejection::CircuitOpen(&co).is_local_saturation());
        assert!(!Rejection::Elapsed(&el).is_local_saturation());
        assert!(!Rejection::Panicked(&pa).is_local_saturation());
    }

    #[test]
    fn caller_side_adds_the_expiry_of_a_callers_deadline() {
        let own = Elapsed::new(policy(), Duration::from_secs(1));
        let asked = Elapsed::caller_deadline(policy(), Duration::from_millis(1));
        assert!(!Rejection::Elapsed(&own).is_caller_side());
        assert!(Rejection::Elapsed(&asked).is_caller_side());
        assert!(!Rejection::Elapsed(&asked).is_local_saturation());
        let rl = RateLimited::new(policy(), Duration::ZERO, KeyKind::Global);
        let co = CircuitOpen::new(policy(), None, CircuitState::Open);
        let pa = Panicked::new(policy(), "x");
        assert!(Rejection::RateLimited(&rl).is_caller_side());
        assert!(!Rejection::CircuitOpen(&co).is_caller_side());
        assert!(!Rejection::Panicked(&pa).is_caller_side());
    }

    #[test]
    fn display_names_layer_and_policy() {
        let el = Elapsed::new(PolicyName::new("api"), Duration::from_millis(250));
        assert_eq!(
            el.to_string(),
            r#"timeout "api": request timed out after 250ms"#
        );
        let co = CircuitOpen::new(
            PolicyName::new("payments"),
            Some(Duration::from_secs(5)),
            CircuitState::Open,
        );
        assert_eq!(
            co.to_string(),
            r#"circuit breaker "payments": circuit open, retry after 5s"#
        );
        let ov = Overloaded::new(PolicyName::new("db"), 8, OverloadKind::Full);
        assert_eq!(
            ov.to_string(),
            r#"bulkhead "db": overloaded, concurrency limit reached (limit 8)"#
        );
        let pa = Panicked::new(PolicyName::new("api"), "boom")
            .with_location(Some(PanicLocation::new("src/main.rs", 3, 9)));
        assert_eq!(
            pa.to_string(),
            r#"panic caught by "api": boom at src/main.rs:3:9"#
        );
    }
}

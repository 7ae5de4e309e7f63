//! Where a request's deadline comes from, and where the inner service finds
//! it.
//!
//! Every [`Timeout`](crate::Timeout) applies its layer's default duration.
//! A [`DeadlineSource`] may ask for a shorter one for a given request; the
//! smallest of the default and the requested values wins, so a client can
//! shorten its deadline but never extend the server's.
//!
//! - [`NoOverride`] (the default) reads nothing. It works for any request
//!   type, `u64` as well as `http::Request`.
//! - [`HttpDeadline`] reads, from an `http::Request`, a [`RequestTimeout`]
//!   extension (set by an earlier layer or by the caller of a client) and
//!   the `grpc-timeout` header, and on request puts the applied
//!   [`Deadline`] in the request's extensions too. The header is the remote
//!   caller's on a server (the default); on a client stack, where the
//!   application writes it, [`HttpDeadline::client_side`] makes it the
//!   stack's own.
//! - [`FollowDeadline`] reads what is left of the deadline of the call
//!   running now: the source of a client stack called from a handler.
//! - A closure `Fn(&Req) -> Option<Duration>` is a source too.
//!
//! Whatever the source, the inner service reads what is left of its
//! deadline with [`Deadline::current`], to pass it on to the calls it
//! makes.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::{Deadline, HttpDeadline, RequestTimeout, TimeoutLayer};
//! use tower::{service_fn, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let svc = ServiceBuilder::new()
//!     .layer(TimeoutLayer::builder().timeout(Duration::from_secs(10)).http().build().unwrap())
//!     .service(service_fn(|_: http::Request<()>| async move {
//!         // The handler sees the budget it was given.
//!         let deadline = Deadline::current().unwrap();
//!         Ok::<_, std::convert::Infallible>(deadline.budget())
//!     }));
//!
//! let mut req = http::Request::new(());
//! req.headers_mut().insert("grpc-timeout", "2S".parse().unwrap());
//! req.extensions_mut().insert(RequestTimeout(Duration::from_secs(5)));
//! let budget = svc.oneshot(req).await.unwrap();
//! assert_eq!(budget, Duration::from_secs(2));
//! # }
//! ```

use std::time::Duration;

use crate::grpc_timeout::{GRPC_TIMEOUT, GrpcTimeout};

/// The `grpc-timeout` header's name, built once: a lookup by `&str` would
/// parse and validate the name on every request.
static GRPC_TIMEOUT_NAME: http::HeaderName = http::HeaderName::from_static(GRPC_TIMEOUT);

/// Reads a per-request deadline and tells the inner service which one
/// applies.
///
/// Implemented by [`NoOverride`], [`HttpDeadline`] and closures
/// `Fn(&Req) -> Option<Duration>`. Implementations run for every request:
/// keep them cheap and never panic on what a client sent.
///
/// A closure's deadline counts as the service's own. A source that reads
/// what the remote caller asked for marks it with
/// [`Requested::with_caller_timeout`], as [`HttpDeadline`] does for
/// `grpc-timeout`, so that its expiry is not taken for a failing
/// dependency.
pub trait DeadlineSource<Req> {
    /// The timeout `request` asks for, if any, and any malformed input
    /// found while reading it.
    fn requested(&self, request: &Req) -> Requested;

    /// Makes the deadline that applies visible to the inner service. The
    /// default does nothing.
    #[inline]
    fn expose(&self, request: &mut Req, deadline: Deadline) {
        let _ = (request, deadline);
    }
}

/// What a [`DeadlineSource`] read from one request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Requested {
    timeout: Option<Duration>,
    caller: bool,
    malformed: Option<MalformedInput>,
}

/// An input a [`DeadlineSource`] ignored because it was malformed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MalformedInput {
    /// The header name, lower case.
    pub header: &'static str,
    /// Why it was refused, for logs.
    pub reason: &'static str,
}

impl Requested {
    /// Nothing requested.
    pub const fn none() -> Self {
        Self {
            timeout: None,
            caller: false,
            malformed: None,
        }
    }

    /// Adds a timeout the service itself asks for (set by the server's own
    /// code, as a [`RequestTimeout`] is). When several are added, the
    /// smallest is kept.
    #[must_use]
    pub fn with_timeout(self, timeout: Duration) -> Self {
        self.add(timeout, false)
    }

    /// Adds a timeout the remote caller asks for, such as a `grpc-timeout`
    /// header. When several are added, the smallest is kept; on a tie, the
    /// service's own wins.
    ///
    /// A call that outlives a caller's deadline shorter than the policy's
    /// fails with an [`Elapsed`](palisade_core::Elapsed) whose
    /// [`is_caller_deadline`](palisade_core::Elapsed::is_caller_deadline)
    /// is true, which circuit breakers ignore by default: the client was
    /// in a hurry, the dependency did not fail.
    #[must_use]
    pub fn with_caller_timeout(self, timeout: Duration) -> Self {
        self.add(timeout, true)
    }

    fn add(mut self, timeout: Duration, caller: bool) -> Self {
        match self.timeout {
            Some(current) if current < timeout || (current == timeout && !self.caller) => {}
            _ => {
                self.timeout = Some(timeout);
                self.caller = caller;
            }
        }
        self
    }

    /// Notes that `header` was malformed and ignored.
    #[must_use]
    pub const fn with_malformed(mut self, header: &'static str, reason: &'static str) -> Self {
        self.malformed = Some(MalformedInput { header, reason });
        self
    }

    /// The smallest requested timeout.
    pub const fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// Whether the smallest requested timeout is the remote caller's.
    pub const fn is_from_caller(&self) -> bool {
        self.caller
    }

    /// The malformed input that was ignored, if any.
    pub const fn malformed(&self) -> Option<MalformedInput> {
        self.malformed
    }
}

impl From<Option<Duration>> for Requested {
    fn from(timeout: Option<Duration>) -> Self {
        Self {
            timeout,
            caller: false,
            malformed: None,
        }
    }
}

/// A source that reads nothing: every request gets the layer's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOverride;

impl<Req> DeadlineSource<Req> for NoOverride {
    #[inline]
    fn requested(&self, _request: &Req) -> Requested {
        Requested::none()
    }
}

impl<F, Req> DeadlineSource<Req> for F
where
    F: Fn(&Req) -> Option<Duration>,
{
    #[inline]
    fn requested(&self, request: &Req) -> Requested {
        self(request).into()
    }
}

/// A per-request timeout set in an `http::Request`'s extensions.
///
/// [`HttpDeadline`] reads it; it can shorten the layer's default but never
/// extend it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct RequestTimeout(pub Duration);

/// The deadline a [`Timeout`](crate::Timeout) applies to a request, as the
/// inner service sees it.
///
/// [`Deadline::current`] gives what is left of it at any point of the
/// call. A handler that calls further services passes that on, for
/// example as a `grpc-timeout` header with [`Deadline::grpc_timeout`], or
/// as a [`RequestTimeout`] for a palisade client stack. Passing the whole
/// budget on would let the downstream call run past the moment the caller
/// gives up.
///
/// With [`HttpDeadline::expose_deadline`] the applied deadline is also put
/// in the request's extensions. That copy is this layer's own deadline, not
/// the tightest of nested timeouts, and it carries the budget, not an
/// instant: the layer reads no clock unless the call is still running
/// after its first poll (see the crate docs), so the budget is the whole
/// timeout, while the layer's clock starts at the end of the inner
/// future's first poll; a handler that subtracts the time it has spent
/// since it started, with [`Deadline::remaining_after`], stays within it.
///
/// A deadline also says whether it is the remote caller's (a
/// `grpc-timeout` shorter than the policy's) rather than the service's
/// own; [`FollowDeadline`] carries that on to a client stack. Equality
/// compares both: compare [`budget`](Self::budget)s to compare durations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Deadline {
    budget: Duration,
    caller: bool,
}

impl Deadline {
    /// The service's own deadline of `budget`.
    pub const fn new(budget: Duration) -> Self {
        Self::with_origin(budget, false)
    }

    /// A deadline of `budget`, the remote caller's if `caller`.
    pub const fn with_origin(budget: Duration, caller: bool) -> Self {
        Self { budget, caller }
    }

    /// Whether the deadline is the remote caller's rather than the
    /// service's own.
    pub const fn is_from_caller(&self) -> bool {
        self.caller
    }

    /// How long the call may take: on a value from [`Deadline::current`],
    /// what was left when it was read (so do not subtract the time spent
    /// before that again with [`remaining_after`](Self::remaining_after)).
    pub const fn budget(&self) -> Duration {
        self.budget
    }

    /// What is left of the budget once `spent` has passed, zero at the
    /// least.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_timeout::Deadline;
    ///
    /// let deadline = Deadline::new(Duration::from_secs(2));
    /// // 500 ms into the handler, a downstream call gets the other 1.5 s.
    /// let left = deadline.remaining_after(Duration::from_millis(500));
    /// assert_eq!(left.budget(), Duration::from_millis(1500));
    /// assert_eq!(left.grpc_timeout().to_string(), "1500000u");
    /// assert_eq!(deadline.remaining_after(Duration::from_secs(3)).budget(), Duration::ZERO);
    /// ```
    #[must_use]
    pub const fn remaining_after(&self, spent: Duration) -> Self {
        Self::with_origin(self.budget.saturating_sub(spent), self.caller)
    }

    /// The budget as a `grpc-timeout` value, rounded down.
    pub fn grpc_timeout(&self) -> GrpcTimeout {
        GrpcTimeout::from_duration(self.budget)
    }

    /// What is left of the deadline of the call running now, or `None`
    /// outside any palisade timeout.
    ///
    /// Inside a [`Timeout`](crate::Timeout)'s call (the inner service's
    /// `call`, and every poll of the future it returned) this is the
    /// tightest deadline of the timeouts around it, whatever the request
    /// type and without touching the request. Before the call first waits
    /// its budget is whole (the clock starts then, see the crate docs);
    /// after, it counts down. Reading it costs one clock read once the
    /// call has waited, and none before; setting it costs the layer two
    /// thread-local writes per poll and no allocation.
    ///
    /// It follows the call, not the task: work handed to another task
    /// (`tokio::spawn`, `spawn_blocking`) does not see it, nor do other
    /// futures of the same task polled outside the call (the other arms of
    /// a `join!`), the inner future's destructor, or a response body
    /// streamed after the future resolved. Read it before handing the work
    /// over and pass the value along, or opt in to the request extension
    /// with [`HttpDeadline::expose_deadline`]. Conversely, an executor
    /// driven from inside the call (a nested `block_on`, a `LocalSet`) runs
    /// its other tasks under this deadline too.
    ///
    /// A client-side timeout inside the handler follows it with the
    /// [`FollowDeadline`] source, which also keeps whose deadline it is.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_timeout::{Deadline, TimeoutLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let timeout = TimeoutLayer::builder().timeout(Duration::from_secs(2)).build().unwrap();
    /// let svc = timeout.layer(service_fn(|_: u64| async {
    ///     let whole = Deadline::current().unwrap().budget();
    ///     tokio::time::sleep(Duration::from_millis(500)).await;
    ///     // A downstream call gets what is left, here as a `grpc-timeout` value.
    ///     let left = Deadline::current().unwrap();
    ///     Ok::<_, std::convert::Infallible>((whole, left.budget(), left.grpc_timeout().to_string()))
    /// }));
    ///
    /// let (whole, left, header) = svc.oneshot(7).await.unwrap();
    /// assert_eq!(whole, Duration::from_secs(2));
    /// assert_eq!(left, Duration::from_millis(1500));
    /// assert_eq!(header, "1500000u");
    /// assert_eq!(Deadline::current(), None);
    /// # }
    /// ```
    pub fn current() -> Option<Self> {
        palisade_core::deadline::remaining_with_origin()
            .map(|(budget, caller)| Self::with_origin(budget, caller))
    }
}

/// A deadline source for a client stack called from inside a served call:
/// it asks for what is left of that call's deadline ([`Deadline::current`]),
/// for any request type.
///
/// A deadline that was the remote caller's stays the caller's, so the
/// client's [`Elapsed`](palisade_core::Elapsed) says
/// [`is_caller_deadline`](palisade_core::Elapsed::is_caller_deadline), and
/// its circuit breaker (which ignores those by default) does not open
/// because one client asked for deadlines nothing can meet. A closure
/// source, `|_| Deadline::current().map(|d| d.budget())`, would make it
/// the client's own.
///
/// ```
/// use std::time::Duration;
/// use palisade_core::Elapsed;
/// use palisade_timeout::{FollowDeadline, HttpDeadline, TimeoutLayer};
/// use tower::{service_fn, Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// // A downstream client, called by the handler: 1 s of its own at most.
/// let client = TimeoutLayer::builder()
///     .timeout(Duration::from_secs(1))
///     .deadline_source(FollowDeadline)
///     .build()
///     .unwrap()
///     .layer(service_fn(|_: ()| async {
///         tokio::time::sleep(Duration::from_millis(200)).await;
///         Ok::<_, std::convert::Infallible>(())
///     }));
/// let server = TimeoutLayer::builder()
///     .timeout(Duration::from_secs(10))
///     .http()
///     .build()
///     .unwrap()
///     .layer(service_fn(move |_: http::Request<()>| {
///         let client = client.clone();
///         async move { client.oneshot(()).await }
///     }));
///
/// // The client in a hurry: 50 ms. The downstream call runs out of it, and
/// // says the deadline was the caller's.
/// let mut req = http::Request::new(());
/// req.headers_mut().insert("grpc-timeout", "50m".parse().unwrap());
/// let err = server.oneshot(req).await.unwrap_err();
/// assert!(err.downcast_ref::<Elapsed>().unwrap().is_caller_deadline());
/// # }
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowDeadline;

impl<Req> DeadlineSource<Req> for FollowDeadline {
    #[inline]
    fn requested(&self, _request: &Req) -> Requested {
        match Deadline::current() {
            Some(deadline) if deadline.is_from_caller() => {
                Requested::none().with_caller_timeout(deadline.budget())
            }
            Some(deadline) => Requested::none().with_timeout(deadline.budget()),
            None => Requested::none(),
        }
    }
}

/// The HTTP and gRPC deadline source.
///
/// For an `http::Request<B>` it reads, by default:
///
/// - a [`RequestTimeout`] extension;
/// - the `grpc-timeout` header (the first one, if repeated). A malformed
///   value is ignored, reported as a
///   [`MalformedHeader`](palisade_core::Event::MalformedHeader) event and a
///   `tracing` debug event, and the request goes on with the other
///   deadlines. It never fails the request.
///
/// By default it serves a server: the header is the remote caller's, and
/// so is a deadline read from it. On a client stack, where the application
/// writes the header itself, set [`client_side(true)`](Self::client_side)
/// so that the deadline is the stack's own and a dependency that hangs
/// still opens the client's circuit breaker.
///
/// The handler reads the applied deadline with [`Deadline::current`],
/// which allocates nothing. [`expose_deadline(true)`](Self::expose_deadline)
/// also inserts it into the request's extensions, for code that sees the
/// request but runs outside the call (another task, for instance). That
/// insertion allocates: the extension map boxes its values, so it costs
/// one allocation when the request already has extensions (as it usually
/// has behind axum's router) and three when it has none yet (the map, its
/// table and the value).
///
/// tonic's own server (`tonic::transport::Server`) also acts on
/// `grpc-timeout`: its timer starts before the layers it serves and, when
/// it passes first, the client gets `CANCELLED` rather than the
/// `DEADLINE_EXCEEDED` this layer's timeout maps to. Both say that the
/// client's deadline passed (a tonic client past its own deadline reports
/// `CANCELLED` too).
#[derive(Clone, Copy, Debug)]
pub struct HttpDeadline {
    extension: bool,
    grpc_timeout: bool,
    expose: bool,
    client_side: bool,
}

impl HttpDeadline {
    /// Reads both sources; the deadline is read with
    /// [`Deadline::current`], not from the extensions.
    pub const fn new() -> Self {
        Self {
            extension: true,
            grpc_timeout: true,
            expose: false,
            client_side: false,
        }
    }

    /// Whether to read the [`RequestTimeout`] extension (default `true`).
    #[must_use]
    pub const fn read_extension(mut self, enabled: bool) -> Self {
        self.extension = enabled;
        self
    }

    /// Whether to read the `grpc-timeout` header (default `true`). Turn it
    /// off when clients outside your control must not shorten deadlines.
    ///
    /// On a server, a deadline read from the header is the caller's (on a
    /// client stack, see [`client_side`](Self::client_side)): when it is shorter
    /// than the policy's and the call outlives it, the
    /// [`Elapsed`](palisade_core::Elapsed) says so, and circuit breakers
    /// ignore it by default, so a client that asks for deadlines nothing
    /// can meet gets its own 504s (or `DEADLINE_EXCEEDED`) without opening
    /// the circuit for everyone. The other side of that: when every client
    /// asks for a little less than the policy's timeout, a dependency that
    /// hangs times out only on callers' deadlines, and the breaker never
    /// counts those. If the breaker must see a hanging dependency whatever
    /// clients ask, turn this off (the policy's own timeout then always
    /// applies), or give the breaker a classifier that counts every
    /// `Elapsed` as a failure.
    #[must_use]
    pub const fn read_grpc_timeout(mut self, enabled: bool) -> Self {
        self.grpc_timeout = enabled;
        self
    }

    /// Whether this source serves a client stack rather than a server
    /// (default `false`): whether the `grpc-timeout` header was written on
    /// this side, not by a remote caller.
    ///
    /// On a server (the default) the header comes from the remote caller,
    /// and a deadline read from it is the caller's (see
    /// [`read_grpc_timeout`](Self::read_grpc_timeout)). On a client stack,
    /// a timeout layer wrapped around a tonic `Channel` or a hyper client,
    /// the header was written by the application itself (tonic's
    /// `Request::set_timeout` writes it): turn this on there, so that a
    /// deadline read from it is the stack's own, like a [`RequestTimeout`].
    /// Its expiry then gives an [`Elapsed`](palisade_core::Elapsed) whose
    /// [`is_caller_deadline`](palisade_core::Elapsed::is_caller_deadline)
    /// is false, which the client's circuit breaker counts, so a
    /// dependency that hangs opens it. Left off, every such timeout would
    /// be taken for a caller in a hurry, and the breaker would never open.
    ///
    /// A header that a handler copied from the deadline of the call it
    /// serves then counts as the client's own too. To keep a served
    /// caller's deadline the caller's downstream, give the client stack
    /// the [`FollowDeadline`] source instead.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_core::Elapsed;
    /// use palisade_timeout::{HttpDeadline, TimeoutLayer};
    /// use tower::{service_fn, Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// // Around a dependency that never answers.
    /// let client = TimeoutLayer::builder()
    ///     .timeout(Duration::from_secs(10))
    ///     .deadline_source(HttpDeadline::new().client_side(true))
    ///     .build()
    ///     .unwrap()
    ///     .layer(service_fn(|_: http::Request<()>| async {
    ///         std::future::pending::<Result<(), std::convert::Infallible>>().await
    ///     }));
    ///
    /// // The application set its own deadline, as `Request::set_timeout` does.
    /// let mut req = http::Request::new(());
    /// req.headers_mut().insert("grpc-timeout", "100m".parse().unwrap());
    /// let err = client.oneshot(req).await.unwrap_err();
    /// let elapsed = err.downcast_ref::<Elapsed>().unwrap();
    /// assert_eq!(elapsed.timeout(), Duration::from_millis(100));
    /// assert!(!elapsed.is_caller_deadline());
    /// # }
    /// ```
    #[must_use]
    pub const fn client_side(mut self, enabled: bool) -> Self {
        self.client_side = enabled;
        self
    }

    /// Whether to also insert the applied [`Deadline`] into the request's
    /// extensions (default `false`; it allocates, see above).
    /// [`Deadline::current`] works either way.
    #[must_use]
    pub const fn expose_deadline(mut self, enabled: bool) -> Self {
        self.expose = enabled;
        self
    }
}

impl Default for HttpDeadline {
    fn default() -> Self {
        Self::new()
    }
}

impl<B> DeadlineSource<http::Request<B>> for HttpDeadline {
    fn requested(&self, request: &http::Request<B>) -> Requested {
        let mut requested = Requested::none();
        if self.extension
            && let Some(RequestTimeout(timeout)) = request.extensions().get::<RequestTimeout>()
        {
            requested = requested.with_timeout(*timeout);
        }
        if self.grpc_timeout
            && let Some(value) = request.headers().get(&GRPC_TIMEOUT_NAME)
        {
            requested = match GrpcTimeout::parse(value.as_bytes()) {
                Ok(parsed) if self.client_side => requested.with_timeout(parsed.duration()),
                Ok(parsed) => requested.with_caller_timeout(parsed.duration()),
                Err(err) => requested.with_malformed(GRPC_TIMEOUT, err.as_str()),
            };
        }
        requested
    }

    #[inline]
    fn expose(&self, request: &mut http::Request<B>, deadline: Deadline) {
        if self.expose {
            request.extensions_mut().insert(deadline);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(header: Option<&str>, extension: Option<Duration>) -> http::Request<()> {
        let mut req = http::Request::new(());
        if let Some(value) = header {
            req.headers_mut()
                .insert(GRPC_TIMEOUT, http::HeaderValue::from_str(value).unwrap());
        }
        if let Some(timeout) = extension {
            req.extensions_mut().insert(RequestTimeout(timeout));
        }
        req
    }

    #[test]
    fn smallest_requested_value_wins() {
        let source = HttpDeadline::new();
        let both = source.requested(&request(Some("3S"), Some(Duration::from_secs(5))));
        assert_eq!(both.timeout(), Some(Duration::from_secs(3)));
        let both = source.requested(&request(Some("9S"), Some(Duration::from_secs(5))));
        assert_eq!(both.timeout(), Some(Duration::from_secs(5)));
        assert_eq!(source.requested(&request(None, None)), Requested::none());
    }

    #[test]
    fn sources_can_be_switched_off() {
        let req = request(Some("3S"), Some(Duration::from_secs(5)));
        let no_header = HttpDeadline::new().read_grpc_timeout(false);
        assert_eq!(
            no_header.requested(&req).timeout(),
            Some(Duration::from_secs(5))
        );
        let no_extension = HttpDeadline::new().read_extension(false);
        assert_eq!(
            no_extension.requested(&req).timeout(),
            Some(Duration::from_secs(3))
        );
        let neither = HttpDeadline::new()
            .read_extension(false)
            .read_grpc_timeout(false);
        assert_eq!(neither.requested(&req).timeout(), None);
    }

    #[test]
    fn a_malformed_header_keeps_the_extension_and_is_reported() {
        let req = request(Some("1x"), Some(Duration::from_secs(5)));
        let requested = HttpDeadline::new().requested(&req);
        assert_eq!(requested.timeout(), Some(Duration::from_secs(5)));
        assert_eq!(
            requested.malformed(),
            Some(MalformedInput {
                header: "grpc-timeout",
                reason: "unknown unit"
            })
        );
    }

    #[test]
    fn the_smallest_timeout_keeps_its_origin_and_a_tie_is_the_services() {
        let caller_first = Requested::none()
            .with_caller_timeout(Duration::from_millis(300))
            .with_timeout(Duration::from_millis(500));
        assert_eq!(caller_first.timeout(), Some(Duration::from_millis(300)));
        assert!(caller_first.is_from_caller());
        let service_smaller = Requested::none()
            .with_timeout(Duration::from_millis(200))
            .with_caller_timeout(Duration::from_millis(300));
        assert!(!service_smaller.is_from_caller());
        for tie in [
            Requested::none()
                .with_caller_timeout(Duration::from_millis(300))
                .with_timeout(Duration::from_millis(300)),
            Requested::none()
                .with_timeout(Duration::from_millis(300))
                .with_caller_timeout(Duration::from_millis(300)),
        ] {
            assert_eq!(tie.timeout(), Some(Duration::from_millis(300)));
            assert!(!tie.is_from_caller());
        }
        let header = HttpDeadline::new().requested(&request(Some("100m"), None));
        assert!(header.is_from_caller());
        let extension = HttpDeadline::new().requested(&request(None, Some(Duration::from_secs(1))));
        assert!(!extension.is_from_caller());
        let client = HttpDeadline::new()
            .client_side(true)
            .requested(&request(Some("100m"), Some(Duration::from_secs(1))));
        assert_eq!(client.timeout(), Some(Duration::from_millis(100)));
        assert!(!client.is_from_caller());
    }

    #[test]
    fn closures_are_sources() {
        let source = |req: &u64| (*req > 10).then(|| Duration::from_millis(*req));
        assert_eq!(source.requested(&5), Requested::none());
        assert_eq!(
            DeadlineSource::requested(&source, &50).timeout(),
            Some(Duration::from_millis(50))
        );
    }

    #[test]
    fn the_deadline_extension_is_opt_in() {
        let mut req = request(None, None);
        HttpDeadline::new().expose(&mut req, Deadline::new(Duration::from_secs(1)));
        assert!(req.extensions().get::<Deadline>().is_none());
        let mut req = request(None, None);
        HttpDeadline::new()
            .expose_deadline(true)
            .expose(&mut req, Deadline::new(Duration::from_secs(1)));
        assert_eq!(
            req.extensions().get::<Deadline>().map(Deadline::budget),
            Some(Duration::from_secs(1))
        );
    }
}

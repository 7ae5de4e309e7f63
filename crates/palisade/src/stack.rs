//! The ordered stack: six layers, one policy name, one metrics sink.
//!
//! [`Stack`] assembles palisade's layers in the order a request should meet
//! them, outermost first:
//!
//! | # | layer | why it sits here |
//! |---|---|---|
//! | 1 | fallback | it must see every rejection and failure below it to turn them into a degraded answer; its source and predicates run outside the panic-catch below, so it contains their panics itself (a source that panics answers with the panic, a 500, or with the rejection it stood in for when it can fail; a predicate that panics lets the error or response it was judging go on); a readiness error of the service it answers without calling the layers below, so the breaker does not count it |
//! | 2 | rate limit | the cheapest rejection comes first, before any work is queued or counted; a limiter that waits ([`Mode::Wait`](crate::ratelimit::Mode::Wait)) holds a request before the timeout below has seen it, so that wait adds to a call's time and a client's `grpc-timeout` counts from when the request leaves it: keep `max_delay` short next to the deadlines, or put a timeout around the whole stack |
//! | 3 | circuit breaker | it fails fast while the service is failing, and it counts the panics of the layers below, and their timeouts on the policy's own deadline, as failures; rate-limit rejections above it never reach it, and a full bulkhead below it or a client's short `grpc-timeout` are not failures |
//! | 4 | timeout | it bounds the total time of a call from when it passes the breaker, time spent waiting at the bulkhead included: a request still queued when the deadline comes is turned away by the bulkhead as overloaded (503), not timed out, so waiting in the queue is not counted as a failure (nor as latency, for the breaker's slow calls); a request that leaves the queue with little of its deadline left and then runs out of it is the timeout's, and counts, so keep the bulkhead's `max_wait` short next to the timeout |
//! | 5 | concurrency limit | it bounds the work in flight inside the service |
//! | 6 | panic-catch | innermost, so that a panic becomes an ordinary failure that every layer above counts and releases its permits for; the HTTP flavour ([`CatchPanicHttpBuilder`](crate::panic::http::CatchPanicHttpBuilder)) answers a 500 response instead of an error, which layers above count only with a classifier that counts server errors ([`ServerErrorsAsFailures`](crate::core::classify::ServerErrorsAsFailures)), and which the fallback answers only when told to replace server errors |
//!
//! For HTTP and gRPC servers, an error-mapping envelope goes around all
//! six ([`Stack::http_errors`], [`Stack::grpc_errors`]), so that whatever
//! the fallback did not answer becomes a 429/503/504/500 response (or the
//! matching gRPC status) and the service stays `Infallible`, as axum
//! requires; around a gRPC client's channel, [`Stack::grpc_client_errors`]
//! passes each error on to the generated client as the matching status. A
//! fallback that fails while it answers for a rejection
//! leaves that rejection's answer ([`FallbackFailed`](crate::fallback::error::FallbackFailed)):
//! a rate-limited request whose fallback failed is still a 429 with
//! `Retry-After`.
//!
//! Every layer is optional: a layer that is not configured is
//! [`Identity`], which costs nothing. The stack gives every layer the same
//! [`PolicyName`] and, once given them ([`Stack::metrics`],
//! [`Stack::clock`]), the same [`Metrics`] sink and, for every layer that
//! reads a clock (the rate limiter, the breaker, the adaptive bulkhead),
//! the same [`Clock`], so one policy reads as one line on a dashboard,
//! with its events told apart by their `layer` label. The timeout waits on tokio's
//! timer, which `tokio::time::pause` drives.
//!
//! One built [`StackLayer`] is one policy: its limiter, breaker and
//! bulkhead are created when it is built and shared by every service it
//! wraps. Apply the same value to a whole axum `Router` to share one limit
//! across routes; build another for a route that needs its own.
//!
//! # Another order
//!
//! The default order suits a server protecting itself. To compose the
//! layers differently, take them apart with [`StackLayer::into_parts`] and
//! stack them with `tower::ServiceBuilder` in the order you need; they keep
//! the shared name, sink and state.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade::breaker::CircuitBreakerLayer;
//! use palisade::bulkhead::BulkheadLayer;
//! use palisade::panic::CatchPanicLayer;
//! use palisade::ratelimit::RateLimitLayer;
//! use palisade::timeout::TimeoutLayer;
//! use palisade::Stack;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), palisade::BoxError> {
//! let policy = Stack::new("inventory")
//!     .rate_limit(RateLimitLayer::builder().quota(100, Duration::from_secs(1)))
//!     .circuit_breaker(CircuitBreakerLayer::builder().failure_rate_threshold(0.5))
//!     .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(2)))
//!     .concurrency_limit(BulkheadLayer::builder().max_concurrent(32))
//!     .catch_panic(CatchPanicLayer::builder())
//!     .build()?;
//!
//! let svc = policy.layer(service_fn(|sku: u32| async move { Ok::<_, std::io::Error>(sku * 2) }));
//! assert_eq!(svc.oneshot(21).await?, 42);
//! # Ok(())
//! # }
//! ```

use std::fmt;

use palisade_core::Leak;
use palisade_core::{Clock, ConfigError, Metrics, PolicyName};
use tower_layer::{Identity, Layer};

/// What every layer of a stack shares: the policy name, and the metrics
/// sink and the clock when the stack was given them.
#[derive(Clone, Debug)]
pub struct Shared {
    name: PolicyName,
    metrics: Option<Metrics>,
    clock: Option<Clock>,
}

impl Shared {
    /// The policy name.
    pub fn name(&self) -> &PolicyName {
        &self.name
    }

    /// The metrics sink given to the stack ([`Stack::metrics`]), which
    /// replaces any a layer's builder was given; `None` leaves each
    /// builder's own.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// The clock given to the stack ([`Stack::clock`]), which replaces any
    /// a layer's builder was given; `None` leaves each builder's own.
    pub fn clock(&self) -> Option<&Clock> {
        self.clock.as_ref()
    }
}

/// One configured slot of a [`Stack`]: a layer builder that the stack
/// finishes with the shared name, and with the stack's sink and clock when
/// it was given them.
///
/// Implemented for every palisade layer builder, for the error-mapping
/// layers, and for [`Omitted`].
pub trait Part {
    /// The layer this part builds.
    type Layer;

    /// Builds the layer with the stack's shared settings.
    ///
    /// # Errors
    ///
    /// The builder's [`ConfigError`], naming the field and its range.
    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError>;
}

/// A slot left out of the stack: it builds [`Identity`], which adds
/// nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct Omitted;

impl Part for Omitted {
    type Layer = Identity;

    fn build_part(self, _shared: &Shared) -> Result<Identity, ConfigError> {
        Ok(Identity::new())
    }
}

/// Assembles palisade's layers in the default order. See the
/// [module documentation](self) for the order and why.
///
/// Type parameters are the parts in each slot, outermost first: fallback,
/// rate limit, circuit breaker, timeout, concurrency limit, panic-catch,
/// and the error-mapping envelope.
#[must_use]
pub struct Stack<
    F = Omitted,
    R = Omitted,
    B = Omitted,
    T = Omitted,
    C = Omitted,
    P = Omitted,
    M = Omitted,
> {
    shared: Shared,
    fallback: F,
    rate_limit: R,
    breaker: B,
    timeout: T,
    bulkhead: C,
    panic: P,
    errors: M,
}

impl Stack {
    /// An empty stack for the policy `name`. Its layers report to the sink
    /// and read the clock their builders were given (by default none, and
    /// tokio's clock) until [`metrics`](Stack::metrics) and
    /// [`clock`](Stack::clock) set one for all.
    pub fn new(name: impl Into<PolicyName>) -> Self {
        Stack {
            shared: Shared {
                name: name.into(),
                metrics: None,
                clock: None,
            },
            fallback: Omitted,
            rate_limit: Omitted,
            breaker: Omitted,
            timeout: Omitted,
            bulkhead: Omitted,
            panic: Omitted,
            errors: Omitted,
        }
    }
}

impl<F, R, B, T, C, P, M> Stack<F, R, B, T, C, P, M> {
    /// Sends every layer's events to `metrics`, in place of any sink a
    /// layer's builder was given.
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.shared.metrics = Some(metrics.into());
        self
    }

    /// Has the layers that read a clock (the rate limiter, the breaker and
    /// the adaptive bulkhead) read `clock`, in place of any clock their
    /// builders were given (tokio's clock by default). The timeout sleeps
    /// on tokio's timer whatever the clock: drive it with
    /// `tokio::time::pause`.
    pub fn clock(mut self, clock: Clock) -> Self {
        self.shared.clock = Some(clock);
        self
    }

    /// The shared settings.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The outermost layer: answers in place of the service (for example a
    /// `palisade::fallback::FallbackLayer::builder(..)`).
    pub fn fallback<F2: Part>(self, part: F2) -> Stack<F2, R, B, T, C, P, M> {
        let Stack {
            shared,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            panic,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback: part,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            panic,
            errors,
        }
    }

    /// The rate limiter (a `palisade::ratelimit::RateLimitLayer::builder()`).
    pub fn rate_limit<R2: Part>(self, part: R2) -> Stack<F, R2, B, T, C, P, M> {
        let Stack {
            shared,
            fallback,
            breaker,
            timeout,
            bulkhead,
            panic,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit: part,
            breaker,
            timeout,
            bulkhead,
            panic,
            errors,
        }
    }

    /// The circuit breaker (a `palisade::breaker::CircuitBreakerLayer::builder()`).
    pub fn circuit_breaker<B2: Part>(self, part: B2) -> Stack<F, R, B2, T, C, P, M> {
        let Stack {
            shared,
            fallback,
            rate_limit,
            timeout,
            bulkhead,
            panic,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit,
            breaker: part,
            timeout,
            bulkhead,
            panic,
            errors,
        }
    }

    /// The timeout (a `palisade::timeout::TimeoutLayer::builder()`).
    pub fn timeout<T2: Part>(self, part: T2) -> Stack<F, R, B, T2, C, P, M> {
        let Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            bulkhead,
            panic,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout: part,
            bulkhead,
            panic,
            errors,
        }
    }

    /// The concurrency limit (a `palisade::bulkhead::BulkheadLayer::builder()`).
    pub fn concurrency_limit<C2: Part>(self, part: C2) -> Stack<F, R, B, T, C2, P, M> {
        let Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            panic,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            bulkhead: part,
            panic,
            errors,
        }
    }

    /// The innermost layer: catches panics (a
    /// `palisade::panic::CatchPanicLayer::builder()`).
    pub fn catch_panic<P2: Part>(self, part: P2) -> Stack<F, R, B, T, C, P2, M> {
        let Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            errors,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            panic: part,
            errors,
        }
    }

    /// The envelope around the six layers that turns errors into responses,
    /// for example an `ErrorToResponseLayer` with a custom mapping.
    pub fn map_errors<M2: Part>(self, part: M2) -> Stack<F, R, B, T, C, P, M2> {
        let Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            panic,
            ..
        } = self;
        Stack {
            shared,
            fallback,
            rate_limit,
            breaker,
            timeout,
            bulkhead,
            panic,
            errors: part,
        }
    }

    /// Checks every part and builds the stack.
    ///
    /// # Errors
    ///
    /// The first part's [`ConfigError`], outermost first.
    pub fn build(
        self,
    ) -> Result<
        StackLayer<F::Layer, R::Layer, B::Layer, T::Layer, C::Layer, P::Layer, M::Layer>,
        ConfigError,
    >
    where
        F: Part,
        R: Part,
        B: Part,
        T: Part,
        C: Part,
        P: Part,
        M: Part,
    {
        let shared = &self.shared;
        Ok(StackLayer {
            fallback: self.fallback.build_part(shared)?,
            rate_limit: self.rate_limit.build_part(shared)?,
            breaker: self.breaker.build_part(shared)?,
            timeout: self.timeout.build_part(shared)?,
            bulkhead: self.bulkhead.build_part(shared)?,
            panic: self.panic.build_part(shared)?,
            errors: self.errors.build_part(shared)?,
            shared: self.shared,
        })
    }
}

#[cfg(feature = "http")]
impl<F, R, B, T, C, P, M> Stack<F, R, B, T, C, P, M> {
    /// Wraps the stack in palisade's HTTP error mapping: rejections and
    /// errors become 429/503/504/500 responses with an RFC 9457 body, and
    /// the service's error type becomes `Infallible`.
    pub fn http_errors(self) -> Stack<F, R, B, T, C, P, palisade_http::ErrorToResponseLayer> {
        self.map_errors(palisade_http::ErrorToResponseLayer::new())
    }
}

#[cfg(feature = "tonic")]
impl<F, R, B, T, C, P, M> Stack<F, R, B, T, C, P, M> {
    /// Wraps the stack in palisade's gRPC error mapping: rejections and
    /// errors become trailers-only responses carrying the matching
    /// `grpc-status`, for a tonic server. A rejection's message names the
    /// policy and the reason, and any other error's says nothing of it,
    /// except a `tonic::Status` found in the error's chain, which is
    /// answered as it is, message included (see
    /// [`palisade_http::grpc`]). A service behind this stack that passes on
    /// a downstream call's status (a client stack with
    /// [`grpc_client_errors`](Self::grpc_client_errors), whose statuses
    /// keep a transport error's text) passes that text to the caller too.
    pub fn grpc_errors(self) -> Stack<F, R, B, T, C, P, palisade_http::grpc::ErrorToStatusLayer> {
        self.map_errors(palisade_http::grpc::ErrorToStatusLayer::new())
    }

    /// Wraps a client stack (around a tonic `Channel`) in palisade's gRPC
    /// error mapping for clients: the stack's rejections reach the
    /// generated client as the matching `Status`, and any other error as
    /// tonic maps it (a refused connection stays `UNAVAILABLE`, with its
    /// text). Each status keeps the error it stands for as its source, so
    /// a handler that passes it on to axum still answers the rejection's
    /// HTTP status; see
    /// [`ClientErrorToStatusLayer`](palisade_http::grpc::ClientErrorToStatusLayer).
    pub fn grpc_client_errors(
        self,
    ) -> Stack<F, R, B, T, C, P, palisade_http::grpc::ClientErrorToStatusLayer> {
        self.map_errors(palisade_http::grpc::ClientErrorToStatusLayer::new())
    }
}

impl<F, R, B, T, C, P, M> fmt::Debug for Stack<F, R, B, T, C, P, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("name", &self.shared.name)
            .field("fallback", &std::any::type_name::<F>())
            .field("rate_limit", &std::any::type_name::<R>())
            .field("circuit_breaker", &std::any::type_name::<B>())
            .field("timeout", &std::any::type_name::<T>())
            .field("concurrency_limit", &std::any::type_name::<C>())
            .field("catch_panic", &std::any::type_name::<P>())
            .field("errors", &std::any::type_name::<M>())
            .finish()
    }
}

/// The built stack: a tower [`Layer`] applying every configured layer in
/// the default order. One value is one policy; clone it freely.
#[derive(Clone)]
pub struct StackLayer<F, R, B, T, C, P, M> {
    shared: Shared,
    fallback: F,
    rate_limit: R,
    breaker: B,
    timeout: T,
    bulkhead: C,
    panic: P,
    errors: M,
}

/// The layers of a built stack, to be composed in another order.
#[derive(Clone, Debug)]
pub struct Parts<F, R, B, T, C, P, M> {
    /// The fallback layer.
    pub fallback: F,
    /// The rate limiter.
    pub rate_limit: R,
    /// The circuit breaker.
    pub circuit_breaker: B,
    /// The timeout.
    pub timeout: T,
    /// The concurrency limit.
    pub concurrency_limit: C,
    /// The panic-catch layer.
    pub catch_panic: P,
    /// The error-mapping envelope.
    pub errors: M,
}

impl<F, R, B, T, C, P, M> StackLayer<F, R, B, T, C, P, M> {
    /// The policy name shared by every layer.
    pub fn name(&self) -> &PolicyName {
        &self.shared.name
    }

    /// The shared settings.
    pub fn shared(&self) -> &Shared {
        &self.shared
    }

    /// The fallback layer.
    pub fn fallback(&self) -> &F {
        &self.fallback
    }

    /// The rate limiter, for example to read its tracked keys.
    pub fn rate_limit(&self) -> &R {
        &self.rate_limit
    }

    /// The circuit breaker, for example to take its handle.
    pub fn circuit_breaker(&self) -> &B {
        &self.breaker
    }

    /// The timeout layer.
    pub fn timeout(&self) -> &T {
        &self.timeout
    }

    /// The concurrency limit, for example to read its in-flight count.
    pub fn concurrency_limit(&self) -> &C {
        &self.bulkhead
    }

    /// The panic-catch layer.
    pub fn catch_panic(&self) -> &P {
        &self.panic
    }

    /// The error-mapping envelope.
    pub fn errors(&self) -> &M {
        &self.errors
    }

    /// Keeps every layer's state until the process exits, so that the
    /// stack's services and calls reach it without counting references:
    /// for a stack built once at start-up that serves until the end. With
    /// several worker threads this saves each request a locked write, per
    /// layer, to a counter all the workers share (see
    /// [`palisade_core::shared`], which also says when not to).
    ///
    /// ```
    /// use palisade::Stack;
    /// use palisade::bulkhead::BulkheadLayer;
    /// use palisade::timeout::TimeoutLayer;
    /// use std::time::Duration;
    ///
    /// let stack = Stack::new("api")
    ///     .timeout(TimeoutLayer::builder().timeout(Duration::from_secs(2)))
    ///     .concurrency_limit(BulkheadLayer::builder().max_concurrent(64))
    ///     .build()?
    ///     .leak();
    /// assert_eq!(stack.concurrency_limit().limit(), 64);
    /// # Ok::<(), palisade::core::ConfigError>(())
    /// ```
    pub fn leak(
        self,
    ) -> StackLayer<F::Leaked, R::Leaked, B::Leaked, T::Leaked, C::Leaked, P::Leaked, M::Leaked>
    where
        F: Leak,
        R: Leak,
        B: Leak,
        T: Leak,
        C: Leak,
        P: Leak,
        M: Leak,
    {
        StackLayer {
            shared: self.shared,
            fallback: self.fallback.leak(),
            rate_limit: self.rate_limit.leak(),
            breaker: self.breaker.leak(),
            timeout: self.timeout.leak(),
            bulkhead: self.bulkhead.leak(),
            panic: self.panic.leak(),
            errors: self.errors.leak(),
        }
    }

    /// Takes the stack apart, to compose its layers in another order.
    pub fn into_parts(self) -> Parts<F, R, B, T, C, P, M> {
        Parts {
            fallback: self.fallback,
            rate_limit: self.rate_limit,
            circuit_breaker: self.breaker,
            timeout: self.timeout,
            concurrency_limit: self.bulkhead,
            catch_panic: self.panic,
            errors: self.errors,
        }
    }
}

impl<F, R, B, T, C, P, M> fmt::Debug for StackLayer<F, R, B, T, C, P, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StackLayer")
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<S, F, R, B, T, C, P, M> Layer<S> for StackLayer<F, R, B, T, C, P, M>
where
    P: Layer<S>,
    C: Layer<P::Service>,
    T: Layer<C::Service>,
    B: Layer<T::Service>,
    R: Layer<B::Service>,
    F: Layer<R::Service>,
    M: Layer<F::Service>,
{
    type Service = M::Service;

    fn layer(&self, service: S) -> Self::Service {
        let service = self.panic.layer(service);
        let service = self.bulkhead.layer(service);
        let service = self.timeout.layer(service);
        let service = self.breaker.layer(service);
        let service = self.rate_limit.layer(service);
        let service = self.fallback.layer(service);
        self.errors.layer(service)
    }
}

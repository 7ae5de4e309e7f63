use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{ConfigError, LayerKind, Metrics, PolicyName};
use tower_layer::Layer;

use crate::deadline::{HttpDeadline, NoOverride};
use crate::service::Timeout;

/// What every clone of one timeout layer shares, created when the layer is
/// built.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) timeout: Duration,
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
}

/// Applies a [`Timeout`] to a service.
///
/// Built with [`TimeoutLayer::builder`]. `O` is the
/// [`DeadlineSource`](crate::DeadlineSource) that may shorten the deadline
/// per request; the default, [`NoOverride`], works with any request type.
/// `M` is [`Counted`] until [`leak`](TimeoutLayer::leak) makes it
/// [`Leaked`].
#[derive(Clone, Debug)]
pub struct TimeoutLayer<O = NoOverride, M: Sharing = Counted> {
    shared: SharedState<Shared, M>,
    source: O,
}

impl TimeoutLayer {
    /// A builder with the defaults: a 30 second timeout, the policy name
    /// `"default"`, no metrics, no per-request override.
    pub fn builder() -> TimeoutLayerBuilder {
        TimeoutLayerBuilder::default()
    }
}

impl<O, M: Sharing> TimeoutLayer<O, M> {
    /// The default timeout.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// The policy name.
    pub fn policy(&self) -> &PolicyName {
        &self.shared.policy
    }

    /// The per-request deadline source.
    pub fn source(&self) -> &O {
        &self.source
    }

    /// Keeps this layer's settings until the process exits, so that its
    /// services and calls reach them without counting references: for a
    /// layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_timeout::TimeoutLayer;
    /// use std::time::Duration;
    ///
    /// let layer = TimeoutLayer::builder()
    ///     .timeout(Duration::from_secs(2))
    ///     .build()?
    ///     .leak();
    /// assert_eq!(layer.timeout(), Duration::from_secs(2));
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> TimeoutLayer<O, Leaked> {
        TimeoutLayer {
            shared: self.shared.leak(),
            source: self.source,
        }
    }
}

impl<O, M: Sharing> Leak for TimeoutLayer<O, M> {
    type Leaked = TimeoutLayer<O, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<S, O: Clone, M: Sharing> Layer<S> for TimeoutLayer<O, M> {
    type Service = Timeout<S, O, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::from_parts(inner, self.shared.clone(), self.source.clone())
    }
}

/// Configures a [`TimeoutLayer`].
#[derive(Clone, Debug)]
pub struct TimeoutLayerBuilder<O = NoOverride> {
    timeout: Duration,
    policy: PolicyName,
    metrics: Metrics,
    source: O,
}

impl Default for TimeoutLayerBuilder {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            policy: PolicyName::default(),
            metrics: Metrics::noop(),
            source: NoOverride,
        }
    }
}

impl<O> TimeoutLayerBuilder<O> {
    /// The default deadline of every request (default 30 seconds; must be
    /// more than zero).
    ///
    /// tokio's timer waits at most about 30 years, so a longer timeout
    /// (`Duration::MAX` included) fires after about 30 years. The
    /// [`Elapsed`](crate::error::Elapsed) error still speaks of the
    /// configured duration (held at about 146 years beyond that), and so
    /// does [`Deadline::current`](crate::Deadline::current) until the call
    /// first waits; from then on it counts down what is left of the
    /// timer's 30 years, the moment the call is actually cut off.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The policy name carried by events and by [`Elapsed`](crate::error::Elapsed)
    /// (default `"default"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.policy = name.into();
        self
    }

    /// Where events go (default: nowhere).
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// Reads per-request deadlines with `source`.
    #[must_use]
    pub fn deadline_source<O2>(self, source: O2) -> TimeoutLayerBuilder<O2> {
        TimeoutLayerBuilder {
            timeout: self.timeout,
            policy: self.policy,
            metrics: self.metrics,
            source,
        }
    }

    /// The HTTP and gRPC flavour: reads the
    /// [`RequestTimeout`](crate::RequestTimeout) extension and the
    /// `grpc-timeout` header. Same as
    /// `deadline_source(HttpDeadline::new())`; the handler reads the
    /// applied deadline with [`Deadline::current`](crate::Deadline::current).
    /// This reads the header as a server does, as the remote caller's; on a
    /// client stack use
    /// `deadline_source(HttpDeadline::new().client_side(true))` (see
    /// [`HttpDeadline::client_side`]).
    #[must_use]
    pub fn http(self) -> TimeoutLayerBuilder<HttpDeadline> {
        self.deadline_source(HttpDeadline::new())
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the timeout is zero or the name is not a
    /// valid label.
    pub fn build(self) -> Result<TimeoutLayer<O>, ConfigError> {
        let check = Validate::new(LayerKind::Timeout, &self.policy);
        check.label("name", self.policy.as_str())?;
        let timeout = check.positive_duration("timeout", self.timeout)?;
        Ok(TimeoutLayer {
            shared: SharedState::new(Shared {
                timeout,
                policy: self.policy,
                metrics: self.metrics,
            }),
            source: self.source,
        })
    }
}

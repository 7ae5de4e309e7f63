use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{ConfigError, Metrics, PolicyName};
use tower_layer::Layer;

use crate::service::CatchPanic;
use crate::shared::{Common, Shared};

/// Applies [`CatchPanic`] to a service: a panic in the service becomes a
/// [`Panicked`](crate::error::Panicked) error.
///
/// The layer's policy name, metrics sink and capture options are shared by
/// every service it wraps. Building the layer installs the palisade panic
/// hook (see [`palisade_core::panic`]). `M` is [`Counted`] until
/// [`leak`](CatchPanicLayer::leak) makes it [`Leaked`].
#[derive(Clone, Debug)]
pub struct CatchPanicLayer<M: Sharing = Counted> {
    shared: SharedState<Shared, M>,
}

impl CatchPanicLayer {
    /// A layer with the defaults: policy name `"default"`, no metrics,
    /// backtraces captured, the default hook's stderr print suppressed.
    pub fn new() -> Self {
        Self {
            shared: SharedState::new(Common::default().into_shared()),
        }
    }

    /// A builder to name the layer, attach metrics and choose what is
    /// captured.
    pub fn builder() -> CatchPanicBuilder {
        CatchPanicBuilder::default()
    }

    /// Whether this build can catch panics at all: `false` under
    /// `panic = "abort"`, where a panic ends the process before any layer
    /// sees it. See the crate documentation.
    pub const fn can_catch() -> bool {
        palisade_core::panic::CAN_CATCH_PANICS
    }
}

impl<M: Sharing> CatchPanicLayer<M> {
    /// Keeps this layer's settings until the process exits, so that its
    /// services and calls reach them without counting references: for a
    /// layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_panic::CatchPanicLayer;
    ///
    /// let layer = CatchPanicLayer::builder().name("api").build()?.leak();
    /// assert_eq!(layer.name().as_str(), "api");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> CatchPanicLayer<Leaked> {
        CatchPanicLayer {
            shared: self.shared.leak(),
        }
    }

    /// The policy name carried by this layer's events and rejections.
    pub fn name(&self) -> &PolicyName {
        &self.shared.policy
    }
}

impl<M: Sharing> Leak for CatchPanicLayer<M> {
    type Leaked = CatchPanicLayer<Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl Default for CatchPanicLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S, M: Sharing> Layer<S> for CatchPanicLayer<M> {
    type Service = CatchPanic<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // Built during an unwind, the layer could not install the hook
        // that records where a panic happened: the first service made
        // outside one does (a check of a flag once it is in place).
        palisade_core::panic::install_hook();
        CatchPanic::from_shared(inner, self.shared.clone())
    }
}

/// Builds a [`CatchPanicLayer`].
///
/// ```
/// use palisade_panic::CatchPanicLayer;
///
/// let layer = CatchPanicLayer::builder()
///     .name("orders")
///     .backtrace(false)
///     .print(true)
///     .build()
///     .unwrap();
/// assert_eq!(layer.name().as_str(), "orders");
/// ```
#[derive(Clone, Debug, Default)]
pub struct CatchPanicBuilder {
    common: Common,
}

impl CatchPanicBuilder {
    /// The policy name carried by events, log lines and rejections.
    /// Default: `"default"`. 1 to 64 characters, no control characters.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.common.name = name.into();
        self
    }

    /// Where [`Event::PanicCaught`](palisade_core::Event::PanicCaught) is
    /// reported. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.common.metrics = metrics.into();
        self
    }

    /// Capture a backtrace at the panic site. Default: `true`. Capturing
    /// costs time only when a panic happens.
    #[must_use]
    pub fn backtrace(mut self, capture: bool) -> Self {
        self.common.capture.backtrace = capture;
        self
    }

    /// Still run the panic hook installed before palisade's (by default the
    /// standard library's, which prints the panic to stderr). Default:
    /// `false`, since the layer reports every panic through its metrics and
    /// a `tracing` error event.
    #[must_use]
    pub fn print(mut self, print: bool) -> Self {
        self.common.capture.print = print;
        self
    }

    /// Make [`build`](Self::build) fail in a build with `panic = "abort"`,
    /// where no panic can be caught. Default: `false` (such a build gets
    /// the layer, which then only logs a warning when it is built).
    #[must_use]
    pub fn require_unwind(mut self, require: bool) -> Self {
        self.common.require_unwind = require;
        self
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the name is not a valid label, or when
    /// [`require_unwind`](Self::require_unwind) is set in a build that
    /// aborts on panic.
    pub fn build(self) -> Result<CatchPanicLayer, ConfigError> {
        Ok(CatchPanicLayer {
            shared: SharedState::new(self.common.build()?),
        })
    }
}

use std::fmt;

use http::Response;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{ConfigError, Metrics, PolicyName};
use tower_layer::Layer;

use super::response::{DefaultResponseForPanic, PanicContext};
use super::service::CatchPanicHttp;
use crate::shared::{Common, Shared};

/// What every service of one HTTP catch-panic layer shares.
pub(crate) struct HttpShared<H> {
    pub(crate) core: Shared,
    pub(crate) hook: H,
    pub(crate) expose_message: bool,
}

impl<H> fmt::Debug for HttpShared<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpShared")
            .field("core", &self.core)
            .field("hook", &std::any::type_name::<H>())
            .field("expose_message", &self.expose_message)
            .finish()
    }
}

/// Applies [`CatchPanicHttp`] to an HTTP service: a panic in the service
/// becomes a `500` response, or a gRPC `INTERNAL` status for gRPC calls.
///
/// The service's error type stays the inner service's, so an axum router
/// (whose error type is `Infallible`) accepts the layer as it is. `M` is
/// [`Counted`] until [`leak`](CatchPanicHttpLayer::leak) makes it
/// [`Leaked`].
pub struct CatchPanicHttpLayer<H: 'static = DefaultResponseForPanic, M: Sharing = Counted> {
    shared: SharedState<HttpShared<H>, M>,
}

impl CatchPanicHttpLayer {
    /// A layer with the defaults: policy name `"default"`, no metrics,
    /// backtraces captured, stderr print suppressed, panic messages kept
    /// out of responses, [`DefaultResponseForPanic`] answers.
    pub fn new() -> Self {
        Self {
            shared: SharedState::new(HttpShared {
                core: Common::default().into_shared(),
                hook: DefaultResponseForPanic,
                expose_message: false,
            }),
        }
    }

    /// A builder to name the layer, attach metrics, choose what is captured
    /// and shape the answer.
    pub fn builder() -> CatchPanicHttpBuilder {
        CatchPanicHttpBuilder::default()
    }

    /// Whether this build can catch panics at all: `false` under
    /// `panic = "abort"`. See the crate documentation.
    pub const fn can_catch() -> bool {
        palisade_core::panic::CAN_CATCH_PANICS
    }
}

impl Default for CatchPanicHttpLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<H, M: Sharing> CatchPanicHttpLayer<H, M> {
    /// The policy name carried by this layer's events.
    pub fn name(&self) -> &PolicyName {
        &self.shared.core.policy
    }

    /// Keeps this layer's settings until the process exits, so that its
    /// services and calls reach them without counting references: for a
    /// layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_panic::http::CatchPanicHttpLayer;
    ///
    /// let layer = CatchPanicHttpLayer::builder().name("api").build()?.leak();
    /// assert_eq!(layer.name().as_str(), "api");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> CatchPanicHttpLayer<H, Leaked> {
        CatchPanicHttpLayer {
            shared: self.shared.leak(),
        }
    }
}

impl<H, M: Sharing> Leak for CatchPanicHttpLayer<H, M> {
    type Leaked = CatchPanicHttpLayer<H, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<H, M: Sharing> Clone for CatchPanicHttpLayer<H, M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<H, M: Sharing> fmt::Debug for CatchPanicHttpLayer<H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanicHttpLayer")
            .field("shared", &self.shared)
            .finish()
    }
}

impl<S, H, M: Sharing> Layer<S> for CatchPanicHttpLayer<H, M> {
    type Service = CatchPanicHttp<S, H, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // See `CatchPanicLayer::layer`.
        palisade_core::panic::install_hook();
        CatchPanicHttp::from_shared(inner, self.shared.clone())
    }
}

/// Builds a [`CatchPanicHttpLayer`].
///
/// ```
/// use palisade_panic::http::CatchPanicHttpLayer;
///
/// let layer = CatchPanicHttpLayer::builder()
///     .name("api")
///     .expose_message(false)
///     .build()
///     .unwrap();
/// assert_eq!(layer.name().as_str(), "api");
/// ```
#[derive(Clone)]
pub struct CatchPanicHttpBuilder<H = DefaultResponseForPanic> {
    common: Common,
    hook: H,
    expose_message: bool,
}

impl Default for CatchPanicHttpBuilder {
    fn default() -> Self {
        Self {
            common: Common::default(),
            hook: DefaultResponseForPanic,
            expose_message: false,
        }
    }
}

impl<H> fmt::Debug for CatchPanicHttpBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanicHttpBuilder")
            .field("common", &self.common)
            .field("hook", &std::any::type_name::<H>())
            .field("expose_message", &self.expose_message)
            .finish()
    }
}

impl<H> CatchPanicHttpBuilder<H> {
    /// The policy name carried by events and log lines. Default:
    /// `"default"`. 1 to 64 characters, no control characters.
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

    /// Capture a backtrace at the panic site. Default: `true`.
    #[must_use]
    pub fn backtrace(mut self, capture: bool) -> Self {
        self.common.capture.backtrace = capture;
        self
    }

    /// Still run the panic hook installed before palisade's (by default the
    /// standard library's stderr print). Default: `false`.
    #[must_use]
    pub fn print(mut self, print: bool) -> Self {
        self.common.capture.print = print;
        self
    }

    /// Make [`build`](Self::build) fail in a build with `panic = "abort"`.
    /// Default: `false`.
    #[must_use]
    pub fn require_unwind(mut self, require: bool) -> Self {
        self.common.require_unwind = require;
        self
    }

    /// Show the panic message to clients: in the body of the `500`, and as
    /// the `grpc-message` of a gRPC answer. Default: `false`, because a
    /// panic message can reveal internals; turn it on for development only.
    #[must_use]
    pub fn expose_message(mut self, expose: bool) -> Self {
        self.expose_message = expose;
        self
    }

    /// Answers panics with a closure instead of [`DefaultResponseForPanic`].
    #[must_use]
    pub fn response_for_panic<F, B>(self, hook: F) -> CatchPanicHttpBuilder<F>
    where
        F: Fn(&PanicContext<'_>) -> Response<B>,
    {
        self.response_hook(hook)
    }

    /// Answers panics with any [`ResponseForPanic`](super::ResponseForPanic) implementation.
    #[must_use]
    pub fn response_hook<H2>(self, hook: H2) -> CatchPanicHttpBuilder<H2> {
        CatchPanicHttpBuilder {
            common: self.common,
            hook,
            expose_message: self.expose_message,
        }
    }

    /// Builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the name is not a valid label, or when
    /// [`require_unwind`](Self::require_unwind) is set in a build that
    /// aborts on panic.
    pub fn build(self) -> Result<CatchPanicHttpLayer<H>, ConfigError> {
        Ok(CatchPanicHttpLayer {
            shared: SharedState::new(HttpShared {
                core: self.common.build()?,
                hook: self.hook,
                expose_message: self.expose_message,
            }),
        })
    }
}

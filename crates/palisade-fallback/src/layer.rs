use std::error::Error;
use std::fmt;

use palisade_core::config::Validate;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{ConfigError, LayerKind, Metrics, PolicyName};
use tower_layer::Layer;

use crate::predicate::{AnyError, ErrorIf, ErrorIs, Or, Rejections, ResponseIf};
use crate::service::Fallback;

/// What every service of one [`FallbackLayer`] shares.
pub(crate) struct Shared<P, F> {
    pub(crate) name: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) predicate: P,
    pub(crate) source: F,
}

/// Applies [`Fallback`] to a service.
///
/// `P` decides what the fallback answers for (see
/// [`predicate`](crate::predicate)); `F` is where the answer comes from (see
/// [`source`](crate::source)). Both are created once, when the layer is
/// built, and shared by every service the layer wraps. `M` is [`Counted`]
/// until [`leak`](FallbackLayer::leak) makes it [`Leaked`].
pub struct FallbackLayer<P: 'static, F: 'static, M: Sharing = Counted> {
    shared: SharedState<Shared<P, F>, M>,
}

impl<F> FallbackLayer<AnyError, F> {
    /// A builder answering from `source` for any error, named `"default"`,
    /// reporting nowhere.
    pub fn builder(source: F) -> FallbackBuilder<AnyError, F> {
        FallbackBuilder {
            name: PolicyName::default(),
            metrics: Metrics::noop(),
            predicate: AnyError,
            source,
        }
    }
}

impl<P, F, M: Sharing> FallbackLayer<P, F, M> {
    /// The policy name.
    pub fn name(&self) -> &PolicyName {
        &self.shared.name
    }

    /// Keeps this layer's predicate and source until the process exits, so
    /// that its services and calls reach them without counting references:
    /// for a layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_fallback::FallbackLayer;
    /// use palisade_fallback::source;
    ///
    /// let layer = FallbackLayer::builder(source::value("cached"))
    ///     .name("profile")
    ///     .build()?
    ///     .leak();
    /// assert_eq!(layer.name().as_str(), "profile");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> FallbackLayer<P, F, Leaked> {
        FallbackLayer {
            shared: self.shared.leak(),
        }
    }
}

impl<P, F, M: Sharing> Leak for FallbackLayer<P, F, M> {
    type Leaked = FallbackLayer<P, F, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<P, F, M: Sharing> Clone for FallbackLayer<P, F, M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<P, F, M: Sharing> fmt::Debug for FallbackLayer<P, F, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackLayer")
            .field("name", &self.shared.name)
            .field("metrics", &self.shared.metrics)
            .field("predicate", &std::any::type_name::<P>())
            .field("source", &std::any::type_name::<F>())
            .finish()
    }
}

impl<S, P, F, M: Sharing> Layer<S> for FallbackLayer<P, F, M> {
    type Service = Fallback<S, P, F, M>;

    fn layer(&self, inner: S) -> Self::Service {
        // Built during an unwind, the layer could not install the hook
        // that records where a panic of the degraded path happened: the
        // first service made outside one does.
        palisade_core::panic::install_hook();
        Fallback::new(inner, self.shared.clone())
    }
}

/// Builds a [`FallbackLayer`].
///
/// The `on_*` methods and [`when`](Self::when) replace the predicate;
/// [`or_when`](Self::or_when) widens it.
pub struct FallbackBuilder<P, F> {
    name: PolicyName,
    metrics: Metrics,
    predicate: P,
    source: F,
}

impl<P, F> FallbackBuilder<P, F> {
    /// The policy name carried by every event. Default `"default"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where events go. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// Answers for what `predicate` claims (any
    /// [`Predicate`](crate::predicate::Predicate)).
    pub fn when<P2>(self, predicate: P2) -> FallbackBuilder<P2, F> {
        FallbackBuilder {
            name: self.name,
            metrics: self.metrics,
            predicate,
            source: self.source,
        }
    }

    /// Also answers for what `predicate` claims.
    pub fn or_when<P2>(self, predicate: P2) -> FallbackBuilder<Or<P, P2>, F> {
        FallbackBuilder {
            name: self.name,
            metrics: self.metrics,
            predicate: Or::new(self.predicate, predicate),
            source: self.source,
        }
    }

    /// Answers for any error (the default).
    pub fn on_any_error(self) -> FallbackBuilder<AnyError, F> {
        self.when(AnyError)
    }

    /// Answers for palisade rejections only; other errors pass through.
    pub fn on_rejections(self) -> FallbackBuilder<Rejections, F> {
        self.when(Rejections)
    }

    /// Answers for errors of type `E` anywhere in the `source()` chain.
    pub fn on_error<E: Error + 'static>(self) -> FallbackBuilder<ErrorIs<E>, F> {
        self.when(ErrorIs::new())
    }

    /// Answers for the errors `f` accepts.
    pub fn on_error_if<G>(self, f: G) -> FallbackBuilder<ErrorIf<G>, F>
    where
        G: Fn(&(dyn Error + 'static)) -> bool,
    {
        self.when(ErrorIf::new(f))
    }

    /// Answers instead of the responses `f` accepts; errors pass through
    /// unless [`or_when`](Self::or_when) adds an error predicate.
    pub fn on_response_if<G>(self, f: G) -> FallbackBuilder<ResponseIf<G>, F> {
        self.when(ResponseIf::new(f))
    }

    /// Checks the configuration and builds the layer.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the name is not a valid metric label (1 to
    /// 64 characters, no control character).
    pub fn build(self) -> Result<FallbackLayer<P, F>, ConfigError>
    where
        P: 'static,
        F: 'static,
    {
        Validate::new(LayerKind::Fallback, &self.name).label("name", self.name.as_str())?;
        // The location and stack of a panic of the degraded path.
        palisade_core::panic::install_hook();
        Ok(FallbackLayer {
            shared: SharedState::new(Shared {
                name: self.name,
                metrics: self.metrics,
                predicate: self.predicate,
                source: self.source,
            }),
        })
    }
}

impl<P, F> fmt::Debug for FallbackBuilder<P, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("name", &self.name)
            .field("metrics", &self.metrics)
            .field("predicate", &std::any::type_name::<P>())
            .field("source", &std::any::type_name::<F>())
            .finish()
    }
}

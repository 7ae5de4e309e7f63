use std::fmt;

use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use tower_layer::Layer;

use crate::breaker::Breaker;
use crate::builder::{CircuitBreakerBuilder, DefaultClassifier};
use crate::handle::CircuitBreakerHandle;
use crate::service::CircuitBreaker;

/// Applies a circuit breaker to a service.
///
/// The breaker's state is created by [`CircuitBreakerBuilder::build`]:
/// cloning the layer, or applying it to several services (several axum
/// routes, several clients), shares that one breaker. Build one layer per
/// dependency you want judged separately, or use a
/// [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier, M: Sharing = Counted> {
    breaker: SharedState<Breaker, M>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A builder with production defaults (see [`CircuitBreakerBuilder`]).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(breaker: SharedState<Breaker>, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }
}

impl<C, M: Sharing> CircuitBreakerLayer<C, M> {
    /// A handle to control and inspect this layer's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.to_any())
    }

    /// Keeps this layer's breaker until the process exits, so that its
    /// services and calls reach it without counting references: for a
    /// layer built once that serves until the end. Handles keep working.
    /// See [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    ///
    /// let layer = CircuitBreakerLayer::builder().name("payments").build()?.leak();
    /// assert_eq!(layer.handle().policy().as_str(), "payments");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> CircuitBreakerLayer<C, Leaked> {
        CircuitBreakerLayer {
            breaker: self.breaker.leak(),
            classifier: self.classifier,
        }
    }
}

impl<C, M: Sharing> Leak for CircuitBreakerLayer<C, M> {
    type Leaked = CircuitBreakerLayer<C, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<S, C: Clone, M: Sharing> Layer<S> for CircuitBreakerLayer<C, M> {
    type Service = CircuitBreaker<S, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}

impl<C, M: Sharing> fmt::Debug for CircuitBreakerLayer<C, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("policy", &self.breaker.cfg.policy)
            .field("state", &self.breaker.word().reported())
            .finish_non_exhaustive()
    }
}

use std::fmt;

use tower_layer::Layer;

use crate::breaker::Breaker;
use crate::builder::{CircuitBreakerBuilder, DefaultClassifier};
use crate::handle::CircuitBreakerHandle;
use crate::service::CircuitBreaker;
use crate::sync::Arc;

/// Applies a circuit breaker to a service.
///
/// The breaker's state is created by [`CircuitBreakerBuilder::build`]:
/// cloning the layer, or applying it to several services (several axum
/// routes, several clients), shares that one breaker. Build one layer per
/// dependency you want judged separately, or use a
/// [`KeyedCircuitBreakerLayer`](crate::KeyedCircuitBreakerLayer).
#[derive(Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: Arc<Breaker>,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// A builder with production defaults (see [`CircuitBreakerBuilder`]).
    pub fn builder() -> CircuitBreakerBuilder {
        CircuitBreakerBuilder::default()
    }
}

impl<C> CircuitBreakerLayer<C> {
    pub(crate) fn from_parts(breaker: Arc<Breaker>, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }

    /// A handle to control and inspect this layer's breaker.
    pub fn handle(&self) -> CircuitBreakerHandle {
        CircuitBreakerHandle::new(self.breaker.clone())
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreaker<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}

impl<C> fmt::Debug for CircuitBreakerLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreakerLayer")
            .field("policy", &self.breaker.cfg.policy)
            .field("state", &self.breaker.word().reported())
            .finish_non_exhaustive()
    }
}

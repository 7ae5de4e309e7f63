//! [`Part`] for every palisade layer builder: the stack finishes each
//! builder with its shared name, and with its metrics sink and clock when
//! it was given them (a builder's own are kept otherwise).

/// Builds `$builder` with the stack's name, its sink if it has one and,
/// for layers that read a clock, its clock if it has one.
#[allow(unused_macros)]
macro_rules! finish {
    ($builder:expr, $shared:expr) => {{
        let mut builder = $builder.name($shared.name().clone());
        if let Some(metrics) = $shared.metrics() {
            builder = builder.metrics(metrics.clone());
        }
        builder
    }};
    ($builder:expr, $shared:expr, clock) => {{
        let mut builder = finish!($builder, $shared);
        if let Some(clock) = $shared.clock() {
            builder = builder.clock(clock.clone());
        }
        builder
    }};
}

#[allow(unused_imports)]
use palisade_core::ConfigError;

#[allow(unused_imports)]
use crate::stack::{Part, Shared};

#[cfg(feature = "fallback")]
impl<P: 'static, F: 'static> Part for palisade_fallback::FallbackBuilder<P, F> {
    type Layer = palisade_fallback::FallbackLayer<P, F>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared).build()
    }
}

#[cfg(feature = "ratelimit")]
impl<K> Part for palisade_ratelimit::RateLimitBuilder<K, palisade_ratelimit::headers::NoHeaders>
where
    K: palisade_ratelimit::key::KeyExtractor,
{
    type Layer = palisade_ratelimit::RateLimitLayer<K, palisade_ratelimit::headers::NoHeaders>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared, clock).build()
    }
}

#[cfg(feature = "ratelimit")]
impl<K> Part for palisade_ratelimit::RateLimitBuilder<K, palisade_ratelimit::RateLimitHeaders>
where
    K: palisade_ratelimit::key::KeyExtractor,
{
    type Layer = palisade_ratelimit::RateLimitLayer<K, palisade_ratelimit::RateLimitHeaders>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared, clock).build()
    }
}

#[cfg(feature = "breaker")]
impl<C> Part for palisade_breaker::CircuitBreakerBuilder<C> {
    type Layer = palisade_breaker::CircuitBreakerLayer<C>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared, clock).build()
    }
}

#[cfg(feature = "timeout")]
impl<O> Part for palisade_timeout::TimeoutLayerBuilder<O> {
    type Layer = palisade_timeout::TimeoutLayer<O>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared).build()
    }
}

#[cfg(feature = "bulkhead")]
impl<C> Part for palisade_bulkhead::BulkheadLayerBuilder<C> {
    type Layer = palisade_bulkhead::BulkheadLayer<C>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared, clock).build()
    }
}

#[cfg(feature = "panic")]
impl Part for palisade_panic::CatchPanicBuilder {
    type Layer = palisade_panic::CatchPanicLayer;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared).build()
    }
}

#[cfg(feature = "panic")]
impl<H: 'static> Part for palisade_panic::http::CatchPanicHttpBuilder<H> {
    type Layer = palisade_panic::http::CatchPanicHttpLayer<H>;

    fn build_part(self, shared: &Shared) -> Result<Self::Layer, ConfigError> {
        finish!(self, shared).build()
    }
}

#[cfg(feature = "http")]
impl<H> Part for palisade_http::ErrorToResponseLayer<H> {
    type Layer = Self;

    fn build_part(self, _shared: &Shared) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

#[cfg(feature = "tonic")]
impl Part for palisade_http::grpc::ErrorToStatusLayer {
    type Layer = Self;

    fn build_part(self, _shared: &Shared) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

#[cfg(feature = "tonic")]
impl Part for palisade_http::grpc::ClientErrorToStatusLayer {
    type Layer = Self;

    fn build_part(self, _shared: &Shared) -> Result<Self, ConfigError> {
        Ok(self)
    }
}

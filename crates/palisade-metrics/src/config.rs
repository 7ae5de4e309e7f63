//! Checks shared by the sinks' builders.

use palisade_core::config::Validate;
use palisade_core::{ConfigError, LayerKind, PolicyName};

/// Most names (policies, task groups, offload queues) a sink tracks unless
/// told otherwise.
pub(crate) const DEFAULT_MAX_NAMES: usize = 1024;
/// The largest `max_names` a builder accepts.
pub(crate) const MAX_MAX_NAMES: usize = 1 << 20;
/// The most histogram buckets a builder accepts.
#[cfg(feature = "prometheus")]
pub(crate) const MAX_BUCKETS: usize = 64;

/// Validation for the builder of the sink called `sink`: errors name the
/// sink in place of a policy.
pub(crate) fn checker(sink: &'static str) -> (LayerKind, PolicyName) {
    (LayerKind::Metrics, PolicyName::from_static(sink))
}

pub(crate) fn max_names(check: &Validate<'_>, value: usize) -> Result<usize, ConfigError> {
    check.in_range("max_names", value, 1, MAX_MAX_NAMES)
}

#[cfg(feature = "prometheus")]
pub(crate) fn buckets(check: &Validate<'_>, bounds: &[f64]) -> Result<Box<[f64]>, ConfigError> {
    let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
    let finite = bounds.iter().all(|b| b.is_finite() && *b > 0.0);
    if bounds.len() <= MAX_BUCKETS && increasing && finite {
        Ok(bounds.into())
    } else {
        Err(check.error(
            "duration_buckets",
            bounds,
            format!(
                "at most {MAX_BUCKETS} finite, positive, strictly increasing bounds in seconds"
            ),
        ))
    }
}

//! The typed error every palisade builder returns for an invalid value.
//!
//! `build()` never panics on configuration. It returns a [`ConfigError`]
//! naming the component, the policy, the field, the value given and the
//! range allowed:
//!
//! ```text
//! circuit breaker "payments": failure_rate_threshold = 1.5, expected 0.0 < x <= 1.0
//! ```
//!
//! [`Validate`] gives builders the common checks so that every message has
//! the same shape.
//!
//! # Example
//!
//! ```
//! use palisade_core::config::Validate;
//! use palisade_core::{LayerKind, PolicyName};
//!
//! let policy = PolicyName::new("payments");
//! let check = Validate::new(LayerKind::CircuitBreaker, &policy);
//! let err = check.fraction("failure_rate_threshold", 1.5).unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     r#"circuit breaker "payments": failure_rate_threshold = 1.5, expected 0.0 < x <= 1.0"#
//! );
//! assert_eq!(err.field(), "failure_rate_threshold");
//! ```

use std::borrow::Cow;
use std::error::Error;
use std::fmt;
use std::time::Duration;

use crate::metrics::LayerKind;
use crate::policy::PolicyName;

/// An invalid configuration value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    layer: LayerKind,
    policy: PolicyName,
    field: &'static str,
    value: String,
    expected: Cow<'static, str>,
}

impl ConfigError {
    /// An error for `field` of the `layer` named `policy`: `value` (shown
    /// with its `Debug` form) is outside `expected`.
    pub fn new(
        layer: LayerKind,
        policy: &PolicyName,
        field: &'static str,
        value: impl fmt::Debug,
        expected: impl Into<Cow<'static, str>>,
    ) -> Self {
        Self {
            layer,
            policy: policy.clone(),
            field,
            value: format!("{value:?}"),
            expected: expected.into(),
        }
    }

    /// The component whose builder refused the value.
    pub fn layer(&self) -> LayerKind {
        self.layer
    }

    /// The policy being built.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }

    /// The field, as named by the builder method that sets it.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// The value given, as text.
    pub fn value(&self) -> &str {
        &self.value
    }

    /// The allowed range, as text (for example `0.0 < x <= 1.0`).
    pub fn expected(&self) -> &str {
        &self.expected
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?}: {} = {}, expected {}",
            self.layer,
            self.policy.as_str(),
            self.field,
            self.value,
            self.expected
        )
    }
}

impl Error for ConfigError {}

/// Common checks for builders, each returning the value or a
/// [`ConfigError`] with a uniform message.
#[derive(Clone, Copy, Debug)]
pub struct Validate<'a> {
    layer: LayerKind,
    policy: &'a PolicyName,
}

impl<'a> Validate<'a> {
    /// Checks for the builder of `layer` named `policy`.
    pub fn new(layer: LayerKind, policy: &'a PolicyName) -> Self {
        Self { layer, policy }
    }

    /// An error for `field` with a custom expectation.
    pub fn error(
        &self,
        field: &'static str,
        value: impl fmt::Debug,
        expected: impl Into<Cow<'static, str>>,
    ) -> ConfigError {
        ConfigError::new(self.layer, self.policy, field, value, expected)
    }

    /// `value >= min`.
    pub fn at_least<T: PartialOrd + fmt::Debug>(
        &self,
        field: &'static str,
        value: T,
        min: T,
    ) -> Result<T, ConfigError> {
        if value >= min {
            Ok(value)
        } else {
            Err(self.error(field, &value, format!("x >= {min:?}")))
        }
    }

    /// `min <= value <= max`.
    pub fn in_range<T: PartialOrd + fmt::Debug>(
        &self,
        field: &'static str,
        value: T,
        min: T,
        max: T,
    ) -> Result<T, ConfigError> {
        if value >= min && value <= max {
            Ok(value)
        } else {
            Err(self.error(field, &value, format!("{min:?} <= x <= {max:?}")))
        }
    }

    /// A rate or threshold: `0.0 < value <= 1.0` (NaN is refused).
    pub fn fraction(&self, field: &'static str, value: f64) -> Result<f64, ConfigError> {
        if value > 0.0 && value <= 1.0 {
            Ok(value)
        } else {
            Err(self.error(field, value, "0.0 < x <= 1.0"))
        }
    }

    /// A duration that must not be zero.
    pub fn positive_duration(
        &self,
        field: &'static str,
        value: Duration,
    ) -> Result<Duration, ConfigError> {
        if value > Duration::ZERO {
            Ok(value)
        } else {
            Err(self.error(field, value, "x > 0s"))
        }
    }

    /// A name that will become a metric label: 1 to 64 characters, none of
    /// them a control character.
    pub fn label(&self, field: &'static str, value: &str) -> Result<(), ConfigError> {
        if !value.is_empty() && value.chars().count() <= 64 && !value.chars().any(char::is_control)
        {
            Ok(())
        } else {
            Err(self.error(
                field,
                value,
                "1 to 64 characters without control characters",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(policy: &PolicyName) -> Validate<'_> {
        Validate::new(LayerKind::CircuitBreaker, policy)
    }

    #[test]
    fn message_names_layer_policy_field_value_and_range() {
        let p = PolicyName::new("payments");
        let err = check(&p)
            .fraction("failure_rate_threshold", 1.5)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"circuit breaker "payments": failure_rate_threshold = 1.5, expected 0.0 < x <= 1.0"#
        );
        assert_eq!(err.layer(), LayerKind::CircuitBreaker);
        assert_eq!(err.policy(), "payments");
        assert_eq!(err.value(), "1.5");
        assert_eq!(err.expected(), "0.0 < x <= 1.0");
    }

    #[test]
    fn fraction_bounds_and_nan() {
        let p = PolicyName::default();
        let c = check(&p);
        assert!(c.fraction("f", 0.0).is_err());
        assert!(c.fraction("f", f64::NAN).is_err());
        assert!(c.fraction("f", -0.1).is_err());
        assert_eq!(c.fraction("f", 1.0), Ok(1.0));
        assert_eq!(c.fraction("f", 0.5), Ok(0.5));
        let err = c.fraction("f", f64::NAN).unwrap_err();
        assert_eq!(err.value(), "NaN");
    }

    #[test]
    fn integer_and_duration_checks() {
        let p = PolicyName::new("api");
        let bulkhead = Validate::new(LayerKind::Bulkhead, &p);
        let err = bulkhead.at_least("max_concurrent", 0_usize, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"bulkhead "api": max_concurrent = 0, expected x >= 1"#
        );
        let err = bulkhead.in_range("queue", 5000_usize, 0, 4096).unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"bulkhead "api": queue = 5000, expected 0 <= x <= 4096"#
        );
        let timeout = Validate::new(LayerKind::Timeout, &p);
        let err = timeout
            .positive_duration("timeout", Duration::ZERO)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"timeout "api": timeout = 0ns, expected x > 0s"#
        );
        assert_eq!(
            timeout.positive_duration("timeout", Duration::from_millis(5)),
            Ok(Duration::from_millis(5))
        );
    }

    #[test]
    fn labels_are_bounded() {
        let p = PolicyName::new("api");
        let c = Validate::new(LayerKind::Task, &p);
        assert!(c.label("name", "").is_err());
        assert!(c.label("name", "a\nb").is_err());
        assert!(c.label("name", &"x".repeat(65)).is_err());
        assert!(c.label("name", "worker-1").is_ok());
        let err = c.label("name", "").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"task group "api": name = "", expected 1 to 64 characters without control characters"#
        );
    }
}

//! The error a chaos layer injects.

use std::error::Error;
use std::fmt;

use palisade_core::PolicyName;

pub use palisade_core::BoxError;

/// An error injected by a chaos layer in place of calling the service.
///
/// It is deliberately not a palisade rejection: to every layer above, it is
/// an ordinary failure of the dependency.
#[derive(Clone, Debug)]
pub struct InjectedFault {
    policy: PolicyName,
}

impl InjectedFault {
    pub(crate) fn new(policy: PolicyName) -> Self {
        Self { policy }
    }

    /// The chaos layer's policy name.
    pub fn policy(&self) -> &PolicyName {
        &self.policy
    }
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "chaos {:?}: injected error", self.policy.as_str())
    }
}

impl Error for InjectedFault {}

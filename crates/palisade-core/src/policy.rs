use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

/// The name of one policy: a layer instance, or a stack of layers sharing it.
///
/// The name appears in every event the layer emits and in every rejection
/// it returns, so an operator can tell which policy said no. It is cheap to
/// clone (an `Arc<str>`), and an event borrows it as `&str`, so reporting
/// never allocates.
///
/// Keep names few and stable: they become metric labels. Never derive a
/// policy name from a request, a key or a client.
///
/// # Example
///
/// ```
/// use palisade_core::PolicyName;
///
/// let name = PolicyName::new("payments");
/// assert_eq!(name.as_str(), "payments");
/// assert_eq!(name.to_string(), "payments");
/// assert_eq!(PolicyName::default().as_str(), "default");
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyName(Arc<str>);

impl PolicyName {
    /// Creates a policy name.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        Self(name.into())
    }

    /// The name as a string slice, the form events carry.
    #[inline]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PolicyName {
    /// The name `"default"`.
    fn default() -> Self {
        Self::new("default")
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for PolicyName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for PolicyName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl From<&str> for PolicyName {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for PolicyName {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<Arc<str>> for PolicyName {
    fn from(name: Arc<str>) -> Self {
        Self(name)
    }
}

impl PartialEq<str> for PolicyName {
    fn eq(&self, other: &str) -> bool {
        &*self.0 == other
    }
}

impl PartialEq<&str> for PolicyName {
    fn eq(&self, other: &&str) -> bool {
        &*self.0 == *other
    }
}

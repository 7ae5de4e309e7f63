use std::borrow::Borrow;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// The name of one policy: a layer instance, or a stack of layers sharing it.
///
/// The name appears in every event the layer emits and in every rejection
/// it returns, so an operator can tell which policy said no. An event
/// borrows it as `&str`, so reporting never allocates.
///
/// Keep names few and stable: they become metric labels. Never derive a
/// policy name from a request, a key or a client.
///
/// Names are interned: each distinct name is stored once, for the life of
/// the process, and a `PolicyName` is a reference to it. Cloning one,
/// which every rejection does to name its policy, copies two words and
/// writes nothing shared.
///
/// # Example
///
/// ```
/// use palisade_core::PolicyName;
///
/// let name = PolicyName::new("payments");
/// assert_eq!(name.as_str(), "payments");
/// assert_eq!(name.to_string(), "payments");
/// assert_eq!(name, PolicyName::new(String::from("payments")));
/// assert_eq!(PolicyName::default().as_str(), "default");
/// ```
// Compared, ordered and hashed as the string it holds (as `&str` is).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyName(&'static str);

/// Every distinct name made so far.
static NAMES: Mutex<Option<HashSet<&'static str>>> = Mutex::new(None);

impl PolicyName {
    /// Creates a policy name: the interned copy of `name`, stored the
    /// first time it is seen and never freed.
    pub fn new(name: impl AsRef<str>) -> Self {
        Self::intern(name.as_ref())
    }

    /// A policy name from a string the program holds for good, stored as
    /// it is.
    ///
    /// ```
    /// use palisade_core::PolicyName;
    ///
    /// const PAYMENTS: PolicyName = PolicyName::from_static("payments");
    /// assert_eq!(PAYMENTS, PolicyName::new("payments"));
    /// ```
    pub const fn from_static(name: &'static str) -> Self {
        Self(name)
    }

    fn intern(name: &str) -> Self {
        // A panic elsewhere while the set was locked left it whole: every
        // insertion is one call that either happened or did not.
        let mut names = NAMES.lock().unwrap_or_else(PoisonError::into_inner);
        let names = names.get_or_insert_with(HashSet::new);
        if let Some(&interned) = names.get(name) {
            return Self(interned);
        }
        let interned: &'static str = Box::leak(Box::from(name));
        names.insert(interned);
        Self(interned)
    }

    /// The name as a string slice, the form events carry.
    #[inline]
    pub fn as_str(&self) -> &str {
        self.0
    }
}

impl Default for PolicyName {
    /// The name `"default"`.
    fn default() -> Self {
        Self::from_static("default")
    }
}

impl fmt::Debug for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl AsRef<str> for PolicyName {
    fn as_ref(&self) -> &str {
        self.0
    }
}

impl Borrow<str> for PolicyName {
    fn borrow(&self) -> &str {
        self.0
    }
}

impl From<&str> for PolicyName {
    fn from(name: &str) -> Self {
        Self::intern(name)
    }
}

impl From<String> for PolicyName {
    fn from(name: String) -> Self {
        Self::intern(&name)
    }
}

impl From<Arc<str>> for PolicyName {
    fn from(name: Arc<str>) -> Self {
        Self::intern(&name)
    }
}

impl PartialEq<str> for PolicyName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for PolicyName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use super::PolicyName;

    #[test]
    fn equal_names_share_one_copy_whatever_they_were_made_from() {
        let owned = String::from("interned-payments");
        let names = [
            PolicyName::new("interned-payments"),
            PolicyName::new(owned.clone()),
            PolicyName::from(owned.as_str()),
            PolicyName::from(owned),
            PolicyName::from(Arc::<str>::from("interned-payments")),
        ];
        for name in &names {
            assert_eq!(name, &names[0]);
            assert_eq!(name.as_str(), "interned-payments");
            assert!(std::ptr::eq(name.as_str(), names[0].as_str()));
        }
        let other = PolicyName::new("interned-search");
        assert_ne!(other, names[0]);
        assert_eq!(
            other.cmp(&names[1]),
            "interned-search".cmp("interned-payments")
        );
    }

    #[test]
    fn a_static_name_equals_and_hashes_as_an_interned_one() {
        const STATIC: PolicyName = PolicyName::from_static("static-orders");
        let interned = PolicyName::new(String::from("static-orders"));
        assert_eq!(STATIC, interned);
        assert_eq!(STATIC.cmp(&interned), std::cmp::Ordering::Equal);
        let mut counts = HashMap::new();
        *counts.entry(STATIC).or_insert(0) += 1;
        *counts.entry(interned).or_insert(0) += 1;
        // `Borrow<str>` lookups find the entry: the hash is the string's.
        assert_eq!(counts.get("static-orders"), Some(&2));
        assert_eq!(PolicyName::default(), "default");
        assert_eq!(
            format!("{STATIC} {STATIC:?}"),
            "static-orders \"static-orders\""
        );
    }

    #[test]
    fn threads_interning_the_same_names_agree() {
        let names: Vec<String> = (0..64).map(|n| format!("threaded-{n}")).collect();
        let per_thread: Vec<Vec<usize>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        names
                            .iter()
                            .map(|name| PolicyName::new(name.as_str()).as_str().as_ptr() as usize)
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| handle.join().expect("no panic"))
                .collect()
        });
        for addresses in &per_thread[1..] {
            assert_eq!(addresses, &per_thread[0]);
        }
    }
}

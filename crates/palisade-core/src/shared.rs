//! How a layer's services and calls reach the state they share with the
//! layer: by a counted reference ([`Counted`], the default) or by a
//! reference that lives until the process exits ([`Leaked`]).
//!
//! Each layer a `Stack` is made of keeps its configuration, its metrics
//! handle and, for the limiting layers, its counters in one
//! [`SharedState`]. Each service the layer builds holds a handle to it, and
//! so do the calls in flight that need it, so that a call can report after
//! its service is gone.
//!
//! With [`Counted`] handles, as with an `Arc`, the state is freed when the
//! last layer, service and call are gone. Counting has a cost that shows on
//! a multi-core server: every call takes and drops a reference, and so does
//! every clone of a service (axum clones the whole service for every
//! request). Each of these is a locked write to one counter that all worker
//! threads share, so that counter's cache line moves from core to core with
//! the requests.
//!
//! A layer's `leak()` turns it into one with [`Leaked`] handles: the state
//! then lives until the process exits, and clones and calls copy a plain
//! reference and write nothing. Leak the layers that are built once at
//! start-up and serve until the end, which is what a server's middleware
//! usually is. Do not leak layers built over and over (one per tenant, per
//! test or per connection): each leak keeps its state for good.
//!
//! # Example
//!
//! ```
//! use palisade_core::shared::{AnyState, Leaked, SharedState};
//!
//! let counted: SharedState<String> = SharedState::new(String::from("payments"));
//! let leaked: SharedState<String, Leaked> = counted.clone().leak();
//!
//! // The same state, reached without counting references.
//! assert!(std::ptr::eq(&*counted, &*leaked));
//! assert_eq!(leaked.clone().as_str(), "payments");
//! // A handle of either kind, for what is not on a request's path.
//! let any: AnyState<String> = leaked.to_any();
//! assert!(std::ptr::eq(&*any, &*counted));
//! ```

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Counted {}
    impl Sealed for super::Leaked {}
}

/// How handles reach a layer's [`SharedState`]: [`Counted`] or
/// [`Leaked`]. Sealed: these are the only two.
pub trait Sharing:
    sealed::Sealed + Copy + Default + fmt::Debug + Send + Sync + Unpin + 'static
{
    /// The handle itself: one pointer either way.
    type Handle<T: 'static>: Clone;

    /// Whether handles count references.
    const COUNTED: bool;

    /// The state behind `handle`.
    #[doc(hidden)]
    fn get<T: 'static>(handle: &Self::Handle<T>) -> &T;

    /// The handle, leaked if it is not already.
    #[doc(hidden)]
    fn leak<T: 'static>(handle: Self::Handle<T>) -> &'static T;

    /// The handle as one of either kind.
    #[doc(hidden)]
    fn to_any<T: 'static>(handle: &Self::Handle<T>) -> AnyState<T>;
}

/// Handles are counted references (`Arc`s): the state is freed with the
/// last of them. The default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Counted;

/// Handles are plain references to state that lives until the process
/// exits; cloning and dropping them writes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Leaked;

impl Sharing for Counted {
    type Handle<T: 'static> = Arc<T>;

    const COUNTED: bool = true;

    #[inline(always)]
    fn get<T: 'static>(handle: &Self::Handle<T>) -> &T {
        handle
    }

    fn leak<T: 'static>(handle: Self::Handle<T>) -> &'static T {
        let kept: &'static Arc<T> = Box::leak(Box::new(handle));
        kept
    }

    fn to_any<T: 'static>(handle: &Self::Handle<T>) -> AnyState<T> {
        AnyState(AnyRepr::Counted(Arc::clone(handle)))
    }
}

impl Sharing for Leaked {
    type Handle<T: 'static> = &'static T;

    const COUNTED: bool = false;

    #[inline(always)]
    fn get<T: 'static>(handle: &Self::Handle<T>) -> &T {
        handle
    }

    fn leak<T: 'static>(handle: Self::Handle<T>) -> &'static T {
        handle
    }

    fn to_any<T: 'static>(handle: &Self::Handle<T>) -> AnyState<T> {
        AnyState(AnyRepr::Leaked(handle))
    }
}

/// A handle to the state one layer instance shares with its services and
/// calls; see the [module docs](self) for the two kinds of handle.
///
/// It is one pointer wide whatever `M` is.
pub struct SharedState<T: 'static, M: Sharing = Counted> {
    handle: M::Handle<T>,
}

impl<T> SharedState<T> {
    /// Counted state holding `value`.
    pub fn new(value: T) -> Self {
        Self::from(Arc::new(value))
    }
}

impl<T, M: Sharing> SharedState<T, M> {
    /// A handle to the same state that keeps it until the process exits,
    /// so that its clones count no references.
    ///
    /// Each call on a counted handle allocates one pointer and never frees
    /// it or the state (leaking two clones of one counted handle leaks two
    /// pointers to the same state); counted handles made before keep
    /// working and keep counting. A leaked handle is returned as it is.
    pub fn leak(self) -> SharedState<T, Leaked> {
        SharedState {
            handle: M::leak(self.handle),
        }
    }

    /// A handle of either kind to the same state, for what must hold one
    /// whatever the layer's kind (a control handle, say).
    pub fn to_any(&self) -> AnyState<T> {
        M::to_any(&self.handle)
    }

    /// Whether this handle counts references.
    pub fn is_counted(&self) -> bool {
        M::COUNTED
    }
}

impl<T> From<Arc<T>> for SharedState<T> {
    fn from(handle: Arc<T>) -> Self {
        Self { handle }
    }
}

impl<T, M: Sharing> Deref for SharedState<T, M> {
    type Target = T;

    #[inline(always)]
    fn deref(&self) -> &T {
        M::get(&self.handle)
    }
}

impl<T, M: Sharing> Clone for SharedState<T, M> {
    #[inline]
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
        }
    }
}

impl<T: fmt::Debug, M: Sharing> fmt::Debug for SharedState<T, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A handle to shared state that is [`Counted`] or [`Leaked`], decided
/// when it is made rather than by its type. Two pointers wide and a branch
/// on each use: for handles kept off the request path, such as a circuit
/// breaker's control handle.
pub struct AnyState<T: 'static>(AnyRepr<T>);

enum AnyRepr<T: 'static> {
    Counted(Arc<T>),
    Leaked(&'static T),
}

impl<T> Deref for AnyState<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        match &self.0 {
            AnyRepr::Counted(arc) => arc,
            AnyRepr::Leaked(state) => state,
        }
    }
}

impl<T> Clone for AnyState<T> {
    fn clone(&self) -> Self {
        Self(match &self.0 {
            AnyRepr::Counted(arc) => AnyRepr::Counted(Arc::clone(arc)),
            AnyRepr::Leaked(state) => AnyRepr::Leaked(*state),
        })
    }
}

impl<T: fmt::Debug> fmt::Debug for AnyState<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A layer that can be turned into one whose services and calls reach its
/// state through [`Leaked`] handles; see the [module docs](self).
///
/// Every layer a `Stack` can hold implements it (fallback, rate limit,
/// circuit breaker, timeout, bulkhead, both panic-catch flavours, both
/// error-mapping layers), and so does `tower_layer::Identity`; a layer that
/// shares no state returns itself. The keyed circuit breaker does not: its
/// per-key breakers come and go with their keys, so its calls keep counted
/// references. A stack whose error-mapping slot holds a layer of your own
/// can be leaked once that layer implements `Leak`.
pub trait Leak {
    /// The layer with leaked handles.
    type Leaked;

    /// Keeps this layer's state until the process exits, so that clones of
    /// its services and its calls count no references.
    fn leak(self) -> Self::Leaked;
}

/// Adds nothing, so it has nothing to leak.
impl Leak for tower_layer::Identity {
    type Leaked = Self;

    fn leak(self) -> Self {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counted_state_is_freed_with_its_last_handle() {
        let arc = Arc::new(7_u32);
        let state = SharedState::from(arc.clone());
        let clone = state.clone();
        assert!(clone.is_counted());
        assert_eq!(Arc::strong_count(&arc), 3);
        drop((state, clone));
        assert_eq!(Arc::strong_count(&arc), 1);
    }

    #[test]
    fn a_leaked_state_counts_no_references() {
        let arc = Arc::new(7_u32);
        let leaked = SharedState::from(arc.clone()).leak();
        assert!(!leaked.is_counted());
        assert_eq!(Arc::strong_count(&arc), 2);
        let clones: Vec<_> = (0..10).map(|_| leaked.clone()).collect();
        assert_eq!(Arc::strong_count(&arc), 2);
        assert!(clones.iter().all(|c| std::ptr::eq(&**c, &*arc)));
        let any = leaked.to_any();
        assert_eq!(Arc::strong_count(&arc), 2);
        assert_eq!(*any.clone(), 7);
        // Leaking again keeps the same leaked handle.
        let again = leaked.clone().leak();
        assert!(std::ptr::eq(again.handle, leaked.handle));
        let counted_any = SharedState::from(arc.clone()).to_any();
        assert_eq!(Arc::strong_count(&arc), 3);
        drop(counted_any);
        assert_eq!(Arc::strong_count(&arc), 2);
    }

    #[test]
    fn handles_are_one_pointer_wide() {
        assert_eq!(size_of::<SharedState<[u8; 64]>>(), size_of::<usize>());
        assert_eq!(
            size_of::<SharedState<[u8; 64], Leaked>>(),
            size_of::<usize>()
        );
    }
}

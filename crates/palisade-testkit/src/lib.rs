//! Test helpers shared by palisade's crates' tests. Not published: the
//! crates take it as a path dev-dependency, which packaging leaves out.
//!
//! [`CaptureSubscriber`] keeps every `tracing` event with its level and
//! fields as text, for tests that check what a layer logs:
//!
//! ```
//! use palisade_testkit::CaptureSubscriber;
//!
//! let capture = CaptureSubscriber::default();
//! tracing::subscriber::with_default(capture.clone(), || {
//!     tracing::warn!(policy = "api", "something to see");
//! });
//! let logged = capture.events();
//! assert_eq!(logged[0].level, tracing::Level::WARN);
//! assert_eq!(logged[0].fields["policy"], "api");
//! ```
//!
//! Run such tests in a test binary of their own: `tracing` caches
//! process-wide whether an event site is wanted, and a test logging with
//! no subscriber at the same moment could hide an event from the one
//! capturing it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

/// One event seen by [`CaptureSubscriber`]: its level and its fields.
#[derive(Clone, Debug)]
pub struct Logged {
    /// The event's level.
    pub level: tracing::Level,
    /// Each field's value: strings as they are, anything else as its
    /// `Debug` form.
    pub fields: BTreeMap<String, String>,
}

/// A minimal `tracing` subscriber that keeps every event's fields. Clones
/// share what they keep.
#[derive(Clone, Debug, Default)]
pub struct CaptureSubscriber(pub Arc<Mutex<Vec<Logged>>>);

impl CaptureSubscriber {
    /// The events kept so far, oldest first.
    pub fn events(&self) -> Vec<Logged> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

struct Visitor<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Visitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Implements `tracing::Subscriber` for a type that only looks at events:
/// it wants every event, gives every span the same id, and hands each
/// event to the body, with the subscriber bound to the first name.
///
/// ```
/// use std::sync::atomic::{AtomicUsize, Ordering};
///
/// #[derive(Default)]
/// struct Counts(AtomicUsize);
///
/// palisade_testkit::subscriber_on_event!(Counts, |this, _event| {
///     this.0.fetch_add(1, Ordering::Relaxed);
/// });
///
/// let counts = std::sync::Arc::new(Counts::default());
/// tracing::subscriber::with_default(counts.clone(), || tracing::info!("seen"));
/// assert_eq!(counts.0.load(Ordering::Relaxed), 1);
/// ```
#[macro_export]
macro_rules! subscriber_on_event {
    ($subscriber:ty, |$this:ident, $event:ident| $body:block) => {
        impl ::tracing::Subscriber for $subscriber {
            fn enabled(&self, _: &::tracing::Metadata<'_>) -> bool {
                true
            }

            fn new_span(&self, _: &::tracing::span::Attributes<'_>) -> ::tracing::span::Id {
                ::tracing::span::Id::from_u64(1)
            }

            fn record(&self, _: &::tracing::span::Id, _: &::tracing::span::Record<'_>) {}

            fn record_follows_from(&self, _: &::tracing::span::Id, _: &::tracing::span::Id) {}

            fn event(&self, $event: &::tracing::Event<'_>) {
                let $this = self;
                $body
            }

            fn enter(&self, _: &::tracing::span::Id) {}

            fn exit(&self, _: &::tracing::span::Id) {}
        }
    };
}

subscriber_on_event!(CaptureSubscriber, |this, event| {
    let mut fields = BTreeMap::new();
    event.record(&mut Visitor(&mut fields));
    this.0
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Logged {
            level: *event.metadata().level(),
            fields,
        });
});

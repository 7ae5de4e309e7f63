//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{AttemptFailure, DropReason, Event, Metrics, MetricsSink, TaskEnd};

/// One recorded event, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Started(String),
    Ended(String, TaskEnd),
    Panicked(String, String),
    /// A caught panic: the policy (an offload queue) and the message.
    Caught(String, String),
    Restarted(String, u32, Duration),
    GaveUp(String, u32),
    Dropped(DropReason),
    Delivered(u32),
    AttemptFailed(u32, AttemptFailure),
}

/// A sink that keeps the task and offload events.
#[derive(Debug, Default)]
pub struct Recorder(pub Mutex<Vec<Seen>>);

impl Recorder {
    pub fn events(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|e| f(e)).count()
    }
}

impl MetricsSink for Recorder {
    fn record(&self, event: &Event<'_>) {
        let seen = match *event {
            Event::TaskStarted { task, .. } => Seen::Started(task.to_owned()),
            Event::TaskEnded { task, end, .. } => Seen::Ended(task.to_owned(), end),
            Event::TaskPanicked { task, message, .. } => {
                Seen::Panicked(task.to_owned(), message.to_owned())
            }
            Event::PanicCaught {
                policy, message, ..
            } => Seen::Caught(policy.to_owned(), message.to_owned()),
            Event::TaskRestarted {
                task,
                attempt,
                backoff,
                ..
            } => Seen::Restarted(task.to_owned(), attempt, backoff),
            Event::TaskGaveUp { task, restarts, .. } => Seen::GaveUp(task.to_owned(), restarts),
            Event::OffloadDropped { reason, .. } => Seen::Dropped(reason),
            Event::OffloadDelivered { attempts, .. } => Seen::Delivered(attempts),
            Event::OffloadAttemptFailed { attempt, cause, .. } => {
                Seen::AttemptFailed(attempt, cause)
            }
            _ => return,
        };
        self.0.lock().unwrap().push(seen);
    }
}

/// A sink that records every event, then panics on those `fails` picks
/// (a metrics backend with a bug in it).
pub struct Faulty {
    recorder: Arc<Recorder>,
    fails: fn(&Event<'_>) -> bool,
}

impl Faulty {
    /// Metrics that report to `recorder` through a faulty sink.
    pub fn metrics(recorder: &Arc<Recorder>, fails: fn(&Event<'_>) -> bool) -> Metrics {
        Metrics::from_arc(Arc::new(Self {
            recorder: recorder.clone(),
            fails,
        }))
    }
}

impl MetricsSink for Faulty {
    fn record(&self, event: &Event<'_>) {
        self.recorder.record(event);
        if (self.fails)(event) {
            std::panic::resume_unwind(Box::new("the metrics sink failed"));
        }
    }
}

// Not every test binary that includes this module logs.
#[allow(unused_imports)]
pub use palisade_testkit::{CaptureSubscriber, Logged};

/// A `tracing` subscriber that panics on every event at `WARN` or above:
/// a logging backend with a bug, which counts its panics.
#[derive(Clone, Debug, Default)]
pub struct PanickingSubscriber {
    /// How many times it panicked.
    pub panics: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl PanickingSubscriber {
    /// How many times it panicked so far.
    pub fn panics(&self) -> usize {
        self.panics.load(std::sync::atomic::Ordering::SeqCst)
    }
}

palisade_testkit::subscriber_on_event!(PanickingSubscriber, |this, event| {
    if *event.metadata().level() <= tracing::Level::WARN {
        this.panics
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        panic!("the log backend failed");
    }
});

/// A value whose destructor panics when it is an original, not a clone (a
/// drop check left in a user's type); clones drop quietly.
#[derive(Debug)]
pub struct Booby(pub bool);

impl Clone for Booby {
    fn clone(&self) -> Self {
        Self(false)
    }
}

impl Drop for Booby {
    fn drop(&mut self) {
        if self.0 && !std::thread::panicking() {
            panic!("dropped a booby-trapped value");
        }
    }
}

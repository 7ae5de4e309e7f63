//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Mutex;
use std::time::Duration;

use palisade_core::{DropReason, Event, MetricsSink, TaskEnd};

/// One recorded event, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Started(String),
    Ended(String, TaskEnd),
    Panicked(String, String),
    Restarted(String, u32, Duration),
    Dropped(DropReason),
    Delivered(u32),
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
            Event::TaskRestarted {
                task,
                attempt,
                backoff,
                ..
            } => Seen::Restarted(task.to_owned(), attempt, backoff),
            Event::OffloadDropped { reason, .. } => Seen::Dropped(reason),
            Event::OffloadDelivered { attempts, .. } => Seen::Delivered(attempts),
            _ => return,
        };
        self.0.lock().unwrap().push(seen);
    }
}

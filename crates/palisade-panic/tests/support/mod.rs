//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use palisade_core::{Event, MetricsSink};

/// One recorded `PanicCaught` event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caught {
    pub policy: String,
    pub message: String,
    pub line: Option<u32>,
}

/// A sink that keeps every `PanicCaught` event.
#[derive(Debug, Default)]
pub struct PanicSink(pub Mutex<Vec<Caught>>);

impl PanicSink {
    pub fn events(&self) -> Vec<Caught> {
        self.0.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

impl MetricsSink for PanicSink {
    fn record(&self, event: &Event<'_>) {
        if let Event::PanicCaught {
            policy,
            message,
            location,
        } = event
        {
            self.0.lock().unwrap().push(Caught {
                policy: (*policy).to_owned(),
                message: (*message).to_owned(),
                line: location.map(|l| l.line()),
            });
        }
    }
}

/// A future that is pending until its `panic_at`-th poll, where it panics.
/// Records whether it was dropped.
pub struct PanicOnPoll {
    polls: u32,
    panic_at: u32,
    pub dropped: Arc<AtomicBool>,
}

impl PanicOnPoll {
    pub fn new(panic_at: u32) -> (Self, Arc<AtomicBool>) {
        let dropped = Arc::new(AtomicBool::new(false));
        (
            Self {
                polls: 0,
                panic_at,
                dropped: dropped.clone(),
            },
            dropped,
        )
    }
}

impl Future for PanicOnPoll {
    type Output = Result<u32, std::io::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.polls += 1;
        if self.polls == self.panic_at {
            panic!("panic on poll {}", self.polls);
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for PanicOnPoll {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

/// Polls once with a no-op waker.
pub fn poll_once<F: Future + Unpin>(future: &mut F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    Pin::new(future).poll(&mut cx)
}

// Not every test binary that includes this module logs.
#[allow(unused_imports)]
pub use palisade_testkit::{CaptureSubscriber, Logged};

/// The `Panicked` rejection inside a caught panic's error.
pub fn panicked(err: &palisade_panic::error::BoxError) -> &palisade_panic::error::Panicked {
    err.downcast_ref::<palisade_panic::error::Panicked>()
        .unwrap_or_else(|| panic!("expected Panicked, got {err:?}"))
}

/// A future that is ready after `pending_polls` pending polls, and whose
/// destructor panics (a guard with a bug, a blocking client dropped in an
/// async context).
pub struct PanicOnDrop {
    pub pending_polls: u32,
}

impl Future for PanicOnDrop {
    type Output = Result<u32, std::io::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.pending_polls == 0 {
            return Poll::Ready(Ok(7));
        }
        self.pending_polls -= 1;
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("dropped in the wrong place");
        }
    }
}

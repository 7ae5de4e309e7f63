//! Helpers shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_core::{
    CircuitState, Event, Metrics, MetricsSink, Outcome, RejectReason, TransitionReason,
};

/// An event, owned, for assertions.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    Admitted,
    Rejected(RejectReason),
    Completed(Outcome, Option<Duration>),
    Changed(CircuitState, CircuitState, TransitionReason),
    Shadow(CircuitState, CircuitState, TransitionReason),
    Rates { failure: f64, slow: f64, calls: u64 },
}

/// A sink that keeps every breaker event in order.
#[derive(Clone, Default)]
pub struct Events(Arc<Mutex<Vec<Seen>>>);

impl MetricsSink for Events {
    fn record(&self, event: &Event<'_>) {
        let seen = match *event {
            Event::Admitted { .. } => Seen::Admitted,
            Event::Rejected { reason, .. } => Seen::Rejected(reason),
            Event::Completed {
                outcome, latency, ..
            } => Seen::Completed(outcome, latency),
            Event::StateChanged {
                from, to, reason, ..
            } => Seen::Changed(from, to, reason),
            Event::ShadowStateChanged {
                from, to, reason, ..
            } => Seen::Shadow(from, to, reason),
            Event::BreakerRates {
                failure_rate,
                slow_rate,
                calls,
                ..
            } => Seen::Rates {
                failure: failure_rate,
                slow: slow_rate,
                calls,
            },
            _ => return,
        };
        self.0.lock().unwrap().push(seen);
    }
}

impl Events {
    pub fn metrics(&self) -> Metrics {
        Metrics::new(self.clone())
    }

    pub fn all(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    pub fn transitions(&self) -> Vec<(CircuitState, CircuitState, TransitionReason)> {
        self.all()
            .into_iter()
            .filter_map(|e| match e {
                Seen::Changed(a, b, r) => Some((a, b, r)),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, f: impl Fn(&Seen) -> bool) -> usize {
        self.all().iter().filter(|e| f(e)).count()
    }

    pub fn last_rates(&self) -> Option<(f64, f64, u64)> {
        self.all().into_iter().rev().find_map(|e| match e {
            Seen::Rates {
                failure,
                slow,
                calls,
            } => Some((failure, slow, calls)),
            _ => None,
        })
    }
}

/// Polls a future once with a no-op waker.
pub fn poll_once<F: Future>(future: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(future).poll(&mut cx)
}

/// Polls a future that must be ready at once.
pub fn now<F: Future>(future: F) -> F::Output {
    match poll_once(future) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("future was not ready"),
    }
}

//! A tour of `palisade-core`: a metrics sink, outcome classification and
//! rejection lookup, without any layer.
//!
//! Run with `cargo run --example core_tour`.

#![allow(clippy::print_stdout)]

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::classify::{Classify, GrpcErrorsAsFailures, ServerErrorsAsFailures};
use palisade_core::{
    CircuitOpen, CircuitState, Event, Fanout, LayerKind, Metrics, MetricsSink, Outcome, PolicyName,
    RejectReason, find_rejection,
};

/// Prints every event on one line.
#[derive(Debug)]
struct PrintSink;

impl MetricsSink for PrintSink {
    fn record(&self, event: &Event<'_>) {
        println!("  event {:<32} {event:?}", event.name());
    }
}

/// Counts rejections.
#[derive(Debug, Default)]
struct Rejections(AtomicU64);

impl MetricsSink for Rejections {
    fn record(&self, event: &Event<'_>) {
        if matches!(event, Event::Rejected { .. }) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// An error a client library might wrap a rejection in.
#[derive(Debug)]
struct UpstreamError(CircuitOpen);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("call to upstream failed")
    }
}

impl Error for UpstreamError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.0)
    }
}

fn main() {
    let rejections = Arc::new(Rejections::default());
    let metrics = Metrics::new(Fanout::new().with(PrintSink).with(rejections.clone()));
    let policy = PolicyName::new("checkout");

    println!("events reach every sink of a fan-out:");
    metrics.emit(&Event::Rejected {
        policy: policy.as_str(),
        layer: LayerKind::CircuitBreaker,
        reason: RejectReason::CircuitOpen,
    });
    metrics.emit(&Event::StateChanged {
        policy: policy.as_str(),
        from: CircuitState::Closed,
        to: CircuitState::Open,
        reason: palisade_core::TransitionReason::FailureRate,
    });
    println!(
        "  rejections counted: {}",
        rejections.0.load(Ordering::Relaxed)
    );

    println!("\nHTTP outcomes:");
    for status in [200, 404, 503] {
        let response = http::Response::builder().status(status).body(()).unwrap();
        let _ = ServerErrorsAsFailures.classify(
            Ok::<_, std::convert::Infallible>(response),
            move |outcome: Outcome| println!("  status {status} -> {outcome}"),
        );
    }

    println!("\ngRPC outcomes from headers:");
    for code in ["0", "5", "14"] {
        let response = http::Response::builder()
            .header("grpc-status", code)
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let _ = GrpcErrorsAsFailures::new().classify(
            Ok::<_, std::convert::Infallible>(response),
            move |outcome: Outcome| println!("  grpc-status {code} -> {outcome}"),
        );
    }

    println!("\nrejections are found through wrapping errors:");
    let err = UpstreamError(CircuitOpen::new(
        policy.clone(),
        Some(Duration::from_secs(5)),
        CircuitState::Open,
    ));
    if let Some(rejection) = find_rejection(&err) {
        println!(
            "  {err}: {} by the {} of policy {:?}, retry after {:?}",
            rejection.reason(),
            rejection.layer(),
            rejection.policy().as_str(),
            rejection.retry_after()
        );
    }
}

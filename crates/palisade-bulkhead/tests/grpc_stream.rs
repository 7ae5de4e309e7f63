//! An adaptive limit samples a gRPC call's latency up to its answer, not
//! up to the end of its stream: a long healthy stream is not a slow call
//! that would bring the limit down.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Response};
use http_body_util::{BodyExt, Full};
use palisade_bulkhead::BulkheadLayer;
use palisade_bulkhead::adaptive::AdaptiveLimit;
use palisade_core::classify::GrpcErrorsAsFailures;
use palisade_core::{BoxError, Event, LayerKind, ManualClock, Metrics, MetricsSink, Outcome};
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Default)]
struct Latencies(Mutex<Vec<(Outcome, Option<Duration>)>>);

impl MetricsSink for Latencies {
    fn record(&self, event: &Event<'_>) {
        if let Event::Completed {
            layer: LayerKind::Bulkhead,
            outcome,
            latency,
            ..
        } = *event
        {
            self.0.lock().unwrap().push((outcome, latency));
        }
    }
}

#[tokio::test]
async fn a_grpc_stream_is_sampled_to_its_answer_not_to_its_end() {
    let clock = ManualClock::new();
    let seen = Arc::new(Latencies::default());
    let layer = BulkheadLayer::builder()
        .adaptive(AdaptiveLimit::aimd())
        .clock(clock.clock())
        .classify(GrpcErrorsAsFailures::new())
        .metrics(Metrics::from_arc(seen.clone()))
        .build()
        .unwrap();
    let answering = clock.clone();
    let svc = layer.layer(service_fn(move |()| {
        // Answers in 100 ms; the stream then runs for a minute and ends OK.
        answering.advance(Duration::from_millis(100));
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(Bytes::from_static(b"message"))
            .with_trailers(async move { Some(Ok(trailers)) });
        let response = Response::builder()
            .header("content-type", "application/grpc")
            .body(body)
            .unwrap();
        async move { Ok::<_, BoxError>(response) }
    }));
    let res = svc.oneshot(()).await.unwrap();
    clock.advance(Duration::from_secs(60));
    let collected = res.into_body().collect().await.unwrap();
    assert_eq!(collected.trailers().unwrap()["grpc-status"], "0");
    assert_eq!(
        *seen.0.lock().unwrap(),
        [(Outcome::Success, Some(Duration::from_millis(100)))]
    );
}

//! Threads record into shared sinks in seeded random orders: every count is
//! exact and every in-flight slot taken is given back.

use std::sync::Arc;

use palisade_core::{
    Event, Fanout, InFlightChange, LayerKind, ManualClock, Metrics, Outcome, RejectReason,
};
use palisade_metrics::prometheus::render;
use palisade_metrics::{PrometheusSink, SnapshotSink};
use prometheus_client::registry::Registry;

use crate::common::sample;

const POLICIES: [&str; 6] = ["a", "b", "c", "d", "e", "f"];

#[test]
fn concurrent_recording_is_exact() {
    for seed in 0..4_u64 {
        let clock = ManualClock::new();
        let snapshot = SnapshotSink::builder()
            .clock(clock.clock())
            .build()
            .unwrap();
        let prometheus = PrometheusSink::new();
        let mut registry = Registry::default();
        prometheus.register(&mut registry);
        let metrics = Metrics::new(
            Fanout::new()
                .with(snapshot.clone())
                .with(prometheus.clone()),
        );
        let threads = 4;
        let rounds = 2_000;
        // Every thread records at the same time: all are spawned before
        // any is joined, and they start together.
        let start = Arc::new(std::sync::Barrier::new(threads as usize));
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let metrics = metrics.clone();
                let start = Arc::clone(&start);
                std::thread::spawn(move || {
                    start.wait();
                    let mut rng = fastrand::Rng::with_seed(seed * 97 + t);
                    // Per policy: (rejections, successes).
                    let mut counts = [(0_u64, 0_u64); POLICIES.len()];
                    for _ in 0..rounds {
                        let i = rng.usize(..POLICIES.len());
                        let policy = POLICIES[i];
                        if rng.bool() {
                            metrics.emit(&Event::Rejected {
                                policy,
                                layer: LayerKind::Bulkhead,
                                reason: RejectReason::ConcurrencyFull,
                            });
                            counts[i].0 += 1;
                        } else {
                            let slot = |change| Event::InFlightChanged {
                                policy,
                                layer: LayerKind::Bulkhead,
                                change,
                                in_flight: 0,
                                limit: 64,
                            };
                            metrics.emit(&slot(InFlightChange::Acquired));
                            metrics.emit(&Event::Completed {
                                policy,
                                layer: LayerKind::Bulkhead,
                                outcome: Outcome::Success,
                                latency: None,
                            });
                            metrics.emit(&slot(InFlightChange::Released));
                            counts[i].1 += 1;
                        }
                    }
                    counts
                })
            })
            .collect();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("recording thread finished"))
            .collect();

        let snap = snapshot.snapshot();
        let text = render(&registry);
        for (i, policy) in POLICIES.iter().enumerate() {
            let rejected: u64 = results.iter().map(|c| c[i].0).sum();
            let succeeded: u64 = results.iter().map(|c| c[i].1).sum();
            let p = snap
                .policies
                .iter()
                .find(|p| p.name == *policy)
                .expect("policy tracked");
            assert_eq!(p.rejections.total, rejected, "seed {seed} {policy}");
            assert_eq!(p.requests[0].success, succeeded, "seed {seed} {policy}");
            assert_eq!(p.bulkhead.as_ref().map(|b| b.in_flight), Some(0));
            assert_eq!(
                sample(
                    &text,
                    &format!(
                        r#"palisade_rejections_total{{policy="{policy}",layer="bulkhead",reason="concurrency_full"}}"#
                    )
                ),
                Some(rejected as f64),
                "seed {seed}"
            );
            assert_eq!(
                sample(
                    &text,
                    &format!(r#"palisade_in_flight{{policy="{policy}"}}"#)
                ),
                Some(0.0)
            );
        }
        assert_eq!(snap.policies.len(), POLICIES.len());
    }
}

//! `set_spawn_metrics` is process-wide: each test binary gets one try, so
//! this one sets the sink before any `spawn`, and `spawn_metrics_late.rs`
//! after one.

mod support;

use std::sync::Arc;

use palisade_core::{Metrics, TaskEnd};
use palisade_task::{SPAWN_GROUP, set_spawn_metrics, spawn};
use support::{Recorder, Seen};

#[tokio::test]
async fn a_sink_set_before_the_first_spawn_sees_every_start_and_end() {
    let recorder = Arc::new(Recorder::default());
    assert!(set_spawn_metrics(Metrics::from_arc(recorder.clone())));
    assert!(!set_spawn_metrics(Metrics::noop()), "set once");
    spawn("ok", async { Ok::<_, std::io::Error>(()) }).await;
    spawn("boom", async {
        if true {
            panic!("boom");
        }
    })
    .await;
    let events = recorder.events();
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Started(_))),
        2,
        "{events:?}"
    );
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Ended(..))),
        2,
        "{events:?}"
    );
    assert!(events.contains(&Seen::Ended("ok".into(), TaskEnd::Completed)));
    assert!(events.contains(&Seen::Panicked("boom".into(), "boom".into())));
    assert_eq!(SPAWN_GROUP, "spawn");
}

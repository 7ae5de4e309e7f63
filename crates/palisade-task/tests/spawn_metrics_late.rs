//! A sink offered after `spawn` has run is refused: it would see tasks end
//! that it never saw start (see `spawn_metrics.rs` for the other case).

mod support;

use std::sync::Arc;
use std::time::Duration;

use palisade_core::Metrics;
use palisade_task::{set_spawn_metrics, spawn};
use support::Recorder;

#[tokio::test(start_paused = true)]
async fn a_sink_offered_after_the_first_spawn_is_refused() {
    let running = spawn("long", async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, std::io::Error>(())
    });
    let recorder = Arc::new(Recorder::default());
    assert!(!set_spawn_metrics(Metrics::from_arc(recorder.clone())));
    running.await;
    assert!(recorder.events().is_empty(), "{:?}", recorder.events());
}

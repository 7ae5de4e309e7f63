//! An offload queue first built while a panic unwinds (a destructor that
//! sets up async cleanup): the panic hook cannot be installed then, and
//! the queue's workers install it, so its service's panics are still
//! logged with their location. In a binary of its own: the hook is
//! process-wide.

mod support;

use std::sync::{Arc, Mutex};

use palisade_core::Metrics;
use palisade_task::offload::Offload;
use support::{CaptureSubscriber, Recorder};

static BUILT: Mutex<Option<Offload<u32>>> = Mutex::new(None);

struct BuildsOnDrop(Arc<Recorder>);

impl Drop for BuildsOnDrop {
    fn drop(&mut self) {
        let svc = tower::service_fn(|_: u32| async {
            if true {
                panic!("dependency bug");
            }
            Ok::<_, std::io::Error>(())
        });
        let offload = Offload::builder(svc)
            .name("audit")
            .max_attempts(1)
            .metrics(Metrics::from_arc(self.0.clone()))
            .build()
            .unwrap();
        *BUILT.lock().unwrap() = Some(offload);
    }
}

#[tokio::test(start_paused = true)]
async fn an_offload_first_built_during_an_unwind_still_locates_its_panics() {
    let logs = CaptureSubscriber::default();
    let _guard = tracing::subscriber::set_default(logs.clone());
    let recorder = Arc::new(Recorder::default());
    let unwound = std::panic::catch_unwind(|| {
        let _builds = BuildsOnDrop(recorder.clone());
        panic!("request failed");
    });
    assert!(unwound.is_err());
    let offload = BUILT.lock().unwrap().take().unwrap();
    offload.push(1);
    let stats = offload.shutdown().await;
    assert_eq!(stats.dropped_retries_exhausted, 1);
    let logged = format!("{:?}", logs.events());
    assert!(
        logged.contains("offload_build_in_unwind.rs"),
        "no location logged: {logged}"
    );
}

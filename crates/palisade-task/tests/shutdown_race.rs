//! A task still being started when a shutdown passes its deadline is
//! aborted with the others. Its own test binary: it installs a global
//! `tracing` subscriber to learn when the shutdown starts aborting.

mod support;

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_core::{Event, Metrics, MetricsSink, TaskEnd};
use palisade_task::{TaskExit, TaskGroup};
use support::CaptureSubscriber;

/// Holds the `TaskStarted` event of the task named `late` (the group has
/// registered the task, not yet spawned it) until released.
struct Gate {
    entered: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

impl MetricsSink for Gate {
    fn record(&self, event: &Event<'_>) {
        if let Event::TaskStarted { task: "late", .. } = event {
            self.entered.lock().unwrap().send(()).unwrap();
            let released = self
                .release
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            assert!(released.is_ok(), "the shutdown never started aborting");
        }
    }
}

#[test]
fn a_task_started_while_a_shutdown_aborts_is_aborted_too() {
    let logs = CaptureSubscriber::default();
    tracing::subscriber::set_global_default(logs.clone()).unwrap();
    let (entered, on_entered) = channel();
    let (release, on_release) = channel();
    let gate = Arc::new(Gate {
        entered: Mutex::new(entered),
        release: Mutex::new(on_release),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let group = TaskGroup::builder()
        .name("race")
        .metrics(Metrics::from_arc(gate))
        .abort_grace(Duration::from_secs(10))
        .build()
        .unwrap();

    // Starts a task that ignores cancellation; `spawn` stops in the gate.
    let starter = {
        let (group, handle) = (group.clone(), runtime.handle().clone());
        std::thread::spawn(move || {
            let _entered = handle.enter();
            group.spawn("late", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, std::io::Error>(())
            })
        })
    };
    on_entered.recv_timeout(Duration::from_secs(30)).unwrap();

    // Releases the gate once the shutdown logs that it aborts `late`.
    let watcher = std::thread::spawn(move || {
        let until = Instant::now() + Duration::from_secs(30);
        while Instant::now() < until {
            let aborting = logs.0.lock().unwrap().iter().any(|l| {
                l.fields
                    .get("message")
                    .is_some_and(|m| m.contains("aborting it at the shutdown deadline"))
            });
            if aborting {
                release.send(()).unwrap();
                return;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // The gate's own check runs inside the group's contained sink,
        // where a failed assertion is logged, not raised: fail here.
        panic!("the shutdown never logged that it aborts the late task");
    });

    let report = runtime.block_on(group.shutdown(Duration::ZERO));
    watcher.join().unwrap();
    let handle = starter.join().unwrap();
    assert_eq!(
        group.live(),
        0,
        "the late task was aborted, not left running"
    );
    assert!(report.deadline_passed);
    assert_eq!(report.tasks.len(), 1);
    assert_eq!(report.tasks[0].end, TaskEnd::Aborted);
    assert!(matches!(runtime.block_on(handle), TaskExit::Aborted));
}

//! A `tracing` subscriber that panics while palisade logs what it caught
//! or what a task returned does not change how the task ended. In a binary
//! of its own: `tracing` caches process-wide whether an event site is
//! wanted.

mod support;

use palisade_task::{TaskExit, TaskGroup};

#[derive(Debug, PartialEq)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("refused")
    }
}

impl std::error::Error for Refused {}

#[test]
fn a_log_backend_that_panics_changes_no_exit() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let group = TaskGroup::builder().name("logged").build().unwrap();
    tracing::subscriber::with_default(support::PanickingSubscriber, || {
        runtime.block_on(async {
            // The task caught a panic of its own and went on: palisade logs
            // that panic, and the subscriber panics on the log.
            let caught = group.spawn("recovers", async {
                let _ = std::panic::catch_unwind(|| panic!("handled inside"));
                Ok::<_, Refused>(7)
            });
            assert!(matches!(caught.await, TaskExit::Completed(7)));
            // A run that failed: palisade logs the error.
            let failed = group.spawn("fails", async { Err::<(), _>(Refused) });
            assert!(matches!(failed.await, TaskExit::Failed(Refused)));
            // And one that panicked stays panicked, with its own message.
            let panicked = group.spawn("panics", async {
                if true {
                    panic!("the task's own panic");
                }
            });
            assert_eq!(
                panicked.await.panicked().unwrap().message(),
                "the task's own panic"
            );
        });
    });
}

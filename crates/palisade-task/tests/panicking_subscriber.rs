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
    let subscriber = support::PanickingSubscriber::default();
    tracing::subscriber::with_default(subscriber.clone(), || {
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
    // One log of each run at least reached the subscriber and panicked.
    assert!(subscriber.panics() >= 3, "{}", subscriber.panics());
}

#[test]
fn a_log_backend_that_panics_does_not_stop_a_shutdown() {
    use std::time::Duration;

    use palisade_task::Offload;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    let subscriber = support::PanickingSubscriber::default();
    tracing::subscriber::with_default(subscriber.clone(), || {
        runtime.block_on(async {
            // The group logs a warning for the task it aborts, and the
            // subscriber panics on it: the task is aborted all the same.
            let group = TaskGroup::builder().name("logged").build().unwrap();
            let stubborn = group.spawn("stubborn", async {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok::<_, Refused>(())
            });
            // Spawned, to see whether it panics: the runtime has one
            // thread, so the subscriber is in force there too.
            let shutdown = {
                let group = group.clone();
                tokio::spawn(async move { group.shutdown(Duration::from_secs(1)).await })
            };
            assert!(shutdown.await.is_ok(), "the shutdown panicked");
            assert_eq!(group.live(), 0);
            assert!(matches!(stubborn.await, TaskExit::Aborted));

            // The offload queue logs a warning as its drain deadline
            // passes: its workers are stopped and what is left counted.
            let hung = tower::service_fn(|_: u32| std::future::pending::<Result<(), String>>());
            let offload = Offload::builder(hung)
                .queue_capacity(4)
                .drain_deadline(Duration::from_secs(1))
                .build()
                .unwrap();
            for i in 0..3 {
                offload.push(i);
                tokio::task::yield_now().await;
            }
            let stats = {
                let offload = offload.clone();
                tokio::spawn(async move { offload.shutdown().await })
            }
            .await
            .expect("the shutdown does not panic");
            assert_eq!(stats.pushed, 3);
            assert_eq!(stats.dropped_shutdown, 3, "{stats:?}");
        });
    });
    // The abort's warning and the drain deadline's both panicked.
    assert!(subscriber.panics() >= 2, "{}", subscriber.panics());
}

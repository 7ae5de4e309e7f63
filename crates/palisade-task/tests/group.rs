//! `spawn` and task groups: how tasks end, the live gauge, graceful
//! shutdown.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::{Metrics, TaskEnd};
use palisade_task::{TaskExit, TaskGroup, spawn};
use support::{Faulty, Recorder, Seen};
use tokio::time::Instant;

fn group(name: &str) -> (TaskGroup, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let group = TaskGroup::builder()
        .name(name)
        .metrics(Metrics::from_arc(recorder.clone()))
        .build()
        .unwrap();
    (group, recorder)
}

#[tokio::test]
async fn the_handle_says_how_each_task_ended() {
    let (group, recorder) = group("ends");

    let completed = group.spawn("completed", async { Ok::<_, std::io::Error>(7) });
    let failed = group.spawn("failed", async { Err::<u8, _>("disk full") });
    let line = line!() + 3;
    let panicked = group.spawn("panicked", async {
        if true {
            panic!("index out of bounds");
        }
    });
    let unit = group.spawn("unit", async {});

    assert!(matches!(completed.await, TaskExit::Completed(7)));
    assert!(matches!(failed.await, TaskExit::Failed("disk full")));
    match panicked.await {
        TaskExit::Panicked(p) => {
            assert_eq!(p.message(), "index out of bounds");
            assert_eq!(p.policy().as_str(), "ends");
            let location = p.location().unwrap();
            assert!(location.file().ends_with("group.rs"));
            assert_eq!(location.line(), line);
            assert!(p.backtrace().is_some());
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(matches!(unit.await, TaskExit::Completed(())));

    group.idle().await;
    let events = recorder.events();
    for task in ["completed", "failed", "panicked", "unit"] {
        assert_eq!(recorder.count(|e| *e == Seen::Started(task.into())), 1);
        assert_eq!(
            recorder.count(|e| matches!(e, Seen::Ended(t, _) if t == task)),
            1,
            "{events:?}"
        );
    }
    assert!(events.contains(&Seen::Ended("failed".into(), TaskEnd::Failed)));
    assert!(events.contains(&Seen::Ended("panicked".into(), TaskEnd::Panicked)));
    assert!(events.contains(&Seen::Panicked(
        "panicked".into(),
        "index out of bounds".into()
    )));
    // The panic event comes before the end event.
    let panic_at = events.iter().position(|e| matches!(e, Seen::Panicked(..)));
    let end_at = events
        .iter()
        .position(|e| *e == Seen::Ended("panicked".into(), TaskEnd::Panicked));
    assert!(panic_at < end_at);
}

#[tokio::test]
async fn free_spawn_catches_panics_too() {
    let handle = spawn("alone", async {
        if true {
            std::panic::panic_any(13_u64);
        }
    });
    assert_eq!(handle.name(), "alone");
    match handle.await {
        TaskExit::Panicked(p) => {
            assert_eq!(p.message(), "panic payload of type u64");
            assert_eq!(p.policy().as_str(), palisade_task::SPAWN_GROUP);
        }
        other => panic!("expected a panic, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn shutdown_cancels_waits_and_aborts_the_task_that_ignores_cancellation() {
    let (group, recorder) = group("shutdown");
    let token = group.token();
    let cleaned_up = Arc::new(AtomicBool::new(false));
    let flag = cleaned_up.clone();
    let polite = group.spawn("polite", async move {
        loop {
            tokio::select! {
                () = token.cancelled() => {
                    // Some cleanup that takes time, well within the deadline.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    flag.store(true, Ordering::SeqCst);
                    return Ok::<_, std::io::Error>("flushed");
                }
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
    // Never looks at the token.
    let stubborn = group.spawn("stubborn", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let quick = group.spawn("already-done", async {});
    assert!(quick.await.is_completed());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(group.live(), 2);

    let started = Instant::now();
    let report = group.shutdown(Duration::from_secs(3)).await;

    assert_eq!(report.group.as_str(), "shutdown");
    assert!(report.deadline_passed);
    assert!(!report.is_clean());
    assert_eq!(report.waited, Duration::from_secs(3));
    assert!(started.elapsed() >= Duration::from_secs(3));
    assert_eq!(report.aborted().collect::<Vec<_>>(), ["stubborn"]);
    assert_eq!(
        report.with_end(TaskEnd::Cancelled).collect::<Vec<_>>(),
        ["polite"]
    );
    assert_eq!(report.tasks.len(), 2, "only the tasks running at shutdown");
    assert!(report.to_string().contains("stubborn aborted"));

    assert!(cleaned_up.load(Ordering::SeqCst));
    assert!(matches!(polite.await, TaskExit::Cancelled(Some("flushed"))));
    assert!(matches!(stubborn.await, TaskExit::Aborted));
    assert_eq!(group.live(), 0);
    assert!(
        recorder
            .events()
            .contains(&Seen::Ended("stubborn".into(), TaskEnd::Aborted))
    );
}

#[tokio::test(start_paused = true)]
async fn a_clean_shutdown_returns_as_soon_as_every_task_ended() {
    let (group, _) = group("clean");
    for i in 0..5_u64 {
        let token = group.token();
        group.spawn(format!("worker-{i}"), async move {
            token.cancelled().await;
            tokio::time::sleep(Duration::from_millis(100 * i)).await;
        });
    }
    let report = group.shutdown(Duration::from_secs(10)).await;
    assert!(report.is_clean(), "{report}");
    assert_eq!(report.waited, Duration::from_millis(400));
    assert_eq!(report.with_end(TaskEnd::Cancelled).count(), 5);
    assert_eq!(group.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_live_gauge_follows_tasks_and_returns_to_zero() {
    let (group, recorder) = group("gauge");
    assert_eq!(group.live(), 0);
    for i in 1..=10_u64 {
        group.spawn(format!("t{i}"), async move {
            tokio::time::sleep(Duration::from_secs(i)).await;
            if i % 3 == 0 {
                panic!("task {i} failed");
            }
        });
    }
    assert_eq!(group.live(), 10);
    for expected in (0..10).rev() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        // Let the task that just finished run its end.
        tokio::task::yield_now().await;
        assert_eq!(group.live(), expected);
    }
    group.idle().await;
    assert_eq!(group.live(), 0);
    let started = recorder.count(|e| matches!(e, Seen::Started(_)));
    let ended = recorder.count(|e| matches!(e, Seen::Ended(..)));
    assert_eq!((started, ended), (10, 10));
    assert_eq!(recorder.count(|e| matches!(e, Seen::Panicked(..))), 3);
}

#[tokio::test(start_paused = true)]
async fn an_aborted_task_ends_once_and_releases_the_gauge() {
    let (group, recorder) = group("abort");
    let handle = group.spawn("sleeper", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    tokio::task::yield_now().await;
    assert_eq!(group.live(), 1);
    handle.abort();
    assert!(matches!(handle.await, TaskExit::Aborted));
    assert_eq!(group.live(), 0);
    assert_eq!(
        recorder.events(),
        [
            Seen::Started("sleeper".into()),
            Seen::Ended("sleeper".into(), TaskEnd::Aborted)
        ]
    );
}

/// Panics when dropped: a value whose destructor fails.
struct PanicsOnDrop(&'static str);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("{} failed to flush", self.0);
    }
}

#[tokio::test(start_paused = true)]
async fn a_destructor_panic_at_the_shutdown_deadline_is_reported_as_a_panic_everywhere() {
    let (group, recorder) = group("drop-panic");
    let handle = group.spawn("buffered", async {
        let buffer = PanicsOnDrop("buffer");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        drop(buffer);
    });
    let supervised = group.spawn_supervised(
        "supervised",
        palisade_task::RestartPolicy::default(),
        |_| async {
            let buffer = PanicsOnDrop("cache");
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(buffer);
            Ok::<_, std::io::Error>(())
        },
    );
    tokio::task::yield_now().await;

    let report = group.shutdown(Duration::from_secs(1)).await;
    assert!(report.deadline_passed);
    assert_eq!(
        report.with_end(TaskEnd::Panicked).collect::<Vec<_>>(),
        ["buffered", "supervised"],
        "{report}"
    );
    assert_eq!(report.aborted().count(), 0);
    assert_eq!(group.live(), 0);

    let exit = handle.await;
    let panicked = exit.panicked().expect("the handle says it panicked");
    assert_eq!(panicked.message(), "buffer failed to flush");
    assert!(panicked.location().is_some(), "the location is kept");
    let exit = supervised.await;
    assert_eq!(
        exit.exit.panicked().map(|p| p.message()),
        Some("cache failed to flush")
    );
    assert!(!exit.gave_up);

    let events = recorder.events();
    for (task, message) in [
        ("buffered", "buffer failed to flush"),
        ("supervised", "cache failed to flush"),
    ] {
        assert!(
            events.contains(&Seen::Panicked(task.into(), message.into())),
            "{events:?}"
        );
        assert!(
            events.contains(&Seen::Ended(task.into(), TaskEnd::Panicked)),
            "{events:?}"
        );
        assert_eq!(
            recorder.count(|e| matches!(e, Seen::Ended(t, _) if t == task)),
            1
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_destructor_panic_when_aborted_through_the_handle_is_a_panic() {
    let (group, recorder) = group("abort-panic");
    let handle = group.spawn("sleeper", async {
        let _guard = PanicsOnDrop("sleeper");
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    tokio::task::yield_now().await;
    handle.abort();
    let exit = handle.await;
    assert_eq!(
        exit.panicked().map(|p| p.message()),
        Some("sleeper failed to flush")
    );
    assert_eq!(group.live(), 0);
    assert_eq!(
        recorder.events(),
        [
            Seen::Started("sleeper".into()),
            Seen::Panicked("sleeper".into(), "sleeper failed to flush".into()),
            Seen::Ended("sleeper".into(), TaskEnd::Panicked),
        ]
    );
}

#[tokio::test]
async fn a_shut_down_group_starts_nothing() {
    let (group, recorder) = group("closed");
    let report = group.shutdown(Duration::from_secs(1)).await;
    assert!(report.tasks.is_empty());
    assert!(group.is_closed());
    let ran = Arc::new(AtomicBool::new(false));
    let flag = ran.clone();
    let handle = group.spawn("late", async move { flag.store(true, Ordering::SeqCst) });
    assert!(matches!(handle.await, TaskExit::Aborted));
    assert!(!ran.load(Ordering::SeqCst));
    assert!(recorder.events().is_empty());
}

#[tokio::test]
async fn a_parent_token_cancels_the_group() {
    let app = palisade_task::CancellationToken::new();
    let group = TaskGroup::builder()
        .name("child")
        .parent(&app)
        .build()
        .unwrap();
    let token = group.token();
    let handle = group.spawn("waiter", async move { token.cancelled().await });
    app.cancel();
    let exit = tokio::time::timeout(Duration::from_secs(30), handle)
        .await
        .expect("the parent's cancellation reached the task within 30 s");
    assert!(matches!(exit, TaskExit::Cancelled(Some(()))));
}

#[test]
fn builders_refuse_bad_names_and_no_abort_grace() {
    let err = TaskGroup::new("").unwrap_err();
    assert_eq!(err.field(), "name");
    assert_eq!(err.layer(), palisade_core::LayerKind::Task);
    // With no grace, every task just aborted would be reported still
    // running: it stops only on the runtime's next turn.
    let err = TaskGroup::builder()
        .abort_grace(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "abort_grace");
}

#[test]
fn spawn_outside_a_runtime_does_not_panic() {
    let (group, _) = group("no-runtime");
    let handle = group.spawn("x", async {});
    assert!(handle.is_finished());
    let exit = futures_util::FutureExt::now_or_never(handle).unwrap();
    assert!(matches!(exit, TaskExit::Aborted));
}

/// Seeded stress on a multi-threaded runtime: tasks spawned from eight
/// threads complete, fail, panic or are aborted; every start has exactly
/// one end and the gauge returns to zero.
#[test]
fn spawning_and_aborting_from_many_threads_keeps_counts_exact() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    let (group, recorder) = group("stress");
    runtime.block_on(async {
        let mut spawners = Vec::new();
        for s in 0..8_u64 {
            let group = group.clone();
            spawners.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(s);
                let mut panics = 0;
                for i in 0..200 {
                    let kind = rng.u8(0..4);
                    panics += u32::from(kind == 2);
                    let handle = group.spawn(format!("t{s}-{i}"), async move {
                        match kind {
                            0 => Ok(()),
                            1 => Err("failed"),
                            2 => panic!("panicked"),
                            _ => {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                                Ok(())
                            }
                        }
                    });
                    if kind == 3 {
                        handle.abort();
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                panics
            }));
        }
        let mut panics = 0;
        for spawner in spawners {
            panics += spawner.await.unwrap();
        }
        tokio::time::timeout(Duration::from_secs(30), group.idle())
            .await
            .expect("every task ends");
        assert_eq!(group.live(), 0);
        assert_eq!(recorder.count(|e| matches!(e, Seen::Started(_))), 1_600);
        assert_eq!(recorder.count(|e| matches!(e, Seen::Ended(..))), 1_600);
        assert_eq!(
            recorder.count(|e| matches!(e, Seen::Panicked(..))),
            panics as usize
        );
        assert_eq!(
            recorder.count(|e| matches!(e, Seen::Ended(_, TaskEnd::Panicked))),
            panics as usize
        );
        let report = group.shutdown(Duration::from_secs(1)).await;
        assert!(report.tasks.is_empty(), "{report}");
    });
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_whose_caller_stops_waiting_still_aborts_at_the_deadline() {
    let (group, _recorder) = group("cut-short");
    // Never looks at the token.
    let stubborn = group.spawn("stubborn", async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    tokio::task::yield_now().await;
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        group.shutdown(Duration::from_secs(3)),
    )
    .await;
    assert!(waited.is_err());
    assert_eq!(group.live(), 1, "the deadline has not passed yet");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(group.live(), 0);
    assert!(matches!(stubborn.await, TaskExit::Aborted));
}

/// Records every event into `recorder`, and panics on those `fails` picks,
/// as a faulty metrics sink would.
fn faulty_group(fails: fn(&palisade_core::Event<'_>) -> bool) -> (TaskGroup, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let group = TaskGroup::builder()
        .name("faulty")
        .metrics(Faulty::metrics(&recorder, fails))
        .build()
        .unwrap();
    (group, recorder)
}

#[tokio::test(start_paused = true)]
async fn a_panic_while_reporting_a_panic_still_ends_the_task_as_panicked() {
    // The sink panics on every panic report: the task's own panic, then
    // the report of that second panic.
    let (group, recorder) =
        faulty_group(|event| matches!(event, palisade_core::Event::TaskPanicked { .. }));
    let exit = group
        .spawn("t", async {
            if true {
                panic!("task bug");
            }
        })
        .await;
    // The task's own panic, reported once, and kept as its exit.
    let TaskExit::Panicked(panicked) = exit else {
        panic!("{exit:?}");
    };
    assert_eq!(panicked.message(), "task bug");
    assert_eq!(recorder.count(|e| matches!(e, Seen::Panicked(..))), 1);
    let report = group.shutdown(Duration::from_secs(1)).await;
    assert!(!report.deadline_passed);
    let ended: Vec<_> = recorder
        .events()
        .into_iter()
        .filter(|e| matches!(e, Seen::Ended(..)))
        .collect();
    assert_eq!(ended, [Seen::Ended("t".into(), TaskEnd::Panicked)]);
    assert_eq!(group.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_on_a_tasks_start_or_end_still_lets_the_group_go_idle() {
    let on_start: fn(&palisade_core::Event<'_>) -> bool =
        |event| matches!(event, palisade_core::Event::TaskStarted { .. });
    let on_end: fn(&palisade_core::Event<'_>) -> bool =
        |event| matches!(event, palisade_core::Event::TaskEnded { .. });
    for fails in [on_start, on_end] {
        let (group, recorder) = faulty_group(fails);
        let exit = group.spawn("t", async {}).await;
        assert!(matches!(exit, TaskExit::Completed(())), "{exit:?}");
        assert_eq!(group.live(), 0);
        let start = Instant::now();
        let report = group.shutdown(Duration::from_secs(30)).await;
        assert!(!report.deadline_passed);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(recorder.count(|e| matches!(e, Seen::Ended(..))), 1);
    }
}

#[test]
fn a_task_still_blocking_its_thread_after_the_abort_is_reported_as_still_running() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (entered, on_entered) = std::sync::mpsc::channel::<()>();
    let (release, on_release) = std::sync::mpsc::channel::<()>();
    let group = palisade_task::TaskGroup::builder()
        .name("blocking")
        .abort_grace(std::time::Duration::from_millis(20))
        .build()
        .unwrap();
    let handle = {
        let _entered = runtime.enter();
        group.spawn("stuck", async move {
            entered.send(()).unwrap();
            // Synchronous I/O: blocks its thread, out of reach of an abort.
            let _ = on_release.recv_timeout(std::time::Duration::from_secs(30));
        })
    };
    on_entered
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap();
    let report = runtime.block_on(group.shutdown(std::time::Duration::from_millis(20)));
    assert_eq!(report.tasks.len(), 1);
    assert_eq!(report.tasks[0].end, palisade_core::TaskEnd::Aborted);
    assert!(report.tasks[0].still_running, "{report:?}");
    assert_eq!(report.still_running().collect::<Vec<_>>(), ["stuck"]);
    assert!(!report.is_clean());
    // Once released, it ends by itself, and its handle says how: it
    // returned after the group cancelled it.
    release.send(()).unwrap();
    let exit = runtime.block_on(handle);
    assert_eq!(exit.end(), palisade_core::TaskEnd::Cancelled, "{exit:?}");
}

#[tokio::test]
async fn a_refused_spawn_contains_the_destructor_of_the_future_it_drops() {
    let group = TaskGroup::builder().name("closed").build().unwrap();
    let _ = group.shutdown(Duration::from_secs(1)).await;
    let future = {
        let guard = PanicsOnDrop("refused");
        async move {
            let _guard = guard;
        }
    };
    // The group is shut down: the task is not started and its future is
    // dropped, whose destructor panics. `spawn` itself must not.
    let spawned =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| group.spawn("late", future)));
    let handle = spawned.expect("the destructor's panic reached the caller of spawn");
    assert_eq!(handle.await.end(), TaskEnd::Aborted, "never started");
}

//! The `tracing` events of a task's panics, and of destructors and log
//! formatting that panic around a task's end.
//!
//! This test sits in a binary of its own: `tracing` caches process-wide
//! whether an event site is wanted, and a test panicking a task at the
//! same time without a subscriber could leave the panic's event site
//! marked as unwanted just as this one starts capturing.

mod support;

use palisade_task::{TaskExit, TaskGroup, WorkerPool};

#[test]
fn task_panics_are_logged_and_nothing_the_log_or_a_destructor_does_changes_an_exit() {
    let subscriber = support::CaptureSubscriber::default();
    let logged = subscriber.0.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let group = TaskGroup::builder().name("logged").build().unwrap();
    let quiet = TaskGroup::builder()
        .name("no-backtrace")
        .backtrace(false)
        .build()
        .unwrap();
    let (with_trace, without_trace) = tracing::subscriber::with_default(subscriber, || {
        runtime.block_on(async {
            let a = group.spawn("ingest", async {
                if true {
                    panic!("bad record");
                }
            });
            let b = quiet.spawn("ingest", async {
                if true {
                    panic!("bad record");
                }
            });
            let c = group.spawn("ingest", PanicsTwice);
            assert_eq!(c.await.panicked().unwrap().message(), "first panic");
            // A task that finished: its result stands, whatever its
            // destructor does after.
            let d = group.spawn("ingest", FinishesThenPanicsOnDrop);
            assert!(matches!(d.await, TaskExit::Completed(7)));
            // An error that panics as the log formats it: the run still
            // ends as failed.
            let e = group.spawn("ingest", async { Err::<(), _>(PanicsOnDisplay) });
            assert!(matches!(e.await, TaskExit::Failed(PanicsOnDisplay)));
            // The same for a pool job: failed, not panicked.
            let pool = WorkerPool::builder()
                .name("jobs")
                .workers(1)
                .build()
                .unwrap();
            pool.submit(async { Err::<(), _>(PanicsOnDisplay) })
                .await
                .unwrap();
            let report = pool.shutdown(std::time::Duration::from_secs(5)).await;
            assert!(report.is_clean(), "{report:?}");
            let stats = pool.stats();
            assert_eq!((stats.failed, stats.panicked), (1, 0), "{stats:?}");
            (a.await, b.await)
        })
    });
    let location = with_trace
        .panicked()
        .unwrap()
        .location()
        .unwrap()
        .to_string();
    assert!(without_trace.panicked().unwrap().backtrace().is_none());

    let logged = logged.lock().unwrap();
    let events: Vec<_> = logged
        .iter()
        .filter(|e| e.fields.get("panic.message").map(String::as_str) == Some("bad record"))
        .collect();
    assert_eq!(events.len(), 2, "{logged:?}");
    let event = events
        .iter()
        .find(|e| e.fields["group"] == "logged")
        .unwrap();
    assert_eq!(event.level, tracing::Level::ERROR);
    assert_eq!(event.fields["task"], "ingest");
    assert_eq!(event.fields["panic.location"], location);
    assert!(event.fields["panic.backtrace"].contains("tracing.rs"));
    let quiet_event = events
        .iter()
        .find(|e| e.fields["group"] == "no-backtrace")
        .unwrap();
    assert!(!quiet_event.fields.contains_key("panic.backtrace"));

    // The destructor's panic, after the task's own: logged as a warning,
    // while the task's exit keeps the first.
    let second = logged
        .iter()
        .find(|e| e.fields.get("panic.message").map(String::as_str) == Some("destructor bug"))
        .unwrap_or_else(|| panic!("the destructor's panic was not logged: {logged:?}"));
    assert_eq!(second.level, tracing::Level::WARN);
    assert_eq!(second.fields["policy"], "logged");
    assert!(
        second.fields["panic.location"].contains("tracing.rs:"),
        "{second:?}"
    );
    let after_finish = logged
        .iter()
        .find(|e| e.fields.get("panic.message").map(String::as_str) == Some("drop after finish"))
        .unwrap_or_else(|| panic!("the destructor's panic was not logged: {logged:?}"));
    assert_eq!(after_finish.level, tracing::Level::WARN);
    // The pool job's formatting panic, caught inside its capture scope, is
    // logged rather than lost.
    assert!(
        logged
            .iter()
            .any(|e| e.fields.get("panic.message").map(String::as_str) == Some("display bug")),
        "{logged:?}"
    );
    assert_eq!(group.live(), 0);
}

/// Finishes at once, then panics when dropped.
struct FinishesThenPanicsOnDrop;

impl std::future::Future for FinishesThenPanicsOnDrop {
    type Output = Result<u32, String>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<u32, String>> {
        std::task::Poll::Ready(Ok(7))
    }
}

impl Drop for FinishesThenPanicsOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("drop after finish");
        }
    }
}

/// Panics when polled, and again when dropped.
struct PanicsTwice;

impl std::future::Future for PanicsTwice {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        panic!("first panic")
    }
}

impl Drop for PanicsTwice {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            panic!("destructor bug");
        }
    }
}

/// An error whose `Display` panics.
#[derive(Debug)]
struct PanicsOnDisplay;

impl std::fmt::Display for PanicsOnDisplay {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        panic!("display bug")
    }
}

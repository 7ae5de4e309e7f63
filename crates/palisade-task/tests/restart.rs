//! Restart policies, on virtual time: backoff timings, give-up after the
//! limit, reset after healthy running, cancellation during backoff.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_core::{Metrics, TaskEnd};
use palisade_task::{Backoff, RestartPolicy, SupervisedExit, TaskExit, TaskGroup};
use support::{Faulty, Recorder, Seen};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn group() -> (TaskGroup, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let group = TaskGroup::builder()
        .name("loops")
        .metrics(Metrics::from_arc(recorder.clone()))
        .build()
        .unwrap();
    (group, recorder)
}

/// Numbers the runs of a supervised task, from 1.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<u32>>);

impl Runs {
    /// The number of the run starting now.
    fn next(&self) -> u32 {
        let mut runs = self.0.lock().unwrap();
        *runs += 1;
        *runs
    }

    /// How many runs started.
    fn count(&self) -> u32 {
        *self.0.lock().unwrap()
    }
}

/// Restarts 10 ms apart, without jitter.
fn every_10ms() -> Backoff {
    Backoff::new(ms(10), ms(10)).jitter(0.0)
}

/// Offsets from `origin` of every run's start.
fn offsets(starts: &Mutex<Vec<Instant>>, origin: Instant) -> Vec<Duration> {
    starts.lock().unwrap().iter().map(|t| *t - origin).collect()
}

/// Supervises, under `policy`, a task named `name` whose every run fails
/// at once with `error`; returns how the supervision ended and when each
/// run started, from the spawn.
async fn always_failing(
    group: &TaskGroup,
    name: &str,
    policy: RestartPolicy,
    error: &'static str,
) -> (SupervisedExit<(), &'static str>, Vec<Duration>) {
    let starts = Arc::new(Mutex::new(Vec::new()));
    let log = starts.clone();
    let origin = Instant::now();
    let exit = group
        .spawn_supervised(name, policy, move |_| {
            log.lock().unwrap().push(Instant::now());
            async move { Err::<(), _>(error) }
        })
        .await;
    (exit, offsets(&starts, origin))
}

#[tokio::test(start_paused = true)]
async fn restarts_back_off_exponentially_then_give_up() {
    let (group, recorder) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(100), ms(1_000)).jitter(0.0))
        .max_restarts(4)
        .window(Duration::from_secs(60))
        .build()
        .unwrap();
    let (exit, starts) = always_failing(&group, "fails-fast", policy, "dependency refused").await;
    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 4);
    assert!(matches!(exit.exit, TaskExit::Failed("dependency refused")));
    // 100, 200, 400, 800 ms apart.
    assert_eq!(starts, [ms(0), ms(100), ms(300), ms(700), ms(1_500)]);

    let restarts: Vec<_> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Seen::Restarted(_, attempt, backoff) => Some((attempt, backoff)),
            _ => None,
        })
        .collect();
    assert_eq!(
        restarts,
        [(1, ms(100)), (2, ms(200)), (3, ms(400)), (4, ms(800))]
    );
    let events = recorder.events();
    let gave_up = events
        .iter()
        .position(|e| *e == Seen::GaveUp("fails-fast".into(), 4))
        .expect("giving up is reported");
    let ended = events
        .iter()
        .position(|e| *e == Seen::Ended("fails-fast".into(), TaskEnd::Failed))
        .expect("the end is reported");
    assert!(gave_up < ended, "give-up comes before the end: {events:?}");
    assert_eq!(
        recorder.count(|e| *e == Seen::Ended("fails-fast".into(), TaskEnd::Failed)),
        1,
        "one end for the whole supervised life"
    );
    assert_eq!(recorder.count(|e| matches!(e, Seen::Started(_))), 1);
    assert_eq!(group.live(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_backoff_is_capped() {
    let (group, _) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(100), ms(250)).multiplier(3.0).jitter(0.0))
        .max_restarts(4)
        .build()
        .unwrap();
    let (exit, starts) = always_failing(&group, "capped", policy, "no").await;
    assert!(exit.gave_up);
    // 100, then 300 capped to 250, then 250, 250.
    assert_eq!(starts, [ms(0), ms(100), ms(350), ms(600), ms(850)]);
}

async fn jittered_starts(seed: u64) -> Vec<Duration> {
    let (group, _) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(1_000), Duration::from_secs(60)).jitter(0.5))
        .max_restarts(6)
        .seed(seed)
        .build()
        .unwrap();
    let (exit, starts) = always_failing(&group, "jittered", policy, "no").await;
    assert!(exit.gave_up);
    starts
}

#[tokio::test(start_paused = true)]
async fn jitter_is_bounded_and_reproducible_with_a_seed() {
    let first = jittered_starts(42).await;
    let again = jittered_starts(42).await;
    let other = jittered_starts(43).await;
    assert_eq!(first, again, "same seed, same waits");
    assert_ne!(first, other, "another seed, other waits");
    for (i, pair) in first.windows(2).enumerate() {
        let wait = pair[1] - pair[0];
        let base = ms(1_000 * (1 << i));
        assert!(
            wait <= base && wait >= base / 2,
            "wait {i} = {wait:?}, base {base:?}"
        );
    }
}

/// The backoffs of two tasks supervised by one seeded policy in one group,
/// both failing at once on every run.
async fn backoffs_of_two_tasks(seed: u64) -> [Vec<Duration>; 2] {
    let (group, recorder) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(1_000), Duration::from_secs(60)).jitter(0.5))
        .max_restarts(4)
        .seed(seed)
        .build()
        .unwrap();
    let a = group.spawn_supervised("a", policy.clone(), |_| async { Err::<(), _>("down") });
    let b = group.spawn_supervised("b", policy, |_| async { Err::<(), _>("down") });
    assert!(a.await.gave_up && b.await.gave_up);
    ["a", "b"].map(|name| {
        recorder
            .events()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Restarted(task, _, backoff) if task == name => Some(backoff),
                _ => None,
            })
            .collect()
    })
}

#[tokio::test(start_paused = true)]
async fn tasks_sharing_a_seeded_policy_restart_apart() {
    let [a, b] = backoffs_of_two_tasks(42).await;
    assert_eq!((a.len(), b.len()), (4, 4));
    assert_ne!(a, b, "one outage must not restart both tasks together");
    assert_eq!(
        backoffs_of_two_tasks(42).await,
        [a, b],
        "still reproducible"
    );
}

#[tokio::test(start_paused = true)]
async fn healthy_running_resets_the_backoff_and_the_window() {
    let (group, recorder) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(100), Duration::from_secs(10)).jitter(0.0))
        .max_restarts(2)
        .window(Duration::from_secs(3600))
        .reset_after(Duration::from_secs(5))
        .build()
        .unwrap();
    // Runs 1-2 fail at once, run 3 is healthy for 10 s then fails, runs 4-5
    // fail at once, run 6 fails at once and exceeds the limit.
    let runs = Runs::default();
    let counter = runs.clone();
    let starts = Arc::new(Mutex::new(Vec::new()));
    let log = starts.clone();
    let origin = Instant::now();
    let exit = group
        .spawn_supervised("flaky", policy, move |_| {
            log.lock().unwrap().push(Instant::now());
            let run = counter.next();
            async move {
                if run == 3 {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
                Err::<(), _>(format!("run {run} failed"))
            }
        })
        .await;

    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 4);
    assert!(matches!(&exit.exit, TaskExit::Failed(e) if e == "run 5 failed"));
    assert_eq!(
        offsets(&starts, origin),
        [
            ms(0),
            ms(100),
            ms(300),
            // healthy 10 s, then the backoff starts over at 100 ms
            ms(10_400),
            ms(10_600),
        ]
    );
    let attempts: Vec<u32> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Seen::Restarted(_, attempt, _) => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(
        attempts,
        [1, 2, 1, 2],
        "the window was emptied by the reset"
    );
}

#[tokio::test(start_paused = true)]
async fn failures_older_than_the_window_do_not_count() {
    let (group, _) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(ms(100), ms(100)).jitter(0.0))
        .max_restarts(2)
        .window(Duration::from_secs(30))
        .reset_after(Duration::from_secs(3600))
        .build()
        .unwrap();
    let runs = Runs::default();
    let counter = runs.clone();
    let exit = group
        .spawn_supervised("slow-failures", policy, move |_| {
            let run = counter.next();
            async move {
                if run < 6 {
                    // Runs a while, then fails: 20 s of running between
                    // failures, so never more than 2 of them within 30 s.
                    tokio::time::sleep(Duration::from_secs(20)).await;
                    Err(format!("run {run}"))
                } else {
                    Ok("recovered")
                }
            }
        })
        .await;
    assert!(!exit.gave_up);
    assert_eq!(exit.restarts, 5);
    assert!(matches!(exit.exit, TaskExit::Completed("recovered")));
}

#[tokio::test(start_paused = true)]
async fn quick_failures_give_up_however_long_the_backoff_has_grown() {
    let (group, recorder) = group();
    // Each wait outlasts the window: the window counts running time, so
    // the waits do not age the failures out of it.
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(Duration::from_secs(2), Duration::from_secs(2)).jitter(0.0))
        .max_restarts(3)
        .window(Duration::from_secs(1))
        .build()
        .unwrap();
    let (exit, starts) = always_failing(&group, "fails-fast", policy, "dependency refused").await;
    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 3);
    let secs = Duration::from_secs;
    assert_eq!(starts, [secs(0), secs(2), secs(4), secs(6)]);
    assert_eq!(
        recorder.count(|e| *e == Seen::GaveUp("fails-fast".into(), 3)),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_backoff_gives_up_on_a_task_that_always_fails_at_once() {
    let (group, _) = group();
    // The default backoff reaches its 30 s ceiling by the tenth wait, and
    // 20 restarts take longer than the 60 s window.
    let policy = RestartPolicy::builder()
        .backoff(Backoff::default().jitter(0.0))
        .max_restarts(20)
        .build()
        .unwrap();
    let (exit, starts) = always_failing(&group, "crash-loop", policy, "refused").await;
    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 20);
    assert_eq!(starts.len(), 21);
}

#[tokio::test(start_paused = true)]
async fn panics_are_restarted_and_reported() {
    let (group, recorder) = group();
    let policy = RestartPolicy::builder()
        .backoff(every_10ms())
        .max_restarts(3)
        .build()
        .unwrap();
    let runs = Runs::default();
    let counter = runs.clone();
    let exit = group
        .spawn_supervised("panicky", policy, move |_| {
            let run = counter.next();
            if run == 2 {
                panic!("the factory itself panicked");
            }
            async move {
                if run < 4 {
                    panic!("run {run} panicked");
                }
                Ok::<_, std::io::Error>(run)
            }
        })
        .await;
    assert!(!exit.gave_up);
    assert_eq!(exit.restarts, 3);
    assert!(matches!(exit.exit, TaskExit::Completed(4)));
    let panics: Vec<String> = recorder
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Seen::Panicked(_, message) => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(
        panics,
        [
            "run 1 panicked",
            "the factory itself panicked",
            "run 3 panicked"
        ]
    );
    assert!(
        recorder
            .events()
            .contains(&Seen::Ended("panicky".into(), TaskEnd::Completed))
    );
}

#[tokio::test(start_paused = true)]
async fn cancellation_during_a_backoff_stops_the_supervisor() {
    let (group, recorder) = group();
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(Duration::from_secs(60), Duration::from_secs(60)).jitter(0.0))
        .build()
        .unwrap();
    let handle = group.spawn_supervised("waiting", policy, |_| async { Err::<(), _>("boom") });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = group.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean());
    assert_eq!(report.waited, Duration::ZERO);
    let exit = handle.await;
    assert!(matches!(exit.exit, TaskExit::Cancelled(None)));
    assert_eq!(exit.restarts, 0);
    assert!(!exit.gave_up);
    assert!(
        recorder
            .events()
            .contains(&Seen::Ended("waiting".into(), TaskEnd::Cancelled))
    );
    // The restart it was waiting for never happened: none is reported.
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Restarted(..))),
        0,
        "{:?}",
        recorder.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_loop_that_honours_its_token_is_not_restarted_at_shutdown() {
    let (group, _) = group();
    let handle = group.spawn_supervised("poller", RestartPolicy::default(), |token| async move {
        token.cancelled().await;
        Err::<(), _>("interrupted")
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = group.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean());
    let exit = handle.await;
    assert_eq!(exit.restarts, 0);
    assert!(matches!(exit.exit, TaskExit::Failed("interrupted")));
}

#[tokio::test(start_paused = true)]
async fn a_backoff_as_long_as_a_duration_can_be_waits_instead_of_panicking() {
    let (group, recorder) = group();
    // Valid, and the seconds of `Duration::MAX` round up to 2^64 as f64.
    let policy = RestartPolicy::builder()
        .backoff(Backoff::new(Duration::MAX, Duration::MAX).jitter(1e-300))
        .seed(1)
        .build()
        .unwrap();
    let handle = group.spawn_supervised("patient", policy, |_| async { Err::<(), _>("boom") });
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(group.live(), 1, "still waiting for its restart");
    let report = group.shutdown(Duration::from_secs(5)).await;
    assert!(report.is_clean(), "{report}");
    let exit = handle.await;
    assert!(matches!(exit.exit, TaskExit::Cancelled(None)), "{exit:?}");
    assert_eq!(recorder.count(|e| matches!(e, Seen::Panicked(..))), 0);
}

/// A group whose metrics sink panics on every restart and give-up report.
fn faulty_group() -> (TaskGroup, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let group = TaskGroup::builder()
        .name("faulty")
        .metrics(Faulty::metrics(&recorder, |event| {
            matches!(
                event,
                palisade_core::Event::TaskRestarted { .. }
                    | palisade_core::Event::TaskGaveUp { .. }
            )
        }))
        .build()
        .unwrap();
    (group, recorder)
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_on_a_restart_does_not_end_the_supervision() {
    let (group, recorder) = faulty_group();
    let policy = RestartPolicy::builder()
        .backoff(every_10ms())
        .max_restarts(5)
        .build()
        .unwrap();
    let runs = Runs::default();
    let counter = runs.clone();
    let exit = group
        .spawn_supervised("flaky", policy, move |_| {
            let run = counter.next();
            async move { if run < 3 { Err("not yet") } else { Ok(run) } }
        })
        .await;
    assert!(
        matches!(exit.exit, TaskExit::Completed(3)),
        "{:?}",
        exit.exit
    );
    assert_eq!(exit.restarts, 2);
    assert!(!exit.gave_up);
    assert_eq!(runs.count(), 3);
    assert_eq!(recorder.count(|e| matches!(e, Seen::Restarted(..))), 2);
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Ended(_, TaskEnd::Completed))),
        1,
        "{:?}",
        recorder.events()
    );
}

#[tokio::test(start_paused = true)]
async fn a_sink_that_panics_on_a_give_up_keeps_the_tasks_own_exit() {
    let (group, recorder) = faulty_group();
    let policy = RestartPolicy::builder()
        .backoff(every_10ms())
        .max_restarts(1)
        .build()
        .unwrap();
    let exit = group
        .spawn_supervised("doomed", policy, |_| async { Err::<(), _>("refused") })
        .await;
    assert!(exit.gave_up);
    assert_eq!(exit.restarts, 1);
    assert!(
        matches!(exit.exit, TaskExit::Failed("refused")),
        "{:?}",
        exit.exit
    );
    assert_eq!(recorder.count(|e| matches!(e, Seen::GaveUp(..))), 1);
    assert_eq!(
        recorder.count(|e| matches!(e, Seen::Ended(_, TaskEnd::Failed))),
        1,
        "{:?}",
        recorder.events()
    );
    assert_eq!(group.live(), 0);
}

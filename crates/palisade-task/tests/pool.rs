//! The worker pool never runs more than N jobs at once.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use palisade_task::{SubmitError, WorkerPool};
use support::Booby;

/// Tracks how many jobs run at once, and the most ever seen.
#[derive(Default)]
struct Concurrency {
    now: AtomicUsize,
    max: AtomicUsize,
    done: AtomicUsize,
}

impl Concurrency {
    async fn job(self: Arc<Self>, work: Duration) -> Result<(), std::io::Error> {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(work).await;
        self.now.fetch_sub(1, Ordering::SeqCst);
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[tokio::test(start_paused = true)]
async fn never_more_than_n_jobs_at_once_from_a_queue() {
    let pool = WorkerPool::builder()
        .name("bounded")
        .workers(3)
        .queue_capacity(8)
        .build()
        .unwrap();
    let seen = Arc::new(Concurrency::default());
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..60 {
        let work = Duration::from_millis(rng.u64(1..=50));
        pool.submit(seen.clone().job(work)).await.unwrap();
        assert!(pool.stats().running <= 3);
    }
    let report = pool.shutdown(Duration::from_secs(60)).await;
    assert!(report.is_clean(), "{report}");
    let stats = pool.stats();
    assert_eq!(stats.submitted, 60);
    assert_eq!(stats.completed, 60);
    assert_eq!(seen.done.load(Ordering::SeqCst), 60);
    assert_eq!(
        seen.max.load(Ordering::SeqCst),
        3,
        "the pool was used in full"
    );
    assert_eq!(stats.running, 0);
}

#[tokio::test(start_paused = true)]
async fn a_stream_of_jobs_is_fed_with_backpressure() {
    let pool = WorkerPool::builder()
        .workers(2)
        .queue_capacity(1)
        .build()
        .unwrap();
    let seen = Arc::new(Concurrency::default());
    let jobs = futures_util::stream::iter(
        (0..20).map(|i| seen.clone().job(Duration::from_millis(10 * (i % 4 + 1)))),
    );
    assert_eq!(pool.submit_stream(jobs).await, 20);
    pool.shutdown(Duration::from_secs(60)).await;
    assert_eq!(seen.done.load(Ordering::SeqCst), 20);
    assert_eq!(seen.max.load(Ordering::SeqCst), 2);
    assert_eq!(pool.stats().rejected, 0);
}

#[tokio::test(start_paused = true)]
async fn failing_and_panicking_jobs_are_counted_and_workers_go_on() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    for i in 0..9_u32 {
        pool.submit(async move {
            match i % 3 {
                0 => panic!("job {i} panicked"),
                1 => Err(format!("job {i} failed")),
                _ => Ok(i),
            }
        })
        .await
        .unwrap();
    }
    let report = pool.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean());
    let stats = pool.stats();
    assert_eq!((stats.completed, stats.failed, stats.panicked), (3, 3, 3));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_and_shutdown_accounts_for_every_job() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let seen = Arc::new(Concurrency::default());
    // One running (after the worker picks it up), two queued, the rest refused.
    pool.try_submit(seen.clone().job(Duration::from_secs(10)))
        .unwrap();
    tokio::task::yield_now().await;
    pool.try_submit(seen.clone().job(Duration::from_secs(10)))
        .unwrap();
    pool.try_submit(seen.clone().job(Duration::from_secs(10)))
        .unwrap();
    assert_eq!(
        pool.try_submit(seen.clone().job(Duration::from_secs(10))),
        Err(SubmitError::Full)
    );
    assert_eq!(pool.stats().queued, 2);

    // The deadline leaves time for one job only: one completes, one is
    // abandoned half-way, one is never run.
    let report = pool.shutdown(Duration::from_secs(15)).await;
    assert_eq!(report.aborted().count(), 1);
    let stats = pool.stats();
    assert_eq!(stats.submitted, 3);
    assert_eq!(stats.rejected, 1);
    assert_eq!(stats.completed, 1);
    assert_eq!(stats.abandoned, 1);
    assert_eq!(stats.dropped_at_shutdown, 1);
    assert_eq!(
        stats.completed + stats.abandoned + stats.dropped_at_shutdown,
        stats.submitted
    );
    assert_eq!(
        pool.try_submit(async {}),
        Err(SubmitError::Closed),
        "closed after shutdown"
    );
    assert!(pool.submit(async {}).await.is_err());
}

#[test]
fn the_builder_checks_its_values() {
    let err = WorkerPool::builder().workers(0).build().unwrap_err();
    assert_eq!(err.field(), "workers");
    let err = WorkerPool::builder().queue_capacity(0).build().unwrap_err();
    assert_eq!(err.field(), "queue_capacity");
    let err = WorkerPool::builder().build().unwrap_err();
    assert_eq!(err.field(), "runtime", "no runtime on this thread");
}

/// Seeded stress on a multi-threaded runtime: 4 workers, 8 producers.
#[test]
fn stress_on_many_threads_keeps_the_bound() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let pool = WorkerPool::builder()
            .workers(4)
            .queue_capacity(16)
            .build()
            .unwrap();
        let seen = Arc::new(Concurrency::default());
        let mut producers = Vec::new();
        for p in 0..8_u64 {
            let pool = pool.clone();
            let seen = seen.clone();
            producers.push(tokio::spawn(async move {
                let mut rng = fastrand::Rng::with_seed(p);
                for _ in 0..50 {
                    let work = Duration::from_micros(rng.u64(0..200));
                    pool.submit(seen.clone().job(work)).await.unwrap();
                }
            }));
        }
        for producer in producers {
            producer.await.unwrap();
        }
        let report = pool.shutdown(Duration::from_secs(30)).await;
        assert!(report.is_clean());
        assert_eq!(seen.done.load(Ordering::SeqCst), 400);
        assert!(seen.max.load(Ordering::SeqCst) <= 4);
        assert_eq!(pool.stats().completed, 400);
    });
}

/// Seeded stress: producers on their own threads submit while the pool
/// shuts down; once they stop, every accepted job is accounted for.
#[test]
fn submits_racing_a_shutdown_are_all_accounted_for() {
    for round in 0..20_u64 {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let pool = {
            let _entered = runtime.enter();
            WorkerPool::builder()
                .workers(2)
                .queue_capacity(4)
                .build()
                .unwrap()
        };
        let start = Arc::new(std::sync::Barrier::new(4));
        let producers: Vec<_> = (0..3)
            .map(|p| {
                let (pool, start) = (pool.clone(), start.clone());
                std::thread::spawn(move || {
                    let mut rng = fastrand::Rng::with_seed(round * 8 + p);
                    start.wait();
                    // Bounded: the pool refuses everything once shut down.
                    for _ in 0..1_000_000 {
                        let spin = rng.u32(0..200);
                        let job = async move {
                            std::hint::black_box((0..spin).sum::<u32>());
                            Ok::<_, std::io::Error>(())
                        };
                        if pool.try_submit(job) == Err(SubmitError::Closed) {
                            return;
                        }
                    }
                })
            })
            .collect();
        start.wait();
        runtime.block_on(pool.shutdown(Duration::from_millis(1)));
        for producer in producers {
            producer.join().unwrap();
        }
        // The shutdown waits a second for the aborted workers; a worker
        // thread starved for longer drops its job later.
        let settled = std::time::Instant::now();
        while pool.stats().running > 0 && settled.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let stats = pool.stats();
        assert_eq!(stats.queued, 0, "round {round}: {stats:?}");
        assert_eq!(stats.running, 0, "round {round}: {stats:?}");
        assert_eq!(
            stats.completed
                + stats.failed
                + stats.panicked
                + stats.abandoned
                + stats.dropped_at_shutdown,
            stats.submitted,
            "round {round}: {stats:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_whose_caller_stops_waiting_still_accounts_for_every_job() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(20)
        .build()
        .unwrap();
    let seen = Arc::new(Concurrency::default());
    for _ in 0..20 {
        pool.try_submit(seen.clone().job(Duration::from_secs(10)))
            .unwrap();
    }
    tokio::task::yield_now().await;
    // The caller's own deadline runs out long before the shutdown's.
    let waited = tokio::time::timeout(
        Duration::from_secs(1),
        pool.shutdown(Duration::from_secs(15)),
    )
    .await;
    assert!(waited.is_err());
    // The shutdown goes on without it.
    tokio::time::sleep(Duration::from_secs(60)).await;
    let stats = pool.stats();
    assert_eq!(stats.queued, 0);
    assert_eq!(
        stats.completed + stats.abandoned + stats.dropped_at_shutdown,
        stats.submitted,
        "{stats:?}"
    );
    assert_eq!((stats.completed, stats.abandoned), (1, 1));
}

/// A submit that waited for room, was handed the slot a started job freed,
/// and is not polled again (the `select!` loop that called it went on to
/// shut the pool down): the shutdown does not wait for it, and its job is
/// still counted.
#[tokio::test(start_paused = true)]
async fn a_submit_left_unpolled_with_its_slot_does_not_hold_up_the_shutdown() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(1)
        .build()
        .unwrap();
    let (release, running) = tokio::sync::oneshot::channel::<()>();
    pool.try_submit(async move { running.await.map_err(|_| "dropped") })
        .unwrap();
    tokio::task::yield_now().await;
    pool.try_submit(async { Ok::<(), &str>(()) }).unwrap();
    let mut waiting = Box::pin(pool.submit(async { Ok::<(), &str>(()) }));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        waiting.as_mut().poll(&mut cx).is_pending(),
        "the queue is full"
    );
    // The first job ends; the worker takes the queued one, and the freed
    // slot goes to the waiting submit, which is not polled again.
    release.send(()).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;

    let report = tokio::time::timeout(
        Duration::from_secs(60),
        pool.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("the shutdown ends without the waiting submit");
    assert!(report.is_clean(), "{report}");
    // So does a second one, while the submit still holds its slot.
    tokio::time::timeout(
        Duration::from_secs(60),
        pool.shutdown(Duration::from_secs(1)),
    )
    .await
    .expect("a second shutdown does not wait for the submit either");
    // Polled at last, the submit is refused (the pool is shut down) and
    // gives its slot back; its job is counted as refused.
    assert!(matches!(
        waiting.as_mut().poll(&mut cx),
        Poll::Ready(Err(SubmitError::Closed))
    ));
    drop(waiting);
    tokio::time::sleep(Duration::from_millis(1)).await;
    let stats = pool.stats();
    assert_eq!(stats.submitted + stats.rejected, 3, "{stats:?}");
    assert_eq!(
        stats.completed + stats.dropped_at_shutdown,
        stats.submitted,
        "{stats:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn jobs_whose_destructors_panic_are_counted_when_refused_or_left_at_shutdown() {
    let pool = WorkerPool::builder()
        .workers(1)
        .queue_capacity(2)
        .build()
        .unwrap();
    let trapped = |booby: Booby| async move {
        let _booby = booby;
        std::future::pending::<Result<(), &str>>().await
    };
    // One running, two queued, one refused.
    pool.try_submit(trapped(Booby(true))).unwrap();
    tokio::task::yield_now().await;
    pool.try_submit(trapped(Booby(true))).unwrap();
    pool.try_submit(trapped(Booby(true))).unwrap();
    assert_eq!(
        pool.try_submit(trapped(Booby(true))),
        Err(SubmitError::Full)
    );
    pool.shutdown(Duration::from_millis(10)).await;
    let stats = pool.stats();
    assert_eq!((stats.submitted, stats.rejected), (3, 1), "{stats:?}");
    assert_eq!(stats.dropped_at_shutdown, 2, "{stats:?}");
    assert_eq!(
        pool.try_submit(trapped(Booby(true))),
        Err(SubmitError::Closed)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stream_waiting_for_its_next_job_stops_when_the_pool_shuts_down() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    let feeder = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let idle = futures_util::stream::pending::<std::future::Ready<Result<(), String>>>();
            pool.submit_stream(idle).await
        })
    };
    tokio::time::sleep(Duration::from_millis(10)).await;
    pool.shutdown(Duration::from_secs(1)).await;
    let queued = tokio::time::timeout(Duration::from_secs(60), feeder)
        .await
        .expect("submit_stream returns once the pool shuts down")
        .unwrap();
    assert_eq!(queued, 0);
}

/// An error whose destructor panics.
#[derive(Debug)]
struct TrappedError(#[allow(dead_code)] Booby);

impl std::fmt::Display for TrappedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("trapped")
    }
}

#[tokio::test(start_paused = true)]
async fn a_jobs_result_whose_destructor_panics_counts_as_what_the_job_returned() {
    let pool = WorkerPool::builder().workers(1).build().unwrap();
    pool.submit(async { Err::<(), _>(TrappedError(Booby(true))) })
        .await
        .unwrap();
    pool.submit(async { Ok::<_, String>(Booby(true)) })
        .await
        .unwrap();
    let report = pool.shutdown(Duration::from_secs(1)).await;
    assert!(report.is_clean(), "{report}");
    let stats = pool.stats();
    assert_eq!(
        (stats.completed, stats.failed, stats.panicked),
        (1, 1, 0),
        "{stats:?}"
    );
}

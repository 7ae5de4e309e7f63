//! What supervision costs: spawning and joining a task with
//! `TaskGroup::spawn` next to bare `tokio::spawn`, and pushing to an
//! offload queue.
//!
//! Runtimes, groups and queues are built outside the timed closure; each
//! batch runs inside one `block_on` on a current-thread runtime.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use palisade_task::TaskGroup;
use palisade_task::offload::Offload;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
}

fn spawn_and_join(c: &mut Criterion) {
    let rt = runtime();
    c.bench_function("tokio_spawn_join", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let out = tokio::spawn(async move { i + 1 }).await.unwrap();
                    std::hint::black_box(out);
                }
                start.elapsed()
            })
        });
    });

    let group = rt.block_on(async { TaskGroup::new("bench").unwrap() });
    c.bench_function("group_spawn_join", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let exit = group
                        .spawn("job", async move { Ok::<_, std::io::Error>(i + 1) })
                        .await;
                    std::hint::black_box(exit.into_value());
                }
                start.elapsed()
            })
        });
    });
}

fn offload_push(c: &mut Criterion) {
    let rt = runtime();
    let service = tower::service_fn(|_: u64| async { Ok::<_, std::io::Error>(()) });
    let offload: Offload<u64> = rt.block_on(async {
        Offload::builder(service)
            .queue_capacity(1 << 16)
            .build()
            .unwrap()
    });
    c.bench_function("offload_push", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                let mut left = iters;
                while left > 0 {
                    // Pushes are timed; letting the worker empty the queue
                    // between chunks is not.
                    let chunk = left.min(1 << 15);
                    let start = Instant::now();
                    for i in 0..chunk {
                        std::hint::black_box(offload.push(i));
                    }
                    total += start.elapsed();
                    left -= chunk;
                    while offload.stats().queued > 0 {
                        tokio::task::yield_now().await;
                    }
                }
                total
            })
        });
    });
}

criterion_group!(benches, spawn_and_join, offload_push);
criterion_main!(benches);

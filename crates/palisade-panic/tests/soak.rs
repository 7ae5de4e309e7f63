//! 10,000 consecutive panics: no task and no memory is left behind.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use palisade_core::{Event, Metrics, MetricsSink};
use palisade_panic::CatchPanicLayer;
use palisade_panic::error::Panicked;
use tower::{Layer, ServiceExt, service_fn};

#[derive(Debug, Default)]
struct PanicCount(AtomicU64);

impl MetricsSink for PanicCount {
    fn record(&self, event: &Event<'_>) {
        if let Event::PanicCaught { .. } = event {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Pending once, then panics: a panic on a later poll.
struct PanicAfterYield {
    yielded: bool,
    id: u32,
}

impl Future for PanicAfterYield {
    type Output = Result<u32, std::io::Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        panic!("request {} failed", self.id)
    }
}

#[test]
fn ten_thousand_panics_leave_no_task_and_no_memory_behind() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let count = Arc::new(PanicCount::default());
    let layer = CatchPanicLayer::builder()
        .name("soak")
        .metrics(Metrics::from_arc(count.clone()))
        .build()
        .unwrap();
    // Thirds: panic in call, on the first poll, on a later poll.
    let svc = layer.layer(service_fn(|id: u32| {
        if id.is_multiple_of(3) {
            panic!("call {id}");
        }
        let first_poll = id % 3 == 1;
        async move {
            if first_poll {
                panic!("first poll {id}");
            }
            PanicAfterYield { yielded: false, id }.await
        }
    }));

    // Each request is its own task, as a server would run it; 100 at a time.
    let run = |from: u32, to: u32| {
        rt.block_on(async {
            let mut batch = Vec::with_capacity(100);
            for start in (from..to).step_by(100) {
                for id in start..(start + 100).min(to) {
                    batch.push(tokio::spawn(svc.clone().oneshot(id)));
                }
                for task in batch.drain(..) {
                    let err = task
                        .await
                        .expect("the task itself never panics")
                        .unwrap_err();
                    assert!(err.is::<Panicked>());
                }
                tokio::task::yield_now().await;
            }
        });
    };

    run(0, 300); // warm-up: one-time allocations of the runtime and the hook
    assert_eq!(rt.metrics().num_alive_tasks(), 0);

    let info = allocation_counter::measure(|| run(300, 10_300));

    assert_eq!(count.0.load(Ordering::Relaxed), 10_300);
    assert_eq!(rt.metrics().num_alive_tasks(), 0, "no task left behind");
    eprintln!("10,000 panics: {info:?}");
    assert!(
        info.count_total >= 10_000,
        "the panics did allocate: {info:?}"
    );
    assert!(
        info.count_current == 0 && info.bytes_current == 0,
        "memory grew over 10,000 panics: {info:?}"
    );
}

//! `Offload::shutdown` returns within the abort grace even when a service
//! blocks its thread, and names the worker it leaves behind. Its own test
//! binary: it installs a global `tracing` subscriber.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::channel;
use std::time::Duration;

use palisade_task::offload::{Offload, Pushed};
use support::CaptureSubscriber;

#[test]
fn shutdown_does_not_wait_for_a_worker_blocking_its_thread() {
    let logs = CaptureSubscriber::default();
    tracing::subscriber::set_global_default(logs.clone()).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    let (entered, on_entered) = channel::<()>();
    let (release, on_release) = channel::<()>();
    let on_release = Arc::new(std::sync::Mutex::new(on_release));
    let returned = Arc::new(AtomicBool::new(false));
    let flag = returned.clone();
    // Synchronous I/O in `call`: blocks its thread until released (or for
    // 30 s at most), out of reach of an abort.
    let service = tower::service_fn(move |_: u32| {
        entered.send(()).unwrap();
        let _ = on_release
            .lock()
            .unwrap()
            .recv_timeout(Duration::from_secs(30));
        flag.store(true, Ordering::SeqCst);
        std::future::ready(Ok::<_, std::io::Error>(()))
    });
    let offload = {
        let _entered = runtime.enter();
        Offload::builder(service)
            .name("blocking")
            .drain_deadline(Duration::from_millis(100))
            .abort_grace(Duration::from_millis(100))
            .build()
            .unwrap()
    };
    assert_eq!(offload.push(1), Pushed::Queued);
    on_entered.recv_timeout(Duration::from_secs(30)).unwrap();

    let stats = runtime.block_on(offload.shutdown());
    assert!(
        !returned.load(Ordering::SeqCst),
        "shutdown returned while the call was still blocked"
    );
    assert_eq!(stats.in_flight, 1, "{stats:?}");
    assert_eq!(stats.delivered + stats.dropped_total(), 0, "{stats:?}");
    let warned = logs.0.lock().unwrap().iter().any(|l| {
        l.level == tracing::Level::WARN
            && l.fields.get("queue").map(String::as_str) == Some("blocking")
            && l.fields
                .get("workers")
                .is_some_and(|w| w.contains("blocking-worker-0"))
    });
    assert!(warned, "the worker left running is logged");

    // Once released, the worker ends by itself and its item is counted; a
    // second shutdown finds it done. Waiting for that here, for up to 30 s,
    // keeps a slow machine's scheduling out of the shutdown's short grace.
    release.send(()).unwrap();
    let settled = std::time::Instant::now();
    while offload.stats().in_flight != 0 && settled.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let stats = runtime.block_on(offload.shutdown());
    assert_eq!(stats.in_flight, 0, "{stats:?}");
    assert_eq!(stats.pushed, stats.delivered + stats.dropped_total());
}

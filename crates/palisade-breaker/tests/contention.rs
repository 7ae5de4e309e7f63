//! Seeded multi-threaded stress tests: exactly N probes out of 64 racing
//! callers, and exact window counts under concurrent recording.
//!
//! Each round releases every thread at once from a barrier; a seeded
//! number of spins before the call varies the interleaving from round to
//! round, reproducibly.

mod common;

use std::sync::{Arc, Barrier, mpsc};
use std::task::Poll;
use std::thread;
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState, ManualClock};
use tower::{Layer, Service, service_fn};

const TASKS: usize = 64;
const PROBES: u32 = 3;

/// SplitMix64, for seeded spins and outcomes.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[derive(Clone, Copy)]
enum Req {
    Fail,
    Hang,
}

fn inner() -> impl Service<
    Req,
    Response = (),
    Error = BoxError,
    Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>>,
> + Clone
+ Send {
    service_fn(|r: Req| -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send>> {
        match r {
            Req::Fail => Box::pin(async { Err::<(), BoxError>("down".into()) }),
            Req::Hang => Box::pin(std::future::pending()),
        }
    })
}

fn run_round(seed: u64, start_half_open: bool) {
    let clock = ManualClock::new();
    let layer = CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .count_window(1)
        .minimum_calls(1)
        .open_wait(Duration::from_secs(1))
        .half_open_probes(PROBES)
        .build()
        .unwrap();
    let handle = layer.handle();
    let svc = layer.layer(inner());
    assert!(common::now(svc.clone().call(Req::Fail)).is_err());
    assert_eq!(handle.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(1));
    if start_half_open {
        assert_eq!(handle.refresh(), CircuitState::HalfOpen);
    }
    let barrier = Arc::new(Barrier::new(TASKS));
    let threads: Vec<_> = (0..TASKS)
        .map(|i| {
            let mut svc = svc.clone();
            let barrier = barrier.clone();
            let spins = mix(seed ^ (i as u64) << 32) % 4_000;
            thread::spawn(move || {
                barrier.wait();
                for _ in 0..spins {
                    std::hint::spin_loop();
                }
                let mut future = Box::pin(svc.call(Req::Hang));
                match common::poll_once(future.as_mut()) {
                    Poll::Pending => Some(future),
                    Poll::Ready(result) => {
                        assert!(result.is_err(), "a refused call fails");
                        None
                    }
                }
            })
        })
        .collect();
    let admitted: Vec<_> = threads
        .into_iter()
        .filter_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(
        admitted.len(),
        PROBES as usize,
        "seed {seed}: exactly N probes"
    );
    assert_eq!(handle.state(), CircuitState::HalfOpen);
    assert_eq!(handle.probes().admitted, u64::from(PROBES));
    drop(admitted);
    assert_eq!(
        handle.probes().admitted,
        0,
        "seed {seed}: dropped probes give slots back"
    );
}

#[test]
fn sixty_four_threads_racing_a_half_open_breaker_admit_exactly_three_probes() {
    for seed in 0..60 {
        run_round(seed, true);
    }
}

#[test]
fn sixty_four_threads_racing_out_of_open_admit_exactly_three_probes() {
    // The first callers also race to make the open -> half-open transition.
    for seed in 1000..1060 {
        run_round(seed, false);
    }
}

#[test]
fn concurrent_recording_loses_no_outcome() {
    const THREADS: u64 = 8;
    const CALLS: u64 = 2_000;
    for (window, label) in [(true, "count"), (false, "time")] {
        for seed in 0..3_u64 {
            let clock = ManualClock::new();
            let builder = CircuitBreakerLayer::builder().clock(clock.clock());
            // Windows that hold every call, judged never: the counts must
            // be exactly the totals.
            let layer = if window {
                builder.count_window(16_384).minimum_calls(16_384)
            } else {
                builder
                    .time_window(Duration::from_secs(10), 10)
                    .minimum_calls(655_350)
            }
            .build()
            .unwrap();
            let svc = layer.layer(service_fn(|fail: bool| {
                std::future::ready(if fail {
                    Err::<(), BoxError>("x".into())
                } else {
                    Ok(())
                })
            }));
            let barrier = Arc::new(Barrier::new(THREADS as usize));
            let threads: Vec<_> = (0..THREADS)
                .map(|t| {
                    let mut svc = svc.clone();
                    let barrier = barrier.clone();
                    thread::spawn(move || {
                        barrier.wait();
                        let mut failures = 0;
                        for i in 0..CALLS {
                            let fail = mix(seed << 40 ^ t << 20 ^ i).is_multiple_of(3);
                            failures += u64::from(fail);
                            let _ = common::now(svc.call(fail));
                        }
                        failures
                    })
                })
                .collect();
            let failures: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
            let counts = layer.handle().counts();
            assert_eq!(counts.calls, THREADS * CALLS, "{label} window, seed {seed}");
            assert_eq!(counts.failures, failures, "{label} window, seed {seed}");
            assert_eq!(layer.handle().state(), CircuitState::Closed);
        }
    }
}

/// Holds the first non-zero `BreakerRates` a call sends until the test has
/// acted, then keeps the last rates seen, as a gauge does.
struct HeldGauge {
    hold: std::sync::atomic::AtomicBool,
    reached: Handoff,
    go: Handoff,
    last: std::sync::Mutex<Option<(f64, u64)>>,
}

/// A one-time signal from one thread to another whose wait gives up (and
/// fails the test) after 30 s instead of hanging it.
struct Handoff(std::sync::Mutex<(Option<mpsc::Sender<()>>, Option<mpsc::Receiver<()>>)>);

impl Handoff {
    fn new() -> Self {
        let (tx, rx) = mpsc::channel();
        Self(std::sync::Mutex::new((Some(tx), Some(rx))))
    }

    fn signal(&self) {
        let tx = self.0.lock().unwrap().0.take().expect("signalled once");
        tx.send(()).unwrap();
    }

    fn wait(&self) {
        let rx = self.0.lock().unwrap().1.take().expect("awaited once");
        rx.recv_timeout(Duration::from_secs(30))
            .expect("the other thread signalled within 30 s");
    }
}

impl palisade_core::MetricsSink for HeldGauge {
    fn record(&self, event: &palisade_core::Event<'_>) {
        if let palisade_core::Event::BreakerRates {
            failure_rate,
            calls,
            ..
        } = *event
        {
            if calls > 0 && self.hold.swap(false, std::sync::atomic::Ordering::SeqCst) {
                self.reached.signal();
                self.go.wait();
            }
            *self.last.lock().unwrap() = Some((failure_rate, calls));
        }
    }
}

#[test]
fn a_calls_rates_sent_across_a_reset_do_not_outlive_it() {
    let gauge = Arc::new(HeldGauge {
        hold: true.into(),
        reached: Handoff::new(),
        go: Handoff::new(),
        last: std::sync::Mutex::new(None),
    });
    let layer = CircuitBreakerLayer::builder()
        .time_window(Duration::from_secs(10), 10)
        .minimum_calls(100)
        .metrics(palisade_core::Metrics::from_arc(gauge.clone()))
        .build()
        .unwrap();
    let mut svc = layer.layer(inner());
    let caller = thread::spawn(move || {
        let call = svc.call(Req::Fail);
        let _ = block_on(call);
    });
    // The call is counted and its rates are on their way to the gauge:
    // an operator forces the breaker open (a fresh, empty window) now.
    gauge.reached.wait();
    let handle = layer.handle();
    handle.force_open();
    gauge.go.signal();
    caller.join().unwrap();
    assert_eq!(handle.counts().calls, 0);
    assert_eq!(
        *gauge.last.lock().unwrap(),
        Some((0.0, 0)),
        "the gauge kept the rates of the window the reset emptied"
    );
}

/// Polls `future` on this thread until it is ready.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

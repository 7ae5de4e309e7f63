//! Probe futures dropped at random points never leave the breaker stuck in
//! half-open: every slot comes back, and the breaker closes once enough
//! probes complete.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_breaker::CircuitBreakerLayer;
use palisade_core::{BoxError, CircuitState, ManualClock};
use tower::{Layer, Service, service_fn};

/// Ready after `polls` polls.
struct After {
    polls: u32,
}

impl Future for After {
    type Output = Result<(), BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if self.polls == 0 {
            Poll::Ready(Ok(()))
        } else {
            self.polls -= 1;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % bound
    }
}

#[test]
fn dropping_probe_futures_at_random_points_never_sticks_the_breaker() {
    const PROBES: u32 = 3;
    let mut closed_by_the_round = 0;
    for seed in 0..500 {
        let mut rng = Rng(seed);
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
        let mut svc = layer.layer(service_fn(
            |polls: Option<u32>| -> Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>> {
                match polls {
                    None => Box::pin(async { Err::<(), BoxError>("down".into()) }),
                    Some(polls) => Box::pin(After { polls }),
                }
            },
        ));
        assert!(common::now(svc.call(None)).is_err());
        clock.advance(Duration::from_secs(1));
        assert_eq!(handle.refresh(), CircuitState::HalfOpen);

        // Up to 12 calls in flight; each step either starts a call, polls
        // one, or drops one, at random.
        let mut in_flight: Vec<Pin<Box<_>>> = Vec::new();
        for _ in 0..40 {
            match rng.next(3) {
                0 if in_flight.len() < 12 => {
                    let polls = rng.next(4) as u32;
                    let mut f = Box::pin(svc.call(Some(polls)));
                    // A refused call is ready at once; keep admitted ones.
                    if common::poll_once(f.as_mut()).is_pending() {
                        in_flight.push(f);
                    }
                }
                1 if !in_flight.is_empty() => {
                    let i = rng.next(in_flight.len() as u64) as usize;
                    if common::poll_once(in_flight[i].as_mut()).is_ready() {
                        drop(in_flight.swap_remove(i));
                    }
                }
                _ if !in_flight.is_empty() => {
                    let i = rng.next(in_flight.len() as u64) as usize;
                    drop(in_flight.swap_remove(i));
                }
                _ => {}
            }
            let state = handle.state();
            assert!(
                state == CircuitState::HalfOpen || state == CircuitState::Closed,
                "seed {seed}: {state:?}"
            );
            if state == CircuitState::HalfOpen {
                let p = handle.probes();
                assert!(p.admitted <= u64::from(PROBES));
                assert!(p.completed <= p.admitted);
            }
        }
        drop(in_flight);
        if handle.state() == CircuitState::Closed {
            closed_by_the_round += 1;
            continue;
        }
        // Nothing is in flight: every slot not used by a finished probe is
        // free again, and finishing the rest closes the breaker.
        let p = handle.probes();
        assert_eq!(p.admitted, p.completed, "seed {seed}: a slot leaked");
        for _ in p.completed..u64::from(PROBES) {
            assert!(common::now(svc.call(Some(0))).is_ok(), "seed {seed}: stuck");
        }
        assert_eq!(handle.state(), CircuitState::Closed, "seed {seed}");
    }
    assert!(closed_by_the_round > 0, "some rounds close on their own");
}

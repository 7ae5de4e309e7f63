//! The breaker against a small reference model: any sequence of outcomes,
//! call durations and time steps leaves the model and the breaker in the
//! same state, with the same window counts, probe counts, admissions and
//! `retry_after`.

mod common;

use std::collections::VecDeque;
use std::time::Duration;

use palisade_breaker::error::CircuitOpen;
use palisade_breaker::{CircuitBreakerHandle, CircuitBreakerLayer};
use palisade_core::{BoxError, CircuitState, KeyKind, ManualClock, PolicyName, RateLimited};
use proptest::prelude::*;
use tower::{Layer, Service, service_fn};

#[derive(Clone, Copy, Debug)]
enum WindowKind {
    Count(usize),
    Time { bucket_ms: u64, buckets: usize },
}

#[derive(Clone, Debug)]
struct Cfg {
    window: WindowKind,
    minimum_calls: u64,
    threshold: f64,
    slow: Option<(u64, f64)>,
    open_wait_ms: u64,
    backoff_max_ms: Option<u64>,
    probes: u32,
    max_wait_ms: u64,
    cancelled_as_failure: bool,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Call {
        fail: bool,
        ignored: bool,
        cancel: bool,
        millis: u64,
    },
    Advance(u64),
    Refresh,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum MState {
    Closed,
    Open {
        until: u64,
    },
    HalfOpen {
        since: u64,
        done: u64,
        failures: u64,
        slow: u64,
    },
}

struct Model {
    cfg: Cfg,
    now: u64,
    state: MState,
    openings: u32,
    count: VecDeque<(bool, bool)>,
    /// (tick, failure, slow)
    timed: Vec<(u64, bool, bool)>,
}

const MS: u64 = 1_000_000;

impl Model {
    fn new(cfg: Cfg) -> Self {
        Self {
            cfg,
            now: 0,
            state: MState::Closed,
            openings: 0,
            count: VecDeque::new(),
            timed: Vec::new(),
        }
    }

    fn counts(&self) -> (u64, u64, u64) {
        match self.cfg.window {
            WindowKind::Count(_) => self.count.iter().fold((0, 0, 0), |(c, f, s), (fl, sl)| {
                (c + 1, f + u64::from(*fl), s + u64::from(*sl))
            }),
            WindowKind::Time { bucket_ms, buckets } => {
                let tick = self.now / (bucket_ms * MS);
                self.timed
                    .iter()
                    .filter(|(t, _, _)| *t + buckets as u64 > tick)
                    .fold((0, 0, 0), |(c, f, s), (_, fl, sl)| {
                        (c + 1, f + u64::from(*fl), s + u64::from(*sl))
                    })
            }
        }
    }

    fn over(&self, calls: u64, failures: u64, slow: u64) -> bool {
        let rate = |x: u64| x as f64 / calls as f64;
        rate(failures) >= self.cfg.threshold || self.cfg.slow.is_some_and(|(_, t)| rate(slow) >= t)
    }

    fn open(&mut self) {
        self.openings += 1;
        let base = Duration::from_millis(self.cfg.open_wait_ms);
        let wait = match self.cfg.backoff_max_ms {
            Some(max) => {
                let max = Duration::from_millis(max);
                let secs = base.as_secs_f64() * 2f64.powi(self.openings as i32 - 1);
                if secs < max.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    max
                }
            }
            None => base,
        };
        self.state = MState::Open {
            until: self.now + wait.as_nanos() as u64,
        };
    }

    fn close(&mut self) {
        self.state = MState::Closed;
        self.openings = 0;
        self.count.clear();
        self.timed.clear();
    }

    /// The half-open max wait ran out. Calls are sequential, so no probe
    /// is still running: the finished probes decide, and with none a fresh
    /// half-open period starts.
    fn end_half_open(&mut self) {
        let MState::HalfOpen {
            done,
            failures,
            slow,
            ..
        } = self.state
        else {
            return;
        };
        if done == 0 {
            self.state = MState::HalfOpen {
                since: self.now,
                done: 0,
                failures: 0,
                slow: 0,
            };
        } else if self.over(done, failures, slow) {
            self.open();
        } else {
            self.close();
        }
    }

    /// What `CircuitBreakerHandle::refresh` does: the transitions that are
    /// due, without a call.
    fn refresh(&mut self) {
        match self.state {
            MState::Open { until } if self.now >= until => {
                self.state = MState::HalfOpen {
                    since: self.now,
                    done: 0,
                    failures: 0,
                    slow: 0,
                };
            }
            MState::HalfOpen { since, .. } if self.now - since >= self.cfg.max_wait_ms * MS => {
                self.end_half_open();
            }
            _ => {}
        }
    }

    /// Returns `Ok(())` when admitted, or the rejection's state and
    /// `retry_after`.
    fn call(
        &mut self,
        fail: bool,
        ignored: bool,
        cancel: bool,
        millis: u64,
    ) -> Result<(), (CircuitState, Option<Duration>)> {
        // Admission.
        let probe = loop {
            match self.state {
                MState::Closed => break false,
                MState::Open { until } if self.now >= until => {
                    self.state = MState::HalfOpen {
                        since: self.now,
                        done: 0,
                        failures: 0,
                        slow: 0,
                    };
                }
                MState::Open { until } => {
                    return Err((
                        CircuitState::Open,
                        Some(Duration::from_nanos(until - self.now)),
                    ));
                }
                MState::HalfOpen { since, .. } if self.now - since >= self.cfg.max_wait_ms * MS => {
                    self.end_half_open();
                }
                // Calls are sequential: a probe slot is always free here.
                // The max wait counts from the period's latest probe.
                MState::HalfOpen { ref mut since, .. } => {
                    *since = self.now;
                    break true;
                }
            }
        };
        self.now += millis * MS;
        let failure = if cancel {
            self.cfg.cancelled_as_failure.then_some(true)
        } else if ignored {
            None
        } else {
            Some(fail)
        };
        let Some(failure) = failure else {
            return Ok(());
        };
        let slow = self.cfg.slow.is_some_and(|(d, _)| millis >= d);
        if probe {
            let MState::HalfOpen {
                since,
                done,
                failures,
                slow: slows,
            } = self.state
            else {
                unreachable!()
            };
            let (done, failures, slows) = (
                done + 1,
                failures + u64::from(failure),
                slows + u64::from(slow),
            );
            if done == u64::from(self.cfg.probes) {
                if self.over(done, failures, slows) {
                    self.open();
                } else {
                    self.close();
                }
            } else {
                self.state = MState::HalfOpen {
                    since,
                    done,
                    failures,
                    slow: slows,
                };
            }
            return Ok(());
        }
        match self.cfg.window {
            WindowKind::Count(n) => {
                self.count.push_back((failure, slow));
                if self.count.len() > n {
                    self.count.pop_front();
                }
            }
            WindowKind::Time { bucket_ms, .. } => {
                self.timed
                    .push((self.now / (bucket_ms * MS), failure, slow));
            }
        }
        let (calls, failures, slows) = self.counts();
        if calls >= self.cfg.minimum_calls && self.over(calls, failures, slows) {
            self.open();
        }
        Ok(())
    }

    fn state(&self) -> CircuitState {
        match self.state {
            MState::Closed => CircuitState::Closed,
            MState::Open { .. } => CircuitState::Open,
            MState::HalfOpen { .. } => CircuitState::HalfOpen,
        }
    }
}

#[derive(Clone, Copy)]
struct Req {
    fail: bool,
    ignored: bool,
    millis: u64,
}

fn cfg_strategy() -> impl Strategy<Value = Cfg> {
    let window = prop_oneof![
        (1usize..6).prop_map(WindowKind::Count),
        (prop_oneof![Just(100u64), Just(500), Just(1000)], 1usize..5)
            .prop_map(|(bucket_ms, buckets)| WindowKind::Time { bucket_ms, buckets }),
    ];
    (
        window,
        1u64..6,
        prop_oneof![Just(0.25), Just(0.5), Just(0.75), Just(1.0)],
        proptest::option::of((
            prop_oneof![Just(50u64), Just(200)],
            prop_oneof![Just(0.5), Just(1.0)],
        )),
        prop_oneof![Just(100u64), Just(1000)],
        any::<bool>(),
        1u32..4,
        prop_oneof![Just(300u64), Just(3000)],
        any::<bool>(),
    )
        .prop_map(
            |(window, min, threshold, slow, open_wait_ms, backoff, probes, max_wait_ms, caf)| {
                let minimum_calls = match window {
                    WindowKind::Count(n) => min.min(n as u64),
                    WindowKind::Time { .. } => min,
                };
                Cfg {
                    window,
                    minimum_calls,
                    threshold,
                    slow,
                    open_wait_ms,
                    backoff_max_ms: backoff.then_some(open_wait_ms * 5),
                    probes,
                    max_wait_ms,
                    cancelled_as_failure: caf,
                }
            },
        )
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (any::<bool>(), prop::bool::weighted(0.1), prop::bool::weighted(0.1),
              prop_oneof![Just(0u64), Just(10), Just(60), Just(250)])
            .prop_map(|(fail, ignored, cancel, millis)| Op::Call { fail, ignored, cancel, millis }),
        1 => prop_oneof![Just(40u64), Just(150), Just(700), Just(2500)].prop_map(Op::Advance),
        1 => Just(Op::Refresh),
    ]
}

fn build(cfg: &Cfg, clock: &ManualClock) -> CircuitBreakerLayer {
    let mut b = CircuitBreakerLayer::builder()
        .clock(clock.clock())
        .minimum_calls(cfg.minimum_calls)
        .failure_rate_threshold(cfg.threshold)
        .open_wait(Duration::from_millis(cfg.open_wait_ms))
        .half_open_probes(cfg.probes)
        .half_open_max_wait(Duration::from_millis(cfg.max_wait_ms))
        .cancelled_as_failure(cfg.cancelled_as_failure);
    b = match cfg.window {
        WindowKind::Count(n) => b.count_window(n),
        WindowKind::Time { bucket_ms, buckets } => {
            b.time_window(Duration::from_millis(bucket_ms * buckets as u64), buckets)
        }
    };
    if let Some((ms, rate)) = cfg.slow {
        b = b
            .slow_call_duration(Duration::from_millis(ms))
            .slow_call_rate_threshold(rate);
    }
    if let Some(max) = cfg.backoff_max_ms {
        b = b.open_wait_backoff(2.0, Duration::from_millis(max));
    }
    b.build().unwrap()
}

fn check_same(model: &Model, handle: &CircuitBreakerHandle, step: usize) {
    assert_eq!(handle.state(), model.state(), "state after step {step}");
    let c = handle.counts();
    assert_eq!(
        (c.calls, c.failures, c.slow),
        model.counts(),
        "window counts after step {step}"
    );
    let probes = handle.probes();
    let expected = match model.state {
        MState::HalfOpen {
            done,
            failures,
            slow,
            ..
        } => (done, failures, slow),
        _ => (0, 0, 0),
    };
    assert_eq!(
        (probes.completed, probes.failures, probes.slow),
        expected,
        "probes after step {step}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_breaker_follows_the_reference_model(
        cfg in cfg_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..80),
    ) {
        let clock = ManualClock::new();
        let layer = build(&cfg, &clock);
        let handle = layer.handle();
        let inner_clock = clock.clone();
        let mut svc = layer.layer(service_fn(move |r: Req| {
            inner_clock.advance(Duration::from_millis(r.millis));
            let result: Result<(), BoxError> = if r.ignored {
                Err(RateLimited::new(PolicyName::new("rl"), Duration::ZERO, KeyKind::Global).into())
            } else if r.fail {
                Err("failed".into())
            } else {
                Ok(())
            };
            std::future::ready(result)
        }));
        let mut model = Model::new(cfg);
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Refresh => {
                    model.refresh();
                    prop_assert_eq!(handle.refresh(), model.state(), "step {}", step);
                }
                Op::Advance(ms) => {
                    clock.advance(Duration::from_millis(ms));
                    model.now += ms * MS;
                }
                Op::Call { fail, ignored, cancel, millis } => {
                    let expected = model.call(fail, ignored, cancel, millis);
                    let future = svc.call(Req { fail, ignored, millis });
                    match expected {
                        Ok(()) if cancel => drop(future),
                        Ok(()) => {
                            let result = common::now(future);
                            prop_assert_eq!(result.is_ok(), !fail && !ignored, "step {}", step);
                        }
                        Err((state, retry_after)) => {
                            let err = common::now(future).expect_err("model rejected");
                            let open = err.downcast_ref::<CircuitOpen>().expect("a CircuitOpen");
                            prop_assert_eq!(open.state(), state, "step {}", step);
                            if state == CircuitState::Open {
                                prop_assert_eq!(open.retry_after(), retry_after, "step {}", step);
                            }
                        }
                    }
                }
            }
            check_same(&model, &handle, step);
        }
    }
}

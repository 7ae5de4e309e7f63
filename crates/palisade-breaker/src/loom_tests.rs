//! Loom models of the lock-free paths: half-open admission, probe
//! give-back, the deciding probe, concurrent window writers, a call's
//! rates racing a reset, and a keyed map's eviction racing a trip.
//!
//! Run with
//! `RUSTFLAGS="--cfg palisade_loom" cargo test -p palisade-breaker --release --lib loom`.

use std::time::Duration;

use loom::thread;
use palisade_core::{CircuitState, ManualClock, Metrics, Outcome, TransitionReason};

use crate::breaker::{
    Breaker, Eviction, Machine, PermitKind, Take, WindowConfig, test_config as config,
};
use crate::sync::Arc;
use crate::window::{CountWindow, Counts, Recorded, code};

/// A breaker that is open with its wait already elapsed.
fn open_and_due(probes: u32) -> Arc<Breaker> {
    open_and_due_clocked(probes).0
}

/// [`open_and_due`], with its clock.
fn open_and_due_clocked(probes: u32) -> (Arc<Breaker>, ManualClock) {
    let clock = ManualClock::new();
    let breaker = Breaker::new(config(&clock, probes));
    let word = breaker.word();
    assert!(breaker.transition(
        word,
        word.mode,
        Machine::Open,
        TransitionReason::FailureRate,
        None
    ));
    clock.advance(Duration::from_secs(2));
    (Arc::new(breaker), clock)
}

/// A breaker that is half-open with no probe admitted yet.
fn half_open(probes: u32) -> Arc<Breaker> {
    half_open_clocked(probes).0
}

/// [`half_open`], with its clock.
fn half_open_clocked(probes: u32) -> (Arc<Breaker>, ManualClock) {
    let (breaker, clock) = open_and_due_clocked(probes);
    let word = breaker.word();
    assert!(breaker.transition(
        word,
        word.mode,
        Machine::HalfOpen,
        TransitionReason::WaitElapsed,
        None
    ));
    (breaker, clock)
}

/// Past the half-open maximum wait of [`config`].
const PAST_MAX_WAIT: Duration = Duration::from_secs(61);

/// Which of two outcomes a model's executions reached, so that a model
/// that never reaches one of them fails instead of passing vacuously.
#[derive(Default)]
struct Reached([std::sync::atomic::AtomicBool; 2]);

impl Reached {
    fn saw(&self, which: usize) {
        self.0[which].store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn assert_both(&self) {
        let seen = self
            .0
            .each_ref()
            .map(|b| b.load(std::sync::atomic::Ordering::Relaxed));
        assert_eq!(seen, [true, true], "both outcomes reached");
    }
}

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(f);
}

#[test]
fn loom_half_open_admits_exactly_n_probes() {
    model(|| {
        let breaker = half_open(2);
        let handles: Vec<_> = (0..3)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.admit().ok().map(|p| p.kind()))
            })
            .collect();
        let admitted: Vec<_> = handles
            .into_iter()
            .filter_map(|h| h.join().unwrap())
            .collect();
        assert_eq!(admitted.len(), 2);
        assert!(admitted.iter().all(|k| *k == PermitKind::Probe));
        assert_eq!(breaker.probes().taken, 2);
    });
}

#[test]
fn loom_racing_out_of_open_makes_one_transition_and_n_probes() {
    model(|| {
        let breaker = open_and_due(1);
        let before = breaker.word().generation;
        let handles: Vec<_> = (0..2)
            .map(|_| {
                let breaker = breaker.clone();
                thread::spawn(move || breaker.admit().is_ok())
            })
            .collect();
        let admitted = handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|ok| *ok)
            .count();
        assert_eq!(admitted, 1);
        let word = breaker.word();
        assert_eq!(word.machine, Machine::HalfOpen);
        assert_eq!(word.generation, before + 1, "exactly one transition");
    });
}

#[test]
fn loom_cancelled_probe_gives_its_slot_to_a_racing_call() {
    model(|| {
        let breaker = half_open(1);
        let first = breaker.admit().expect("the only probe slot");
        let canceller = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&first, Outcome::Cancelled))
        };
        let racer = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.admit().ok())
        };
        canceller.join().unwrap();
        let raced = racer.join().unwrap();
        // Whoever did not get the slot can get it now: it is never lost.
        let probe = match raced {
            Some(p) => {
                assert!(breaker.admit().is_err(), "one slot, one probe");
                p
            }
            None => breaker.admit().expect("slot given back"),
        };
        breaker.complete(&probe, Outcome::Success);
        assert_eq!(breaker.word().machine, Machine::Closed);
    });
}

#[test]
fn loom_the_last_probe_decides_once() {
    model(|| {
        let breaker = half_open(2);
        let before = breaker.word().generation;
        let a = breaker.admit().unwrap();
        let b = breaker.admit().unwrap();
        let ta = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&a, Outcome::Success))
        };
        let tb = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&b, Outcome::Success))
        };
        ta.join().unwrap();
        tb.join().unwrap();
        let word = breaker.word();
        assert_eq!(word.machine, Machine::Closed);
        assert_eq!(word.generation, before + 1);
    });
}

#[test]
fn loom_a_probe_taken_as_the_max_wait_ends_the_period_is_in_it_or_not_at_all() {
    let reached = std::sync::Arc::new(Reached::default());
    let seen = reached.clone();
    model(move || {
        // No probe yet. One thread takes a slot (it read its clock just
        // before the max wait ran out) while the other ends the period.
        let (breaker, clock) = half_open_clocked(2);
        let from = breaker.word();
        let just_before = clock.now() + PAST_MAX_WAIT - Duration::from_secs(2);
        clock.advance(PAST_MAX_WAIT);
        let taker = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.take_probe(from.epoch(), just_before))
        };
        breaker.refresh();
        let took = taker.join().unwrap();
        let word = breaker.word();
        match took {
            // In the period: its clock starts with it, so the period goes
            // on and the probe is never cut short.
            Take::Taken => {
                assert_eq!(word, from, "no transition");
                assert_eq!(breaker.probes().taken, 1);
                assert_eq!(breaker.openings().0, 1);
                seen.saw(0);
            }
            // After the seal: no probe ran, so a fresh period, no opening.
            Take::Stale => {
                assert_eq!(word.generation, from.generation + 1, "one transition");
                assert_eq!(word.machine, Machine::HalfOpen);
                assert_eq!(breaker.probes().taken, 0);
                assert_eq!(breaker.openings().0, 1);
                seen.saw(1);
            }
            Take::Full => panic!("two free slots"),
        }
    });
    reached.assert_both();
}

#[test]
fn loom_a_probe_finishing_as_the_max_wait_ends_the_period_counts_once() {
    let reached = std::sync::Arc::new(Reached::default());
    let seen = reached.clone();
    model(move || {
        // One healthy probe of two is running when the max wait runs out.
        let (breaker, clock) = half_open_clocked(2);
        let from = breaker.word();
        let probe = breaker.admit().unwrap();
        clock.advance(PAST_MAX_WAIT);
        let finisher = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&probe, Outcome::Success))
        };
        breaker.refresh();
        finisher.join().unwrap();
        let word = breaker.word();
        assert_eq!(word.generation, from.generation + 1, "one transition");
        // Finished before the seal: judged and closed. After: it was still
        // running, so the breaker re-opened and its outcome counts nowhere.
        match word.machine {
            Machine::Closed => {
                assert_eq!(breaker.openings().0, 0);
                seen.saw(0);
            }
            Machine::Open => {
                assert_eq!(breaker.openings().0, 2);
                seen.saw(1);
            }
            Machine::HalfOpen => panic!("a period with a probe is never renewed"),
        }
        assert_eq!(breaker.window_counts().calls, 0);
    });
    reached.assert_both();
}

#[test]
fn loom_a_call_racing_a_refresh_past_the_max_wait_is_the_new_periods_probe() {
    model(|| {
        let (breaker, clock) = half_open_clocked(1);
        let from = breaker.word();
        clock.advance(PAST_MAX_WAIT);
        let caller = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.admit().map(|p| p.kind()).ok())
        };
        breaker.refresh();
        assert_eq!(caller.join().unwrap(), Some(PermitKind::Probe));
        let word = breaker.word();
        assert_eq!(word.machine, Machine::HalfOpen);
        assert_eq!(word.generation, from.generation + 1, "one fresh period");
        assert_eq!(breaker.probes().taken, 1);
        assert_eq!(breaker.openings().0, 1, "no opening counted");
    });
}

#[test]
fn loom_concurrent_window_writers_lose_nothing() {
    model(|| {
        // Two slots for three writers: two of them replace the same slot.
        let window = Arc::new(CountWindow::new(2, 0));
        let handles: Vec<_> = [code(true, false), code(false, true), code(true, true)]
            .into_iter()
            .map(|c| {
                let window = window.clone();
                thread::spawn(move || {
                    assert!(matches!(window.record(0, c), Recorded::Counted { .. }));
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(window.counts(), window.recount(0));
        assert_eq!(window.counts().calls, 2);
    });
}

#[test]
fn loom_writers_of_an_outcome_already_in_place_race_changes_and_resets() {
    model(|| {
        // One slot, already holding a success: a second success changes
        // nothing and writes nothing, while a failure and a reset race it.
        let window = Arc::new(CountWindow::new(1, 0));
        assert!(matches!(
            window.record(0, code(false, false)),
            Recorded::Counted { .. }
        ));
        let same = {
            let window = window.clone();
            thread::spawn(move || window.record(0, code(false, false)))
        };
        let failure = {
            let window = window.clone();
            thread::spawn(move || window.record(0, code(true, false)))
        };
        window.reset(1);
        if let Recorded::Counted { counts, .. } = same.join().unwrap() {
            assert_eq!(counts.calls, 1);
        }
        let _ = failure.join().unwrap();
        // Nothing recorded for epoch 0 reaches epoch 1.
        assert_eq!(window.counts(), window.recount(1));
        assert_eq!(window.counts().calls, 0);
    });
}

#[test]
fn loom_a_success_that_skips_a_clean_window_races_a_failure() {
    model(|| {
        // Two slots of plain successes: a success may skip the ring, while
        // a failure takes a slot. Whichever lands first, the failure stays
        // in the window and the aggregate matches the slots.
        let window = Arc::new(CountWindow::new(2, 0));
        for _ in 0..2 {
            assert!(matches!(
                window.record(0, code(false, false)),
                Recorded::Counted { .. }
            ));
        }
        let success = {
            let window = window.clone();
            thread::spawn(move || window.record(0, code(false, false)))
        };
        let failure = window.record(0, code(true, false));
        assert!(matches!(failure, Recorded::Counted { .. }));
        assert!(matches!(success.join().unwrap(), Recorded::Counted { .. }));
        assert_eq!(window.counts(), window.recount(0));
        assert_eq!(window.counts().calls, 2);
        assert_eq!(window.counts().failures, 1);
    });
}

#[test]
fn loom_a_reset_racing_a_writer_keeps_the_window_consistent() {
    model(|| {
        let window = Arc::new(CountWindow::new(2, 0));
        let writer = {
            let window = window.clone();
            thread::spawn(move || window.record(0, code(true, false)))
        };
        window.reset(1);
        let mine = window.record(1, code(false, false));
        let theirs = writer.join().unwrap();
        assert!(matches!(mine, Recorded::Counted { .. }));
        let _ = theirs;
        // Whatever the order, the stale writer never reaches epoch 1.
        assert_eq!(window.counts(), window.recount(1));
        assert_eq!(window.counts().failures, 0);
    });
}

#[test]
fn loom_racing_failures_trip_the_breaker_once() {
    model(|| {
        let clock = ManualClock::new();
        let mut cfg = config(&clock, 1);
        cfg.window = WindowConfig::Count(2);
        let breaker = Arc::new(Breaker::new(cfg));
        let before = breaker.word().generation;
        let a = breaker.admit().unwrap();
        let b = breaker.admit().unwrap();
        let ta = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&a, Outcome::Failure))
        };
        let tb = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&b, Outcome::Failure))
        };
        ta.join().unwrap();
        tb.join().unwrap();
        let word = breaker.word();
        assert_eq!(word.machine, Machine::Open);
        assert_eq!(word.generation, before + 1, "one transition, not two");
        assert_eq!(breaker.openings().0, 1);
    });
}

#[test]
fn loom_a_late_writer_never_lands_in_a_recycled_bucket() {
    use std::time::Instant;

    use crate::window::TimeWindow;

    model(|| {
        let origin = Instant::now();
        // One bucket of one second: tick 1 recycles the bucket of tick 0.
        let window = Arc::new(TimeWindow::new(origin, 1_000_000_000, 1, 0));
        let late = {
            let window = window.clone();
            thread::spawn(move || window.record(0, origin, code(true, false)))
        };
        let now = origin + Duration::from_secs(1);
        let mine = window.record(0, now, code(false, false));
        let theirs = late.join().unwrap();
        assert!(matches!(mine, Recorded::Counted { .. }));
        let counts = window.counts(now);
        // Whatever the order, tick 1's bucket holds tick 1's outcome only.
        assert_eq!((counts.calls, counts.failures), (1, 0), "{theirs:?}");
    });
}

/// Under the model: a window of `buckets` one-second buckets with a
/// failure counted at tick 0; another thread records `their_code` at
/// `their_secs` while this one records a success at tick 65,536, which has
/// the bucket and the 16-bit tag of tick 0. Gives the other thread's
/// result and the counts at tick 65,536.
fn race_a_tag_lap_later(buckets: usize, their_secs: u64, their_code: u32) -> (Recorded, Counts) {
    use std::time::Instant;

    use crate::window::TimeWindow;

    let origin = Instant::now();
    let window = Arc::new(TimeWindow::new(origin, 1_000_000_000, buckets, 0));
    assert!(matches!(
        window.record(0, origin, code(true, false)),
        Recorded::Counted { .. }
    ));
    let other = {
        let window = window.clone();
        let at = origin + Duration::from_secs(their_secs);
        thread::spawn(move || window.record(0, at, their_code))
    };
    let now = origin + Duration::from_secs(65_536);
    let mine = window.record(0, now, code(false, false));
    let theirs = other.join().unwrap();
    assert!(matches!(mine, Recorded::Counted { .. }), "{mine:?}");
    (theirs, window.counts(now))
}

#[test]
fn loom_writers_after_a_long_quiet_spell_count_only_their_own_outcomes() {
    model(|| {
        // Two writers of tick 65,536: the failure of tick 0 must not come
        // back.
        let (theirs, counts) = race_a_tag_lap_later(2, 65_536, code(false, false));
        assert!(matches!(theirs, Recorded::Counted { .. }), "{theirs:?}");
        assert_eq!((counts.calls, counts.failures), (2, 0));
    });
}

#[test]
fn loom_a_writer_a_whole_tag_lap_late_never_lands_in_the_new_window() {
    model(|| {
        // One bucket. A writer that read its clock at tick 0 records only
        // now, while the other clears the bucket for tick 65,536.
        let (theirs, counts) = race_a_tag_lap_later(1, 0, code(true, false));
        assert_eq!((counts.calls, counts.failures), (1, 0), "{theirs:?}");
    });
}

/// A rates gauge: the calls of the last `BreakerRates` it was sent, kept
/// with a plain store, as a backend's gauge is.
struct CallsGauge(crate::sync::AtomicU64);

impl palisade_core::MetricsSink for CallsGauge {
    fn record(&self, event: &palisade_core::Event<'_>) {
        if let palisade_core::Event::BreakerRates { calls, .. } = *event {
            self.0.store(calls, crate::sync::Ordering::Relaxed);
        }
    }
}

/// A call's rates racing a transition of the breaker, on `window`: `act`
/// makes the transition; returns the gauge's last value.
fn rates_racing(window: WindowConfig, act: fn(&Breaker)) -> u64 {
    let clock = ManualClock::new();
    let gauge = std::sync::Arc::new(CallsGauge(crate::sync::AtomicU64::new(u64::MAX)));
    let mut cfg = config(&clock, 1);
    cfg.window = window;
    cfg.minimum_calls = 100;
    cfg.metrics = Metrics::from_arc(gauge.clone());
    let breaker = Arc::new(Breaker::new(cfg));
    let permit = breaker.admit().unwrap();
    let call = {
        let breaker = breaker.clone();
        thread::spawn(move || breaker.complete(&permit, Outcome::Failure))
    };
    act(&breaker);
    call.join().unwrap();
    gauge.0.load(crate::sync::Ordering::Relaxed)
}

fn force_open(breaker: &Breaker) {
    breaker.set_mode(crate::breaker::Mode::ForcedOpen, TransitionReason::Forced);
}

const TIME_WINDOW: WindowConfig = WindowConfig::Time {
    length: Duration::from_secs(10),
    buckets: 2,
};

#[test]
fn loom_a_calls_rates_never_outlive_the_reset_they_race() {
    // The forced-open window is empty: whatever the interleaving, the
    // gauge's last value says so, on either kind of window.
    model(|| assert_eq!(rates_racing(WindowConfig::Count(4), force_open), 0));
    model(|| assert_eq!(rates_racing(TIME_WINDOW, force_open), 0));
}

#[test]
fn loom_a_new_windows_rates_are_never_replaced_by_the_zeros_that_opened_it() {
    // A reset racing a call that may be admitted into the window the reset
    // opens: the gauge ends on that window's count, never on the reset's
    // zeros.
    model(|| {
        let clock = ManualClock::new();
        let gauge = std::sync::Arc::new(CallsGauge(crate::sync::AtomicU64::new(u64::MAX)));
        let mut cfg = config(&clock, 1);
        cfg.minimum_calls = 100;
        cfg.metrics = Metrics::from_arc(gauge.clone());
        let breaker = Arc::new(Breaker::new(cfg));
        force_open(&breaker);
        let call = {
            let breaker = breaker.clone();
            thread::spawn(move || {
                if let Ok(permit) = breaker.admit() {
                    breaker.complete(&permit, Outcome::Failure);
                }
            })
        };
        breaker.set_mode(crate::breaker::Mode::Normal, TransitionReason::Reset);
        call.join().unwrap();
        assert_eq!(
            gauge.0.load(crate::sync::Ordering::Relaxed),
            breaker.window_counts().calls
        );
    });
}

#[test]
fn loom_a_trip_keeps_the_rates_of_its_window() {
    // A trip keeps the window that tripped it: the call's count stays on
    // the gauge (and the call takes no lock to send it again).
    model(|| {
        let rates = rates_racing(WindowConfig::Count(4), |breaker| {
            let word = breaker.word();
            let _ = breaker.transition(
                word,
                word.mode,
                Machine::Open,
                TransitionReason::FailureRate,
                None,
            );
        });
        assert_eq!(rates, 1);
    });
}

/// The state changes a breaker reported, in order.
#[derive(Default)]
struct Transitions(std::sync::Mutex<Vec<(CircuitState, CircuitState, TransitionReason)>>);

impl palisade_core::MetricsSink for Transitions {
    fn record(&self, event: &palisade_core::Event<'_>) {
        if let palisade_core::Event::StateChanged {
            from, to, reason, ..
        } = *event
        {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((from, to, reason));
        }
    }
}

#[test]
fn loom_an_eviction_racing_a_trip_never_evicts_the_opened_breaker() {
    // A keyed map evicts a closed breaker while a call, which reached the
    // breaker without the map's lock, trips it. Either the trip comes
    // first and the map keeps the open breaker, or the eviction does and
    // the trip lands on a breaker no longer in the map, which reports
    // nothing more. Never is an open breaker evicted, which would let the
    // key's next call meet a fresh closed one.
    let reached = std::sync::Arc::new(Reached::default());
    let seen = reached.clone();
    model(move || {
        let clock = ManualClock::new();
        let sink = std::sync::Arc::new(Transitions::default());
        let mut cfg = config(&clock, 1);
        cfg.metrics = Metrics::from_arc(sink.clone());
        let breaker = Arc::new(Breaker::new(cfg));
        let permit = breaker.admit().unwrap();
        let trip = {
            let breaker = breaker.clone();
            thread::spawn(move || breaker.complete(&permit, Outcome::Failure))
        };
        let evicted = breaker.evict_if(|eviction| eviction == Eviction::Now);
        trip.join().unwrap();
        let reported = sink
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if evicted {
            seen.saw(0);
            assert_eq!(reported, [], "evicted after the trip");
        } else {
            seen.saw(1);
            assert_eq!(
                reported,
                [(
                    CircuitState::Closed,
                    CircuitState::Open,
                    TransitionReason::FailureRate
                )]
            );
        }
    });
    reached.assert_both();
}

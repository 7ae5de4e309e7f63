//! The shared state machine of one breaker.
//!
//! # State word
//!
//! One atomic word holds `generation << 5 | mode << 2 | machine`. Every
//! transition increments the generation. A call carries the generation it
//! was admitted under, and its outcome only counts toward that same state:
//! a call admitted while closed that finishes after the breaker opened is
//! not mistaken for a probe, and a probe of an earlier half-open period
//! cannot close a later one.
//!
//! - Closed admission is one load of the state word. Recording is one
//!   increment of the ring head, one compare-and-swap of the slot and one of
//!   the window's aggregate word, each skipped when it would change
//!   nothing: a plain success completing over a count window that holds
//!   only plain successes reads the aggregate and writes nothing. Neither
//!   locks nor allocates.
//! - Half-open admission takes a probe slot with a compare-and-swap on one
//!   word (epoch, slots taken, probes done, failures, slow). A probe that
//!   ends without an outcome gives its slot back.
//! - Transitions take a mutex, re-check the state word, prepare the new
//!   state, publish it and emit `StateChanged` while still holding the
//!   lock, so events of one breaker arrive in the order the states
//!   changed. (So a metrics sink must not call back into the transitions
//!   of the breaker that is reporting: see the handle's docs.)
//! - When the half-open maximum wait runs out, the transition first seals
//!   the period by swapping the probe word to the next epoch, and decides
//!   on the counts it swapped out: no probe can join or finish in the
//!   period after that, so the decision sees its final counts.

use std::time::{Duration, Instant};

use palisade_core::clock::Origin;
use palisade_core::{
    CircuitOpen, CircuitState, Clock, Event, LayerKind, Metrics, Outcome, PolicyName, RejectReason,
    TransitionReason,
};

use crate::sync::{Arc, AtomicU64, CachePadded, Mutex, Ordering, fence, lock};
use crate::window::{CountWindow, Counts, Recorded, TimeWindow, Window, code};

/// The breaker's operating mode, set by an operator through the handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Mode {
    Normal = 0,
    ForcedOpen = 1,
    ForcedClosed = 2,
    Disabled = 3,
    MetricsOnly = 4,
}

/// The automatic state machine (also run in shadow in metrics-only mode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Machine {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl Machine {
    pub(crate) fn as_state(self) -> CircuitState {
        match self {
            Machine::Closed => CircuitState::Closed,
            Machine::Open => CircuitState::Open,
            Machine::HalfOpen => CircuitState::HalfOpen,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Word {
    pub(crate) generation: u64,
    pub(crate) mode: Mode,
    pub(crate) machine: Machine,
}

impl Word {
    const fn pack(self) -> u64 {
        self.generation << 5 | (self.mode as u64) << 2 | self.machine as u64
    }

    const fn unpack(word: u64) -> Self {
        let mode = match (word >> 2) & 0b111 {
            1 => Mode::ForcedOpen,
            2 => Mode::ForcedClosed,
            3 => Mode::Disabled,
            4 => Mode::MetricsOnly,
            _ => Mode::Normal,
        };
        let machine = match word & 0b11 {
            1 => Machine::Open,
            2 => Machine::HalfOpen,
            _ => Machine::Closed,
        };
        Self {
            generation: word >> 5,
            mode,
            machine,
        }
    }

    pub(crate) fn epoch(self) -> u16 {
        self.generation as u16
    }

    /// The state a backend and the handle report.
    pub(crate) fn reported(self) -> CircuitState {
        match self.mode {
            Mode::Normal => self.machine.as_state(),
            Mode::ForcedOpen => CircuitState::ForcedOpen,
            Mode::ForcedClosed => CircuitState::ForcedClosed,
            Mode::Disabled => CircuitState::Disabled,
            Mode::MetricsOnly => CircuitState::MetricsOnly,
        }
    }

    /// Whether the automatic state machine runs (for real or in shadow).
    fn automatic(self) -> bool {
        matches!(self.mode, Mode::Normal | Mode::MetricsOnly)
    }
}

/// Which window the breaker judges the closed state by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WindowConfig {
    Count(usize),
    Time { length: Duration, buckets: usize },
}

/// Exponential growth of the open wait over consecutive openings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Backoff {
    pub(crate) multiplier: f64,
    pub(crate) max_wait: Duration,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) clock: Clock,
    pub(crate) window: WindowConfig,
    pub(crate) minimum_calls: u64,
    pub(crate) failure_rate_threshold: f64,
    pub(crate) slow_call_duration: Option<Duration>,
    pub(crate) slow_call_rate_threshold: f64,
    pub(crate) measure_latency: bool,
    pub(crate) open_wait: Duration,
    pub(crate) backoff: Option<Backoff>,
    pub(crate) jitter: f64,
    pub(crate) seed: u64,
    pub(crate) probes: u32,
    pub(crate) half_open_max_wait: Duration,
    pub(crate) cancelled_as_failure: bool,
    /// Counts, for the keyed map this breaker belongs to, the transitions
    /// that may let it be evicted sooner (see `apply`): after one, a
    /// search for a breaker to evict may find one where it found none.
    pub(crate) changes: Option<Arc<AtomicU64>>,
}

/// What a permit lets its call do with its outcome.
///
/// Stored in the top two bits of the permit's second word (see
/// [`Permit`]); the discriminants are those bits, and `Recorded` sets
/// both, so that marking any permit recorded is one `or`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub(crate) enum PermitKind {
    /// Recorded in the closed window.
    Window = 0b00,
    /// A half-open probe holding a probe slot.
    Probe = 0b01,
    /// Let through without recording (disabled, or shadow mode while the
    /// shadow state would reject).
    Untracked = 0b10,
    /// The outcome was recorded already: nothing is left to do.
    Recorded = 0b11,
}

/// The admission of one call.
///
/// Whole words only: the permit travels by value through the response
/// future, and a value made of small fields is copied in wide loads that
/// stall on the narrow stores that wrote it. Two words: every outer layer
/// moves the future that holds it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Permit {
    /// The state word at admission, packed, and in the top bit (which a
    /// generation, 58 bits wide, leaves free) whether the call answered
    /// while its outcome waits for the end of its stream (see
    /// [`Permit::answer`]).
    raw: u64,
    /// The [`PermitKind`] in the top two bits, then the calling flag;
    /// below them, when the call started, in nanoseconds since the
    /// breaker's origin plus one, or `0` when the breaker needs no start.
    /// Once answered, the call's latency plus one instead.
    tagged: u64,
}

impl Permit {
    const KIND_SHIFT: u32 = 62;
    /// Set while the service's `call` runs (see [`Permit::calling`]).
    const CALLING: u64 = 1 << 61;
    const START: u64 = Self::CALLING - 1;
    /// In `raw`: set once the call answered while its outcome waits for
    /// the end of its stream (see [`Permit::answer`]).
    const ANSWERED: u64 = 1 << 63;

    /// The state word at admission.
    #[inline]
    pub(crate) fn word(&self) -> Word {
        Word::unpack(self.raw & !Self::ANSWERED)
    }

    /// What the permit admitted.
    #[inline]
    pub(crate) fn kind(&self) -> PermitKind {
        const WINDOW: u64 = PermitKind::Window as u64;
        const PROBE: u64 = PermitKind::Probe as u64;
        const UNTRACKED: u64 = PermitKind::Untracked as u64;
        match self.tagged >> Self::KIND_SHIFT {
            WINDOW => PermitKind::Window,
            PROBE => PermitKind::Probe,
            UNTRACKED => PermitKind::Untracked,
            _ => PermitKind::Recorded,
        }
    }

    /// Whether the outcome is in.
    #[inline]
    pub(crate) fn is_recorded(&self) -> bool {
        self.tagged >> Self::KIND_SHIFT == PermitKind::Recorded as u64
    }

    /// Marks the permit as held while the service's `call` runs: a
    /// recorder dropped then is dropped by that call's panic.
    #[inline]
    pub(crate) fn calling(mut self) -> Self {
        self.tagged |= Self::CALLING;
        self
    }

    /// The service's `call` returned.
    #[inline]
    pub(crate) fn called(&mut self) {
        self.tagged &= !Self::CALLING;
    }

    /// Whether the service's `call` is running (or unwinding).
    #[inline]
    pub(crate) fn is_calling(&self) -> bool {
        self.tagged & Self::CALLING != 0
    }

    /// Marks the outcome as recorded.
    #[inline]
    pub(crate) fn set_recorded(&mut self) {
        self.tagged |= (PermitKind::Recorded as u64) << Self::KIND_SHIFT;
    }

    /// The start field: `0`, or nanoseconds since the origin plus one.
    #[inline]
    fn start(&self) -> u64 {
        self.tagged & Self::START
    }

    /// Moves a timed call's start later by `waited`: time the call spent
    /// queued for local capacity below the breaker, which is not the
    /// service's (see `palisade_core::queue`). Never past `now` (a start
    /// as [`Breaker::start_mark`] makes it), where that wait ended: waits
    /// that overlapped (sub-calls queued side by side) leave their common
    /// time out once, not once each.
    #[cold]
    pub(crate) fn delay_start(&mut self, waited: Duration, now: u64) {
        let start = self.start();
        if start == 0 || self.is_answered() {
            return;
        }
        let later = start
            .saturating_add(nanos(waited))
            .min(now)
            .clamp(start, Self::START);
        self.tagged = (self.tagged & !Self::START) | later;
    }

    /// The call answered at `now` (a start as [`Breaker::start_mark`]
    /// makes it) while its outcome waits for the end of its stream: its
    /// latency ends here, not when the stream does.
    #[cold]
    pub(crate) fn answer(&mut self, now: u64) {
        let start = self.start();
        if start == 0 || self.is_answered() {
            return;
        }
        let latency = now.saturating_sub(start).saturating_add(1).min(Self::START);
        self.tagged = (self.tagged & !Self::START) | latency;
        self.raw |= Self::ANSWERED;
    }

    /// Whether the start field holds the latency (see [`Permit::answer`]).
    #[inline]
    fn is_answered(&self) -> bool {
        self.raw & Self::ANSWERED != 0
    }
}

/// The result of trying to take a probe slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Take {
    /// A slot of the period was taken.
    Taken,
    /// Every slot of the period is taken.
    Full,
    /// The period is over: a transition sealed it (and may still be
    /// publishing the next state).
    Stale,
}

/// A refusal, before it becomes a [`CircuitOpen`].
#[derive(Clone, Copy, Debug)]
pub(crate) struct Refusal {
    pub(crate) state: CircuitState,
    pub(crate) retry_after: Option<Duration>,
}

// Half-open word: epoch << 48 | taken << 36 | done << 24 | failures << 12 | slow.
const H_FIELD: u64 = 0xFFF;
const H_TAKEN: u32 = 36;
const H_DONE: u32 = 24;
const H_FAIL: u32 = 12;

/// The most probes a half-open state may admit.
pub(crate) const MAX_PROBES: u32 = 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Probes {
    pub(crate) taken: u64,
    pub(crate) done: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

fn unpack_half(word: u64) -> (u16, Probes) {
    (
        (word >> 48) as u16,
        Probes {
            taken: word >> H_TAKEN & H_FIELD,
            done: word >> H_DONE & H_FIELD,
            failures: word >> H_FAIL & H_FIELD,
            slow: word & H_FIELD,
        },
    )
}

const fn pack_half(epoch: u16) -> u64 {
    (epoch as u64) << 48
}

/// The generation a transition from `from` publishes: 58 bits, wrapping,
/// so that the packed word's top bit stays free for a permit's flag (see
/// [`Permit`]).
const fn next_generation(from: Word) -> u64 {
    from.generation.wrapping_add(1) & (u64::MAX >> 6)
}

/// A small seeded generator (SplitMix64) for the open-wait jitter.
#[derive(Clone, Debug)]
struct SplitMix(u64);

/// SplitMix64's step.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a bijection that scatters nearby inputs.
fn scatter(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix {
    fn next_unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(GOLDEN);
        let z = scatter(self.0);
        #[allow(clippy::cast_precision_loss)]
        let unit = (z >> 11) as f64 / (1_u64 << 53) as f64;
        unit
    }
}

/// The jitter seed of a keyed map's `n`th breaker, from the layer's. The
/// sequence steps by a constant, so seeds a multiple of that step apart
/// would give shifted copies of one sequence; scattered, the keys start at
/// unrelated points of it, and none at the overflow breaker's (`seed`).
pub(crate) fn key_seed(seed: u64, n: u64) -> u64 {
    seed ^ scatter(n.wrapping_add(1).wrapping_mul(GOLDEN))
}

/// State that only transitions touch, under the lock.
#[derive(Debug)]
struct Transitions {
    /// Consecutive openings since the last healthy close.
    openings: u32,
    rng: SplitMix,
    /// The last open wait chosen.
    last_wait: Duration,
    /// A keyed map evicted this breaker: the calls it still admitted
    /// finish, but its moves no longer speak for the policy.
    evicted: bool,
}

/// One breaker: the state word, the window, the probe word and the
/// transition lock. Shared by every clone of the layer and its services.
#[derive(Debug)]
pub(crate) struct Breaker {
    state: CachePadded<AtomicU64>,
    half: CachePadded<AtomicU64>,
    window: Window,
    /// Nanoseconds since `origin` at which the open wait ends.
    open_until: AtomicU64,
    /// Nanoseconds since `origin` at which the half-open state began.
    half_open_since: AtomicU64,
    transitions: Mutex<Transitions>,
    origin: Origin,
    needs_start: bool,
    needs_end: bool,
    /// For a full count window of `full_calls` calls: the fewest failures
    /// (and slow calls) whose rate reaches the threshold, so the steady
    /// state compares integers instead of dividing.
    full_calls: u64,
    trip_failures: u64,
    trip_slow: u64,
    pub(crate) cfg: Config,
}

/// The fewest `part` out of `whole` with `part / whole >= threshold`, as the
/// division computes it.
fn fewest_reaching(whole: u64, threshold: f64) -> u64 {
    (0..=whole)
        .find(|part| {
            Counts {
                calls: whole,
                failures: *part,
                slow: 0,
            }
            .failure_rate()
                >= threshold
        })
        .unwrap_or(u64::MAX)
}

impl Breaker {
    pub(crate) fn new(cfg: Config) -> Self {
        let origin = cfg.clock.now();
        let window = match cfg.window {
            WindowConfig::Count(size) => Window::Count(CountWindow::new(size, 0)),
            WindowConfig::Time { length, buckets } => {
                let bucket = length.as_nanos() / buckets.max(1) as u128;
                Window::Time(TimeWindow::new(
                    origin,
                    u64::try_from(bucket).unwrap_or(u64::MAX),
                    buckets,
                    0,
                ))
            }
        };
        let full_calls = match cfg.window {
            WindowConfig::Count(size) => size as u64,
            WindowConfig::Time { .. } => u64::MAX,
        };
        let (trip_failures, trip_slow) = if full_calls == u64::MAX {
            (u64::MAX, u64::MAX)
        } else {
            (
                fewest_reaching(full_calls, cfg.failure_rate_threshold),
                fewest_reaching(full_calls, cfg.slow_call_rate_threshold),
            )
        };
        let needs_start = cfg.slow_call_duration.is_some() || cfg.measure_latency;
        let needs_end = needs_start || window.is_time();
        Self {
            state: CachePadded(AtomicU64::new(
                Word {
                    generation: 0,
                    mode: Mode::Normal,
                    machine: Machine::Closed,
                }
                .pack(),
            )),
            half: CachePadded(AtomicU64::new(pack_half(u16::MAX))),
            window,
            open_until: AtomicU64::new(0),
            half_open_since: AtomicU64::new(0),
            transitions: Mutex::new(Transitions {
                openings: 0,
                rng: SplitMix(cfg.seed),
                last_wait: Duration::ZERO,
                evicted: false,
            }),
            origin: Origin::new(origin),
            needs_start,
            needs_end,
            full_calls,
            trip_failures,
            trip_slow,
            cfg,
        }
    }

    #[inline]
    pub(crate) fn word(&self) -> Word {
        Word::unpack(self.state.load(Ordering::Acquire))
    }

    #[inline]
    fn since_origin(&self, now: Instant) -> u64 {
        self.origin.nanos(now)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.origin.instant() + Duration::from_nanos(nanos)
    }

    /// `at` as a permit's start field: nanoseconds since the origin plus
    /// one, held at about 73 years after the origin.
    #[inline]
    pub(crate) fn start_mark(&self, at: Instant) -> u64 {
        self.since_origin(at).saturating_add(1).min(Permit::START)
    }

    /// The breaker's clock now, as a permit's start field.
    pub(crate) fn now_mark(&self) -> u64 {
        self.start_mark(self.cfg.clock.now())
    }

    /// Whether calls are timed (slow-call detection or latency events).
    pub(crate) fn needs_start(&self) -> bool {
        self.needs_start
    }

    #[inline]
    fn permit(&self, word: Word, kind: PermitKind, start: Option<Instant>) -> Permit {
        // A start more than 73 years after the origin is held there.
        let start = start.map_or(0, |start| self.start_mark(start));
        Permit {
            raw: word.pack(),
            tagged: (kind as u64) << Permit::KIND_SHIFT | start,
        }
    }

    /// When the call admitted with `permit` started, if it was timed.
    #[cfg(all(test, not(palisade_loom)))]
    fn start_of(&self, permit: &Permit) -> Option<Instant> {
        permit.start().checked_sub(1).map(|nanos| self.at(nanos))
    }

    #[inline]
    fn emit(&self, event: &Event<'_>) {
        self.cfg.metrics.emit(event);
    }

    fn emit_rejected(&self, state: CircuitState) {
        let reason = match state {
            CircuitState::HalfOpen => RejectReason::HalfOpenFull,
            _ => RejectReason::CircuitOpen,
        };
        self.emit(&Event::Rejected {
            policy: self.cfg.policy.as_str(),
            layer: LayerKind::CircuitBreaker,
            reason,
        });
    }

    /// Decides whether a call may go through.
    #[inline]
    pub(crate) fn admit(&self) -> Result<Permit, Refusal> {
        let raw = self.state.load(Ordering::Acquire);
        let word = Word::unpack(raw);
        // Normal mode and closed are both zero: one test on the low bits.
        if raw & 0b1_1111 == 0 {
            let start = self.needs_start.then(|| self.cfg.clock.now());
            self.emit_admitted();
            return Ok(self.permit(word, PermitKind::Window, start));
        }
        self.admit_slow(word)
    }

    #[inline]
    fn emit_admitted(&self) {
        self.cfg.metrics.emit_with(|| Event::Admitted {
            policy: self.cfg.policy.as_str(),
            layer: LayerKind::CircuitBreaker,
        });
    }

    #[cold]
    fn admit_slow(&self, mut word: Word) -> Result<Permit, Refusal> {
        // Each pass either decides or observes a transition made by this
        // or another thread; transitions are finite per unit of time.
        //
        // A half-open period this call started itself (from open, or by
        // ending an expired period without probes) is not checked for
        // expiry again: with a maximum wait shorter than one pass, the
        // call would otherwise start period after period and never probe.
        let mut started: Option<Word> = None;
        loop {
            let shadow = word.mode == Mode::MetricsOnly;
            match (word.mode, word.machine) {
                (Mode::Disabled, _) => {
                    return Ok(self.permit(word, PermitKind::Untracked, None));
                }
                (Mode::ForcedOpen, _) => {
                    self.emit_rejected(CircuitState::ForcedOpen);
                    return Err(Refusal {
                        state: CircuitState::ForcedOpen,
                        retry_after: None,
                    });
                }
                (Mode::ForcedClosed, _) | (_, Machine::Closed) => {
                    let start = self.needs_start.then(|| self.cfg.clock.now());
                    self.emit_admitted();
                    return Ok(self.permit(word, PermitKind::Window, start));
                }
                (_, Machine::Open) => {
                    let now = self.cfg.clock.now();
                    let until = self.open_until.load(Ordering::Acquire);
                    let now_nanos = self.since_origin(now);
                    if now_nanos >= until {
                        let moved = self.transition(
                            word,
                            word.mode,
                            Machine::HalfOpen,
                            TransitionReason::WaitElapsed,
                            Some(now),
                        );
                        word = self.word();
                        started = moved.then_some(word);
                        continue;
                    }
                    if shadow {
                        self.emit_admitted();
                        let start = self.needs_start.then_some(now);
                        return Ok(self.permit(word, PermitKind::Untracked, start));
                    }
                    self.emit_rejected(CircuitState::Open);
                    return Err(Refusal {
                        state: CircuitState::Open,
                        retry_after: Some(Duration::from_nanos(until - now_nanos)),
                    });
                }
                (_, Machine::HalfOpen) => {
                    let now = self.cfg.clock.now();
                    if started != Some(word) && self.half_open_expired(now) {
                        let moved = self.end_half_open(word);
                        word = self.word();
                        started = moved.then_some(word);
                        continue;
                    }
                    match self.take_probe(word.epoch(), now) {
                        Take::Taken => {
                            // The slot has no owner until the permit reaches
                            // its recorder: a sink that panics must not
                            // strand it (every call would then be refused
                            // until the half-open period timed out).
                            palisade_core::panic::contained(|| self.emit_admitted());
                            let start = self.needs_start.then_some(now);
                            return Ok(self.permit(word, PermitKind::Probe, start));
                        }
                        Take::Stale => {
                            // A transition sealed this period and holds the
                            // lock until it publishes the next state: wait
                            // for it, then decide again on that state.
                            drop(lock(&self.transitions));
                            word = self.word();
                            continue;
                        }
                        Take::Full => {}
                    }
                    if shadow {
                        self.emit_admitted();
                        let start = self.needs_start.then_some(now);
                        return Ok(self.permit(word, PermitKind::Untracked, start));
                    }
                    self.emit_rejected(CircuitState::HalfOpen);
                    return Err(Refusal {
                        state: CircuitState::HalfOpen,
                        retry_after: None,
                    });
                }
            }
        }
    }

    /// Takes one probe slot of the half-open period `epoch`, if one is free,
    /// for a call that read the clock at `now`.
    ///
    /// The period's maximum wait counts from its latest probe: a period a
    /// metrics scrape started (see [`refresh`](Self::refresh)) may have
    /// waited long for a call, and a probe that just started must not be
    /// taken for a hung one because an earlier probe started the clock.
    /// The start moves before the slot is taken, so a seal that sees the
    /// slot taken also sees the start it moved (see
    /// [`end_half_open`](Self::end_half_open)).
    pub(crate) fn take_probe(&self, epoch: u16, now: Instant) -> Take {
        let limit = u64::from(self.cfg.probes);
        let mut current = self.half.load(Ordering::Acquire);
        loop {
            let (e, probes) = unpack_half(current);
            if e != epoch {
                return Take::Stale;
            }
            if probes.taken >= limit {
                return Take::Full;
            }
            self.half_open_since
                .fetch_max(self.since_origin(now), Ordering::AcqRel);
            match self.half.compare_exchange_weak(
                current,
                current + (1 << H_TAKEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Take::Taken,
                Err(actual) => current = actual,
            }
        }
    }

    /// Whether the half-open period has lasted its maximum wait at `now`,
    /// counted from its latest probe (from its start while none has been
    /// taken).
    fn half_open_expired(&self, now: Instant) -> bool {
        let since = self.half_open_since.load(Ordering::Acquire);
        self.since_origin(now).saturating_sub(since) >= nanos(self.cfg.half_open_max_wait)
    }

    /// Gives a probe slot back (the probe ended without an outcome).
    fn give_back_probe(&self, epoch: u16) {
        let mut current = self.half.load(Ordering::Acquire);
        loop {
            let (e, probes) = unpack_half(current);
            if e != epoch || probes.taken == 0 {
                return;
            }
            match self.half.compare_exchange_weak(
                current,
                current - (1 << H_TAKEN),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }

    /// Counts a probe's outcome; returns the probe counts when it was the
    /// last probe of its period.
    fn finish_probe(&self, epoch: u16, failure: bool, slow: bool) -> Option<Probes> {
        let add = (1 << H_DONE) | u64::from(failure) << H_FAIL | u64::from(slow);
        let mut current = self.half.load(Ordering::Acquire);
        loop {
            let (e, _) = unpack_half(current);
            if e != epoch {
                return None;
            }
            let next = current + add;
            match self.half.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let (_, probes) = unpack_half(next);
                    return (probes.done >= u64::from(self.cfg.probes)).then_some(probes);
                }
                Err(actual) => current = actual,
            }
        }
    }

    /// Records the outcome of a call admitted with `permit`.
    #[inline]
    pub(crate) fn complete(&self, permit: &Permit, outcome: Outcome) {
        let word = permit.word();
        if word.mode == Mode::Disabled {
            return;
        }
        // An answered call's latency is in; only a time window still needs
        // the end, for its bucket.
        let end = if self.needs_end && (!permit.is_answered() || self.window.is_time()) {
            Some(self.cfg.clock.now())
        } else {
            None
        };
        let latency = match permit.start() {
            0 => None,
            // Answered before its stream ended: the latency was kept then.
            latency if permit.is_answered() => Some(Duration::from_nanos(latency - 1)),
            // The end held where a start is, so that past the longest start
            // a call reads as instant, not as the time since it.
            start => {
                end.map(|end| Duration::from_nanos(self.start_mark(end).saturating_sub(start)))
            }
        };
        let completed = Event::Completed {
            policy: self.cfg.policy.as_str(),
            layer: LayerKind::CircuitBreaker,
            outcome,
            latency,
        };
        if permit.kind() == PermitKind::Probe {
            // The probe's slot is given back or judged below: a sink that
            // panics must not strand it.
            palisade_core::panic::contained(|| self.emit(&completed));
        } else {
            self.emit(&completed);
        }
        let failure = match outcome {
            Outcome::Success => Some(false),
            Outcome::Failure => Some(true),
            Outcome::Cancelled if self.cfg.cancelled_as_failure => Some(true),
            _ => None,
        };
        let slow = match (self.cfg.slow_call_duration, latency) {
            (Some(limit), Some(latency)) => latency >= limit,
            _ => false,
        };
        match (permit.kind(), failure) {
            (PermitKind::Untracked | PermitKind::Recorded, _) => {}
            (PermitKind::Window, None) => {}
            (PermitKind::Window, Some(failure)) => {
                self.record_window(word, end, failure, slow);
            }
            (PermitKind::Probe, None) => {
                self.give_back_probe(word.epoch());
                self.probe_ended();
            }
            (PermitKind::Probe, Some(failure)) => {
                match self.finish_probe(word.epoch(), failure, slow) {
                    Some(probes) => self.judge_probes(word, probes),
                    None => self.probe_ended(),
                }
            }
        }
    }

    /// A probe ended without ending its half-open period. A keyed map may
    /// evict a half-open breaker sooner once no probe runs (see
    /// [`eviction`](Self::eviction)), so it hears of this as it hears of
    /// the transitions that may let it evict sooner; a half-open period
    /// has at most `probes` of these.
    #[cold]
    fn probe_ended(&self) {
        if let Some(changes) = &self.cfg.changes {
            changes.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[inline]
    fn record_window(&self, word: Word, end: Option<Instant>, failure: bool, slow: bool) {
        let Recorded::Counted { counts, changed } =
            self.window.record(word.epoch(), end, code(failure, slow))
        else {
            return;
        };
        if changed && self.cfg.metrics.is_enabled() {
            self.emit_rates(counts);
            // A transition that emptied the window since this call was
            // counted may have reported its zeros before these counts
            // landed. The fence pairs with the one before those zeros:
            // either they land after these counts, or the reset is seen
            // here and the window's rates are sent again under the lock, so
            // the last rates a backend holds are the current window's. A
            // trip keeps its window, so the calls still finishing after it
            // take no lock.
            fence(Ordering::SeqCst);
            if self.window.epoch() != word.epoch() {
                self.emit_rates_again();
            }
        }
        if word.automatic()
            && counts.calls >= self.cfg.minimum_calls
            && let Some(reason) = self.over_threshold(counts)
        {
            self.trip(word, reason, end);
        }
    }

    /// Trips the breaker for `reason`, once a count window's slots agree
    /// with the running total that called for it (see
    /// [`CountWindow::recount`](crate::window::CountWindow::recount)); a
    /// time window's buckets hold their counts whole. Takes what
    /// [`transition`](Self::transition) takes, so the closed path is as
    /// it was without the check.
    #[cold]
    #[inline(never)]
    fn trip(&self, word: Word, reason: TransitionReason, end: Option<Instant>) {
        // A call finishing after the trip (the window is kept while open)
        // has nothing to decide: no scan.
        if self.word() != word {
            return;
        }
        let reason = match self.window.recount(word.epoch()) {
            Some(counts) if counts.calls < self.cfg.minimum_calls => return,
            Some(counts) => match self.over_threshold(counts) {
                Some(reason) => reason,
                None => return,
            },
            None => reason,
        };
        self.transition(word, word.mode, Machine::Open, reason, end);
    }

    #[cold]
    #[inline(never)]
    fn emit_rates_again(&self) {
        let _transitions = lock(&self.transitions);
        self.emit_rates(self.window_counts());
    }

    fn emit_rates(&self, counts: Counts) {
        self.emit(&Event::BreakerRates {
            policy: self.cfg.policy.as_str(),
            failure_rate: counts.failure_rate(),
            slow_rate: counts.slow_rate(),
            calls: counts.calls,
        });
    }

    #[inline]
    fn over_threshold(&self, counts: Counts) -> Option<TransitionReason> {
        if counts.calls == self.full_calls {
            return if counts.failures >= self.trip_failures {
                Some(TransitionReason::FailureRate)
            } else if self.cfg.slow_call_duration.is_some() && counts.slow >= self.trip_slow {
                Some(TransitionReason::SlowRate)
            } else {
                None
            };
        }
        if counts.failure_rate() >= self.cfg.failure_rate_threshold {
            Some(TransitionReason::FailureRate)
        } else if self.cfg.slow_call_duration.is_some()
            && counts.slow_rate() >= self.cfg.slow_call_rate_threshold
        {
            Some(TransitionReason::SlowRate)
        } else {
            None
        }
    }

    /// Where the finished probes of a half-open period lead: closed when
    /// their rates are under the thresholds, open otherwise.
    fn probe_verdict(&self, probes: Probes) -> (Machine, TransitionReason) {
        let counts = Counts {
            calls: probes.done,
            failures: probes.failures,
            slow: probes.slow,
        };
        match self.over_threshold(counts) {
            Some(reason) => (Machine::Open, reason),
            None => (Machine::Closed, TransitionReason::ProbesSucceeded),
        }
    }

    fn judge_probes(&self, word: Word, probes: Probes) {
        let (machine, reason) = self.probe_verdict(probes);
        self.transition(word, word.mode, machine, reason, None);
    }

    /// Ends the half-open period `from`, whose maximum wait ran out (the
    /// rule is in the crate docs, "Open and half-open"):
    ///
    /// - a probe taken and not finished (it hangs, or is slow): open again;
    /// - no probe taken: a fresh half-open period, with no opening counted
    ///   and no event (the reported state stays half-open);
    /// - otherwise the finished probes are judged as a full set would be.
    ///
    /// Does nothing when another thread changed the state first, or when
    /// a probe taken meanwhile restarted the period's clock. Returns
    /// whether it moved.
    fn end_half_open(&self, from: Word) -> bool {
        let mut t = lock(&self.transitions);
        if self.word() != from {
            return false;
        }
        // Read under the lock: a fresh period counts from when it starts,
        // not from before a wait for the lock.
        let now = self.cfg.clock.now();
        let next = next_generation(from);
        // Seal the period: from here on no probe joins it, gives its slot
        // back or counts in it, so the counts taken out are final. A probe
        // moves the period's start before it takes its slot: once the
        // seal's read of the slots is current, the start read after it is
        // too, and a period whose latest probe just started is left to it.
        let mut current = self.half.load(Ordering::Acquire);
        let sealed = loop {
            if !self.half_open_expired(now) {
                return false;
            }
            match self.half.compare_exchange_weak(
                current,
                pack_half(next as u16),
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(sealed) => break sealed,
                Err(actual) => current = actual,
            }
        };
        let (epoch, probes) = unpack_half(sealed);
        let probes = if epoch == from.epoch() {
            probes
        } else {
            Probes::default()
        };
        let (machine, reason) = if probes.taken > probes.done {
            (Machine::Open, TransitionReason::HalfOpenTimeout)
        } else if probes.done == 0 {
            (Machine::HalfOpen, TransitionReason::HalfOpenTimeout)
        } else {
            self.probe_verdict(probes)
        };
        self.apply(&mut t, from, from.mode, machine, reason, Some(now));
        drop(t);
        true
    }

    /// Moves from exactly `from` to `(mode, machine)`. Does nothing when
    /// another thread changed the state first. Returns whether it moved.
    pub(crate) fn transition(
        &self,
        from: Word,
        mode: Mode,
        machine: Machine,
        reason: TransitionReason,
        now: Option<Instant>,
    ) -> bool {
        let mut t = lock(&self.transitions);
        if self.word() != from {
            return false;
        }
        self.apply(&mut t, from, mode, machine, reason, now);
        drop(t);
        true
    }

    /// Publishes the move from `from` (the current state, checked under
    /// the lock `t` guards) to `(mode, machine)` and reports it.
    fn apply(
        &self,
        t: &mut Transitions,
        from: Word,
        mode: Mode,
        machine: Machine,
        reason: TransitionReason,
        now: Option<Instant>,
    ) {
        let to = Word {
            generation: next_generation(from),
            mode,
            machine,
        };
        // Every state but automatic open and half-open starts a fresh
        // window; open keeps the window that tripped it, for inspection.
        let fresh_window = !to.automatic() || machine == Machine::Closed;
        match (to.automatic(), machine) {
            (true, Machine::Open) => {
                let now = now.unwrap_or_else(|| self.cfg.clock.now());
                t.openings = t.openings.saturating_add(1);
                let wait = self.open_wait(t);
                t.last_wait = wait;
                let until = self.since_origin(now).saturating_add(nanos(wait));
                self.open_until.store(until, Ordering::Release);
            }
            (true, Machine::HalfOpen) => {
                let now = now.unwrap_or_else(|| self.cfg.clock.now());
                self.half_open_since
                    .store(self.since_origin(now), Ordering::Release);
                self.half.swap(pack_half(to.epoch()), Ordering::AcqRel);
            }
            _ => {}
        }
        if fresh_window {
            self.window.reset(to.epoch());
            if !t.evicted && self.cfg.metrics.is_enabled() {
                // The gauge must not keep the rates of a window that is
                // gone (see `record_window` for the fence). The zeros go
                // out before the new state is published: a call of the
                // new window is admitted only once that store is seen, so
                // its rates always land after them. A sink that panics
                // here must not leave the window reset and the state
                // unpublished: every call would then find its window
                // stale and count nowhere.
                fence(Ordering::SeqCst);
                palisade_core::panic::contained(|| self.emit_rates(Counts::default()));
            }
        }
        if reason == TransitionReason::ProbesSucceeded || reason == TransitionReason::Reset {
            t.openings = 0;
        }
        self.state.store(to.pack(), Ordering::Release);
        if let Some(changes) = &self.cfg.changes {
            // A keyed map needs to hear only of the moves that may let it
            // evict this breaker sooner than before: to closed in normal
            // mode, out of an operator's mode, and from half-open back to
            // open (its new open wait may end before its half-open one
            // would have). Closed to open, open to half-open, a fresh
            // half-open period and an operator's mode only put that time
            // later, so an outage's openings do not keep clearing what
            // the map learned.
            let sooner = to.mode == Mode::Normal
                && (to.machine == Machine::Closed
                    || from.mode != Mode::Normal
                    || (from.machine == Machine::HalfOpen && to.machine == Machine::Open));
            if sooner {
                changes.fetch_add(1, Ordering::AcqRel);
            }
        }
        if t.evicted {
            return;
        }
        // Shadow transitions (metrics-only mode) change no reported state;
        // they are reported as what enforcing would have done.
        let (from_state, to_state) = (from.reported(), to.reported());
        if from_state != to_state {
            self.emit(&Event::StateChanged {
                policy: self.cfg.policy.as_str(),
                from: from_state,
                to: to_state,
                reason,
            });
        } else if from.mode == Mode::MetricsOnly && from.machine != to.machine {
            self.emit(&Event::ShadowStateChanged {
                policy: self.cfg.policy.as_str(),
                from: from.machine.as_state(),
                to: to.machine.as_state(),
                reason,
            });
        }
    }

    fn open_wait(&self, t: &mut Transitions) -> Duration {
        let base = self.cfg.open_wait;
        let grown = match self.cfg.backoff {
            Some(backoff) => {
                let exponent = i32::try_from(t.openings.saturating_sub(1)).unwrap_or(i32::MAX);
                let factor = backoff.multiplier.powi(exponent);
                let secs = base.as_secs_f64() * factor;
                if secs.is_finite() && secs < backoff.max_wait.as_secs_f64() {
                    Duration::from_secs_f64(secs)
                } else {
                    backoff.max_wait
                }
            }
            None => base,
        };
        if self.cfg.jitter > 0.0 {
            let cut = grown.as_secs_f64() * self.cfg.jitter * t.rng.next_unit();
            grown.saturating_sub(Duration::from_secs_f64(cut))
        } else {
            grown
        }
    }

    /// Moves to an operator-chosen mode (or back to normal and closed).
    pub(crate) fn set_mode(&self, mode: Mode, reason: TransitionReason) {
        loop {
            let from = self.word();
            let unchanged =
                from.mode == mode && (mode != Mode::Normal || from.machine == Machine::Closed);
            if unchanged && reason != TransitionReason::Reset {
                return;
            }
            if self.transition(from, mode, Machine::Closed, reason, None) {
                return;
            }
        }
    }

    /// Applies the time-based transitions that are due: the open wait
    /// elapsed (to half-open) and the half-open maximum wait (see
    /// [`end_half_open`](Self::end_half_open)).
    pub(crate) fn refresh(&self) -> Word {
        let word = self.word();
        let counting = matches!(
            word.mode,
            Mode::Normal | Mode::MetricsOnly | Mode::ForcedClosed
        );
        if counting
            && word.machine == Machine::Closed
            && self.window.is_time()
            && self.cfg.metrics.is_enabled()
        {
            // A time window empties as time passes, and no call reports it
            // while none arrives: report its rates as they are now. Under
            // the transition lock, and only if the state is still the
            // closed one read above, so that a transition (and the zeros of
            // a reset) cannot be followed by these older counts.
            let _transitions = lock(&self.transitions);
            let now = self.word();
            if now.machine == Machine::Closed && now.epoch() == word.epoch() {
                self.emit_rates(self.window_counts());
            }
        }
        if !word.automatic() {
            return word;
        }
        let now = self.cfg.clock.now();
        let now_nanos = self.since_origin(now);
        match word.machine {
            Machine::Open if now_nanos >= self.open_until.load(Ordering::Acquire) => {
                self.transition(
                    word,
                    word.mode,
                    Machine::HalfOpen,
                    TransitionReason::WaitElapsed,
                    Some(now),
                );
            }
            Machine::HalfOpen if self.half_open_expired(now) => {
                self.end_half_open(word);
            }
            _ => {}
        }
        self.word()
    }

    /// The counts of the closed window.
    pub(crate) fn window_counts(&self) -> Counts {
        self.window.counts(|| self.cfg.clock.now())
    }

    /// The probes of the current half-open period (zero otherwise).
    pub(crate) fn probes(&self) -> Probes {
        let word = self.word();
        let (epoch, probes) = unpack_half(self.half.load(Ordering::Acquire));
        if word.machine == Machine::HalfOpen && epoch == word.epoch() {
            probes
        } else {
            Probes::default()
        }
    }

    /// When the open wait ends, while open.
    pub(crate) fn open_until(&self) -> Option<Instant> {
        let word = self.word();
        (word.machine == Machine::Open && word.automatic())
            .then(|| self.at(self.open_until.load(Ordering::Acquire)))
    }

    /// Consecutive openings since the last healthy close, and the last wait.
    pub(crate) fn openings(&self) -> (u32, Duration) {
        let t = lock(&self.transitions);
        (t.openings, t.last_wait)
    }

    /// When a keyed map may evict this breaker (see [`Eviction`]).
    pub(crate) fn eviction(&self) -> Eviction {
        let word = self.word();
        if word.mode != Mode::Normal {
            return Eviction::Never;
        }
        match word.machine {
            Machine::Closed => Eviction::Now,
            // Stored before the state word that says open or half-open,
            // so these are the times of the state read above (or of a
            // later one, which counts as a change for the map). A probe
            // moves the half-open start forward only: the map, which
            // looks again when the time it holds comes, is never early.
            Machine::Open => Eviction::From(self.at(self.open_until.load(Ordering::Acquire))),
            Machine::HalfOpen => {
                let since = self.half_open_since.load(Ordering::Acquire);
                let mut end = since.saturating_add(nanos(self.cfg.half_open_max_wait));
                // Once its maximum wait is over, a breaker with a probe
                // still running, or whose finished probes fail, opens again
                // on its next call (see `end_half_open`): it keeps that
                // verdict for as long as the longest wait it would impose.
                let probes = self.probes();
                if probes.taken > probes.done
                    || (probes.done > 0 && self.probe_verdict(probes).0 == Machine::Open)
                {
                    end = end.saturating_add(nanos(self.longest_open_wait()));
                }
                Eviction::From(self.at(end))
            }
        }
    }

    /// Lets a keyed map evict this breaker if `allowed` says it may, and
    /// reports the eviction. Every key reports
    /// under the layer's policy, so a state gauge follows the latest
    /// transition of any key: a key whose breaker was open or half-open
    /// meets a fresh, closed one next time, which is reported as its move
    /// to closed, so the gauge does not stay open with no breaker open.
    /// The moves of its calls still running are not reported after this.
    ///
    /// Decided under the transition lock, which every move of the state
    /// takes: a trip lands either before (`allowed` then sees the breaker
    /// open and keeps it) or after, on a breaker no longer in the map.
    /// Returns whether `allowed` let the map evict it.
    pub(crate) fn evict_if(&self, allowed: impl FnOnce(Eviction) -> bool) -> bool {
        let mut transitions = lock(&self.transitions);
        if !allowed(self.eviction()) {
            return false;
        }
        transitions.evicted = true;
        let from = self.word().reported();
        if from != CircuitState::Closed && self.cfg.metrics.is_enabled() {
            // Contained: the map removes this breaker once this returns, and
            // a panic here would leave it tracked with its reports off.
            palisade_core::panic::contained(|| {
                self.emit(&Event::StateChanged {
                    policy: self.cfg.policy.as_str(),
                    from,
                    to: CircuitState::Closed,
                    reason: TransitionReason::Evicted,
                });
            });
        }
        true
    }

    /// The longest open wait this breaker's configuration can choose.
    fn longest_open_wait(&self) -> Duration {
        match self.cfg.backoff {
            Some(backoff) => backoff.max_wait.max(self.cfg.open_wait),
            None => self.cfg.open_wait,
        }
    }

    pub(crate) fn refusal_error(&self, refusal: Refusal) -> CircuitOpen {
        CircuitOpen::new(self.cfg.policy.clone(), refusal.retry_after, refusal.state)
    }
}

/// `duration` in nanoseconds, held at `u64::MAX` (584 years).
pub(crate) fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// When a keyed map may evict a breaker.
///
/// A closed breaker in normal mode holds nothing a later call relies on
/// but its window's counts. An open one is kept until its open wait ends,
/// and a half-open one until its maximum wait ends, or, if its probes
/// would then open it again, until the longest open wait after that. Past
/// those times no call has reached it since (a call would have moved it
/// on); evicting it gives its key a fresh closed breaker, without its
/// failures or backoff, which is why a keyed map evicts closed breakers
/// first. One an operator holds in a mode is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Eviction {
    /// Closed in normal mode.
    Now,
    /// Open or half-open: from the end of that state's wait.
    From(Instant),
    /// Held in a mode by an operator.
    Never,
}

impl Eviction {
    /// Whether the breaker may be evicted now (`now` reads the clock, only
    /// for an open or half-open breaker).
    pub(crate) fn allowed_at(self, now: impl FnOnce() -> Instant) -> bool {
        match self {
            Self::Now => true,
            Self::From(at) => at <= now(),
            Self::Never => false,
        }
    }
}

/// A count-window breaker's configuration on `clock`, for the unit tests
/// and the loom models.
#[cfg(test)]
pub(crate) fn test_config(clock: &palisade_core::ManualClock, probes: u32) -> Config {
    Config {
        policy: PolicyName::new("test"),
        metrics: Metrics::noop(),
        clock: Clock::manual(clock),
        window: WindowConfig::Count(4),
        minimum_calls: 1,
        failure_rate_threshold: 0.5,
        slow_call_duration: None,
        slow_call_rate_threshold: 1.0,
        measure_latency: false,
        open_wait: Duration::from_secs(1),
        backoff: None,
        jitter: 0.0,
        seed: 1,
        probes,
        half_open_max_wait: Duration::from_secs(60),
        cancelled_as_failure: false,
        changes: None,
    }
}

#[cfg(all(test, not(palisade_loom)))]
mod tests {
    use palisade_core::ManualClock;

    use super::*;

    fn breaker(clock: &ManualClock) -> Breaker {
        Breaker::new(Config {
            measure_latency: true,
            ..test_config(clock, 1)
        })
    }

    #[test]
    fn the_highest_generation_leaves_a_permits_flag_bit_free() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        let word = |generation| Word {
            generation,
            mode: Mode::Normal,
            machine: Machine::Closed,
        };
        assert_eq!(next_generation(word((1 << 58) - 1)), 0, "58 bits, wrapping");
        // A generation of the window's epoch (its low 16 bits), with every
        // higher bit a generation can have set.
        let high = word((1 << 58) - (1 << 16));
        assert_eq!(high.pack() & Permit::ANSWERED, 0);
        breaker.state.store(high.pack(), Ordering::Release);
        clock.advance(Duration::from_secs(5));
        let permit = breaker.admit().unwrap();
        assert!(!permit.is_answered());
        assert_eq!(permit.word(), breaker.word());
        breaker.complete(&permit, Outcome::Failure);
        assert_eq!(
            breaker.word().machine,
            Machine::Open,
            "the failure trips it"
        );
    }

    #[test]
    fn keyed_breakers_draw_unrelated_jitter() {
        // The overflow breaker's sequence and those of the first keys share
        // no draw: none is a shifted copy of another.
        for seed in [0, 1, 42, u64::MAX] {
            let mut seen = std::collections::HashSet::new();
            let seeds = std::iter::once(seed).chain((0..16).map(|n| key_seed(seed, n)));
            for start in seeds {
                let mut rng = SplitMix(start);
                for _ in 0..64 {
                    assert!(seen.insert(rng.next_unit().to_bits()), "seed {seed}");
                }
            }
        }
    }

    #[test]
    fn a_failure_counted_ahead_of_a_replaced_one_does_not_trip() {
        let clock = ManualClock::new();
        let breaker = Breaker::new(Config {
            window: WindowConfig::Count(2),
            minimum_calls: 2,
            failure_rate_threshold: 1.0,
            ..test_config(&clock, 1)
        });
        let epoch = breaker.word().epoch();
        for outcome in [Outcome::Failure, Outcome::Success] {
            let permit = breaker.admit().unwrap();
            breaker.complete(&permit, outcome);
        }
        // A success a whole ring later has swapped itself in over the
        // failure of slot 0 and has not taken that failure out of the
        // aggregate yet when the failure of the call before it lands in
        // the same slot: the aggregate counts two failures for a moment,
        // the slots never held more than one.
        breaker
            .window
            .put_slot(0, epoch, crate::window::code(false, false));
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        assert_eq!(breaker.word().machine, Machine::Closed);
        // Two failures that are really there do trip it.
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        assert_eq!(breaker.word().machine, Machine::Open);
    }

    #[test]
    fn a_permit_keeps_its_kind_and_start_in_two_words() {
        assert_eq!(size_of::<Permit>(), 16);
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        clock.advance(Duration::from_millis(1500));
        let word = breaker.word();
        for kind in [
            PermitKind::Window,
            PermitKind::Probe,
            PermitKind::Untracked,
            PermitKind::Recorded,
        ] {
            for start in [None, Some(clock.now())] {
                let mut permit = breaker.permit(word, kind, start);
                assert_eq!(permit.kind(), kind);
                assert_eq!(permit.is_recorded(), kind == PermitKind::Recorded);
                assert_eq!(breaker.start_of(&permit), start);
                assert_eq!(permit.word().pack(), word.pack());
                permit.set_recorded();
                assert_eq!(permit.kind(), PermitKind::Recorded);
                assert_eq!(
                    breaker.start_of(&permit),
                    start,
                    "recording keeps the start"
                );
            }
        }
    }

    /// Keeps the breaker's rates and holds the thread that reports a move
    /// to closed until it is let go.
    #[derive(Default)]
    struct HoldsTheClose {
        rates: std::sync::Mutex<Vec<u64>>,
        entered: std::sync::Mutex<Option<std::sync::mpsc::Sender<()>>>,
        release: std::sync::Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    }

    impl palisade_core::MetricsSink for HoldsTheClose {
        fn record(&self, event: &Event<'_>) {
            match *event {
                Event::BreakerRates { calls, .. } => self.rates.lock().unwrap().push(calls),
                Event::StateChanged {
                    to: CircuitState::Closed,
                    ..
                } => {
                    if let Some(entered) = self.entered.lock().unwrap().take() {
                        entered.send(()).unwrap();
                        let release = self.release.lock().unwrap().take().unwrap();
                        release.recv().unwrap();
                    }
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_new_windows_first_rates_are_not_replaced_by_the_closing_zeros() {
        let clock = ManualClock::new();
        let sink = std::sync::Arc::new(HoldsTheClose::default());
        let breaker = std::sync::Arc::new(Breaker::new(Config {
            minimum_calls: 2,
            metrics: Metrics::from_arc(sink.clone()),
            ..test_config(&clock, 1)
        }));
        for _ in 0..2 {
            let permit = breaker.admit().unwrap();
            breaker.complete(&permit, Outcome::Failure);
        }
        assert!(breaker.admit().is_err(), "open");
        clock.advance(Duration::from_secs(1));
        let probe = breaker.admit().unwrap();

        let (entered_tx, entered) = std::sync::mpsc::channel();
        let (release_tx, release) = std::sync::mpsc::channel();
        *sink.entered.lock().unwrap() = Some(entered_tx);
        *sink.release.lock().unwrap() = Some(release);
        // The probe succeeds: the breaker closes, and its report of the
        // move is held...
        let closing = std::thread::spawn({
            let breaker = breaker.clone();
            move || breaker.complete(&probe, Outcome::Success)
        });
        entered.recv().unwrap();
        // ...while a call in the new window fails and reports its rates.
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        release_tx.send(()).unwrap();
        closing.join().unwrap();
        assert_eq!(breaker.window_counts().calls, 1);
        let rates = sink.rates.lock().unwrap().clone();
        assert_eq!(rates.last(), Some(&1), "{rates:?}");
    }

    #[test]
    fn a_probe_admitted_late_in_a_period_a_scrape_started_gets_the_whole_max_wait() {
        let clock = ManualClock::new();
        let breaker = Breaker::new(test_config(&clock, 1));
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        clock.advance(Duration::from_secs(1));
        // A scrape moves the breaker to half-open; no call comes for 59 s.
        assert_eq!(breaker.refresh().machine, Machine::HalfOpen);
        let period = breaker.word();
        clock.advance(Duration::from_secs(59));
        let probe = breaker.admit().unwrap();
        // Past the 60 s since the scrape, the probe has run 2 s: the next
        // call is refused as the period's probe is still out, and the
        // period goes on.
        clock.advance(Duration::from_secs(2));
        let refused = breaker.admit().unwrap_err();
        assert_eq!(refused.state, CircuitState::HalfOpen);
        assert_eq!(breaker.refresh(), period);
        breaker.complete(&probe, Outcome::Success);
        assert_eq!(breaker.word().machine, Machine::Closed);
        // 60 s after the probe started, a probe still out does end it.
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        clock.advance(Duration::from_secs(1));
        let _probe = breaker.admit().unwrap();
        clock.advance(Duration::from_secs(60));
        assert_eq!(breaker.refresh().machine, Machine::Open);
    }

    #[test]
    fn a_probe_admitted_late_in_a_period_is_not_taken_for_a_hung_one() {
        let clock = ManualClock::new();
        let breaker = Breaker::new(test_config(&clock, 5));
        let permit = breaker.admit().unwrap();
        breaker.complete(&permit, Outcome::Failure);
        clock.advance(Duration::from_secs(1));
        // A healthy probe at 0 s, another admitted at 58 s and still out.
        let first = breaker.admit().unwrap();
        breaker.complete(&first, Outcome::Success);
        clock.advance(Duration::from_secs(58));
        let late = breaker.admit().unwrap();
        // At 60 s the late probe has run 2 s: the period goes on, and the
        // arriving call is one more probe.
        clock.advance(Duration::from_secs(2));
        let third = breaker.admit().unwrap();
        assert_eq!(breaker.word().machine, Machine::HalfOpen);
        assert_eq!(breaker.probes().taken, 3);
        breaker.complete(&late, Outcome::Success);
        breaker.complete(&third, Outcome::Success);
        // 60 s after the latest probe, with every probe done, the three
        // healthy probes close it.
        clock.advance(Duration::from_secs(60));
        assert_eq!(breaker.refresh().machine, Machine::Closed);
    }

    #[test]
    fn a_start_past_what_the_permit_holds_is_held_at_its_limit() {
        let clock = ManualClock::new();
        let breaker = breaker(&clock);
        let far = breaker.at(Permit::START + 10);
        let permit = breaker.permit(breaker.word(), PermitKind::Window, Some(far));
        assert_eq!(permit.kind(), PermitKind::Window);
        assert_eq!(
            breaker.start_of(&permit),
            Some(breaker.at(Permit::START - 1))
        );
    }
}

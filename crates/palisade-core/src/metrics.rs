//! The metrics trait every layer reports to, and the events it receives.
//!
//! Every layer holds a [`Metrics`] handle (an `Arc<dyn MetricsSink>`) created
//! when the layer is built, and calls [`Metrics::emit`] with an [`Event`]
//! for every fact worth counting: an admission, a rejection, a completed
//! call, a caught panic, a timeout, a circuit transition, a change of the
//! in-flight count, a fallback answer, a task's life and a dropped piece of
//! offloaded work.
//!
//! Emitting allocates nothing. An event borrows the policy name the layer
//! holds, and every other label is a `Copy` enum whose
//! [`as_str`](LayerKind::as_str) is a `&'static str`. A sink that does
//! nothing costs one virtual call; [`Metrics::noop`] skips even that.
//!
//! # Writing a sink
//!
//! Implement [`MetricsSink::record`] and match on the events you care
//! about; every other event falls through. Sinks are called synchronously on
//! the request path, so a sink must be quick: update an atomic, a
//! pre-registered counter or a histogram, and never block.
//!
//! ```
//! use std::sync::atomic::{AtomicI64, Ordering};
//! use palisade_core::{Event, InFlightChange, Metrics, MetricsSink};
//!
//! #[derive(Debug, Default)]
//! struct InFlightGauge(AtomicI64);
//!
//! impl MetricsSink for InFlightGauge {
//!     fn record(&self, event: &Event<'_>) {
//!         if let Event::InFlightChanged { change, .. } = event {
//!             self.0.fetch_add(change.delta(), Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! let gauge = std::sync::Arc::new(InFlightGauge::default());
//! let metrics = Metrics::from_arc(gauge.clone());
//! metrics.emit(&Event::InFlightChanged {
//!     policy: "api",
//!     layer: palisade_core::LayerKind::Bulkhead,
//!     change: InFlightChange::Acquired,
//!     in_flight: 1,
//!     limit: 8,
//! });
//! assert_eq!(gauge.0.load(Ordering::Relaxed), 1);
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::error::PanicLocation;

/// Receives palisade's events and turns them into metrics, logs or state.
///
/// The trait is object safe; layers hold it as `Arc<dyn MetricsSink>` inside
/// a [`Metrics`] handle. Calls are synchronous and happen on the request
/// path: implementations must be cheap and must not block.
///
/// They should not panic either. Layers contain a sink's panic where the
/// report must not change what it reports on (a caught panic, a task's
/// exit, a call's outcome); elsewhere it reaches the code that emitted the
/// event, as a panic of the request's own code would. While the thread is
/// already unwinding, [`Metrics`] always contains it (see
/// [`crate::panic::contained`]): layers emit some events from `Drop` (a
/// released slot, a call cut off by a panic), and a second panic escaping
/// a destructor would abort the process.
///
/// `palisade-metrics` provides adapters for the `metrics` facade,
/// `prometheus-client` and `tracing`. [`NoopSink`] ignores everything, and
/// [`Fanout`] (or a tuple of sinks) sends every event to several sinks.
pub trait MetricsSink: Send + Sync + 'static {
    /// Records one event. The default implementation ignores it.
    #[inline]
    fn record(&self, event: &Event<'_>) {
        let _ = event;
    }
}

/// A sink that ignores every event.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoopSink;

impl MetricsSink for NoopSink {}

impl<S: MetricsSink + ?Sized> MetricsSink for Arc<S> {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        (**self).record(event);
    }
}

impl<S: MetricsSink + ?Sized> MetricsSink for Box<S> {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        (**self).record(event);
    }
}

impl<A: MetricsSink, B: MetricsSink> MetricsSink for (A, B) {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        self.0.record(event);
        self.1.record(event);
    }
}

impl<A: MetricsSink, B: MetricsSink, C: MetricsSink> MetricsSink for (A, B, C) {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        self.0.record(event);
        self.1.record(event);
        self.2.record(event);
    }
}

/// Sends every event to several sinks, in the order they were added.
///
/// ```
/// use palisade_core::{Fanout, Metrics, NoopSink};
///
/// let metrics = Metrics::new(Fanout::new().with(NoopSink).with(NoopSink));
/// assert!(metrics.is_enabled());
/// ```
#[derive(Clone, Default)]
pub struct Fanout {
    sinks: Vec<Arc<dyn MetricsSink>>,
}

impl Fanout {
    /// An empty fan-out, which ignores every event until sinks are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a sink.
    #[must_use]
    pub fn with(mut self, sink: impl MetricsSink) -> Self {
        self.sinks.push(Arc::new(sink));
        self
    }

    /// Adds a sink that is already shared.
    #[must_use]
    pub fn with_arc(mut self, sink: Arc<dyn MetricsSink>) -> Self {
        self.sinks.push(sink);
        self
    }

    /// Adds a sink in place.
    pub fn push(&mut self, sink: Arc<dyn MetricsSink>) {
        self.sinks.push(sink);
    }

    /// How many sinks receive each event.
    pub fn len(&self) -> usize {
        self.sinks.len()
    }

    /// Whether no sink has been added.
    pub fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

impl fmt::Debug for Fanout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fanout")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl MetricsSink for Fanout {
    #[inline]
    fn record(&self, event: &Event<'_>) {
        for sink in &self.sinks {
            sink.record(event);
        }
    }
}

/// The handle a layer holds to report its events.
///
/// Cloning it clones an `Arc`. [`Metrics::noop`] (also the default) skips
/// the virtual call entirely.
#[derive(Clone)]
pub struct Metrics {
    sink: Option<Arc<dyn MetricsSink>>,
}

impl Metrics {
    /// A handle that reports to `sink`.
    pub fn new(sink: impl MetricsSink) -> Self {
        Self {
            sink: Some(Arc::new(sink)),
        }
    }

    /// A handle that reports to a sink that is already shared.
    pub fn from_arc(sink: Arc<dyn MetricsSink>) -> Self {
        Self { sink: Some(sink) }
    }

    /// A handle that reports nothing.
    pub const fn noop() -> Self {
        Self { sink: None }
    }

    /// Whether events go anywhere. Layers may use this to skip work that
    /// only feeds metrics, such as computing a rate.
    #[inline]
    pub fn is_enabled(&self) -> bool {
        self.sink.is_some()
    }

    /// Reports one event.
    #[inline]
    pub fn emit(&self, event: &Event<'_>) {
        if let Some(sink) = &self.sink {
            record(&**sink, event);
        }
    }

    /// Reports the event `event` builds, building it only when a sink
    /// listens: for events on a layer's fast path, whose fields (a policy
    /// name behind a pointer) would otherwise be read on every request.
    ///
    /// ```
    /// use palisade_core::{Event, LayerKind, Metrics};
    ///
    /// Metrics::noop().emit_with(|| unreachable!("built for nobody"));
    /// Metrics::noop().emit_with(|| Event::Admitted {
    ///     policy: "api",
    ///     layer: LayerKind::RateLimit,
    /// });
    /// ```
    #[inline]
    pub fn emit_with<'a>(&self, event: impl FnOnce() -> Event<'a>) {
        if let Some(sink) = &self.sink {
            record(&**sink, &event());
        }
    }
}

/// Hands `event` to `sink`. While the thread unwinds (an event sent from a
/// destructor run by a panic), a panic of the sink is contained: escaping
/// the destructor, it would abort the process. Otherwise it reaches the
/// caller, as any panic of the code a request runs does.
#[inline]
fn record(sink: &dyn MetricsSink, event: &Event<'_>) {
    if std::thread::panicking() {
        record_unwinding(sink, event);
    } else {
        sink.record(event);
    }
}

/// [`record`] while the thread unwinds: out of line, so that every layer's
/// inlined emit stays a load, a branch and the call.
#[cold]
#[inline(never)]
fn record_unwinding(sink: &dyn MetricsSink, event: &Event<'_>) {
    crate::panic::contained(|| sink.record(event));
}

impl Default for Metrics {
    fn default() -> Self {
        Self::noop()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

impl<S: MetricsSink> From<Arc<S>> for Metrics {
    fn from(sink: Arc<S>) -> Self {
        Self::from_arc(sink)
    }
}

/// One fact reported by a palisade layer, task group or offload queue.
///
/// Every variant documents when it fires and what a metrics backend should
/// do with it. Names passed in `policy`, `group`, `task` and `queue` are
/// chosen by the user when the component is built, never taken from a
/// request, so they are safe as metric labels.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// A layer let a request through (rate limiter, circuit breaker,
    /// bulkhead).
    ///
    /// Backend: increment `palisade_admitted_total{policy,layer}`.
    Admitted {
        /// Policy name of the layer.
        policy: &'a str,
        /// Which layer admitted the request.
        layer: LayerKind,
    },

    /// A layer refused a request before it reached the service.
    ///
    /// Backend: increment `palisade_rejections_total{policy,layer,reason}`.
    Rejected {
        /// Policy name of the layer.
        policy: &'a str,
        /// Which layer refused.
        layer: LayerKind,
        /// Why.
        reason: RejectReason,
    },

    /// A call a layer admitted has finished, and the layer classified it.
    ///
    /// `latency` is present when the layer measured it anyway (a breaker
    /// with slow-call detection, an adaptive bulkhead); layers never read
    /// the clock only to fill it.
    ///
    /// Backend: increment `palisade_requests_total{policy,layer,outcome}`;
    /// when `latency` is present, observe it in
    /// `palisade_request_duration_seconds{policy,layer}`.
    Completed {
        /// Policy name of the layer.
        policy: &'a str,
        /// Which layer classified the call.
        layer: LayerKind,
        /// Success, failure, ignored or cancelled.
        outcome: Outcome,
        /// How long the call took, when measured. A circuit breaker leaves
        /// out the time the call waited in a palisade bulkhead's queue
        /// below it (see [`queue`](crate::queue)). A call whose outcome
        /// waited for the end of its stream (a gRPC status in trailers) is
        /// timed to its answer (see
        /// [`RecordOutcome::answered`](crate::classify::RecordOutcome::answered)).
        latency: Option<Duration>,
    },

    /// A panic inside the service was caught and turned into an error.
    ///
    /// Backend: increment `palisade_panics_total{policy}`. The code that
    /// caught the panic logs it itself at error level, with the backtrace,
    /// so a log backend writes it at a lower level, or not at all.
    PanicCaught {
        /// Policy name of the catching layer.
        policy: &'a str,
        /// The panic message (`&str` and `String` payloads), or a
        /// description of the payload's type.
        message: &'a str,
        /// Where the panic was raised, when the palisade panic hook saw it.
        location: Option<&'a PanicLocation>,
    },

    /// A call ran past its deadline and was cancelled, or, on a caller's
    /// deadline, its answer reached the timeout only once that deadline
    /// had fired, too late for the caller, and was dropped.
    ///
    /// Backend: increment `palisade_timeouts_total{policy,deadline}`, with
    /// `deadline` `caller` or `policy` (see `caller`), so that an alert on
    /// slow calls is not set off by clients that ask for tiny deadlines.
    TimedOut {
        /// Policy name of the timeout layer.
        policy: &'a str,
        /// The deadline that was applied to this request.
        timeout: Duration,
        /// Whether the deadline was the remote caller's (a `grpc-timeout`
        /// shorter than the policy's, followed downstream too): the client
        /// was in a hurry, the service did not fail.
        caller: bool,
    },

    /// A circuit breaker moved from one state to another.
    ///
    /// Transitions of one breaker are reported in the order they happened.
    /// Backend: set `palisade_breaker_state{policy,state}` to 1 for `to` and
    /// to 0 for every other [`CircuitState`], so exactly one series is 1;
    /// count transitions; log at warn level.
    StateChanged {
        /// Policy name of the breaker.
        policy: &'a str,
        /// The state left.
        from: CircuitState,
        /// The state entered.
        to: CircuitState,
        /// What caused the transition.
        reason: TransitionReason,
    },

    /// A circuit breaker in metrics-only (shadow) mode moved its shadow
    /// state: the state it would be in if it were enforcing. It still lets
    /// every call through, and its reported state stays
    /// [`CircuitState::MetricsOnly`].
    ///
    /// Backend: increment
    /// `palisade_breaker_shadow_transitions_total{policy,to}`; do not touch
    /// `palisade_breaker_state`. A log backend writes it at info level: it
    /// says what enforcing would have done.
    ShadowStateChanged {
        /// Policy name of the breaker.
        policy: &'a str,
        /// The shadow state left.
        from: CircuitState,
        /// The shadow state entered.
        to: CircuitState,
        /// What caused the transition.
        reason: TransitionReason,
    },

    /// A circuit breaker's failure and slow-call rates, in `0.0..=1.0`,
    /// reported after its window changes. A time window also empties as
    /// time passes: while the breaker is closed, forced closed or (in
    /// metrics-only mode) would be closed, it is reported again on each
    /// refresh of the breaker's handle, which a metrics scrape can call.
    ///
    /// Backend: set `palisade_breaker_failure_rate{policy}` and
    /// `palisade_breaker_slow_rate{policy}`.
    BreakerRates {
        /// Policy name of the breaker.
        policy: &'a str,
        /// Failed calls divided by recorded calls in the window.
        failure_rate: f64,
        /// Slow calls divided by recorded calls in the window.
        slow_rate: f64,
        /// Calls in the window.
        calls: u64,
    },

    /// A layer took or released an in-flight slot (bulkhead permit).
    ///
    /// `change` is exact and commutative, so a backend that applies
    /// [`InFlightChange::delta`] to a gauge is exact whatever the order in
    /// which concurrent events arrive. `in_flight` is the count right after
    /// the change, for display.
    ///
    /// Backend: add `change.delta()` to `palisade_in_flight{policy}`; set
    /// `palisade_concurrency_limit{policy}` to `limit`.
    InFlightChanged {
        /// Policy name of the layer.
        policy: &'a str,
        /// Which layer.
        layer: LayerKind,
        /// Acquired (+1) or released (-1).
        change: InFlightChange,
        /// The in-flight count right after this change.
        in_flight: usize,
        /// The concurrency limit in force.
        limit: usize,
    },

    /// An adaptive concurrency limit moved.
    ///
    /// Backend: set `palisade_concurrency_limit{policy}`.
    LimitChanged {
        /// Policy name of the bulkhead.
        policy: &'a str,
        /// The limit before.
        from: usize,
        /// The limit now.
        to: usize,
    },

    /// A fallback was chosen to answer in place of the service. It fires
    /// when the source is asked, before its answer is ready: a source that
    /// then fails (an async closure's or a fallback service's error) has
    /// still been counted here. The caller then gets, for a palisade
    /// rejection, a `FallbackFailed` error that keeps the rejection (so a
    /// 429 stays a 429), and for any other error, the source's error.
    ///
    /// Backend: increment `palisade_fallbacks_total{policy}` (optionally by
    /// trigger).
    FallbackUsed {
        /// Policy name of the fallback layer.
        policy: &'a str,
        /// What the fallback answered for.
        trigger: FallbackTrigger,
    },

    /// The number of keys a keyed limiter tracks changed noticeably
    /// (after an insertion sweep or an eviction).
    ///
    /// Backend: set `palisade_ratelimit_keys{policy}`.
    KeysTracked {
        /// Policy name of the limiter.
        policy: &'a str,
        /// Keys tracked now.
        keys: usize,
        /// The configured cap.
        cap: usize,
    },

    /// A keyed limiter forgot idle keys whose buckets were full again.
    ///
    /// Backend: add `count` to `palisade_ratelimit_evictions_total{policy}`.
    KeysEvicted {
        /// Policy name of the limiter.
        policy: &'a str,
        /// How many keys were evicted.
        count: usize,
    },

    /// A keyed limiter charged a request to the shared overflow bucket,
    /// because its key found no slot of its own: the limiter is at its key
    /// cap with nothing idle, or (even below the cap) the key's set of
    /// slots holds only active keys. It fires
    /// for every such request, not once per key: one busy client without a
    /// slot counts as many times as it calls.
    ///
    /// Backend: increment `palisade_ratelimit_overflow_total{policy}`.
    OverflowUsed {
        /// Policy name of the limiter.
        policy: &'a str,
    },

    /// A header palisade reads (such as `grpc-timeout`, or the entry of
    /// `X-Forwarded-For` or `Forwarded` where the rate limiter's client-IP
    /// key stopped) was malformed and was ignored.
    ///
    /// Backend: increment `palisade_malformed_headers_total{policy,header}`;
    /// log at debug level. Never a reason to fail the request.
    MalformedHeader {
        /// Policy name of the layer that read it.
        policy: &'a str,
        /// Which layer.
        layer: LayerKind,
        /// The header name, lower case.
        header: &'static str,
    },

    /// A supervised task started.
    ///
    /// Backend: increment `palisade_tasks_live{group}` and
    /// `palisade_tasks_started_total{group}`.
    TaskStarted {
        /// The task group (or `"spawn"` for tasks spawned alone).
        group: &'a str,
        /// The task's name.
        task: &'a str,
    },

    /// A supervised task ended, whatever the way.
    ///
    /// Fires exactly once for every [`Event::TaskStarted`].
    /// Backend: decrement `palisade_tasks_live{group}`; increment
    /// `palisade_tasks_ended_total{group,end}`.
    TaskEnded {
        /// The task group.
        group: &'a str,
        /// The task's name.
        task: &'a str,
        /// How it ended.
        end: TaskEnd,
    },

    /// A supervised task panicked. Fires before the matching
    /// [`Event::TaskEnded`] (or before a restart). A job of a worker pool
    /// that panics fires it under the worker's task name, and the worker
    /// goes on with the next job: no end and no restart follow.
    ///
    /// Backend: increment `palisade_task_panics_total{group}`. The task
    /// group logs the panic itself at error level, with the backtrace, so a
    /// log backend writes it at a lower level, or not at all.
    TaskPanicked {
        /// The task group.
        group: &'a str,
        /// The task's name.
        task: &'a str,
        /// The panic message.
        message: &'a str,
        /// Where the panic was raised, when known.
        location: Option<&'a PanicLocation>,
    },

    /// A supervised loop is restarted after a panic or an error: fires
    /// when it starts again, once its backoff has passed (a loop cancelled
    /// during the backoff is not restarted and fires none).
    ///
    /// Backend: increment `palisade_task_restarts_total{group}`.
    TaskRestarted {
        /// The task group.
        group: &'a str,
        /// The task's name.
        task: &'a str,
        /// Restarts so far in the current window.
        attempt: u32,
        /// The backoff before this restart.
        backoff: Duration,
    },

    /// A supervised loop reached its restart limit within the window and
    /// will not be restarted again. Fires before the matching
    /// [`Event::TaskEnded`].
    ///
    /// Backend: increment `palisade_task_gave_up_total{group}`; log at error
    /// level, since the work that loop did has stopped.
    TaskGaveUp {
        /// The task group.
        group: &'a str,
        /// The task's name.
        task: &'a str,
        /// Restarts made before giving up.
        restarts: u32,
    },

    /// A piece of offloaded work was dropped without being delivered.
    ///
    /// Backend: increment `palisade_offload_dropped_total{queue,reason}`.
    OffloadDropped {
        /// The offload queue's name.
        queue: &'a str,
        /// Why it was dropped.
        reason: DropReason,
    },

    /// One attempt to deliver a piece of offloaded work failed: its service
    /// returned an error or panicked. Fires for every failed attempt, the
    /// last one included: before the backoff of the retry that follows, or
    /// before the [`Event::OffloadDropped`] of work whose attempts ran out.
    ///
    /// Backend: increment
    /// `palisade_offload_attempt_failures_total{queue,cause}`. The queue
    /// logs a panic itself at error level, with the backtrace, so a log
    /// backend writes it at a lower level, or not at all.
    OffloadAttemptFailed {
        /// The offload queue's name.
        queue: &'a str,
        /// Which attempt failed (1 for the first).
        attempt: u32,
        /// Whether the service returned an error or panicked.
        cause: AttemptFailure,
    },

    /// A piece of offloaded work was delivered to its service.
    ///
    /// Backend: increment `palisade_offload_delivered_total{queue}`.
    OffloadDelivered {
        /// The offload queue's name.
        queue: &'a str,
        /// How many attempts it took (1 when the first call succeeded).
        attempts: u32,
    },
}

impl Event<'_> {
    /// The stable name of this kind of event, such as
    /// `"palisade.request.rejected"`.
    pub const fn name(&self) -> &'static str {
        match self {
            Event::Admitted { .. } => "palisade.request.admitted",
            Event::Rejected { .. } => "palisade.request.rejected",
            Event::Completed { .. } => "palisade.request.completed",
            Event::PanicCaught { .. } => "palisade.panic.caught",
            Event::TimedOut { .. } => "palisade.timeout.elapsed",
            Event::StateChanged { .. } => "palisade.breaker.state_changed",
            Event::ShadowStateChanged { .. } => "palisade.breaker.shadow_state_changed",
            Event::BreakerRates { .. } => "palisade.breaker.rates",
            Event::InFlightChanged { .. } => "palisade.in_flight.changed",
            Event::LimitChanged { .. } => "palisade.limit.changed",
            Event::FallbackUsed { .. } => "palisade.fallback.used",
            Event::KeysTracked { .. } => "palisade.ratelimit.keys",
            Event::KeysEvicted { .. } => "palisade.ratelimit.evicted",
            Event::OverflowUsed { .. } => "palisade.ratelimit.overflow",
            Event::MalformedHeader { .. } => "palisade.header.malformed",
            Event::TaskStarted { .. } => "palisade.task.started",
            Event::TaskEnded { .. } => "palisade.task.ended",
            Event::TaskPanicked { .. } => "palisade.task.panicked",
            Event::TaskRestarted { .. } => "palisade.task.restarted",
            Event::TaskGaveUp { .. } => "palisade.task.gave_up",
            Event::OffloadDropped { .. } => "palisade.offload.dropped",
            Event::OffloadDelivered { .. } => "palisade.offload.delivered",
            Event::OffloadAttemptFailed { .. } => "palisade.offload.attempt_failed",
        }
    }
}

macro_rules! label_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => ($label:literal, $human:literal), )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[non_exhaustive]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The snake_case label used in metric names and label values.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $label,)+
                }
            }

            /// A lower-case description for messages.
            pub const fn describe(self) -> &'static str {
                match self {
                    $($name::$variant => $human,)+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.describe())
            }
        }
    };
}

label_enum! {
    /// Which palisade component an event, a rejection or a configuration
    /// error comes from.
    pub enum LayerKind {
        /// The fallback layer.
        Fallback => ("fallback", "fallback"),
        /// The rate limiter.
        RateLimit => ("rate_limit", "rate limiter"),
        /// The circuit breaker.
        CircuitBreaker => ("circuit_breaker", "circuit breaker"),
        /// The timeout layer.
        Timeout => ("timeout", "timeout"),
        /// The concurrency limit (bulkhead).
        Bulkhead => ("bulkhead", "bulkhead"),
        /// The panic-catch layer.
        PanicCatch => ("panic_catch", "panic catch"),
        /// The fault-injection layer.
        Chaos => ("chaos", "chaos"),
        /// A supervised task or task group.
        Task => ("task", "task group"),
        /// An offload queue for non-core work.
        Offload => ("offload", "offload queue"),
        /// The ordered stack of layers.
        Stack => ("stack", "stack"),
        /// The HTTP and gRPC error mapping.
        Http => ("http", "http mapping"),
        /// A metrics sink (an adapter, a snapshot).
        Metrics => ("metrics", "metrics sink"),
    }
}

label_enum! {
    /// Why a layer refused a request.
    pub enum RejectReason {
        /// The rate limiter's bucket for this key was empty.
        RateLimited => ("rate_limited", "rate limited"),
        /// The rate limiter could not extract a key and is configured to
        /// reject such requests.
        MissingKey => ("missing_key", "no rate-limit key"),
        /// The circuit is open (or forced open).
        CircuitOpen => ("circuit_open", "circuit open"),
        /// The circuit is half-open and every probe slot is taken.
        HalfOpenFull => ("half_open_full", "circuit half-open, probes busy"),
        /// Every concurrency slot was taken and no waiting was allowed.
        ConcurrencyFull => ("concurrency_full", "concurrency limit reached"),
        /// The queue of waiters was full.
        QueueFull => ("queue_full", "wait queue full"),
        /// A waiter did not get a slot before its maximum wait.
        WaitTimedOut => ("wait_timed_out", "wait for a slot timed out"),
        /// The call ran past its deadline (reported by [`Elapsed`](crate::Elapsed);
        /// the timeout layer emits [`Event::TimedOut`] for it).
        TimedOut => ("timed_out", "timed out"),
        /// The service panicked (reported by [`Panicked`](crate::Panicked);
        /// the panic-catch layer emits [`Event::PanicCaught`] for it).
        Panicked => ("panicked", "service panicked"),
    }
}

label_enum! {
    /// How a call ended, as seen by a layer that classifies outcomes.
    ///
    /// A [`Classify`](crate::Classify) implementation decides between
    /// `Success`, `Failure` and `Ignored`; `Cancelled` is what a layer
    /// records when the call's future (or its response body) is dropped
    /// before an outcome was known.
    pub enum Outcome {
        /// The call succeeded.
        Success => ("success", "success"),
        /// The call failed and counts against the dependency.
        Failure => ("failure", "failure"),
        /// The call finished but says nothing about the dependency's health
        /// (for example a local rejection, or a client error).
        Ignored => ("ignored", "ignored"),
        /// The caller dropped the call before it finished.
        Cancelled => ("cancelled", "cancelled"),
    }
}

label_enum! {
    /// A circuit breaker's state.
    pub enum CircuitState {
        /// Calls flow and outcomes are recorded.
        Closed => ("closed", "closed"),
        /// Calls are rejected until the open wait elapses.
        Open => ("open", "open"),
        /// A limited number of probe calls test the dependency.
        HalfOpen => ("half_open", "half-open"),
        /// Held open by an operator: every call is rejected.
        ForcedOpen => ("forced_open", "forced open"),
        /// Held closed by an operator: every call flows, outcomes are still
        /// recorded and reported.
        ForcedClosed => ("forced_closed", "forced closed"),
        /// Switched off: every call flows and nothing is recorded.
        Disabled => ("disabled", "disabled"),
        /// Shadow mode: outcomes are recorded and transitions computed and
        /// reported, but no call is ever rejected.
        MetricsOnly => ("metrics_only", "metrics only"),
    }
}

label_enum! {
    /// What caused a circuit breaker transition.
    pub enum TransitionReason {
        /// The failure rate reached its threshold.
        FailureRate => ("failure_rate", "failure rate over threshold"),
        /// The slow-call rate reached its threshold.
        SlowRate => ("slow_rate", "slow-call rate over threshold"),
        /// The open wait elapsed; probes may run.
        WaitElapsed => ("wait_elapsed", "open wait elapsed"),
        /// The probes' rates were under the thresholds.
        ProbesSucceeded => ("probes_succeeded", "probes succeeded"),
        /// Probes did not complete within the half-open maximum wait.
        HalfOpenTimeout => ("half_open_timeout", "half-open timed out"),
        /// An operator forced the state.
        Forced => ("forced", "forced by operator"),
        /// An operator reset the breaker.
        Reset => ("reset", "reset by operator"),
        /// A keyed map evicted a key's open or half-open breaker (its wait
        /// was over) to make room: the key meets a fresh, closed breaker
        /// next time.
        Evicted => ("evicted", "key evicted"),
    }
}

label_enum! {
    /// What a fallback answered for.
    pub enum FallbackTrigger {
        /// A palisade rejection (rate limit, missing key, open circuit,
        /// overload, timeout, panic).
        Rejection => ("rejection", "palisade rejection"),
        /// Any other error from the service.
        Error => ("error", "service error"),
        /// A response that matched the fallback's response predicate.
        Response => ("response", "response matched"),
    }
}

label_enum! {
    /// What a keyed limiter used as the key.
    pub enum KeyKind {
        /// No key: one bucket for every request.
        Global => ("global", "global"),
        /// The peer's IP address (or its IPv6 prefix).
        PeerIp => ("peer_ip", "peer address"),
        /// The client's IP address behind trusted proxies.
        ClientIp => ("client_ip", "client address"),
        /// A request header's value.
        Header => ("header", "header"),
        /// A user-supplied closure.
        Custom => ("custom", "custom key"),
        /// The shared bucket for requests without a key.
        Fallback => ("fallback", "shared bucket for requests without a key"),
        /// The shared bucket for new keys while the key cap is reached.
        Overflow => ("overflow", "shared overflow bucket"),
    }
}

label_enum! {
    /// How a supervised task ended.
    pub enum TaskEnd {
        /// The future returned normally (for a `Result`, `Ok`).
        Completed => ("completed", "completed"),
        /// The future returned an error.
        Failed => ("failed", "failed"),
        /// The future panicked.
        Panicked => ("panicked", "panicked"),
        /// The task observed cancellation and stopped.
        Cancelled => ("cancelled", "cancelled"),
        /// The task was aborted (for example at a shutdown deadline).
        Aborted => ("aborted", "aborted"),
    }
}

label_enum! {
    /// Why a piece of offloaded work was dropped.
    pub enum DropReason {
        /// The queue was full when the work was pushed.
        QueueFull => ("queue_full", "queue full"),
        /// Every retry failed.
        RetriesExhausted => ("retries_exhausted", "retries exhausted"),
        /// Shutdown's drain deadline passed with the work still queued or
        /// in progress.
        Shutdown => ("shutdown", "dropped at shutdown"),
        /// The queue was already closed when the work was pushed.
        Closed => ("closed", "queue closed"),
        /// The service's readiness failed (`poll_ready` returned an
        /// error), which a tower service does not recover from: the work
        /// was not retried.
        ServiceFailed => ("service_failed", "service failed"),
    }
}

label_enum! {
    /// How an attempt to deliver offloaded work failed.
    pub enum AttemptFailure {
        /// The service returned an error (from `poll_ready` or from its
        /// call).
        Error => ("error", "returned an error"),
        /// The service panicked; the panic was caught and the attempt
        /// counted as failed.
        Panic => ("panic", "panicked"),
    }
}

label_enum! {
    /// The direction of an in-flight change.
    pub enum InFlightChange {
        /// A slot was taken.
        Acquired => ("acquired", "acquired"),
        /// A slot was given back.
        Released => ("released", "released"),
    }
}

impl InFlightChange {
    /// `+1` for [`Acquired`](Self::Acquired), `-1` for
    /// [`Released`](Self::Released).
    pub const fn delta(self) -> i64 {
        match self {
            InFlightChange::Acquired => 1,
            InFlightChange::Released => -1,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// One event of every kind. The exhaustive match in `index` fails to
    /// compile when a kind is added without being listed here.
    fn every_event(location: &PanicLocation) -> [Event<'_>; 23] {
        let policy = "p";
        [
            Event::Admitted {
                policy,
                layer: LayerKind::RateLimit,
            },
            Event::Rejected {
                policy,
                layer: LayerKind::Bulkhead,
                reason: RejectReason::QueueFull,
            },
            Event::Completed {
                policy,
                layer: LayerKind::CircuitBreaker,
                outcome: Outcome::Success,
                latency: Some(Duration::from_millis(3)),
            },
            Event::PanicCaught {
                policy,
                message: "boom",
                location: Some(location),
            },
            Event::TimedOut {
                policy,
                timeout: Duration::from_secs(1),
                caller: false,
            },
            Event::StateChanged {
                policy,
                from: CircuitState::Closed,
                to: CircuitState::Open,
                reason: TransitionReason::FailureRate,
            },
            Event::ShadowStateChanged {
                policy,
                from: CircuitState::Closed,
                to: CircuitState::Open,
                reason: TransitionReason::FailureRate,
            },
            Event::BreakerRates {
                policy,
                failure_rate: 0.5,
                slow_rate: 0.0,
                calls: 10,
            },
            Event::InFlightChanged {
                policy,
                layer: LayerKind::Bulkhead,
                change: InFlightChange::Acquired,
                in_flight: 1,
                limit: 4,
            },
            Event::LimitChanged {
                policy,
                from: 4,
                to: 5,
            },
            Event::FallbackUsed {
                policy,
                trigger: FallbackTrigger::Rejection,
            },
            Event::KeysTracked {
                policy,
                keys: 10,
                cap: 100,
            },
            Event::KeysEvicted { policy, count: 3 },
            Event::OverflowUsed { policy },
            Event::MalformedHeader {
                policy,
                layer: LayerKind::Timeout,
                header: "grpc-timeout",
            },
            Event::TaskStarted {
                group: "g",
                task: "t",
            },
            Event::TaskEnded {
                group: "g",
                task: "t",
                end: TaskEnd::Cancelled,
            },
            Event::TaskPanicked {
                group: "g",
                task: "t",
                message: "boom",
                location: None,
            },
            Event::TaskRestarted {
                group: "g",
                task: "t",
                attempt: 1,
                backoff: Duration::from_millis(100),
            },
            Event::TaskGaveUp {
                group: "g",
                task: "t",
                restarts: 5,
            },
            Event::OffloadDropped {
                queue: "audit",
                reason: DropReason::QueueFull,
            },
            Event::OffloadDelivered {
                queue: "audit",
                attempts: 2,
            },
            Event::OffloadAttemptFailed {
                queue: "audit",
                attempt: 1,
                cause: AttemptFailure::Panic,
            },
        ]
    }

    fn index(event: &Event<'_>) -> usize {
        match event {
            Event::Admitted { .. } => 0,
            Event::Rejected { .. } => 1,
            Event::Completed { .. } => 2,
            Event::PanicCaught { .. } => 3,
            Event::TimedOut { .. } => 4,
            Event::StateChanged { .. } => 5,
            Event::BreakerRates { .. } => 6,
            Event::InFlightChanged { .. } => 7,
            Event::LimitChanged { .. } => 8,
            Event::FallbackUsed { .. } => 9,
            Event::KeysTracked { .. } => 10,
            Event::KeysEvicted { .. } => 11,
            Event::OverflowUsed { .. } => 12,
            Event::MalformedHeader { .. } => 13,
            Event::TaskStarted { .. } => 14,
            Event::TaskEnded { .. } => 15,
            Event::TaskPanicked { .. } => 16,
            Event::TaskRestarted { .. } => 17,
            Event::OffloadDropped { .. } => 18,
            Event::OffloadDelivered { .. } => 19,
            Event::TaskGaveUp { .. } => 20,
            Event::ShadowStateChanged { .. } => 21,
            Event::OffloadAttemptFailed { .. } => 22,
        }
    }

    #[derive(Debug, Default)]
    struct Count(AtomicUsize);

    impl MetricsSink for Count {
        fn record(&self, event: &Event<'_>) {
            // Touch the event so the call is not optimised away.
            let _ = std::hint::black_box(event.name());
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn the_list_covers_every_kind_once_with_distinct_names() {
        let location = PanicLocation::new("src/lib.rs", 1, 1);
        let events = every_event(&location);
        let mut seen = [false; 23];
        for e in &events {
            assert!(!seen[index(e)], "{} listed twice", e.name());
            seen[index(e)] = true;
        }
        assert!(seen.iter().all(|s| *s));
        let mut names: Vec<_> = events.iter().map(Event::name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), events.len(), "event names are unique");
    }

    #[test]
    fn emitting_allocates_nothing() {
        let location = PanicLocation::new("src/lib.rs", 1, 1);
        let events = every_event(&location);
        let counted = Arc::new(Count::default());
        let handles = [
            Metrics::noop(),
            Metrics::new(NoopSink),
            Metrics::new(Fanout::new().with(NoopSink).with(counted.clone())),
            Metrics::new((NoopSink, counted.clone())),
        ];
        // Warm up anything lazily initialised.
        for m in &handles {
            for e in &events {
                m.emit(e);
            }
        }
        let info = allocation_counter::measure(|| {
            for _ in 0..100 {
                for m in &handles {
                    for e in &events {
                        m.emit(std::hint::black_box(e));
                    }
                }
            }
        });
        assert_eq!(info.count_total, 0, "emitting events allocated: {info:?}");
        // The harness itself sees an allocation when there is one.
        let control = allocation_counter::measure(|| {
            std::hint::black_box(Box::new(1_u8));
        });
        assert_eq!(control.count_total, 1);
        // Two handles reach `counted`, in both the warm-up and the 100 rounds.
        assert_eq!(
            counted.0.load(Ordering::Relaxed),
            2 * events.len() * 101,
            "every event reached the counting sink"
        );
    }

    #[test]
    fn labels_are_snake_case_and_unique() {
        fn check(labels: &[&'static str]) {
            let mut sorted = labels.to_vec();
            sorted.sort_unstable();
            sorted.dedup();
            assert_eq!(sorted.len(), labels.len());
            for l in labels {
                assert!(l.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{l}");
            }
        }
        check(
            &LayerKind::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
        );
        check(
            &RejectReason::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
        );
        check(
            &CircuitState::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
        );
        check(&Outcome::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>());
        check(&TaskEnd::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>());
        check(
            &DropReason::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
        );
        check(
            &AttemptFailure::ALL
                .iter()
                .map(|k| k.as_str())
                .collect::<Vec<_>>(),
        );
        assert_eq!(InFlightChange::Acquired.delta(), 1);
        assert_eq!(InFlightChange::Released.delta(), -1);
    }

    /// A sink with a bug: it panics on every event, and counts them.
    #[derive(Default)]
    struct AlwaysPanics(AtomicUsize);

    impl MetricsSink for AlwaysPanics {
        fn record(&self, event: &Event<'_>) {
            self.0.fetch_add(1, Ordering::Relaxed);
            panic!("a sink with a bug: {}", event.name());
        }
    }

    /// Emits one event when dropped, as a layer's slot guard does.
    struct EmitsOnDrop(Metrics);

    impl Drop for EmitsOnDrop {
        fn drop(&mut self) {
            self.0.emit(&Event::Admitted {
                policy: "p",
                layer: LayerKind::Bulkhead,
            });
            self.0.emit_with(|| Event::Admitted {
                policy: "p",
                layer: LayerKind::Bulkhead,
            });
        }
    }

    #[test]
    fn a_sink_that_panics_while_the_thread_unwinds_is_contained() {
        let sink = Arc::new(AlwaysPanics::default());
        let metrics = Metrics::from_arc(sink.clone());

        // Unwinding: both events reach the sink, whose panics stay inside
        // the destructor (escaping it, one would abort this test binary).
        let guard = EmitsOnDrop(metrics.clone());
        let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the first panic");
        }))
        .unwrap_err();
        assert_eq!(
            &*crate::panic::payload_message(&*payload),
            "the first panic"
        );
        assert_eq!(sink.0.load(Ordering::Relaxed), 2);

        // Not unwinding: the sink's panic reaches the caller.
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            drop(EmitsOnDrop(metrics));
        }))
        .unwrap_err();
        assert_eq!(
            &*crate::panic::payload_message(&*caught),
            "a sink with a bug: palisade.request.admitted"
        );
        assert_eq!(sink.0.load(Ordering::Relaxed), 3);
    }
}

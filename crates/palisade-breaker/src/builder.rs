use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use palisade_core::classify::{ErrorsAsFailures, IgnoreLocalRejections};
use palisade_core::config::Validate;
use palisade_core::{Clock, ConfigError, LayerKind, Metrics, PolicyName, SharedState};

use crate::breaker::{Backoff, Breaker, Config, MAX_PROBES, WindowConfig};
use crate::keyed::KeyedCircuitBreakerLayer;
use crate::layer::CircuitBreakerLayer;
use crate::window::{BUCKET_CAPACITY, MAX_BUCKETS, MAX_COUNT_WINDOW};

/// The classifier a breaker uses unless told otherwise: every `Err` is a
/// failure, except palisade's own local-saturation rejections
/// ([`RateLimited`](palisade_core::RateLimited),
/// [`Overloaded`](palisade_core::Overloaded),
/// [`MissingKey`](palisade_core::MissingKey)) and the expiry of a deadline
/// the remote caller chose
/// ([`Elapsed::is_caller_deadline`](palisade_core::Elapsed::is_caller_deadline),
/// for example from a `grpc-timeout` header), which are ignored.
/// [`Elapsed`](palisade_core::Elapsed) on the timeout policy's own deadline
/// and [`Panicked`](palisade_core::Panicked) from layers below are
/// failures.
pub type DefaultClassifier = IgnoreLocalRejections<ErrorsAsFailures>;

/// Configures a [`CircuitBreakerLayer`] (or a
/// [`KeyedCircuitBreakerLayer`]).
///
/// Every setter takes the value as given; [`build`](Self::build) checks
/// them all and names the first invalid field. The defaults suit a typical
/// remote dependency:
///
/// | setting | default |
/// |---|---|
/// | window | the last 100 calls ([`count_window`](Self::count_window)) |
/// | [`minimum_calls`](Self::minimum_calls) | 20 |
/// | [`failure_rate_threshold`](Self::failure_rate_threshold) | 0.5 |
/// | slow calls | off ([`slow_call_duration`](Self::slow_call_duration)); rate threshold 1.0 once on |
/// | [`open_wait`](Self::open_wait) | 30 s, no growth, no jitter |
/// | [`half_open_probes`](Self::half_open_probes) | 5 |
/// | [`half_open_max_wait`](Self::half_open_max_wait) | 60 s |
/// | cancelled calls | ignored ([`cancelled_as_failure`](Self::cancelled_as_failure)) |
/// | classifier | [`DefaultClassifier`] |
#[derive(Clone, Debug)]
pub struct CircuitBreakerBuilder<C = DefaultClassifier> {
    policy: PolicyName,
    metrics: Metrics,
    clock: Clock,
    window: WindowConfig,
    minimum_calls: u64,
    failure_rate_threshold: f64,
    slow_call_duration: Option<Duration>,
    slow_call_rate_threshold: f64,
    measure_latency: bool,
    open_wait: Duration,
    backoff: Option<(f64, Duration)>,
    jitter: f64,
    seed: Option<u64>,
    probes: u32,
    half_open_max_wait: Duration,
    cancelled_as_failure: bool,
    classifier: C,
}

impl Default for CircuitBreakerBuilder {
    fn default() -> Self {
        Self {
            policy: PolicyName::default(),
            metrics: Metrics::noop(),
            clock: Clock::tokio(),
            window: WindowConfig::Count(100),
            minimum_calls: 20,
            failure_rate_threshold: 0.5,
            slow_call_duration: None,
            slow_call_rate_threshold: 1.0,
            measure_latency: false,
            open_wait: Duration::from_secs(30),
            backoff: None,
            jitter: 0.0,
            seed: None,
            probes: 5,
            half_open_max_wait: Duration::from_secs(60),
            cancelled_as_failure: false,
            classifier: DefaultClassifier::default(),
        }
    }
}

impl<C> CircuitBreakerBuilder<C> {
    /// The policy name carried by every event and rejection.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.policy = name.into();
        self
    }

    /// Where events go. Default: nowhere.
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// The clock every time rule reads. Default: tokio's clock, which tests
    /// can pause and advance.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Judge the last `calls` recorded calls (1 to 16 384): each new outcome
    /// pushes the oldest out. The default, with 100.
    #[must_use]
    pub fn count_window(mut self, calls: usize) -> Self {
        self.window = WindowConfig::Count(calls);
        self
    }

    /// Judge the calls of the last `length`, counted in `buckets` buckets
    /// (1 to 128) of `length / buckets` each (at least 1 ms). The window
    /// slides one bucket at a time. A bucket counts at most 65 535 calls;
    /// further outcomes in a full bucket are not counted.
    ///
    /// A time window reads the clock when each call completes.
    #[must_use]
    pub fn time_window(mut self, length: Duration, buckets: usize) -> Self {
        self.window = WindowConfig::Time { length, buckets };
        self
    }

    /// How many calls the window must hold before any rate is judged.
    /// At most the size of a count window, or 65,535 calls per bucket of a
    /// time window (what a bucket can count).
    #[must_use]
    pub fn minimum_calls(mut self, calls: u64) -> Self {
        self.minimum_calls = calls;
        self
    }

    /// The failure rate (`0.0 < x <= 1.0`) at or above which the breaker
    /// opens, and at or above which the half-open probes re-open it.
    #[must_use]
    pub fn failure_rate_threshold(mut self, rate: f64) -> Self {
        self.failure_rate_threshold = rate;
        self
    }

    /// Turns on slow-call detection: a call that takes at least `duration`
    /// is slow, whether it succeeded or failed. The breaker then reads the
    /// clock when a call is admitted and when it completes. Time the call
    /// spends queued at a palisade bulkhead below the breaker (the stack's
    /// own, or one the service calls through) is local overload, and is
    /// left out of its latency (see `palisade_core::queue`); time in which
    /// several of its sub-calls were queued side by side is left out once.
    /// A gRPC call whose status comes in its trailers is timed to its
    /// answer (its response head), not to the end of its stream: a long
    /// healthy server stream is not a slow call.
    #[must_use]
    pub fn slow_call_duration(mut self, duration: Duration) -> Self {
        self.slow_call_duration = Some(duration);
        self
    }

    /// The slow-call rate (`0.0 < x <= 1.0`) at or above which the breaker
    /// opens. Used once [`slow_call_duration`](Self::slow_call_duration) is
    /// set. Default 1.0: every call in the window slow.
    #[must_use]
    pub fn slow_call_rate_threshold(mut self, rate: f64) -> Self {
        self.slow_call_rate_threshold = rate;
        self
    }

    /// Measure every call's latency and report it in
    /// [`Event::Completed`](palisade_core::Event::Completed), even without
    /// slow-call detection. Costs two clock reads per call.
    #[must_use]
    pub fn measure_latency(mut self, measure: bool) -> Self {
        self.measure_latency = measure;
        self
    }

    /// How long the breaker stays open before it lets probes through.
    #[must_use]
    pub fn open_wait(mut self, wait: Duration) -> Self {
        self.open_wait = wait;
        self
    }

    /// Grows the open wait over consecutive openings: the `n`th opening in a
    /// row waits `open_wait * multiplier^(n-1)`, capped at `max_wait`.
    /// `multiplier` is `1.0 <= x <= 100.0` and `max_wait >= open_wait`. The
    /// growth starts over after the probes close the breaker.
    #[must_use]
    pub fn open_wait_backoff(mut self, multiplier: f64, max_wait: Duration) -> Self {
        self.backoff = Some((multiplier, max_wait));
        self
    }

    /// Shortens each open wait by a random share of up to `fraction`
    /// (`0.0 <= x < 1.0`), so breakers that opened together do not probe
    /// together. The cap is never exceeded.
    #[must_use]
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.jitter = fraction;
        self
    }

    /// Seeds the jitter, for reproducible waits in tests. Default: a random
    /// seed per breaker.
    #[must_use]
    pub fn jitter_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// How many probe calls (1 to 1000) the half-open state admits. Every
    /// other call is rejected until all of them have completed.
    #[must_use]
    pub fn half_open_probes(mut self, probes: u32) -> Self {
        self.probes = probes;
        self
    }

    /// How long the breaker waits in half-open for its probes, counted from
    /// the period's latest probe. Once it has run out, a probe still running
    /// re-opens the breaker; if every probe admitted has finished, fewer
    /// than [`half_open_probes`](Self::half_open_probes), they decide as a
    /// full set would; if none was admitted, a fresh half-open period
    /// starts with the arriving call as a probe (see "Open and half-open"
    /// in the crate docs). Checked when a call arrives and by
    /// [`CircuitBreakerHandle::refresh`](crate::CircuitBreakerHandle::refresh).
    #[must_use]
    pub fn half_open_max_wait(mut self, wait: Duration) -> Self {
        self.half_open_max_wait = wait;
        self
    }

    /// Count a cancelled call (its future or response body dropped before
    /// the outcome was known) as a failure. Default: ignored, and a
    /// cancelled probe gives its slot back.
    ///
    /// A timeout *above* the breaker cancels the calls it cuts off: put the
    /// timeout below (as [`Stack`](https://docs.rs/palisade) does), where
    /// its `Elapsed` reaches the breaker as a failure, or count cancelled
    /// calls here; otherwise probes of a hung dependency give their slots
    /// back and the breaker stays half-open.
    #[must_use]
    pub fn cancelled_as_failure(mut self, failure: bool) -> Self {
        self.cancelled_as_failure = failure;
        self
    }

    /// Decides what counts as a failure: a
    /// [`Classify`](palisade_core::Classify) implementation such as
    /// [`ServerErrorsAsFailures`](palisade_core::classify::ServerErrorsAsFailures),
    /// [`GrpcErrorsAsFailures`](palisade_core::classify::GrpcErrorsAsFailures)
    /// or [`ClassifyFn`](palisade_core::classify::ClassifyFn).
    ///
    /// The classifier is wrapped in [`IgnoreLocalRejections`]: the
    /// rejections of palisade's layers below the breaker that speak of the
    /// caller's side only (a rate limit, a full bulkhead, a missing key, a
    /// timeout on a deadline the client chose) are ignored before it is
    /// asked, so that neither a busy caller nor one client's `grpc-timeout`
    /// can open the circuit. Use
    /// [`unfiltered_classifier`](Self::unfiltered_classifier) to hand them
    /// to the classifier too.
    ///
    /// ```
    /// use palisade_breaker::CircuitBreakerLayer;
    /// use palisade_core::classify::ServerErrorsAsFailures;
    ///
    /// let layer = CircuitBreakerLayer::builder()
    ///     .classifier(ServerErrorsAsFailures)
    ///     .build()
    ///     .unwrap();
    /// # let _ = layer;
    /// ```
    #[must_use]
    pub fn classifier<C2>(
        self,
        classifier: C2,
    ) -> CircuitBreakerBuilder<IgnoreLocalRejections<C2>> {
        self.unfiltered_classifier(IgnoreLocalRejections::new(classifier))
    }

    /// Decides what counts as a failure with `classifier` as given: unlike
    /// [`classifier`](Self::classifier), it also sees palisade's rate-limit,
    /// bulkhead and missing-key rejections and timeouts on a client's
    /// deadline, and by default counts them as failures.
    #[must_use]
    pub fn unfiltered_classifier<C2>(self, classifier: C2) -> CircuitBreakerBuilder<C2> {
        CircuitBreakerBuilder {
            policy: self.policy,
            metrics: self.metrics,
            clock: self.clock,
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_duration: self.slow_call_duration,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            measure_latency: self.measure_latency,
            open_wait: self.open_wait,
            backoff: self.backoff,
            jitter: self.jitter,
            seed: self.seed,
            probes: self.probes,
            half_open_max_wait: self.half_open_max_wait,
            cancelled_as_failure: self.cancelled_as_failure,
            classifier,
        }
    }

    /// Checks every setting and builds the layer. One layer value is one
    /// breaker, shared by every clone and every service it wraps.
    pub fn build(self) -> Result<CircuitBreakerLayer<C>, ConfigError> {
        let config = self.config()?;
        Ok(CircuitBreakerLayer::from_parts(
            SharedState::new(Breaker::new(config)),
            self.classifier,
        ))
    }

    /// Checks every setting and builds a keyed layer: one breaker per key
    /// returned by `key` (for example per upstream host), at most
    /// `max_keys` of them (1 to 65 536).
    pub fn build_keyed<Req, K, F>(
        self,
        max_keys: usize,
        key: F,
    ) -> Result<KeyedCircuitBreakerLayer<K, F, C>, ConfigError>
    where
        K: std::hash::Hash + Eq + Clone,
        F: Fn(&Req) -> K,
    {
        let config = self.config()?;
        Validate::new(LayerKind::CircuitBreaker, &config.policy)
            .in_range("max_keys", max_keys, 1, 65_536)?;
        Ok(KeyedCircuitBreakerLayer::from_parts(
            config,
            max_keys,
            key,
            self.classifier,
        ))
    }

    fn config(&self) -> Result<Config, ConfigError> {
        let check = Validate::new(LayerKind::CircuitBreaker, &self.policy);
        check.label("name", self.policy.as_str())?;
        match self.window {
            WindowConfig::Count(calls) => {
                check.in_range("count_window", calls, 1, MAX_COUNT_WINDOW)?;
                check.in_range("minimum_calls", self.minimum_calls, 1, calls as u64)?;
            }
            WindowConfig::Time { length, buckets } => {
                check.in_range("time_window.buckets", buckets, 1, MAX_BUCKETS)?;
                let bucket = length / u32::try_from(buckets).unwrap_or(u32::MAX);
                if bucket < Duration::from_millis(1) {
                    return Err(check.error("time_window.length", length, "x / buckets >= 1ms"));
                }
                // Each bucket counts at most `BUCKET_CAPACITY` calls: a
                // larger minimum could never be reached.
                let most = buckets as u64 * BUCKET_CAPACITY;
                check.in_range("minimum_calls", self.minimum_calls, 1, most)?;
            }
        }
        check.fraction("failure_rate_threshold", self.failure_rate_threshold)?;
        if let Some(slow) = self.slow_call_duration {
            check.positive_duration("slow_call_duration", slow)?;
        }
        check.fraction("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        check.positive_duration("open_wait", self.open_wait)?;
        let backoff = match self.backoff {
            Some((multiplier, max_wait)) => {
                if !(1.0..=100.0).contains(&multiplier) {
                    return Err(check.error(
                        "open_wait_backoff.multiplier",
                        multiplier,
                        "1.0 <= x <= 100.0",
                    ));
                }
                check.at_least("open_wait_backoff.max_wait", max_wait, self.open_wait)?;
                Some(Backoff {
                    multiplier,
                    max_wait,
                })
            }
            None => None,
        };
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(check.error("jitter", self.jitter, "0.0 <= x < 1.0"));
        }
        check.in_range("half_open_probes", self.probes, 1, MAX_PROBES)?;
        check.positive_duration("half_open_max_wait", self.half_open_max_wait)?;
        Ok(Config {
            policy: self.policy.clone(),
            metrics: self.metrics.clone(),
            clock: self.clock.clone(),
            window: self.window,
            minimum_calls: self.minimum_calls,
            failure_rate_threshold: self.failure_rate_threshold,
            slow_call_duration: self.slow_call_duration,
            slow_call_rate_threshold: self.slow_call_rate_threshold,
            measure_latency: self.measure_latency,
            open_wait: self.open_wait,
            backoff,
            jitter: self.jitter,
            seed: self
                .seed
                .unwrap_or_else(|| RandomState::new().hash_one(0x5EED_u64)),
            probes: self.probes,
            half_open_max_wait: self.half_open_max_wait,
            cancelled_as_failure: self.cancelled_as_failure,
            changes: None,
        })
    }
}

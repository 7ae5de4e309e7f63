use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::Quota;
use palisade_core::config::Validate;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{Clock, ConfigError, LayerKind, Metrics, PolicyName};
use tower_layer::Layer;

use super::service::{RateLimit, Shared};
use crate::headers::{HeaderStyle, NoHeaders, Policy, RateLimitHeaders};
use crate::key::{Global, KeyExtractor};
use crate::limiter::{Limiter, LimiterConfig};
use crate::table;

/// What the layer does with a request whose bucket is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Reject it at once with [`RateLimited`](crate::error::RateLimited).
    /// The default.
    #[default]
    Reject,
    /// Hold it until its bucket admits it, if that happens within
    /// `max_delay`; reject it at once otherwise. A waiting request holds no
    /// slot, of the limiter or of the inner service: after its wait it is
    /// checked again, and it waits again (within the same `max_delay` from
    /// its arrival) if another request took the capacity first. tokio's
    /// timer wakes waiting requests once a millisecond, so the burst must
    /// hold at least a millisecond of the quota (5 at 5,000 a second);
    /// `build` refuses a smaller one, which would cap waiting requests at
    /// `burst` a millisecond. Once admitted, it waits for its service to be
    /// ready, then calls it.
    /// Admission charges the bucket: a request dropped while its service
    /// is not ready yet (a full `ConcurrencyLimit` below, a caller that
    /// gave up) has spent its capacity, as one dropped during its call
    /// has, and `max_delay` bounds the wait for the bucket only, not the
    /// wait for readiness after it (a timeout above the layer bounds
    /// both).
    /// Waiting uses tokio's timer: the service must be called inside a
    /// tokio runtime with the timer enabled (as every axum and tonic
    /// server is). The bucket reads the layer's [clock](RateLimitBuilder::clock)
    /// and the wait runs on tokio's, so with a
    /// [`ManualClock`](palisade_core::ManualClock) that the test does not
    /// advance, a waiting request is checked again after each wait, still
    /// limited, and rejected as soon as its next wait would end past
    /// `max_delay` (of tokio time) from its arrival.
    /// tokio's timer ends a wait on the millisecond tick after the instant
    /// asked for, so a request admitted at the end of its wait may have
    /// waited up to a millisecond past `max_delay`; `build` refuses a
    /// `max_delay` under a millisecond, shorter than any wait.
    Wait {
        /// The longest a request waits for its bucket, to the millisecond
        /// of tokio's timer; at least one millisecond.
        max_delay: Duration,
    },
}

/// What a keyed layer does with a request from which no key can be
/// extracted. Never an internal error.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum OnMissingKey {
    /// Charge it to one bucket shared by every request without a key
    /// ([`KeyKind::Fallback`](palisade_core::KeyKind::Fallback)). The
    /// default: such requests are still limited, and nothing breaks when a
    /// server forgets to record peer addresses.
    #[default]
    Fallback,
    /// Reject it with [`MissingKey`](crate::error::MissingKey) (HTTP 400).
    Reject,
    /// Let it through without charging any bucket.
    Allow,
}

/// The most keys a keyed layer may track: 16 Mi keys, 640 MiB of table.
const MAX_KEYS_LIMIT: usize = 1 << 24;

/// Configures a [`RateLimitLayer`]. Made by [`RateLimitLayer::builder`].
///
/// Defaults: 100 requests per second with a burst of 100, one global
/// bucket, reject at once, no headers, [`OnMissingKey::Fallback`], at most
/// 100 000 tracked keys, tokio's clock, no metrics, policy name
/// `"default"`.
#[must_use]
pub struct RateLimitBuilder<K = Global, H = NoHeaders> {
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    name: PolicyName,
    metrics: Metrics,
    clock: Clock,
    mode: Mode,
    on_missing_key: OnMissingKey,
    max_keys: usize,
    extractor: K,
    header_style: Option<HeaderStyle>,
    _headers: std::marker::PhantomData<fn() -> H>,
}

impl RateLimitBuilder {
    fn new() -> Self {
        Self {
            requests: 100,
            period: Duration::from_secs(1),
            burst: None,
            name: PolicyName::default(),
            metrics: Metrics::noop(),
            clock: Clock::tokio(),
            mode: Mode::Reject,
            on_missing_key: OnMissingKey::Fallback,
            max_keys: 100_000,
            extractor: Global,
            header_style: None,
            _headers: std::marker::PhantomData,
        }
    }
}

impl<K, H> RateLimitBuilder<K, H> {
    /// Admits `requests` per `period` on average (one request every
    /// `period / requests`). Unless [`burst`](Self::burst) says otherwise,
    /// up to `requests` may come at once.
    ///
    /// `period / requests` must be at least 1 ns, and a full bucket
    /// (`burst * period / requests`) may take at most about 292 years
    /// (`u64::MAX / 2` nanoseconds) to refill; [`build`](Self::build)
    /// names the field otherwise. The interval is kept in whole
    /// nanoseconds, rounded down: below 100 ns per request (above ten
    /// million requests a second), `period` must divide into whole
    /// nanoseconds, so that the rate is never more than 1% off.
    pub fn quota(mut self, requests: u32, period: Duration) -> Self {
        self.requests = requests;
        self.period = period;
        self
    }

    /// How many requests may come at once after a quiet period: the
    /// bucket's capacity. Defaults to the quota's `requests`.
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// The policy name carried by events, rejections and headers.
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where events go.
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// The clock the limiter reads (tokio's by default; a
    /// [`ManualClock`](palisade_core::ManualClock) in tests).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Reject at once ([`Mode::Reject`], the default) or wait.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Holds a limited request up to `max_delay` before rejecting it
    /// ([`Mode::Wait`]).
    pub fn wait_up_to(self, max_delay: Duration) -> Self {
        self.mode(Mode::Wait { max_delay })
    }

    /// What to do with a request without a key (keyed layers only).
    pub fn on_missing_key(mut self, policy: OnMissingKey) -> Self {
        self.on_missing_key = policy;
        self
    }

    /// The most keys tracked at once (1 to 16 777 216, default 100 000).
    ///
    /// The key table is allocated when the layer is built: 40 bytes per
    /// key of capacity. Past the cap, new keys share one overflow bucket.
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.max_keys = max_keys;
        self
    }

    /// Limits per key, as `extractor` reads it from each request (see
    /// [`key`](crate::key)).
    pub fn keyed_by<K2: KeyExtractor>(self, extractor: K2) -> RateLimitBuilder<K2, H> {
        RateLimitBuilder {
            requests: self.requests,
            period: self.period,
            burst: self.burst,
            name: self.name,
            metrics: self.metrics,
            clock: self.clock,
            mode: self.mode,
            on_missing_key: self.on_missing_key,
            max_keys: self.max_keys,
            extractor,
            header_style: self.header_style,
            _headers: std::marker::PhantomData,
        }
    }

    /// Adds rate-limit headers of `style` to admitted `http::Response`s
    /// (see [`headers`](crate::headers)).
    pub fn headers(self, style: HeaderStyle) -> RateLimitBuilder<K, RateLimitHeaders> {
        RateLimitBuilder {
            requests: self.requests,
            period: self.period,
            burst: self.burst,
            name: self.name,
            metrics: self.metrics,
            clock: self.clock,
            mode: self.mode,
            on_missing_key: self.on_missing_key,
            max_keys: self.max_keys,
            extractor: self.extractor,
            header_style: Some(style),
            _headers: std::marker::PhantomData,
        }
    }
}

impl<K: KeyExtractor> RateLimitBuilder<K, NoHeaders> {
    /// Validates the configuration and builds the layer with its limiter.
    pub fn build(self) -> Result<RateLimitLayer<K, NoHeaders>, ConfigError> {
        self.build_with(|_, _, _| NoHeaders)
    }
}

impl<K: KeyExtractor> RateLimitBuilder<K, RateLimitHeaders> {
    /// Validates the configuration and builds the layer with its limiter.
    pub fn build(self) -> Result<RateLimitLayer<K, RateLimitHeaders>, ConfigError> {
        let style = self.header_style.unwrap_or(HeaderStyle::Draft);
        self.build_with(|limiter, limit, policy| {
            RateLimitHeaders::new(style, limiter, limit, policy)
        })
    }
}

/// The longest a full bucket (`burst * period / requests`) may take to
/// refill, in nanoseconds: half of `u64`'s range, about 292 years; the
/// clock's readings keep the other half (see
/// [`MAX_READING`](crate::clock::MAX_READING)).
const MAX_BUCKET_NANOS: u64 = u64::MAX - crate::clock::MAX_READING - 1;

/// How often, at most, tokio's timer wakes a waiting request.
const TIMER_TICK: Duration = Duration::from_millis(1);

/// The shortest interval per request that may be rounded down to whole
/// nanoseconds: the rate then moves by less than 1%.
const MIN_INEXACT_INTERVAL: Duration = Duration::from_nanos(100);

impl<K: KeyExtractor, H> RateLimitBuilder<K, H> {
    fn build_with(
        self,
        headers: impl FnOnce(&Limiter, u32, Policy) -> H,
    ) -> Result<RateLimitLayer<K, H>, ConfigError> {
        let check = Validate::new(LayerKind::RateLimit, &self.name);
        check.label("name", self.name.as_str())?;
        let requests = check.at_least("requests", self.requests, 1)?;
        let period = check.positive_duration("period", self.period)?;
        let interval = period / requests;
        let burst = check.at_least("burst", self.burst.unwrap_or(requests), 1)?;
        // GCRA keeps times as u64 nanoseconds since the limiter started,
        // and a key's arrival time is that instant plus up to a full bucket
        // (`interval * burst`). Bounding the bucket by half the range
        // leaves the other half (about 292 years) for the clock, so no sum
        // can overflow, in palisade's bucket or in governor's.
        let most = Duration::from_nanos(MAX_BUCKET_NANOS);
        if interval.as_nanos() > u128::from(MAX_BUCKET_NANOS) {
            return Err(check.error("period", period, format!("period / requests <= {most:?}")));
        }
        if interval.as_nanos() * u128::from(burst) > u128::from(MAX_BUCKET_NANOS) {
            // Left at its default, the burst is the quota's requests and
            // the bucket is the period: that is what was set too long.
            return Err(match self.burst {
                Some(_) => check.error(
                    "burst",
                    burst,
                    format!("burst * (period / requests) <= {most:?}"),
                ),
                None => check.error(
                    "period",
                    period,
                    format!("period <= {most:?} with the burst left at the quota's requests"),
                ),
            });
        }
        let quota = NonZeroU32::new(burst)
            .and_then(|burst| Quota::with_period(interval).map(|quota| quota.allow_burst(burst)))
            .ok_or_else(|| check.error("period", period, "x >= 1ns per request of the quota"))?;
        // The limiter keeps the interval in whole nanoseconds. Cut to one,
        // a short interval would raise the rate by up to half (600 million
        // a second would become a billion): refuse a cut above 1%.
        if period.as_nanos() % u128::from(requests) != 0 && interval < MIN_INEXACT_INTERVAL {
            return Err(check.error(
                "period",
                period,
                format!(
                    "period / requests in whole nanoseconds, or at least \
                     {MIN_INEXACT_INTERVAL:?} per request"
                ),
            ));
        }
        if let Mode::Wait { max_delay } = self.mode {
            // No wait is shorter than one tick of tokio's timer.
            if max_delay < TIMER_TICK {
                return Err(check.error(
                    "max_delay",
                    max_delay,
                    format!("x >= {TIMER_TICK:?} (tokio's timer wakes once a millisecond)"),
                ));
            }
            // tokio's timer wakes waiting requests once a millisecond at
            // most, and a bucket keeps no more than its burst: a bucket
            // smaller than one millisecond of the quota would let waiting
            // requests through at `burst` a millisecond, below the rate.
            // Counted on the quota as given, not on the interval rounded
            // to whole nanoseconds, which would ask for one more.
            let per_tick =
                (TIMER_TICK.as_nanos() * u128::from(requests)).div_ceil(period.as_nanos().max(1));
            if u128::from(burst) < per_tick {
                let left = if self.burst.is_none() {
                    ", left at the quota's requests"
                } else {
                    ""
                };
                return Err(check.error(
                    "burst",
                    burst,
                    format!(
                        "burst >= {per_tick} when requests wait (the requests of one \
                         millisecond of the quota: waiting requests wake once a millisecond){left}"
                    ),
                ));
            }
        }
        let keyed = self.extractor.kind() != palisade_core::KeyKind::Global;
        if keyed {
            check.in_range("max_keys", self.max_keys, 1, MAX_KEYS_LIMIT)?;
        }
        self.extractor.validate(&check)?;

        let limiter = Limiter::new(LimiterConfig {
            quota,
            max_keys: keyed.then_some(self.max_keys),
            clock: self.clock,
            policy: self.name,
            metrics: self.metrics,
            kind: self.extractor.kind(),
        });
        // An empty bucket fills again in `burst` emission intervals: taken
        // from the quota as given, not from the interval cut to whole
        // nanoseconds, so that with the default burst it is the period.
        let window = fill_time(period, requests, burst);
        let headers = headers(
            &limiter,
            burst,
            Policy::new(requests, period, burst, window),
        );
        Ok(RateLimitLayer {
            shared: SharedState::new(Shared {
                limiter,
                extractor: self.extractor,
                headers,
                mode: self.mode,
                on_missing_key: self.on_missing_key,
            }),
        })
    }
}

impl<K: fmt::Debug, H> fmt::Debug for RateLimitBuilder<K, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitBuilder")
            .field("requests", &self.requests)
            .field("period", &self.period)
            .field("burst", &self.burst)
            .field("name", &self.name)
            .field("mode", &self.mode)
            .field("on_missing_key", &self.on_missing_key)
            .field("max_keys", &self.max_keys)
            .field("extractor", &self.extractor)
            .field("headers", &self.header_style)
            .finish_non_exhaustive()
    }
}

/// Applies a rate limit to a service.
///
/// The limiter is created when the layer is built: every service the layer
/// makes, and every clone of them, share it, so one layer applied to many
/// routes is one policy. Build one layer per route for per-route limits.
///
/// See the [crate documentation](crate) for examples. `M` is [`Counted`]
/// until [`leak`](RateLimitLayer::leak) makes it [`Leaked`].
pub struct RateLimitLayer<K: 'static = Global, H: 'static = NoHeaders, M: Sharing = Counted> {
    shared: SharedState<Shared<K, H>, M>,
}

impl<K, H, M: Sharing> Leak for RateLimitLayer<K, H, M> {
    type Leaked = RateLimitLayer<K, H, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl RateLimitLayer {
    /// A builder with production-safe defaults (see [`RateLimitBuilder`]).
    pub fn builder() -> RateLimitBuilder {
        RateLimitBuilder::new()
    }
}

impl<K, H, M: Sharing> RateLimitLayer<K, H, M> {
    /// Keeps this layer's limiter until the process exits, so that its
    /// services (and the calls that wait their turn) reach it without
    /// counting references: for a layer built once that serves until the
    /// end. An admitted call holds no reference either way. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_ratelimit::RateLimitLayer;
    /// use std::time::Duration;
    ///
    /// let layer = RateLimitLayer::builder()
    ///     .quota(100, Duration::from_secs(1))
    ///     .build()?
    ///     .leak();
    /// assert!(!layer.limiter().is_keyed());
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> RateLimitLayer<K, H, Leaked> {
        RateLimitLayer {
            shared: self.shared.leak(),
        }
    }

    /// The limiter every service of this layer shares.
    pub fn limiter(&self) -> &Limiter {
        &self.shared.limiter
    }

    /// The key extractor.
    pub fn extractor(&self) -> &K {
        &self.shared.extractor
    }

    /// Memory taken by the key table, in bytes (zero for a global limit).
    pub fn table_bytes(&self) -> usize {
        if self.shared.limiter.is_keyed() {
            table::table_bytes(self.shared.limiter.max_keys())
        } else {
            0
        }
    }
}

impl<K, H, M: Sharing> Clone for RateLimitLayer<K, H, M> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

impl<K: fmt::Debug, H: fmt::Debug, M: Sharing> fmt::Debug for RateLimitLayer<K, H, M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimitLayer")
            .field("limiter", &self.shared.limiter)
            .field("extractor", &self.shared.extractor)
            .field("headers", &self.shared.headers)
            .field("mode", &self.shared.mode)
            .field("on_missing_key", &self.shared.on_missing_key)
            .finish()
    }
}

impl<S, K, H, M: Sharing> Layer<S> for RateLimitLayer<K, H, M> {
    type Service = RateLimit<S, K, H, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimit::from_shared(inner, self.shared.clone())
    }
}

/// The time `burst` requests take at `requests` per `period`, rounded up
/// to whole nanoseconds (saturating at `Duration::MAX`'s seconds).
fn fill_time(period: Duration, requests: u32, burst: u32) -> Duration {
    let nanos = (period.as_nanos() * u128::from(burst)).div_ceil(u128::from(requests.max(1)));
    const NANOS_PER_SEC: u128 = 1_000_000_000;
    match u64::try_from(nanos / NANOS_PER_SEC) {
        // The remainder is below a billion, which fits in a u32.
        Ok(secs) => Duration::new(secs, (nanos % NANOS_PER_SEC) as u32),
        Err(_) => Duration::MAX,
    }
}

use std::time::{Duration, Instant};

use palisade_core::classify::ErrorsAsFailures;
use palisade_core::config::Validate;
use palisade_core::shared::{Counted, Leak, Leaked, SharedState, Sharing};
use palisade_core::{
    Clock, ConfigError, Event, InFlightChange, LayerKind, Metrics, OverloadKind, Overloaded,
    PolicyName,
};
use tower_layer::Layer;

use crate::adaptive::{AdaptiveLimit, AdaptiveState};
use crate::future::OutcomeRecorder;
use crate::limiter::{Limiter, Report};
use crate::service::Bulkhead;

/// The largest fixed or adaptive limit a builder accepts.
const MAX_LIMIT: usize = 1 << 20;
/// The largest wait queue a builder accepts.
const MAX_QUEUE: usize = 1 << 16;

/// What every clone of one bulkhead shares, created when the layer is
/// built.
#[derive(Debug)]
pub(crate) struct Core {
    pub(crate) limiter: Limiter,
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) max_wait: Duration,
    pub(crate) adaptive: Option<AdaptiveState>,
    pub(crate) clock: Clock,
}

impl Core {
    #[inline]
    pub(crate) fn events(&self) -> Events<'_> {
        Events(self)
    }

    #[inline]
    pub(crate) fn admitted(&self) {
        self.metrics.emit(&Event::Admitted {
            policy: self.policy.as_str(),
            layer: LayerKind::Bulkhead,
        });
    }

    /// Reports a rejection and builds its error, boxed as it will be
    /// returned: the box comes back in a register, and becomes the
    /// `BoxError` without another allocation.
    pub(crate) fn reject(&self, kind: OverloadKind) -> Box<Overloaded> {
        self.metrics.emit(&Event::Rejected {
            policy: self.policy.as_str(),
            layer: LayerKind::Bulkhead,
            reason: kind.reason(),
        });
        Box::new(Overloaded::new(
            self.policy.clone(),
            self.limiter.limit(),
            kind,
        ))
    }

    /// Reads the clock when the limit is adaptive (the latency sample's
    /// start); a fixed limit reads no clock.
    #[inline]
    pub(crate) fn sample_start(&self) -> Option<Instant> {
        self.adaptive.as_ref().map(|_| self.clock.now())
    }

    /// Feeds one finished call, of `latency`, to the adaptive limit, if
    /// any.
    pub(crate) fn sample(
        &self,
        outcome: palisade_core::Outcome,
        latency: Duration,
        in_flight_at_start: usize,
    ) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        self.metrics.emit(&Event::Completed {
            policy: self.policy.as_str(),
            layer: LayerKind::Bulkhead,
            outcome,
            latency: Some(latency),
        });
        adaptive.record(
            outcome,
            latency,
            in_flight_at_start,
            || self.limiter.limit(),
            |from, to| {
                self.limiter.set_limit(to, &self.events());
                self.metrics.emit(&Event::LimitChanged {
                    policy: self.policy.as_str(),
                    from,
                    to,
                });
            },
        );
    }
}

/// Turns in-flight changes into events.
pub(crate) struct Events<'a>(&'a Core);

impl Report for Events<'_> {
    #[inline]
    fn is_enabled(&self) -> bool {
        self.0.metrics.is_enabled()
    }

    #[inline]
    fn change(&self, change: InFlightChange, in_flight: usize, limit: usize) {
        self.0.metrics.emit(&Event::InFlightChanged {
            policy: self.0.policy.as_str(),
            layer: LayerKind::Bulkhead,
            change,
            in_flight,
            limit,
        });
    }
}

/// One taken slot. Dropping it gives the slot back (to the oldest waiter
/// if there is one), whatever the way the call ended.
///
/// With an adaptive limit it also holds the call's latency sample until
/// the outcome is handed to an [`OutcomeRecorder`]; dropped before that,
/// it records the call as cancelled (unless a timeout above cut it off,
/// or the service panicked, which count as failures). A fixed limit
/// samples nothing, and the recorder it hands out does nothing.
#[derive(Debug)]
pub(crate) struct Permit<M: Sharing> {
    core: SharedState<Core, M>,
    /// When the call started and the count then (adaptive limits only).
    sample: Option<(Instant, usize)>,
}

impl<M: Sharing> Permit<M> {
    /// Wraps a slot that was just taken and reported; `in_flight` is the
    /// count right after taking it.
    #[inline]
    pub(crate) fn new(core: SharedState<Core, M>, in_flight: usize) -> Self {
        let sample = core.sample_start().map(|start| (start, in_flight));
        Self { core, sample }
    }

    /// Whether the call's outcome feeds an adaptive limit.
    #[inline(always)]
    pub(crate) fn is_sampled(&self) -> bool {
        self.sample.is_some()
    }

    /// The recorder of this call's outcome. The permit keeps the slot.
    #[inline(always)]
    pub(crate) fn recorder(&mut self) -> OutcomeRecorder<M> {
        // Read before it is cleared: a fixed limit's permit is then left
        // untouched.
        let Some((start, in_flight)) = self.sample else {
            return OutcomeRecorder::none();
        };
        self.sample = None;
        OutcomeRecorder::sampled(self.core.clone(), start, in_flight)
    }
}

/// A slot taken for a call the service has not made yet: gives the slot
/// back, and counts the call as failed, if the service's `call` panics.
/// Borrowed rather than owned, so that the permit the call gets after is
/// built straight into its future.
pub(crate) struct Calling<'a, M: Sharing> {
    core: &'a SharedState<Core, M>,
    in_flight: usize,
    start: Option<Instant>,
}

impl<'a, M: Sharing> Calling<'a, M> {
    /// Owns a slot that was just taken; `in_flight` is the count right
    /// after taking it.
    #[inline]
    pub(crate) fn new(core: &'a SharedState<Core, M>, in_flight: usize) -> Self {
        Self {
            core,
            in_flight,
            start: core.sample_start(),
        }
    }

    /// The call was made: its slot and sample go to the permit.
    #[inline]
    pub(crate) fn into_permit(self) -> Permit<M> {
        let this = std::mem::ManuallyDrop::new(self);
        Permit {
            core: this.core.clone(),
            sample: this.start.map(|start| (start, this.in_flight)),
        }
    }
}

impl<M: Sharing> Drop for Calling<'_, M> {
    /// Reached only when the service's `call` unwinds: `into_permit`
    /// takes the slot over otherwise.
    #[cold]
    fn drop(&mut self) {
        self.core.limiter.release(&self.core.events());
        if let Some(start) = self.start.take() {
            let latency = self.core.clock.now().saturating_duration_since(start);
            self.core
                .sample(palisade_core::Outcome::Failure, latency, self.in_flight);
        }
    }
}

impl<M: Sharing> Drop for Permit<M> {
    #[inline]
    fn drop(&mut self) {
        self.core.limiter.release(&self.core.events());
        if self.sample.is_some() {
            // The call ended without an outcome: an unused recorder counts
            // it as cancelled, or failed if a timeout above cut it off.
            drop(self.recorder());
        }
    }
}

/// Applies a [`Bulkhead`] to a service.
///
/// One layer value is one limit: every service it wraps, every clone of
/// those services and every route it is applied to share the same slots.
/// Build a second layer for a second, independent limit.
///
/// `C` decides what counts as a failure for an adaptive limit (default
/// [`ErrorsAsFailures`]; see [`BulkheadLayerBuilder::classify`]). `M` is
/// [`Counted`] until [`leak`](BulkheadLayer::leak) makes it [`Leaked`].
#[derive(Clone, Debug)]
pub struct BulkheadLayer<C = ErrorsAsFailures, M: Sharing = Counted> {
    core: SharedState<Core, M>,
    classify: C,
}

impl BulkheadLayer {
    /// A builder with the defaults: 100 concurrent calls, no waiting (a
    /// request that finds every slot taken is rejected at once), the policy
    /// name `"default"`, no metrics.
    pub fn builder() -> BulkheadLayerBuilder {
        BulkheadLayerBuilder::default()
    }
}

impl<C, M: Sharing> BulkheadLayer<C, M> {
    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.core.limiter.in_flight()
    }

    /// The limit in force now (the current value of an adaptive limit).
    pub fn limit(&self) -> usize {
        self.core.limiter.limit()
    }

    /// Requests waiting for a slot now.
    pub fn waiting(&self) -> usize {
        self.core.limiter.queued()
    }

    /// The policy name.
    pub fn policy(&self) -> &PolicyName {
        &self.core.policy
    }

    /// Keeps this layer's slots and settings until the process exits, so
    /// that its services and calls reach them without counting references:
    /// for a layer built once that serves until the end. See
    /// [`palisade_core::shared`] for what that saves and when not to.
    ///
    /// ```
    /// use palisade_bulkhead::BulkheadLayer;
    ///
    /// let layer = BulkheadLayer::builder().max_concurrent(8).build()?.leak();
    /// assert_eq!(layer.limit(), 8);
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn leak(self) -> BulkheadLayer<C, Leaked> {
        BulkheadLayer {
            core: self.core.leak(),
            classify: self.classify,
        }
    }
}

impl<C, M: Sharing> Leak for BulkheadLayer<C, M> {
    type Leaked = BulkheadLayer<C, Leaked>;

    fn leak(self) -> Self::Leaked {
        Self::leak(self)
    }
}

impl<S, C: Clone, M: Sharing> Layer<S> for BulkheadLayer<C, M> {
    type Service = Bulkhead<S, C, M>;

    fn layer(&self, inner: S) -> Self::Service {
        Bulkhead::from_parts(inner, self.core.clone(), self.classify.clone())
    }
}

/// Configures a [`BulkheadLayer`].
#[derive(Debug)]
pub struct BulkheadLayerBuilder<C = ErrorsAsFailures> {
    policy: PolicyName,
    metrics: Metrics,
    max_concurrent: Option<usize>,
    max_wait: Duration,
    queue: Option<usize>,
    adaptive: Option<AdaptiveLimit>,
    classify: C,
    clock: Clock,
}

impl Default for BulkheadLayerBuilder {
    fn default() -> Self {
        Self {
            policy: PolicyName::default(),
            metrics: Metrics::noop(),
            max_concurrent: None,
            max_wait: Duration::ZERO,
            queue: None,
            adaptive: None,
            classify: ErrorsAsFailures,
            clock: Clock::tokio(),
        }
    }
}

impl<C> BulkheadLayerBuilder<C> {
    /// The policy name carried by events and by
    /// [`Overloaded`](crate::error::Overloaded) (default `"default"`).
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.policy = name.into();
        self
    }

    /// Where events go (default: nowhere).
    #[must_use]
    pub fn metrics(mut self, metrics: impl Into<Metrics>) -> Self {
        self.metrics = metrics.into();
        self
    }

    /// A fixed limit of concurrent calls, `1..=1048576` (default 100).
    /// Not to be combined with [`adaptive`](Self::adaptive).
    #[must_use]
    pub fn max_concurrent(mut self, max: usize) -> Self {
        self.max_concurrent = Some(max);
        self
    }

    /// How long a request may wait for a slot (default zero: a request
    /// that finds every slot taken is rejected at once). Waiting requests
    /// queue in FIFO order; the wait is timed with tokio's timer, so with a
    /// `max_wait` the service must be called inside a tokio runtime with
    /// the timer enabled (as every axum and tonic server is): tokio panics
    /// when the first request that has to wait arms its timer elsewhere.
    /// A slot freed once a waiter's wait has run out passes it over.
    ///
    /// Inside a palisade timeout (as in the default `Stack`), the wait
    /// also ends when the timeout's deadline would pass: the request is
    /// then rejected with [`Overloaded`](crate::error::Overloaded) (wait
    /// timed out) rather than left to time out in the queue, so queueing
    /// here reads as local overload (HTTP 503), which a circuit breaker
    /// above does not count as a failure of the service. A request that
    /// gets its slot with little of the deadline left and then runs out of
    /// it times out as the timeout's own failure, which a breaker does
    /// count: keep `max_wait` well under the timeout less the service's
    /// usual latency, so that a request either runs with time to finish
    /// or is turned away.
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.max_wait = max_wait;
        self
    }

    /// How many requests may wait at once, `1..=65536` (default: as many
    /// as the limit, or the adaptive maximum). Requires a
    /// [`max_wait`](Self::max_wait) above zero. A request that finds the
    /// queue full is rejected at once.
    #[must_use]
    pub fn queue(mut self, capacity: usize) -> Self {
        self.queue = Some(capacity);
        self
    }

    /// Makes the limit adaptive (see [`adaptive`](crate::adaptive)).
    #[must_use]
    pub fn adaptive(mut self, adaptive: AdaptiveLimit) -> Self {
        self.adaptive = Some(adaptive);
        self
    }

    /// What counts as a failure for an adaptive limit (default
    /// [`ErrorsAsFailures`]). A fixed limit ignores outcomes.
    ///
    /// Below another palisade bulkhead or rate limiter, wrap it in
    /// [`IgnoreLocalRejections`](palisade_core::classify::IgnoreLocalRejections)
    /// so their rejections do not lower this limit. For gRPC, use
    /// [`GrpcErrorsAsFailures`](palisade_core::classify::GrpcErrorsAsFailures):
    /// the outcome (and the latency sample) is then taken when the
    /// response's trailers arrive, while the slot is released as soon as
    /// the response headers are returned.
    #[must_use]
    pub fn classify<C2>(self, classify: C2) -> BulkheadLayerBuilder<C2> {
        BulkheadLayerBuilder {
            policy: self.policy,
            metrics: self.metrics,
            max_concurrent: self.max_concurrent,
            max_wait: self.max_wait,
            queue: self.queue,
            adaptive: self.adaptive,
            classify,
            clock: self.clock,
        }
    }

    /// The clock for latency samples (default tokio's clock). Waits are
    /// always timed with tokio's timer.
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Checks the configuration and builds the layer, with its shared
    /// state.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field and the allowed range.
    pub fn build(self) -> Result<BulkheadLayer<C>, ConfigError> {
        let check = Validate::new(LayerKind::Bulkhead, &self.policy);
        check.label("name", self.policy.as_str())?;
        if let Some(max) = self.max_concurrent {
            check.in_range("max_concurrent", max, 1, MAX_LIMIT)?;
            if self.adaptive.is_some() {
                return Err(check.error(
                    "max_concurrent",
                    max,
                    "unset when the limit is adaptive (set the adaptive bounds instead)",
                ));
            }
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate(&check, MAX_LIMIT)?;
        }
        if let Some(queue) = self.queue {
            check.in_range("queue", queue, 1, MAX_QUEUE)?;
            if self.max_wait.is_zero() {
                return Err(check.error(
                    "max_wait",
                    self.max_wait,
                    "x > 0s when a queue is configured",
                ));
            }
        }
        let (limit, ceiling) = match &self.adaptive {
            Some(adaptive) => (adaptive.initial(), adaptive.max()),
            None => {
                let limit = self.max_concurrent.unwrap_or(100);
                (limit, limit)
            }
        };
        let queue_capacity = if self.max_wait.is_zero() {
            0
        } else {
            self.queue.unwrap_or(ceiling.min(MAX_QUEUE))
        };
        let core = Core {
            limiter: Limiter::new(limit, queue_capacity),
            policy: self.policy,
            metrics: self.metrics,
            max_wait: self.max_wait,
            adaptive: self.adaptive.map(AdaptiveLimit::into_state),
            clock: self.clock,
        };
        Ok(BulkheadLayer {
            core: SharedState::new(core),
            classify: self.classify,
        })
    }
}

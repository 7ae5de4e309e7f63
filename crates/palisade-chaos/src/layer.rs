use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::config::Validate;
use palisade_core::{ConfigError, LayerKind, Metrics, PolicyName};
use tower_layer::Layer;

use crate::fault::{Draws, Fault, HttpFaults, NoOverride};
use crate::service::Chaos;

/// Where an injected panic is raised.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PanicPoint {
    /// When the response future is polled, after the delay if there is one
    /// (the default): the panic happens inside the future, as most handler
    /// panics do. A request dropped before then never panics.
    #[default]
    Poll,
    /// Synchronously in `Service::call`. `call` cannot sleep, so a request
    /// drawn to panic panics at once: its delay is neither applied nor
    /// counted.
    Call,
}

/// What a chaos layer has injected so far, across all its clones.
///
/// A fault is counted when it takes effect, not when it is drawn: a request
/// whose response future is dropped first (cancelled by its caller, or
/// timed out by a layer above while it waits out its delay) counts in
/// [`requests`](Self::requests) and in nothing its fault did not get to
/// do. So [`panics`](Self::panics) is exactly the number of panics raised,
/// which a panic-catch layer wrapping the chaos layer catches one for one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    /// Requests that reached the layer while it was enabled, or with a
    /// forced fault; counted in `call`, whatever became of their fault.
    pub requests: u64,
    /// Injected errors, counted when the response future answers one.
    pub errors: u64,
    /// Injected panics, counted when raised: in `call` with
    /// [`PanicPoint::Call`], else when the response future is polled after
    /// its delay.
    pub panics: u64,
    /// Requests whose delay started: counted at the first poll of the
    /// response future, when the wait begins (a panic raised in `call` is
    /// never delayed).
    pub delayed: u64,
    /// The time actually waited on tokio's clock, added when a wait ends:
    /// the whole wait when it runs out (at or after the delay drawn: tokio's
    /// timer ends waits on whole milliseconds, and the task is polled again
    /// after that), the part served when the response future is dropped
    /// during it.
    pub total_delay: Duration,
}

/// Applies [`Chaos`] to a service. One layer value is one generator and one
/// set of counters, shared by every service it wraps.
#[derive(Clone)]
pub struct ChaosLayer {
    pub(crate) shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) name: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) enabled: AtomicBool,
    pub(crate) panic_point: PanicPoint,
    seed: u64,
    error_rate: f64,
    panic_rate: f64,
    latency: Option<(Duration, Duration)>,
    spikes: Option<(f64, Duration)>,
    sequence: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    panics: AtomicU64,
    delayed: AtomicU64,
    delay_nanos: AtomicU64,
}

impl Shared {
    /// The fault for the next request, from the seeded generator.
    pub(crate) fn draw(&self) -> Fault {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let mut draws = Draws::new(self.seed, n);
        let which = draws.unit();
        let panic = which < self.panic_rate;
        let error = !panic && which < self.panic_rate + self.error_rate;
        let mut delay = Duration::ZERO;
        if let Some((min, max)) = self.latency {
            delay += min + (max - min).mul_f64(draws.unit());
        }
        if let Some((probability, spike)) = self.spikes
            && draws.unit() < probability
        {
            delay = delay.saturating_add(spike);
        }
        Fault {
            error,
            panic,
            delay,
        }
    }

    /// Counts a request that gets a fault, drawn or forced.
    pub(crate) fn count_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a panic about to be raised.
    pub(crate) fn count_panic(&self) {
        self.panics.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an error about to be answered.
    pub(crate) fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a delay whose wait begins.
    pub(crate) fn count_delay_started(&self) {
        self.delayed.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds the time a delay was waited, once its wait ends.
    pub(crate) fn count_waited(&self, waited: Duration) {
        let nanos = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        // Saturates, as the delays themselves do.
        let _ = self
            .delay_nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                Some(total.saturating_add(nanos))
            });
    }
}

impl ChaosLayer {
    /// A builder with every fault rate at zero, enabled, seed 0.
    pub fn builder() -> ChaosBuilder {
        ChaosBuilder::default()
    }

    /// A layer that injects nothing until [`set_enabled`](Self::set_enabled)
    /// and forced faults aside.
    pub fn disabled() -> Self {
        ChaosBuilder::default()
            .enabled(false)
            .build()
            .expect("the default configuration is valid")
    }

    /// Switches fault injection on or off for every service of this layer.
    /// Faults forced on a request apply either way. A fault is drawn when
    /// a request is called: requests already called keep theirs (a delay
    /// in progress, and the error or panic after it), so switching off
    /// takes full effect once they have finished.
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Whether the seeded generator is in use.
    pub fn is_enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }

    /// What has been injected so far.
    pub fn stats(&self) -> ChaosStats {
        let s = &self.shared;
        ChaosStats {
            requests: s.requests.load(Ordering::Relaxed),
            errors: s.errors.load(Ordering::Relaxed),
            panics: s.panics.load(Ordering::Relaxed),
            delayed: s.delayed.load(Ordering::Relaxed),
            total_delay: Duration::from_nanos(s.delay_nanos.load(Ordering::Relaxed)),
        }
    }

    /// The policy name.
    pub fn name(&self) -> &PolicyName {
        &self.shared.name
    }

    /// A layer of this chaos policy whose services also force the faults
    /// HTTP requests ask for: a [`FaultOverride`](crate::FaultOverride)
    /// extension and, if `faults` enables it, the `x-palisade-chaos`
    /// header. It shares this layer's switch and counts.
    ///
    /// ```
    /// use palisade_chaos::{ChaosLayer, Fault, FaultOverride, HttpFaults, InjectedFault};
    /// use tower::{ServiceBuilder, ServiceExt, service_fn};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let chaos = ChaosLayer::disabled();
    /// let svc = ServiceBuilder::new()
    ///     .layer(chaos.http(HttpFaults::new()))
    ///     .service(service_fn(|_req: http::Request<()>| async {
    ///         Ok::<_, std::convert::Infallible>(http::Response::new(()))
    ///     }));
    ///
    /// let mut req = http::Request::new(());
    /// req.extensions_mut().insert(FaultOverride(Fault::error()));
    /// let err = svc.oneshot(req).await.unwrap_err();
    /// assert!(err.is::<InjectedFault>());
    /// assert_eq!(chaos.stats().errors, 1);
    /// # }
    /// ```
    pub fn http(&self, faults: HttpFaults) -> ChaosOverrideLayer<HttpFaults> {
        self.with_overrides(faults)
    }

    /// A layer of this chaos policy whose services force the faults
    /// `overrides` finds on a request (see [`FaultSource`](crate::FaultSource)). It shares
    /// this layer's switch and counts.
    pub fn with_overrides<O>(&self, overrides: O) -> ChaosOverrideLayer<O> {
        ChaosOverrideLayer {
            chaos: self.clone(),
            overrides,
        }
    }
}

/// A [`ChaosLayer`] whose services read faults forced on each request from
/// a [`FaultSource`](crate::FaultSource); made by [`ChaosLayer::http`] and
/// [`ChaosLayer::with_overrides`].
#[derive(Clone, Debug)]
pub struct ChaosOverrideLayer<O> {
    chaos: ChaosLayer,
    overrides: O,
}

impl<O> ChaosOverrideLayer<O> {
    /// The chaos policy: its switch and its counts.
    pub fn chaos(&self) -> &ChaosLayer {
        &self.chaos
    }
}

impl<S, O: Clone> Layer<S> for ChaosOverrideLayer<O> {
    type Service = Chaos<S, O>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(inner, self.chaos.clone(), self.overrides.clone())
    }
}

impl fmt::Debug for ChaosLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.shared;
        f.debug_struct("ChaosLayer")
            .field("name", &s.name)
            .field("enabled", &s.enabled.load(Ordering::Relaxed))
            .field("seed", &s.seed)
            .field("error_rate", &s.error_rate)
            .field("panic_rate", &s.panic_rate)
            .field("latency", &s.latency)
            .field("spikes", &s.spikes)
            .field("panic_point", &s.panic_point)
            .finish()
    }
}

impl<S> Layer<S> for ChaosLayer {
    type Service = Chaos<S, NoOverride>;

    fn layer(&self, inner: S) -> Self::Service {
        Chaos::new(inner, self.clone(), NoOverride)
    }
}

/// Configures a [`ChaosLayer`].
#[derive(Clone, Debug)]
pub struct ChaosBuilder {
    name: PolicyName,
    metrics: Metrics,
    enabled: bool,
    seed: u64,
    error_rate: f64,
    panic_rate: f64,
    latency: Option<(Duration, Duration)>,
    spikes: Option<(f64, Duration)>,
    panic_point: PanicPoint,
}

impl Default for ChaosBuilder {
    fn default() -> Self {
        Self {
            name: PolicyName::new("chaos"),
            metrics: Metrics::noop(),
            enabled: true,
            seed: 0,
            error_rate: 0.0,
            panic_rate: 0.0,
            latency: None,
            spikes: None,
            panic_point: PanicPoint::default(),
        }
    }
}

impl ChaosBuilder {
    /// The policy name, in errors, panic messages and events. Default
    /// `"chaos"`.
    #[must_use]
    pub fn name(mut self, name: impl Into<PolicyName>) -> Self {
        self.name = name.into();
        self
    }

    /// Where malformed-header events go.
    #[must_use]
    pub fn metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// Whether the generator is in use from the start. Default `true`.
    #[must_use]
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.enabled = enabled;
        self
    }

    /// The generator's seed. Same seed, same request order: same faults.
    #[must_use]
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The share of requests answered with an injected error, `0.0..=1.0`.
    #[must_use]
    pub fn error_rate(mut self, rate: f64) -> Self {
        self.error_rate = rate;
        self
    }

    /// The share of requests that panic, `0.0..=1.0`. Panic and error rates
    /// add up to at most 1: a request gets at most one of the two.
    #[must_use]
    pub fn panic_rate(mut self, rate: f64) -> Self {
        self.panic_rate = rate;
        self
    }

    /// Delays every request by a duration drawn uniformly from
    /// `min..=max`.
    #[must_use]
    pub fn latency(mut self, min: Duration, max: Duration) -> Self {
        self.latency = Some((min, max));
        self
    }

    /// Adds a `spike` to the delay of a `probability` share of requests.
    #[must_use]
    pub fn latency_spikes(mut self, probability: f64, spike: Duration) -> Self {
        self.spikes = Some((probability, spike));
        self
    }

    /// Where injected panics are raised. Default [`PanicPoint::Poll`].
    #[must_use]
    pub fn panic_point(mut self, point: PanicPoint) -> Self {
        self.panic_point = point;
        self
    }

    /// Checks the configuration and builds the layer.
    pub fn build(self) -> Result<ChaosLayer, ConfigError> {
        let check = Validate::new(LayerKind::Chaos, &self.name);
        check.label("name", self.name.as_str())?;
        check.in_range("error_rate", self.error_rate, 0.0, 1.0)?;
        check.in_range("panic_rate", self.panic_rate, 0.0, 1.0)?;
        if self.error_rate + self.panic_rate > 1.0 {
            return Err(check.error(
                "error_rate",
                self.error_rate,
                format!(
                    "error_rate + panic_rate <= 1.0 (panic_rate = {:?})",
                    self.panic_rate
                ),
            ));
        }
        if let Some((min, max)) = self.latency
            && min > max
        {
            return Err(check.error("latency", (min, max), "min <= max"));
        }
        if let Some((probability, _)) = self.spikes {
            check.in_range("latency_spikes", probability, 0.0, 1.0)?;
        }
        Ok(ChaosLayer {
            shared: Arc::new(Shared {
                name: self.name,
                metrics: self.metrics,
                enabled: AtomicBool::new(self.enabled),
                panic_point: self.panic_point,
                seed: self.seed,
                error_rate: self.error_rate,
                panic_rate: self.panic_rate,
                latency: self.latency,
                spikes: self.spikes,
                sequence: AtomicU64::new(0),
                requests: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                panics: AtomicU64::new(0),
                delayed: AtomicU64::new(0),
                delay_nanos: AtomicU64::new(0),
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_total_delay_saturates() {
        let layer = ChaosLayer::builder().build().unwrap();
        layer.shared.count_waited(Duration::from_nanos(1 << 63));
        layer.shared.count_waited(Duration::from_nanos(1 << 63));
        let stats = layer.stats();
        assert_eq!(stats.total_delay, Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn invalid_configuration_names_the_field() {
        let err = ChaosLayer::builder().error_rate(1.5).build().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"chaos "chaos": error_rate = 1.5, expected 0.0 <= x <= 1.0"#
        );
        let err = ChaosLayer::builder()
            .name("x")
            .panic_rate(f64::NAN)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "panic_rate");
        let err = ChaosLayer::builder()
            .error_rate(0.6)
            .panic_rate(0.6)
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "error_rate");
        let err = ChaosLayer::builder()
            .latency(Duration::from_secs(2), Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "latency");
        let err = ChaosLayer::builder()
            .latency_spikes(-0.1, Duration::from_secs(1))
            .build()
            .unwrap_err();
        assert_eq!(err.field(), "latency_spikes");
        let err = ChaosLayer::builder().name("").build().unwrap_err();
        assert_eq!(err.field(), "name");
    }

    #[test]
    fn rates_are_met_over_many_draws() {
        let layer = ChaosLayer::builder()
            .seed(9)
            .error_rate(0.1)
            .panic_rate(0.1)
            .latency_spikes(0.05, Duration::from_secs(1))
            .build()
            .unwrap();
        let (mut errors, mut panics, mut spikes) = (0, 0, 0);
        for _ in 0..100_000 {
            let f = layer.shared.draw();
            assert!(!(f.error && f.panic));
            errors += u32::from(f.error);
            panics += u32::from(f.panic);
            spikes += u32::from(!f.delay.is_zero());
        }
        assert!((9_500..10_500).contains(&errors), "{errors}");
        assert!((9_500..10_500).contains(&panics), "{panics}");
        assert!((4_500..5_500).contains(&spikes), "{spikes}");
    }

    #[test]
    fn uniform_latency_stays_in_range() {
        let layer = ChaosLayer::builder()
            .latency(Duration::from_millis(10), Duration::from_millis(20))
            .build()
            .unwrap();
        for _ in 0..10_000 {
            let d = layer.shared.draw().delay;
            assert!(d >= Duration::from_millis(10) && d <= Duration::from_millis(20));
        }
    }
}

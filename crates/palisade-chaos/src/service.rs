use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{BoxError, Event, LayerKind};
use tower_service::Service;

use crate::fault::{Fault, FaultSource, HttpFaults};
use crate::future::ResponseFuture;
use crate::layer::{ChaosLayer, PanicPoint};

/// Injects faults in front of a service. Made by [`ChaosLayer`].
///
/// `O` says where faults forced on one request come from:
/// [`NoOverride`](crate::NoOverride) by default, [`HttpFaults`] for HTTP
/// requests (see [`Chaos::http`]).
#[derive(Clone, Debug)]
pub struct Chaos<S, O> {
    inner: S,
    layer: ChaosLayer,
    overrides: O,
}

impl<S, O> Chaos<S, O> {
    /// Wraps `inner` with the generator and counters of `layer`.
    pub fn new(inner: S, layer: ChaosLayer, overrides: O) -> Self {
        Self {
            inner,
            layer,
            overrides,
        }
    }

    /// Reads forced faults from `overrides`.
    pub fn with_overrides<O2>(self, overrides: O2) -> Chaos<S, O2> {
        Chaos {
            inner: self.inner,
            layer: self.layer,
            overrides,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Chaos<S, crate::NoOverride> {
    /// Reads forced faults from the [`FaultOverride`](crate::FaultOverride)
    /// extension of HTTP requests (and from the header if `faults` enables
    /// it).
    pub fn http(self, faults: HttpFaults) -> Chaos<S, HttpFaults> {
        self.with_overrides(faults)
    }
}

impl<S, O, Req> Service<Req> for Chaos<S, O>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    O: FaultSource<Req>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Req) -> Self::Future {
        let forced = self.overrides.fault_for(&req);
        if matches!(forced, Ok(None)) && !self.layer.shared.enabled.load(Ordering::Relaxed) {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        self.call_with_chaos(req, forced)
    }
}

impl<S, O> Chaos<S, O> {
    /// The path of an enabled layer or a forced fault, kept out of line so
    /// that the disabled path stays small enough to inline.
    #[inline(never)]
    fn call_with_chaos<Req>(
        &mut self,
        req: Req,
        forced: Result<Option<Fault>, &'static str>,
    ) -> ResponseFuture<S::Future>
    where
        S: Service<Req>,
    {
        let shared = &self.layer.shared;
        let forced = match forced {
            Ok(forced) => forced,
            Err(header) => {
                shared.metrics.emit(&Event::MalformedHeader {
                    policy: shared.name.as_str(),
                    layer: LayerKind::Chaos,
                    header,
                });
                tracing::debug!(
                    policy = shared.name.as_str(),
                    header,
                    "malformed chaos header ignored"
                );
                None
            }
        };
        let mut fault = match forced {
            Some(fault) => fault,
            None if shared.enabled.load(Ordering::Relaxed) => shared.draw(),
            None => return ResponseFuture::passthrough(self.inner.call(req)),
        };
        let panic_in_call = fault.panic && shared.panic_point == PanicPoint::Call;
        if panic_in_call {
            // `call` cannot sleep, so the panic comes at once without its
            // delay.
            fault.delay = Duration::ZERO;
        }
        // The fault itself is counted where it takes effect, so that a
        // request dropped before then counts as a request only.
        shared.count_request();
        if fault == Fault::NONE {
            return ResponseFuture::passthrough(self.inner.call(req));
        }
        tracing::debug!(
            policy = shared.name.as_str(),
            error = fault.error,
            panic = fault.panic,
            delay_ms = u64::try_from(fault.delay.as_millis()).unwrap_or(u64::MAX),
            "chaos fault chosen"
        );
        if panic_in_call {
            shared.count_panic();
            panic!("chaos {:?}: injected panic", shared.name.as_str());
        }
        let inner = if fault.panic || fault.error {
            None
        } else {
            Some(self.inner.call(req))
        };
        ResponseFuture::faulty(inner, fault, self.layer.shared.clone())
    }
}

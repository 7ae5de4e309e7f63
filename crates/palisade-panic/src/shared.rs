//! State shared by every service a catch-panic layer wraps, and the one
//! place where a caught panic is turned into a rejection and reported.

use std::any::Any;
use std::fmt;
use std::pin::Pin;

use http::Method;

use crate::http::path::PathPrefix;
use palisade_core::config::Validate;
use palisade_core::panic::{self as capture, CaptureOptions};
use palisade_core::{ConfigError, Event, LayerKind, Metrics, Panicked, PolicyName};

/// Configuration common to both flavours of the layer.
#[derive(Clone)]
pub(crate) struct Common {
    pub(crate) name: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) capture: CaptureOptions,
    pub(crate) require_unwind: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            name: PolicyName::default(),
            metrics: Metrics::noop(),
            capture: CaptureOptions::default(),
            require_unwind: false,
        }
    }
}

impl fmt::Debug for Common {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Common")
            .field("name", &self.name)
            .field("metrics", &self.metrics)
            .field("backtrace", &self.capture.backtrace)
            .field("print", &self.capture.print)
            .field("require_unwind", &self.require_unwind)
            .finish()
    }
}

impl Common {
    /// Validates the configuration and prepares the process for catching:
    /// installs the palisade panic hook and warns when panics abort.
    pub(crate) fn build(self) -> Result<Shared, ConfigError> {
        let check = Validate::new(LayerKind::PanicCatch, &self.name);
        check.label("name", self.name.as_str())?;
        check_unwind(
            &check,
            palisade_core::panic::CAN_CATCH_PANICS,
            self.require_unwind,
        )?;
        Ok(self.into_shared())
    }

    /// Builds without validation, for the defaults (which are valid).
    pub(crate) fn into_shared(self) -> Shared {
        capture::install_hook();
        if !palisade_core::panic::CAN_CATCH_PANICS {
            tracing::warn!(
                policy = self.name.as_str(),
                "this build uses panic = \"abort\": the catch-panic layer cannot catch panics, \
                 a panic in the service will end the process"
            );
        }
        Shared {
            policy: self.name,
            metrics: self.metrics,
            capture: self.capture,
        }
    }
}

/// Refuses a build that cannot catch panics when the user asked for a
/// guarantee.
pub(crate) fn check_unwind(
    check: &Validate<'_>,
    can_catch: bool,
    require_unwind: bool,
) -> Result<(), ConfigError> {
    if require_unwind && !can_catch {
        Err(check.error(
            "require_unwind",
            "panic = \"abort\"",
            "a build with panic = \"unwind\" (the default profile setting)",
        ))
    } else {
        Ok(())
    }
}

/// What every clone of a layer shares.
pub(crate) struct Shared {
    pub(crate) policy: PolicyName,
    pub(crate) metrics: Metrics,
    pub(crate) capture: CaptureOptions,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CatchPanic")
            .field("policy", &self.policy)
            .field("metrics", &self.metrics)
            .field("backtrace", &self.capture.backtrace)
            .field("print", &self.capture.print)
            .finish()
    }
}

/// The method and the start of the path of an HTTP request, kept for the
/// log line of a panic.
pub(crate) struct RequestLabel<'a> {
    pub(crate) method: &'a Method,
    pub(crate) path: &'a PathPrefix,
}

impl Shared {
    /// Runs `f` inside a capture scope with this layer's options.
    #[inline]
    pub(crate) fn catch<T>(&self, f: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
        capture::catch(self.capture, f)
    }

    /// Turns a caught payload into the rejection, with the location and
    /// backtrace the hook recorded on this thread, and reports it.
    ///
    /// Must run on the thread that caught the panic, before anything else
    /// can panic on it.
    pub(crate) fn caught(
        &self,
        payload: Box<dyn Any + Send>,
        request: Option<RequestLabel<'_>>,
    ) -> Panicked {
        let panicked = capture::panicked(self.policy.clone(), &*payload);
        // A payload whose destructor panics must not escape the layer.
        capture::contain_drop(&self.policy, self.capture, move || drop(payload));
        self.report(&panicked, request);
        panicked
    }

    /// Reports a caught panic. Contained: a metrics sink or log backend
    /// that panics must not let a panic out of the layer that caught one.
    fn report(&self, panicked: &Panicked, request: Option<RequestLabel<'_>>) {
        capture::contained(|| {
            self.metrics.emit(&Event::PanicCaught {
                policy: self.policy.as_str(),
                message: panicked.message(),
                location: panicked.location(),
            });
        });
        capture::contained(|| self.log(panicked, request));
    }

    fn log(&self, panicked: &Panicked, request: Option<RequestLabel<'_>>) {
        let location = panicked.location().map(tracing::field::display);
        let backtrace = panicked.backtrace().map(tracing::field::display);
        match request {
            Some(request) => tracing::error!(
                policy = self.policy.as_str(),
                panic.message = panicked.message(),
                panic.location = location,
                http.method = %request.method,
                http.path = %request.path,
                panic.backtrace = backtrace,
                "panic caught in service"
            ),
            None => tracing::error!(
                policy = self.policy.as_str(),
                panic.message = panicked.message(),
                panic.location = location,
                panic.backtrace = backtrace,
                "panic caught in service"
            ),
        }
    }

    /// Drops a future that panicked or was cancelled, inside a capture
    /// scope so that a destructor that panics is contained (and logged).
    pub(crate) fn drop_contained<T>(&self, slot: Pin<&mut T>, empty: T) {
        capture::contain_drop(&self.policy, self.capture, move || {
            let mut slot = slot;
            slot.set(empty);
        });
    }
}

/// Drops a future that has just completed. The call's result stands: a
/// destructor that panics is contained and logged. A plain `catch_unwind`,
/// not a capture scope, keeps this off the cost of every call; the panic
/// hook then prints the panic as it would without palisade.
#[inline]
pub(crate) fn finish<T>(slot: Pin<&mut T>, empty: T) {
    let dropped = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        let mut slot = slot;
        slot.set(empty);
    }));
    if let Err(payload) = dropped {
        finish_panicked(payload);
    }
}

#[cold]
#[inline(never)]
fn finish_panicked(payload: Box<dyn Any + Send>) {
    // Inside an outer capture scope the hook recorded this panic for it:
    // claimed here, so that scope does not report it a second time.
    let _ = capture::take_captured();
    capture::contained(|| {
        tracing::warn!(
            panic.message = &*capture::payload_message(&*payload),
            "a finished call's future panicked as the panic-catch layer dropped it; \
             the panic was contained and the call's result stands"
        );
    });
    capture::contained(move || drop(payload));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn require_unwind_refuses_an_abort_build() {
        let name = PolicyName::new("api");
        let check = Validate::new(LayerKind::PanicCatch, &name);
        assert!(check_unwind(&check, true, true).is_ok());
        assert!(check_unwind(&check, false, false).is_ok());
        let err = check_unwind(&check, false, true).unwrap_err();
        assert_eq!(err.field(), "require_unwind");
        assert_eq!(err.layer(), LayerKind::PanicCatch);
        assert!(err.to_string().contains("panic = \\\"abort\\\""), "{err}");
    }
}

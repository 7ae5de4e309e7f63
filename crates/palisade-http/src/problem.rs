//! What an error means for the caller: the status, the reason and when to
//! retry, decided once for HTTP and gRPC.

use std::error::Error;
use std::fmt;
use std::time::Duration;

use http::StatusCode;
use palisade_core::error::retry_after_seconds;
use palisade_core::{LayerKind, RejectReason, Rejection, find_rejection};

/// The status answered for a timeout ([`Elapsed`](palisade_core::Elapsed)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutStatus {
    /// `504 Gateway Timeout` (the default): the service behind this one
    /// did not answer in time. The usual choice for a server whose handler
    /// ran out of time, and for a proxy.
    #[default]
    GatewayTimeout,
    /// `408 Request Timeout`: the request as a whole took too long. Some
    /// clients retry a 408 on a new connection.
    RequestTimeout,
}

impl TimeoutStatus {
    /// The HTTP status.
    pub const fn status(self) -> StatusCode {
        match self {
            TimeoutStatus::GatewayTimeout => StatusCode::GATEWAY_TIMEOUT,
            TimeoutStatus::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }
}

/// The mapping of one error: its HTTP status, the palisade rejection found
/// in it (if any) and how long the caller should wait before retrying.
///
/// A `Problem` never holds the error's text. Everything it exposes is safe
/// to send to a client: the policy name (chosen by the operator), the layer
/// and reason labels, and the retry delay.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use palisade_core::{KeyKind, PolicyName, RateLimited, RejectReason};
/// use palisade_http::{Problem, TimeoutStatus};
///
/// let err = RateLimited::new(PolicyName::new("api"), Duration::from_millis(1200), KeyKind::Global);
/// let problem = Problem::new(&err, TimeoutStatus::default());
/// assert_eq!(problem.status(), StatusCode::TOO_MANY_REQUESTS);
/// assert_eq!(problem.policy(), Some("api"));
/// assert_eq!(problem.reason(), Some(RejectReason::RateLimited));
/// assert_eq!(problem.retry_after_seconds(), Some(2));
/// assert_eq!(problem.detail().to_string(), r#"Too many requests for policy "api". Retry after 2 seconds."#);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Problem<'a> {
    status: StatusCode,
    rejection: Option<Rejection<'a>>,
}

impl<'a> Problem<'a> {
    /// Maps `err`: the first palisade rejection in its `source()` chain
    /// decides; anything else is a `500 Internal Server Error`. The
    /// chain's `source()`s are the service's code: one that panics ends
    /// the search, contained.
    pub fn new(err: &'a (dyn Error + 'static), timeout: TimeoutStatus) -> Self {
        let rejection = palisade_core::panic::contained_value(|| find_rejection(err)).flatten();
        Self::of_rejection(rejection, timeout)
    }

    /// The problem of an error whose chain was read already: `rejection`
    /// is the first palisade rejection in it.
    pub(crate) fn of_rejection(rejection: Option<Rejection<'a>>, timeout: TimeoutStatus) -> Self {
        let status = match rejection {
            Some(rejection) => status_for(rejection, timeout),
            None => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self { status, rejection }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The palisade rejection the mapping is based on, if any.
    pub fn rejection(&self) -> Option<Rejection<'a>> {
        self.rejection
    }

    /// The policy that refused, for a rejection.
    pub fn policy(&self) -> Option<&'a str> {
        self.rejection.map(|r| r.policy().as_str())
    }

    /// The layer that refused, for a rejection.
    pub fn layer(&self) -> Option<LayerKind> {
        self.rejection.map(|r| r.layer())
    }

    /// Why, for a rejection.
    pub fn reason(&self) -> Option<RejectReason> {
        self.rejection.map(|r| r.reason())
    }

    /// How long to wait before retrying, when the layer knows (rate limit,
    /// open circuit).
    pub fn retry_after(&self) -> Option<Duration> {
        self.rejection.and_then(|r| r.retry_after())
    }

    /// [`retry_after`](Self::retry_after) in whole seconds, rounded up and
    /// at least 1: the value of the `Retry-After` header.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        self.retry_after().map(retry_after_seconds)
    }

    /// The status's reason phrase (`"Too Many Requests"`), the problem's
    /// title.
    pub fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// One sentence for the client, naming the policy and the reason and,
    /// when known, when to retry. It never contains the error's own text.
    pub fn detail(&self) -> Detail<'a> {
        Detail {
            rejection: self.rejection,
        }
    }
}

/// The HTTP status of a rejection.
fn status_for(rejection: Rejection<'_>, timeout: TimeoutStatus) -> StatusCode {
    match rejection {
        Rejection::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        Rejection::MissingKey(_) => StatusCode::BAD_REQUEST,
        Rejection::CircuitOpen(_) | Rejection::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
        Rejection::Elapsed(_) => timeout.status(),
        Rejection::Panicked(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The client-facing sentence of a [`Problem`]; see
/// [`Problem::detail`].
#[derive(Clone, Copy, Debug)]
pub struct Detail<'a> {
    rejection: Option<Rejection<'a>>,
}

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(rejection) = self.rejection else {
            return f.write_str("The service failed to handle the request.");
        };
        let policy = rejection.policy().as_str();
        match rejection.reason() {
            RejectReason::RateLimited => write!(f, "Too many requests for policy \"{policy}\".")?,
            RejectReason::MissingKey => write!(
                f,
                "The request lacks the rate-limit key that policy \"{policy}\" requires."
            )?,
            RejectReason::CircuitOpen => write!(
                f,
                "The circuit of policy \"{policy}\" is open: the service is failing."
            )?,
            RejectReason::HalfOpenFull => write!(
                f,
                "The circuit of policy \"{policy}\" is half-open and its probes are busy."
            )?,
            RejectReason::ConcurrencyFull => {
                write!(f, "Policy \"{policy}\" is at its concurrency limit.")?
            }
            RejectReason::QueueFull => write!(
                f,
                "Policy \"{policy}\" is at its concurrency limit and its wait queue is full."
            )?,
            RejectReason::WaitTimedOut => write!(
                f,
                "Policy \"{policy}\" is at its concurrency limit and no slot freed up in time."
            )?,
            // The caller's own deadline (a `grpc-timeout` shorter than the
            // policy's) ran out: the caller is told it was its own, not
            // that the policy's was exceeded.
            RejectReason::TimedOut if matches!(rejection, Rejection::Elapsed(e) if e.is_caller_deadline()) => {
                write!(
                    f,
                    "The request ran out of the deadline its caller set (policy \"{policy}\")."
                )?
            }
            RejectReason::TimedOut => write!(
                f,
                "The request took longer than policy \"{policy}\" allows."
            )?,
            RejectReason::Panicked => f.write_str("The service failed to handle the request.")?,
            other => write!(f, "Policy \"{policy}\" refused the request: {other}.")?,
        }
        if let Some(delay) = rejection.retry_after() {
            match retry_after_seconds(delay) {
                1 => f.write_str(" Retry after 1 second.")?,
                secs => write!(f, " Retry after {secs} seconds.")?,
            }
        }
        Ok(())
    }
}

//! The HTTP mapping: error -> response.

use std::error::Error;
use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, RETRY_AFTER};
use http::{HeaderValue, Response, StatusCode};
use palisade_core::PolicyName;
use palisade_core::panic::CaptureOptions;

use crate::body::{ErrorBody, MakeErrorBody, ProblemJson};
use crate::problem::{Problem, TimeoutStatus};

/// How errors become HTTP responses: the status for a timeout and the body
/// hook. Cheap to share; [`ErrorToResponseLayer`](crate::ErrorToResponseLayer)
/// holds one in its shared state, counted or leaked.
///
/// | cause | status | `Retry-After` |
/// |---|---|---|
/// | [`RateLimited`](palisade_core::RateLimited) | 429 | always (whole seconds, rounded up, at least 1) |
/// | [`Overloaded`](palisade_core::Overloaded), [`CircuitOpen`](palisade_core::CircuitOpen) | 503 | when the layer knows |
/// | [`Elapsed`](palisade_core::Elapsed) | 504, or 408 with [`TimeoutStatus::RequestTimeout`] | — |
/// | [`Panicked`](palisade_core::Panicked) | 500 | — |
/// | [`MissingKey`](palisade_core::MissingKey) | 400 | — |
/// | anything else | 500 | — |
///
/// The first rejection found in the error's `source()` chain decides, so a
/// rejection wrapped by a client library maps the same.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use palisade_core::{BoxError, Elapsed, PolicyName};
/// use palisade_http::{ErrorBody, HttpMapping, TimeoutStatus};
///
/// let mapping = HttpMapping::new()
///     .timeout_status(TimeoutStatus::RequestTimeout)
///     .body(|problem: &palisade_http::Problem<'_>| {
///         ErrorBody::text(format!("sorry: {}", problem.status()))
///     });
///
/// let err: BoxError = Elapsed::new(PolicyName::new("api"), Duration::from_secs(2)).into();
/// let res = mapping.to_response::<bytes::Bytes>(&*err);
/// assert_eq!(res.status(), StatusCode::REQUEST_TIMEOUT);
/// assert_eq!(res.body(), "sorry: 408 Request Timeout");
/// ```
#[derive(Clone, Default)]
pub struct HttpMapping<H = ProblemJson> {
    timeout: TimeoutStatus,
    body: H,
}

impl HttpMapping {
    /// The default mapping: 504 for timeouts, problem-details bodies.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<H> HttpMapping<H> {
    /// The status for a timeout. Default [`TimeoutStatus::GatewayTimeout`].
    #[must_use]
    pub fn timeout_status(mut self, timeout: TimeoutStatus) -> Self {
        self.timeout = timeout;
        self
    }

    /// Replaces the body hook (any [`MakeErrorBody`], such as a closure
    /// `Fn(&Problem<'_>) -> ErrorBody`). A hook that panics is caught and
    /// logged, and the answer gets the default body; this installs
    /// palisade's panic hook ([`palisade_core::panic::install_hook`]) so
    /// that the panic is not also printed to stderr.
    pub fn body<H2>(self, body: H2) -> HttpMapping<H2> {
        palisade_core::panic::install_hook();
        HttpMapping {
            timeout: self.timeout,
            body,
        }
    }

    /// What `err` means for the client.
    pub fn problem<'a>(&self, err: &'a (dyn Error + 'static)) -> Problem<'a> {
        Problem::new(err, self.timeout)
    }

    /// The status for `err`.
    pub fn status_code(&self, err: &(dyn Error + 'static)) -> StatusCode {
        self.problem(err).status()
    }
}

impl<H: MakeErrorBody> HttpMapping<H> {
    /// The response for `err`, with any body type that can be made from
    /// `Bytes`: `axum::body::Body`, `http_body_util::Full<Bytes>`, `Bytes`
    /// itself, `Vec<u8>`.
    pub fn to_response<B: From<Bytes>>(&self, err: &(dyn Error + 'static)) -> Response<B> {
        let problem = self.problem(err);
        let (content_type, bytes) = self.body_for(&problem).into_parts();
        let mut res = Response::new(B::from(bytes));
        *res.status_mut() = problem.status();
        if let Some(content_type) = content_type {
            res.headers_mut().insert(CONTENT_TYPE, content_type);
        }
        if let Some(secs) = problem.retry_after_seconds() {
            res.headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl<H: MakeErrorBody> HttpMapping<H> {
    /// The hook's body for `problem`; the default body if the hook panics,
    /// so that a bug in it still answers the request.
    fn body_for(&self, problem: &Problem<'_>) -> ErrorBody {
        let options = CaptureOptions {
            backtrace: false,
            print: false,
        };
        match palisade_core::panic::catch(options, || self.body.make_body(problem)) {
            Ok(body) => body,
            Err(payload) => hook_panicked(problem, payload, options),
        }
    }
}

#[cold]
#[inline(never)]
fn hook_panicked(
    problem: &Problem<'_>,
    payload: Box<dyn std::any::Any + Send>,
    options: CaptureOptions,
) -> ErrorBody {
    let policy = PolicyName::new(problem.policy().unwrap_or("error body"));
    let panicked = palisade_core::panic::panicked(policy.clone(), &*payload);
    // The log backend is the user's code too: contained.
    palisade_core::panic::contained(|| {
        tracing::error!(
            panic.message = panicked.message(),
            panic.location = panicked.location().map(tracing::field::display),
            status = problem.status().as_u16(),
            "the error-body hook panicked; the response has the default problem-details body"
        );
    });
    palisade_core::panic::contain_drop(&policy, options, move || drop(payload));
    ProblemJson::default().make_body(problem)
}

impl<H> fmt::Debug for HttpMapping<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMapping")
            .field("timeout", &self.timeout)
            .field("body", &std::any::type_name::<H>())
            .finish()
    }
}

/// The response for `err` under the default mapping: problem-details
/// body, 504 for timeouts. See [`HttpMapping`] for the table.
///
/// ```
/// use std::time::Duration;
/// use bytes::Bytes;
/// use palisade_core::{BoxError, CircuitOpen, CircuitState, PolicyName};
///
/// let err: BoxError = CircuitOpen::new(
///     PolicyName::new("payments"),
///     Some(Duration::from_millis(4500)),
///     CircuitState::Open,
/// )
/// .into();
/// let res = palisade_http::to_response::<Bytes>(&*err);
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "5");
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// ```
pub fn to_response<B: From<Bytes>>(err: &(dyn Error + 'static)) -> Response<B> {
    HttpMapping::new().to_response(err)
}

/// The status for `err` under the default mapping.
pub fn to_status_code(err: &(dyn Error + 'static)) -> StatusCode {
    Problem::new(err, TimeoutStatus::default()).status()
}

/// Logs an error that is about to be answered: rejections at debug (their
/// layer reported them already), anything else at error level with its
/// text, since the client will not see it. Contained: the log backend and
/// the error's `Display` are the user's code, and a panic of theirs must
/// not take the answer with it.
pub(crate) fn log_mapped(
    problem: &Problem<'_>,
    err: &(dyn Error + 'static),
    status: &dyn fmt::Display,
) {
    palisade_core::panic::contained(|| match problem.reason() {
        Some(reason) => tracing::debug!(
            policy = problem.policy().unwrap_or_default(),
            reason = reason.as_str(),
            status = %status,
            "rejection mapped to a response"
        ),
        None => {
            tracing::error!(error = %err, status = %status, "service error mapped to a response");
        }
    });
}

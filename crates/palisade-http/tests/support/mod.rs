//! Shared by the test binaries: one error of each kind, and a layer that
//! fails a request with the error its `x-reject` header names.

#![allow(dead_code, unreachable_pub)]

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_core::{
    BoxError, CircuitOpen, CircuitState, Elapsed, KeyKind, MissingKey, OverloadKind, Overloaded,
    Panicked, PolicyName, RateLimited,
};
use tower::{Layer, Service};

/// Text that must never reach a client.
pub const SECRET: &str = "db password is hunter2";

/// An error wrapping another, as a client library would.
#[derive(Debug)]
pub struct Wrapped(pub BoxError);

impl fmt::Display for Wrapped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "wrapped: {SECRET}")
    }
}

impl Error for Wrapped {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.0)
    }
}

fn policy() -> PolicyName {
    PolicyName::new("api")
}

/// The error named `kind`, or `None` to let the request through.
pub fn error(kind: &str) -> Option<BoxError> {
    Some(match kind {
        "rate_limited" => {
            RateLimited::new(policy(), Duration::from_millis(1500), KeyKind::PeerIp).into()
        }
        "rate_limited_now" => RateLimited::new(policy(), Duration::ZERO, KeyKind::Global).into(),
        "missing_key" => MissingKey::new(policy(), KeyKind::Header).into(),
        "circuit_open" => {
            CircuitOpen::new(policy(), Some(Duration::from_secs(3)), CircuitState::Open).into()
        }
        "half_open" => CircuitOpen::new(policy(), None, CircuitState::HalfOpen).into(),
        "overloaded" => Overloaded::new(policy(), 8, OverloadKind::QueueFull).into(),
        "elapsed" => Elapsed::new(policy(), Duration::from_millis(250)).into(),
        "caller_deadline" => Elapsed::caller_deadline(policy(), Duration::from_millis(5)).into(),
        "panicked" => Panicked::new(policy(), SECRET).into(),
        "other" => std::io::Error::other(SECRET).into(),
        "wrapped_rate_limited" => Wrapped(Box::new(Wrapped(
            RateLimited::new(policy(), Duration::from_millis(1500), KeyKind::PeerIp).into(),
        )))
        .into(),
        "wrapped_elapsed" => {
            Wrapped(Elapsed::new(policy(), Duration::from_millis(250)).into()).into()
        }
        _ => return None,
    })
}

/// Every kind, with its HTTP status, `Retry-After`, gRPC code (as its
/// number), and reason label.
pub const TABLE: &[(&str, u16, Option<&str>, i32, Option<&str>)] = &[
    ("rate_limited", 429, Some("2"), 8, Some("rate_limited")),
    ("rate_limited_now", 429, Some("1"), 8, Some("rate_limited")),
    ("missing_key", 400, None, 3, Some("missing_key")),
    ("circuit_open", 503, Some("3"), 14, Some("circuit_open")),
    ("half_open", 503, None, 14, Some("half_open_full")),
    ("overloaded", 503, None, 14, Some("queue_full")),
    ("elapsed", 504, None, 4, Some("timed_out")),
    ("caller_deadline", 504, None, 4, Some("timed_out")),
    ("panicked", 500, None, 13, Some("panicked")),
    ("other", 500, None, 2, None),
    (
        "wrapped_rate_limited",
        429,
        Some("2"),
        8,
        Some("rate_limited"),
    ),
    ("wrapped_elapsed", 504, None, 4, Some("timed_out")),
];

/// Fails a request with the error its `x-reject` header names.
#[derive(Clone, Copy, Debug, Default)]
pub struct RejectLayer;

impl<S> Layer<S> for RejectLayer {
    type Service = Reject<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Reject { inner }
    }
}

/// The service of [`RejectLayer`].
#[derive(Clone, Debug)]
pub struct Reject<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Reject<S>
where
    S: Service<http::Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let kind = req
            .headers()
            .get("x-reject")
            .and_then(|v| v.to_str().ok())
            .and_then(error);
        match kind {
            Some(err) => Box::pin(std::future::ready(Err(err))),
            None => {
                let future = self.inner.call(req);
                Box::pin(async move { future.await.map_err(Into::into) })
            }
        }
    }
}

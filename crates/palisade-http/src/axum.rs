//! axum glue: [`Rejected`], an error type for handlers.

use axum::response::{IntoResponse, Response};
use palisade_core::BoxError;

use crate::mapping::{HttpMapping, log_mapped};

/// An error that answers as the default [`HttpMapping`] says, for axum
/// handlers.
///
/// The palisade rejection types live in another crate, so they cannot
/// implement axum's `IntoResponse` themselves; `Rejected` carries any
/// error (a rejection returned by a client stack the handler called, or
/// any other) and answers the mapped response: 429, 503, 504 and so on,
/// with a problem-details body and never the error's text. Any error
/// converts into it, so `?` works in a handler returning
/// `Result<_, Rejected>`.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use axum::response::IntoResponse;
/// use palisade_core::{CircuitOpen, CircuitState, PolicyName};
/// use palisade_http::Rejected;
///
/// async fn handler() -> Result<&'static str, Rejected> {
///     // A call through a client stack whose breaker is open.
///     let downstream: Result<&'static str, CircuitOpen> =
///         Err(CircuitOpen::new(PolicyName::new("inventory"), None, CircuitState::Open));
///     Ok(downstream?)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let res = handler().await.into_response();
/// assert_eq!(res.status(), 503);
/// # }
/// ```
#[derive(Debug)]
pub struct Rejected(pub BoxError);

impl Rejected {
    /// The error.
    pub fn error(&self) -> &BoxError {
        &self.0
    }

    /// Takes the error out.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl<E: Into<BoxError>> From<E> for Rejected {
    fn from(err: E) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for Rejected {
    fn into_response(self) -> Response {
        let mapping = HttpMapping::new();
        let res = mapping.to_response(&*self.0);
        log_mapped(&mapping.problem(&*self.0), &*self.0, &res.status());
        res
    }
}

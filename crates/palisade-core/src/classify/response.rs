use http::{Response, StatusCode};
use tower_http::classify::{
    ClassifiedResponse, ClassifyResponse, GrpcCode, GrpcErrorsAsFailures as TowerGrpc,
    ServerErrorsAsFailures as TowerServerErrors,
};

use super::body::{ClassifiedBody, GrpcEos};
use super::{Classify, Outcome, RecordOutcome};
use crate::protocol::Protocol;

/// HTTP responses with a 5xx status, and every `Err`, are failures.
///
/// Decided from the status line, so the response is returned unchanged.
/// Uses [`tower_http::classify::ServerErrorsAsFailures`].
#[derive(Clone, Copy, Debug, Default)]
pub struct ServerErrorsAsFailures;

impl<B, E> Classify<Response<B>, E> for ServerErrorsAsFailures
where
    B: 'static,
    E: 'static,
{
    type Output<R: RecordOutcome> = Response<B>;

    #[inline]
    fn classify<R: RecordOutcome>(
        &self,
        result: Result<Response<B>, E>,
        recorder: R,
    ) -> Result<Response<B>, E> {
        let outcome = match &result {
            Ok(res) => match TowerServerErrors::new().classify_response(res) {
                ClassifiedResponse::Ready(Ok(())) => Outcome::Success,
                ClassifiedResponse::Ready(Err(_)) => Outcome::Failure,
                // ServerErrorsAsFailures never waits for the end of stream.
                ClassifiedResponse::RequiresEos(_) => Outcome::Success,
            },
            Err(_) => Outcome::Failure,
        };
        recorder.record(outcome);
        result
    }
}

/// gRPC responses whose status is a failure code, and every `Err`, are
/// failures.
///
/// The status is read from the response headers when the server put it
/// there (a "trailers-only" response, which is how servers answer a call
/// that fails before any message), and otherwise from the trailers at the
/// end of the body: the body is wrapped in a [`ClassifiedBody`] that records
/// the outcome when they arrive. A body dropped before its end records
/// nothing, which the layer reports as cancelled.
///
/// By default UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN and
/// RESOURCE_EXHAUSTED are failures: they say the server is unhealthy or
/// overloaded. Every other valid code (NOT_FOUND, INVALID_ARGUMENT, ...)
/// is the caller's business and counts as a success; a `grpc-status` that
/// is no valid code (anything but `0` to `16` written plainly, which a
/// client reads as UNKNOWN) counts as UNKNOWN does. Built on
/// [`tower_http::classify::GrpcErrorsAsFailures`].
///
/// A gRPC response (`application/grpc`) with no `grpc-status` is read as a
/// gRPC client reads it: an HTTP status other than 200 by gRPC's
/// HTTP-to-status table (429, 502, 503 and 504 are UNAVAILABLE; 400
/// INTERNAL; 401 UNAUTHENTICATED; 403 PERMISSION_DENIED; 404
/// UNIMPLEMENTED; others UNKNOWN), and a stream that ends without one
/// as UNKNOWN. Any other response without one (a proxy's HTML 503 page,
/// a plain HTTP route of the same server, gRPC-Web, whose status travels
/// in the body) counts by the same table when its status is 5xx or 429,
/// and as a success otherwise.
///
/// ```
/// use palisade_core::classify::{GrpcCode, GrpcErrorsAsFailures};
///
/// let strict = GrpcErrorsAsFailures::failing_on(&[GrpcCode::Unavailable]);
/// assert!(strict.is_failure(GrpcCode::Unavailable));
/// assert!(!strict.is_failure(GrpcCode::Internal));
/// assert!(GrpcErrorsAsFailures::new().is_failure(GrpcCode::Internal));
/// ```
#[derive(Clone, Debug)]
pub struct GrpcErrorsAsFailures {
    failures: u32,
    tower: TowerGrpc,
}

const ALL_CODES: [GrpcCode; 17] = [
    GrpcCode::Ok,
    GrpcCode::Cancelled,
    GrpcCode::Unknown,
    GrpcCode::InvalidArgument,
    GrpcCode::DeadlineExceeded,
    GrpcCode::NotFound,
    GrpcCode::AlreadyExists,
    GrpcCode::PermissionDenied,
    GrpcCode::ResourceExhausted,
    GrpcCode::FailedPrecondition,
    GrpcCode::Aborted,
    GrpcCode::OutOfRange,
    GrpcCode::Unimplemented,
    GrpcCode::Internal,
    GrpcCode::Unavailable,
    GrpcCode::DataLoss,
    GrpcCode::Unauthenticated,
];

const DEFAULT_FAILURES: [GrpcCode; 5] = [
    GrpcCode::Unavailable,
    GrpcCode::DeadlineExceeded,
    GrpcCode::Internal,
    GrpcCode::Unknown,
    GrpcCode::ResourceExhausted,
];

fn bit(code: GrpcCode) -> u32 {
    1 << (code as i32 as u32)
}

impl GrpcErrorsAsFailures {
    /// The default failure codes: UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL,
    /// UNKNOWN and RESOURCE_EXHAUSTED.
    pub fn new() -> Self {
        Self::failing_on(&DEFAULT_FAILURES)
    }

    /// A classifier whose failure codes are exactly `codes`. `OK` is always
    /// a success.
    pub fn failing_on(codes: &[GrpcCode]) -> Self {
        let failures = codes
            .iter()
            .filter(|c| **c != GrpcCode::Ok)
            .fold(0, |acc, c| acc | bit(*c));
        let tower = ALL_CODES
            .iter()
            .filter(|c| failures & bit(**c) == 0)
            .fold(TowerGrpc::new(), |t, c| t.with_success(*c));
        Self { failures, tower }
    }

    /// Whether `code` counts as a failure.
    pub fn is_failure(&self, code: GrpcCode) -> bool {
        self.failures & bit(code) != 0
    }

    /// The outcome of an answer with `code`.
    fn outcome(&self, code: GrpcCode) -> Outcome {
        if self.is_failure(code) {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }
}

impl Default for GrpcErrorsAsFailures {
    /// Same as [`GrpcErrorsAsFailures::new`].
    fn default() -> Self {
        Self::new()
    }
}

impl<B, E> Classify<Response<B>, E> for GrpcErrorsAsFailures
where
    B: http_body::Body + 'static,
    E: 'static,
{
    type Output<R: RecordOutcome> = Response<ClassifiedBody<B, R>>;

    fn classify<R: RecordOutcome>(
        &self,
        result: Result<Response<B>, E>,
        recorder: R,
    ) -> Result<Self::Output<R>, E> {
        let res = match result {
            Ok(res) => res,
            Err(err) => {
                recorder.record(Outcome::Failure);
                return Err(err);
            }
        };
        // gRPC proper, not gRPC-Web (whose status travels in the body) nor
        // a plain HTTP route of the same server.
        let grpc = Protocol::of_headers(res.headers()) == Protocol::Grpc;
        let status = res.status();
        let grpc_status = res.headers().get(&GRPC_STATUS);
        if status != StatusCode::OK && grpc_status.is_none() {
            // A gRPC answer, or what a proxy says of its upstream (an HTML
            // 503 page), read as a client reads it; a plain route's 4xx is
            // its caller's business.
            let code =
                if grpc || status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
                    code_of_http_status(status)
                } else {
                    GrpcCode::Ok
                };
            recorder.record(self.outcome(code));
            return Ok(res.map(ClassifiedBody::done));
        }
        if !grpc && grpc_status.is_none() {
            // A 200 of a plain route or gRPC-Web: a success, known now.
            // Waiting for its end would leave an endless stream (server-sent
            // events) unjudged, and one dropped early counted as cancelled.
            recorder.record(Outcome::Success);
            return Ok(res.map(ClassifiedBody::done));
        }
        if let Some(value) = grpc_status
            && !is_grpc_code(value.as_bytes())
        {
            // Not a code a client can read: it reads UNKNOWN.
            recorder.record(self.outcome(GrpcCode::Unknown));
            return Ok(res.map(ClassifiedBody::done));
        }
        match self.tower.clone().classify_response(&res) {
            ClassifiedResponse::Ready(ready) => {
                recorder.record(if ready.is_ok() {
                    Outcome::Success
                } else {
                    Outcome::Failure
                });
                Ok(res.map(ClassifiedBody::done))
            }
            // Only a gRPC answer's status may still come, in its trailers:
            // any other is judged above.
            ClassifiedResponse::RequiresEos(eos) => {
                let eos = GrpcEos::new(eos, self.is_failure(GrpcCode::Unknown));
                Ok(res.map(|body| ClassifiedBody::pending(body, eos, recorder)))
            }
        }
    }
}

/// The `grpc-status` header's name, built once.
pub(crate) static GRPC_STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");

/// Whether `value` is a `grpc-status` code a client reads as such: `0` to
/// `16`, in decimal with no sign, space or leading zero. A client reads
/// anything else as `UNKNOWN` (tonic does).
pub(crate) fn is_grpc_code(value: &[u8]) -> bool {
    matches!(value, [b'0'..=b'9'] | [b'1', b'0'..=b'6'])
}

/// The gRPC code a client gives a response with no `grpc-status` and this
/// HTTP status (gRPC's `http-grpc-status-mapping`).
fn code_of_http_status(status: StatusCode) -> GrpcCode {
    match status.as_u16() {
        400 => GrpcCode::Internal,
        401 => GrpcCode::Unauthenticated,
        403 => GrpcCode::PermissionDenied,
        404 => GrpcCode::Unimplemented,
        429 | 502..=504 => GrpcCode::Unavailable,
        _ => GrpcCode::Unknown,
    }
}

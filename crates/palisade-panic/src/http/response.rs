//! What the HTTP flavour answers for a panic, and the hook to change it.

use std::fmt;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use palisade_core::Panicked;
pub(crate) use palisade_core::protocol::Protocol;

/// What a [`ResponseForPanic`] hook knows about a caught panic.
#[derive(Clone, Copy, Debug)]
pub struct PanicContext<'a> {
    pub(crate) panicked: &'a Panicked,
    pub(crate) method: &'a Method,
    pub(crate) path: &'a str,
    pub(crate) protocol: Protocol,
    pub(crate) expose_message: bool,
}

impl<'a> PanicContext<'a> {
    /// The caught panic: message, location, backtrace, policy.
    ///
    /// The message is for logs. Put it in a response only if clients may
    /// see it (see [`expose_message`](Self::expose_message)).
    pub fn panicked(&self) -> &'a Panicked {
        self.panicked
    }

    /// The request's method.
    pub fn method(&self) -> &'a Method {
        self.method
    }

    /// The request's path (without the query), cut to its first 96 bytes.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// Whether the request is a gRPC or gRPC-Web call (its `content-type`
    /// is `application/grpc`, `application/grpc-web` or
    /// `application/grpc-web-text`, in any case, with or without a
    /// `+suffix`).
    pub fn is_grpc(&self) -> bool {
        self.protocol.is_grpc()
    }

    /// Whether the layer was configured to show the panic message to
    /// clients.
    pub fn expose_message(&self) -> bool {
        self.expose_message
    }
}

/// Builds the response sent in place of one whose handler panicked.
///
/// Implemented for closures `Fn(&PanicContext<'_>) -> Response<B>`, and by
/// [`DefaultResponseForPanic`].
///
/// The hook itself must not panic: it runs after the catch, and there is
/// no response of an arbitrary body type to fall back on, so a panic of
/// the hook leaves the layer as any uncaught panic would.
///
/// ```
/// use http::{Response, StatusCode};
/// use http_body_util::Full;
/// use bytes::Bytes;
/// use palisade_panic::http::{CatchPanicHttpLayer, PanicContext};
///
/// let layer = CatchPanicHttpLayer::builder()
///     .response_for_panic(|ctx: &PanicContext<'_>| {
///         let mut res = Response::new(Full::<Bytes>::from("sorry, try again"));
///         *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///         res
///     })
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
pub trait ResponseForPanic<B> {
    /// The response for the panic described by `panic`.
    fn response_for_panic(&self, panic: &PanicContext<'_>) -> Response<B>;
}

impl<B, F> ResponseForPanic<B> for F
where
    F: Fn(&PanicContext<'_>) -> Response<B>,
{
    fn response_for_panic(&self, panic: &PanicContext<'_>) -> Response<B> {
        self(panic)
    }
}

/// The answer palisade gives for a panic unless told otherwise.
///
/// - HTTP: `500 Internal Server Error`, `content-type: text/plain`, body
///   `internal server error` (followed by `: ` and the panic message when
///   the layer exposes messages).
/// - gRPC (`content-type: application/grpc…`): a trailers-only response,
///   HTTP `200` with `content-type: application/grpc`, `grpc-status: 13`
///   (INTERNAL) and, when the layer exposes messages, a percent-encoded
///   `grpc-message`. gRPC clients report status INTERNAL. A gRPC-Web
///   request gets the same answer with its own protocol's content type
///   (`application/grpc-web` or `application/grpc-web-text`).
///
/// Works with any response body that can be made from [`Bytes`], such as
/// axum's `Body` or `http_body_util::Full<Bytes>`.
#[derive(Clone, Copy, Debug, Default)]
pub struct DefaultResponseForPanic;

/// Body of the default HTTP answer.
pub(crate) const HTTP_BODY: &str = "internal server error";

impl<B> ResponseForPanic<B> for DefaultResponseForPanic
where
    B: From<Bytes>,
{
    fn response_for_panic(&self, panic: &PanicContext<'_>) -> Response<B> {
        if panic.is_grpc() {
            grpc_internal(panic)
        } else {
            http_internal(panic)
        }
    }
}

fn http_internal<B: From<Bytes>>(panic: &PanicContext<'_>) -> Response<B> {
    let body = if panic.expose_message {
        Bytes::from(format!("{HTTP_BODY}: {}", panic.panicked.message()))
    } else {
        Bytes::from_static(HTTP_BODY.as_bytes())
    };
    let mut response = Response::new(B::from(body));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Answers every panic with gRPC status `INTERNAL`, whatever the request's
/// `content-type`: for gRPC-only servers such as tonic's, whose body type
/// has no `From<Bytes>` but has an empty value (`Default`), which is all a
/// trailers-only answer needs.
///
/// ```
/// use palisade_panic::http::{CatchPanicHttpLayer, GrpcResponseForPanic};
///
/// let layer = CatchPanicHttpLayer::builder()
///     .name("grpc-api")
///     .response_hook(GrpcResponseForPanic)
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct GrpcResponseForPanic;

impl<B: Default> ResponseForPanic<B> for GrpcResponseForPanic {
    fn response_for_panic(&self, panic: &PanicContext<'_>) -> Response<B> {
        grpc_internal_with(B::default(), panic)
    }
}

fn grpc_internal<B: From<Bytes>>(panic: &PanicContext<'_>) -> Response<B> {
    grpc_internal_with(B::from(Bytes::new()), panic)
}

fn grpc_internal_with<B>(body: B, panic: &PanicContext<'_>) -> Response<B> {
    let mut response = Response::new(body);
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(panic.protocol.grpc_content_type()),
    );
    // 13 is INTERNAL in the gRPC status code table.
    headers.insert("grpc-status", HeaderValue::from_static("13"));
    if panic.expose_message {
        let encoded = grpc_percent_encode(panic.panicked.message());
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("grpc-message", value);
        }
    }
    response
}

/// Encodes a `grpc-message` value: bytes outside printable ASCII, and `%`
/// itself, become `%XX`, as the gRPC HTTP/2 protocol asks.
pub(crate) fn grpc_percent_encode(message: &str) -> String {
    use fmt::Write as _;
    let mut out = String::with_capacity(message.len());
    for &byte in message.as_bytes() {
        if (0x20..=0x7e).contains(&byte) && byte != b'%' {
            out.push(char::from(byte));
        } else {
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn decode(encoded: &str) -> Vec<u8> {
        let bytes = encoded.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn encoding_keeps_printable_ascii() {
        assert_eq!(grpc_percent_encode("boom at x"), "boom at x");
        assert_eq!(grpc_percent_encode("100%"), "100%25");
        assert_eq!(grpc_percent_encode("a\nb"), "a%0Ab");
        assert_eq!(grpc_percent_encode("é"), "%C3%A9");
    }

    proptest! {
        #[test]
        fn encoding_round_trips_and_is_a_valid_header(message in "\\PC{0,64}|[\\x00-\\x7f]{0,64}") {
            let encoded = grpc_percent_encode(&message);
            prop_assert!(HeaderValue::from_str(&encoded).is_ok());
            prop_assert_eq!(decode(&encoded), message.as_bytes().to_vec());
        }
    }
}

//! Which protocol an HTTP request speaks, so that a layer answering it
//! itself (a caught panic, a mapped rejection) answers in the same one.
//!
//! # Example
//!
//! ```
//! use palisade_core::protocol::Protocol;
//!
//! let request = http::Request::builder()
//!     .header("content-type", "application/grpc-web+proto")
//!     .body(())
//!     .unwrap();
//! let protocol = Protocol::of_request(&request);
//! assert_eq!(protocol, Protocol::GrpcWeb);
//! assert!(protocol.is_grpc());
//! assert_eq!(protocol.grpc_content_type(), "application/grpc-web");
//! ```

use http::header::CONTENT_TYPE;

/// Which protocol a request speaks, from its `content-type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Protocol {
    /// Plain HTTP: not gRPC.
    #[default]
    Http,
    /// gRPC: `application/grpc`, `application/grpc+proto`, ...
    Grpc,
    /// gRPC-Web: `application/grpc-web`, `application/grpc-web+proto`.
    GrpcWeb,
    /// gRPC-Web in base64: `application/grpc-web-text`.
    GrpcWebText,
}

impl Protocol {
    /// Reads a `content-type` value. Media types are compared without
    /// regard to case, and a type must end where the value does or at its
    /// `+suffix` or parameters: `application/grpcx` is not gRPC.
    pub fn of(content_type: Option<&[u8]>) -> Self {
        let Some(value) = content_type else {
            return Self::Http;
        };
        let is = |name: &[u8]| {
            value.len() >= name.len()
                && value[..name.len()].eq_ignore_ascii_case(name)
                && matches!(
                    value.get(name.len()),
                    None | Some(b'+' | b';' | b' ' | b'\t')
                )
        };
        if is(b"application/grpc-web-text") {
            Self::GrpcWebText
        } else if is(b"application/grpc-web") {
            Self::GrpcWeb
        } else if is(b"application/grpc") {
            Self::Grpc
        } else {
            Self::Http
        }
    }

    /// Reads the request's (first) `content-type` header.
    #[inline]
    pub fn of_request<B>(request: &http::Request<B>) -> Self {
        Self::of_headers(request.headers())
    }

    /// Reads the (first) `content-type` header of a request's or a
    /// response's headers.
    #[inline]
    pub fn of_headers(headers: &http::HeaderMap) -> Self {
        Self::of(headers.get(CONTENT_TYPE).map(http::HeaderValue::as_bytes))
    }

    /// Whether this is gRPC or gRPC-Web.
    pub fn is_grpc(self) -> bool {
        self != Self::Http
    }

    /// The `content-type` of a gRPC answer in this protocol:
    /// `application/grpc-web` or `application/grpc-web-text` for gRPC-Web
    /// calls, `application/grpc` otherwise.
    pub fn grpc_content_type(self) -> &'static str {
        match self {
            Self::GrpcWeb => "application/grpc-web",
            Self::GrpcWebText => "application/grpc-web-text",
            Self::Http | Self::Grpc => "application/grpc",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_content_types_are_read_without_regard_to_case() {
        let of = |value: &str| Protocol::of(Some(value.as_bytes()));
        assert_eq!(of("application/grpc"), Protocol::Grpc);
        assert_eq!(of("Application/gRPC"), Protocol::Grpc);
        assert_eq!(of("APPLICATION/GRPC+proto"), Protocol::Grpc);
        assert_eq!(of("application/grpc; charset=utf-8"), Protocol::Grpc);
        assert_eq!(of("application/grpc-web+proto"), Protocol::GrpcWeb);
        assert_eq!(of("application/GRPC-WEB"), Protocol::GrpcWeb);
        assert_eq!(of("application/grpc-web-text+proto"), Protocol::GrpcWebText);
        for not_grpc in [
            "application/grpcx",
            "application/grpc-webby",
            "text/plain",
            "",
        ] {
            assert_eq!(of(not_grpc), Protocol::Http, "{not_grpc}");
        }
        assert_eq!(Protocol::of(None), Protocol::Http);
        assert_eq!(
            Protocol::of_request(&http::Request::new(())),
            Protocol::Http
        );
        assert_eq!(Protocol::Grpc.grpc_content_type(), "application/grpc");
        assert_eq!(
            Protocol::GrpcWeb.grpc_content_type(),
            "application/grpc-web"
        );
        assert_eq!(
            Protocol::GrpcWebText.grpc_content_type(),
            "application/grpc-web-text"
        );
    }
}

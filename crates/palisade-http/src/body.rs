//! The body of an error response, and the hook that makes it.

use std::fmt::{self, Write as _};

use bytes::Bytes;
use http::HeaderValue;

use crate::problem::Problem;

/// The content type of RFC 9457 problem details.
pub const PROBLEM_JSON: HeaderValue = HeaderValue::from_static("application/problem+json");

/// A response body and its content type.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ErrorBody {
    content_type: Option<HeaderValue>,
    bytes: Bytes,
}

impl ErrorBody {
    /// A body with its content type.
    pub fn new(content_type: HeaderValue, bytes: impl Into<Bytes>) -> Self {
        Self {
            content_type: Some(content_type),
            bytes: bytes.into(),
        }
    }

    /// An empty body, with no content type.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A `text/plain; charset=utf-8` body.
    pub fn text(text: impl Into<Bytes>) -> Self {
        Self::new(HeaderValue::from_static("text/plain; charset=utf-8"), text)
    }

    /// An `application/json` body. The bytes are sent as given.
    pub fn json(json: impl Into<Bytes>) -> Self {
        Self::new(HeaderValue::from_static("application/json"), json)
    }

    /// The content type, if any.
    pub fn content_type(&self) -> Option<&HeaderValue> {
        self.content_type.as_ref()
    }

    /// The bytes.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Splits into content type and bytes.
    pub fn into_parts(self) -> (Option<HeaderValue>, Bytes) {
        (self.content_type, self.bytes)
    }
}

/// Makes the body of an error response from its [`Problem`].
///
/// The status and `Retry-After` are set by the mapping; the hook chooses
/// the body and its content type. Implemented by [`ProblemJson`] (the
/// default) and by closures `Fn(&Problem<'_>) -> ErrorBody`.
///
/// A hook sees only the [`Problem`], never the error, so it cannot leak
/// internal text by accident. A hook that panics does not take the
/// request down with it: the panic is logged as an error and the response,
/// status and headers unchanged, gets the default problem-details body.
pub trait MakeErrorBody {
    /// The body for `problem`.
    fn make_body(&self, problem: &Problem<'_>) -> ErrorBody;
}

impl<F> MakeErrorBody for F
where
    F: Fn(&Problem<'_>) -> ErrorBody,
{
    fn make_body(&self, problem: &Problem<'_>) -> ErrorBody {
        self(problem)
    }
}

/// The default body: RFC 9457 problem details as
/// `application/problem+json`.
///
/// ```json
/// {
///   "type": "about:blank",
///   "title": "Too Many Requests",
///   "status": 429,
///   "detail": "Too many requests for policy \"api\". Retry after 2 seconds.",
///   "policy": "api",
///   "layer": "rate_limit",
///   "reason": "rate_limited",
///   "retry_after_seconds": 2
/// }
/// ```
///
/// `type` is `about:blank` (the title is then the status phrase, as RFC
/// 9457 asks) unless [`type_base`](Self::type_base) is set, in which case
/// it is the base followed by the reason label (`…/rate_limited`).
/// `policy`, `layer`, `reason` and `retry_after_seconds` are extension
/// members, present when known. An error that is not a palisade rejection
/// gets a 500 with only the standard members and a generic detail.
#[derive(Clone, Debug, Default)]
pub struct ProblemJson {
    type_base: Option<Box<str>>,
}

impl ProblemJson {
    /// Problem details with `type` set to `about:blank`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `type` to `base` followed by the reason label for rejections,
    /// for example `https://errors.example.com/palisade/` gives
    /// `https://errors.example.com/palisade/rate_limited`. Errors that are
    /// not rejections keep `about:blank`.
    #[must_use]
    pub fn type_base(mut self, base: impl Into<Box<str>>) -> Self {
        self.type_base = Some(base.into());
        self
    }

    /// The JSON text for `problem`.
    pub fn to_json(&self, problem: &Problem<'_>) -> String {
        let mut out = String::with_capacity(256);
        // Writing to a `String` cannot fail.
        let _ = self.write_json(problem, &mut out);
        out
    }

    fn write_json(&self, problem: &Problem<'_>, out: &mut String) -> fmt::Result {
        out.push_str("{\"type\":");
        match (&self.type_base, problem.reason()) {
            (Some(base), Some(reason)) => {
                write_json_string(out, format_args!("{base}{}", reason.as_str()))?;
            }
            _ => out.push_str("\"about:blank\""),
        }
        out.push_str(",\"title\":");
        write_json_string(out, format_args!("{}", problem.title()))?;
        write!(out, ",\"status\":{}", problem.status().as_u16())?;
        out.push_str(",\"detail\":");
        write_json_string(out, format_args!("{}", problem.detail()))?;
        if let Some(policy) = problem.policy() {
            out.push_str(",\"policy\":");
            write_json_string(out, format_args!("{policy}"))?;
        }
        if let Some(layer) = problem.layer() {
            write!(out, ",\"layer\":\"{}\"", layer.as_str())?;
        }
        if let Some(reason) = problem.reason() {
            write!(out, ",\"reason\":\"{}\"", reason.as_str())?;
        }
        if let Some(secs) = problem.retry_after_seconds() {
            write!(out, ",\"retry_after_seconds\":{secs}")?;
        }
        out.push('}');
        Ok(())
    }
}

impl MakeErrorBody for ProblemJson {
    fn make_body(&self, problem: &Problem<'_>) -> ErrorBody {
        ErrorBody::new(PROBLEM_JSON, self.to_json(problem))
    }
}

/// Writes `value` as a JSON string literal, escaping as RFC 8259 requires.
fn write_json_string(out: &mut String, value: fmt::Arguments<'_>) -> fmt::Result {
    out.push('"');
    JsonEscape(out).write_fmt(value)?;
    out.push('"');
    Ok(())
}

/// Escapes what is written through it into a JSON string body.
struct JsonEscape<'a>(&'a mut String);

impl fmt::Write for JsonEscape<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if u32::from(c) < 0x20 || c == '\u{2028}' || c == '\u{2029}' => {
                    write!(self.0, "\\u{:04x}", u32::from(c))?;
                }
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(s: &str) -> String {
        let mut out = String::new();
        write_json_string(&mut out, format_args!("{s}")).unwrap();
        out
    }

    #[test]
    fn escapes_quotes_backslashes_and_controls() {
        assert_eq!(escape(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(escape("l1\nl2\t\r"), r#""l1\nl2\t\r""#);
        assert_eq!(escape("\u{1}\u{1f}"), r#""\u0001\u001f""#);
        assert_eq!(escape("é ✓"), "\"é ✓\"");
        assert_eq!(escape("\u{2028}"), r#""\u2028""#);
    }
}

//! Rate-limit headers on admitted responses, and `Retry-After` rounding.
//!
//! Headers are opt-in: [`RateLimitBuilder::headers`](crate::RateLimitBuilder::headers)
//! picks a [`HeaderStyle`] and the layer then adds, to every admitted
//! `http::Response`:
//!
//! - [`HeaderStyle::Draft`], the IETF draft *RateLimit header fields for
//!   HTTP* (draft-ietf-httpapi-ratelimit-headers):
//!   `RateLimit-Policy: "api";q=100;w=60` and `RateLimit: "api";r=42;t=15`;
//! - [`HeaderStyle::Legacy`], the widespread `X-RateLimit-Limit: 100`,
//!   `X-RateLimit-Remaining: 42` and `X-RateLimit-Reset: 15`.
//!
//! The values describe the GCRA bucket honestly. `q` per `w` is the
//! quota's rate: `w` is the time an empty bucket takes to fill again, in
//! whole seconds (rounded up, at least 1), and `q` the requests the quota
//! allows in `w` seconds (rounded down), which is the bucket's capacity
//! (the burst) when the fill time is whole seconds. With the default
//! burst, that is the configured quota ("100 per 60 s"); a quota of 100
//! per 1.5 s says `q=133;w=2`, and 100 per second with a burst of 1 says
//! `q=100;w=1`. `Limit` is the burst, `r` and `Remaining` are the requests
//! admitted right now, and `t` and `Reset` are the seconds (rounded up)
//! until the bucket is full again.
//!
//! Rejections are answered by the HTTP mapping (`palisade-http`): status
//! 429 with `Retry-After` from [`retry_after_seconds`](crate::retry_after_seconds).
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_ratelimit::retry_after_seconds;
//!
//! assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
//! assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
//! assert_eq!(retry_after_seconds(Duration::from_secs(3)), 3);
//! assert_eq!(retry_after_seconds(Duration::ZERO), 1);
//! ```

use std::fmt::{self, Write as _};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::limiter::{Admission, Limiter};

/// The largest integer a structured header field may carry (RFC 9651).
const SF_INTEGER_MAX: u64 = 999_999_999_999_999;

/// What `RateLimit-Policy` states: `quota` requests per `window` seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    pub(crate) quota: u64,
    pub(crate) window: u64,
}

impl Policy {
    /// The policy of `requests` per `period` whose bucket of `burst` fills
    /// in `fill`: the fill time in whole seconds, rounded up, and what the
    /// rate allows in them, rounded down, so that rounding the window up
    /// does not state a slower rate. It is the burst when `fill` is whole
    /// seconds.
    pub(crate) fn new(requests: u32, period: Duration, burst: u32, fill: Duration) -> Self {
        let window = ceil_seconds(fill).max(1);
        let quota = if fill.subsec_nanos() == 0 {
            u64::from(burst)
        } else {
            let allowed = u128::from(window) * 1_000_000_000 * u128::from(requests)
                / period.as_nanos().max(1);
            u64::try_from(allowed).map_or(u64::MAX, |allowed| allowed.max(u64::from(burst)))
        };
        Self {
            quota: quota.min(SF_INTEGER_MAX),
            window: window.min(SF_INTEGER_MAX),
        }
    }
}

fn ceil_seconds(duration: Duration) -> u64 {
    let whole = duration.as_secs();
    if duration.subsec_nanos() > 0 {
        whole.saturating_add(1)
    } else {
        whole
    }
}

/// Which rate-limit headers to add to admitted responses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HeaderStyle {
    /// `RateLimit-Policy` and `RateLimit`, from the IETF draft.
    Draft,
    /// `X-RateLimit-Limit`, `X-RateLimit-Remaining` and `X-RateLimit-Reset`.
    Legacy,
}

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

/// How the layer decorates the responses it admitted.
///
/// [`NoHeaders`] (the default) does nothing and costs nothing;
/// [`RateLimitHeaders`] adds the headers of a [`HeaderStyle`] to
/// `http::Response`s.
pub trait ResponseHeaders<Res>: Send + Sync + 'static {
    /// What the response future carries from the admission to the response.
    type Pending: Send;

    /// Prepares the headers of an admission.
    fn admitted(&self, admission: &Admission) -> Self::Pending;

    /// Adds the prepared headers to the response.
    fn apply(pending: Self::Pending, response: &mut Res);
}

/// Adds no header. The default.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHeaders;

impl<Res> ResponseHeaders<Res> for NoHeaders {
    type Pending = ();

    #[inline]
    fn admitted(&self, _admission: &Admission) {}

    #[inline]
    fn apply((): (), _response: &mut Res) {}
}

/// Adds rate-limit headers of one [`HeaderStyle`] to admitted
/// `http::Response`s. Built by the layer's builder.
///
/// The static parts (the policy, the limit) are computed once; each
/// response formats its remaining count and reset time into one small
/// header value.
#[derive(Clone, Debug)]
pub struct RateLimitHeaders {
    style: HeaderStyle,
    /// `RateLimit-Policy` (draft) or `X-RateLimit-Limit` (legacy).
    fixed: HeaderValue,
    /// The policy name as a structured-field string, quotes included.
    item: Box<str>,
}

impl RateLimitHeaders {
    pub(crate) fn new(style: HeaderStyle, limiter: &Limiter, limit: u32, policy: Policy) -> Self {
        let item = sf_string(limiter.policy().as_str());
        let fixed = match style {
            HeaderStyle::Draft => format!("{item};q={};w={}", policy.quota, policy.window),
            HeaderStyle::Legacy => limit.to_string(),
        };
        Self {
            style,
            // Only ASCII digits, separators and printable ASCII.
            fixed: HeaderValue::try_from(fixed).unwrap_or(HeaderValue::from_static("")),
            item: item.into_boxed_str(),
        }
    }

    /// The style of headers added.
    pub fn style(&self) -> HeaderStyle {
        self.style
    }

    /// The headers for `admission`, as `(name, value)` pairs.
    pub fn values(&self, admission: &Admission) -> PendingHeaders {
        let remaining = admission.remaining();
        let reset = ceil_seconds(admission.reset());
        let mut buf = ValueBuf::new();
        match self.style {
            HeaderStyle::Draft => {
                let _ = write!(buf, "{};r={remaining};t={reset}", self.item);
                PendingHeaders {
                    style: self.style,
                    fixed: self.fixed.clone(),
                    first: buf.value(),
                    second: None,
                }
            }
            HeaderStyle::Legacy => {
                let _ = write!(buf, "{remaining}");
                let remaining = buf.value();
                let mut buf = ValueBuf::new();
                let _ = write!(buf, "{reset}");
                PendingHeaders {
                    style: self.style,
                    fixed: self.fixed.clone(),
                    first: remaining,
                    second: Some(buf.value()),
                }
            }
        }
    }
}

/// Headers prepared at admission, added to the response when it is ready.
#[derive(Clone, Debug)]
pub struct PendingHeaders {
    style: HeaderStyle,
    fixed: HeaderValue,
    first: HeaderValue,
    second: Option<HeaderValue>,
}

impl PendingHeaders {
    /// Adds the headers to `headers`. Draft fields are appended (several
    /// policies form one list). Legacy fields say one limit only: the one
    /// with the fewest requests remaining, so that a client pacing itself
    /// by them meets the tightest limit, whichever layer (or the service
    /// itself) set it; on a tie the fields already present stay.
    pub fn apply_to(self, headers: &mut http::HeaderMap) {
        match self.style {
            HeaderStyle::Draft => {
                headers.append(RATELIMIT_POLICY.clone(), self.fixed);
                headers.append(RATELIMIT.clone(), self.first);
            }
            HeaderStyle::Legacy => {
                let count = |value: &HeaderValue| value.to_str().ok()?.parse::<u64>().ok();
                let present = headers.get(&X_RATELIMIT_REMAINING).and_then(count);
                if present.is_some_and(|present| Some(present) <= count(&self.first)) {
                    return;
                }
                headers.insert(X_RATELIMIT_LIMIT.clone(), self.fixed);
                headers.insert(X_RATELIMIT_REMAINING.clone(), self.first);
                if let Some(reset) = self.second {
                    headers.insert(X_RATELIMIT_RESET.clone(), reset);
                }
            }
        }
    }
}

impl<B> ResponseHeaders<http::Response<B>> for RateLimitHeaders {
    type Pending = PendingHeaders;

    fn admitted(&self, admission: &Admission) -> PendingHeaders {
        self.values(admission)
    }

    fn apply(pending: PendingHeaders, response: &mut http::Response<B>) {
        pending.apply_to(response.headers_mut());
    }
}

/// A structured-field string (RFC 8941): printable ASCII in quotes, with
/// `"` and `\` escaped. Characters it cannot carry become `_`.
fn sf_string(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
    out
}

/// A stack buffer for one header value, so formatting allocates only the
/// value itself. A draft field is the longest value: a policy name has at
/// most 64 characters, so it is at most 130 bytes quoted and escaped, and
/// the two numbers take at most 10 and 20 digits.
struct ValueBuf {
    bytes: [u8; 192],
    len: usize,
}

impl ValueBuf {
    fn new() -> Self {
        Self {
            bytes: [0; 192],
            len: 0,
        }
    }

    fn value(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.bytes[..self.len]).unwrap_or(HeaderValue::from_static(""))
    }
}

impl fmt::Write for ValueBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        let dest = self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?;
        dest.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::retry_after_seconds;

    #[test]
    fn the_policy_never_states_more_than_a_header_integer() {
        let policy = |q, w| Policy {
            quota: q,
            window: w,
        };
        // The largest rate over the longest fill: within the field's range.
        let huge = Policy::new(u32::MAX, Duration::from_nanos(1), 1, Duration::MAX);
        assert_eq!(huge, policy(SF_INTEGER_MAX, SF_INTEGER_MAX));
        let fast = Policy::new(
            u32::MAX,
            Duration::from_nanos(1),
            1,
            Duration::from_nanos(1),
        );
        assert_eq!(fast, policy(SF_INTEGER_MAX, 1));
        // A whole fill time states the burst as it is.
        let whole = Policy::new(7, Duration::from_secs(3), 7, Duration::from_secs(3));
        assert_eq!(whole, policy(7, 3));
    }

    #[test]
    fn retry_after_rounds_up_to_at_least_one_second() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_nanos(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(999)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_nanos(1_000_000_001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(59)), 59);
        assert_eq!(retry_after_seconds(Duration::MAX), u64::MAX);
    }

    #[test]
    fn policy_names_become_structured_field_strings() {
        assert_eq!(sf_string("api"), "\"api\"");
        assert_eq!(sf_string("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(sf_string("café"), "\"caf_\"");
    }
}

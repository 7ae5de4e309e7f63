use std::time::Duration;

use crate::CHAOS_HEADER;

/// What a chaos layer does to one request.
///
/// A panic takes precedence over an error. A delay happens first, except
/// for a panic raised in `call` ([`PanicPoint::Call`](crate::PanicPoint)):
/// `call` cannot sleep, so that panic comes at once and its delay is
/// dropped, neither applied nor counted in [`ChaosStats`](crate::ChaosStats).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Fault {
    /// Answer an [`InjectedFault`](crate::InjectedFault) without calling the
    /// service.
    pub error: bool,
    /// Panic (in `call`, or when the response future is polled after the
    /// delay, see [`PanicPoint`](crate::PanicPoint)).
    pub panic: bool,
    /// Sleep this long, from the first poll of the response future, before
    /// the inner future is polled (ignored with a panic raised in `call`).
    pub delay: Duration,
}

impl Fault {
    /// No fault: the request goes through untouched.
    pub const NONE: Fault = Fault {
        error: false,
        panic: false,
        delay: Duration::ZERO,
    };

    /// An injected error.
    pub const fn error() -> Self {
        Fault {
            error: true,
            ..Fault::NONE
        }
    }

    /// An injected panic.
    pub const fn panic() -> Self {
        Fault {
            panic: true,
            ..Fault::NONE
        }
    }

    /// An injected delay.
    pub const fn delay(delay: Duration) -> Self {
        Fault {
            delay,
            ..Fault::NONE
        }
    }

    /// Whether this fault does nothing.
    pub fn is_none(&self) -> bool {
        *self == Fault::NONE
    }
}

/// A request extension that forces the fault for one request, whatever the
/// configured rates, and even while the layer is disabled.
///
/// Read by [`HttpFaults`]; for other request types, write a
/// [`FaultSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FaultOverride(pub Fault);

/// Where a chaos layer looks for a fault forced on one request.
pub trait FaultSource<Req>: Clone + Send + Sync + 'static {
    /// The fault forced on `req`: `Ok(None)` to use the seeded generator,
    /// `Err(header)` when a header was malformed and ignored (the layer
    /// reports it and uses the generator).
    fn fault_for(&self, req: &Req) -> Result<Option<Fault>, &'static str>;
}

/// Never forces a fault: every request uses the seeded generator.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoOverride;

impl<Req> FaultSource<Req> for NoOverride {
    #[inline]
    fn fault_for(&self, _req: &Req) -> Result<Option<Fault>, &'static str> {
        Ok(None)
    }
}

/// Forces faults on HTTP requests from a [`FaultOverride`] extension and,
/// when enabled, from the `x-palisade-chaos` header.
///
/// The header is off by default: any client that can send it can make the
/// service fail. Enable it only where that is the point (a test or staging
/// environment).
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpFaults {
    header: bool,
}

impl HttpFaults {
    /// Reads the [`FaultOverride`] extension only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also reads the `x-palisade-chaos` header (see [`parse_header`]).
    #[must_use]
    pub fn with_header(mut self) -> Self {
        self.header = true;
        self
    }
}

impl<B> FaultSource<http::Request<B>> for HttpFaults {
    fn fault_for(&self, req: &http::Request<B>) -> Result<Option<Fault>, &'static str> {
        if let Some(FaultOverride(fault)) = req.extensions().get::<FaultOverride>() {
            return Ok(Some(*fault));
        }
        if !self.header {
            return Ok(None);
        }
        // Several lines of the header are one list, as HTTP reads them.
        let mut lines = req.headers().get_all(CHAOS_HEADER).iter().peekable();
        if lines.peek().is_none() {
            return Ok(None);
        }
        let mut fault = Fault::NONE;
        for line in lines {
            if !parse_into(&mut fault, line.as_bytes()) {
                return Err(CHAOS_HEADER);
            }
        }
        Ok(Some(fault))
    }
}

/// The longest delay the header may ask for.
const MAX_HEADER_DELAY: Duration = Duration::from_secs(60);

/// Parses an `x-palisade-chaos` header value.
///
/// A comma-separated list of `none`, `error`, `panic` and `delay=<n><unit>`
/// (unit `ms` or `s`, at most 9 digits, at most 60 s), case-insensitive,
/// spaces and tabs allowed around items. Anything else makes the whole
/// value malformed: `None`. [`HttpFaults`] reads several lines of the
/// header as one list, and refuses them all if one is malformed.
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::{parse_header, Fault};
///
/// assert_eq!(parse_header(b"error"), Some(Fault::error()));
/// assert_eq!(
///     parse_header(b"delay=250ms, panic"),
///     Some(Fault { panic: true, delay: Duration::from_millis(250), error: false })
/// );
/// assert_eq!(parse_header(b"none"), Some(Fault::NONE));
/// assert_eq!(parse_header(b"explode"), None);
/// assert_eq!(parse_header(b"delay=99999s"), None);
/// ```
pub fn parse_header(value: &[u8]) -> Option<Fault> {
    let mut fault = Fault::NONE;
    parse_into(&mut fault, value).then_some(fault)
}

/// Adds the items of one header line to `fault`: `false` when the line is
/// malformed (then `fault` may hold part of it).
fn parse_into(fault: &mut Fault, value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    for item in text.split(',') {
        // HTTP's optional whitespace only: any other space is a malformed
        // item, not padding.
        let item = item.trim_matches([' ', '\t']);
        if item.eq_ignore_ascii_case("none") {
        } else if item.eq_ignore_ascii_case("error") {
            fault.error = true;
        } else if item.eq_ignore_ascii_case("panic") {
            fault.panic = true;
        } else if let Some(delay) = strip_prefix_ignore_case(item, "delay=").and_then(parse_delay) {
            fault.delay = delay;
        } else {
            return false;
        }
    }
    true
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn parse_delay(s: &str) -> Option<Duration> {
    let digits = s.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 || digits > 9 {
        return None;
    }
    let n: u64 = s[..digits].parse().ok()?;
    let delay = match &s[digits..] {
        unit if unit.eq_ignore_ascii_case("ms") => Duration::from_millis(n),
        unit if unit.eq_ignore_ascii_case("s") => Duration::from_secs(n),
        _ => return None,
    };
    (delay <= MAX_HEADER_DELAY).then_some(delay)
}

/// The seeded generator: request `n` of a layer seeded with `seed` always
/// draws the same numbers, whichever thread serves it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Draws {
    state: u64,
}

/// splitmix64's step.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// splitmix64's finalizer: a bijection that scatters nearby inputs.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Draws {
    /// Request `n`'s stream starts at a scattered point: streams that
    /// started `n · GOLDEN` apart would each be the next one shifted by
    /// one draw (for some seeds exactly), so one request's latency draw
    /// would be the next request's fault draw.
    pub(crate) fn new(seed: u64, n: u64) -> Self {
        Self {
            state: mix(seed ^ n.wrapping_mul(GOLDEN)),
        }
    }

    /// splitmix64.
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix(self.state)
    }

    /// A uniform draw in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        // 53 random bits make every f64 in [0, 1) with a multiple of 2^-53.
        #[allow(clippy::cast_precision_loss)]
        let mantissa = (self.next_u64() >> 11) as f64;
        mantissa * (1.0 / 9_007_199_254_740_992.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_grammar() {
        assert_eq!(parse_header(b"ERROR"), Some(Fault::error()));
        assert_eq!(parse_header(b" panic "), Some(Fault::panic()));
        assert_eq!(
            parse_header(b"delay=2s"),
            Some(Fault::delay(Duration::from_secs(2)))
        );
        assert_eq!(
            parse_header(b"Delay=60S"),
            Some(Fault::delay(Duration::from_secs(60)))
        );
        for bad in [
            &b""[..],
            b",",
            b"error,",
            b"delay=",
            b"delay=5",
            b"delay=5m",
            b"delay=-5ms",
            b"delay=1234567890ms",
            b"delay=61s",
            b"delay=5ms5",
            b"\xff\xfe",
            b"error;panic",
            b"d\xc3\xa9lay=5ms",
            // Only spaces and tabs pad an item.
            "\u{a0}error".as_bytes(),
            "error\u{3000}".as_bytes(),
            "\u{85}delay=5ms".as_bytes(),
        ] {
            assert_eq!(
                parse_header(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn consecutive_requests_draw_independently() {
        for seed in [0, 1 << 63, 42] {
            // No request's stream is its neighbour's shifted by a draw.
            let shifted = (0..10_000_u64)
                .filter(|&n| {
                    let (mut this, mut next) = (Draws::new(seed, n), Draws::new(seed, n + 1));
                    this.next_u64();
                    this.next_u64() == next.next_u64()
                })
                .count();
            assert_eq!(shifted, 0, "seed {seed}");
            // Two 10% events on neighbours meet about 1% of the time.
            let both = (0..100_000_u64)
                .filter(|&n| {
                    let mut this = Draws::new(seed, n);
                    this.unit();
                    this.unit() < 0.1 && Draws::new(seed, n + 1).unit() < 0.1
                })
                .count();
            assert!((700..1_300).contains(&both), "seed {seed}: {both}");
        }
    }

    #[test]
    fn draws_are_deterministic_and_spread() {
        let a: Vec<f64> = (0..5).map(|n| Draws::new(42, n).unit()).collect();
        let b: Vec<f64> = (0..5).map(|n| Draws::new(42, n).unit()).collect();
        assert_eq!(a, b);
        let c: Vec<f64> = (0..5).map(|n| Draws::new(43, n).unit()).collect();
        assert_ne!(a, c);
        let mut buckets = [0_u32; 10];
        for n in 0..100_000 {
            let u = Draws::new(1, n).unit();
            assert!((0.0..1.0).contains(&u));
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let bucket = (u * 10.0) as usize;
            buckets[bucket] += 1;
        }
        for count in buckets {
            assert!((9_000..11_000).contains(&count), "{buckets:?}");
        }
    }
}

//! The `grpc-timeout` header: parsing what a client sent, and writing the
//! value to send downstream.
//!
//! The gRPC protocol spells a timeout as one to eight ASCII digits followed
//! by one unit letter: `H` (hours), `M` (minutes), `S` (seconds),
//! `m` (milliseconds), `u` (microseconds) or `n` (nanoseconds). Anything
//! else is malformed. [`GrpcTimeout::parse`] is a pure function that never
//! panics; the timeout layer ignores a malformed value and reports it.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_timeout::grpc_timeout::{GrpcTimeout, MalformedGrpcTimeout};
//!
//! let parsed = GrpcTimeout::parse(b"250m").unwrap();
//! assert_eq!(parsed.duration(), Duration::from_millis(250));
//!
//! assert_eq!(GrpcTimeout::parse(b"123456789S"), Err(MalformedGrpcTimeout::TooManyDigits));
//! assert_eq!(GrpcTimeout::parse(b"-1S"), Err(MalformedGrpcTimeout::InvalidDigit));
//!
//! // Passing a remaining budget on: the finest unit that fits, rounded down.
//! let value = GrpcTimeout::from_duration(Duration::from_millis(1500));
//! assert_eq!(value.to_string(), "1500000u");
//! ```

use std::error::Error;
use std::fmt;
use std::time::Duration;

use http::HeaderValue;

/// The name of the header, lower case.
pub const GRPC_TIMEOUT: &str = "grpc-timeout";

/// The largest value a `grpc-timeout` can carry: eight digits.
const MAX_VALUE: u32 = 99_999_999;
const MAX_DIGITS: usize = 8;

/// The unit of a `grpc-timeout` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GrpcTimeoutUnit {
    /// `n`
    Nanoseconds,
    /// `u`
    Microseconds,
    /// `m`
    Milliseconds,
    /// `S`
    Seconds,
    /// `M`
    Minutes,
    /// `H`
    Hours,
}

impl GrpcTimeoutUnit {
    /// Every unit, finest first.
    pub const ALL: [GrpcTimeoutUnit; 6] = [
        GrpcTimeoutUnit::Nanoseconds,
        GrpcTimeoutUnit::Microseconds,
        GrpcTimeoutUnit::Milliseconds,
        GrpcTimeoutUnit::Seconds,
        GrpcTimeoutUnit::Minutes,
        GrpcTimeoutUnit::Hours,
    ];

    /// The unit for its letter.
    pub const fn from_letter(letter: u8) -> Option<Self> {
        match letter {
            b'n' => Some(GrpcTimeoutUnit::Nanoseconds),
            b'u' => Some(GrpcTimeoutUnit::Microseconds),
            b'm' => Some(GrpcTimeoutUnit::Milliseconds),
            b'S' => Some(GrpcTimeoutUnit::Seconds),
            b'M' => Some(GrpcTimeoutUnit::Minutes),
            b'H' => Some(GrpcTimeoutUnit::Hours),
            _ => None,
        }
    }

    /// The unit's letter.
    pub const fn letter(self) -> char {
        match self {
            GrpcTimeoutUnit::Nanoseconds => 'n',
            GrpcTimeoutUnit::Microseconds => 'u',
            GrpcTimeoutUnit::Milliseconds => 'm',
            GrpcTimeoutUnit::Seconds => 'S',
            GrpcTimeoutUnit::Minutes => 'M',
            GrpcTimeoutUnit::Hours => 'H',
        }
    }

    /// How many nanoseconds one unit is.
    pub const fn nanos(self) -> u64 {
        match self {
            GrpcTimeoutUnit::Nanoseconds => 1,
            GrpcTimeoutUnit::Microseconds => 1_000,
            GrpcTimeoutUnit::Milliseconds => 1_000_000,
            GrpcTimeoutUnit::Seconds => 1_000_000_000,
            GrpcTimeoutUnit::Minutes => 60_000_000_000,
            GrpcTimeoutUnit::Hours => 3_600_000_000_000,
        }
    }
}

/// Why a `grpc-timeout` value was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MalformedGrpcTimeout {
    /// The value was empty.
    Empty,
    /// The value ended with a digit: no unit.
    MissingUnit,
    /// The last character is not one of `H M S m u n`.
    UnknownUnit,
    /// A unit with no digits before it.
    MissingDigits,
    /// More than eight digits.
    TooManyDigits,
    /// Something other than an ASCII digit before the unit (a sign, a
    /// space, a dot, a non-ASCII byte).
    InvalidDigit,
}

impl MalformedGrpcTimeout {
    /// A short lower-case description, for logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            MalformedGrpcTimeout::Empty => "empty value",
            MalformedGrpcTimeout::MissingUnit => "no unit",
            MalformedGrpcTimeout::UnknownUnit => "unknown unit",
            MalformedGrpcTimeout::MissingDigits => "no digits",
            MalformedGrpcTimeout::TooManyDigits => "more than 8 digits",
            MalformedGrpcTimeout::InvalidDigit => "not an ascii digit",
        }
    }
}

impl fmt::Display for MalformedGrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed grpc-timeout: {}", self.as_str())
    }
}

impl Error for MalformedGrpcTimeout {}

/// A well-formed `grpc-timeout` value: at most eight digits and a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GrpcTimeout {
    value: u32,
    unit: GrpcTimeoutUnit,
}

impl GrpcTimeout {
    /// A value from its parts, or `None` when `value` has more than eight
    /// digits.
    pub const fn new(value: u32, unit: GrpcTimeoutUnit) -> Option<Self> {
        if value <= MAX_VALUE {
            Some(Self { value, unit })
        } else {
            None
        }
    }

    /// Parses a header value. Never panics; any input that is not one to
    /// eight ASCII digits followed by a unit letter is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, MalformedGrpcTimeout> {
        let Some((&letter, digits)) = bytes.split_last() else {
            return Err(MalformedGrpcTimeout::Empty);
        };
        if letter.is_ascii_digit() {
            return Err(MalformedGrpcTimeout::MissingUnit);
        }
        let unit = GrpcTimeoutUnit::from_letter(letter).ok_or(MalformedGrpcTimeout::UnknownUnit)?;
        if digits.is_empty() {
            return Err(MalformedGrpcTimeout::MissingDigits);
        }
        if digits.len() > MAX_DIGITS {
            return Err(MalformedGrpcTimeout::TooManyDigits);
        }
        let mut value: u32 = 0;
        for &b in digits {
            if !b.is_ascii_digit() {
                return Err(MalformedGrpcTimeout::InvalidDigit);
            }
            // At most eight digits: cannot overflow a u32.
            value = value * 10 + u32::from(b - b'0');
        }
        Ok(Self { value, unit })
    }

    /// The largest value not longer than `duration`, in the finest unit
    /// that fits in eight digits. Rounding down means a caller passing its
    /// remaining budget on never promises more time than it has. Durations
    /// beyond `99999999H` (about 11,400 years) become `99999999H`.
    pub fn from_duration(duration: Duration) -> Self {
        let nanos = duration.as_nanos();
        for unit in GrpcTimeoutUnit::ALL {
            let count = nanos / u128::from(unit.nanos());
            if count <= u128::from(MAX_VALUE) {
                // Fits in eight digits, so it fits in a u32.
                let value = u32::try_from(count).unwrap_or(MAX_VALUE);
                return Self { value, unit };
            }
        }
        Self {
            value: MAX_VALUE,
            unit: GrpcTimeoutUnit::Hours,
        }
    }

    /// The number before the unit.
    pub const fn value(self) -> u32 {
        self.value
    }

    /// The unit.
    pub const fn unit(self) -> GrpcTimeoutUnit {
        self.unit
    }

    /// The value as a duration (exact: the largest value is about 11,400
    /// years).
    pub const fn duration(self) -> Duration {
        // In nanoseconds, 99999999H would overflow a u64: count whole
        // seconds for the coarse units.
        let value = self.value as u64;
        match self.unit {
            GrpcTimeoutUnit::Nanoseconds => Duration::from_nanos(value),
            GrpcTimeoutUnit::Microseconds => Duration::from_micros(value),
            GrpcTimeoutUnit::Milliseconds => Duration::from_millis(value),
            GrpcTimeoutUnit::Seconds => Duration::from_secs(value),
            GrpcTimeoutUnit::Minutes => Duration::from_secs(value * 60),
            GrpcTimeoutUnit::Hours => Duration::from_secs(value * 3600),
        }
    }

    /// The value as a header value, ready to send downstream.
    pub fn to_header_value(self) -> HeaderValue {
        let mut buf = [0_u8; MAX_DIGITS + 1];
        let len = self.write(&mut buf);
        // Digits and an ASCII letter are always a valid header value.
        HeaderValue::from_bytes(&buf[..len]).unwrap_or_else(|_| HeaderValue::from_static("0n"))
    }

    fn write(self, buf: &mut [u8; MAX_DIGITS + 1]) -> usize {
        let mut digits = [0_u8; MAX_DIGITS];
        let mut n = self.value;
        let mut len = 0;
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            buf[i] = digits[len - 1 - i];
        }
        buf[len] = self.unit.letter() as u8;
        len + 1
    }
}

impl fmt::Display for GrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, self.unit.letter())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_unit_parses() {
        let cases: [(&[u8], Duration); 6] = [
            (b"7n", Duration::from_nanos(7)),
            (b"7u", Duration::from_micros(7)),
            (b"7m", Duration::from_millis(7)),
            (b"7S", Duration::from_secs(7)),
            (b"7M", Duration::from_secs(7 * 60)),
            (b"7H", Duration::from_secs(7 * 3600)),
        ];
        for (input, expected) in cases {
            assert_eq!(GrpcTimeout::parse(input).unwrap().duration(), expected);
        }
    }

    #[test]
    fn one_to_eight_digits_and_leading_zeros() {
        assert_eq!(
            GrpcTimeout::parse(b"0S").unwrap().duration(),
            Duration::ZERO
        );
        assert_eq!(
            GrpcTimeout::parse(b"00000001m").unwrap().duration(),
            Duration::from_millis(1)
        );
        let max = GrpcTimeout::parse(b"99999999H").unwrap();
        assert_eq!(max.duration(), Duration::from_secs(99_999_999 * 3600));
    }

    #[test]
    fn malformed_values_are_refused_with_a_reason() {
        use MalformedGrpcTimeout::*;
        let cases: [(&[u8], MalformedGrpcTimeout); 16] = [
            (b"", Empty),
            (b"100", MissingUnit),
            (b"9", MissingUnit),
            (b"S", MissingDigits),
            (b"10x", UnknownUnit),
            (b"10s", UnknownUnit),
            (b"10h", UnknownUnit),
            (b"123456789S", TooManyDigits),
            (b"99999999999999999999999H", TooManyDigits),
            (b"-1S", InvalidDigit),
            (b"+1S", InvalidDigit),
            (b" 1S", InvalidDigit),
            (b"1.5S", InvalidDigit),
            ("１S".as_bytes(), InvalidDigit),
            ("1é".as_bytes(), UnknownUnit),
            (b"1 S", InvalidDigit),
        ];
        for (input, expected) in cases {
            assert_eq!(
                GrpcTimeout::parse(input),
                Err(expected),
                "input {:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn from_duration_picks_the_finest_unit_that_fits() {
        let cases = [
            (Duration::ZERO, "0n"),
            (Duration::from_nanos(99_999_999), "99999999n"),
            (Duration::from_nanos(100_000_000), "100000u"),
            (Duration::from_secs(30), "30000000u"),
            (Duration::from_secs(100), "100000m"),
            (Duration::from_secs(100_000), "100000S"),
            (Duration::from_secs(100_000_000), "1666666M"),
            (Duration::from_secs(99_999_999 * 60 * 60), "99999999H"),
            (Duration::MAX, "99999999H"),
        ];
        for (duration, expected) in cases {
            let value = GrpcTimeout::from_duration(duration);
            assert_eq!(value.to_string(), expected);
            assert_eq!(value.to_header_value(), expected);
        }
    }

    #[test]
    fn new_refuses_nine_digits() {
        assert!(GrpcTimeout::new(99_999_999, GrpcTimeoutUnit::Seconds).is_some());
        assert!(GrpcTimeout::new(100_000_000, GrpcTimeoutUnit::Seconds).is_none());
    }

    fn unit() -> impl Strategy<Value = GrpcTimeoutUnit> {
        prop::sample::select(GrpcTimeoutUnit::ALL.to_vec())
    }

    proptest! {
        #[test]
        fn no_input_panics(bytes in prop::collection::vec(any::<u8>(), 0..24)) {
            let _ = GrpcTimeout::parse(&bytes);
        }

        #[test]
        fn near_valid_inputs_never_panic(s in "[0-9+\\- .a-zA-Z]{0,12}[HMSmun0-9xs]?") {
            if let Ok(parsed) = GrpcTimeout::parse(s.as_bytes()) {
                // Whatever was accepted is digits and a unit.
                prop_assert!(s.len() >= 2 && s.len() <= 9);
                prop_assert_eq!(parsed.value() as u64, s[..s.len() - 1].parse::<u64>().unwrap());
            }
        }

        #[test]
        fn valid_values_round_trip(value in 0_u32..=MAX_VALUE, unit in unit(), zeros in 0_usize..8) {
            let text = format!("{value}{}", unit.letter());
            let parsed = GrpcTimeout::parse(text.as_bytes()).unwrap();
            prop_assert_eq!(parsed, GrpcTimeout::new(value, unit).unwrap());
            prop_assert_eq!(parsed.to_string(), text.clone());
            prop_assert_eq!(parsed.to_header_value(), text.as_str());
            prop_assert_eq!(parsed.duration().as_nanos(), u128::from(value) * u128::from(unit.nanos()));
            // Leading zeros are accepted up to eight digits in all.
            let padded = format!("{:0>width$}{}", value, unit.letter(), width = (value.to_string().len() + zeros).min(8));
            prop_assert_eq!(GrpcTimeout::parse(padded.as_bytes()).unwrap().duration(), parsed.duration());
        }

        #[test]
        fn from_duration_rounds_down_by_less_than_one_unit(nanos in any::<u64>()) {
            let duration = Duration::from_nanos(nanos);
            let value = GrpcTimeout::from_duration(duration);
            prop_assert!(value.duration() <= duration);
            prop_assert!(duration - value.duration() < Duration::from_nanos(value.unit().nanos()));
            // What we write, we read back identically.
            let reparsed = GrpcTimeout::parse(value.to_string().as_bytes()).unwrap();
            prop_assert_eq!(reparsed, value);
        }
    }
}

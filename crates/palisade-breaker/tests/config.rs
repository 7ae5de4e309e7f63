//! Every invalid setting is a `ConfigError` naming the field and the range.

use std::time::Duration;

use palisade_breaker::{CircuitBreakerBuilder, CircuitBreakerLayer};

fn field(b: CircuitBreakerBuilder) -> (&'static str, String) {
    let err = b.build().unwrap_err();
    (err.field(), err.to_string())
}

#[test]
fn invalid_settings_name_their_field_and_range() {
    let b = || CircuitBreakerLayer::builder().name("payments");
    let cases: Vec<(CircuitBreakerBuilder, &str, &str)> = vec![
        (
            b().name(""),
            "name",
            "1 to 64 characters without control characters",
        ),
        (b().count_window(0), "count_window", "1 <= x <= 16384"),
        (b().count_window(20_000), "count_window", "1 <= x <= 16384"),
        (
            b().count_window(10).minimum_calls(11),
            "minimum_calls",
            "1 <= x <= 10",
        ),
        (b().minimum_calls(0), "minimum_calls", "1 <= x <= 100"),
        (
            b().time_window(Duration::from_secs(10), 2)
                .minimum_calls(131_071),
            "minimum_calls",
            "1 <= x <= 131070",
        ),
        (
            b().time_window(Duration::from_secs(10), 0),
            "time_window.buckets",
            "1 <= x <= 128",
        ),
        (
            b().time_window(Duration::from_secs(10), 200),
            "time_window.buckets",
            "1 <= x <= 128",
        ),
        (
            b().time_window(Duration::from_millis(5), 10),
            "time_window.length",
            "x / buckets >= 1ms",
        ),
        (
            b().failure_rate_threshold(0.0),
            "failure_rate_threshold",
            "0.0 < x <= 1.0",
        ),
        (
            b().failure_rate_threshold(f64::NAN),
            "failure_rate_threshold",
            "0.0 < x <= 1.0",
        ),
        (
            b().slow_call_duration(Duration::ZERO),
            "slow_call_duration",
            "x > 0s",
        ),
        (
            b().slow_call_rate_threshold(1.5),
            "slow_call_rate_threshold",
            "0.0 < x <= 1.0",
        ),
        (b().open_wait(Duration::ZERO), "open_wait", "x > 0s"),
        (
            b().open_wait_backoff(0.5, Duration::from_secs(60)),
            "open_wait_backoff.multiplier",
            "1.0 <= x <= 100.0",
        ),
        (
            b().open_wait_backoff(2.0, Duration::from_secs(1)),
            "open_wait_backoff.max_wait",
            "x >= 30s",
        ),
        (b().jitter(1.0), "jitter", "0.0 <= x < 1.0"),
        (b().jitter(-0.1), "jitter", "0.0 <= x < 1.0"),
        (
            b().half_open_probes(0),
            "half_open_probes",
            "1 <= x <= 1000",
        ),
        (
            b().half_open_probes(1001),
            "half_open_probes",
            "1 <= x <= 1000",
        ),
        (
            b().half_open_max_wait(Duration::ZERO),
            "half_open_max_wait",
            "x > 0s",
        ),
    ];
    for (builder, name, expected) in cases {
        let (got, message) = field(builder);
        assert_eq!(got, name, "{message}");
        if name != "name" {
            assert!(
                message.starts_with(r#"circuit breaker "payments": "#),
                "{message}"
            );
        }
        assert!(message.ends_with(expected), "{message}");
    }
    let err = CircuitBreakerLayer::builder()
        .build_keyed(0, |k: &u8| *k)
        .unwrap_err();
    assert_eq!(err.field(), "max_keys");
}

#[test]
fn the_defaults_build() {
    let layer = CircuitBreakerLayer::builder().build().unwrap();
    assert_eq!(layer.handle().policy(), "default");
    assert!(format!("{layer:?}").contains("CircuitBreakerLayer"));
}

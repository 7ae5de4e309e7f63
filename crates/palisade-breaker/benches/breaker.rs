//! Benches of the circuit breaker.
fn main() {}

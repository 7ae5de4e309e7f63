//! What the demo breaks and how palisade protects it.

use std::time::Duration;

/// Faults injected into one of the demo's own routes, in front of its
/// handler.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RouteFaults {
    /// Share of requests answered with an injected error (`0.0..=1.0`).
    pub error_rate: f64,
    /// Share of requests whose handler panics (`0.0..=1.0`).
    pub panic_rate: f64,
    /// Share of requests delayed by [`spike`](Self::spike) (`0.0..=1.0`).
    pub spike_rate: f64,
    /// How long a latency spike lasts.
    pub spike: Duration,
    /// The shortest time the handler works on an ordinary request.
    pub work_min: Duration,
    /// The longest time the handler works on an ordinary request.
    pub work_max: Duration,
}

impl Default for RouteFaults {
    /// 5 % errors, 2 % panics, 3 % latency spikes of 1.5 s, 1 to 5 ms of
    /// work otherwise.
    fn default() -> Self {
        Self {
            error_rate: 0.05,
            panic_rate: 0.02,
            spike_rate: 0.03,
            spike: Duration::from_millis(1500),
            work_min: Duration::from_millis(1),
            work_max: Duration::from_millis(5),
        }
    }
}

/// The slow, flaky dependency that `/api/recommendations` calls: another
/// HTTP server in the same process.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DependencyFaults {
    /// The shortest time an ordinary call takes.
    pub latency_min: Duration,
    /// The longest time an ordinary call takes.
    pub latency_max: Duration,
    /// Share of calls that are slow (`0.0..=1.0`).
    pub slow_rate: f64,
    /// How much longer a slow call takes.
    pub slow: Duration,
    /// Share of calls that fail with a `500` (`0.0..=1.0`).
    pub error_rate: f64,
}

impl Default for DependencyFaults {
    /// 20 to 80 ms per call; 30 % of calls take 2 s more; 25 % fail.
    fn default() -> Self {
        Self {
            latency_min: Duration::from_millis(20),
            latency_max: Duration::from_millis(80),
            slow_rate: 0.30,
            slow: Duration::from_secs(2),
            error_rate: 0.25,
        }
    }
}

/// The settings of the palisade policies that protect the demo.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Protection {
    /// The deadline of a request to `/api/orders` and `/api/catalog`.
    pub server_timeout: Duration,
    /// The deadline of one call to the dependency.
    pub dependency_timeout: Duration,
    /// Requests per second `/api/orders` admits on average, in bursts of up
    /// to as many.
    pub orders_per_second: u32,
    /// Requests per second `/api/catalog` admits on average, in bursts of up
    /// to as many.
    pub catalog_per_second: u32,
    /// Requests each server-side policy runs at once.
    pub max_concurrent: usize,
    /// Calls to the dependency in flight at once.
    pub dependency_max_concurrent: usize,
    /// Outcomes a breaker judges its failure rate over.
    pub breaker_window: usize,
    /// Calls a breaker needs in its window before it judges.
    pub breaker_minimum_calls: u64,
    /// The failure rate at which a breaker opens.
    pub breaker_failure_rate: f64,
    /// How long an open breaker waits before it lets probes through.
    pub breaker_open_wait: Duration,
}

impl Default for Protection {
    fn default() -> Self {
        Self {
            server_timeout: Duration::from_millis(250),
            dependency_timeout: Duration::from_millis(300),
            orders_per_second: 400,
            catalog_per_second: 250,
            max_concurrent: 64,
            dependency_max_concurrent: 16,
            breaker_window: 50,
            breaker_minimum_calls: 20,
            breaker_failure_rate: 0.5,
            breaker_open_wait: Duration::from_secs(3),
        }
    }
}

/// Everything the demo server needs: the faults and the protection.
///
/// The defaults are what `cargo run --release --example demo` uses.
#[derive(Clone, Copy, Debug, PartialEq, Default)]
pub struct DemoConfig {
    /// Seed of every fault generator. A protected route and its bare twin
    /// get the same seed and rates, not the same faults request by request:
    /// a request palisade rejects never reaches the chaos layer and takes
    /// no number, and one dependency generator serves both sides in turn.
    pub seed: u64,
    /// Faults of `/api/orders`.
    pub orders: RouteFaults,
    /// Faults of `/api/catalog`.
    pub catalog: RouteFaults,
    /// The dependency behind `/api/recommendations`.
    pub dependency: DependencyFaults,
    /// The policies in front of the protected routes.
    pub protection: Protection,
}

/// The loopback load: how long, how many workers, how fast, how patient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LoadPlan {
    /// How long each phase sends requests.
    pub duration: Duration,
    /// Concurrent workers; each sends one request at a time.
    pub workers: usize,
    /// Requests per second the workers aim for together.
    pub rate: u32,
    /// How long a worker waits for an answer before it gives up, as a user
    /// would.
    pub patience: Duration,
}

impl Default for LoadPlan {
    /// 10 s, 32 workers, 300 requests per second, 1 s of patience.
    fn default() -> Self {
        Self {
            duration: Duration::from_secs(10),
            workers: 32,
            rate: 300,
            patience: Duration::from_secs(1),
        }
    }
}

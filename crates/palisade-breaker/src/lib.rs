//! A circuit breaker for tower services: exact sliding windows, slow-call
//! detection, exactly-N half-open probes, manual control and keyed
//! breakers. A breaker is lock-free and allocation-free while closed; a
//! keyed one finds its key's breaker under a read lock.
//!
//! A circuit breaker watches the outcomes of the calls it lets through.
//! When too many of the recent ones failed, or were too slow, it *opens*:
//! it fails every call at once with [`CircuitOpen`](error::CircuitOpen)
//! instead of piling more work on a dependency that is already failing.
//! After a wait it turns *half-open* and lets a fixed number of probe calls
//! through; if they fare well it *closes* again, otherwise it re-opens.
//!
//! ```text
//!            failure or slow rate >= threshold
//!   Closed ─────────────────────────────────────▶ Open ◀──────────┐
//!     ▲                                            │               │ probes' rates >= threshold,
//!     │ probes' rates < thresholds                 │ open wait     │ or a probe still running
//!     │                                            ▼ elapsed       │ at the half-open max wait
//!     └──────────────────────────────────────── HalfOpen ─────────┘
//! ```
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use palisade_breaker::CircuitBreakerLayer;
//! use palisade_breaker::error::CircuitOpen;
//! use palisade_core::CircuitState;
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let layer = CircuitBreakerLayer::builder()
//!     .name("inventory")
//!     .count_window(10)
//!     .minimum_calls(4)
//!     .failure_rate_threshold(0.5)
//!     .open_wait(Duration::from_secs(5))
//!     .build()
//!     .unwrap();
//! let svc = layer.layer(service_fn(|fail: bool| async move {
//!     if fail { Err("inventory unavailable") } else { Ok("in stock") }
//! }));
//!
//! svc.clone().oneshot(false).await.unwrap();
//! svc.clone().oneshot(false).await.unwrap();
//! let _ = svc.clone().oneshot(true).await;
//! assert_eq!(layer.handle().state(), CircuitState::Closed); // 3 calls < minimum 4
//! let _ = svc.clone().oneshot(true).await; // 2 failures of 4: rate 0.5
//! assert_eq!(layer.handle().state(), CircuitState::Open);
//!
//! let err = svc.clone().oneshot(false).await.unwrap_err();
//! let open = err.downcast_ref::<CircuitOpen>().unwrap();
//! assert_eq!(open.retry_after(), Some(Duration::from_secs(5)));
//! # }
//! ```
//!
//! # Windows and thresholds
//!
//! The closed state is judged over a sliding window:
//! [`count_window`](CircuitBreakerBuilder::count_window) (the last N calls,
//! each new outcome pushing the oldest out) or
//! [`time_window`](CircuitBreakerBuilder::time_window) (the last N seconds,
//! in buckets). No rate is judged before the window holds
//! [`minimum_calls`](CircuitBreakerBuilder::minimum_calls). The breaker
//! opens when the failure rate reaches
//! [`failure_rate_threshold`](CircuitBreakerBuilder::failure_rate_threshold),
//! or, with [`slow_call_duration`](CircuitBreakerBuilder::slow_call_duration)
//! set, when the share of calls at least that slow (successes included)
//! reaches
//! [`slow_call_rate_threshold`](CircuitBreakerBuilder::slow_call_rate_threshold).
//!
//! Window counts are exact under concurrency: writers never lose an
//! outcome, and a call admitted before a transition never counts in the
//! window or the probes of the state that transition started. A count
//! window's running total can be one outcome ahead for a moment (two calls
//! a whole window apart writing the same slot); the breaker trips only
//! when the recorded outcomes themselves reach the threshold.
//!
//! # Open and half-open
//!
//! Open, the breaker rejects every call with `retry_after` set to the time
//! left. The wait ([`open_wait`](CircuitBreakerBuilder::open_wait)) can grow
//! over consecutive openings
//! ([`open_wait_backoff`](CircuitBreakerBuilder::open_wait_backoff)), be cut
//! by a seeded random share ([`jitter`](CircuitBreakerBuilder::jitter)),
//! and starts over after the probes close the breaker.
//!
//! Half-open, exactly [`half_open_probes`](CircuitBreakerBuilder::half_open_probes)
//! calls are admitted, every other call is rejected (with
//! [`RejectReason::HalfOpenFull`](palisade_core::RejectReason::HalfOpenFull)),
//! and the breaker decides once all of them have completed: closed if
//! their failure and slow rates are under the thresholds, open again
//! otherwise. A probe that is cancelled, or whose outcome is ignored, gives
//! its slot back to the next call.
//!
//! [`half_open_max_wait`](CircuitBreakerBuilder::half_open_max_wait) bounds
//! how long the breaker waits for its probes, counted from the latest probe
//! the period admits (from the period's start while none has been), so a
//! probe admitted long after a scrape moved the breaker to half-open, or
//! after an earlier probe, still gets the whole wait; a period whose probes
//! all hang ends one wait after the latest of them started. Once it has run out, the first call to arrive (or a
//! [`refresh`](CircuitBreakerHandle::refresh)) ends the half-open period
//! and decides on what it saw:
//!
//! - **A probe is still running** (it hangs, or is slower than the max
//!   wait): the breaker opens again (`HalfOpenTimeout`), so it is never
//!   stuck half-open. The call is rejected, the opening counts toward
//!   [`open_wait_backoff`](CircuitBreakerBuilder::open_wait_backoff), and
//!   the late probe's outcome is ignored.
//! - **Every probe admitted has finished, but fewer than
//!   `half_open_probes`** (traffic was sparse): the finished probes are
//!   judged as a full set would be. Under the thresholds the breaker closes
//!   (`ProbesSucceeded`) and the arriving call goes through as a closed
//!   call; otherwise it opens again (`FailureRate` or `SlowRate`). Waiting
//!   for more probes would keep a rarely called dependency rejected for
//!   good, and a probe that failed or was slow has already spoken.
//! - **No probe was admitted** (no traffic, or every probe gave its slot
//!   back): there is nothing to judge, so nothing changes state and no
//!   opening is counted. A fresh half-open period starts (no event: the
//!   state stays half-open) and the arriving call is its first probe.
//!
//! So the breaker re-opens on the max wait only for a probe that failed,
//! was slow or is still running, never because calls were few. With the
//! defaults (5 probes, 60 s), a healthy dependency called every 20 s keeps
//! the max wait from running out (each probe starts it over) and closes
//! the breaker with its fifth probe; one called every 100 s closes it on
//! the call after its first probe, which finds the max wait over. The
//! first call after a long quiet spell (even one in which a metrics
//! scrape's `refresh` moved the breaker to half-open) is admitted as a
//! probe.
//!
//! # Outcomes
//!
//! A [`Classify`](palisade_core::Classify) implementation decides what a
//! failure is. The default, [`DefaultClassifier`], counts every error as a
//! failure except palisade's own rate-limit, bulkhead and missing-key
//! rejections, which only say the caller is saturated, and timeouts on a
//! deadline the client chose (a `grpc-timeout` shorter than the policy's),
//! which only say the client was in a hurry. Timeouts on the policy's own
//! deadline and caught panics from layers below count as failures. HTTP
//! (5xx) and gRPC (status codes, read from trailers at the end of the body)
//! classifiers come from [`palisade_core::classify`]; a classifier given
//! with [`classifier`](CircuitBreakerBuilder::classifier) ignores the same
//! caller-side rejections. A cancelled call is ignored unless
//! [`cancelled_as_failure`](CircuitBreakerBuilder::cancelled_as_failure).
//! A panic that no layer below caught (out of the inner service's `call`
//! or its future) is a failure, not a cancellation.
//!
//! # Control, events and cost
//!
//! [`CircuitBreakerHandle`] forces the breaker open or closed, disables it,
//! switches it to shadow (metrics-only) mode, resets it, and reads its
//! state, rates and counts. Every transition is reported as
//! [`Event::StateChanged`](palisade_core::Event::StateChanged), in order;
//! every refusal as `Rejected`; every admission and completion; and the
//! window's rates as `BreakerRates` when they change (and as zeros when a
//! transition empties the window, so no gauge keeps a stale rate: a call
//! whose rates could have crossed such a transition on their way to the
//! sink sends the current window's rates again after it). One
//! exception: a [disabled](CircuitBreakerHandle::disable) breaker is a
//! plain pass-through and reports neither admissions nor completions (only
//! the `StateChanged` into and out of `Disabled`).
//!
//! Transitions are reported while the breaker holds its transition lock,
//! which is what keeps them in order. So a
//! [`MetricsSink`](palisade_core::MetricsSink) must not, from inside
//! `record`, call the handle methods that take that lock on the breaker
//! that is reporting (`refresh`, `consecutive_openings`, the mode changes,
//! `reset`) nor send calls through that breaker: the thread would deadlock.
//! The reading methods `state`, `shadow_state`, `counts`, the rates,
//! `probes`, `retry_after` and `policy` are plain loads and safe there;
//! hand anything else off (a channel, a task). See
//! [`CircuitBreakerHandle`].
//!
//! While closed, admitting a call is one atomic load. Recording it in a
//! count window reads the window's aggregate word and, unless the outcome
//! is a success into a window full of successes, takes a slot (one
//! increment), writes it (one compare-and-swap, skipped if the slot holds
//! that outcome already) and updates the aggregate (one more, skipped if
//! the counts do not change); in the steady state of a healthy service it
//! writes nothing.
//! No lock, no allocation either way.
//! The clock is read only when slow calls, latency or a time window need
//! it, at most once when the call starts and once when it ends; a timed
//! gRPC call whose status comes in its trailers is read at its answer
//! instead, and again at its end only for a time window's bucket.
//!
//! [`KeyedCircuitBreakerLayer`] keeps one breaker per key (per upstream
//! host, say), bounded in number, never evicting a breaker within its open
//! or half-open wait or one an operator holds in a mode.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod breaker;
mod builder;
pub mod error;
pub mod future;
mod handle;
pub mod keyed;
mod layer;
mod service;
mod sync;
mod window;

#[cfg(all(test, palisade_loom))]
mod loom_tests;

pub use self::builder::{CircuitBreakerBuilder, DefaultClassifier};
pub use self::future::OutcomeRecorder;
pub use self::handle::{CircuitBreakerHandle, ProbeCounts};
pub use self::keyed::{KeyedCircuitBreaker, KeyedCircuitBreakerHandle, KeyedCircuitBreakerLayer};
pub use self::layer::CircuitBreakerLayer;
pub use self::service::CircuitBreaker;
pub use self::window::Counts;

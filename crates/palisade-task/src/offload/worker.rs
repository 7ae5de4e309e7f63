//! The workers of an offload queue.

use std::future::poll_fn;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use palisade_core::{AttemptFailure, BoxError, DropReason, Event};
use tower_service::Service;

use super::Shared;
use crate::catch::{CatchUnwind, catch_call, contained};

/// Keeps an item counted as in flight; an item dropped before its fate was
/// recorded (the worker stopped at the drain deadline) is dropped for
/// shutdown.
struct InFlight<'a, Req> {
    shared: &'a Shared<Req>,
    recorded: bool,
}

impl<Req> Drop for InFlight<'_, Req> {
    fn drop(&mut self) {
        if !self.recorded {
            self.shared.drop_item(DropReason::Shutdown, None);
        }
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves the queue until it is closed and empty, or until the drain
/// deadline stops it.
///
/// `template` is a clone of the service the queue was built with: a worker
/// whose service's readiness failed, which a tower service does not
/// recover from, goes on with a fresh clone of it instead of using the
/// failed one again.
pub(super) async fn work<S, Req>(
    shared: Arc<Shared<Req>>,
    mut service: S,
    template: S,
    worker: Arc<str>,
    mut rng: fastrand::Rng,
) where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    // A queue built during an unwind could not install the hook that
    // records where its service's panics happen; its workers run outside
    // one.
    palisade_core::panic::install_hook();
    while let Some(item) = next_item(&shared).await {
        shared.in_flight.fetch_add(1, Ordering::AcqRel);
        let mut flight = InFlight {
            shared: &shared,
            recorded: false,
        };
        let outcome = tokio::select! {
            biased;
            () = shared.stop.cancelled() => return,
            outcome = deliver(&shared, &mut service, &worker, item, &mut rng) => outcome,
        };
        match outcome {
            Ok(attempts) => {
                shared.delivered.fetch_add(1, Ordering::Relaxed);
                // Counted first, reported contained: a sink that panics
                // must not end the worker (see `Shared::drop_item`).
                contained(|| {
                    shared.metrics.emit(&Event::OffloadDelivered {
                        queue: shared.name.as_str(),
                        attempts,
                    });
                });
            }
            Err(undelivered) => {
                let error = match undelivered {
                    Undelivered::RetriesExhausted(attempts, error) => {
                        shared.drop_item(
                            DropReason::RetriesExhausted,
                            Some(&format_args!(
                                "{attempts} attempts failed, last error: {error}"
                            )),
                        );
                        error
                    }
                    Undelivered::ServiceFailed(error) => {
                        shared.drop_item(
                            DropReason::ServiceFailed,
                            Some(&format_args!("the service's readiness failed: {error}")),
                        );
                        renew(&shared, &worker, &template, &mut service);
                        error
                    }
                };
                shared.discard(error);
            }
        }
        flight.recorded = true;
    }
}

/// Replaces a worker's `service`, whose readiness failed, with a fresh
/// clone of `template`. The clone is the user's code: one that panics
/// leaves the worker with the service it had, logged, and the next
/// readiness failure tries again; the queue is still served.
fn renew<S: Clone, Req>(shared: &Shared<Req>, worker: &str, template: &S, service: &mut S) {
    match catch_call(&shared.name, shared.capture, || template.clone()) {
        Ok(fresh) => shared.discard(std::mem::replace(service, fresh)),
        Err(panicked) => contained(|| {
            tracing::error!(
                queue = shared.name.as_str(),
                worker,
                panic.message = panicked.message(),
                "cloning the offload service panicked; the worker keeps the service it has"
            );
        }),
    }
}

/// The pushed item while it is delivered. The service gets clones; the
/// item itself is dropped when delivery ends however it ends, and a
/// destructor that panics there (a user's drop check) is logged instead of
/// ending the worker or losing the item's count.
struct Held<'a, Req> {
    shared: &'a Shared<Req>,
    item: Option<Req>,
}

impl<Req> Held<'_, Req> {
    fn get(&self) -> &Req {
        self.item
            .as_ref()
            .expect("an item is held until its delivery ends")
    }
}

impl<Req> Drop for Held<'_, Req> {
    fn drop(&mut self) {
        if let Some(item) = self.item.take() {
            self.shared.discard(item);
        }
    }
}

/// The next item: waits while the queue is open, empties it once it is
/// closing, gives up when stopped.
async fn next_item<Req>(shared: &Shared<Req>) -> Option<Req> {
    let mut receiver = tokio::select! {
        biased;
        () = shared.stop.cancelled() => return None,
        receiver = shared.receiver.lock() => receiver,
    };
    loop {
        if shared.closing.is_cancelled() {
            return receiver.try_recv().ok();
        }
        tokio::select! {
            biased;
            () = shared.stop.cancelled() => return None,
            () = shared.closing.cancelled() => {}
            item = receiver.recv() => return item,
        }
    }
}

/// Calls the service until it succeeds or the attempts run out, waiting a
/// backoff step between attempts. A panic in the service, or in cloning
/// the item for an attempt (a user's `Clone` with a bug), is a failed
/// attempt, not the end of the worker.
async fn deliver<S, Req>(
    shared: &Shared<Req>,
    service: &mut S,
    worker: &str,
    item: Req,
    rng: &mut fastrand::Rng,
) -> Result<u32, Undelivered>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: Clone,
{
    let item = Held {
        shared,
        item: Some(item),
    };
    let mut attempt = 0_u32;
    loop {
        attempt += 1;
        let outcome = match catch_call(&shared.name, shared.capture, || item.get().clone()) {
            Ok(request) => {
                let service = &mut *service;
                let call = async move {
                    if let Err(error) = poll_fn(|cx| service.poll_ready(cx)).await {
                        return Err((error.into(), true));
                    }
                    service
                        .call(request)
                        .await
                        .map(drop)
                        .map_err(|error| (error.into(), false))
                };
                CatchUnwind::new(call, shared.name.clone(), shared.capture).await
            }
            Err(panicked) => Err(panicked),
        };
        let (error, cause): (BoxError, _) = match outcome {
            Ok(Ok(())) => return Ok(attempt),
            Ok(Err((error, true))) => {
                // tower services do not recover from a readiness error:
                // retrying would only wait out the backoff.
                report_failed_attempt(shared, attempt, AttemptFailure::Error);
                return Err(Undelivered::ServiceFailed(error));
            }
            Ok(Err((error, false))) => (error, AttemptFailure::Error),
            Err(panicked) => {
                // A failed attempt, logged with its stack and counted by
                // cause below: the worker is no group's task and the queue
                // no layer's policy, so a task or panic-catch event would
                // show a phantom one in the metrics.
                contained(|| {
                    tracing::error!(
                        queue = shared.name.as_str(),
                        worker,
                        panic.message = panicked.message(),
                        panic.location = panicked.location().map(tracing::field::display),
                        panic.backtrace = panicked.backtrace().map(tracing::field::display),
                        "offload attempt panicked"
                    );
                });
                (Box::new(panicked), AttemptFailure::Panic)
            }
        };
        report_failed_attempt(shared, attempt, cause);
        if attempt >= shared.max_attempts {
            return Err(Undelivered::RetriesExhausted(attempt, error));
        }
        let wait = shared.backoff.delay(attempt - 1, rng);
        contained(|| {
            tracing::debug!(
                queue = shared.name.as_str(),
                attempt,
                wait = ?wait,
                error = %error,
                "offload attempt failed; retrying"
            );
        });
        shared.discard(error);
        tokio::time::sleep(wait).await;
    }
}

/// Why an item was not delivered.
enum Undelivered {
    /// Every attempt failed: how many, and the last error.
    RetriesExhausted(u32, BoxError),
    /// The service's readiness failed.
    ServiceFailed(BoxError),
}

/// Reports a failed attempt, contained: a sink that panics must not end
/// the worker.
fn report_failed_attempt<Req>(shared: &Shared<Req>, attempt: u32, cause: AttemptFailure) {
    contained(|| {
        shared.metrics.emit(&Event::OffloadAttemptFailed {
            queue: shared.name.as_str(),
            attempt,
            cause,
        });
    });
}

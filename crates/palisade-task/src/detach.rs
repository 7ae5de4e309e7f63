//! Shutdowns that finish even when their caller stops waiting.

use std::future::Future;

/// Runs `shutdown` to completion in a task of its own and waits for it.
///
/// A caller that gives up on the wait (a deadline of its own around a
/// `shutdown` call, say) drops only the wait: the shutdown goes on, so
/// what it stops, counts and logs is never left half-done. A panic in it
/// reaches the caller. `cut_short` answers if the runtime drops the task
/// (it is shutting down itself).
pub(crate) async fn to_completion<T: Send + 'static>(
    shutdown: impl Future<Output = T> + Send + 'static,
    cut_short: impl FnOnce() -> T,
) -> T {
    match tokio::spawn(shutdown).await {
        Ok(done) => done,
        Err(err) => match err.try_into_panic() {
            Ok(payload) => std::panic::resume_unwind(payload),
            Err(_) => cut_short(),
        },
    }
}

//! The hook installed before palisade's still runs for panics outside the
//! layer, and for caught panics only when the layer asks for the print.
//!
//! One test in its own binary: the panic hook is process-wide.

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicUsize, Ordering};

use palisade_panic::CatchPanicLayer;
use tower::{Layer, ServiceExt, service_fn};

static PREVIOUS_HOOK_CALLS: AtomicUsize = AtomicUsize::new(0);

fn panicking(_: ()) -> Ready<Result<(), std::io::Error>> {
    if true {
        panic!("caught by the layer");
    }
    ready(Ok(()))
}

#[tokio::test]
async fn the_previous_hook_runs_only_when_asked() {
    // Stands for the standard library's stderr print, or an application's
    // own hook, installed before any palisade layer is built.
    std::panic::set_hook(Box::new(|_| {
        PREVIOUS_HOOK_CALLS.fetch_add(1, Ordering::SeqCst);
    }));

    let quiet = CatchPanicLayer::builder().print(false).build().unwrap();
    let loud = CatchPanicLayer::builder().print(true).build().unwrap();

    assert!(
        quiet
            .layer(service_fn(panicking))
            .oneshot(())
            .await
            .is_err()
    );
    assert_eq!(PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst), 0, "print off");

    assert!(loud.layer(service_fn(panicking)).oneshot(()).await.is_err());
    assert_eq!(PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst), 1, "print on");

    // A panic nobody catches with a layer still reaches the previous hook.
    let outside = std::panic::catch_unwind(|| panic!("not under a layer"));
    assert!(outside.is_err());
    assert_eq!(PREVIOUS_HOOK_CALLS.load(Ordering::SeqCst), 2, "chained");
}

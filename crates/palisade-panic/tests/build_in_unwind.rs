//! A catch-panic layer first built while a panic unwinds (a destructor
//! that builds a fallback service): the hook that records where a panic
//! happened cannot be installed then, and the first service made outside
//! an unwind installs it. In a binary of its own: the hook is
//! process-wide.

use std::sync::Mutex;

use palisade_core::Panicked;
use palisade_panic::CatchPanicLayer;
use tower::{Layer, ServiceExt, service_fn};

static BUILT: Mutex<Option<CatchPanicLayer>> = Mutex::new(None);

struct BuildsOnDrop;

impl Drop for BuildsOnDrop {
    fn drop(&mut self) {
        let layer = CatchPanicLayer::builder().name("late").build().unwrap();
        *BUILT.lock().unwrap() = Some(layer);
    }
}

#[tokio::test]
async fn a_layer_first_built_during_an_unwind_still_locates_later_panics() {
    let unwound = std::panic::catch_unwind(|| {
        let _builds = BuildsOnDrop;
        panic!("request failed");
    });
    assert!(unwound.is_err());
    let layer = BUILT.lock().unwrap().take().unwrap();
    let svc = layer.layer(service_fn(|_: ()| async {
        if true {
            panic!("boom");
        }
        Ok::<_, std::io::Error>(())
    }));
    let err = svc.oneshot(()).await.unwrap_err();
    let panicked = err.downcast_ref::<Panicked>().unwrap();
    assert_eq!(panicked.message(), "boom");
    let location = panicked.location().expect("the hook recorded where");
    assert!(
        location.to_string().contains("build_in_unwind.rs"),
        "{location}"
    );
}

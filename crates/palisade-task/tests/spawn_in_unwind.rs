//! The first `spawn` of the process made while a panic unwinds (a
//! destructor starting async cleanup): the panic hook cannot be installed
//! then, and a later `spawn` still installs it, so panics of later tasks
//! keep their location. In a binary of its own: the hook is process-wide.

use palisade_task::{TaskExit, spawn};

struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        drop(spawn("cleanup", async {}));
    }
}

#[tokio::test]
async fn a_first_spawn_during_an_unwind_still_leaves_later_panics_located() {
    let unwound = std::panic::catch_unwind(|| {
        let _cleanup = Cleanup;
        panic!("request failed");
    });
    assert!(unwound.is_err());
    let job = spawn("job", async {
        if true {
            panic!("boom");
        }
    });
    match job.await {
        TaskExit::Panicked(panicked) => {
            assert_eq!(panicked.message(), "boom");
            let location = panicked.location().expect("the hook recorded where");
            assert!(
                location.to_string().contains("spawn_in_unwind.rs"),
                "{location}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

//! A panic that ends the process (a destructor panicking while an earlier
//! panic unwinds) leaves both panics on stderr, even inside a capture scope
//! that does not print: nothing would read the scope's record afterwards.
//!
//! The test runs itself again as a child process, which aborts.

use std::process::Command;

use palisade_core::panic::{CaptureOptions, catch, install_hook};

const CHILD: &str = "PALISADE_PANIC_ABORT_CHILD";

struct PanicsInDrop;

impl Drop for PanicsInDrop {
    fn drop(&mut self) {
        panic!("flushing the buffer failed in drop");
    }
}

#[test]
fn an_abort_inside_a_capture_scope_leaves_both_panics_on_stderr() {
    if std::env::var_os(CHILD).is_some() {
        install_hook();
        let _ = catch(CaptureOptions::default(), || {
            let _buffer = PanicsInDrop;
            panic!("original bug: user 42 not found");
        });
        unreachable!("the double panic aborts the process");
    }
    let output = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "an_abort_inside_a_capture_scope_leaves_both_panics_on_stderr",
            "--exact",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("child ran");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "the child aborts");
    assert!(
        stderr.contains("original bug: user 42 not found"),
        "{stderr}"
    );
    assert!(
        stderr.contains("flushing the buffer failed in drop"),
        "{stderr}"
    );
    assert!(stderr.contains("panic_abort.rs"), "locations: {stderr}");
}

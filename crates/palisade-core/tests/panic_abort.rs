//! Panics that nothing catches leave their message on stderr even inside
//! a capture scope that does not print, since nothing would read the
//! scope's record afterwards: a destructor panicking while an earlier
//! panic unwinds (which aborts), and a panic that unwinds out of a scope.
//!
//! Each test runs itself again as a child process.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use palisade_core::panic::{CaptureOptions, CaptureScope, catch, install_hook, take_captured};

const CHILD: &str = "PALISADE_PANIC_ABORT_CHILD";

struct PanicsInDrop;

impl Drop for PanicsInDrop {
    fn drop(&mut self) {
        panic!("flushing the buffer failed in drop");
    }
}

/// Runs the test `name` of this binary as a child process and returns how
/// it ended and what it wrote to stderr.
fn run_child(name: &str) -> (ExitStatus, String) {
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([name, "--exact", "--nocapture"])
        .env(CHILD, "1")
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("child ran");
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    });
    // A hook that deadlocks would leave the child running: give it a
    // minute, then fail rather than hang.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("child status") {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the child did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.join().expect("stderr read");
    (status, String::from_utf8_lossy(&stderr).into_owned())
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
    let (status, stderr) =
        run_child("an_abort_inside_a_capture_scope_leaves_both_panics_on_stderr");
    assert!(!status.success(), "the child aborts");
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

#[test]
fn a_panic_unwinding_out_of_a_scope_reaches_stderr() {
    if std::env::var_os(CHILD).is_some() {
        install_hook();
        let thread = std::thread::spawn(|| {
            let _scope = CaptureScope::enter(CaptureOptions::default());
            panic!("escaped the scope: user 42 not found");
        });
        assert!(thread.join().is_err(), "the thread panicked");
        // Caught past the scope, the panic's record is still there to read.
        let caught = std::panic::catch_unwind(|| {
            let _scope = CaptureScope::enter(CaptureOptions::default());
            panic!("caught past the scope");
        });
        assert!(caught.is_err());
        let captured = take_captured().expect("the record stays");
        assert_eq!(&*captured.message, "caught past the scope");
        return;
    }
    let (status, stderr) = run_child("a_panic_unwinding_out_of_a_scope_reaches_stderr");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("escaped the scope: user 42 not found"),
        "the thread ended silently: {stderr}"
    );
    assert!(stderr.contains("panic_abort.rs"), "location: {stderr}");
}

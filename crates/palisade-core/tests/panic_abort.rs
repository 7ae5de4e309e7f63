//! A panic that ends the process (a destructor panicking while an earlier
//! panic unwinds) leaves both panics on stderr, even inside a capture scope
//! that does not print: nothing would read the scope's record afterwards.
//!
//! The test runs itself again as a child process, which aborts.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "an_abort_inside_a_capture_scope_leaves_both_panics_on_stderr",
            "--exact",
            "--nocapture",
        ])
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
    // A hook that deadlocks on the second panic would leave the child
    // running: give it a minute, then fail rather than hang.
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
    let stderr = String::from_utf8_lossy(&stderr);
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

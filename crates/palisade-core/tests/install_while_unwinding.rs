//! Building palisade in a destructor that runs while a panic unwinds (the
//! first layer or task group of the process, say) must not abort it: the
//! panic hook cannot be replaced from a panicking thread. Its own test
//! binary, so that no earlier test has installed the hook already.

use palisade_core::panic::{CaptureOptions, catch, install_hook, take_captured};

struct InstallsOnDrop;

impl Drop for InstallsOnDrop {
    fn drop(&mut self) {
        install_hook();
    }
}

#[test]
fn installing_the_hook_while_a_panic_unwinds_does_not_abort() {
    let unwound = std::panic::catch_unwind(|| {
        let _installs = InstallsOnDrop;
        std::panic::resume_unwind(Box::new("unwinding"));
    });
    assert!(unwound.is_err());
    // Outside the unwind, the hook is installed as usual (and only once):
    // a panic in a capture scope is recorded with its location.
    install_hook();
    install_hook();
    let options = CaptureOptions {
        backtrace: false,
        print: false,
    };
    assert!(catch(options, || panic!("after the unwind")).is_err());
    let captured = take_captured().expect("the hook recorded the panic");
    assert_eq!(&*captured.message, "after the unwind");
    let location = captured.location.expect("the hook saw where");
    assert!(
        location.file().ends_with("install_while_unwinding.rs"),
        "{location}"
    );
}

//! Building palisade in a destructor that runs while a panic unwinds (the
//! first layer or task group of the process, say) must not abort it: the
//! panic hook cannot be replaced from a panicking thread. Its own test
//! binary, so that no earlier test has installed the hook already.

use palisade_core::panic::install_hook;

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
    // Outside the unwind, the hook is installed as usual (and only once).
    install_hook();
    install_hook();
}

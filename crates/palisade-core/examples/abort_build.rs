//! What a `panic = "abort"` build shows of a panic raised inside a capture
//! scope that does not print: nothing can catch it, so the panic hook must
//! pass it to the previous hook, which prints its message and location,
//! before the process aborts. CI runs it in the `abort-check` profile
//! (`panic = "abort"`) and checks stderr:
//!
//! ```text
//! cargo run -p palisade-core --example abort_build --profile abort-check
//! ```

use std::process::ExitCode;

use palisade_core::panic::{CAN_CATCH_PANICS, CaptureOptions, catch, install_hook};

fn main() -> ExitCode {
    if CAN_CATCH_PANICS {
        // Built to unwind: the panic would be caught, which is not what
        // this program shows.
        return ExitCode::from(2);
    }
    install_hook();
    let _ = catch(CaptureOptions::default(), || -> u32 {
        panic!("user 42 not found")
    });
    // Not reached: the panic aborts the process.
    ExitCode::from(3)
}

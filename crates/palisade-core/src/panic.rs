//! Panic capture shared by the panic-catch layer and supervised tasks.
//!
//! `catch_unwind` hands back only a panic's payload. Its location and a
//! backtrace are known only to the panic hook, which runs at the panic site
//! before unwinding starts. This module installs one palisade hook that
//! chains whatever hook was installed before it:
//!
//! - outside a [`CaptureScope`], it calls the previous hook and does
//!   nothing else, so panics elsewhere in the program look as they always
//!   did;
//! - inside a scope, it records the location (and, when asked, a backtrace)
//!   in a thread-local slot that the catching code reads with
//!   [`take_captured`], and calls the previous hook only if the scope asks
//!   for the default print.
//!
//! A panic raised in a scope but caught by the code running there (its own
//! `catch_unwind`, an inner catch-panic layer of another library) never
//! reaches palisade's catch, so nobody would report it, and the default
//! print was skipped. [`catch`] notices the record left behind when its
//! closure returns normally, and logs that panic as a `tracing` error
//! event (message, location, backtrace), so it is never silent.
//!
//! The capture cost is paid only when a panic happens. Entering a scope is a
//! thread-local write, and leaving it another, with a check for a record
//! the closure's own code left. [`catch`] builds its result before it
//! reports such a record, with a call that cannot unwind, so that the
//! compiler builds a large value (a service's future, a response) where
//! the caller stores it: the scope adds no copy of it.
//!
//! If a program replaces the panic hook after palisade installed its own,
//! panics are still caught, but without location or backtrace.
//!
//! # `panic = "abort"`
//!
//! With `panic = "abort"` in the profile, a panic ends the process before
//! anything can catch it, and no palisade layer can turn it into an error.
//! [`CAN_CATCH_PANICS`] tells at compile time which setting is in force.
//! The hook then always passes a panic on to the previous hook (by default
//! printed to stderr), [`CaptureOptions::print`] or not: it is the only
//! report the panic gets.
//!
//! # Example
//!
//! ```
//! use palisade_core::panic::{catch, payload_message, take_captured, CaptureOptions};
//!
//! palisade_core::panic::install_hook();
//! let caught = catch(CaptureOptions::default(), || -> u32 { panic!("boom") });
//! let payload = caught.unwrap_err();
//! assert_eq!(&*payload_message(&*payload), "boom");
//! let captured = take_captured().expect("the hook saw the panic");
//! assert!(captured.location.unwrap().file().ends_with(".rs"));
//! ```

use std::any::Any;
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::io::Write as _;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, PanicHookInfo};
use std::sync::{Arc, Once};

use crate::error::{PanicLocation, Panicked};
use crate::policy::PolicyName;

/// Whether panics unwind in this build, so that palisade can catch them.
///
/// `false` under `panic = "abort"`: a panic then ends the process.
pub const CAN_CATCH_PANICS: bool = cfg!(panic = "unwind");

/// What the palisade hook does for a panic raised inside a [`CaptureScope`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CaptureOptions {
    /// Capture a backtrace (forced, whatever `RUST_BACKTRACE` says).
    /// Default: `true`.
    pub backtrace: bool,
    /// Still call the previously installed hook, which by default prints
    /// the panic to stderr. Default: `false`, since palisade reports the
    /// panic through its metrics sink and `tracing` instead.
    pub print: bool,
}

impl Default for CaptureOptions {
    fn default() -> Self {
        Self {
            backtrace: true,
            print: false,
        }
    }
}

/// What the hook recorded for the latest panic in a capture scope on this
/// thread.
#[derive(Debug)]
#[non_exhaustive]
pub struct Captured {
    /// Where the panic was raised.
    pub location: Option<PanicLocation>,
    /// The backtrace, when [`CaptureOptions::backtrace`] was set.
    pub backtrace: Option<Backtrace>,
    /// The panic's message (see [`payload_message`]).
    pub message: Box<str>,
}

/// The thread's capture state, in one cell so that entering and leaving a
/// scope each touch one thread-local.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ThreadState {
    /// The innermost scope's options; `None` outside any scope.
    scope: Option<CaptureOptions>,
    /// Whether `CAPTURED` holds a record nobody has taken (tells [`catch`]
    /// whether its closure swallowed a panic), and whether its panic is
    /// still unwinding.
    record: Unclaimed,
    /// Whether the unclaimed record was already written to stderr.
    shown: bool,
}

/// The state of the record in `CAPTURED`. One byte, so that the whole
/// thread state stays one word to read and write.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Unclaimed {
    /// No record, or one somebody took.
    #[default]
    No,
    /// A record whose panic may still unwind: a panic raised now is one
    /// raised while it does (a destructor's).
    Unwinding,
    /// A record whose panic [`catch`] caught: it is over, whoever reads
    /// the record later.
    Caught,
}

thread_local! {
    static STATE: Cell<ThreadState> = const {
        Cell::new(ThreadState {
            scope: None,
            record: Unclaimed::No,
            shown: false,
        })
    };
    /// How many records the hook has made on this thread (wrapping): a
    /// scope tells a record made while it ran from one an enclosing scope
    /// left unclaimed (a catch run by a destructor while an outer panic
    /// unwinds). A cell of its own, so that the state above stays small
    /// enough to be read and written whole.
    static RECORDS: Cell<u32> = const { Cell::new(0) };
    static CAPTURED: RefCell<Option<Captured>> = const { RefCell::new(None) };
}

/// Sets whether a record is unclaimed and whether it was written to
/// stderr, keeping the scope. A new record, or none, is not caught yet.
fn set_unclaimed(unclaimed: bool, shown: bool) {
    let record = if unclaimed {
        Unclaimed::Unwinding
    } else {
        Unclaimed::No
    };
    let _ = STATE.try_with(|state| {
        state.set(ThreadState {
            record,
            shown,
            ..state.get()
        });
    });
}

/// Marks the unclaimed record's panic as caught: it stays for whoever
/// reads it (an enclosing scope reports it if nobody does), but a panic
/// raised after it is not one raised while it unwinds.
fn mark_caught() {
    let _ = STATE.try_with(|state| {
        let current = state.get();
        if current.record == Unclaimed::Unwinding {
            state.set(ThreadState {
                record: Unclaimed::Caught,
                ..current
            });
        }
    });
}

/// Writes the unclaimed record to stderr, in the default hook's words.
#[cold]
fn show_unreported() {
    let _ = CAPTURED.try_with(|slot| {
        if let Ok(slot) = slot.try_borrow()
            && let Some(captured) = slot.as_ref()
        {
            let thread = std::thread::current();
            let name = thread.name().unwrap_or("<unnamed>");
            let location = captured
                .location
                .as_ref()
                .map_or_else(|| "an unknown location".to_owned(), ToString::to_string);
            // Never `eprintln!`, which panics when stderr cannot be
            // written (a closed pipe): a panic in the hook aborts.
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(
                stderr,
                "thread '{name}' panicked at {location}:\n{}",
                captured.message
            );
            if let Some(backtrace) = &captured.backtrace {
                let _ = writeln!(stderr, "stack backtrace:\n{backtrace}");
            }
        }
    });
}

static INSTALL: Once = Once::new();

/// Installs the palisade panic hook, chaining the hook installed before it.
///
/// Idempotent and cheap after the first call; layers call it when they are
/// built. Called from a thread that is panicking (a layer built in a
/// destructor during unwinding), it does nothing, since the standard
/// library cannot replace the hook there: the next call made outside an
/// unwind installs it.
pub fn install_hook() {
    if std::thread::panicking() {
        return;
    }
    INSTALL.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info: &PanicHookInfo<'_>| {
            let state = STATE.try_with(Cell::get).unwrap_or_default();
            match state.scope {
                Some(options) => {
                    // A panic while an earlier one is still unreported is
                    // raised as the first unwinds (a destructor
                    // panicking), and Rust may then abort the process,
                    // before anyone reads either record: both go to
                    // stderr, as they would without palisade.
                    let pile_up = state.record == Unclaimed::Unwinding;
                    if pile_up && !state.shown {
                        show_unreported();
                    }
                    let captured = Captured {
                        location: info.location().map(PanicLocation::from_std),
                        backtrace: options.backtrace.then(Backtrace::force_capture),
                        // Never the payload's own `Display`: a panic in
                        // the hook aborts the process.
                        message: text_of(info.payload())
                            .unwrap_or_else(|| describe(info.payload()).into()),
                    };
                    // Under `panic = "abort"` nothing catches it: the
                    // process ends as soon as the hook returns, and the
                    // previous hook is the only report there will be.
                    let shown = options.print || pile_up || !CAN_CATCH_PANICS;
                    let _ = CAPTURED.try_with(|slot| {
                        if let Ok(mut slot) = slot.try_borrow_mut() {
                            *slot = Some(captured);
                            set_unclaimed(true, shown);
                            let _ = RECORDS.try_with(|records| {
                                records.set(records.get().wrapping_add(1));
                            });
                        }
                    });
                    if shown {
                        previous(info);
                    }
                }
                None => previous(info),
            }
        }));
    });
}

/// Marks the current thread as running code whose panics palisade catches.
///
/// Restores the previous scope when dropped, so scopes nest. Not `Send`: a
/// scope belongs to the thread that entered it.
///
/// Catch the panics raised inside a scope with [`catch`], which ends each
/// one. A panic caught by plain `catch_unwind` inside the scope stays
/// unclaimed until the scope ends (which then reports it, as `catch` does
/// for a panic its closure caught itself); a second panic raised before
/// that is taken for one raised while the first still unwinds, and both
/// go to stderr. A panic that unwinds out of the outermost scope goes to
/// stderr as the scope ends, as it would without palisade, since nothing
/// of palisade's is left to report it; its record stays for
/// [`take_captured`].
#[derive(Debug)]
pub struct CaptureScope {
    previous: Option<CaptureOptions>,
    /// The thread's record count when the scope was entered.
    records: u32,
    left: bool,
    _not_send: PhantomData<*const ()>,
}

impl CaptureScope {
    /// Enters a scope with `options`.
    #[inline]
    pub fn enter(options: CaptureOptions) -> Self {
        let previous = STATE.with(|state| {
            let current = state.get();
            state.set(ThreadState {
                scope: Some(options),
                ..current
            });
            current.scope
        });
        let records = RECORDS.with(Cell::get);
        Self {
            previous,
            records,
            left: false,
            _not_send: PhantomData,
        }
    }

    /// Leaves the scope, restoring the previous one, and tells whether a
    /// panic raised while it ran left its record unclaimed. A record an
    /// enclosing scope left (its panic unwinding through the destructor
    /// that entered this scope) is not this scope's, and stays for it.
    #[inline]
    fn leave(mut self) -> bool {
        self.close()
    }

    /// Restores the previous scope and tells whether a record this scope
    /// made is unclaimed: [`leave`](Self::leave), and the end of a scope
    /// dropped without it.
    #[inline]
    fn close(&mut self) -> bool {
        self.left = true;
        restore(self.previous)
            && RECORDS
                .try_with(Cell::get)
                .is_ok_and(|records| records != self.records)
    }
}

/// Restores `previous` as the thread's scope; returns whether a record is
/// unclaimed.
#[inline]
fn restore(previous: Option<CaptureOptions>) -> bool {
    STATE
        .try_with(|state| {
            let current = state.get();
            state.set(ThreadState {
                scope: previous,
                ..current
            });
            current.record != Unclaimed::No
        })
        .unwrap_or(false)
}

impl Drop for CaptureScope {
    /// A panic raised in the scope and caught by its own code is reported
    /// now, as [`catch`] does when its closure returns: left unclaimed,
    /// the next panic would take it for one still unwinding.
    #[inline]
    fn drop(&mut self) {
        if !self.left {
            self.end();
        }
    }
}

impl CaptureScope {
    /// Ends a scope dropped without [`leave`](Self::leave): out of line,
    /// so that `catch`, which leaves its scope, stays small.
    #[cold]
    #[inline(never)]
    fn end(&mut self) {
        if !self.close() {
            return;
        }
        if !std::thread::panicking() {
            swallowed();
        } else if self.previous.is_none() {
            // The panic unwinds out of the outermost scope: nothing of
            // palisade's will report it, and whatever catches it (a task's
            // harness, the thread's end) expects the hook to have printed
            // it. Printed now, unless the hook did; the record stays for
            // code that catches the panic and reads it with
            // `take_captured`.
            let shown = STATE.try_with(|state| state.get().shown).unwrap_or(true);
            if !shown {
                show_unreported();
                set_unclaimed(true, true);
            }
        }
    }
}

/// Takes what the hook recorded for the latest panic in a capture scope on
/// this thread, leaving nothing behind.
pub fn take_captured() -> Option<Captured> {
    set_unclaimed(false, false);
    CAPTURED
        .try_with(|slot| slot.try_borrow_mut().ok().and_then(|mut s| s.take()))
        .ok()
        .flatten()
}

/// Runs `f` inside a capture scope and catches a panic it raises.
///
/// `f` is treated as unwind safe: palisade drops whatever `f` was working on
/// after a panic (the inner future), so no broken state is observed again.
///
/// When `f` returns normally but a panic was raised and caught inside it
/// (by `f`'s own code), that panic is logged as a `tracing` error event,
/// unless the previous hook printed it (the [`CaptureOptions::print`] of
/// the innermost scope when it was raised): see the [module](self) docs.
#[inline]
pub fn catch<T>(options: CaptureOptions, f: impl FnOnce() -> T) -> Result<T, Box<dyn Any + Send>> {
    let scope = CaptureScope::enter(options);
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => {
            let unclaimed = scope.leave();
            // The result is built before a panic the closure caught itself
            // is reported, and the report cannot unwind: the compiler then
            // builds a large value (a service's future, a response) where
            // the caller stores it, instead of keeping it in a temporary
            // across the report's call and copying it out.
            let returned = Ok(value);
            if unclaimed {
                swallowed();
            }
            returned
        }
        Err(payload) => {
            // The panic caught here is over: its record stays for
            // `panicked` (or for an enclosing scope to report, if nobody
            // reads it), but is no longer one unwinding, which the next
            // panic would take for a pile-up and print with itself.
            if scope.leave() {
                mark_caught();
            }
            Err(payload)
        }
    }
}

/// Reports a panic raised in a capture scope that the code running there
/// caught itself: logs it, unless the hook printed it already. What the
/// hook did is read from its record, not from this scope's options: a
/// nested scope with other options may have been the one in force.
///
/// `extern "C"`, like [`contained`]'s body, so that the compiler knows a
/// call of it cannot unwind: [`catch`] builds its result and only then
/// calls this, and the result is built where the caller keeps it. Nothing
/// in it panics (the subscriber runs [`contained`]); if something did, the
/// process would abort. Called through [`contained`] instead, `catch`
/// measured 2 to 4 ns slower per request in the `u64` stack bench.
#[cold]
#[inline(never)]
extern "C" fn swallowed() {
    let shown = STATE.try_with(|state| state.get().shown).unwrap_or(false);
    let Some(captured) = take_captured() else {
        return;
    };
    if shown {
        return;
    }
    contained(|| {
        let location = captured.location.as_ref().map(tracing::field::display);
        let backtrace = captured.backtrace.as_ref().map(tracing::field::display);
        tracing::error!(
            panic.message = &*captured.message,
            panic.location = location,
            panic.backtrace = backtrace,
            "panic raised and caught inside a service before palisade could catch it"
        );
    });
}

/// Runs reporting code the user supplies (a metrics sink, a `tracing`
/// subscriber) so that a panic of it cannot escape into what it reports
/// on: a caught panic, a task's exit, a supervisor's loop, a queue's
/// worker.
///
/// The panic itself meets the hook as any other: inside an enclosing
/// capture scope it is recorded and reported when that scope ends (logged,
/// as a panic caught inside a service); outside one, the previous hook
/// prints it (the standard one to stderr).
///
/// # Example
///
/// ```
/// let mut reported = false;
/// palisade_core::panic::contained(|| panic!("a metrics sink with a bug"));
/// palisade_core::panic::contained(|| reported = true);
/// assert!(reported);
/// ```
#[inline]
pub fn contained(report: impl FnOnce()) {
    never_unwinds(report);
}

/// [`contained`]'s body, `extern "C"` so that the compiler knows a call of
/// it cannot unwind (it catches every panic): a value its caller built
/// before the call is then left where the caller keeps it, instead of
/// being moved to a temporary a landing pad could drop and copied out
/// afterwards. That is one copy per request of a service's future or
/// response, where a layer reports something between building and
/// returning one (a breaker's outcome).
#[inline]
extern "C" fn never_unwinds<F: FnOnce()>(report: F) {
    let _ = contained_value(report);
}

/// [`contained`] for user code that gives a value (formatting a user's
/// error, say): `None` when it panicked.
///
/// ```
/// use palisade_core::panic::contained_value;
///
/// assert_eq!(contained_value(|| 2 + 2), Some(4));
/// assert_eq!(contained_value(|| -> u32 { panic!("a Display with a bug") }), None);
/// ```
pub fn contained_value<T>(f: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            // The payload's destructor is the user's code too: contained
            // once more, and a payload that panics as it drops is leaked
            // rather than dropped bare.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(payload)))
                .map_err(std::mem::ManuallyDrop::new);
            None
        }
    }
}

/// How many panics in a row [`contain_drop`] reports: the drop's own, then
/// those of payloads whose destructors panic in turn. Past that, payloads
/// are dropped unreported.
const DROP_REPORTS: usize = 4;

/// Drops what palisade is done with (a future that finished or panicked,
/// a caught panic's payload, an item a queue delivered) inside a capture
/// scope, with `drop_fn`.
///
/// A destructor that panics there does not escape into the code that
/// dropped it, and does not replace a first panic, which is the one the
/// caller reports. It is logged as a `tracing` warning with the policy,
/// its message and its location, unless [`CaptureOptions::print`] had the
/// previous hook print it already.
///
/// # Example
///
/// ```
/// use palisade_core::PolicyName;
/// use palisade_core::panic::{CaptureOptions, catch, contain_drop};
///
/// struct FailsOnDrop;
/// impl Drop for FailsOnDrop {
///     fn drop(&mut self) {
///         if !std::thread::panicking() {
///             panic!("destructor bug");
///         }
///     }
/// }
///
/// palisade_core::panic::install_hook();
/// let policy = PolicyName::new("api");
/// let state = FailsOnDrop;
/// let payload = catch(CaptureOptions::default(), || panic!("first")).unwrap_err();
/// // The destructor's panic is logged, not raised.
/// contain_drop(&policy, CaptureOptions::default(), move || drop(state));
/// contain_drop(&policy, CaptureOptions::default(), move || drop(payload));
/// ```
pub fn contain_drop(policy: &PolicyName, options: CaptureOptions, drop_fn: impl FnOnce()) {
    let Err(mut payload) = catch(options, drop_fn) else {
        return;
    };
    for _ in 0..DROP_REPORTS {
        let panicked = panicked(policy.clone(), &*payload);
        if !options.print {
            report_drop_panic(&panicked);
        }
        match catch(options, move || drop(payload)) {
            Ok(()) => return,
            Err(next) => payload = next,
        }
    }
    // Past the reports: dropped unreported, and leaked if it panics again
    // rather than dropped bare.
    let _ = catch(options, move || drop(payload)).map_err(std::mem::ManuallyDrop::new);
    let _ = take_captured();
}

#[cold]
#[inline(never)]
fn report_drop_panic(panicked: &Panicked) {
    contained(|| {
        tracing::warn!(
            policy = panicked.policy().as_str(),
            panic.message = panicked.message(),
            panic.location = panicked.location().map(tracing::field::display),
            "a destructor panicked as palisade dropped what it was done with \
             (a finished or panicked future, a panic's payload, a delivered item); \
             the panic was contained"
        );
    });
}

/// The message of a panic payload: the text of `&str` and `String`
/// payloads, that of a `Box<dyn Error>` payload after a description of its
/// type, a description of the payload's type otherwise.
///
/// An error whose `Display` panics is described by its type only: the
/// panic is contained (see [`contained`]).
pub fn payload_message(payload: &(dyn Any + Send)) -> Box<str> {
    if let Some(text) = text_of(payload) {
        return text;
    }
    if let Some(e) = payload.downcast_ref::<Box<dyn std::error::Error + Send + Sync>>()
        && let Some(message) =
            contained_value(|| format!("panic payload of type Box<dyn Error>: {e}"))
    {
        return message.into();
    }
    describe(payload).into()
}

/// The text of a `&str`, `String` or `Box<str>` payload.
fn text_of(payload: &(dyn Any + Send)) -> Option<Box<str>> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Some((*s).into())
    } else if let Some(s) = payload.downcast_ref::<String>() {
        Some(s.as_str().into())
    } else {
        payload.downcast_ref::<Box<str>>().cloned()
    }
}

/// A description of a payload's type, for payloads that are not text.
fn describe(payload: &(dyn Any + Send)) -> &'static str {
    if payload.is::<Box<dyn std::error::Error + Send + Sync>>() {
        return "panic payload of type Box<dyn Error>";
    }
    describe_other(payload)
}

fn describe_other(payload: &(dyn Any + Send)) -> &'static str {
    macro_rules! known {
        ($($t:ty),+) => {
            $(if payload.is::<$t>() { return concat!("panic payload of type ", stringify!($t)); })+
        };
    }
    known!(
        i8,
        i16,
        i32,
        i64,
        i128,
        isize,
        u8,
        u16,
        u32,
        u64,
        u128,
        usize,
        f32,
        f64,
        bool,
        char,
        ()
    );
    "panic payload of a non-string type"
}

/// Builds the [`Panicked`] rejection for a caught payload, with the location
/// and backtrace the hook recorded on this thread, if any.
pub fn panicked(policy: PolicyName, payload: &(dyn Any + Send)) -> Panicked {
    // The record is this payload's unless a panic caught during its unwind
    // (a destructor's own `catch_unwind`) replaced it: that one's location
    // and backtrace must not be lent to this panic.
    let captured = take_captured()
        .filter(|c| c.message == text_of(payload).unwrap_or_else(|| describe(payload).into()));
    let (location, backtrace) = match captured {
        Some(c) => (c.location, c.backtrace.map(Arc::new)),
        None => (None, None),
    };
    Panicked::new(policy, payload_message(payload))
        .with_location(location)
        .with_backtrace(backtrace)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// No backtrace, no print: what these tests capture is the record.
    const QUIET: CaptureOptions = CaptureOptions {
        backtrace: false,
        print: false,
    };

    #[test]
    fn an_error_payload_whose_display_panics_is_caught_not_aborted() {
        #[derive(Debug)]
        struct Broken;
        impl std::fmt::Display for Broken {
            fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                panic!("a Display with a bug")
            }
        }
        impl std::error::Error for Broken {}

        install_hook();
        // Formatting it in the hook would abort the process.
        let payload = catch(QUIET, || {
            std::panic::panic_any(Box::<dyn std::error::Error + Send + Sync>::from(Broken))
        })
        .unwrap_err();
        let panicked = panicked(PolicyName::new("api"), &*payload);
        assert_eq!(panicked.message(), "panic payload of type Box<dyn Error>");
        let p = catch(QUIET, || {
            std::panic::panic_any(Box::<dyn std::error::Error + Send + Sync>::from("plain"))
        })
        .unwrap_err();
        assert_eq!(
            &*payload_message(&*p),
            "panic payload of type Box<dyn Error>: plain"
        );
    }

    /// Runs the test `name` again in a child process with `var` set, and
    /// asserts that it passed and that no quiet scope printed a panic.
    fn assert_quiet_in_child(name: &str, var: &str) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(var, "1")
            .env("RUST_BACKTRACE", "0")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            !stderr.contains("panicked at"),
            "a quiet scope printed:\n{stderr}"
        );
    }

    /// A panic `catch` caught is over once `catch` returns, whether or not
    /// its record is ever read: it is not a panic still unwinding when the
    /// next one comes, and quiet scopes stay quiet.
    #[test]
    fn a_caught_panic_nobody_reads_leaves_later_quiet_panics_quiet() {
        const CHILD: &str = "PALISADE_UNREAD_CATCH_CHILD";
        if std::env::var_os(CHILD).is_some() {
            install_hook();
            assert!(catch(QUIET, || panic!("first, handled")).is_err());
            let payload = catch(QUIET, || panic!("second")).unwrap_err();
            assert_eq!(
                panicked(PolicyName::new("api"), &*payload).message(),
                "second"
            );
            return;
        }
        assert_quiet_in_child(
            "panic::tests::a_caught_panic_nobody_reads_leaves_later_quiet_panics_quiet",
            CHILD,
        );
    }

    /// A scope that ends with a panic its code caught itself reports it
    /// then, as `catch` does: the next scope does not take it for a panic
    /// still unwinding.
    #[test]
    fn a_scope_reports_a_panic_caught_inside_it_when_it_ends() {
        const CHILD: &str = "PALISADE_SCOPE_SWALLOWED_CHILD";
        if std::env::var_os(CHILD).is_some() {
            install_hook();
            {
                let _scope = CaptureScope::enter(QUIET);
                assert!(std::panic::catch_unwind(|| panic!("caught inside")).is_err());
            }
            assert!(catch(QUIET, || panic!("later")).is_err());
            return;
        }
        assert_quiet_in_child(
            "panic::tests::a_scope_reports_a_panic_caught_inside_it_when_it_ends",
            CHILD,
        );
    }

    /// A payload whose destructor panics, again and again.
    struct Relay(u32);

    impl Drop for Relay {
        fn drop(&mut self) {
            if self.0 > 0 {
                std::panic::panic_any(Relay(self.0 - 1));
            }
        }
    }

    #[test]
    fn payloads_that_panic_as_they_drop_never_escape() {
        install_hook();
        let escaped = std::panic::catch_unwind(|| {
            contained(|| std::panic::panic_any(Relay(3)));
        });
        assert!(escaped.is_ok(), "a panic escaped `contained`");
        let escaped = std::panic::catch_unwind(|| {
            contain_drop(&PolicyName::new("p"), QUIET, || {
                std::panic::panic_any(Relay(10))
            });
        });
        assert!(escaped.is_ok(), "a panic escaped `contain_drop`");
    }

    /// Run in a child process whose stderr is a pipe nobody reads: a
    /// panic while an earlier one is unreported writes both to stderr from
    /// the hook, where a write error must not panic (which would abort).
    #[test]
    fn the_hook_survives_a_stderr_it_cannot_write_to() {
        const CHILD: &str = "PALISADE_HOOK_STDERR_CHILD";
        if std::env::var_os(CHILD).is_some() {
            struct Cleanup;
            impl Drop for Cleanup {
                fn drop(&mut self) {
                    let _ = std::panic::catch_unwind(|| panic!("cleanup"));
                }
            }
            install_hook();
            let caught = catch(QUIET, || {
                let _cleanup = Cleanup;
                panic!("first")
            });
            assert!(caught.is_err());
            return;
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "panic::tests::the_hook_survives_a_stderr_it_cannot_write_to",
                "--nocapture",
            ])
            .env(CHILD, "1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Every write to the child's stderr now fails.
        drop(child.stderr.take());
        let status = child.wait().unwrap();
        assert!(status.success(), "the child ended with {status:?}");
    }

    /// Runs a palisade catch from its destructor, as code dropped during
    /// an unwind may (an offload push, a contained drop).
    struct CatchesOnDrop;

    impl Drop for CatchesOnDrop {
        fn drop(&mut self) {
            contain_drop(
                &PolicyName::new("cleanup"),
                CaptureOptions::default(),
                || (),
            );
        }
    }

    #[test]
    fn a_catch_run_during_an_unwind_leaves_the_unwinding_panic_its_record() {
        install_hook();
        let line = line!() + 3;
        let payload = catch(QUIET, || {
            let _cleanup = CatchesOnDrop;
            panic!("boom")
        })
        .unwrap_err();
        let panicked = panicked(PolicyName::new("api"), &*payload);
        assert_eq!(panicked.message(), "boom");
        assert_eq!(panicked.location().map(|l| l.line()), Some(line));
    }

    #[test]
    fn a_panic_caught_in_a_destructor_during_an_unwind_lends_it_no_location() {
        struct CatchesItsOwnPanic;
        impl Drop for CatchesItsOwnPanic {
            fn drop(&mut self) {
                let _ = std::panic::catch_unwind(|| panic!("cleanup"));
            }
        }
        install_hook();
        let payload = catch(QUIET, || {
            let _cleanup = CatchesItsOwnPanic;
            panic!("boom")
        })
        .unwrap_err();
        let panicked = panicked(PolicyName::new("api"), &*payload);
        assert_eq!(panicked.message(), "boom");
        // The destructor's panic replaced the record (both went to stderr):
        // no location rather than the destructor's.
        assert_eq!(panicked.location(), None);
        assert!(take_captured().is_none());
    }

    #[test]
    fn string_payloads_and_others() {
        install_hook();
        let p = catch(QUIET, || panic!("static {}", "str")).unwrap_err();
        assert_eq!(&*payload_message(&*p), "static str");
        let p = catch(QUIET, || std::panic::panic_any(String::from("owned"))).unwrap_err();
        assert_eq!(&*payload_message(&*p), "owned");
        let p = catch(QUIET, || std::panic::panic_any(42_u32)).unwrap_err();
        assert_eq!(&*payload_message(&*p), "panic payload of type u32");
        #[derive(Debug)]
        struct Custom;
        let p = catch(QUIET, || std::panic::panic_any(Custom)).unwrap_err();
        assert_eq!(&*payload_message(&*p), "panic payload of a non-string type");
    }

    #[test]
    fn location_and_optional_backtrace_are_captured() {
        install_hook();
        let line = line!() + 2;
        let payload = catch(CaptureOptions::default(), || {
            panic!("here");
        })
        .unwrap_err();
        let rejection = panicked(PolicyName::new("p"), &*payload);
        assert_eq!(rejection.message(), "here");
        let location = rejection.location().expect("location captured");
        assert!(location.file().ends_with("panic.rs"));
        assert_eq!(location.line(), line);
        assert!(rejection.backtrace().is_some());
        assert!(take_captured().is_none(), "capture is taken once");

        let no_bt = CaptureOptions {
            backtrace: false,
            print: false,
        };
        let payload = catch(no_bt, || panic!("again")).unwrap_err();
        let rejection = panicked(PolicyName::new("p"), &*payload);
        assert!(rejection.location().is_some());
        assert!(rejection.backtrace().is_none());
    }

    #[test]
    fn scopes_nest_and_restore() {
        let outer = CaptureOptions {
            backtrace: false,
            print: true,
        };
        let s1 = CaptureScope::enter(outer);
        {
            let _s2 = CaptureScope::enter(CaptureOptions::default());
            assert_eq!(STATE.with(Cell::get).scope, Some(CaptureOptions::default()));
        }
        assert_eq!(STATE.with(Cell::get).scope, Some(outer));
        drop(s1);
        assert_eq!(STATE.with(Cell::get).scope, None);
    }
}

//! onpyrunner-launcher: the main process of every language container.
//!
//! It reads one launch frame from stdin (see `onpyrunner_protocol::launch`), writes the source
//! files into the current directory (the container's tmpfs work directory), runs the compile
//! stage if there is one, then runs the program with the rest of stdin as its stdin. When the
//! stage that ends the run is over it writes the status trailer (see
//! `onpyrunner_protocol::status`) to stdout and exits with the program's exit code, or 128 +
//! signal, so Docker's exit code agrees with the trailer even when the trailer is lost.
//!
//! Launcher failures print one `onpyrunner-launcher:` line to stderr, report the error in the
//! trailer once the nonce is known, and exit 125 (launcher failed), 126 (cannot execute) or 127
//! (command not found).
mod error;
mod fdio;
mod frame;
mod report;
mod stage;
mod workdir;

use std::path::Path;

use onpyrunner_protocol::{RunRequest, Stage};

use crate::error::{LaunchError, EXIT_LAUNCHER_FAILED};

fn main() {
    // A bug must not show users a Rust backtrace: one line on stderr, then the launcher code.
    std::panic::set_hook(Box::new(|info| {
        report::complain(&format!("internal error: {info}"));
        std::process::exit(EXIT_LAUNCHER_FAILED);
    }));
    if let Err(message) = harden() {
        report::complain(&message);
        std::process::exit(EXIT_LAUNCHER_FAILED);
    }
    std::process::exit(launch());
}

/// Process settings that must hold before the nonce is read.
fn harden() -> Result<(), String> {
    // User code runs with our uid. A dumpable process's /proc/<pid>/mem, environ, and ptrace
    // are open to same-uid processes, which would let the program read the nonce out of our
    // memory and forge a trailer. exec resets the flag, so the program itself stays dumpable.
    // SAFETY: PR_SET_DUMPABLE only changes a flag of this process; the unused arguments are 0.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0 as libc::c_ulong, 0, 0, 0) };
    if rc != 0 {
        return Err(format!(
            "cannot make the launcher non-dumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    // A closed stdout must turn the trailer write into EPIPE (reported, then the normal exit
    // code), not a silent death by SIGPIPE. std's runtime already ignores SIGPIPE before main;
    // this states it rather than relying on a build flag. Children still start with the
    // default disposition: std's Command resets SIGPIPE to SIG_DFL before exec (checked by the
    // test `program_starts_with_default_sigpipe_and_an_empty_signal_mask`).
    // SAFETY: setting a signal to SIG_IGN installs no handler code.
    if unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) } == libc::SIG_ERR {
        return Err(format!(
            "cannot ignore SIGPIPE: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Do the whole run; returns the launcher's exit code.
fn launch() -> i32 {
    let request = match frame::read_request(libc::STDIN_FILENO) {
        Ok(request) => request,
        // Without a frame there is no nonce, so no trailer: only stderr and the exit code.
        Err(e) => return fail(None, &e),
    };
    let RunRequest {
        nonce,
        files,
        compile,
        run,
    } = request;
    // A failure before any stage started is reported against the stage that would have run.
    let first_stage = if compile.is_empty() {
        Stage::Run
    } else {
        Stage::Compile
    };
    if let Err(e) = workdir::write_files(Path::new("."), files) {
        return fail(Some((&nonce, first_stage)), &e);
    }
    if !compile.is_empty() {
        match stage::run(&compile, Stage::Compile) {
            Ok(finished) if finished.succeeded() => {}
            Ok(finished) => return finish(&nonce, finished.status(Stage::Compile)),
            Err(e) => return fail(Some((&nonce, Stage::Compile)), &e),
        }
    }
    match stage::run(&run, Stage::Run) {
        Ok(finished) => finish(&nonce, finished.status(Stage::Run)),
        Err(e) => fail(Some((&nonce, Stage::Run)), &e),
    }
}

/// The stage that ends the run is over: report it, and exit as it did.
fn finish(nonce: &str, status: onpyrunner_protocol::RunStatus) -> i32 {
    report::write_status(nonce, &status);
    stage::process_exit_code(&status)
}

/// The launcher failed. The stderr line comes first so it is out before the trailer ends the
/// run for the supervisor.
fn fail(known: Option<(&str, Stage)>, error: &LaunchError) -> i32 {
    report::complain(&error.to_string());
    if let Some((nonce, stage)) = known {
        report::write_status(nonce, &report::error_status(stage, error));
    }
    error.exit_code()
}

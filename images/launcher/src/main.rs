//! onpyrunner-launcher: the main process of every language container.
//!
//! It reads one launch frame from stdin (see `onpyrunner_protocol::launch`), writes the source
//! files into the current directory (the container's tmpfs work directory), runs the compile
//! stage if there is one, then runs the program with the rest of stdin as its stdin. A compile
//! stage that succeeds is followed by the compiled record on stdout and stderr, which starts
//! the run stage's clock and output budget outside. When the
//! stage that ends the run is over it writes the status trailer (see
//! `onpyrunner_protocol::status`) to stdout and exits with the program's exit code, or 128 +
//! signal, so Docker's exit code agrees with the trailer even when the trailer is lost.
//!
//! Launcher failures print one `onpyrunner-launcher:` line to stderr, report the error in the
//! trailer once the nonce is known, and exit 125 (launcher failed), 126 (cannot execute) or 127
//! (command not found).
//!
//! Warm mode (`onpyrunner-launcher --warm ARGV...`, see `onpyrunner_protocol::warm`): before
//! reading the frame it starts ARGV, waits until that process says it is ready and writes the
//! readiness marker on stdout. The warm process then does the compile and run stages
//! in-process; the launcher still measures them and writes the trailer. When the warm process
//! cannot be used (it failed to start, or died before the program started) the run goes the
//! usual way, with the table's commands.
//!
//! Early judge mode (`onpyrunner-launcher --judge-early`, a pooled container of a language with
//! a judge process, Node's): before reading the frame it starts the image's judge process and
//! writes the readiness marker once that is ready. A judged run's tests then run in it; any
//! other run kills it before anything else.
mod error;
mod fdio;
mod fork_server;
mod frame;
mod judge;
mod report;
mod stage;
mod warm;
mod workdir;

use std::path::Path;

use onpyrunner_protocol::warm::{JUDGE_EARLY_FLAG, READY_MARKER, WARM_FLAG};
use onpyrunner_protocol::{RunRequest, Stage};

use crate::error::{LaunchError, EXIT_LAUNCHER_FAILED};
use crate::warm::{Compiled, WarmError, WarmProcess};

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
    let early = match early_mode(std::env::args().skip(1).collect()) {
        Ok(early) => early,
        Err(message) => {
            report::complain(&message);
            std::process::exit(EXIT_LAUNCHER_FAILED);
        }
    };
    std::process::exit(launch(early));
}

/// What the launcher starts before the run arrives.
#[derive(Debug, PartialEq, Eq)]
enum Early {
    Nothing,
    /// `--warm ARGV...`: the warm process.
    Warm(Vec<String>),
    /// `--judge-early`: the image's judge process.
    Judge,
}

/// What to start early, from the launcher's arguments: none, `--warm ARGV...` or
/// `--judge-early`.
fn early_mode(args: Vec<String>) -> Result<Early, String> {
    match args.split_first() {
        None => Ok(Early::Nothing),
        Some((flag, argv)) if flag == WARM_FLAG && !argv.is_empty() => {
            Ok(Early::Warm(argv.to_vec()))
        }
        Some((flag, [])) if flag == JUDGE_EARLY_FLAG => Ok(Early::Judge),
        _ => Err(format!(
            "usage: onpyrunner-launcher [{WARM_FLAG} COMMAND ARG... | {JUDGE_EARLY_FLAG}]"
        )),
    }
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
fn launch(early: Early) -> i32 {
    let (warm, mut early_judge) = match &early {
        Early::Nothing => (None, None),
        Early::Warm(argv) => (start_warm(argv), None),
        Early::Judge => (None, start_judge_early()),
    };
    if early != Early::Nothing {
        // Said even when the warm process failed: the run then goes the cold way, and the
        // supervisor must not wait for a marker that never comes.
        if let Err(e) = fdio::write_all(libc::STDOUT_FILENO, READY_MARKER) {
            report::complain(&format!("cannot write the readiness marker: {e}"));
        }
    }
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
        judge,
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
    // The judge process serves only a judged run whose command begins like its own.
    if let Some(process) = early_judge.as_mut() {
        if judge.is_none() || !process.judges(&run) {
            process.kill();
            early_judge = None;
        }
    }
    if let Some(judge) = judge {
        return judged(warm.or(early_judge), &nonce, &compile, &run, judge);
    }
    if let Some(process) = warm {
        match run_warm(process, &nonce, &compile, &run) {
            Ok(code) => return code,
            Err(e) => report::complain(&format!("{e}; running without it")),
        }
    }
    if !compile.is_empty() {
        match stage::run(&compile, Stage::Compile) {
            Ok(finished) if finished.succeeded() => {
                report::write_compiled(&nonce, finished.status(Stage::Compile).usage)
            }
            Ok(finished) => return finish(&nonce, finished.status(Stage::Compile)),
            Err(e) => return fail(Some((&nonce, Stage::Compile)), &e),
        }
    }
    match stage::run(&run, Stage::Run) {
        Ok(finished) => finish(&nonce, finished.status(Stage::Run)),
        Err(e) => fail(Some((&nonce, Stage::Run)), &e),
    }
}

/// A judged run: compile once (in the warm process when there is one, which then runs the
/// tests), then run every test.
fn judged(
    warm: Option<WarmProcess>,
    nonce: &str,
    compile: &[String],
    run: &[String],
    judge: onpyrunner_protocol::launch::Judge,
) -> i32 {
    let mut compiled = false;
    let mut tester = None;
    match warm {
        // An early judge process compiles nothing: it only runs the tests.
        Some(process) if process.is_judge() => tester = Some(process),
        Some(mut process) => {
            if !compile.is_empty() {
                match process.compile(compile) {
                    Ok(Compiled::Ok(usage)) => {
                        report::write_compiled(nonce, usage);
                        compiled = true;
                        tester = Some(process);
                    }
                    Ok(Compiled::Failed(status)) => return finish(nonce, status),
                    Err(e) => {
                        process.kill();
                        report::complain(&format!("{e}; compiling without it"));
                    }
                }
            } else {
                process.kill();
            }
        }
        None => {}
    }
    if !compiled && !compile.is_empty() {
        match stage::run(compile, Stage::Compile) {
            Ok(finished) if finished.succeeded() => {
                report::write_compiled(nonce, finished.status(Stage::Compile).usage)
            }
            Ok(finished) => return finish(nonce, finished.status(Stage::Compile)),
            Err(e) => return fail(Some((nonce, Stage::Compile)), &e),
        }
    }
    judge::run_tests(nonce, run, judge, tester)
}

/// Start the image's judge process and wait until it is ready; `None` without one, or (said on
/// stderr) when it cannot be.
fn start_judge_early() -> Option<WarmProcess> {
    match WarmProcess::start_judge(None) {
        Ok(process) => process,
        Err(e) => {
            report::complain(&format!("{e}; the tests will run fresh"));
            None
        }
    }
}

/// Start the warm process and wait until it is ready; `None` (said on stderr) when it cannot be.
fn start_warm(argv: &[String]) -> Option<WarmProcess> {
    let mut process = match WarmProcess::start(argv) {
        Ok(process) => process,
        Err(e) => {
            report::complain(&e.to_string());
            return None;
        }
    };
    match process.wait_ready() {
        Ok(()) => Some(process),
        Err(e) => {
            process.kill();
            report::complain(&e.to_string());
            None
        }
    }
}

/// Compile and run in the warm process. `Ok(exit code)` once a stage ended the run; `Err` when
/// the warm process failed before the program started (it is gone then, and the run can still
/// go the cold way).
fn run_warm(
    mut process: WarmProcess,
    nonce: &str,
    compile: &[String],
    run: &[String],
) -> Result<i32, WarmError> {
    if !compile.is_empty() {
        match process.compile(compile) {
            Ok(Compiled::Ok(usage)) => report::write_compiled(nonce, usage),
            Ok(Compiled::Failed(status)) => return Ok(finish(nonce, status)),
            Err(e) => {
                process.kill();
                return Err(e);
            }
        }
    }
    match process.run(run) {
        Ok(finished) => Ok(finish(nonce, finished.status(Stage::Run))),
        Err(WarmError::Wait(e)) => Ok(fail(Some((nonce, Stage::Run)), &LaunchError::Wait(e))),
        Err(e) => Err(e),
    }
}

/// The stage that ends the run is over: report it, and exit as it did.
fn finish(nonce: &str, status: onpyrunner_protocol::RunStatus) -> i32 {
    report::write_status(nonce, &status);
    stage::process_exit_code(&status)
}

/// The launcher failed. The stderr line comes first so it is out before the trailer ends the
/// run for the supervisor.
pub(crate) fn fail(known: Option<(&str, Stage)>, error: &LaunchError) -> i32 {
    report::complain(&error.to_string());
    if let Some((nonce, stage)) = known {
        report::write_status(nonce, &report::error_status(stage, error));
    }
    error.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn no_arguments_is_the_usual_launcher() {
        assert_eq!(early_mode(vec![]), Ok(Early::Nothing));
    }

    #[test]
    fn warm_flag_takes_the_rest_as_the_warm_command() {
        assert_eq!(
            early_mode(args(&["--warm", "java", "-cp", "x", "Warm"])),
            Ok(Early::Warm(args(&["java", "-cp", "x", "Warm"])))
        );
    }

    #[test]
    fn judge_early_takes_nothing_more() {
        assert_eq!(early_mode(args(&["--judge-early"])), Ok(Early::Judge));
        assert!(early_mode(args(&["--judge-early", "node"])).is_err());
    }

    #[test]
    fn anything_else_is_a_usage_error() {
        assert!(early_mode(args(&["--warm"])).is_err());
        assert!(early_mode(args(&["java"])).is_err());
        assert!(early_mode(args(&["--cold", "java"])).is_err());
    }
}

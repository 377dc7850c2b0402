//! Running one stage (compile or run) as a child process and measuring it.
use std::io;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onpyrunner_protocol::{RunStatus, Stage, Usage};

use crate::error::LaunchError;

/// A stage's process after it ended.
pub struct Finished {
    /// Raw wait status from wait4.
    pub wait_status: libc::c_int,
    /// The process's resource usage, including the descendants it waited for.
    pub usage: libc::rusage,
    /// From just before spawn (or the warm process's "run") to the return of wait4.
    pub wall: Duration,
    /// CPU time the process had used before the stage began: a warm process's warm-up and
    /// compilation, which the stage's CPU time must not include. 0 for a spawned stage.
    pub cpu_before_ms: u64,
}

impl Finished {
    pub fn succeeded(&self) -> bool {
        libc::WIFEXITED(self.wait_status) && libc::WEXITSTATUS(self.wait_status) == 0
    }

    pub fn status(&self, stage: Stage) -> RunStatus {
        let (exit_code, signal) = exit_code_and_signal(self.wait_status);
        RunStatus {
            usage: Usage {
                stage,
                exit_code,
                signal,
                wall_ms: u64::try_from(self.wall.as_millis()).unwrap_or(u64::MAX),
                cpu_ms: usage_cpu_ms(&self.usage).saturating_sub(self.cpu_before_ms),
                // Linux reports ru_maxrss in KiB. For a warm process it is the peak of the
                // whole process, warm-up included: the kernel keeps no per-stage peak.
                memory_kib: u64::try_from(self.usage.ru_maxrss).unwrap_or(0),
            },
            error: None,
        }
    }
}

/// Spawn `argv` and wait for it.
///
/// The compile stage gets /dev/null as stdin (the rest of stdin belongs to the program) and its
/// stdout goes to stderr, so compiler messages reach the user as diagnostics and never mix with
/// the program's stdout. The run stage inherits fd 0, 1 and 2 as they are: no pipes and no
/// copying, so the program's first byte is not delayed by the launcher.
///
/// argv[0] is looked up on PATH. std resets SIGPIPE to its default and clears the signal mask
/// in the child before exec, so the program does not inherit the launcher's ignored SIGPIPE.
pub fn run(argv: &[String], stage: Stage) -> Result<Finished, LaunchError> {
    let Some((program, args)) = argv.split_first() else {
        return Err(LaunchError::Spawn {
            program: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
        });
    };
    let mut command = Command::new(program);
    command.args(args);
    if stage == Stage::Compile {
        command.stdin(Stdio::null()).stdout(io::stderr());
    }
    let started = Instant::now();
    let child = command.spawn().map_err(|source| LaunchError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // std's Child::wait would not give the rusage; wait4 reaps the child itself, so `child`
    // must never be waited on (dropping a Child neither waits nor kills).
    let (wait_status, usage) = wait4(pid).map_err(LaunchError::Wait)?;
    Ok(Finished {
        wait_status,
        usage,
        wall: started.elapsed(),
        cpu_before_ms: 0,
    })
}

/// Kill a process group (a test's, led by `pid`) with SIGKILL.
pub fn kill_group(pid: libc::pid_t) {
    // SAFETY: kill has no memory effects; a group that is gone is ESRCH, ignored.
    unsafe { libc::kill(-pid, libc::SIGKILL) };
}

/// User + system CPU time of a resource usage, in ms.
pub fn usage_cpu_ms(usage: &libc::rusage) -> u64 {
    timeval_ms(&usage.ru_utime) + timeval_ms(&usage.ru_stime)
}

/// Wait for the child `pid` (retrying on EINTR); its wait status and resource usage.
pub fn wait4(pid: libc::pid_t) -> io::Result<(libc::c_int, libc::rusage)> {
    let mut wait_status = 0;
    // SAFETY: rusage is a plain C struct of integers, for which all-zero bytes are valid.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers refer to live locals of the types wait4 expects.
        let reaped = unsafe { libc::wait4(pid, &mut wait_status, 0, &mut usage) };
        if reaped == pid {
            return Ok((wait_status, usage));
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// (exit code, signal) of a wait status; exactly one is set for a process that ended.
pub fn exit_code_and_signal(wait_status: libc::c_int) -> (Option<i32>, Option<i32>) {
    if libc::WIFEXITED(wait_status) {
        (Some(libc::WEXITSTATUS(wait_status)), None)
    } else if libc::WIFSIGNALED(wait_status) {
        (None, Some(libc::WTERMSIG(wait_status)))
    } else {
        (None, None)
    }
}

/// The launcher's own exit code for a status: the stage's exit code, or 128 + signal like a
/// shell, so Docker's exit code tells the same story when the trailer is lost.
pub fn process_exit_code(status: &RunStatus) -> i32 {
    match (status.usage.exit_code, status.usage.signal) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => crate::error::EXIT_LAUNCHER_FAILED,
    }
}

fn timeval_ms(tv: &libc::timeval) -> u64 {
    let sec = u64::try_from(tv.tv_sec).unwrap_or(0);
    let usec = u64::try_from(tv.tv_usec).unwrap_or(0);
    sec.saturating_mul(1000).saturating_add(usec / 1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Linux wait status encoding: exit code in bits 8..16, terminating signal in bits 0..7.
    fn exited(code: i32) -> libc::c_int {
        code << 8
    }

    fn zero_usage() -> libc::rusage {
        // SAFETY: all-zero bytes are a valid rusage.
        unsafe { std::mem::zeroed() }
    }

    #[test]
    fn normal_exit_gives_exit_code_and_no_signal() {
        assert_eq!(exit_code_and_signal(exited(0)), (Some(0), None));
        assert_eq!(exit_code_and_signal(exited(3)), (Some(3), None));
        assert_eq!(exit_code_and_signal(exited(255)), (Some(255), None));
    }

    #[test]
    fn signal_death_gives_signal_and_no_exit_code() {
        assert_eq!(exit_code_and_signal(libc::SIGKILL), (None, Some(9)));
        // A core dump sets bit 7; the signal is still reported.
        assert_eq!(exit_code_and_signal(libc::SIGSEGV | 0x80), (None, Some(11)));
    }

    #[test]
    fn launcher_exit_code_is_the_program_exit_code_or_128_plus_signal() {
        let finished = |wait_status| Finished {
            wait_status,
            usage: zero_usage(),
            wall: Duration::ZERO,
            cpu_before_ms: 0,
        };
        assert_eq!(
            process_exit_code(&finished(exited(7)).status(Stage::Run)),
            7
        );
        assert_eq!(
            process_exit_code(&finished(libc::SIGKILL).status(Stage::Run)),
            137
        );
        assert!(finished(exited(0)).succeeded());
        assert!(!finished(exited(1)).succeeded());
        assert!(!finished(libc::SIGTERM).succeeded());
    }

    #[test]
    fn status_sums_user_and_system_time_and_keeps_rss_in_kib() {
        let mut usage = zero_usage();
        usage.ru_utime = libc::timeval {
            tv_sec: 1,
            tv_usec: 250_999,
        };
        usage.ru_stime = libc::timeval {
            tv_sec: 0,
            tv_usec: 40_000,
        };
        usage.ru_maxrss = 12_345;
        let status = Finished {
            wait_status: exited(0),
            usage,
            wall: Duration::from_micros(1_500_900),
            cpu_before_ms: 0,
        }
        .status(Stage::Compile);
        assert_eq!(status.usage.stage, Stage::Compile);
        assert_eq!(status.usage.cpu_ms, 1290);
        assert_eq!(status.usage.wall_ms, 1500);
        assert_eq!(status.usage.memory_kib, 12_345);
        assert_eq!(status.error, None);
    }
}

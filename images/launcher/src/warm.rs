//! The warm process: started before the run arrives, it compiles and runs the program in-process
//! (see `onpyrunner_protocol::warm` for the protocol and what is trusted when).
use std::fs::File;
use std::io::{self, Seek};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use onpyrunner_protocol::warm::{
    self, TESTED_LAST, VERB_COMPILE, VERB_COMPILED, VERB_READY, VERB_RUN, VERB_TEST, VERB_TESTED,
};
use onpyrunner_protocol::{RunStatus, Stage, Usage};

use crate::fdio;
use crate::stage::{self, Finished};

/// The warm process's end of the launcher -> warm pipe.
pub const CONTROL_FD: RawFd = 3;
/// The warm process's end of the warm -> launcher pipe.
pub const REPLY_FD: RawFd = 4;
/// The judge process's argv in the image, one argument a line (onpyrunner_languages'
/// `JUDGE_PROCESS_ARGV_FILE`, written by the image build); absent for other languages.
const JUDGE_PROCESS_FILE: &str = "/usr/local/lib/onpyrunner/judge-process";
/// Overrides `JUDGE_PROCESS_FILE`, for the launcher's tests on the host.
const JUDGE_PROCESS_ENV: &str = "ONPYRUNNER_JUDGE_PROCESS";
/// How long a judge process may take to say it is ready (node takes about 40 ms).
const READY_WITHIN: Duration = Duration::from_secs(5);

/// Why the warm process cannot be used; the launcher then runs the program the usual way.
#[derive(Debug)]
pub enum WarmError {
    Spawn(io::Error),
    Io(io::Error),
    /// The pipe ended: the warm process died.
    Ended,
    Message(warm::MessageError),
    /// A message that is not the one expected now.
    Unexpected(Vec<String>),
    /// Waiting for the process failed after the program started: not a reason to run it again.
    Wait(io::Error),
}

impl std::fmt::Display for WarmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Spawn(e) => write!(f, "cannot start the warm process: {e}"),
            Self::Io(e) => write!(f, "warm process control pipe: {e}"),
            Self::Ended => write!(f, "the warm process ended before the run"),
            Self::Message(e) => write!(f, "bad message from the warm process: {e}"),
            Self::Unexpected(parts) => write!(f, "unexpected warm process message {parts:?}"),
            Self::Wait(e) => write!(f, "cannot wait for the warm process: {e}"),
        }
    }
}

/// A started warm process, not yet running user code.
pub struct WarmProcess {
    pid: libc::pid_t,
    /// Launcher -> warm (write end).
    control: OwnedFd,
    /// Warm -> launcher (read end).
    replies: OwnedFd,
    /// A judge process's stdin, which shares this file's offset (each test's input is written
    /// here and rewound), and its program and flags. `None`: a warm process, which opens each
    /// test's input by name.
    judge: Option<(File, Vec<String>)>,
}

/// One judged test run in the warm process (after it compiled).
pub enum Tested {
    /// The test ran. `reusable`: the process waits for the next test; otherwise it was killed
    /// (the clock, left-over threads of the test) or died (the OOM killer, a program that got
    /// at the JVM's own exit), and is reaped.
    Ran {
        finished: Finished,
        timed_out: bool,
        reusable: bool,
    },
    /// The test could not be handed over; nothing of it ran, the process is reaped.
    NotStarted(WarmError),
}

/// The compile stage done by the warm process.
pub enum Compiled {
    /// Compiled (what the compilation used; memory is the warm process's peak so far); the
    /// program can run.
    Ok(Usage),
    /// The compiler failed: this is the run's outcome. The warm process was killed and reaped.
    Failed(RunStatus),
}

impl WarmProcess {
    /// Spawn `argv` with the control pipes on fds 3 and 4; fds 0, 1 and 2 are the container's.
    pub fn start(argv: &[String]) -> Result<WarmProcess, WarmError> {
        Self::spawn(argv, None)
    }

    /// Start the image's judge process and wait until it is ready, when the image has one:
    /// `Ok(None)` without. `run`: the run command it is for (it checks its flags against it);
    /// `None` at container start, before the run is known (it then warms up before it is ready,
    /// and `judges` says later whether it fits the run). Its stdin is an empty memfd that each
    /// test refills; it leads its own process group, which goes with it.
    pub fn start_judge(run: Option<&[String]>) -> Result<Option<WarmProcess>, WarmError> {
        let Some(mut argv) =
            fdio::argv_file(JUDGE_PROCESS_ENV, JUDGE_PROCESS_FILE).map_err(WarmError::Spawn)?
        else {
            return Ok(None);
        };
        // The program and flags: all but the script.
        let prefix = argv[..argv.len() - 1].to_vec();
        if let Some(run) = run {
            // The same program and flags as the run command (the process checks them too).
            if !begins_with_flags(run, &prefix) {
                return Ok(None);
            }
            argv.push("--".into());
            argv.extend_from_slice(run);
        }
        let input = fdio::input_file(b"").map_err(WarmError::Spawn)?;
        let mut process = Self::spawn(&argv, Some((input, prefix)))?;
        let deadline = Instant::now() + READY_WITHIN;
        let ready = match fdio::wait_readable(process.replies.as_raw_fd(), deadline) {
            Ok(true) => process.wait_ready(),
            Ok(false) => Err(WarmError::Io(io::ErrorKind::TimedOut.into())),
            Err(e) => Err(WarmError::Io(e)),
        };
        match ready {
            Ok(()) => Ok(Some(process)),
            Err(e) => Err(process.gone(e)),
        }
    }

    /// Whether this is a judge process (see `start_judge`).
    pub fn is_judge(&self) -> bool {
        self.judge.is_some()
    }

    /// Whether this judge process can run the tests of the run command `run`: it begins with
    /// the judge's program and flags, then names the program's file.
    pub fn judges(&self, run: &[String]) -> bool {
        self.judge
            .as_ref()
            .is_some_and(|(_, prefix)| begins_with_flags(run, prefix))
    }

    fn spawn(
        argv: &[String],
        judge: Option<(File, Vec<String>)>,
    ) -> Result<WarmProcess, WarmError> {
        let (program, args) = argv.split_first().ok_or_else(|| {
            WarmError::Spawn(io::Error::new(io::ErrorKind::InvalidInput, "empty command"))
        })?;
        let (control_read, control) = pipe().map_err(WarmError::Spawn)?;
        let (replies, reply_write) = pipe().map_err(WarmError::Spawn)?;
        let (control_fd, reply_fd) = (control_read.as_raw_fd(), reply_write.as_raw_fd());
        let mut command = Command::new(program);
        command.args(args);
        if let Some((input, _)) = &judge {
            let stdin = input.try_clone().map_err(WarmError::Spawn)?;
            command.stdin(Stdio::from(stdin)).process_group(0);
        }
        // SAFETY: the closure only calls fcntl and dup2, which are async-signal-safe, on
        // descriptors that stay open in the parent until spawn returns.
        unsafe {
            command.pre_exec(move || {
                // Move both out of the way first: dup2 onto 3 could otherwise close the other
                // one. All pipe ends are close-on-exec; only the two dup2 copies survive exec.
                let high_control = cvt(libc::fcntl(control_fd, libc::F_DUPFD_CLOEXEC, 10))?;
                let high_reply = cvt(libc::fcntl(reply_fd, libc::F_DUPFD_CLOEXEC, 10))?;
                cvt(libc::dup2(high_control, CONTROL_FD))?;
                cvt(libc::dup2(high_reply, REPLY_FD))?;
                Ok(())
            });
        }
        let child = command.spawn().map_err(WarmError::Spawn)?;
        // Reaped with wait4 in `run`/`kill`, never through `child`.
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
        drop((control_read, reply_write));
        Ok(WarmProcess {
            pid,
            control,
            replies,
            judge,
        })
    }

    /// Block until the warm process says it is ready.
    pub fn wait_ready(&mut self) -> Result<(), WarmError> {
        let message = self.receive()?;
        if message == [VERB_READY] {
            Ok(())
        } else {
            Err(WarmError::Unexpected(message))
        }
    }

    /// Have the warm process compile with `argv` (the table's compile command).
    ///
    /// Wall and CPU time are those of the compilation alone; peak memory is the warm process's,
    /// warm-up included.
    pub fn compile(&mut self, argv: &[String]) -> Result<Compiled, WarmError> {
        let started = Instant::now();
        let cpu_before = self.cpu_ms();
        let mut message = vec![VERB_COMPILE.to_string()];
        message.extend_from_slice(argv);
        self.send(&message)?;
        let reply = self.receive()?;
        let code = match reply.as_slice() {
            [verb, code] if verb == VERB_COMPILED => code.parse::<i32>().ok(),
            _ => None,
        };
        let Some(code) = code else {
            return Err(WarmError::Unexpected(reply));
        };
        let wall = started.elapsed();
        if code == 0 {
            return Ok(Compiled::Ok(Usage {
                stage: Stage::Compile,
                exit_code: Some(0),
                signal: None,
                wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
                cpu_ms: self.cpu_ms().saturating_sub(cpu_before),
                memory_kib: self.peak_kib(),
            }));
        }
        // The process is no longer needed: the compile stage ends the run.
        let usage = self.kill();
        Ok(Compiled::Failed(RunStatus {
            usage: Usage {
                stage: Stage::Compile,
                exit_code: Some(code),
                signal: None,
                wall_ms: u64::try_from(wall.as_millis()).unwrap_or(u64::MAX),
                cpu_ms: usage
                    .map(|u| stage::usage_cpu_ms(&u).saturating_sub(cpu_before))
                    .unwrap_or(0),
                memory_kib: usage.map_or(0, |u| u64::try_from(u.ru_maxrss).unwrap_or(0)),
            },
            error: None,
        }))
    }

    /// Start the program (the table's run command plus its arguments) and wait for the process
    /// to end. From "run" on, user code runs: nothing more is read from the process, and only
    /// its wait status counts.
    pub fn run(self, argv: &[String]) -> Result<Finished, WarmError> {
        let cpu_before = self.cpu_ms();
        let mut message = vec![VERB_RUN.to_string()];
        message.extend_from_slice(argv);
        let bytes = warm::encode_message(&message).map_err(WarmError::Message)?;
        let started = Instant::now();
        let sent = fdio::write_all(self.control.as_raw_fd(), &bytes);
        let WarmProcess {
            pid,
            control,
            replies,
            judge,
        } = self;
        drop((control, replies, judge));
        if let Err(e) = sent {
            // The process died before the run started; nothing of the program ran.
            let _ = reap(pid);
            return Err(WarmError::Io(e));
        }
        let (wait_status, usage) = stage::wait4(pid).map_err(WarmError::Wait)?;
        Ok(Finished {
            wait_status,
            usage,
            wall: started.elapsed(),
            cpu_before_ms: cpu_before,
        })
    }

    /// Run one judged test in the process (see `onpyrunner_protocol::warm`): `input` as its
    /// stdin, `argv` the table's run command, killed at `wall`. Its exit code is the process's
    /// word; wall and CPU time and the peak memory are measured here.
    pub fn test(&mut self, input: &[u8], argv: &[String], wall: Duration) -> Tested {
        let written = match &mut self.judge {
            Some((file, _)) => refill(file, input).map(|()| None),
            None => InputFile::write(input).map(Some),
        };
        let path = match written {
            Ok(path) => path,
            Err(e) => return Tested::NotStarted(self.gone(WarmError::Io(e))),
        };
        let name = path
            .as_ref()
            .map_or_else(|| "/dev/stdin".to_string(), |p| p.0.display().to_string());
        let mut message = vec![VERB_TEST.to_string(), name];
        message.extend_from_slice(argv);
        let cpu_before = self.cpu_ms();
        // The peak of this test alone: clear_refs "5" sets VmHWM to the current resident set.
        let _ = std::fs::write(format!("/proc/{}/clear_refs", self.pid), b"5");
        let started = Instant::now();
        if let Err(e) = self.send(&message) {
            return Tested::NotStarted(self.gone(e));
        }
        let deadline = started + wall;
        let reply = match fdio::wait_readable(self.replies.as_raw_fd(), deadline) {
            Ok(true) => self.receive(),
            Ok(false) => {
                // The clock: the test runs in this process, so the process goes.
                let (wait_status, usage) = self.kill_reaped();
                return Tested::Ran {
                    finished: Finished {
                        wait_status,
                        usage,
                        wall: started.elapsed(),
                        cpu_before_ms: cpu_before,
                    },
                    timed_out: true,
                    reusable: false,
                };
            }
            Err(e) => Err(WarmError::Io(e)),
        };
        let code = match reply.as_deref() {
            Ok([verb, code]) if verb == VERB_TESTED => code.parse::<i32>().ok().map(|c| (c, true)),
            Ok([verb, code, last]) if verb == VERB_TESTED && last == TESTED_LAST => {
                code.parse::<i32>().ok().map(|c| (c, false))
            }
            _ => None,
        };
        let wall_time = started.elapsed();
        let Some((code, reusable)) = code else {
            // No word from the process: it died in the test (or the program spoke for it). The
            // test gets what the process's own ending says, once it ended.
            let (wait_status, usage, timed_out) = self.reap_by(deadline);
            return Tested::Ran {
                finished: Finished {
                    wait_status,
                    usage,
                    wall: started.elapsed(),
                    cpu_before_ms: cpu_before,
                },
                timed_out,
                reusable: false,
            };
        };
        // SAFETY: all-zero bytes are a valid rusage.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let cpu = self.cpu_ms();
        usage.ru_utime = libc::timeval {
            tv_sec: libc::time_t::try_from(cpu / 1000).unwrap_or(libc::time_t::MAX),
            tv_usec: libc::suseconds_t::try_from(cpu % 1000 * 1000).unwrap_or(0),
        };
        usage.ru_maxrss = libc::c_long::try_from(self.peak_kib()).unwrap_or(libc::c_long::MAX);
        if !reusable {
            self.kill();
        }
        Tested::Ran {
            finished: Finished {
                // As the JVM exits: the low byte of System.exit's argument.
                wait_status: (code & 0xff) << 8,
                usage,
                wall: wall_time,
                cpu_before_ms: cpu_before,
            },
            timed_out: false,
            reusable,
        }
    }

    /// The process is of no more use: killed and reaped; `e` says why.
    fn gone(&mut self, e: WarmError) -> WarmError {
        self.kill();
        e
    }

    /// SIGKILL and reap; the wait status and usage (a killed one when reaping failed).
    fn kill_reaped(&mut self) -> (libc::c_int, libc::rusage) {
        self.signal_kill();
        stage::wait4(self.pid).unwrap_or_else(|_| {
            // SAFETY: all-zero bytes are a valid rusage.
            (libc::SIGKILL, unsafe { std::mem::zeroed() })
        })
    }

    /// Wait until the process ended by itself, or kill it at `deadline`; (status, usage,
    /// whether the clock killed it).
    fn reap_by(&mut self, deadline: Instant) -> (libc::c_int, libc::rusage, bool) {
        loop {
            let mut wait_status = 0;
            // SAFETY: all-zero bytes are a valid rusage.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: both pointers refer to live locals; `pid` is our child.
            let reaped =
                unsafe { libc::wait4(self.pid, &mut wait_status, libc::WNOHANG, &mut usage) };
            if reaped == self.pid {
                return (wait_status, usage, false);
            }
            if reaped < 0 && io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
                // SAFETY: as above, a zeroed rusage.
                return (libc::SIGKILL, unsafe { std::mem::zeroed() }, false);
            }
            if Instant::now() >= deadline {
                let (status, usage) = self.kill_reaped();
                return (status, usage, true);
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// SIGKILL and reap the process; its resource usage when that worked.
    pub fn kill(&mut self) -> Option<libc::rusage> {
        self.signal_kill();
        reap(self.pid).ok()
    }

    /// SIGKILL the process, and a judge process's group: what its tests started goes too.
    fn signal_kill(&self) {
        if self.judge.is_some() {
            stage::kill_group(self.pid);
        }
        // SAFETY: kill only sends a signal; `pid` is our unreaped child, so it names no other
        // process.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
    }

    fn send(&mut self, parts: &[String]) -> Result<(), WarmError> {
        let bytes = warm::encode_message(parts).map_err(WarmError::Message)?;
        fdio::write_all(self.control.as_raw_fd(), &bytes).map_err(WarmError::Io)
    }

    fn receive(&mut self) -> Result<Vec<String>, WarmError> {
        read_message(self.replies.as_raw_fd())
    }

    /// CPU time the process has used so far (all its threads), from the kernel, in ms.
    fn cpu_ms(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| stat_cpu_ms(&stat, clock_ticks_per_second()))
            .unwrap_or(0)
    }

    /// The process's peak resident memory so far (VmHWM), in KiB; 0 when unreadable.
    fn peak_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|status| status_peak_kib(&status))
            .unwrap_or(0)
    }
}

/// Whether the run command `run` is `prefix` (a program and its flags) and then more: the
/// program's file and its arguments.
fn begins_with_flags(run: &[String], prefix: &[String]) -> bool {
    run.len() > prefix.len() && run.starts_with(prefix)
}

/// Make `file` hold exactly `input`, at offset 0 (the offset the judge process's stdin shares).
fn refill(file: &mut File, input: &[u8]) -> io::Result<()> {
    file.set_len(0)?;
    file.write_all_at(input, 0)?;
    file.rewind()?;
    Ok(())
}

/// A judged test's input as a file the warm process opens by name (a JVM cannot take a
/// descriptor over a socket); removed when dropped, after the test.
struct InputFile(PathBuf);

impl InputFile {
    fn write(input: &[u8]) -> io::Result<InputFile> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let path =
            std::env::temp_dir().join(format!("onpyrunner-test-input-{}", std::process::id()));
        // A name a test may have planted (a link, say) is replaced, never followed.
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let done = InputFile(path);
        file.write_all(input)?;
        Ok(done)
    }
}

impl Drop for InputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The `VmHWM:` line of a `/proc/<pid>/status`, in KiB.
fn status_peak_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}

/// Read one message from `fd`.
pub fn read_message(fd: RawFd) -> Result<Vec<String>, WarmError> {
    let mut prefix = [0u8; 4];
    match fdio::read_full(fd, &mut prefix).map_err(WarmError::Io)? {
        4 => {}
        _ => return Err(WarmError::Ended),
    }
    let len = warm::body_len(prefix).map_err(WarmError::Message)?;
    let mut body = vec![0u8; len];
    if fdio::read_full(fd, &mut body).map_err(WarmError::Io)? < len {
        return Err(WarmError::Ended);
    }
    warm::decode_body(&body).map_err(WarmError::Message)
}

/// utime + stime of a `/proc/<pid>/stat` line, in ms. Both are summed over all the threads of
/// the process. The command name (field 2) may contain spaces and parentheses, so fields are
/// counted from the last ')'.
pub fn stat_cpu_ms(stat: &str, ticks_per_second: u64) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    // After the name: state is field 3, utime field 14, stime field 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    if ticks_per_second == 0 {
        return None;
    }
    Some((utime + stime).saturating_mul(1000) / ticks_per_second)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

fn reap(pid: libc::pid_t) -> io::Result<libc::rusage> {
    stage::wait4(pid).map(|(_, usage)| usage)
}

/// A close-on-exec pipe as (read end, write end).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn cvt(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    /// `bytes` as a printf(1) format that writes them back exactly.
    fn printf_format(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("\\{b:03o}")).collect()
    }

    fn message(parts: &[&str]) -> Vec<u8> {
        warm::encode_message(parts).unwrap()
    }

    fn strings(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    /// A scratch file path for one test, removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            let path = std::env::temp_dir()
                .join(format!("onpyrunner-warm-unit-{tag}-{}", std::process::id()));
            let _ = std::fs::remove_file(&path);
            Self(path)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    /// A warm process in sh: burns some CPU, says ready, reads the compile message, answers
    /// `compiled <code>`, then saves the run message to `saved` and exits 3.
    fn fake(compile: &[String], run: &[String], code: &str, saved: &Scratch) -> Vec<String> {
        let mut compile_message = vec!["compile".to_string()];
        compile_message.extend_from_slice(compile);
        let mut run_message = vec!["run".to_string()];
        run_message.extend_from_slice(run);
        let script = format!(
            "i=0; while [ $i -lt 100000 ]; do i=$((i+1)); done\n\
             printf '{ready}' >&4\n\
             head -c {compile_len} <&3 >/dev/null\n\
             printf '{compiled}' >&4\n\
             head -c {run_len} <&3 >'{saved}'\n\
             exit 3\n",
            ready = printf_format(&message(&["ready"])),
            compile_len = warm::encode_message(&compile_message).unwrap().len(),
            compiled = printf_format(&message(&["compiled", code])),
            run_len = warm::encode_message(&run_message).unwrap().len(),
            saved = saved.0.display(),
        );
        strings(&["sh", "-c", &script])
    }

    #[test]
    fn ready_compile_run_and_the_run_stage_excludes_the_warm_up_cpu() {
        let saved = Scratch::new("run");
        let compile = strings(&["javac", "-d", ".", "Main.java"]);
        let run = strings(&["java", "Main", "arg one", "é"]);
        let mut process = WarmProcess::start(&fake(&compile, &run, "0", &saved)).unwrap();
        process.wait_ready().unwrap();
        let warm_up_cpu = process.cpu_ms();
        assert!(
            warm_up_cpu >= 20,
            "the fake burnt {warm_up_cpu} ms before ready"
        );
        let Compiled::Ok(compiled) = process.compile(&compile).unwrap() else {
            panic!("the fake compiles");
        };
        assert_eq!(
            (compiled.stage, compiled.exit_code),
            (Stage::Compile, Some(0))
        );
        assert!(compiled.memory_kib > 0, "{compiled:?}");
        let finished = process.run(&run).unwrap();
        let status = finished.status(Stage::Run);
        assert_eq!(status.usage.exit_code, Some(3));
        assert_eq!(status.usage.stage, Stage::Run);
        assert!(finished.cpu_before_ms >= warm_up_cpu);
        assert!(
            status.usage.cpu_ms < warm_up_cpu,
            "run {} ms vs warm-up {warm_up_cpu} ms",
            status.usage.cpu_ms
        );
        let mut expected = vec!["run".to_string()];
        expected.extend(run);
        let sent = std::fs::read(&saved.0).unwrap();
        assert_eq!(warm::decode_body(&sent[4..]).unwrap(), expected);
    }

    #[test]
    fn a_failed_compile_is_the_outcome_and_the_process_is_killed() {
        let saved = Scratch::new("compile");
        let compile = strings(&["javac", "Main.java"]);
        let run = strings(&["java", "Main"]);
        let mut process = WarmProcess::start(&fake(&compile, &run, "1", &saved)).unwrap();
        let pid = process.pid;
        process.wait_ready().unwrap();
        let Compiled::Failed(status) = process.compile(&compile).unwrap() else {
            panic!("the compile failed");
        };
        assert_eq!(status.usage.stage, Stage::Compile);
        assert_eq!(status.usage.exit_code, Some(1));
        assert_eq!(status.usage.signal, None);
        assert!(status.error.is_none());
        // SAFETY: signal 0 only checks whether the pid exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0;
        assert!(!alive, "the warm process was reaped");
        // The shell may have opened the file before it died; nothing was written to it.
        let run_bytes = std::fs::read(&saved.0).unwrap_or_default();
        assert!(run_bytes.is_empty(), "no run message was sent");
    }

    /// A warm process in sh that serves judged tests: the first gets its input copied to
    /// `saved` and exit code 3, the second leaves a thread ("last"), the third never answers.
    fn fake_tester(run: &[String], saved: &Scratch) -> Vec<String> {
        let path =
            std::env::temp_dir().join(format!("onpyrunner-test-input-{}", std::process::id()));
        let mut test = vec!["test".to_string(), path.display().to_string()];
        test.extend_from_slice(run);
        let test_len = warm::encode_message(&test).unwrap().len();
        let script = format!(
            "printf '{ready}' >&4\n\
             head -c {test_len} <&3 >/dev/null; cat '{path}' >'{saved}'\n\
             printf '{tested}' >&4\n\
             head -c {test_len} <&3 >/dev/null\n\
             printf '{last}' >&4\n\
             sleep 30\n",
            ready = printf_format(&message(&["ready"])),
            path = path.display(),
            saved = saved.0.display(),
            tested = printf_format(&message(&["tested", "259"])),
            last = printf_format(&message(&["tested", "0", "last"])),
        );
        strings(&["sh", "-c", &script])
    }

    #[test]
    fn a_judged_test_gets_its_input_and_code_and_a_last_one_ends_the_process() {
        let saved = Scratch::new("tester");
        let run = strings(&["java", "Main"]);
        let mut process = WarmProcess::start(&fake_tester(&run, &saved)).unwrap();
        process.wait_ready().unwrap();
        let Tested::Ran {
            finished,
            timed_out,
            reusable,
        } = process.test(b"3 4\n", &run, Duration::from_secs(5))
        else {
            panic!("the first test ran");
        };
        assert!(!timed_out && reusable);
        // 259 & 0xff, as a JVM's exit code.
        assert_eq!(finished.status(Stage::Run).usage.exit_code, Some(3));
        assert_eq!(std::fs::read(&saved.0).unwrap(), b"3 4\n");
        let pid = process.pid;
        let Tested::Ran {
            timed_out,
            reusable,
            ..
        } = process.test(b"", &run, Duration::from_secs(5))
        else {
            panic!("the second test ran");
        };
        assert!(!timed_out && !reusable);
        // SAFETY: signal 0 only checks whether the pid exists.
        assert!(unsafe { libc::kill(pid, 0) } != 0, "killed and reaped");
    }

    #[test]
    fn a_judged_test_past_its_clock_kills_the_process() {
        let run = strings(&["java", "Main"]);
        let script = format!(
            "printf '{}' >&4; sleep 30",
            printf_format(&message(&["ready"]))
        );
        let mut process = WarmProcess::start(&strings(&["sh", "-c", &script])).unwrap();
        process.wait_ready().unwrap();
        let started = Instant::now();
        let Tested::Ran {
            finished,
            timed_out,
            reusable,
        } = process.test(b"", &run, Duration::from_millis(200))
        else {
            panic!("the test was handed over");
        };
        assert!(timed_out && !reusable);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            finished.status(Stage::Run).usage.signal,
            Some(libc::SIGKILL)
        );
    }

    #[test]
    fn peak_memory_is_read_from_the_vmhwm_line() {
        let status = "Name:\tjava\nVmPeak:\t 3000 kB\nVmHWM:\t   91234 kB\nVmRSS:\t 80000 kB\n";
        assert_eq!(status_peak_kib(status), Some(91234));
        assert_eq!(status_peak_kib("Name:\tjava\n"), None);
    }

    #[test]
    fn a_process_that_dies_before_ready_is_an_error_not_a_hang() {
        let mut process = WarmProcess::start(&strings(&["sh", "-c", "exit 7"])).unwrap();
        assert!(matches!(process.wait_ready(), Err(WarmError::Ended)));
        assert!(process.kill().is_some(), "reaped");
    }

    #[test]
    fn a_wrong_first_message_is_unexpected() {
        let script = format!(
            "printf '{}' >&4; sleep 5",
            printf_format(&message(&["run"]))
        );
        let mut process = WarmProcess::start(&strings(&["sh", "-c", &script])).unwrap();
        match process.wait_ready() {
            Err(WarmError::Unexpected(parts)) => assert_eq!(parts, ["run"]),
            other => panic!("{other:?}"),
        }
        process.kill();
    }

    #[test]
    fn a_missing_program_is_a_spawn_error() {
        let err = WarmProcess::start(&strings(&["/nonexistent/java"]))
            .err()
            .unwrap();
        assert!(matches!(err, WarmError::Spawn(_)), "{err:?}");
        assert!(WarmProcess::start(&[]).is_err());
    }

    #[test]
    fn fd_3_reads_the_control_pipe_and_fd_4_writes_the_replies_and_no_other_end_leaks() {
        // cat ends only when fd 3 reaches EOF, which needs every write end of the control pipe
        // closed: had the launcher's end leaked into the child, this would hang.
        let mut process = WarmProcess::start(&strings(&["sh", "-c", "cat <&3 >&4"])).unwrap();
        process.send(&strings(&["ready"])).unwrap();
        process.wait_ready().unwrap();
        let WarmProcess {
            pid,
            control,
            replies,
            ..
        } = process;
        drop(control);
        let mut rest = [0u8; 8];
        assert_eq!(fdio::read_full(replies.as_raw_fd(), &mut rest).unwrap(), 0);
        let (status, _) = stage::wait4(pid).unwrap();
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    }

    #[test]
    fn stat_cpu_time_counts_from_the_last_parenthesis() {
        let stat = "42 (ja va) (x)) S 1 42 42 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 9 0 1 2 3";
        assert_eq!(stat_cpu_ms(stat, 100), Some(1750));
        assert_eq!(stat_cpu_ms(stat, 0), None);
        assert_eq!(stat_cpu_ms("42 (java) S 1", 100), None);
        assert_eq!(stat_cpu_ms("no name", 100), None);
    }
}

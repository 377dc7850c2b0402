//! The judge fork server (images/warm/onpyrunner_fork.py): an interpreter started once per
//! judged run, that forks a child per test instead of the launcher spawning a fresh
//! interpreter, which saves the interpreter's start-up on every test.
//!
//! The launcher keeps the clock: the server says the child's pid at once, the child is in its
//! own process group, and the launcher kills that group at the test's wall clock as it does a
//! spawned test. The server is the child's parent, so it waits for it and sends the wait status
//! and rusage back. Messages are SOCK_SEQPACKET datagrams on fd 3 of the server:
//! server `ready`; launcher `test` with the input memfd attached (SCM_RIGHTS); server `pid N`,
//! then `end STATUS UTIME_US STIME_US MAXRSS_KIB`.
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::stage::Finished;

/// The server's argv in the image, one argument a line (onpyrunner_languages'
/// `JUDGE_SERVER_ARGV_FILE`, written by the image build); absent for other languages.
const ARGV_FILE: &str = "/usr/local/lib/onpyrunner/judge-server";
/// Overrides `ARGV_FILE`, for the launcher's tests on the host.
const ARGV_FILE_ENV: &str = "ONPYRUNNER_JUDGE_SERVER";
/// The fd the server finds its socket on.
const SERVER_FD: RawFd = 3;
/// How long the server may take to say it is ready (CPython takes about 15 ms, PyPy 35).
const READY_WITHIN: Duration = Duration::from_secs(5);
/// How long a killed or ended child's report may take once the child is gone.
const REPORT_WITHIN: Duration = Duration::from_secs(2);

#[derive(Debug)]
pub enum ServerError {
    Start(io::Error),
    Io(io::Error),
    Protocol(String),
    Silent,
}

impl From<io::Error> for ServerError {
    fn from(e: io::Error) -> Self {
        ServerError::Io(e)
    }
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Start(e) => write!(f, "the judge fork server did not start: {e}"),
            ServerError::Io(e) => write!(f, "the judge fork server failed: {e}"),
            ServerError::Protocol(msg) => write!(f, "the judge fork server said {msg:?}"),
            ServerError::Silent => write!(f, "the judge fork server did not answer in time"),
        }
    }
}

/// Why a test through the server did not give a result.
pub enum TestFailure {
    /// Before the child existed: the test can still run the fresh way.
    NotStarted(ServerError),
    /// The child `pid` started; its result is lost with the server.
    Lost(libc::pid_t, ServerError),
}

pub struct ForkServer {
    pid: libc::pid_t,
    socket: OwnedFd,
}

impl ForkServer {
    /// Start the image's fork server for `run`, when the image has one: `Ok(None)` without.
    pub fn start(run: &[String]) -> Result<Option<Self>, ServerError> {
        let Some(argv) =
            crate::fdio::argv_file(ARGV_FILE_ENV, ARGV_FILE).map_err(ServerError::Start)?
        else {
            return Ok(None);
        };
        let (program, args) = argv
            .split_first()
            .expect("argv_file gives a non-empty argv");
        // The same interpreter as the run command (the server checks the flags).
        if run.first() != Some(program) {
            return Ok(None);
        }
        let (ours, theirs) = socket_pair().map_err(ServerError::Start)?;
        // An empty memfd, so the interpreter's stdin object is made over the same kind of file
        // as the tests' input it is given later.
        let stdin = crate::fdio::input_file(b"").map_err(ServerError::Start)?;
        let mut command = Command::new(program);
        command
            .args(args)
            .arg("--")
            .args(run)
            .stdin(Stdio::from(stdin));
        let theirs_fd = theirs.as_raw_fd();
        // SAFETY: dup2 is async-signal-safe; the new fd 3 has no FD_CLOEXEC, so it is the one
        // descriptor of ours the server keeps across exec.
        unsafe {
            command.pre_exec(move || {
                if libc::dup2(theirs_fd, SERVER_FD) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(ServerError::Start)?;
        drop(theirs);
        let server = ForkServer {
            pid: libc::pid_t::try_from(child.id()).expect("pid fits in pid_t"),
            socket: ours,
        };
        let failure = match server.receive(Instant::now() + READY_WITHIN) {
            Ok(Some(msg)) if msg == "ready" => return Ok(Some(server)),
            Ok(Some(msg)) => ServerError::Protocol(msg),
            Ok(None) => ServerError::Protocol("nothing: it ended".into()),
            Err(e) => e,
        };
        server.kill();
        Err(failure)
    }

    /// Run one test: the child gets `input` as stdin and is killed with its group at `wall`.
    /// Returns the finished child and whether the clock killed it.
    pub fn run_test(&self, input: File, wall: Duration) -> Result<(Finished, bool), TestFailure> {
        let started = Instant::now();
        send_with_fd(self.socket.as_raw_fd(), b"test", input.as_raw_fd())
            .map_err(|e| TestFailure::NotStarted(e.into()))?;
        drop(input);
        let deadline = started + wall;
        let pid = match self.receive(deadline.max(Instant::now() + READY_WITHIN)) {
            Ok(Some(msg)) => msg
                .strip_prefix("pid ")
                .and_then(|n| n.parse::<libc::pid_t>().ok())
                .filter(|&pid| pid > 1)
                .ok_or(TestFailure::NotStarted(ServerError::Protocol(msg)))?,
            Ok(None) => {
                return Err(TestFailure::NotStarted(ServerError::Protocol(
                    "nothing: it ended".into(),
                )))
            }
            Err(e) => return Err(TestFailure::NotStarted(e)),
        };
        let mut timed_out = false;
        let report = match self.receive(deadline) {
            Err(ServerError::Silent) => {
                timed_out = true;
                crate::stage::kill_group(pid);
                self.receive(Instant::now() + REPORT_WITHIN)
            }
            other => other,
        };
        let wall_time = started.elapsed();
        // Left-over processes of this test must not run into the next one.
        crate::stage::kill_group(pid);
        let msg = match report {
            Ok(Some(msg)) => msg,
            Ok(None) => {
                return Err(TestFailure::Lost(
                    pid,
                    ServerError::Protocol("nothing: it ended".into()),
                ))
            }
            Err(e) => return Err(TestFailure::Lost(pid, e)),
        };
        let (wait_status, usage) =
            parse_end(&msg).ok_or(TestFailure::Lost(pid, ServerError::Protocol(msg)))?;
        Ok((
            Finished {
                wait_status,
                usage,
                wall: wall_time,
                cpu_before_ms: 0,
            },
            timed_out,
        ))
    }

    /// Receive one message by `deadline`; `None` when the server hung up.
    fn receive(&self, deadline: Instant) -> Result<Option<String>, ServerError> {
        let fd = self.socket.as_raw_fd();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut poll = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            let ms = libc::c_int::try_from(left.as_millis().saturating_add(1))
                .unwrap_or(libc::c_int::MAX);
            // SAFETY: one live pollfd.
            let n = unsafe { libc::poll(&mut poll, 1, ms) };
            if n < 0 {
                let err = io::Error::last_os_error();
                if err.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(err.into());
            }
            if n == 0 {
                if Instant::now() >= deadline {
                    return Err(ServerError::Silent);
                }
                continue;
            }
            let mut buf = [0u8; 256];
            // SAFETY: `buf` is a live writable buffer of its length.
            let got = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
            match usize::try_from(got) {
                Ok(0) => return Ok(None),
                Ok(len) => return Ok(Some(String::from_utf8_lossy(&buf[..len]).into_owned())),
                Err(_) => {
                    let err = io::Error::last_os_error();
                    if err.kind() == io::ErrorKind::Interrupted {
                        continue;
                    }
                    if err.raw_os_error() == Some(libc::ECONNRESET) {
                        return Ok(None);
                    }
                    return Err(err.into());
                }
            }
        }
    }

    /// Kill the server and reap it.
    pub fn kill(self) {
        drop(self.socket);
        // SAFETY: kill has no memory effects; the pid is our unreaped child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = crate::stage::wait4(self.pid);
    }
}

/// `end STATUS UTIME_US STIME_US MAXRSS_KIB` as a wait status and rusage.
fn parse_end(msg: &str) -> Option<(libc::c_int, libc::rusage)> {
    let mut fields = msg.strip_prefix("end ")?.split(' ');
    let mut next = || fields.next()?.parse::<i64>().ok();
    let status = libc::c_int::try_from(next()?).ok()?;
    let (utime, stime, maxrss) = (next()?, next()?, next()?);
    // SAFETY: all-zero bytes are a valid rusage.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    usage.ru_utime = timeval(utime);
    usage.ru_stime = timeval(stime);
    usage.ru_maxrss = maxrss;
    Some((status, usage))
}

fn timeval(us: i64) -> libc::timeval {
    let us = us.max(0);
    libc::timeval {
        tv_sec: us / 1_000_000,
        tv_usec: us % 1_000_000,
    }
}

fn socket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: socketpair succeeded, so both descriptors are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Send `data` with `fd` attached as SCM_RIGHTS.
fn send_with_fd(socket: RawFd, data: &[u8], fd: RawFd) -> io::Result<()> {
    let fd_len = std::mem::size_of::<RawFd>() as libc::c_uint;
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_len) } as usize;
    // u64 words keep the control buffer aligned for cmsghdr.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: all-zero bytes are a valid msghdr; the pointers are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `space` bytes, room for one header with one fd, so
    // CMSG_FIRSTHDR is non-null and CMSG_DATA has room for the fd; sendmsg reads only live
    // buffers (`iov` over `data`, `control`).
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(fd_len) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        loop {
            if libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) >= 0 {
                return Ok(());
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_end_report_becomes_a_wait_status_and_rusage() {
        let (status, usage) = parse_end("end 768 1500000 2500 11648").unwrap();
        assert_eq!(status, 768);
        assert_eq!(usage.ru_utime.tv_sec, 1);
        assert_eq!(usage.ru_utime.tv_usec, 500_000);
        assert_eq!(usage.ru_stime.tv_usec, 2500);
        assert_eq!(usage.ru_maxrss, 11648);
        assert!(parse_end("end 1 2").is_none());
        assert!(parse_end("pid 3").is_none());
    }
}

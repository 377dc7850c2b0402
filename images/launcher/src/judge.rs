//! A judged run: the program runs once per test, as judges run it. Each test is a fresh process
//! with the test's input as its stdin (a memfd: a seekable file, as judges give), in the work
//! directory as the compile stage left it (files a test created are removed before the next
//! one), killed with its process group at the test's wall clock. After each test the launcher
//! writes a test record with what the test used; after the last, the status trailer.
//!
//! A language whose image has a judge fork server (`fork_server.rs`: CPython and PyPy) runs each
//! test as a fork of an interpreter started once, with the same input, group, clock, reset and
//! records; when the server cannot start or dies, the tests go on as fresh processes.
//!
//! Java runs each test in its warm JVM itself, the one that compiled the program (`warm.rs`,
//! images/warm/OnpyrunnerJudge.java): a fresh class loader per test, the input as a file. The
//! JVM is then the test's process: at the clock, or when a test leaves threads running, the JVM
//! is killed and the rest of the tests run fresh.
//!
//! Node, which cannot fork, runs the tests of a run of more than one in a judge process started
//! once after the compile (images/warm/onpyrunner_judge.js), as Java runs them in its warm JVM,
//! with the test's input on its fd 0 (a memfd refilled and rewound per test).
//!
//! Tests of one submission are not isolated from each other beyond that: it is not a security
//! boundary (the container is, around all of them).
use std::collections::HashSet;
use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use onpyrunner_protocol::launch::Judge;
use onpyrunner_protocol::{RunStatus, Stage, TestEnded, Usage};

use crate::error::LaunchError;
use crate::fdio::input_file;
use crate::fork_server::{ForkServer, TestFailure};
use crate::report;
use crate::stage::kill_group;
use crate::stage::{self, Finished};
use crate::warm::{Tested, WarmProcess};

/// Where the container's cgroup counts OOM kills, as an `oom_kill N` line: cgroup v2's
/// memory.events, or v1's memory.oom_control (the container sees its own cgroup at both).
const OOM_COUNTERS: [&str; 2] = [
    "/sys/fs/cgroup/memory.events",
    "/sys/fs/cgroup/memory/memory.oom_control",
];

/// What runs the tests instead of a fresh process each.
enum TestServer {
    /// Each test a fork of the server.
    Fork(ForkServer),
    /// Each test in the warm process itself.
    Warm(WarmProcess),
}

/// Run every test; the launcher's exit code. `warm` is the warm process that compiled the
/// program, which runs the tests; without it, a fork server's forks do when the image has one.
/// When the server fails, this test (if it had not started) and the rest run fresh.
pub fn run_tests(nonce: &str, run: &[String], judge: Judge, warm: Option<WarmProcess>) -> i32 {
    let mut server = match warm {
        Some(process) => Some(TestServer::Warm(process)),
        None => match ForkServer::start(run) {
            Ok(Some(server)) => Some(TestServer::Fork(server)),
            // A judge process saves its start-up on every test but the first: with one test
            // there is nothing to save.
            Ok(None) if judge.inputs.len() > 1 => match WarmProcess::start_judge(Some(run)) {
                Ok(process) => process.map(TestServer::Warm),
                Err(e) => {
                    report::complain(&format!("{e}; running each test fresh"));
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                report::complain(&format!("{e}; running each test fresh"));
                None
            }
        },
    };
    let code = run_all(nonce, run, judge, &mut server);
    match server {
        Some(TestServer::Fork(server)) => server.kill(),
        Some(TestServer::Warm(mut process)) => {
            process.kill();
        }
        None => {}
    }
    code
}

fn run_all(nonce: &str, run: &[String], judge: Judge, server: &mut Option<TestServer>) -> i32 {
    let keep = match snapshot(Path::new(".")) {
        Ok(keep) => keep,
        Err(e) => return crate::fail(Some((nonce, Stage::Run)), &LaunchError::Test(e)),
    };
    let wall = Duration::from_millis(u64::from(judge.wall_ms));
    // The run's usage: the most any test used, as judges report it.
    let mut most = Usage {
        exit_code: Some(0),
        ..Usage::new(Stage::Run)
    };
    for (index, input) in judge.inputs.into_iter().enumerate() {
        if index > 0 {
            if let Err(e) = reset(Path::new("."), &keep) {
                return crate::fail(Some((nonce, Stage::Run)), &LaunchError::Test(e));
            }
        }
        let ended = match run_test(server, run, &input, wall) {
            Ok(ended) => ended,
            Err(e) => return crate::fail(Some((nonce, Stage::Run)), &e),
        };
        let usage = ended.finished.status(Stage::Run).usage;
        most.wall_ms = most.wall_ms.max(usage.wall_ms);
        most.cpu_ms = most.cpu_ms.max(usage.cpu_ms);
        most.memory_kib = most.memory_kib.max(usage.memory_kib);
        report::write_test(
            nonce,
            &TestEnded {
                index: u32::try_from(index).unwrap_or(u32::MAX),
                usage,
                timed_out: ended.timed_out,
                memory_exceeded: ended.memory_exceeded,
            },
        );
    }
    report::write_status(
        nonce,
        &RunStatus {
            usage: most,
            error: None,
        },
    );
    0
}

struct Ended {
    finished: Finished,
    timed_out: bool,
    memory_exceeded: bool,
}

/// One test, through the server while there is one.
fn run_test(
    server: &mut Option<TestServer>,
    argv: &[String],
    input: &[u8],
    wall: Duration,
) -> Result<Ended, LaunchError> {
    if let Some(TestServer::Warm(process)) = server.as_mut() {
        let oom_before = oom_kills();
        match process.test(input, argv, wall) {
            Tested::Ran {
                finished,
                timed_out,
                reusable,
            } => {
                // Not said on stderr: the test's result is right, only the next tests are slower.
                if !reusable {
                    *server = None;
                }
                return Ok(Ended {
                    finished,
                    timed_out,
                    memory_exceeded: memory_exceeded(oom_before),
                });
            }
            Tested::NotStarted(e) => {
                *server = None;
                report::complain(&format!("{e}; running each test fresh"));
            }
        }
    }
    if let Some(TestServer::Fork(forks)) = server.as_ref() {
        let stdin = input_file(input).map_err(LaunchError::Test)?;
        let oom_before = oom_kills();
        let failure = match forks.run_test(stdin, wall) {
            Ok((finished, timed_out)) => {
                return Ok(Ended {
                    finished,
                    timed_out,
                    memory_exceeded: memory_exceeded(oom_before),
                })
            }
            Err(failure) => failure,
        };
        if let Some(TestServer::Fork(gone)) = server.take() {
            gone.kill();
        }
        match failure {
            TestFailure::NotStarted(e) => {
                report::complain(&format!("{e}; running each test fresh"));
            }
            TestFailure::Lost(pid, e) => {
                // The program may have killed its parent, or the OOM killer chose it: the
                // test's own status went with it. It is reported killed, as it is by now.
                kill_group(pid);
                report::complain(&format!("{e}; running the other tests fresh"));
                // SAFETY: all-zero bytes are a valid rusage.
                let usage: libc::rusage = unsafe { std::mem::zeroed() };
                return Ok(Ended {
                    finished: Finished {
                        wait_status: libc::SIGKILL,
                        usage,
                        wall: Duration::ZERO,
                        cpu_before_ms: 0,
                    },
                    timed_out: false,
                    memory_exceeded: memory_exceeded(oom_before),
                });
            }
        }
    }
    run_one(argv, input, wall)
}

fn memory_exceeded(oom_before: Option<u64>) -> bool {
    match (oom_before, oom_kills()) {
        (Some(before), Some(after)) => after > before,
        _ => false,
    }
}

/// One test: spawn the program in its own process group with `input` as stdin, wait at most
/// `wall`, and kill what is left of the group either way.
fn run_one(argv: &[String], input: &[u8], wall: Duration) -> Result<Ended, LaunchError> {
    let (program, args) = argv.split_first().ok_or_else(|| LaunchError::Spawn {
        program: String::new(),
        source: io::Error::new(io::ErrorKind::InvalidInput, "empty command"),
    })?;
    let stdin = input_file(input).map_err(LaunchError::Test)?;
    let oom_before = oom_kills();
    let mut command = Command::new(program);
    command
        .args(args)
        .stdin(Stdio::from(stdin))
        .process_group(0);
    let started = Instant::now();
    let child = command.spawn().map_err(|source| LaunchError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = libc::pid_t::try_from(child.id()).expect("pid fits in pid_t");
    // wait4 blocks, so it waits on a thread while this one keeps the clock.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(stage::wait4(pid));
    });
    let (waited, timed_out) = match rx.recv_timeout(wall) {
        Ok(waited) => (waited, false),
        Err(_) => {
            kill_group(pid);
            (
                rx.recv()
                    .unwrap_or_else(|_| Err(io::Error::other("waiter gone"))),
                true,
            )
        }
    };
    let wall_time = started.elapsed();
    // Left-over processes of this test must not run into the next one.
    kill_group(pid);
    let (wait_status, usage) = waited.map_err(LaunchError::Wait)?;
    Ok(Ended {
        finished: Finished {
            wait_status,
            usage,
            wall: wall_time,
            cpu_before_ms: 0,
        },
        timed_out,
        memory_exceeded: memory_exceeded(oom_before),
    })
}

/// The container's OOM kill count so far; `None` where it cannot be read (no cgroup v2 view,
/// as under some runtimes).
fn oom_kills() -> Option<u64> {
    OOM_COUNTERS.iter().find_map(|path| {
        let text = std::fs::read_to_string(path).ok()?;
        oom_kill_line(&text)
    })
}

fn oom_kill_line(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
}

/// The names in `dir` now.
fn snapshot(dir: &Path) -> io::Result<HashSet<OsString>> {
    std::fs::read_dir(dir)?
        .map(|entry| entry.map(|e| e.file_name()))
        .collect()
}

/// Remove what is in `dir` and not in `keep`.
fn reset(dir: &Path, keep: &HashSet<OsString>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if keep.contains(&entry.file_name()) {
            continue;
        }
        let path = entry.path();
        // file_type does not follow symlinks: a planted link is removed, never its target.
        if entry.file_type()?.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("onpyrunner-judge-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_oom_kill_count_is_read_from_v1_and_v2_files() {
        let v2 = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(oom_kill_line(v2), Some(2));
        assert_eq!(oom_kill_line(v1), Some(5));
        assert_eq!(oom_kill_line("under_oom 0\n"), None);
    }

    #[test]
    fn reset_removes_what_a_test_made_and_keeps_the_rest() {
        let dir = scratch("reset");
        std::fs::write(dir.join("main"), b"binary").unwrap();
        let keep = snapshot(&dir).unwrap();
        std::fs::write(dir.join("out.txt"), b"x").unwrap();
        std::fs::create_dir_all(dir.join("d/e")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("link")).unwrap();
        reset(&dir, &keep).unwrap();
        assert_eq!(snapshot(&dir).unwrap(), keep);
        assert!(
            Path::new("/etc/passwd").exists(),
            "the link's target is untouched"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_test_reads_its_input_and_a_slow_one_is_killed_at_its_clock() {
        let argv = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        let ended = run_one(
            &argv("read a b; exit $((a + b))"),
            b"3 4\n",
            Duration::from_secs(5),
        )
        .unwrap();
        assert!(!ended.timed_out);
        assert_eq!(ended.finished.status(Stage::Run).usage.exit_code, Some(7));
        let started = Instant::now();
        // The child of the shell is in the group too, and dies with it.
        let ended = run_one(&argv("sleep 30 & wait"), b"", Duration::from_millis(200)).unwrap();
        assert!(ended.timed_out);
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(
            ended.finished.status(Stage::Run).usage.signal,
            Some(libc::SIGKILL)
        );
    }
}

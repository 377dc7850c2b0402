//! Runs the built launcher on the host, in a fresh directory, with host programs as the stage
//! commands, and checks what a supervisor would see: stdout (with the trailer), stderr, and the
//! exit code.
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use onpyrunner_protocol::status::MARKER_PREFIX;
use onpyrunner_protocol::{
    Piece, Record, RecordScanner, RunRequest, RunStatus, SourceFile, Stage, Usage,
};

const LAUNCHER: &str = env!("CARGO_BIN_EXE_onpyrunner-launcher");
const NONCE: &str = "T3stN0nce42";
/// Generous: every program here finishes in well under a second.
const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh directory for one launcher run, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "onpyrunner-launcher-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// What came out of one launcher run.
#[derive(Debug)]
struct Outcome {
    /// The launcher's exit code, or 128 + signal.
    code: i32,
    /// Raw stdout, trailer included.
    stdout: Vec<u8>,
    /// Stderr as the supervisor sees it: the trailer taken out (see `stderr_status`).
    stderr: Vec<u8>,
    /// The trailer found on stderr; it must equal the one on stdout.
    stderr_status: Option<RunStatus>,
    /// The compiled record found on stderr; it must equal the one on stdout.
    stderr_compiled: Option<Usage>,
    /// The launcher's pid.
    pid: u32,
}

/// A stream split the way the supervisor does: the user's bytes, the compiled record and the
/// status, if any.
fn scan(stream: &[u8]) -> (Vec<u8>, Option<Usage>, Option<RunStatus>) {
    let mut scanner = RecordScanner::new(NONCE);
    let (mut user, mut compiled, mut status) = (Vec::new(), None, None);
    for piece in scanner.push(stream) {
        match piece {
            Piece::Output(bytes) => user.extend_from_slice(&bytes),
            Piece::Record(Ok(Record::Compiled(usage))) => {
                assert!(
                    compiled.is_none() && status.is_none(),
                    "one compiled record, first"
                );
                compiled = Some(usage);
            }
            Piece::Record(Ok(Record::Status(s))) => status = Some(s),
            Piece::Record(Ok(Record::Test(_))) => {}
            Piece::Record(Err(e)) => panic!("a record that does not parse: {e}"),
        }
    }
    user.extend_from_slice(&scanner.finish());
    (user, compiled, status)
}

impl Outcome {
    /// Split stdout the way the supervisor does: the user's bytes and the status, if any.
    fn scan(&self) -> (Vec<u8>, Option<RunStatus>) {
        let (user, compiled, status) = scan(&self.stdout);
        assert_eq!(
            compiled, self.stderr_compiled,
            "the same compiled record on both"
        );
        (user, status)
    }

    /// The compiled record (the same on both streams).
    fn compiled(&self) -> Option<Usage> {
        let (_, compiled, _) = scan(&self.stdout);
        assert_eq!(
            compiled, self.stderr_compiled,
            "the same compiled record on both"
        );
        compiled
    }

    fn user_stdout(&self) -> Vec<u8> {
        self.scan().0
    }

    fn status(&self) -> RunStatus {
        let status = self
            .scan()
            .1
            .unwrap_or_else(|| panic!("no status trailer in {self:?}"));
        assert_eq!(
            self.stderr_status.as_ref(),
            Some(&status),
            "the same trailer ends stderr"
        );
        status
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn request(files: &[(&str, &[u8])], compile: &[&str], run: &[&str]) -> RunRequest {
    RunRequest {
        nonce: NONCE.into(),
        files: files
            .iter()
            .map(|(name, content)| SourceFile {
                name: name.to_string(),
                content: content.to_vec(),
            })
            .collect(),
        compile: argv(compile),
        judge: None,
        run: argv(run),
    }
}

/// A request with a dummy source file and only a run stage.
fn run_only(run: &[&str]) -> RunRequest {
    request(&[("main.txt", b"source")], &[], run)
}

/// Run the launcher in `dir` with `input` (frame and program stdin, sent in one write, which
/// is exactly what a buffered reader would get wrong) as its stdin.
fn launch_in(dir: &Path, mut command: Command, input: Vec<u8>) -> Outcome {
    let mut child = command
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the launcher");
    let pid = child.id();
    let mut stdin = child.stdin.take().unwrap();
    // The program may not read all of its stdin; a broken pipe here is not a failure.
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(TIMEOUT) {
        Ok(output) => output.expect("wait for the launcher"),
        Err(_) => {
            // SAFETY: kill(2) with a pid we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            panic!("the launcher did not finish within {TIMEOUT:?}");
        }
    };
    use std::os::unix::process::ExitStatusExt;
    let code = output
        .status
        .code()
        .or_else(|| output.status.signal().map(|s| 128 + s))
        .unwrap();
    let (stderr, stderr_compiled, stderr_status) = scan(&output.stderr);
    Outcome {
        code,
        stdout: output.stdout,
        stderr,
        stderr_status,
        stderr_compiled,
        pid,
    }
}

fn launch_raw(input: Vec<u8>) -> Outcome {
    let dir = TempDir::new();
    launch_in(&dir.0, Command::new(LAUNCHER), input)
}

fn launch(request: &RunRequest, program_stdin: &[u8]) -> Outcome {
    let mut input = request.encode().expect("a valid request encodes");
    input.extend_from_slice(program_stdin);
    launch_raw(input)
}

#[test]
fn program_stdin_is_exactly_the_bytes_after_the_frame() {
    // Every byte value, and more than any stdio buffer would read ahead.
    let stdin: Vec<u8> = (0..=255u8).cycle().take(300_000).collect();
    let out = launch(&run_only(&["cat"]), &stdin);
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    assert!(out.user_stdout() == stdin, "stdin was altered on its way");
    assert_eq!(out.status().usage.exit_code, Some(0));
}

#[test]
fn program_sees_end_of_input_when_nothing_follows_the_frame() {
    let out = launch(&run_only(&["sh", "-c", "wc -c"]), b"");
    assert_eq!(out.code, 0);
    assert_eq!(String::from_utf8(out.user_stdout()).unwrap().trim(), "0");
}

#[test]
fn stdout_and_stderr_stay_separate() {
    let out = launch(
        &run_only(&[
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; echo more-stdout",
        ]),
        b"",
    );
    assert_eq!(out.code, 0);
    assert_eq!(out.user_stdout(), b"to-stdout\nmore-stdout\n");
    assert_eq!(out.stderr, b"to-stderr\n");
}

#[test]
fn trailer_ends_stdout_and_reports_run_stage_and_exit_code() {
    // Output without a final newline must come through intact, right before the trailer.
    let out = launch(
        &run_only(&["python3", "-c", "print('hello', end='', flush=True)"]),
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    let (user, status) = out.scan();
    assert_eq!(user, b"hello");
    let status = status.expect("a trailer");
    assert_eq!(status.usage.stage, Stage::Run);
    assert_eq!(status.usage.exit_code, Some(0));
    assert_eq!(status.usage.signal, None);
    assert_eq!(status.error, None);
    assert!(status.usage.memory_kib > 0, "{status:?}");
    // The trailer is the last thing on stdout, and it carries the nonce.
    let mut marker = MARKER_PREFIX.to_vec();
    marker.extend_from_slice(NONCE.as_bytes());
    assert!(out.stdout.starts_with(b"hello"));
    assert!(out.stdout[5..].starts_with(&marker), "{:?}", out.stdout);
    assert!(out.stdout.ends_with(b"\n"));
    assert_eq!(out.stdout.iter().filter(|&&b| b == b'\n').count(), 1);
}

#[test]
fn status_measures_cpu_time_and_peak_memory() {
    let program = "import time\n\
                   data = b'x' * (64 << 20)\n\
                   start = time.process_time()\n\
                   while time.process_time() - start < 0.3: pass\n";
    let out = launch(&run_only(&["python3", "-c", program]), b"");
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    let status = out.status();
    assert!(status.usage.cpu_ms >= 250, "{status:?}");
    assert!(
        status.usage.wall_ms >= status.usage.cpu_ms / 2,
        "{status:?}"
    );
    assert!(status.usage.memory_kib >= 60 * 1024, "{status:?}");
}

#[test]
fn nonzero_exit_code_is_reported_and_becomes_the_launcher_exit_code() {
    let out = launch(&run_only(&["sh", "-c", "echo partial; exit 7"]), b"");
    assert_eq!(out.code, 7);
    assert_eq!(out.user_stdout(), b"partial\n");
    let status = out.status();
    assert_eq!(
        (
            status.usage.stage,
            status.usage.exit_code,
            status.usage.signal
        ),
        (Stage::Run, Some(7), None)
    );
}

#[test]
fn signal_death_is_reported_as_signal_and_exits_128_plus_signal() {
    let out = launch(&run_only(&["sh", "-c", "kill -9 $$"]), b"");
    assert_eq!(out.code, 128 + 9);
    let status = out.status();
    assert_eq!(
        (
            status.usage.stage,
            status.usage.exit_code,
            status.usage.signal
        ),
        (Stage::Run, None, Some(9))
    );
    assert_eq!(status.error, None);
}

#[test]
fn failed_compile_reports_compile_stage_and_never_starts_the_program() {
    let out = launch(
        &request(
            &[("main.txt", b"source")],
            &["sh", "-c", "echo bad >&2; echo compiler-stdout; exit 3"],
            &["sh", "-c", "echo program-ran; touch ran"],
        ),
        b"",
    );
    assert_eq!(out.code, 3);
    assert_eq!(out.user_stdout(), b"");
    assert_eq!(
        out.compiled(),
        None,
        "no compiled record for a failed compile"
    );
    // The compiler's stdout goes to stderr, beside its diagnostics.
    assert_eq!(out.stderr_text(), "bad\ncompiler-stdout\n");
    let status = out.status();
    assert_eq!(
        (
            status.usage.stage,
            status.usage.exit_code,
            status.usage.signal
        ),
        (Stage::Compile, Some(3), None)
    );
}

#[test]
fn failed_compile_leaves_no_trace_of_the_run_stage() {
    let dir = TempDir::new();
    let req = request(&[("main.txt", b"source")], &["false"], &["touch", "ran"]);
    let out = launch_in(&dir.0, Command::new(LAUNCHER), req.encode().unwrap());
    assert_eq!(out.code, 1);
    assert!(!dir.0.join("ran").exists());
    assert!(dir.0.join("main.txt").exists());
}

#[test]
fn compile_killed_by_a_signal_is_a_compile_failure() {
    let out = launch(
        &request(
            &[("main.txt", b"")],
            &["sh", "-c", "kill -TERM $$"],
            &["true"],
        ),
        b"",
    );
    assert_eq!(out.code, 128 + 15);
    let status = out.status();
    assert_eq!(
        (status.usage.stage, status.usage.signal),
        (Stage::Compile, Some(15))
    );
}

#[test]
fn successful_compile_is_followed_by_the_run_stage_with_its_own_status() {
    let out = launch(
        &request(
            &[("main.sh", b"echo \"built: $(cat -)\"\n")],
            &["sh", "-c", "cp main.sh built.sh && echo compiled"],
            &["sh", "built.sh"],
        ),
        b"input",
    );
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    assert_eq!(out.user_stdout(), b"built: input\n");
    assert_eq!(out.stderr_text(), "compiled\n");
    let compiled = out.compiled().expect("a compiled record");
    assert_eq!(
        (compiled.stage, compiled.exit_code, compiled.signal),
        (Stage::Compile, Some(0), None)
    );
    let status = out.status();
    assert_eq!(
        (status.usage.stage, status.usage.exit_code),
        (Stage::Run, Some(0))
    );
}

#[test]
fn compile_stage_reads_no_stdin_so_the_program_gets_all_of_it() {
    let out = launch(
        &request(&[("main.txt", b"")], &["cat"], &["cat"]),
        b"for the program",
    );
    assert_eq!(out.code, 0);
    assert_eq!(out.user_stdout(), b"for the program");
    assert_eq!(out.stderr, b"");
}

#[test]
fn source_files_are_written_into_the_work_directory_with_exact_content() {
    let binary: Vec<u8> = (0..=255).collect();
    let out = launch(
        &request(
            &[("data.bin", &binary), ("Main.java", b"class Main {}")],
            &[],
            &["sh", "-c", "cat data.bin; stat -c %a Main.java >&2"],
        ),
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    assert_eq!(out.user_stdout(), binary);
    // 0644 under the usual umask of 022; never executable.
    assert_eq!(out.stderr_text(), "644\n");
}

#[test]
fn existing_file_is_not_overwritten_and_the_error_is_reported() {
    let dir = TempDir::new();
    fs::write(dir.0.join("main.txt"), b"original").unwrap();
    let out = launch_in(
        &dir.0,
        Command::new(LAUNCHER),
        run_only(&["touch", "ran"]).encode().unwrap(),
    );
    assert_eq!(out.code, 125);
    assert_eq!(fs::read(dir.0.join("main.txt")).unwrap(), b"original");
    assert!(!dir.0.join("ran").exists());
    let status = out.status();
    assert_eq!(
        (status.usage.stage, status.usage.exit_code),
        (Stage::Run, None)
    );
    assert!(status.error.unwrap().contains("main.txt"));
    assert!(out.stderr_text().starts_with("onpyrunner-launcher: "));
}

#[test]
fn bad_magic_exits_125_with_a_clear_message_and_no_trailer() {
    let out = launch_raw(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec());
    assert_eq!(out.code, 125);
    assert_eq!(out.stdout, b"");
    let stderr = out.stderr_text();
    assert!(
        stderr.starts_with("onpyrunner-launcher: bad launch frame: "),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn truncated_frame_exits_125_with_a_clear_message() {
    let frame = run_only(&["true"]).encode().unwrap();
    let out = launch_raw(frame[..frame.len() - 3].to_vec());
    assert_eq!(out.code, 125);
    assert_eq!(out.stdout, b"");
    let stderr = out.stderr_text();
    assert!(
        stderr.starts_with("onpyrunner-launcher: stdin ended after "),
        "{stderr}"
    );
}

#[test]
fn empty_stdin_exits_125() {
    let out = launch_raw(Vec::new());
    assert_eq!(out.code, 125);
    assert!(out.stderr_text().starts_with("onpyrunner-launcher: "));
}

#[test]
fn missing_run_command_reports_an_error_status_and_exits_127() {
    let out = launch(&run_only(&["onpyrunner-no-such-command"]), b"");
    assert_eq!(out.code, 127);
    let status = out.status();
    assert_eq!(
        (
            status.usage.stage,
            status.usage.exit_code,
            status.usage.signal
        ),
        (Stage::Run, None, None)
    );
    assert!(status.error.unwrap().contains("onpyrunner-no-such-command"));
    assert_eq!(
        out.stderr_text(),
        "onpyrunner-launcher: command not found: \"onpyrunner-no-such-command\"\n"
    );
}

#[test]
fn missing_compiler_reports_an_error_status_in_the_compile_stage() {
    let out = launch(
        &request(
            &[("main.txt", b"")],
            &["onpyrunner-no-such-compiler"],
            &["true"],
        ),
        b"",
    );
    assert_eq!(out.code, 127);
    let status = out.status();
    assert_eq!(
        (status.usage.stage, status.usage.exit_code),
        (Stage::Compile, None)
    );
    assert!(status.error.is_some());
}

#[test]
fn non_executable_command_exits_126() {
    // main.txt is written 0644: exec(2) refuses it even for root.
    let out = launch(&run_only(&["./main.txt"]), b"");
    assert_eq!(out.code, 126, "{}", out.stderr_text());
    let status = out.status();
    assert_eq!(
        (status.usage.stage, status.usage.exit_code),
        (Stage::Run, None)
    );
    assert!(out
        .stderr_text()
        .starts_with("onpyrunner-launcher: cannot execute"));
}

/// Builds a frame by hand, following the layout in `onpyrunner_protocol::launch`, so that it
/// can carry what `encode()` refuses to produce.
fn hand_built_frame(nonce: &str, file_name: &str, content: &[u8], run: &[&str]) -> Vec<u8> {
    fn u16_len(out: &mut Vec<u8>, n: usize) {
        out.extend_from_slice(&u16::try_from(n).unwrap().to_be_bytes());
    }
    let mut body = Vec::new();
    u16_len(&mut body, nonce.len());
    body.extend_from_slice(nonce.as_bytes());
    u16_len(&mut body, 1);
    u16_len(&mut body, file_name.len());
    body.extend_from_slice(file_name.as_bytes());
    body.extend_from_slice(&u32::try_from(content.len()).unwrap().to_be_bytes());
    body.extend_from_slice(content);
    u16_len(&mut body, 0);
    u16_len(&mut body, run.len());
    for arg in run {
        u16_len(&mut body, arg.len());
        body.extend_from_slice(arg.as_bytes());
    }
    let mut frame = onpyrunner_protocol::launch::MAGIC.to_vec();
    frame.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn hand_built_frame_matches_the_encoder_for_a_valid_name() {
    // Guards the next test: its frame is only wrong in the file name.
    let by_hand = hand_built_frame(NONCE, "x", b"data", &["true"]);
    let encoded = request(&[("x", b"data")], &[], &["true"]).encode().unwrap();
    assert_eq!(by_hand, encoded);
}

#[test]
fn file_name_leaving_the_work_directory_is_never_written() {
    let root = TempDir::new();
    let work = root.0.join("work");
    fs::create_dir(&work).unwrap();
    for name in ["../x", "/tmp/onpyrunner-launcher-escape", "a/../../x", ".x"] {
        let frame = hand_built_frame(NONCE, name, b"escaped", &["touch", "ran"]);
        let out = launch_in(&work, Command::new(LAUNCHER), frame);
        assert_eq!(out.code, 125, "{name}: {out:?}");
        assert!(
            out.stderr_text()
                .starts_with("onpyrunner-launcher: bad launch frame: "),
            "{name}: {}",
            out.stderr_text()
        );
    }
    assert!(!root.0.join("x").exists());
    assert!(!Path::new("/tmp/onpyrunner-launcher-escape").exists());
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "nothing written, nothing run"
    );
}

#[test]
fn program_starts_with_default_sigpipe_and_an_empty_signal_mask() {
    let out = launch(
        &run_only(&["grep", "-E", "^Sig(Ign|Blk):", "/proc/self/status"]),
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    let text = String::from_utf8(out.user_stdout()).unwrap();
    let mask = |field: &str| {
        let line = text.lines().find(|l| l.starts_with(field)).unwrap();
        u64::from_str_radix(line[field.len()..].trim(), 16).unwrap()
    };
    let sigpipe_bit = 1u64 << (libc::SIGPIPE - 1);
    assert_eq!(
        mask("SigIgn:") & sigpipe_bit,
        0,
        "SIGPIPE is ignored in: {text}"
    );
    assert_eq!(mask("SigBlk:"), 0, "{text}");
}

#[test]
fn closed_stdout_does_not_kill_the_launcher_and_keeps_the_exit_code() {
    let dir = TempDir::new();
    let mut child = Command::new(LAUNCHER)
        .current_dir(&dir.0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stdout: writing the trailer gets EPIPE (or SIGPIPE, were it not ignored).
    drop(child.stdout.take());
    let frame = run_only(&["sh", "-c", "exit 4"]).encode().unwrap();
    child.stdin.take().unwrap().write_all(&frame).unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    // The trailer still reached stderr, followed by the complaint about stdout.
    let status = scan(&output.stderr).2.expect("trailer on stderr");
    assert_eq!(status.usage.exit_code, Some(4));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("onpyrunner-launcher: cannot write a record to stdout"),
        "{stderr}"
    );
}

#[test]
fn program_with_the_same_uid_cannot_read_the_launcher_memory() {
    // The program reads /proc/<pid>/environ of its own shell (allowed: same uid, dumpable) and of
    // the launcher (must be refused: the launcher is non-dumpable). Both need PTRACE_MODE_READ,
    // the same check that guards /proc/<pid>/mem. Root would pass any check through
    // CAP_SYS_PTRACE, so as root the launcher runs as nobody, with no capabilities, like in the
    // container.
    let dir = TempDir::new();
    let mut command;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(&dir.0, fs::Permissions::from_mode(0o777)).unwrap();
        command = Command::new("setpriv");
        command.args(["--reuid=65534", "--regid=65534", "--clear-groups", LAUNCHER]);
    } else {
        command = Command::new(LAUNCHER);
    }
    let probe = "for pid in $$ $PPID; do \
                   if cat /proc/$pid/environ >/dev/null 2>&1; then echo readable; else echo denied; fi; \
                 done";
    let out = launch_in(
        &dir.0,
        command,
        run_only(&["sh", "-c", probe]).encode().unwrap(),
    );
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    assert_eq!(
        String::from_utf8(out.user_stdout()).unwrap(),
        "readable\ndenied\n",
        "first line: the program itself, second line: the launcher"
    );
}

/// Output and records of a stream in order: `Ok(bytes)` for output, `Err(record)` for records.
fn pieces(stream: &[u8]) -> Vec<Result<Vec<u8>, Record>> {
    let mut scanner = RecordScanner::new(NONCE);
    let mut out: Vec<Result<Vec<u8>, Record>> = Vec::new();
    for piece in scanner.push(stream) {
        match piece {
            Piece::Output(bytes) => match out.last_mut() {
                Some(Ok(last)) => last.extend_from_slice(&bytes),
                _ => out.push(Ok(bytes.to_vec())),
            },
            Piece::Record(record) => out.push(Err(record.expect("records parse"))),
        }
    }
    out
}

#[test]
fn a_judged_run_compiles_once_and_runs_each_test_fresh_in_order() {
    let mut req = request(
        &[(
            "main.sh",
            b"read a b; echo $((a + b)); ls; touch made-by-test\n",
        )],
        &["sh", "-c", "cp main.sh built.sh && echo compiled"],
        &["sh", "built.sh"],
    );
    req.judge = Some(onpyrunner_protocol::launch::Judge {
        wall_ms: 5000,
        inputs: vec![b"1 2\n".to_vec(), b"40 2\n".to_vec()],
    });
    let out = launch(&req, b"stdin after the frame is not a test's");
    assert_eq!(out.code, 0, "{}", out.stderr_text());
    let stdout = pieces(&out.stdout);
    let tests: Vec<(u32, Vec<u8>)> = stdout
        .iter()
        .scan(Vec::new(), |text, piece| match piece {
            Ok(bytes) => {
                *text = bytes.clone();
                Some(None)
            }
            Err(Record::Test(t)) => Some(Some((t.index, std::mem::take(text)))),
            Err(_) => Some(None),
        })
        .flatten()
        .collect();
    // Each test sees the work directory as the compile left it: not the other test's file.
    assert_eq!(
        tests,
        vec![
            (0, b"3\nbuilt.sh\nmain.sh\n".to_vec()),
            (1, b"42\nbuilt.sh\nmain.sh\n".to_vec())
        ]
    );
    assert!(
        matches!(stdout.first(), Some(Err(Record::Compiled(_)))),
        "{stdout:?}"
    );
    let Some(Err(Record::Status(status))) = stdout.last() else {
        panic!("the status comes last: {stdout:?}");
    };
    assert_eq!(status.usage.exit_code, Some(0));
    assert_eq!(out.stderr_text(), "compiled\n");
}

#[test]
fn a_judged_test_past_its_clock_is_killed_and_the_next_one_runs() {
    let mut req = request(
        &[(
            "main.sh",
            b"read n; [ \"$n\" = slow ] && sleep 30; echo done $n\n",
        )],
        &[],
        &["sh", "main.sh"],
    );
    req.judge = Some(onpyrunner_protocol::launch::Judge {
        wall_ms: 300,
        inputs: vec![b"slow\n".to_vec(), b"fast\n".to_vec()],
    });
    let started = std::time::Instant::now();
    let out = launch(&req, b"");
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    let tests: Vec<TestEndedView> = pieces(&out.stdout)
        .into_iter()
        .filter_map(|p| match p {
            Err(Record::Test(t)) => Some((t.index, t.timed_out, t.usage.signal, t.usage.exit_code)),
            _ => None,
        })
        .collect();
    assert_eq!(
        tests,
        vec![
            (0, true, Some(libc::SIGKILL), None),
            (1, false, None, Some(0))
        ]
    );
    assert_eq!(out.user_stdout(), b"done fast\n");
}

type TestEndedView = (u32, bool, Option<i32>, Option<i32>);

/// The judge fork server as shipped in the CPython and PyPy images.
const FORK_SERVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../warm/onpyrunner_fork.py");

/// Whether the host has python3 for the fork server's tests; says so when not.
fn host_python() -> bool {
    let found = Command::new("python3")
        .arg("-c")
        .arg("import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)")
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: no python3 >= 3.10 on PATH, which the fork server needs");
    }
    found
}

/// A judged run of `program` (main.py, run as `python3 -u main.py arg1`) on `inputs`, with the
/// fork server or without it (each test a fresh process).
fn judged_python(program: &[u8], inputs: &[&[u8]], wall_ms: u32, fork: bool) -> Outcome {
    let server = (
        "ONPYRUNNER_JUDGE_SERVER",
        format!("python3\n-u\n{FORK_SERVER}\n"),
    );
    let run = ["python3", "-u", "main.py", "arg1"];
    judged_by(server, fork, ("main.py", program), &run, inputs, wall_ms)
}

/// A judged run of `file` as `run` on `inputs`; with `on`, the judge server or process named by
/// `server` (its argv file's variable and content) runs the tests; without, each is fresh.
fn judged_by(
    server: (&str, String),
    on: bool,
    file: (&str, &[u8]),
    run: &[&str],
    inputs: &[&[u8]],
    wall_ms: u32,
) -> Outcome {
    let dir = TempDir::new();
    let work = dir.0.join("work");
    fs::create_dir(&work).unwrap();
    let argv_file = dir.0.join("judge-argv");
    fs::write(&argv_file, server.1).unwrap();
    let mut req = request(&[file], &[], run);
    req.judge = Some(onpyrunner_protocol::launch::Judge {
        wall_ms,
        inputs: inputs.iter().map(|i| i.to_vec()).collect(),
    });
    let mut command = Command::new(LAUNCHER);
    let none = dir.0.join("none");
    command
        .env("ONPYRUNNER_JUDGE_SERVER", &none)
        .env("ONPYRUNNER_JUDGE_PROCESS", &none)
        .env(server.0, if on { argv_file } else { none });
    launch_in(&work, command, req.encode().unwrap())
}

/// Test records as (index, exit code, signal, timed out).
fn test_results(out: &Outcome) -> Vec<(u32, Option<i32>, Option<i32>, bool)> {
    pieces(&out.stdout)
        .into_iter()
        .filter_map(|p| match p {
            Err(Record::Test(t)) => Some((t.index, t.usage.exit_code, t.usage.signal, t.timed_out)),
            _ => None,
        })
        .collect()
}

const JUDGED_PYTHON: &[u8] = br#"import os, sys
seen = []
what = input().strip()
seen.append(what)
print(__name__, sys.argv, sys.path[0] == os.getcwd(), seen, os.path.exists("left-by-test"))
open("left-by-test", "w").write("x")
if what == "exit3":
    raise SystemExit(3)
if what == "raise":
    def f():
        return 1 / 0
    f()
if what == "osexit":
    sys.stdout.write("unflushed? no: -u")
    os._exit(5)
if what == "signal":
    import signal
    os.kill(os.getpid(), signal.SIGTERM)
if what == "slow":
    import time
    time.sleep(30)
if what == "spin":
    n = 0
    while n < 3_000_000:
        n += 1
print(sum(map(int, sys.stdin.read().split())))
"#;

const JUDGED_INPUTS: &[&[u8]] = &[
    b"plain\n1 2 3\n",
    b"exit3\n",
    b"raise\n",
    b"osexit\n",
    b"signal\n",
    b"slow\n",
    b"spin\n4 5\n",
];

#[test]
fn forked_python_tests_look_like_fresh_ones_to_the_program_and_the_judge() {
    if !host_python() {
        return;
    }
    let fresh = judged_python(JUDGED_PYTHON, JUDGED_INPUTS, 1500, false);
    let forked = judged_python(JUDGED_PYTHON, JUDGED_INPUTS, 1500, true);
    let expected = vec![
        (0, Some(0), None, false),
        (1, Some(3), None, false),
        (2, Some(1), None, false),
        (3, Some(5), None, false),
        (4, None, Some(libc::SIGTERM), false),
        (5, None, Some(libc::SIGKILL), true),
        (6, Some(0), None, false),
    ];
    assert_eq!(test_results(&fresh), expected, "{}", fresh.stderr_text());
    assert_eq!(test_results(&forked), expected, "{}", forked.stderr_text());
    let output = |out: &Outcome| -> Vec<Vec<u8>> {
        pieces(&out.stdout)
            .into_iter()
            .filter_map(Result::ok)
            .collect()
    };
    // The same bytes on stdout test by test, and the same stderr (the traceback included).
    assert_eq!(
        String::from_utf8_lossy(&output(&forked).concat()),
        String::from_utf8_lossy(&output(&fresh).concat())
    );
    // Each run has its own directory; the rest of the traceback is the same.
    let traceback = |out: &Outcome| {
        out.stderr_text()
            .lines()
            .map(|l| match (l.find("File \""), l.find("/work/main.py")) {
                (Some(a), Some(b)) => format!("{}{}", &l[..a + 6], &l[b..]),
                _ => l.to_string(),
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(traceback(&forked), traceback(&fresh));
    assert!(
        output(&forked)[0].starts_with(b"__main__ ['main.py', 'arg1'] True ['plain'] False\n"),
        "{:?}",
        String::from_utf8_lossy(&output(&forked)[0])
    );
    assert!(
        forked.stderr_text().contains("ZeroDivisionError")
            && !forked.stderr_text().contains("onpyrunner_fork"),
        "{}",
        forked.stderr_text()
    );
    assert!(!forked.stderr_text().contains("onpyrunner-launcher: "));
    for out in [&fresh, &forked] {
        let spin = pieces(&out.stdout)
            .into_iter()
            .find_map(|p| match p {
                Err(Record::Test(t)) if t.index == 6 => Some(t.usage),
                _ => None,
            })
            .unwrap();
        assert!(spin.cpu_ms >= 20, "{spin:?}");
        assert!(spin.memory_kib > 1000, "{spin:?}");
    }
}

#[test]
fn forked_python_tests_are_forks_of_one_server_not_fresh_interpreters() {
    if !host_python() {
        return;
    }
    // A fresh test's parent is the launcher; a forked one's is the server, the same for each.
    let program = b"import os\nprint(os.getppid(), os.getpgid(0) == os.getpid())\n";
    let parents = |fork| {
        let out = judged_python(program, &[b"", b""], 5000, fork);
        let text = String::from_utf8_lossy(&out.user_stdout()).into_owned();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        assert_eq!(lines.len(), 2, "{text}{}", out.stderr_text());
        assert!(
            lines.iter().all(|l| l.ends_with(" True")),
            "own group: {text}"
        );
        assert_eq!(lines[0], lines[1], "one parent for both tests");
        (
            lines[0].clone(),
            format!("{} True", out.pid),
            out.stderr_text(),
        )
    };
    let (parent, launcher, stderr) = parents(false);
    assert_eq!(parent, launcher, "fresh: {stderr}");
    let (parent, launcher, stderr) = parents(true);
    assert_ne!(parent, launcher, "forked: {stderr}");
    assert_eq!(stderr, "");
}

#[test]
fn a_forked_test_starts_from_the_pristine_interpreter_not_the_last_test() {
    if !host_python() {
        return;
    }
    let program = br#"import sys
counter = globals().get("counter", 0) + 1
sys.modules.setdefault("leak", type(sys)("leak")).__dict__.setdefault("n", 0)
sys.modules["leak"].n += 1
import json
print(counter, sys.modules["leak"].n, "socket" in sys.modules, "_pristine" in globals())
"#;
    let out = judged_python(program, &[b"", b"", b""], 5000, true);
    assert_eq!(
        String::from_utf8_lossy(&out.user_stdout()),
        "1 1 False False\n1 1 False False\n1 1 False False\n",
        "{}",
        out.stderr_text()
    );
    assert_eq!(out.stderr_text(), "", "no fallback to fresh processes");
}

#[test]
fn a_dead_fork_server_leaves_the_other_tests_to_fresh_processes() {
    if !host_python() {
        return;
    }
    // The first test kills its parent (the server); it is reported killed, and the next test
    // runs fresh, with the launcher as its parent.
    let program = br#"import os, signal
if input() == "kill":
    os.kill(os.getppid(), signal.SIGKILL)
    import time; time.sleep(1)
print("ran")
"#;
    let out = judged_python(program, &[b"kill\n", b"next\n"], 5000, true);
    let results = test_results(&out);
    assert_eq!(
        results,
        vec![
            (0, None, Some(libc::SIGKILL), false),
            (1, Some(0), None, false)
        ],
        "{}",
        out.stderr_text()
    );
    assert_eq!(out.user_stdout(), b"ran\n");
    assert!(
        out.stderr_text().contains("judge fork server"),
        "{}",
        out.stderr_text()
    );
}

#[test]
fn a_fork_server_with_other_flags_than_the_run_refuses_and_the_tests_run_fresh() {
    if !host_python() {
        return;
    }
    // -O instead of the run's -u: a fork would not buffer (or assert) as the run command does.
    let server = (
        "ONPYRUNNER_JUDGE_SERVER",
        format!("python3\n-O\n{FORK_SERVER}\n"),
    );
    let program: &[u8] = b"import os\nprint(os.getppid())\n";
    let run = ["python3", "-u", "main.py"];
    let out = judged_by(server, true, ("main.py", program), &run, &[b""], 5000);
    assert_eq!(test_results(&out), vec![(0, Some(0), None, false)]);
    assert_eq!(out.user_stdout(), format!("{}\n", out.pid).into_bytes());
    assert!(
        out.stderr_text()
            .contains("onpyrunner-launcher: the judge fork server said"),
        "{}",
        out.stderr_text()
    );
}

/// The judge process as shipped in the Node.js image.
const JUDGE_PROCESS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../warm/onpyrunner_judge.js");

/// Whether the host has node (the IDE's tests need it too); says so when not.
fn host_node() -> bool {
    let found = Command::new("node")
        .arg("-e")
        .arg("process.exit(typeof process.getActiveResourcesInfo === 'function' ? 0 : 1)")
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        eprintln!("SKIPPED: no node >= 18 on PATH, which the judge process needs");
    }
    found
}

/// A judged run of `program` (main.js, run as `node --stack-size=900 main.js arg1`) on
/// `inputs`, in the judge process or without it (each test a fresh node).
fn judged_node(program: &[u8], inputs: &[&[u8]], wall_ms: u32, judge: bool) -> Outcome {
    let process = (
        "ONPYRUNNER_JUDGE_PROCESS",
        format!("node\n--stack-size=900\n{JUDGE_PROCESS}\n"),
    );
    let run = ["node", "--stack-size=900", "main.js", "arg1"];
    judged_by(process, judge, ("main.js", program), &run, inputs, wall_ms)
}

const JUDGED_NODE: &[u8] = br#"const fs = require('fs');
const input = fs.readFileSync(0, 'utf8');
const what = input.split('\n')[0].trim();
if (typeof seen !== 'undefined') console.log('a global of the last test:', seen);
seen = what;
console.log(process.argv.slice(2), require.main === module, fs.existsSync('left-by-test'), what);
console.log(process.env.LEFT_BY_TEST, require('path').basename(process.cwd()));
fs.writeFileSync('left-by-test', 'x');
process.env.LEFT_BY_TEST = 'yes';
process.chdir('/');
console.error('pid', process.pid);
process.on('exit', (code) => console.log('exit', code));
const sum = () => input.split(/\s+/).slice(1).filter(Boolean).map(Number).reduce((a, b) => a + b, 0);
if (what === 'exit3') process.exit(3);
if (what === 'code4') process.exitCode = 4;
if (what === 'raise') null.x;
if (what === 'later') {
  setTimeout(() => { console.log('later'); process.exit(6); console.log('never'); }, 20);
  setTimeout(() => console.log('cancelled by the exit'), 60);
}
if (what === 'stdin') {
  const lines = [];
  require('readline').createInterface({ input: process.stdin })
    .on('line', (l) => lines.push(l))
    .on('close', () => console.log('lines', lines.length, fs.readFileSync('/dev/stdin', 'utf8').length));
}
if (what === 'deep') {
  const down = (n) => (n === 0 ? 0 : 1 + down(n - 1));
  console.log(down(1e6));
}
if (what === 'spin') { let n = 0; while (n < 3e7) n++; }
if (what === 'slow') setTimeout(() => {}, 30000);
console.log(sum());
"#;

const JUDGED_NODE_INPUTS: &[&[u8]] = &[
    b"plain\n1 2 3\n",
    b"exit3\n",
    b"code4\n",
    b"raise\n",
    b"later\n4\n",
    b"stdin\na\nb\nc\n",
    b"deep\n",
    b"spin\n4 5\n",
    b"plain\n7\n",
    b"slow\n",
    b"plain\n8\n",
];

#[test]
fn node_tests_in_the_judge_process_look_like_fresh_ones_to_the_program_and_the_judge() {
    if !host_node() {
        return;
    }
    let fresh = judged_node(JUDGED_NODE, JUDGED_NODE_INPUTS, 1500, false);
    let judged = judged_node(JUDGED_NODE, JUDGED_NODE_INPUTS, 1500, true);
    let expected = vec![
        (0, Some(0), None, false),
        (1, Some(3), None, false),
        (2, Some(4), None, false),
        (3, Some(1), None, false),
        (4, Some(6), None, false),
        (5, Some(0), None, false),
        (6, Some(1), None, false),
        (7, Some(0), None, false),
        (8, Some(0), None, false),
        (9, None, Some(libc::SIGKILL), true),
        (10, Some(0), None, false),
    ];
    assert_eq!(test_results(&fresh), expected, "{}", fresh.stderr_text());
    assert_eq!(test_results(&judged), expected, "{}", judged.stderr_text());
    let output = |out: &Outcome| -> Vec<String> {
        pieces(&out.stdout)
            .into_iter()
            .filter_map(Result::ok)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
            .collect()
    };
    // The same bytes on stdout test by test: no global, file or listener of one test is seen
    // by the next, and nothing scheduled before an exit runs after it.
    assert_eq!(output(&judged).concat(), output(&fresh).concat());
    assert!(
        output(&judged)[0].starts_with("[ 'arg1' ] true false plain\nundefined work\n6\nexit 0\n"),
        "{:?}",
        output(&judged)
    );
    let stderr = judged.stderr_text();
    assert!(
        stderr.contains("TypeError: Cannot read properties of null")
            && stderr.contains("RangeError: Maximum call stack size exceeded")
            && !stderr.contains("onpyrunner_judge"),
        "{stderr}"
    );
    // The tests before the one killed at its clock ran in one process; fresh, each in its own.
    let pids = |out: &Outcome| -> Vec<String> {
        out.stderr_text()
            .lines()
            .filter(|l| l.starts_with("pid "))
            .map(str::to_string)
            .collect()
    };
    let (judged_pids, fresh_pids) = (pids(&judged), pids(&fresh));
    assert_eq!(judged_pids.len(), 11, "{stderr}");
    assert!(
        judged_pids[..10].iter().all(|p| *p == judged_pids[0]),
        "{judged_pids:?}"
    );
    assert_ne!(judged_pids[10], judged_pids[0]);
    let distinct: std::collections::HashSet<_> = fresh_pids.iter().collect();
    assert_eq!(distinct.len(), 11, "{fresh_pids:?}");
    for out in [&fresh, &judged] {
        let spin = pieces(&out.stdout)
            .into_iter()
            .find_map(|p| match p {
                Err(Record::Test(t)) if t.index == 7 => Some(t.usage),
                _ => None,
            })
            .unwrap();
        assert!(spin.cpu_ms >= 10, "{spin:?}");
        assert!(spin.memory_kib > 1000, "{spin:?}");
    }
}

#[test]
fn a_node_es_module_runs_once_in_the_judge_process_and_then_fresh() {
    if !host_node() {
        return;
    }
    let program = b"import { readFileSync } from 'fs';\nconsole.log('esm', readFileSync(0, 'utf8').trim(), process.pid);\n";
    let out = judged_node(program, &[b"1\n", b"2\n", b"3\n"], 5000, true);
    let text = String::from_utf8_lossy(&out.user_stdout()).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}{}", out.stderr_text());
    for (line, n) in lines.iter().zip(1..) {
        assert!(line.starts_with(&format!("esm {n} ")), "{text}");
    }
    assert_eq!(
        test_results(&out),
        vec![
            (0, Some(0), None, false),
            (1, Some(0), None, false),
            (2, Some(0), None, false)
        ]
    );
}

/// A run of `program` (main.js, `node --stack-size=900 main.js`, or `run` when given) by a
/// launcher started as in a pooled container (`--judge-early`), judged on `inputs` when given;
/// the readiness marker, which must come first, taken off stdout.
fn node_early(program: &[u8], inputs: Option<&[&[u8]]>, run: Option<&[&str]>) -> Outcome {
    let dir = TempDir::new();
    let work = dir.0.join("work");
    fs::create_dir(&work).unwrap();
    let argv_file = dir.0.join("judge-process");
    fs::write(
        &argv_file,
        format!("node\n--stack-size=900\n{JUDGE_PROCESS}\n"),
    )
    .unwrap();
    let run = run.unwrap_or(&["node", "--stack-size=900", "main.js"]);
    let mut req = request(&[("main.js", program)], &[], run);
    req.judge = inputs.map(|inputs| onpyrunner_protocol::launch::Judge {
        wall_ms: 5000,
        inputs: inputs.iter().map(|i| i.to_vec()).collect(),
    });
    let mut command = Command::new(LAUNCHER);
    command
        .arg(onpyrunner_protocol::warm::JUDGE_EARLY_FLAG)
        .env("ONPYRUNNER_JUDGE_SERVER", dir.0.join("none"))
        .env("ONPYRUNNER_JUDGE_PROCESS", argv_file);
    let mut out = launch_in(&work, command, req.encode().unwrap());
    let marker = onpyrunner_protocol::warm::READY_MARKER;
    assert!(
        out.stdout.starts_with(marker),
        "{:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    out.stdout.drain(..marker.len());
    out
}

#[test]
fn an_early_judge_process_runs_every_test_and_any_other_run_kills_it_first() {
    if !host_node() {
        return;
    }
    let program = b"console.log(process.pid, require('fs').readFileSync(0, 'utf8').trim());\n";
    let lines = |out: &Outcome| -> Vec<(String, String)> {
        String::from_utf8_lossy(&out.user_stdout())
            .lines()
            .map(|l| {
                let (pid, rest) = l.split_once(' ').unwrap_or((l, ""));
                (pid.to_string(), rest.to_string())
            })
            .collect()
    };
    // Judged: every test, the first too, in the one process started before the frame came.
    let judged = node_early(program, Some(&[b"1\n", b"2\n", b"3\n"]), None);
    let got = lines(&judged);
    assert_eq!(got.len(), 3, "{got:?} {}", judged.stderr_text());
    assert!(got.iter().all(|(pid, _)| *pid == got[0].0), "{got:?}");
    let inputs: Vec<&str> = got.iter().map(|(_, i)| i.as_str()).collect();
    assert_eq!(inputs, ["1", "2", "3"]);
    assert_eq!(judged.stderr_text(), "");
    // Not judged: the program runs as usual, with the run's stdin; the judge process is gone
    // (were it left, it would hold stdout open and the launcher's output would not end).
    let plain = node_early(program, None, None);
    assert_eq!(plain.code, 0, "{}", plain.stderr_text());
    assert_eq!(lines(&plain).len(), 1, "{:?}", lines(&plain));
    // Judged with other flags than the judge process's: each test fresh.
    let other = node_early(program, Some(&[b"1\n", b"2\n"]), Some(&["node", "main.js"]));
    let got = lines(&other);
    assert_eq!(got.len(), 2, "{got:?} {}", other.stderr_text());
    assert_ne!(got[0].0, got[1].0, "{got:?}");
}

//! A run as every interface sees it: what a client asks for, the five states, why a run ended,
//! its events in order and its summary. The engine produces these events; the WebSocket, SSE,
//! REST, jobs and the CLI render them, and nothing else models a run. They serialize both ways,
//! so they can cross a process or machine boundary as they are.
//!
//! ```text
//!            admitted, sandbox ready        program ended / output cap / internal error
//! READY ---------------------------> RUNNING ------------------------------------------> FINISHED
//!   |  \                               |  \---- wall clock -------------------------------> TIMEOUT
//!   |   \-- internal error -> FINISHED  \------ Stop, shutdown, client gone ---------------> STOPPED
//!   \------ Stop, shutdown, client gone while queued ---------------------------------------> STOPPED
//! ```
//!
//! FINISHED, STOPPED and TIMEOUT are final; every run reaches exactly one of them, and the last
//! event is always the [`Summary`].
//!
//! Every event has a place in the run's log: a position that starts at 0 and grows by 1 for each
//! event and by the byte count for output ([`Event::size`]). The position after an event is its
//! sequence number; a client that saw up to `seq` resumes from there.
pub use crate::judge::{CompareMode, Difference, Verdict};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;

/// A run's stages: a compiled language has both, an interpreted one only `Run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Compile,
    Run,
}

/// A run as clients post it (REST and WebSocket alike). A field may be left out, but one that is
/// given is a value: `null` is refused, as `web/openapi.json` has it, rather than taken for
/// absent (`{"code": null, "files": [...]}` was a run, and `"limits": {"wall_ms": null}` the
/// default, while the document said neither was valid).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub language: String,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<String>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub files: Option<Vec<FileBody>>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub stdin: Option<String>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub args: Option<Vec<String>>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub limits: Option<LimitRequest>,
    /// A judged run: the program is compiled once and run on each test's input instead of on
    /// `stdin`; each test gets a verdict.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub tests: Option<Vec<TestBody>>,
    /// How a judged run's output is compared with each test's expected output.
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub compare: Option<CompareMode>,
}

/// One test of a judged run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestBody {
    /// The program's stdin for this test.
    #[serde(default)]
    pub input: String,
    /// What the program must print; left out, the test only runs (its verdict says whether it
    /// ran cleanly, within its limits).
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub expected_output: Option<String>,
}

impl RunBody {
    /// A one-file run of `code`.
    pub fn code(language: impl Into<String>, code: impl Into<String>) -> Self {
        RunBody {
            language: language.into(),
            code: Some(code.into()),
            files: None,
            stdin: None,
            args: None,
            limits: None,
            tests: None,
            compare: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    pub name: String,
    pub content: String,
}

/// The limits a request may ask for; `None` (left out, not `null`) keeps the language default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRequest {
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub wall_ms: Option<u64>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub memory_mib: Option<u64>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub cpus: Option<f64>,
    #[serde(
        default,
        deserialize_with = "given",
        skip_serializing_if = "Option::is_none"
    )]
    pub output_bytes: Option<u64>,
}

/// An optional field that was given: its value, never `null` (`#[serde(default)]` makes it
/// `None` when left out).
fn given<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// The five states of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RunState {
    /// Accepted; waiting for a slot (maybe queued) or for its sandbox.
    Ready,
    Running,
    Finished,
    Stopped,
    Timeout,
}

impl RunState {
    pub const ALL: [RunState; 5] = [
        RunState::Ready,
        RunState::Running,
        RunState::Finished,
        RunState::Stopped,
        RunState::Timeout,
    ];

    /// The allowed transitions, written down once.
    pub fn go(self, to: RunState) -> Result<RunState, BadStateTransition> {
        use RunState::*;
        let allowed = matches!(
            (self, to),
            (Ready, Running | Finished | Stopped) | (Running, Finished | Stopped | Timeout)
        );
        if allowed {
            Ok(to)
        } else {
            Err(BadStateTransition { from: self, to })
        }
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Finished | RunState::Stopped | RunState::Timeout
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Ready => "READY",
            RunState::Running => "RUNNING",
            RunState::Finished => "FINISHED",
            RunState::Stopped => "STOPPED",
            RunState::Timeout => "TIMEOUT",
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a run cannot go from {from} to {to}")]
pub struct BadStateTransition {
    pub from: RunState,
    pub to: RunState,
}

/// Why a run ended: the one answer, whoever asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The program ended by itself (any exit code or signal).
    Exited,
    /// The compile stage failed; the program never ran.
    CompileError,
    /// The kernel's OOM killer ended the program at the memory limit.
    MemoryLimit,
    /// The output cap was reached; the program was killed and the output cut.
    OutputLimit,
    /// The wall-time limit was reached; the program was killed.
    Timeout,
    /// Stop was pressed; the program was killed (SIGKILL).
    Stopped,
    /// The supervisor shut down; the program was killed.
    Shutdown,
    /// The client went away (and did not come back in time); the program was killed.
    ClientGone,
    /// The sandbox or the Docker daemon failed; `Summary::error` says how.
    InternalError,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Reason::Exited,
        Reason::CompileError,
        Reason::MemoryLimit,
        Reason::OutputLimit,
        Reason::Timeout,
        Reason::Stopped,
        Reason::Shutdown,
        Reason::ClientGone,
        Reason::InternalError,
    ];

    /// The final state a run ending for this reason is in.
    pub fn state(self) -> RunState {
        match self {
            Reason::Exited
            | Reason::CompileError
            | Reason::MemoryLimit
            | Reason::OutputLimit
            | Reason::InternalError => RunState::Finished,
            Reason::Timeout => RunState::Timeout,
            Reason::Stopped | Reason::Shutdown | Reason::ClientGone => RunState::Stopped,
        }
    }

    /// Whether the run was killed from outside rather than ending by itself: the launcher
    /// could not report, so time and memory come from the container's cgroup.
    pub fn killed(self) -> bool {
        matches!(
            self,
            Reason::OutputLimit
                | Reason::Timeout
                | Reason::Stopped
                | Reason::Shutdown
                | Reason::ClientGone
        )
    }
}

/// What was measured of the stage that ended a run: by the launcher when the program ended by
/// itself, from the container's cgroup when it was killed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// The stage that ended the run.
    pub stage: Stage,
    /// Exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Wall time of the stage, from spawn to exit, in milliseconds.
    pub wall_ms: u64,
    /// User + system CPU time of the stage's processes, in milliseconds.
    pub cpu_ms: u64,
    /// Peak resident memory of the stage's largest process (the launcher's measure), or of the
    /// whole container (the cgroup's), in KiB.
    pub memory_kib: u64,
}

impl Usage {
    pub fn new(stage: Stage) -> Self {
        Usage {
            stage,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            memory_kib: 0,
        }
    }
}

/// The last event of every run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub state: RunState,
    pub reason: Reason,
    #[serde(flatten)]
    pub usage: Usage,
    pub oom_killed: bool,
    pub output_truncated: bool,
    /// Time spent waiting for a slot.
    pub queued_ms: u64,
    /// What went wrong, when `reason` is `internal_error`.
    pub error: Option<String>,
    /// What the compile stage used, when it succeeded and the run stage followed (the
    /// flattened usage is then the run stage's).
    #[serde(default)]
    pub compile: Option<Usage>,
    /// A judged run's verdicts; `None` for a run that was not judged.
    #[serde(default)]
    pub judge: Option<Judged>,
}

/// One test of a judged run, when it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestResult {
    /// Its place in the run's tests, from 0.
    pub index: u32,
    pub verdict: Verdict,
    /// What the test used; `stage` is always `run`.
    #[serde(flatten)]
    pub usage: Usage,
    /// Whether its output was compared (it had an expected output and ran cleanly).
    pub compared: bool,
    /// Where a wrong answer first differs from the expected output.
    pub difference: Option<Difference>,
}

/// The verdicts of a judged run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Judged {
    /// The run's verdict: compile error, else the first test that is not accepted, else
    /// accepted when every test ran; `None` when the run was stopped before its tests ended
    /// and none had failed.
    pub verdict: Option<Verdict>,
    /// Tests accepted.
    pub passed: u32,
    /// Tests in the run.
    pub total: u32,
    /// The tests that ran, in order (none after a compile error).
    pub tests: Vec<TestResult>,
}

impl Judged {
    /// The verdicts of `total` tests of which `tests` ran, ending as `reason` says.
    pub fn of(total: u32, tests: Vec<TestResult>, reason: Reason) -> Self {
        let passed = tests
            .iter()
            .filter(|t| t.verdict == Verdict::Accepted)
            .count() as u32;
        let failed = tests
            .iter()
            .map(|t| t.verdict)
            .find(|v| *v != Verdict::Accepted);
        let verdict = if reason == Reason::CompileError {
            Some(Verdict::CompileError)
        } else if failed.is_some() {
            failed
        } else if tests.len() as u32 == total {
            Some(Verdict::Accepted)
        } else {
            match reason {
                Reason::Timeout => Some(Verdict::TimeLimit),
                Reason::OutputLimit => Some(Verdict::OutputLimit),
                Reason::MemoryLimit => Some(Verdict::MemoryLimit),
                Reason::InternalError => Some(Verdict::InternalError),
                _ => None,
            }
        };
        Judged {
            verdict,
            passed,
            total,
            tests,
        }
    }
}

impl Summary {
    /// A run that ended for `reason`, with what was measured of it.
    pub fn new(reason: Reason, usage: Usage) -> Self {
        Summary {
            state: reason.state(),
            reason,
            usage,
            oom_killed: false,
            output_truncated: false,
            queued_ms: 0,
            error: None,
            compile: None,
            judge: None,
        }
    }

    /// A run that failed in the sandbox or the daemon, in `stage`.
    pub fn internal(stage: Stage, error: impl Into<String>) -> Self {
        Summary {
            error: Some(error.into()),
            ..Summary::new(Reason::InternalError, Usage::new(stage))
        }
    }

    /// Set why the run ended (and so its final state).
    pub fn set_reason(&mut self, reason: Reason) {
        self.reason = reason;
        self.state = reason.state();
    }
}

/// Which stream a piece of program output came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputStream {
    Stdout,
    Stderr,
}

impl OutputStream {
    /// The first byte of a binary output frame.
    pub fn tag(self) -> u8 {
        match self {
            OutputStream::Stdout => 1,
            OutputStream::Stderr => 2,
        }
    }

    pub fn from_tag(tag: u8) -> Option<Self> {
        match tag {
            1 => Some(OutputStream::Stdout),
            2 => Some(OutputStream::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            OutputStream::Stdout => "stdout",
            OutputStream::Stderr => "stderr",
        }
    }
}

/// Program output, bytes exactly as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputChunk {
    pub stream: OutputStream,
    pub data: Bytes,
}

impl OutputChunk {
    /// The binary frame that carries it: the stream's tag, then the bytes.
    pub fn frame(&self) -> Bytes {
        let mut frame = Vec::with_capacity(self.data.len() + 1);
        frame.push(self.stream.tag());
        frame.extend_from_slice(&self.data);
        Bytes::from(frame)
    }

    /// The chunk a binary frame carries; `None` for an empty frame or an unknown tag.
    pub fn from_frame(frame: &[u8]) -> Option<Self> {
        let (&tag, data) = frame.split_first()?;
        Some(OutputChunk {
            stream: OutputStream::from_tag(tag)?,
            data: Bytes::copy_from_slice(data),
        })
    }
}

/// What a run's log holds, in order: `State(READY)`, maybe `Queued` positions, `State(RUNNING)`,
/// output, the final `State`, then `Summary`.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    State {
        state: RunState,
        at_unix_ms: u64,
    },
    /// Place in the queue: 1 is next.
    Queued {
        position: usize,
    },
    Output(OutputChunk),
    /// The compile stage ended well: the output before it was the compiler's, what follows is
    /// the program's (or, in a judged run, the first test's). Only languages that compile.
    Compiled(Usage),
    /// A test of a judged run ended; the output since the previous test (or the compile) was
    /// its output.
    Test(TestResult),
    Summary(Summary),
}

impl Event {
    /// How far the event moves a run's log position: its bytes for output, 1 for the rest.
    pub fn size(&self) -> u64 {
        match self {
            Event::Output(chunk) => chunk.data.len() as u64,
            _ => 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RunState::*;
    use super::*;

    #[test]
    fn only_written_down_transitions_are_allowed() {
        assert_eq!(Ready.go(Running), Ok(Running));
        assert_eq!(Ready.go(Stopped), Ok(Stopped));
        assert_eq!(Running.go(Timeout), Ok(Timeout));
        assert!(Ready.go(Timeout).is_err(), "no wall clock before running");
        assert!(Finished.go(Running).is_err(), "final states are final");
        assert!(Stopped.go(Finished).is_err());
        assert!(Running.go(Ready).is_err());
        let err = Timeout.go(Running).unwrap_err();
        assert_eq!(err.to_string(), "a run cannot go from TIMEOUT to RUNNING");
    }

    #[test]
    fn a_field_left_out_is_none_and_a_null_one_is_refused() {
        let run: RunBody = serde_json::from_str(r#"{"language":"python","code":"x"}"#).unwrap();
        assert_eq!(run, RunBody::code("python", "x"));
        let limits: LimitRequest = serde_json::from_str(r#"{"wall_ms":100}"#).unwrap();
        assert_eq!((limits.wall_ms, limits.cpus), (Some(100), None));
        for body in [
            r#"{"language":"python","code":null,"files":[{"name":"a.py","content":""}]}"#,
            r#"{"language":"python","code":"x","files":null}"#,
            r#"{"language":"python","code":"x","stdin":null}"#,
            r#"{"language":"python","code":"x","args":null}"#,
            r#"{"language":"python","code":"x","limits":null}"#,
            r#"{"language":"python","code":"x","limits":{"output_bytes":null}}"#,
            r#"{"language":"python","code":"x","limits":{"cpus":null}}"#,
        ] {
            assert!(serde_json::from_str::<RunBody>(body).is_err(), "{body}");
        }
    }

    #[test]
    fn every_reason_ends_in_a_final_state() {
        for reason in Reason::ALL {
            assert!(reason.state().is_final(), "{reason:?}");
            assert!(Running.go(reason.state()).is_ok(), "{reason:?}");
        }
        assert_eq!(Reason::Shutdown.state(), Stopped);
        assert_eq!(Reason::Timeout.state(), Timeout);
    }

    #[test]
    fn summary_serializes_flat_as_users_read_it_and_back() {
        let mut summary = Summary::new(Reason::ClientGone, Usage::new(Stage::Run));
        summary.usage.signal = Some(9);
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["state"], "STOPPED");
        assert_eq!(json["reason"], "client_gone");
        assert_eq!(json["stage"], "run");
        assert_eq!(json["signal"], 9);
        assert_eq!(json["memory_kib"], 0);
        assert!(json.get("usage").is_none(), "{json}");
        let back: Summary = serde_json::from_value(json).unwrap();
        assert_eq!(back, summary);
    }

    #[test]
    fn output_frames_carry_the_stream_then_the_exact_bytes() {
        let chunk = OutputChunk {
            stream: OutputStream::Stderr,
            data: Bytes::from_static(b"\xff\xfe ok"),
        };
        assert_eq!(&chunk.frame()[..], b"\x02\xff\xfe ok");
        assert_eq!(OutputChunk::from_frame(&chunk.frame()), Some(chunk));
        assert_eq!(OutputChunk::from_frame(b""), None);
        assert_eq!(OutputChunk::from_frame(b"\x03x"), None);
    }

    #[test]
    fn positions_grow_by_bytes_for_output_and_one_for_the_rest() {
        let out = Event::Output(OutputChunk {
            stream: OutputStream::Stdout,
            data: Bytes::from_static(b"hi\n"),
        });
        assert_eq!(out.size(), 3);
        assert_eq!(Event::Queued { position: 4 }.size(), 1);
    }

    #[test]
    fn run_bodies_refuse_unknown_fields() {
        let body: RunBody =
            serde_json::from_str(r#"{"language":"python","code":"print(1)"}"#).unwrap();
        assert_eq!(body, RunBody::code("python", "print(1)"));
        assert!(serde_json::from_str::<RunBody>(r#"{"language":"x","bogus":1}"#).is_err());
        assert!(
            serde_json::from_str::<RunBody>(r#"{"language":"x","limits":{"pids":1}}"#).is_err()
        );
    }
}

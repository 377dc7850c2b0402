//! A run session as its caller sees it: a state machine, a stream of events, stdin and Stop.
//!
//! ```text
//!            admitted, sandbox ready        program ended / output cap / internal error
//! READY ---------------------------> RUNNING ------------------------------------------> FINISHED
//!   |  \                               |  \---- wall clock -------------------------------> TIMEOUT
//!   |   \-- internal error -> FINISHED  \------ Stop, shutdown, client gone ---------------> STOPPED
//!   \------ Stop, shutdown, client gone while queued ---------------------------------------> STOPPED
//! ```
//!
//! FINISHED, STOPPED and TIMEOUT are final; every session reaches exactly one of them, and the
//! last event is always the [`Summary`].
use crate::run::OutputChunk;
use bytes::Bytes;
use onpyrunner_protocol::Stage;
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// The five states of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
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

/// Why a run reached its final state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    /// The client went away; the program was killed.
    ClientGone,
    /// The sandbox or the Docker daemon failed; `Summary::error` says how.
    InternalError,
}

impl Reason {
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
}

/// The last event of every run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub state: RunState,
    pub reason: Reason,
    /// The stage that ended the run: "compile" or "run".
    #[serde(serialize_with = "stage_name")]
    pub stage: Stage,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// Wall time of the stage that ended the run.
    pub wall_ms: u64,
    /// CPU time (user + system) of that stage.
    pub cpu_ms: u64,
    /// Peak resident memory of that stage's largest process.
    pub memory_kib: u64,
    pub oom_killed: bool,
    pub output_truncated: bool,
    /// Time spent waiting for a slot.
    pub queued_ms: u64,
    /// What went wrong, when `reason` is `internal_error`.
    pub error: Option<String>,
}

impl Summary {
    /// A summary of a run that has not ended yet, in `stage`; filled in as it ends.
    pub fn new(stage: Stage) -> Self {
        Summary {
            state: RunState::Ready,
            reason: Reason::Exited,
            stage,
            exit_code: None,
            signal: None,
            wall_ms: 0,
            cpu_ms: 0,
            memory_kib: 0,
            oom_killed: false,
            output_truncated: false,
            queued_ms: 0,
            error: None,
        }
    }
}

fn stage_name<S: serde::Serializer>(stage: &Stage, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(match stage {
        Stage::Compile => "compile",
        Stage::Run => "run",
    })
}

/// What a caller hears from its run, in order: `State(READY)`, maybe `Queued` positions,
/// `State(RUNNING)`, output, the final `State`, then `Summary`.
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
    /// Program output, bytes exactly as written.
    Output(OutputChunk),
    Summary(Summary),
}

pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Stops a run (SIGKILL, never a signal it can ignore). Cheap to clone; stopping twice or
/// after the end does nothing.
#[derive(Debug, Clone, Default)]
pub struct Stopper(pub(crate) CancellationToken);

impl Stopper {
    pub fn stop(&self) {
        self.0.cancel();
    }
}

/// The caller's handle on a run it submitted.
#[derive(Debug)]
pub struct Session {
    pub id: String,
    /// Events until the `Summary`, then closed. Dropping it ends the run as `client_gone`.
    pub events: mpsc::Receiver<Event>,
    /// The program's stdin; dropping it (or `close_stdin`) sends EOF.
    stdin: Option<mpsc::Sender<Bytes>>,
    stopper: Stopper,
}

impl Session {
    pub(crate) fn new(
        id: String,
        events: mpsc::Receiver<Event>,
        stdin: mpsc::Sender<Bytes>,
        stopper: Stopper,
    ) -> Self {
        Session {
            id,
            events,
            stdin: Some(stdin),
            stopper,
        }
    }

    /// A sender for the program's stdin (clone it to write from another task). `None` after
    /// `close_stdin`.
    pub fn stdin(&self) -> Option<mpsc::Sender<Bytes>> {
        self.stdin.clone()
    }

    /// Send EOF once every clone of the stdin sender is dropped too.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// Split into the parts, for callers that read events and write stdin from different
    /// tasks.
    pub fn into_parts(
        self,
    ) -> (
        String,
        mpsc::Receiver<Event>,
        Option<mpsc::Sender<Bytes>>,
        Stopper,
    ) {
        (self.id, self.events, self.stdin, self.stopper)
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
    fn every_reason_ends_in_a_final_state() {
        for reason in [
            Reason::Exited,
            Reason::CompileError,
            Reason::MemoryLimit,
            Reason::OutputLimit,
            Reason::Timeout,
            Reason::Stopped,
            Reason::Shutdown,
            Reason::ClientGone,
            Reason::InternalError,
        ] {
            assert!(reason.state().is_final(), "{reason:?}");
            assert!(Running.go(reason.state()).is_ok(), "{reason:?}");
        }
        assert_eq!(Reason::Shutdown.state(), Stopped);
        assert_eq!(Reason::Timeout.state(), Timeout);
    }

    #[test]
    fn summary_serializes_states_and_reasons_as_users_read_them() {
        let summary = Summary {
            state: Stopped,
            reason: Reason::ClientGone,
            signal: Some(9),
            ..Summary::new(Stage::Run)
        };
        let json = serde_json::to_value(&summary).unwrap();
        assert_eq!(json["state"], "STOPPED");
        assert_eq!(json["reason"], "client_gone");
        assert_eq!(json["stage"], "run");
    }
}

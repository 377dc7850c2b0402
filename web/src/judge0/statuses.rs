//! Judge0's fourteen statuses (`app/enumerations/status.rb`) and how a run's end is one of them,
//! as its worker chooses (`app/jobs/isolate_job.rb`, `determine_status`): a time limit is 5, a
//! signal 7 to 10 or 12, a non-zero exit 11, a failed sandbox 13, otherwise 3 or 4 against the
//! expected output after Judge0's whitespace rule. Our outcomes Judge0 has no status for are
//! shown as isolate would report them: the memory limit is the kernel's SIGKILL (12), the
//! output cap a file size limit (SIGXFSZ, 8).
use onpyrunner_protocol::run::{Reason, Stage, Summary};
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    InQueue = 1,
    Processing = 2,
    Accepted = 3,
    WrongAnswer = 4,
    TimeLimitExceeded = 5,
    CompilationError = 6,
    Sigsegv = 7,
    Sigxfsz = 8,
    Sigfpe = 9,
    Sigabrt = 10,
    Nzec = 11,
    Other = 12,
    InternalError = 13,
    ExecFormatError = 14,
}

impl Status {
    pub const ALL: [Status; 14] = [
        Status::InQueue,
        Status::Processing,
        Status::Accepted,
        Status::WrongAnswer,
        Status::TimeLimitExceeded,
        Status::CompilationError,
        Status::Sigsegv,
        Status::Sigxfsz,
        Status::Sigfpe,
        Status::Sigabrt,
        Status::Nzec,
        Status::Other,
        Status::InternalError,
        Status::ExecFormatError,
    ];

    pub fn id(self) -> u8 {
        self as u8
    }

    pub fn description(self) -> &'static str {
        match self {
            Status::InQueue => "In Queue",
            Status::Processing => "Processing",
            Status::Accepted => "Accepted",
            Status::WrongAnswer => "Wrong Answer",
            Status::TimeLimitExceeded => "Time Limit Exceeded",
            Status::CompilationError => "Compilation Error",
            Status::Sigsegv => "Runtime Error (SIGSEGV)",
            Status::Sigxfsz => "Runtime Error (SIGXFSZ)",
            Status::Sigfpe => "Runtime Error (SIGFPE)",
            Status::Sigabrt => "Runtime Error (SIGABRT)",
            Status::Nzec => "Runtime Error (NZEC)",
            Status::Other => "Runtime Error (Other)",
            Status::InternalError => "Internal Error",
            Status::ExecFormatError => "Exec Format Error",
        }
    }

    /// The runtime error of a program killed by signal `n` (`find_runtime_error_by_status_code`).
    pub fn of_signal(n: i32) -> Status {
        match n {
            11 => Status::Sigsegv,
            25 => Status::Sigxfsz,
            8 => Status::Sigfpe,
            6 => Status::Sigabrt,
            _ => Status::Other,
        }
    }

    /// `{id, description}`, as a submission's `status` and `/statuses` show it.
    pub fn view(self) -> StatusView {
        StatusView {
            id: self.id(),
            description: self.description(),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct StatusView {
    pub id: u8,
    pub description: &'static str,
}

/// How an ended run is reported: its status and the fields isolate's metadata fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    pub status: Status,
    /// Judge0 reads isolate's `exitcode`, 0 when there is none (a signal, a time limit).
    pub exit_code: Option<i32>,
    pub exit_signal: Option<i32>,
    /// isolate's message: `Time limit exceeded`, `Caught fatal signal 11`, `Exited with error
    /// status 1`; ours for an internal error.
    pub message: Option<String>,
    /// The compile stage ended the run (status 6): no time, memory, output or exit fields.
    pub compile_failed: bool,
}

/// The status of a run that ended as `summary` says, its program having printed `stdout`
/// (`None` when it printed nothing, as Judge0 keeps it), against `expected`.
pub fn ending(summary: &Summary, stdout: Option<&[u8]>, expected: Option<&[u8]>) -> Ending {
    let ended = |status, exit_code, exit_signal, message: Option<String>| Ending {
        status,
        exit_code,
        exit_signal,
        message,
        compile_failed: false,
    };
    let killed = |status, signal: i32| {
        ended(
            status,
            Some(0),
            Some(signal),
            Some(format!("Caught fatal signal {signal}")),
        )
    };
    let compile = summary.usage.stage == Stage::Compile;
    match summary.reason {
        Reason::CompileError | Reason::Timeout if compile => Ending {
            compile_failed: true,
            ..ended(Status::CompilationError, None, None, None)
        },
        Reason::Exited => match (summary.usage.signal, summary.usage.exit_code) {
            (Some(n), _) => killed(Status::of_signal(n), n),
            (None, Some(code)) if code != 0 => ended(
                Status::Nzec,
                Some(code),
                None,
                Some(format!("Exited with error status {code}")),
            ),
            _ => {
                let accepted = match expected {
                    None => true,
                    Some(expected) => stdout.map(strip) == Some(strip(expected)),
                };
                let status = if accepted {
                    Status::Accepted
                } else {
                    Status::WrongAnswer
                };
                ended(status, Some(0), None, None)
            }
        },
        Reason::Timeout => ended(
            Status::TimeLimitExceeded,
            Some(0),
            None,
            Some("Time limit exceeded".into()),
        ),
        Reason::MemoryLimit => killed(Status::Other, 9),
        Reason::OutputLimit => killed(Status::Sigxfsz, 25),
        Reason::CompileError
        | Reason::Stopped
        | Reason::Shutdown
        | Reason::ClientGone
        | Reason::InternalError => {
            let why = summary
                .error
                .clone()
                .unwrap_or_else(|| match summary.reason {
                    Reason::Shutdown => "the server shut down during the run".into(),
                    _ => "the run was stopped".into(),
                });
            ended(Status::InternalError, None, None, Some(why))
        }
    }
}

/// Judge0's whitespace rule (`strip` in isolate_job.rb): each line without its trailing
/// whitespace, then the whole without its trailing whitespace (so trailing blank lines go).
/// Ruby's `rstrip` takes NUL too.
pub fn strip(text: &[u8]) -> Vec<u8> {
    let rstrip = |s: &[u8]| -> usize {
        s.iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0))
            .map_or(0, |i| i + 1)
    };
    let mut out = Vec::with_capacity(text.len());
    for (i, line) in text.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(&line[..rstrip(line)]);
    }
    out.truncate(rstrip(&out));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_protocol::run::Usage;

    fn exited(code: Option<i32>, signal: Option<i32>) -> Summary {
        let mut usage = Usage::new(Stage::Run);
        usage.exit_code = code;
        usage.signal = signal;
        Summary::new(Reason::Exited, usage)
    }

    #[test]
    fn statuses_are_chosen_as_judge0s_worker_chooses_them() {
        let s = |summary: &Summary| ending(summary, Some(b"4\n"), None).status;
        assert_eq!(s(&exited(Some(0), None)), Status::Accepted);
        assert_eq!(s(&exited(Some(3), None)), Status::Nzec);
        for (signal, status) in [
            (11, Status::Sigsegv),
            (25, Status::Sigxfsz),
            (8, Status::Sigfpe),
            (6, Status::Sigabrt),
            (9, Status::Other),
        ] {
            let e = ending(&exited(None, Some(signal)), None, None);
            assert_eq!(e.status, status);
            assert_eq!((e.exit_code, e.exit_signal), (Some(0), Some(signal)));
            assert_eq!(e.message, Some(format!("Caught fatal signal {signal}")));
        }
        let timeout = Summary::new(Reason::Timeout, Usage::new(Stage::Run));
        assert_eq!(s(&timeout), Status::TimeLimitExceeded);
        let compile = Summary::new(Reason::Timeout, Usage::new(Stage::Compile));
        assert!(ending(&compile, None, None).compile_failed);
        let memory = Summary::new(Reason::MemoryLimit, Usage::new(Stage::Run));
        assert_eq!(s(&memory), Status::Other);
        let output = Summary::new(Reason::OutputLimit, Usage::new(Stage::Run));
        assert_eq!(s(&output), Status::Sigxfsz);
        let internal = Summary::internal(Stage::Run, "daemon gone");
        let e = ending(&internal, None, None);
        assert_eq!(e.status, Status::InternalError);
        assert_eq!(e.message.as_deref(), Some("daemon gone"));
    }

    #[test]
    fn expected_output_compares_after_judge0s_whitespace_rule() {
        let ok = exited(Some(0), None);
        let status = |out: Option<&[u8]>, expected: &[u8]| ending(&ok, out, Some(expected)).status;
        assert_eq!(status(Some(b"4 \n\n\n"), b"4"), Status::Accepted);
        assert_eq!(status(Some(b"a  \nb\t\n"), b"a\nb"), Status::Accepted);
        assert_eq!(status(Some(b"a\n\nb\n"), b"a\nb"), Status::WrongAnswer);
        assert_eq!(
            status(Some(b" 4\n"), b"4"),
            Status::WrongAnswer,
            "leading kept"
        );
        // No output is nil in Judge0, and nil is not "".
        assert_eq!(status(None, b""), Status::WrongAnswer);
        assert_eq!(strip(b"x\r\n\0"), b"x");
    }
}

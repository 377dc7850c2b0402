//! Judge mode on the supervisor's side: the tests a run carries, and the verdict of each test as
//! the launcher's test records come in. The launcher runs the tests (see the launcher's
//! `judge.rs`); here its measures and the output captured between its records become verdicts.
use onpyrunner_protocol::judge::{self, CompareMode, Verdict};
use onpyrunner_protocol::run::{Judged, Reason, TestResult};
use onpyrunner_protocol::{OutputStream, TestEnded, Usage};

/// Most tests in one run (the launch frame's own limit).
pub const MAX_TESTS: usize = onpyrunner_protocol::launch::MAX_TESTS;
/// How long past a test's own wall clock the supervisor waits for the launcher's record before
/// it kills the container (the launcher kills the test at its clock; this only backs it up).
pub const TEST_GRACE_MS: u64 = 1000;

/// The signal of the memory limit's kill (and of the launcher's kill at a test's clock).
const SIGKILL: i32 = 9;

/// The tests of a judged run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JudgeSpec {
    pub tests: Vec<TestCase>,
    pub compare: CompareMode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestCase {
    pub input: Vec<u8>,
    /// `None`: the test only runs; its verdict says whether it ran cleanly.
    pub expected: Option<Vec<u8>>,
}

/// A judged run while it goes: the current test's stdout, and the verdicts so far.
pub(crate) struct Judging<'a> {
    spec: &'a JudgeSpec,
    /// The current test's stdout, kept only when it has an expected output. Bounded by the
    /// run's output budget, which each test gets whole.
    captured: Vec<u8>,
    results: Vec<TestResult>,
    /// Under gVisor the memory limit's kill does not show in memory.events.
    sigkill_means_oom: bool,
}

impl<'a> Judging<'a> {
    pub fn new(spec: &'a JudgeSpec, sigkill_means_oom: bool) -> Self {
        Judging {
            spec,
            captured: Vec::new(),
            results: Vec::new(),
            sigkill_means_oom,
        }
    }

    fn current(&self) -> Option<&'a TestCase> {
        self.spec.tests.get(self.results.len())
    }

    /// Output of the running test, as forwarded to the client.
    pub fn output(&mut self, stream: OutputStream, data: &[u8]) {
        if stream == OutputStream::Stdout && self.current().is_some_and(|t| t.expected.is_some()) {
            self.captured.extend_from_slice(data);
        }
    }

    /// The launcher's record of the running test: its verdict.
    pub fn ended(&mut self, ended: TestEnded) -> TestResult {
        let expected = self.current().and_then(|t| t.expected.as_deref());
        let usage = ended.usage;
        let verdict = if ended.timed_out {
            Verdict::TimeLimit
        } else if ended.memory_exceeded || (self.sigkill_means_oom && usage.signal == Some(SIGKILL))
        {
            Verdict::MemoryLimit
        } else if usage.signal.is_some() || usage.exit_code != Some(0) {
            Verdict::RuntimeError
        } else {
            Verdict::Accepted
        };
        let (verdict, compared, difference) = match (verdict, expected) {
            (Verdict::Accepted, Some(expected)) => {
                match judge::compare(expected, &self.captured, self.spec.compare) {
                    None => (Verdict::Accepted, true, None),
                    Some(d) => (Verdict::WrongAnswer, true, Some(d)),
                }
            }
            (verdict, _) => (verdict, false, None),
        };
        self.captured.clear();
        let result = TestResult {
            index: self.results.len() as u32,
            verdict,
            usage,
            compared,
            difference,
        };
        self.results.push(result.clone());
        result
    }

    /// The run ended for `reason`, with `usage` measured from outside when it was killed: a
    /// test cut short by the run's own limits gets that verdict.
    pub fn finish(mut self, reason: Reason, usage: &Usage) -> Judged {
        let cut = match reason {
            Reason::OutputLimit => Some(Verdict::OutputLimit),
            Reason::Timeout => Some(Verdict::TimeLimit),
            Reason::MemoryLimit => Some(Verdict::MemoryLimit),
            // The run ended by itself before its tests did: the program killed the launcher
            // (it runs as the program's user), which is the program's doing.
            Reason::Exited => Some(Verdict::RuntimeError),
            _ => None,
        };
        let compiled = reason != Reason::CompileError;
        if let (Some(verdict), true, true) = (cut, self.current().is_some(), compiled) {
            self.results.push(TestResult {
                index: self.results.len() as u32,
                verdict,
                usage: usage.clone(),
                compared: false,
                difference: None,
            });
        }
        Judged::of(self.spec.tests.len() as u32, self.results, reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_protocol::Stage;

    fn spec(expected: &[Option<&str>]) -> JudgeSpec {
        JudgeSpec {
            tests: expected
                .iter()
                .map(|e| TestCase {
                    input: vec![],
                    expected: e.map(|e| e.as_bytes().to_vec()),
                })
                .collect(),
            compare: CompareMode::default(),
        }
    }

    fn ended(exit_code: Option<i32>, signal: Option<i32>) -> TestEnded {
        TestEnded {
            index: 0,
            usage: Usage {
                exit_code,
                signal,
                ..Usage::new(Stage::Run)
            },
            timed_out: false,
            memory_exceeded: false,
        }
    }

    #[test]
    fn each_test_gets_its_verdict_and_the_run_the_first_that_is_not_accepted() {
        let spec = spec(&[Some("3\n"), Some("5\n"), None, Some("x")]);
        let mut judging = Judging::new(&spec, false);
        judging.output(OutputStream::Stdout, b"3  \n\n");
        judging.output(OutputStream::Stderr, b"debug\n");
        assert_eq!(
            judging.ended(ended(Some(0), None)).verdict,
            Verdict::Accepted
        );
        judging.output(OutputStream::Stdout, b"6\n");
        let wrong = judging.ended(ended(Some(0), None));
        assert_eq!(wrong.verdict, Verdict::WrongAnswer);
        assert!(wrong.compared && wrong.difference.is_some());
        let ran = judging.ended(ended(Some(0), None));
        assert_eq!((ran.verdict, ran.compared), (Verdict::Accepted, false));
        let crashed = judging.ended(ended(None, Some(11)));
        assert_eq!(crashed.verdict, Verdict::RuntimeError);
        let judged = judging.finish(Reason::Exited, &Usage::new(Stage::Run));
        assert_eq!(
            (judged.verdict, judged.passed, judged.total),
            (Some(Verdict::WrongAnswer), 2, 4)
        );
    }

    #[test]
    fn a_test_cut_short_by_the_runs_limits_gets_that_verdict() {
        let spec = spec(&[Some("1\n"), Some("2\n")]);
        let mut judging = Judging::new(&spec, false);
        judging.output(OutputStream::Stdout, b"1\n");
        judging.ended(ended(Some(0), None));
        let judged = judging.finish(Reason::OutputLimit, &Usage::new(Stage::Run));
        assert_eq!(judged.tests[1].verdict, Verdict::OutputLimit);
        assert_eq!(
            (judged.verdict, judged.passed),
            (Some(Verdict::OutputLimit), 1)
        );
    }

    #[test]
    fn timeouts_memory_and_compile_errors() {
        let spec = spec(&[Some("1\n"), Some("1\n")]);
        let mut judging = Judging::new(&spec, false);
        let mut slow = ended(None, Some(9));
        slow.timed_out = true;
        assert_eq!(judging.ended(slow).verdict, Verdict::TimeLimit);
        let mut big = ended(None, Some(9));
        big.memory_exceeded = true;
        assert_eq!(judging.ended(big).verdict, Verdict::MemoryLimit);
        let judging = Judging::new(&spec, false);
        let judged = judging.finish(Reason::CompileError, &Usage::new(Stage::Compile));
        assert_eq!(
            (judged.verdict, judged.tests.len()),
            (Some(Verdict::CompileError), 0)
        );
        let judging = Judging::new(&spec, false);
        let stopped = judging.finish(Reason::Stopped, &Usage::new(Stage::Run));
        assert_eq!(stopped.verdict, None);
        let judging = Judging::new(&spec, false);
        let killed_launcher = judging.finish(Reason::Exited, &Usage::new(Stage::Run));
        assert_eq!(killed_launcher.verdict, Some(Verdict::RuntimeError));
    }
}

//! What crosses Redis, and under which keys: a job (a run's spec), a run's events, and the
//! stdin, EOF and Stop sent to it. Pure: no IO.
//!
//! Keys, all under a prefix (`--redis-prefix`, so that clusters can share a server):
//! - `<p>:jobs`: the stream of jobs, one entry per run (field `job`), read by the consumer
//!   group [`GROUP`]; an entry is deleted once its run has ended, so the stream's length is
//!   the runs queued or running in the whole cluster.
//! - `<p>:run:<id>:events`: the run's log, one entry per [`Event`] in order (field `ev`, JSON,
//!   or `out`, an output frame: the stream's tag, then the bytes), so a position in the stream
//!   is the run's log position. READY is entry `1-0` (written by the API node with the job),
//!   the worker's events are `1-1`, `1-2`... ([`event_id`]): a write retried after Redis took it
//!   but the answer was lost is refused as not newer, instead of landing twice. The sweep's
//!   own final events take ids from the clock, after all of those.
//! - `<p>:run:<id>:control`: stdin chunks, EOF, Stop and signals (field `c`, JSON), each with
//!   its sender and number (field `by`, [`sender`]), so that a retried chunk is applied once
//!   ([`Senders`]).
//! - `<p>:run:<id>:language`: the run's language, for a node asked about a job another took.
//! - `<p>:run:<id>:owner`: the worker that started the run.
//! - `<p>:client:<name>`: the jobs entries of one client's runs (a set), for its cap across the
//!   cluster; an entry no longer in the jobs stream is a run that ended, dropped at the next
//!   submit.
//! - `<p>:worker:<name>`: a worker's heartbeat, with a short TTL; its value the languages the
//!   worker can run.
use crate::judging::{JudgeSpec, TestCase};
use crate::limits::Limits;
use crate::run::{Client, RunSpec};
use bytes::Bytes;
use onpyrunner_protocol::judge::CompareMode;
use onpyrunner_protocol::run::TestResult;
use onpyrunner_protocol::{Event, OutputChunk, Reason, RunState, SourceFile, Summary, Usage};
use serde::{Deserialize, Serialize};

/// The consumer group every worker joins on the jobs stream.
pub const GROUP: &str = "workers";
/// Field names of the stream entries.
pub const JOB_FIELD: &str = "job";
pub const EVENT_FIELD: &str = "ev";
pub const OUTPUT_FIELD: &str = "out";
pub const CONTROL_FIELD: &str = "c";
pub const SENDER_FIELD: &str = "by";

/// The id of a run's `n`th event written by its worker (READY, written with the job, is 0).
pub fn event_id(n: u64) -> String {
    format!("1-{n}")
}

/// Whether Redis refused an XADD because the stream already holds that id or a later one.
pub fn not_newer(message: &str) -> bool {
    message.contains("equal or smaller")
}

/// The sender field of the `n`th control entry `node` sends to a run.
pub fn sender(node: &str, n: u64) -> String {
    format!("{node}/{n}")
}

/// What a worker has applied of each sender's control entries to one run.
#[derive(Debug, Default)]
pub struct Senders {
    last: std::collections::HashMap<String, u64>,
}

impl Senders {
    /// Whether an entry with this sender field is new (and note it): false for a repeat of one
    /// already applied. An entry without a readable sender field is taken as new.
    pub fn fresh(&mut self, by: Option<&[u8]>) -> bool {
        let Some((node, n)) = by
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|b| b.rsplit_once('/'))
            .and_then(|(node, n)| Some((node, n.parse::<u64>().ok()?)))
        else {
            return true;
        };
        if self.last.get(node).is_some_and(|&last| n <= last) {
            return false;
        }
        if self.last.len() < 64 || self.last.contains_key(node) {
            self.last.insert(node.to_string(), n);
        }
        true
    }
}

/// The keys of one cluster (one prefix).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn jobs(&self) -> String {
        format!("{}:jobs", self.prefix)
    }

    pub fn events(&self, run: &str) -> String {
        format!("{}:run:{run}:events", self.prefix)
    }

    pub fn control(&self, run: &str) -> String {
        format!("{}:run:{run}:control", self.prefix)
    }

    /// The run's language, for a node asked about a job another node took.
    pub fn language(&self, run: &str) -> String {
        format!("{}:run:{run}:language", self.prefix)
    }

    pub fn owner(&self, run: &str) -> String {
        format!("{}:run:{run}:owner", self.prefix)
    }

    /// The jobs entries of one client's runs (its name as the identity layer gives it).
    pub fn client(&self, name: &str) -> String {
        format!("{}:client:{name}", self.prefix)
    }

    pub fn worker(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }

    /// The pattern that matches every worker's heartbeat key.
    pub fn workers_pattern(&self) -> String {
        format!("{}:worker:*", self.prefix)
    }
}

/// Whether a prefix is usable in keys: `[A-Za-z0-9._-]`, 1 to 64 characters (no `:`, so keys
/// of two prefixes never overlap, and no glob characters, so the workers' pattern is exact).
pub fn valid_prefix(prefix: &str) -> bool {
    (1..=64).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Bytes as base64 in JSON (source, stdin, test inputs).
mod base64 {
    use data_encoding::BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        BASE64
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }

    pub mod option {
        use super::*;

        pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
            match bytes {
                Some(bytes) => s.serialize_some(&BASE64.encode(bytes)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|text| BASE64.decode(text.as_bytes()))
                .transpose()
                .map_err(serde::de::Error::custom)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobFile {
    name: String,
    #[serde(with = "base64")]
    content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobTest {
    #[serde(with = "base64")]
    input: Vec<u8>,
    #[serde(with = "base64::option")]
    expected: Option<Vec<u8>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct JobJudge {
    tests: Vec<JobTest>,
    compare: CompareMode,
}

/// A run as a worker takes it: its id and its spec, the language by id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    language: String,
    files: Vec<JobFile>,
    args: Vec<String>,
    limits: Limits,
    judge: Option<JobJudge>,
    /// The client's name, for the worker's turn-taking; its quotas are the API node's.
    client: Option<String>,
}

/// A job that cannot be run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadJob {
    #[error("job: {0}")]
    Decode(String),
    #[error("job: language {0:?} is not in this worker's table")]
    UnknownLanguage(String),
}

impl Job {
    pub fn of(id: &str, spec: &RunSpec) -> Self {
        Job {
            id: id.to_string(),
            language: spec.language.id.clone(),
            files: spec
                .files
                .iter()
                .map(|f| JobFile {
                    name: f.name.clone(),
                    content: f.content.clone(),
                })
                .collect(),
            args: spec.args.clone(),
            limits: spec.limits.clone(),
            judge: spec.judge.as_ref().map(|judge| JobJudge {
                tests: judge
                    .tests
                    .iter()
                    .map(|t| JobTest {
                        input: t.input.clone(),
                        expected: t.expected.clone(),
                    })
                    .collect(),
                compare: judge.compare,
            }),
            client: spec.client.as_ref().map(|c| c.name.clone()),
        }
    }

    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a job serializes")
    }

    pub fn decode(text: &[u8]) -> Result<Self, BadJob> {
        serde_json::from_slice(text).map_err(|e| BadJob::Decode(e.to_string()))
    }

    /// The spec to run, its language resolved through this build's table.
    pub fn spec(&self) -> Result<RunSpec, BadJob> {
        let language = onpyrunner_languages::find(&self.language)
            .ok_or_else(|| BadJob::UnknownLanguage(self.language.clone()))?;
        Ok(RunSpec {
            language,
            files: self
                .files
                .iter()
                .map(|f| SourceFile {
                    name: f.name.clone(),
                    content: f.content.clone(),
                })
                .collect(),
            args: self.args.clone(),
            limits: self.limits.clone(),
            client: self.client.clone().map(Client::new),
            judge: self.judge.as_ref().map(|judge| JudgeSpec {
                tests: judge
                    .tests
                    .iter()
                    .map(|t| TestCase {
                        input: t.input.clone(),
                        expected: t.expected.clone(),
                    })
                    .collect(),
                compare: judge.compare,
            }),
        })
    }
}

/// Every event but output, as JSON (output goes as a raw frame, [`OutputChunk::frame`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Meta {
    State { state: RunState, at_unix_ms: u64 },
    Queued { position: usize },
    Compiled { usage: Usage },
    Test { test: TestResult },
    Summary { summary: Summary },
}

/// One entry of a run's events stream: its field and value.
pub fn encode_event(event: &Event) -> (&'static str, Bytes) {
    let meta = match event {
        Event::Output(chunk) => return (OUTPUT_FIELD, chunk.frame()),
        Event::State { state, at_unix_ms } => Meta::State {
            state: *state,
            at_unix_ms: *at_unix_ms,
        },
        Event::Queued { position } => Meta::Queued {
            position: *position,
        },
        Event::Compiled(usage) => Meta::Compiled {
            usage: usage.clone(),
        },
        Event::Test(test) => Meta::Test { test: test.clone() },
        Event::Summary(summary) => Meta::Summary {
            summary: summary.clone(),
        },
    };
    let json = serde_json::to_vec(&meta).expect("an event serializes");
    (EVENT_FIELD, Bytes::from(json))
}

/// The event an entry of a run's events stream holds; `None` for an entry that holds none.
pub fn decode_event(field: &str, value: &[u8]) -> Option<Event> {
    match field {
        OUTPUT_FIELD => OutputChunk::from_frame(value).map(Event::Output),
        EVENT_FIELD => Some(match serde_json::from_slice(value).ok()? {
            Meta::State { state, at_unix_ms } => Event::State { state, at_unix_ms },
            Meta::Queued { position } => Event::Queued { position },
            Meta::Compiled { usage } => Event::Compiled(usage),
            Meta::Test { test } => Event::Test(test),
            Meta::Summary { summary } => Event::Summary(summary),
        }),
        _ => None,
    }
}

/// What a run's callers send it through its control stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Control {
    Stdin {
        #[serde(with = "base64")]
        data: Vec<u8>,
    },
    Eof,
    Stop {
        reason: Reason,
    },
    /// A signal for the program (a Piston client's `signal`).
    Signal {
        signal: i32,
    },
}

impl Control {
    pub fn encode(&self) -> String {
        serde_json::to_string(self).expect("a control entry serializes")
    }

    pub fn decode(text: &[u8]) -> Option<Self> {
        serde_json::from_slice(text).ok()
    }
}

/// The last two events of a run that ended in `summary`: its final state, then the summary.
pub fn final_events(summary: Summary) -> [Event; 2] {
    [
        Event::State {
            state: summary.state,
            at_unix_ms: crate::session::unix_ms(),
        },
        Event::Summary(summary),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_protocol::{OutputStream, Stage};

    #[test]
    fn a_repeated_control_entry_is_not_fresh_and_senders_count_apart() {
        let mut senders = Senders::default();
        assert!(senders.fresh(Some(sender("api-a", 1).as_bytes())));
        assert!(senders.fresh(Some(sender("api-b", 1).as_bytes())));
        assert!(
            !senders.fresh(Some(sender("api-a", 1).as_bytes())),
            "a retry"
        );
        assert!(senders.fresh(Some(sender("api-a", 2).as_bytes())));
        assert!(!senders.fresh(Some(sender("api-b", 1).as_bytes())));
        assert!(senders.fresh(None), "no sender field: applied");
        assert!(senders.fresh(Some(b"no number")));
        assert_eq!(event_id(3), "1-3");
        assert!(not_newer(
            "ERR The ID specified in XADD is equal or smaller than the target stream top item"
        ));
    }

    #[test]
    fn keys_of_a_run_are_under_the_prefix() {
        let keys = Keys::new("c1");
        assert_eq!(keys.jobs(), "c1:jobs");
        assert_eq!(keys.events("ab"), "c1:run:ab:events");
        assert_eq!(keys.control("ab"), "c1:run:ab:control");
        assert_eq!(keys.owner("ab"), "c1:run:ab:owner");
        assert_eq!(keys.worker("w"), "c1:worker:w");
        assert_eq!(keys.workers_pattern(), "c1:worker:*");
        assert!(valid_prefix("onpyrunner"));
        assert!(valid_prefix("t-1.a_b"));
        for bad in ["", "a:b", "a*", "a b", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_job_round_trips_to_the_same_spec() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let limits = Limits::defaults(lang, &crate::limits::Caps::default());
        let mut spec = RunSpec::single(lang, b"print(1)\xff".to_vec(), limits);
        spec.args = vec!["a b".into()];
        spec.client = Some(Client::new("10.0.0.1"));
        spec.judge = Some(JudgeSpec {
            tests: vec![TestCase {
                input: b"1 2\n".to_vec(),
                expected: Some(b"3\n".to_vec()),
            }],
            compare: CompareMode::Lines,
        });
        let job = Job::decode(Job::of("id1", &spec).encode().as_bytes()).unwrap();
        assert_eq!(job.id, "id1");
        let back = job.spec().unwrap();
        assert_eq!(back.language.id, "python");
        assert_eq!(back.files, spec.files);
        assert_eq!(back.args, spec.args);
        assert_eq!(back.limits, spec.limits);
        assert_eq!(back.judge, spec.judge);
        assert_eq!(back.client, spec.client);
    }

    #[test]
    fn a_job_of_an_unknown_language_is_refused_by_name() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let spec = RunSpec::single(lang, "x", Limits::defaults(lang, &Default::default()));
        let mut job = Job::of("id", &spec);
        job.language = "cobol".into();
        assert_eq!(
            job.spec().unwrap_err(),
            BadJob::UnknownLanguage("cobol".into())
        );
        assert!(matches!(Job::decode(b"{"), Err(BadJob::Decode(_))));
    }

    #[test]
    fn every_kind_of_event_round_trips() {
        let events = [
            Event::State {
                state: RunState::Running,
                at_unix_ms: 7,
            },
            Event::Queued { position: 3 },
            Event::Output(OutputChunk {
                stream: OutputStream::Stderr,
                data: Bytes::from_static(b"\x00\xff bytes"),
            }),
            Event::Compiled(Usage::new(Stage::Compile)),
            Event::Summary(Summary::internal(Stage::Run, "worker w was lost")),
        ];
        for event in events {
            let (field, value) = encode_event(&event);
            assert_eq!(decode_event(field, &value), Some(event));
        }
        assert_eq!(decode_event("other", b"x"), None);
        assert_eq!(decode_event(EVENT_FIELD, b"{"), None);
    }

    #[test]
    fn control_entries_round_trip() {
        for c in [
            Control::Stdin {
                data: b"a\n\x00".to_vec(),
            },
            Control::Eof,
            Control::Stop {
                reason: Reason::ClientGone,
            },
            Control::Signal { signal: 15 },
        ] {
            assert_eq!(Control::decode(c.encode().as_bytes()), Some(c));
        }
    }
}

//! Harness for end-to-end tests: the real daemon, the real images, and a check after every run
//! that no container of the test is left behind.
pub mod cluster;
pub mod hostile;
pub mod stand_in;

use bytes::Bytes;
use onpyrunner_languages::Language;
use onpyrunner_protocol::judge::{CompareMode, Verdict};
use onpyrunner_protocol::run::{TestResult, Usage};
use onpyrunner_protocol::{Event, OutputChunk, OutputStream, RunState, Summary};
use onpyrunner_supervisor::container::{LABEL_MANAGED, LABEL_OWNER};
use onpyrunner_supervisor::docker::types::ContainerSummary;
use onpyrunner_supervisor::docker::{encode_query_value, ApiRequest, Docker, Payload, API_VERSION};
use onpyrunner_supervisor::engine::EngineConfig;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::judging::{JudgeSpec, TestCase};
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{self, Maker, Placement, RunSpec};
use onpyrunner_supervisor::run_log::Follower;
use onpyrunner_supervisor::uids::{UidRange, Uids};
use std::collections::BTreeMap;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::mpsc;

/// Upper bound on any one await in a test; a run that hangs fails instead of blocking CI.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Harness {
    pub docker: Docker,
    /// Owner label of every container this test makes.
    pub owner: String,
}

/// What a run produced, as a user sees it.
pub struct Ran {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub chunks: Vec<OutputChunk>,
    /// The compile's end as heard (its usage), and how many of `chunks` came before it.
    pub compiled: Option<(Usage, usize)>,
    /// For each test's end as heard, how many of `chunks` came before it.
    pub test_ends: Vec<usize>,
    pub outcome: Summary,
}

/// The summary and the output as text, cut at 4 KiB a stream: a failed assertion reads as what
/// the user saw, not as a list of byte values.
impl std::fmt::Debug for Ran {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |bytes: &[u8]| {
            let cut = &bytes[..bytes.len().min(4096)];
            let more = bytes.len() - cut.len();
            let mut text = String::from_utf8_lossy(cut).into_owned();
            if more > 0 {
                text.push_str(&format!("... ({more} more bytes)"));
            }
            text
        };
        f.debug_struct("Ran")
            .field("outcome", &self.outcome)
            .field("stdout", &text(&self.stdout))
            .field("stderr", &text(&self.stderr))
            .field("chunks", &self.chunks.len())
            .finish()
    }
}

impl Ran {
    /// The text of `chunks[from..to]`: stdout's and stderr's.
    pub fn text_between(&self, from: usize, to: usize) -> (String, String) {
        let mut text = (String::new(), String::new());
        for chunk in &self.chunks[from..to] {
            let s = String::from_utf8_lossy(&chunk.data);
            match chunk.stream {
                OutputStream::Stdout => text.0.push_str(&s),
                OutputStream::Stderr => text.1.push_str(&s),
            }
        }
        text
    }
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub fn language(id: &str) -> &'static Language {
    onpyrunner_languages::find(id).unwrap_or_else(|| panic!("language {id} is in the table"))
}

/// What the language's sandboxes are made from, as an engine with no `--runtime` makes them.
pub fn placement(lang: &Language) -> Placement {
    Placement {
        image: images::image_ref(lang),
        runtime: lang.runtime.clone(),
    }
}

/// The uids of the containers the harness makes (not an engine's): one allocator for the test
/// binary, so that concurrent tests' containers run as distinct uids too, apart from the
/// engines' default range.
pub fn harness_uids() -> &'static Uids {
    static UIDS: OnceLock<Uids> = OnceLock::new();
    UIDS.get_or_init(|| Uids::new(UidRange::new(21_000, 21_999).expect("a valid range")))
}

pub fn spec(lang: &str, code: &str) -> RunSpec {
    let lang = language(lang);
    RunSpec::single(lang, code, Limits::defaults(lang, &Caps::default()))
}

/// A judged run of `code` on `tests` (input, expected output), compared the judges' way.
pub fn judged(lang: &str, code: &str, tests: &[(&str, Option<&str>)]) -> RunSpec {
    let mut s = spec(lang, code);
    s.judge = Some(JudgeSpec {
        tests: tests
            .iter()
            .map(|(input, expected)| TestCase {
                input: input.as_bytes().to_vec(),
                expected: expected.map(|e| e.as_bytes().to_vec()),
            })
            .collect(),
        compare: CompareMode::Lines,
    });
    s
}

/// Each test's verdict of a judged run, in order.
pub fn verdicts(ran: &Ran) -> Vec<Verdict> {
    let judged = ran.outcome.judge.as_ref().expect("a judged summary");
    judged.tests.iter().map(|t| t.verdict).collect()
}

impl Harness {
    /// Connect to the daemon; fail with how to start it when it does not answer.
    pub async fn new(test: &str) -> Harness {
        let docker = Docker::from_host(None).expect("DOCKER_HOST is a unix socket");
        if let Err(e) = docker.ping().await {
            panic!("end-to-end tests need a running Docker daemon: {e}");
        }
        Harness {
            docker,
            owner: format!("test-{test}-{}", run::random_hex(4)),
        }
    }

    /// Makes containers labelled as this test's, as uids of [`harness_uids`].
    pub fn maker(&self) -> Maker {
        Maker {
            docker: self.docker.clone(),
            owner: self.owner.clone(),
            uids: harness_uids().clone(),
        }
    }

    /// Run a program to the end, feeding `stdin` then EOF, and check nothing is left behind.
    pub async fn run(&self, spec: &RunSpec, stdin: &[u8]) -> Ran {
        let (stdin_tx, stdin_rx) = mpsc::channel(4);
        let input = Bytes::copy_from_slice(stdin);
        tokio::spawn(async move {
            if !input.is_empty() {
                let _ = stdin_tx.send(input).await;
            }
        });
        let ran = self.run_with(spec, stdin_rx, |_| {}).await;
        self.assert_no_containers_left().await;
        ran
    }

    /// Run with a caller-held stdin channel; `on_chunk` sees output as it arrives.
    pub async fn run_with(
        &self,
        spec: &RunSpec,
        stdin: mpsc::Receiver<Bytes>,
        mut on_chunk: impl FnMut(&OutputChunk) + Send,
    ) -> Ran {
        let placement = placement(spec.language);
        if self
            .docker
            .inspect_image(&placement.image)
            .await
            .expect("inspect image")
            .is_none()
        {
            panic!(
                "image {} is missing: build it with `bash scripts/setup.sh`",
                placement.image
            );
        }
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let maker = self.maker();
        let running = run::run_fresh(&maker, &placement, spec, stdin, out_tx);
        let collecting = async {
            let (mut chunks, mut compiled, mut test_ends) = (Vec::new(), None, Vec::new());
            while let Some(event) = out_rx.recv().await {
                // Test verdicts are in the summary too (Heard has them live).
                match event {
                    Event::Output(chunk) => {
                        on_chunk(&chunk);
                        chunks.push(chunk);
                    }
                    Event::Compiled(usage) => {
                        assert!(compiled.is_none(), "the compile's end was heard twice");
                        compiled = Some((usage, chunks.len()));
                    }
                    Event::Test(_) => test_ends.push(chunks.len()),
                    _ => {}
                }
            }
            (chunks, compiled, test_ends)
        };
        let (outcome, (chunks, compiled, test_ends)) =
            tokio::time::timeout(TEST_TIMEOUT, async { tokio::join!(running, collecting) })
                .await
                .expect("run finished within the test timeout");
        let outcome = outcome.expect("run succeeded");
        let pick = |s: OutputStream| -> Vec<u8> {
            chunks
                .iter()
                .filter(|c| c.stream == s)
                .flat_map(|c| c.data.iter().copied())
                .collect()
        };
        Ran {
            stdout: pick(OutputStream::Stdout),
            stderr: pick(OutputStream::Stderr),
            chunks,
            compiled,
            test_ends,
            outcome,
        }
    }

    /// Containers of this test that still exist.
    pub async fn containers_left(&self) -> Vec<String> {
        let label = format!("{LABEL_OWNER}={}", self.owner);
        let list = tokio::time::timeout(TEST_TIMEOUT, self.docker.list_containers(&[label]))
            .await
            .expect("list within timeout")
            .expect("list containers");
        list.into_iter().map(|c| c.id).collect()
    }

    /// Poll the daemon until no container of this test is left, failing once `within` passed.
    pub async fn assert_gone_within(&self, within: Duration) {
        let started = std::time::Instant::now();
        loop {
            let left = self.containers_left().await;
            if left.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < within,
                "containers of {} still there {within:?} after the run: {left:?}",
                self.owner
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn assert_no_containers_left(&self) {
        let left = self.containers_left().await;
        assert!(
            left.is_empty(),
            "containers left behind by {}: {left:?}",
            self.owner
        );
    }
}

/// A session's events, gathered to the end.
#[derive(Debug, Default)]
pub struct Heard {
    pub states: Vec<RunState>,
    pub positions: Vec<usize>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// A judged run's test verdicts, as they came.
    pub tests: Vec<TestResult>,
    /// The compile's usage when its end was heard, and how much stdout and stderr came before.
    pub compiled: Option<(Usage, usize, usize)>,
    pub summary: Option<Summary>,
}

impl Heard {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    pub fn summary(&self) -> &Summary {
        self.summary.as_ref().expect("a summary was heard")
    }
    /// Add one event; true when it was the summary (the last one).
    pub fn hear(&mut self, event: Event) -> bool {
        match event {
            Event::State { state, .. } => self.states.push(state),
            Event::Queued { position } => self.positions.push(position),
            Event::Output(chunk) => match chunk.stream {
                OutputStream::Stdout => self.stdout.extend_from_slice(&chunk.data),
                OutputStream::Stderr => self.stderr.extend_from_slice(&chunk.data),
            },
            Event::Compiled(usage) => {
                assert!(self.compiled.is_none(), "the compile's end was heard twice");
                self.compiled = Some((usage, self.stdout.len(), self.stderr.len()));
            }
            Event::Test(test) => self.tests.push(test),
            Event::Summary(summary) => {
                self.summary = Some(summary);
                return true;
            }
        }
        false
    }
}

/// Read a session's events until the summary (within the test timeout).
pub async fn hear_all(events: &mut Follower) -> Heard {
    let mut heard = Heard::default();
    tokio::time::timeout(TEST_TIMEOUT, async {
        while let Some(event) = events.recv().await {
            if heard.hear(event) {
                break;
            }
        }
    })
    .await
    .expect("the session ended within the test timeout");
    assert!(
        events.recv().await.is_none(),
        "nothing comes after the summary"
    );
    heard
}

/// Read events until the program's stdout contains `text`.
pub async fn hear_until(events: &mut Follower, heard: &mut Heard, text: &str) {
    tokio::time::timeout(TEST_TIMEOUT, async {
        while !heard.stdout_text().contains(text) {
            let event = events.recv().await.expect("the session goes on");
            assert!(
                !heard.hear(event),
                "ended before printing {text:?}: {heard:?}"
            );
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{text:?} was printed within the test timeout"));
}

/// An engine config for a test: a unique instance name and small pools.
pub fn engine_config(test: &str, pool: &[(&str, usize)]) -> EngineConfig {
    let mut pool_sizes: BTreeMap<String, usize> = onpyrunner_languages::languages()
        .iter()
        .map(|l| (l.id.clone(), 0))
        .collect();
    for (lang, size) in pool {
        pool_sizes.insert(lang.to_string(), *size);
    }
    EngineConfig {
        instance: format!("t-{test}-{}", run::random_hex(3)),
        pool_sizes,
        ..EngineConfig::default()
    }
}

/// Containers on the daemon whose owner belongs to this instance.
pub async fn instance_containers(docker: &Docker, instance: &str) -> Vec<ContainerSummary> {
    let all = tokio::time::timeout(
        TEST_TIMEOUT,
        docker.list_containers(&[format!("{LABEL_MANAGED}=1")]),
    )
    .await
    .expect("list within timeout")
    .expect("list containers");
    let prefix = format!("{instance}.");
    all.into_iter()
        .filter(|c| {
            c.labels
                .get(LABEL_OWNER)
                .is_some_and(|o| o.starts_with(&prefix))
        })
        .collect()
}

pub async fn assert_instance_clean(docker: &Docker, instance: &str) {
    let left = instance_containers(docker, instance).await;
    assert!(
        left.is_empty(),
        "containers of instance {instance} left behind: {:?}",
        left.iter()
            .map(|c| (&c.id[..12], &c.state))
            .collect::<Vec<_>>()
    );
}

/// Poll `check` every 20 ms until it holds, failing after the test timeout.
pub async fn until(what: &str, mut check: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !check() {
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Ids of the containers created with owner label `owner` from `since` until now, as the
/// daemon's event log tells it: a container that was made and removed again still shows here.
pub async fn containers_created(
    docker: &Docker,
    owner: &str,
    since: std::time::SystemTime,
) -> Vec<String> {
    use http_body_util::BodyExt;
    let unix = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
    };
    let filters = serde_json::json!({
        "type": ["container"],
        "event": ["create"],
        "label": [format!("{LABEL_OWNER}={owner}")],
    });
    // `until` a second ahead: the daemon streams the events up to then, then ends the answer.
    let request = ApiRequest {
        op: "events",
        method: hyper::Method::GET,
        path: format!(
            "/{API_VERSION}/events?since={}&until={}&filters={}",
            unix(since).saturating_sub(1),
            unix(std::time::SystemTime::now()) + 1,
            encode_query_value(&filters.to_string())
        ),
        payload: Payload::Empty,
    };
    let body = tokio::time::timeout(TEST_TIMEOUT, async {
        let response = docker.send(request, None).await.expect("events");
        response.into_body().collect().await.expect("events body")
    })
    .await
    .expect("events within the timeout")
    .to_bytes();
    body.split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| {
            let event: serde_json::Value = serde_json::from_slice(line).expect("event JSON");
            event["Actor"]["ID"]
                .as_str()
                .expect("a container event names its container")
                .to_string()
        })
        .collect()
}

//! Harness for end-to-end tests: the real daemon, the real images, and a check after every run
//! that no container of the test is left behind.
use bytes::Bytes;
use onpyrunner_images::Language;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{self, Outcome, OutputChunk, OutputStream, RunSpec};
use onpyrunner_supervisor::sandbox::LABEL_OWNER;
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
#[derive(Debug)]
pub struct Ran {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub chunks: Vec<OutputChunk>,
    pub outcome: Outcome,
}

impl Ran {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

pub fn language(id: &str) -> &'static Language {
    onpyrunner_images::find(id).unwrap_or_else(|| panic!("language {id} is in the table"))
}

pub fn spec(lang: &str, code: &str) -> RunSpec {
    let lang = language(lang);
    RunSpec::single(lang, code, Limits::defaults(lang, &Caps::default()))
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
        let image = images::image_ref(spec.language);
        if self
            .docker
            .inspect_image(&image)
            .await
            .expect("inspect image")
            .is_none()
        {
            panic!("image {image} is missing: build it with `bash scripts/setup.sh`");
        }
        let (out_tx, mut out_rx) = mpsc::channel(16);
        let running = run::run_fresh(&self.docker, &image, &self.owner, spec, stdin, out_tx);
        let collecting = async {
            let mut chunks = Vec::new();
            while let Some(chunk) = out_rx.recv().await {
                on_chunk(&chunk);
                chunks.push(chunk);
            }
            chunks
        };
        let (outcome, chunks) =
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

    pub async fn assert_no_containers_left(&self) {
        let left = self.containers_left().await;
        assert!(
            left.is_empty(),
            "containers left behind by {}: {left:?}",
            self.owner
        );
    }
}

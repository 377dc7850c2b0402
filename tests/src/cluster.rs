//! For the cluster tests: a Redis server of the test's own (the bench's [`RedisServer`], killed
//! at the end) and `onpyrunner worker` and API processes.
use crate::TEST_TIMEOUT;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `redis-server` of one test (the bench's: a free loopback port, a password, a temporary
/// directory), started or the test fails saying why.
pub struct RedisServer(pub onpyrunner_bench::redis_server::RedisServer);

impl RedisServer {
    /// Start one with no persistence and wait until it accepts connections.
    pub async fn start() -> RedisServer {
        let started = onpyrunner_bench::redis_server::RedisServer::start().await;
        RedisServer(started.expect("the cluster tests start a redis-server"))
    }

    /// Start one that keeps an append-only file synced on every write, so that it can be
    /// restarted without losing anything.
    pub async fn start_durable() -> RedisServer {
        let started = onpyrunner_bench::redis_server::RedisServer::start_durable().await;
        RedisServer(started.expect("the cluster tests start a redis-server"))
    }

    /// `kill -9` it.
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Start it again on the same port with the same files.
    pub async fn start_again(&mut self) {
        self.0.start_again().await.expect("redis-server restarts");
    }

    /// The URL with the password, as `--redis` takes it.
    pub fn url(&self) -> String {
        self.0.url()
    }
}

/// The `onpyrunner` binary of this build, built (once per test binary) if it is not up to
/// date: the e2e package cannot name another package's binary otherwise.
pub fn onpyrunner_binary() -> PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            // target/<profile>/deps/<test> -> target/<profile>/onpyrunner
            let exe = std::env::current_exe().expect("the test binary's path");
            let profile_dir = exe
                .parent()
                .and_then(|deps| deps.parent())
                .expect("a test binary lives in target/<profile>/deps");
            let release = profile_dir.file_name().is_some_and(|n| n == "release");
            let target_dir = profile_dir.parent().expect("target/<profile>");
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args([
                    "build",
                    "--quiet",
                    "-p",
                    "onpyrunner",
                    "--bin",
                    "onpyrunner",
                ])
                .arg("--target-dir")
                .arg(target_dir)
                .current_dir(env!("CARGO_MANIFEST_DIR"));
            if release {
                build.arg("--release");
            }
            let status = build.status().expect("cargo runs");
            assert!(status.success(), "cargo build -p onpyrunner failed");
            profile_dir.join("onpyrunner")
        })
        .clone()
}

/// An `onpyrunner worker` process (killed if dropped).
pub struct WorkerProcess {
    pub child: Child,
    /// Its consumer name (its engine's owner label).
    pub name: String,
}

/// The worker's engine flags for a test: no pools but `pools`, few running slots.
pub fn worker_args(instance: &str, pools: &[(&str, usize)]) -> Vec<String> {
    let mut args = vec![
        "--instance".to_string(),
        instance.to_string(),
        "--max-running".into(),
        "2".into(),
    ];
    for lang in onpyrunner_languages::languages() {
        let size = pools
            .iter()
            .find(|(id, _)| *id == lang.id)
            .map_or(0, |(_, n)| *n);
        args.push("--pool".into());
        args.push(format!("{}={size}", lang.id));
    }
    args
}

impl WorkerProcess {
    /// Start `onpyrunner worker --redis URL --redis-prefix PREFIX ARGS` and wait until it takes
    /// jobs.
    pub async fn start(url: &str, prefix: &str, args: &[String]) -> WorkerProcess {
        let mut all = ["worker", "--redis", url, "--redis-prefix", prefix]
            .map(String::from)
            .to_vec();
        all.extend_from_slice(args);
        let (child, name) = spawn_until(&all, WORKING, "worker").await;
        WorkerProcess { child, name }
    }

    /// SIGTERM, and wait for it to exit (its runs end, its containers go).
    pub async fn stop(self) {
        terminate(self.child, "worker").await;
    }

    /// `kill -9`: no chance to clean anything up.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(TEST_TIMEOUT, self.child.wait()).await;
    }
}

/// An `onpyrunner serve --redis ... --no-worker` process: an API node of its own (killed if
/// dropped).
pub struct ApiProcess {
    pub child: Child,
    /// Where it listens: `127.0.0.1:PORT`.
    pub addr: String,
}

impl ApiProcess {
    /// Start an API-only node on a free loopback port and wait until it listens.
    pub async fn start(url: &str, prefix: &str, instance: &str) -> ApiProcess {
        let args = [
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--instance",
            instance,
            "--redis",
            url,
            "--redis-prefix",
            prefix,
            "--no-worker",
        ]
        .map(String::from);
        let (child, addr) = spawn_until(&args, LISTENING, "api").await;
        ApiProcess { child, addr }
    }

    /// SIGTERM, and wait for it to exit.
    pub async fn stop(self) {
        terminate(self.child, "API node").await;
    }
}

/// Start the binary with `args` and wait for a line on its stderr that starts with `prefix`;
/// returns the rest of that line. Its other lines go to the test's stderr, marked `who`.
async fn spawn_until(args: &[String], prefix: &str, who: &'static str) -> (Child, String) {
    let mut child = Command::new(onpyrunner_binary())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("onpyrunner starts");
    let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
    let rest = tokio::time::timeout(TEST_TIMEOUT, async {
        while let Some(line) = lines.next_line().await.expect("its stderr") {
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_string();
            }
            eprintln!("{who}: {line}");
        }
        panic!("the {who} exited before saying {prefix:?}");
    })
    .await
    .expect("it starts within the test timeout");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("{who}: {line}");
        }
    });
    (child, rest)
}

/// SIGTERM, and wait for a clean exit.
async fn terminate(mut child: Child, who: &str) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with the pid of our own child, which we have not waited for.
        unsafe {
            libc::kill(pid as i32, libc::SIGTERM);
        }
    }
    let status = tokio::time::timeout(TEST_TIMEOUT, child.wait())
        .await
        .expect("it exits within the test timeout")
        .expect("wait");
    assert!(status.success(), "the {who} exited with {status}");
}

/// What `onpyrunner worker` prints once it takes jobs (web/src/server.rs's `WORKING`).
pub const WORKING: &str = "onpyrunner: worker taking jobs as ";
/// What `onpyrunner serve` prints once it listens (web/src/server.rs's `LISTENING`).
pub const LISTENING: &str = "onpyrunner: listening on http://";

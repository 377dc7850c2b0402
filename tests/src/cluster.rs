//! For the cluster tests: a Redis server of the test's own (a free loopback port, a password,
//! no persistence, a temporary directory, killed at the end) and `onpyrunner worker` processes.
use crate::TEST_TIMEOUT;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A `redis-server` of one test; killed and its directory removed when dropped.
pub struct RedisServer {
    child: std::process::Child,
    dir: PathBuf,
    pub port: u16,
    pub password: String,
}

impl RedisServer {
    /// Start one and wait until it accepts connections.
    pub async fn start() -> RedisServer {
        let found = std::process::Command::new("redis-server")
            .arg("--version")
            .output();
        if !found.is_ok_and(|o| o.status.success()) {
            panic!("the cluster tests need redis-server: install it with `bash scripts/setup.sh`");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let password = onpyrunner_supervisor::run::random_hex(12);
        let dir = std::env::temp_dir().join(format!(
            "onpyrunner-redis-{}",
            onpyrunner_supervisor::run::random_hex(6)
        ));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let child = std::process::Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--requirepass", &password])
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let server = RedisServer {
            child,
            dir,
            port,
            password,
        };
        tokio::time::timeout(TEST_TIMEOUT, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("redis-server listens within the test timeout");
        server
    }

    /// The URL with the password, as `--redis` takes it.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
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
        let mut child = Command::new(onpyrunner_binary())
            .args(["worker", "--redis", url, "--redis-prefix", prefix])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("onpyrunner worker starts");
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let name = tokio::time::timeout(TEST_TIMEOUT, async {
            while let Some(line) = lines.next_line().await.expect("worker stderr") {
                if let Some(name) = line.strip_prefix(WORKING) {
                    return name.to_string();
                }
                eprintln!("worker: {line}");
            }
            panic!("the worker exited before taking jobs");
        })
        .await
        .expect("the worker takes jobs within the test timeout");
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                eprintln!("worker: {line}");
            }
        });
        WorkerProcess { child, name }
    }

    /// SIGTERM, and wait for it to exit (its runs end, its containers go).
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) with the pid of our own child, which we have not waited for.
            unsafe {
                libc::kill(pid as i32, libc::SIGTERM);
            }
        }
        let status = tokio::time::timeout(TEST_TIMEOUT, self.child.wait())
            .await
            .expect("the worker exits within the test timeout")
            .expect("wait");
        assert!(status.success(), "the worker exited with {status}");
    }

    /// `kill -9`: no chance to clean anything up.
    pub async fn kill(mut self) {
        self.child.start_kill().expect("SIGKILL");
        let _ = tokio::time::timeout(TEST_TIMEOUT, self.child.wait()).await;
    }
}

/// What `onpyrunner worker` prints once it takes jobs (web/src/server.rs's `WORKING`).
pub const WORKING: &str = "onpyrunner: worker taking jobs as ";

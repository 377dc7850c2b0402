//! A `redis-server` of this process's own: a free loopback port, a random password, a
//! temporary directory, no persistence unless asked, killed (and its directory removed) when
//! dropped. `onpyrunner cluster-bench` measures through one; the cluster tests start one each.
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How long a started server may take to accept connections.
const LISTEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `redis-server` child.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    durable: bool,
    pub port: u16,
    pub password: String,
}

impl RedisServer {
    /// Start one with no persistence and wait until it accepts connections.
    pub async fn start() -> anyhow::Result<RedisServer> {
        Self::start_with(false).await
    }

    /// Start one that keeps an append-only file synced on every write (as docs/deploy.md asks
    /// of production), so that it can be restarted without losing anything.
    pub async fn start_durable() -> anyhow::Result<RedisServer> {
        Self::start_with(true).await
    }

    async fn start_with(durable: bool) -> anyhow::Result<RedisServer> {
        let found = Command::new("redis-server").arg("--version").output();
        if !found.is_ok_and(|o| o.status.success()) {
            bail!("redis-server is not installed: `bash scripts/setup.sh` installs it");
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("no free loopback port")?
            .port();
        let password = onpyrunner_supervisor::run::random_hex(12);
        let dir = std::env::temp_dir().join(format!(
            "onpyrunner-redis-{}",
            onpyrunner_supervisor::run::random_hex(6)
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let child = spawn(port, &password, &dir, durable)?;
        let server = RedisServer {
            child,
            dir,
            durable,
            port,
            password,
        };
        server.listening().await?;
        Ok(server)
    }

    async fn listening(&self) -> anyhow::Result<()> {
        let port = self.port;
        tokio::time::timeout(LISTEN_TIMEOUT, async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .with_context(|| format!("redis-server did not listen within {LISTEN_TIMEOUT:?}"))
    }

    /// `kill -9` it (no chance to write anything more).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start it again, on the same port with the same files, and wait until it listens.
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        self.child = spawn(self.port, &self.password, &self.dir, self.durable)?;
        self.listening().await
    }

    /// The URL with the password, as `--redis` takes it.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }
}

fn spawn(port: u16, password: &str, dir: &Path, durable: bool) -> anyhow::Result<Child> {
    let persistence: &[&str] = if durable {
        &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
    } else {
        &["--save", "", "--appendonly", "no"]
    };
    Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--requirepass", password])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start redis-server")
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

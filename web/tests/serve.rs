//! `onpyrunner serve` as a process: the real binary, real daemon, real images, real signals.
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use onpyrunner::server::LISTENING;
use onpyrunner_e2e::instance_containers;
use onpyrunner_supervisor::docker::Docker;
use serde_json::Value;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

const TIMEOUT: Duration = Duration::from_secs(120);

struct Server {
    child: Child,
    base: String,
    client: Client<HttpConnector, Full<Bytes>>,
}

/// Start `onpyrunner serve` on a free port and wait until it listens.
async fn serve(instance: &str, args: &[&str]) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_onpyrunner"))
        .args(["serve", "--listen", "127.0.0.1:0", "--instance", instance])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("onpyrunner serve starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = tokio::time::timeout(TIMEOUT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(addr) = line.strip_prefix(LISTENING) {
                return addr.to_string();
            }
        }
        panic!("serve exited before listening");
    })
    .await
    .expect("serve listens within the timeout");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        base: format!("http://{addr}"),
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Server {
    async fn request(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        self.request_with(method, path, body, &[]).await
    }

    async fn request_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("content-type", "application/json");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let response = tokio::time::timeout(TIMEOUT, self.client.request(request))
            .await
            .expect("answer within the timeout")
            .expect("request");
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    /// Post a job and wait until it is RUNNING (its program printed `marker`).
    async fn running_job(&self, code: &str, marker: &str) -> String {
        let body = serde_json::json!({"language": "python", "code": code}).to_string();
        let (status, job) = self.request("POST", "/api/v1/jobs", &body).await;
        assert_eq!(status, 202, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let started = Instant::now();
        loop {
            let (_, view) = self.request("GET", &format!("/api/v1/jobs/{id}"), "").await;
            if view["stdout"].as_str().unwrap_or("").contains(marker) {
                assert_eq!(view["state"], "RUNNING");
                return id;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "job never printed {marker:?}: {view}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_pools_full(&self) {
        let started = Instant::now();
        loop {
            let (_, health) = self.request("GET", "/healthz", "").await;
            let full = health["pools"]
                .as_object()
                .is_some_and(|p| p.values().all(|v| v["ready"] == v["target"]));
            if full {
                return;
            }
            assert!(started.elapsed() < TIMEOUT, "pools never filled: {health}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn signal(&self, signal: i32) {
        let pid = self.child.id().expect("still running") as i32;
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }
}

use libc::{SIGHUP, SIGKILL, SIGTERM};

/// (id, state) of the containers of an instance.
async fn containers(instance: &str) -> Vec<(String, String)> {
    let docker = Docker::from_host(None).unwrap();
    instance_containers(&docker, instance)
        .await
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

fn unique(name: &str) -> String {
    format!("t-{name}-{}", std::process::id())
}

const BUSY_LOOP: &str = "print('spinning', flush=True)\nwhile True: pass";

/// The instance's containers once some are paused (pooled) and some running (the job's, and
/// the pool's hot head): the pool refills a moment after a claim.
async fn paused_and_running(instance: &str) -> Vec<(String, String)> {
    let started = Instant::now();
    loop {
        let now = containers(instance).await;
        if now.iter().any(|(_, s)| s == "paused") && now.iter().any(|(_, s)| s == "running") {
            return now;
        }
        assert!(
            started.elapsed() < TIMEOUT,
            "never paused and running together: {now:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_stops_running_jobs_removes_the_pools_and_exits_cleanly() {
    let instance = unique("sigterm");
    let mut server = serve(&instance, &["--pool", "python=2", "--pool", "node=1"]).await;
    server.wait_pools_full().await;
    server.running_job(BUSY_LOOP, "spinning").await;
    paused_and_running(&instance).await;

    let signalled = Instant::now();
    server.signal(SIGTERM);
    let status = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("exits within 20 s of SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(15));
    assert_eq!(
        containers(&instance).await,
        vec![],
        "nothing is left behind"
    );
}

#[tokio::test]
async fn after_sigkill_a_restart_removes_every_container_the_old_process_left() {
    let instance = unique("sigkill");
    let mut first = serve(&instance, &["--pool", "python=2"]).await;
    first.wait_pools_full().await;
    first.running_job(BUSY_LOOP, "spinning").await;
    paused_and_running(&instance).await;
    first.signal(SIGKILL);
    first.child.wait().await.unwrap();
    let left = containers(&instance).await;
    assert!(left.iter().any(|(_, s)| s == "paused"), "{left:?}");
    assert!(left.iter().any(|(_, s)| s == "running"), "{left:?}");

    let second = serve(&instance, &["--pool", "python=1"]).await;
    let now = containers(&instance).await;
    for (id, _) in &left {
        assert!(
            !now.iter().any(|(n, _)| n == id),
            "container {id} of the killed process survived the restart"
        );
    }
    // And the restarted server works.
    let body = r#"{"language":"python","code":"print(6*7)"}"#;
    let (status, run) = second.request("POST", "/api/v1/runs", body).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "42\n");
    assert_eq!(run["state"], "FINISHED");
    second.signal(SIGTERM);
    let mut second = second;
    tokio::time::timeout(Duration::from_secs(20), second.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert_eq!(containers(&instance).await, vec![]);
}

#[tokio::test]
async fn sighup_rereads_the_tokens_file_and_a_broken_one_changes_nothing() {
    let instance = unique("sighup");
    let dir = std::env::temp_dir().join(format!("onpyrunner-{instance}"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.toml");
    let file = |name: &str| {
        format!("[[token]]\nname = \"{name}\"\nsecret = \"{name}-0123456789abcdef\"\n")
    };
    std::fs::write(&path, file("old")).unwrap();
    let no_pools: Vec<String> = onpyrunner_languages::languages()
        .iter()
        .flat_map(|l| ["--pool".to_string(), format!("{}=0", l.id)])
        .collect();
    let mut args = vec!["--tokens", path.to_str().unwrap()];
    args.extend(no_pools.iter().map(String::as_str));
    let mut server = serve(&instance, &args).await;
    // A run the server refuses once the token is taken (422), so nothing starts: 401 or 422
    // tells whether the token was.
    let status = async |server: &Server, name: &str| {
        let bearer = format!("Bearer {name}-0123456789abcdef");
        let body = r#"{"language":"cobol","code":"x"}"#;
        let headers = [("authorization", bearer.as_str())];
        server
            .request_with("POST", "/api/v1/runs", body, &headers)
            .await
            .0
    };
    assert_eq!(status(&server, "old").await, 422);
    assert_eq!(status(&server, "new").await, 401);

    std::fs::write(&path, file("new")).unwrap();
    server.signal(SIGHUP);
    let started = Instant::now();
    while status(&server, "new").await != 422 {
        assert!(started.elapsed() < TIMEOUT, "the new token never took");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&server, "old").await, 401, "the old token is gone");

    std::fs::write(&path, "[[token]]\nname = \"x\"\nsecret = \"short\"\n").unwrap();
    server.signal(SIGHUP);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&server, "new").await,
        422,
        "a broken file changes nothing"
    );

    server.signal(SIGTERM);
    let exit = tokio::time::timeout(Duration::from_secs(20), server.child.wait())
        .await
        .expect("exits")
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    assert_eq!(containers(&instance).await, vec![]);
    std::fs::remove_dir_all(&dir).unwrap();
}

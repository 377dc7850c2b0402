//! API nodes and worker processes sharing a Redis server: the real binary, the real daemon,
//! the real images, a Redis of each test's own.
use onpyrunner_e2e::cluster::{worker_args, ApiProcess, RedisServer, WorkerProcess};
use onpyrunner_e2e::{assert_instance_clean, hear_all, hear_until, spec, Heard, TEST_TIMEOUT};
use onpyrunner_protocol::{Reason, RunState};
use onpyrunner_supervisor::cluster::{
    Admission, ClusterConfig, RedisRunner, HEARTBEAT_TTL, LOST_BOUND,
};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::run::random_hex;
use onpyrunner_supervisor::run::Client;
use onpyrunner_supervisor::runner::{Runner, SubmitError};
use onpyrunner_supervisor::session::Session;
use std::time::{Duration, Instant};

/// A test's cluster: its Redis, its key prefix, its worker instance name.
struct Cluster {
    redis: RedisServer,
    prefix: String,
    instance: String,
}

impl Cluster {
    async fn new(test: &str) -> Cluster {
        Self::with(test, RedisServer::start().await)
    }

    /// With a Redis that keeps an append-only file, so it can restart without losing data.
    async fn durable(test: &str) -> Cluster {
        Self::with(test, RedisServer::start_durable().await)
    }

    fn with(test: &str, redis: RedisServer) -> Cluster {
        Cluster {
            redis,
            prefix: format!("t-{test}-{}", random_hex(3)),
            instance: format!("t-{test}-{}", random_hex(3)),
        }
    }

    fn config(&self) -> ClusterConfig {
        ClusterConfig::new(self.redis.url(), self.prefix.clone())
    }

    async fn api(&self) -> RedisRunner {
        tokio::time::timeout(
            TEST_TIMEOUT,
            RedisRunner::connect(&self.config(), Admission::new(64, 64), None),
        )
        .await
        .expect("connects within the timeout")
        .expect("the API node starts")
    }

    async fn worker(&self, instance: &str) -> WorkerProcess {
        WorkerProcess::start(&self.redis.url(), &self.prefix, &worker_args(instance, &[])).await
    }
}

/// One HTTP/1.1 request on a connection of its own: the status and the body as JSON.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connects");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n\
             content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.expect("sent");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.expect("read");
        answer
    };
    let answer = tokio::time::timeout(TEST_TIMEOUT, exchange)
        .await
        .expect("an answer within the timeout");
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {text}"));
    let (head, mut body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let mut json = String::new();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        // Size lines in hex, each chunk after its line, a 0 last.
        while let Some((size, rest)) = body.split_once("\r\n") {
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            if size == 0 {
                break;
            }
            json.push_str(&rest[..size]);
            body = rest[size..].trim_start_matches("\r\n");
        }
    } else {
        json.push_str(body);
    }
    (
        status,
        serde_json::from_str(&json).unwrap_or(serde_json::Value::Null),
    )
}

/// Poll job `id` at `addr` until `done` holds for its view.
async fn poll_job(
    addr: &str,
    id: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let started = Instant::now();
    loop {
        let (status, view) = http(addr, "GET", &format!("/api/v1/jobs/{id}"), "").await;
        assert_eq!(status, 200, "{view}");
        if done(&view) {
            return view;
        }
        assert!(started.elapsed() < TEST_TIMEOUT, "{view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn docker() -> Docker {
    Docker::from_host(None).expect("DOCKER_HOST is a unix socket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_queued_through_redis_completes_on_a_worker_process() {
    let cluster = Cluster::new("done").await;
    let worker = cluster.worker(&cluster.instance).await;
    let api = cluster.api().await;
    let mut session = api
        .submit(spec("python", "print('hello from a worker')"))
        .expect("accepted");
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout_text(), "hello from a worker\n", "{heard:?}");
    let summary = heard.summary();
    assert_eq!(summary.reason, Reason::Exited, "{summary:?}");
    assert_eq!(summary.usage.exit_code, Some(0));
    assert_eq!(
        heard.states,
        [RunState::Ready, RunState::Running, RunState::Finished]
    );
    assert_eq!(api.status().redis_up, Some(true));
    worker.stop().await;
    api.shutdown().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_a_signal_and_stop_reach_a_running_program() {
    let cluster = Cluster::new("stdin").await;
    let worker = cluster.worker(&cluster.instance).await;
    let api = cluster.api().await;
    let code = "print('name?', flush=True)\nname = input()\nprint('hello', name)";
    let mut session = api.submit(spec("python", code)).expect("accepted");
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "name?").await;
    let stdin = session.stdin().expect("stdin is open");
    stdin
        .send(bytes::Bytes::from_static(b"redis\n"))
        .await
        .expect("stdin sent");
    let rest = hear_all(&mut session.events).await;
    assert_eq!(rest.stdout_text(), "hello redis\n", "{rest:?}");
    assert_eq!(rest.summary().reason, Reason::Exited);

    let mut busy = api
        .submit(spec(
            "python",
            "print('spinning', flush=True)\nwhile True: pass",
        ))
        .expect("accepted");
    let mut heard = Heard::default();
    hear_until(&mut busy.events, &mut heard, "spinning").await;
    busy.stop();
    let rest = hear_all(&mut busy.events).await;
    assert_eq!(rest.summary().state, RunState::Stopped, "{rest:?}");
    assert_eq!(rest.summary().reason, Reason::Stopped);

    // A signal crosses Redis too, and reaches the program's own handler.
    let code = "import signal, sys\n\
                def bye(*_):\n    print('caught', flush=True)\n    sys.exit(3)\n\
                signal.signal(signal.SIGTERM, bye)\nprint('waiting', flush=True)\n\
                while True: signal.pause()";
    let mut caught = api.submit(spec("python", code)).expect("accepted");
    let mut heard = Heard::default();
    hear_until(&mut caught.events, &mut heard, "waiting").await;
    assert!(caught.control().signal(15));
    let rest = hear_all(&mut caught.events).await;
    assert_eq!(rest.stdout_text(), "caught\n", "{rest:?}");
    assert_eq!(rest.summary().reason, Reason::Exited, "{rest:?}");
    assert_eq!(rest.summary().usage.exit_code, Some(3));
    worker.stop().await;
    api.shutdown().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_nodes_and_two_workers_share_runs_and_resume_across_nodes() {
    let cluster = Cluster::new("two").await;
    let second = format!("{}-b", cluster.instance);
    let (a, b) = tokio::join!(cluster.worker(&cluster.instance), cluster.worker(&second));
    let (api1, api2) = tokio::join!(cluster.api(), cluster.api());
    let mut sessions = Vec::new();
    for i in 0..4 {
        let api = if i % 2 == 0 { &api1 } else { &api2 };
        let code = format!("print('run {i}')\nprint('second line of {i}')");
        sessions.push((i, api.submit(spec("python", &code)).expect("accepted")));
    }
    for (i, session) in &mut sessions {
        let heard = hear_all(&mut session.events).await;
        assert_eq!(
            heard.stdout_text(),
            format!("run {i}\nsecond line of {i}\n"),
            "{heard:?}"
        );
    }
    // Resume run 0 (of node 1) on node 2, from after its first event (READY).
    let (_, first) = &sessions[0];
    let mut again = api2
        .resume(&first.id, 1)
        .expect("node 2 finds node 1's run");
    let heard = hear_all(&mut again.events).await;
    assert_eq!(heard.stdout_text(), "run 0\nsecond line of 0\n");
    assert_eq!(heard.states, [RunState::Running, RunState::Finished]);
    // And from the start: the same events as node 1 heard, in the same positions.
    let mut from_start = api2.resume(&first.id, 0).expect("again, from 0");
    let mut whole = api1.resume(&first.id, 0).expect("node 1 has it too");
    let (x, y) = (
        hear_all(&mut from_start.events).await,
        hear_all(&mut whole.events).await,
    );
    assert_eq!(format!("{:?}", x.states), format!("{:?}", y.states));
    assert_eq!(x.stdout, y.stdout);
    assert_eq!(x.summary(), y.summary());
    assert!(
        api2.resume("00ff", 0).is_err(),
        "an unknown run is not found"
    );
    tokio::join!(a.stop(), b.stop());
    tokio::join!(api1.shutdown(), api2.shutdown());
    assert_instance_clean(&docker(), &cluster.instance).await;
    assert_instance_clean(&docker(), &second).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_api_processes_serve_runs_and_each_others_jobs() {
    let cluster = Cluster::new("procs").await;
    let worker = cluster.worker(&cluster.instance).await;
    let url = cluster.redis.url();
    let (name_a, name_b) = (
        format!("{}-a", cluster.instance),
        format!("{}-b", cluster.instance),
    );
    let (a, b) = tokio::join!(
        ApiProcess::start(&url, &cluster.prefix, &name_a),
        ApiProcess::start(&url, &cluster.prefix, &name_b),
    );
    // A run through either node, over REST, answered when it ends.
    for (node, addr) in [("a", &a.addr), ("b", &b.addr)] {
        let body = format!(r#"{{"language":"python","code":"print('via {node}')"}}"#);
        let (status, run) = http(addr, "POST", "/api/v1/runs", &body).await;
        assert_eq!(status, 200, "{run}");
        assert_eq!(run["stdout"], format!("via {node}\n"), "{run}");
        assert_eq!(run["state"], "FINISHED", "{run}");
    }
    // A job posted to node A, polled on node B.
    let body = r#"{"language":"python","code":"print(input()[::-1])","stdin":"olleh\n"}"#;
    let (status, job) = http(&a.addr, "POST", "/api/v1/jobs", body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("an id").to_string();
    let view = poll_job(&b.addr, &id, |v| v["state"] == "FINISHED").await;
    assert_eq!(view["stdout"], "hello\n", "{view}");
    assert_eq!(view["language"], "python", "{view}");
    // A job that spins, posted to B, stopped through A.
    let body = r#"{"language":"python","code":"print('spinning', flush=True)\nwhile True: pass"}"#;
    let (status, job) = http(&b.addr, "POST", "/api/v1/jobs", body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("an id").to_string();
    poll_job(&a.addr, &id, |v| v["stdout"] == "spinning\n").await;
    let (status, stopping) = http(&a.addr, "DELETE", &format!("/api/v1/jobs/{id}"), "").await;
    assert_eq!(status, 202, "{stopping}");
    let view = poll_job(&b.addr, &id, |v| v["summary"].is_object()).await;
    assert_eq!(view["state"], "STOPPED", "{view}");
    // No such job anywhere: 404 on either node.
    let (status, _) = http(
        &b.addr,
        "GET",
        &format!("/api/v1/jobs/{}", "0".repeat(32)),
        "",
    )
    .await;
    assert_eq!(status, 404);
    tokio::join!(a.stop(), b.stop());
    worker.stop().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_run_ends_as_lost_within_the_bound_and_its_containers_are_swept() {
    let cluster = Cluster::new("kill").await;
    let worker = cluster.worker(&cluster.instance).await;
    let api = cluster.api().await;
    let mut session = api
        .submit(spec(
            "python",
            "print('sleeping', flush=True)\nimport time; time.sleep(60)",
        ))
        .expect("accepted");
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "sleeping").await;
    worker.kill().await;
    let killed = Instant::now();
    let rest = hear_all(&mut session.events).await;
    let took = killed.elapsed();
    let summary = rest.summary();
    assert_eq!(summary.reason, Reason::InternalError, "{summary:?}");
    assert!(
        summary.error.as_deref().unwrap_or("").contains("was lost"),
        "{summary:?}"
    );
    assert!(
        took < LOST_BOUND + Duration::from_secs(2),
        "the lost run ended after {took:?}, beyond {LOST_BOUND:?}"
    );
    // A worker of the same instance name sweeps what the killed one left at its start.
    let again = cluster.worker(&cluster.instance).await;
    assert_instance_clean(&docker(), &cluster.instance).await;
    again.stop().await;
    api.shutdown().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_and_restarted_mid_load_loses_no_accepted_run() {
    let mut cluster = Cluster::durable("restart").await;
    let worker = cluster.worker(&cluster.instance).await;
    let api = cluster.api().await;
    // Eight runs for the worker's two running slots: some are running and the rest queued
    // when Redis goes.
    let mut sessions = Vec::new();
    for i in 0..8 {
        let code =
            format!("import time\nprint('start {i}', flush=True)\ntime.sleep(1)\nprint('end {i}')");
        sessions.push(api.submit(spec("python", &code)).expect("accepted"));
    }
    let mut first = Heard::default();
    hear_until(&mut sessions[0].events, &mut first, "start 0").await;
    cluster.redis.kill();
    // While it is down, a run is refused at once, not left hanging.
    let asked = Instant::now();
    let refused = api.submit(spec("python", "print('not now')"));
    assert!(
        matches!(refused, Err(SubmitError::QueueDown(_))),
        "{:?}",
        refused.err()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    // Down for longer than a heartbeat lives: the workers' heartbeats are gone when it is back,
    // and nobody may take that for lost workers.
    tokio::time::sleep(HEARTBEAT_TTL + Duration::from_millis(1500)).await;
    cluster.redis.start_again().await;
    for (i, session) in sessions.iter_mut().enumerate() {
        let heard = hear_all(&mut session.events).await;
        let stdout = if i == 0 {
            first.stdout_text() + &heard.stdout_text()
        } else {
            heard.stdout_text()
        };
        assert_eq!(
            stdout,
            format!("start {i}\nend {i}\n"),
            "run {i}: {heard:?}"
        );
        assert_eq!(heard.summary().reason, Reason::Exited, "run {i}: {heard:?}");
    }
    // Every job was settled (the jobs stream is read once a second), and the nodes take new
    // runs again by themselves.
    let started = Instant::now();
    while api.status().queued != 0 || api.status().redis_up != Some(true) {
        assert!(started.elapsed() < TEST_TIMEOUT, "{:?}", api.status());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = api
        .submit(spec("python", "print('after')"))
        .expect("accepted again");
    assert_eq!(hear_all(&mut after.events).await.stdout_text(), "after\n");
    worker.stop().await;
    api.shutdown().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_queued_while_no_worker_runs_completes_once_one_starts() {
    let cluster = Cluster::new("later").await;
    let api = cluster.api().await;
    let mut session = api
        .submit(spec("python", "print('waited')"))
        .expect("accepted with no worker");
    // The queue's length is read once a second.
    let started = Instant::now();
    while api.status().queued != 1 {
        assert!(started.elapsed() < TEST_TIMEOUT, "the job shows as queued");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!session.ended());
    let worker = cluster.worker(&cluster.instance).await;
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout_text(), "waited\n", "{heard:?}");
    worker.stop().await;
    api.shutdown().await;
    assert_instance_clean(&docker(), &cluster.instance).await;
}

/// A run of `client` (its own cap when `max` is given, else the API node's).
fn of_client(code: &str, client: &str, max: Option<usize>) -> onpyrunner_supervisor::run::RunSpec {
    let mut spec = spec("python", code);
    spec.client = Some(Client {
        name: client.into(),
        max_in_flight: max,
        max_running: None,
    });
    spec
}

fn refused_as_client_busy(submitted: Result<Session, SubmitError>) -> usize {
    match submitted {
        Err(SubmitError::ClientBusy { max }) => max,
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("accepted past the client's cap"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clients_cap_holds_across_api_nodes_and_frees_as_its_runs_end() {
    let cluster = Cluster::new("cap").await;
    let a = cluster.api().await;
    let b = cluster.api().await;
    // No worker yet: the runs stay queued, and count against their client wherever taken.
    let mut first = a
        .submit(of_client("print('one')", "10.1.2.3", Some(2)))
        .expect("the first accepted on A");
    let mut second = b
        .submit(of_client("print('two')", "10.1.2.3", Some(2)))
        .expect("the second accepted on B");
    for node in [&a, &b] {
        let max = refused_as_client_busy(node.submit(of_client("print(3)", "10.1.2.3", Some(2))));
        assert_eq!(max, 2);
    }
    // Another client is not held back by this one; a node's own cap applies to a client with
    // none of its own.
    let mut other = b
        .submit(of_client("print('other')", "10.9.9.9", None))
        .expect("another client accepted");
    let strict = tokio::time::timeout(
        TEST_TIMEOUT,
        RedisRunner::connect(&cluster.config(), Admission::new(64, 1), None),
    )
    .await
    .expect("connects within the timeout")
    .expect("a third node starts");
    let max = refused_as_client_busy(strict.submit(of_client("print(4)", "10.9.9.9", None)));
    assert_eq!(max, 1);

    // Once its runs end, the client may submit again at once, on any node.
    let worker = cluster.worker(&cluster.instance).await;
    for (session, out) in [
        (&mut first, "one\n"),
        (&mut second, "two\n"),
        (&mut other, "other\n"),
    ] {
        assert_eq!(hear_all(&mut session.events).await.stdout_text(), out);
    }
    let mut again = strict
        .submit(of_client("print('again')", "10.1.2.3", Some(2)))
        .expect("accepted once its runs ended");
    let mut next = a
        .submit(of_client("print('next')", "10.1.2.3", Some(2)))
        .expect("and a second one");
    assert_eq!(hear_all(&mut again.events).await.stdout_text(), "again\n");
    assert_eq!(hear_all(&mut next.events).await.stdout_text(), "next\n");
    worker.stop().await;
    for node in [a, b, strict] {
        node.shutdown().await;
    }
    assert_instance_clean(&docker(), &cluster.instance).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_redis_password_is_refused_at_start() {
    let cluster = Cluster::new("auth").await;
    let wrong = ClusterConfig::new(
        format!("redis://:wrong@127.0.0.1:{}/", cluster.redis.0.port),
        cluster.prefix.clone(),
    );
    let err = tokio::time::timeout(
        TEST_TIMEOUT,
        RedisRunner::connect(&wrong, Admission::new(64, 64), None),
    )
    .await
    .expect("an answer within the timeout")
    .err()
    .expect("refused");
    let message = err.to_string();
    assert!(message.contains("127.0.0.1"), "{message}");
    assert!(
        !message.contains("wrong@"),
        "the password is not shown: {message}"
    );
    assert!(
        message.to_lowercase().contains("pass") || message.contains("auth"),
        "{message}"
    );
    // The worker refuses to start as well, saying why.
    let out = tokio::time::timeout(
        TEST_TIMEOUT,
        tokio::process::Command::new(onpyrunner_e2e::cluster::onpyrunner_binary())
            .args([
                "worker",
                "--redis",
                &wrong.url,
                "--redis-prefix",
                &cluster.prefix,
            ])
            .args(worker_args(&cluster.instance, &[]))
            .output(),
    )
    .await
    .expect("the worker exits within the timeout")
    .expect("runs");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Redis at 127.0.0.1"), "{stderr}");
    assert!(!stderr.contains(":wrong@"), "{stderr}");
    assert_instance_clean(&docker(), &cluster.instance).await;
}

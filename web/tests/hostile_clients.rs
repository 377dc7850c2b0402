//! Hostile clients against `onpyrunner serve` as a process: the real binary, daemon and images,
//! the server's own accept loop, and its resident memory read from `/proc`. The server tells
//! clients apart by address, so each kind of client here binds a loopback address of its own
//! before connecting (Linux routes all of 127/8 to `lo`): what one hostile client does must not
//! stop another client, and must not grow the server's memory without bound.
//!
//! The tests take one lock: each drives hundreds of connections, and on a small machine they
//! would otherwise measure each other.
use futures_util::{SinkExt, StreamExt};
use onpyrunner::server::LISTENING;
use onpyrunner_e2e::instance_containers;
use onpyrunner_supervisor::docker::Docker;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// Upper bound on any one wait; nothing here is timed more tightly than this.
const TIMEOUT: Duration = Duration::from_secs(90);

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A loopback address of its own for each kind of client.
fn client(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, n)
}
/// The well-behaved client of every test.
const WELL_BEHAVED: u8 = 2;

struct Server {
    child: Child,
    addr: SocketAddr,
    instance: String,
}

/// `--pool ID=0` for every language of the table.
fn no_pools() -> Vec<String> {
    onpyrunner_languages::languages()
        .iter()
        .flat_map(|l| ["--pool".to_string(), format!("{}=0", l.id)])
        .collect()
}

/// Start `onpyrunner serve` on a free port with no pools (so that any container of its
/// instance is a run's), plus `args`, and wait until it listens.
async fn serve(test: &str, args: &[&str]) -> Server {
    raise_open_files_limit();
    let instance = format!("t-hostile-{test}-{}", std::process::id());
    let mut child = Command::new(env!("CARGO_BIN_EXE_onpyrunner"))
        .args(["serve", "--listen", "127.0.0.1:0", "--instance", &instance])
        .args(no_pools())
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
                return addr.parse().unwrap();
            }
        }
        panic!("serve exited before listening (is the daemon running? `bash scripts/setup.sh`)");
    })
    .await
    .expect("serve listens within the timeout");
    // Keep draining stderr so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Server {
        child,
        addr,
        instance,
    }
}

/// An answer as far as these tests read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id().expect("the server is running")
    }

    /// The server's resident memory in KiB.
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    /// A connection from client `n`'s address.
    async fn connect_from(&self, n: u8) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(client(n).into(), 0))?;
        socket.set_nodelay(true)?;
        socket.connect(self.addr).await
    }

    /// The head of a request to this server (Host, and `Connection: close`), without the blank
    /// line that ends it.
    fn head(&self, method: &str, path: &str) -> String {
        format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        )
    }

    /// Send a request from client `n` and read the whole answer. The answer is read while the
    /// request is sent: the server may answer (and close) before it has read the body.
    async fn exchange(&self, n: u8, request: &[u8]) -> std::io::Result<Answer> {
        let mut tcp = self.connect_from(n).await?;
        let (mut read, mut write) = tcp.split();
        let mut raw = Vec::new();
        let reading = async {
            loop {
                match read.read_buf(&mut raw).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        };
        let writing = async {
            // A write the server cut short ends here; the answer says why.
            let _ = write.write_all(request).await;
        };
        tokio::time::timeout(TIMEOUT, async { tokio::join!(reading, writing) })
            .await
            .expect("answered within the timeout");
        parse_answer(&raw)
    }

    /// A request from client `n` with a JSON body (or none).
    async fn request(&self, n: u8, method: &str, path: &str, body: Option<&Value>) -> Answer {
        let mut request = self.head(method, path);
        let body = body.map(Value::to_string).unwrap_or_default();
        if !body.is_empty() {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(&body);
        self.exchange(n, request.as_bytes())
            .await
            .unwrap_or_else(|e| panic!("{method} {path} from 127.0.0.{n}: {e}"))
    }

    /// A hello world from the well-behaved client: it must finish, with its output.
    async fn hello_world(&self) {
        let run =
            json!({"language": "python", "code": "print('hello from a well-behaved client')"});
        let answer = self
            .request(WELL_BEHAVED, "POST", "/api/v1/runs", Some(&run))
            .await;
        assert_eq!(answer.status, 200, "{:?}", answer.json());
        let run = answer.json();
        assert_eq!(run["state"], "FINISHED", "{run}");
        assert_eq!(run["stdout"], "hello from a well-behaved client\n");
    }

    /// A WebSocket from client `n`.
    async fn websocket_from(&self, n: u8) -> tokio_tungstenite::WebSocketStream<TcpStream> {
        let request = format!("ws://{}/api/v1/ws", self.addr)
            .into_client_request()
            .unwrap();
        let tcp = self.connect_from(n).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(request, tcp)
            .await
            .expect("the upgrade succeeds");
        ws
    }

    async fn containers(&self) -> Vec<String> {
        let docker = Docker::from_host(None).unwrap();
        instance_containers(&docker, &self.instance)
            .await
            .into_iter()
            .map(|c| format!("{} {}", &c.id[..12], c.state))
            .collect()
    }

    /// Wait until the instance has no container left (no pools: every one was a run's).
    async fn no_containers_left(&self) {
        let started = Instant::now();
        loop {
            let left = self.containers().await;
            if left.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < TIMEOUT,
                "containers of {} left: {left:?}",
                self.instance
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, a clean exit, and nothing left on the daemon.
    async fn stop(mut self) {
        // SAFETY: kill(2) on a child we spawned and have not reaped; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("exits within 30 s of SIGTERM")
            .unwrap();
        assert!(status.success(), "{status:?}");
        self.no_containers_left().await;
    }
}

/// Parse an HTTP/1.1 answer read to its end (chunked bodies are put together).
fn parse_answer(raw: &[u8]) -> std::io::Result<Answer> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("the connection closed before an answer"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        let mut whole = Vec::new();
        let mut rest = &body[..];
        loop {
            let line_end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .ok_or_else(|| bad("a chunk without its size line"))?;
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16)
                .map_err(|_| bad("a chunk size"))?;
            if size == 0 {
                break;
            }
            let start = line_end + 2;
            whole.extend_from_slice(
                rest.get(start..start + size)
                    .ok_or_else(|| bad("short chunk"))?,
            );
            rest = &rest[(start + size + 2).min(rest.len())..];
        }
        body = whole;
    }
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// Every connection here is a descriptor in this process too.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer, which
    // lives on this stack frame for the whole call.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(
        limit.rlim_cur >= 2048,
        "these tests need 2048 open files; the hard limit is {} (ulimit -Hn)",
        limit.rlim_cur
    );
}

/// Whether the server closed the connection within `within` (reads end or fail). Anything it
/// sends first is read and dropped.
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 4096];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test]
async fn a_flood_of_1000_runs_from_one_address_gets_429s_beyond_its_share_and_others_still_run() {
    let _one = ONE_AT_A_TIME.lock().await;
    // The per-address connection cap is raised so that all 1000 reach the per-client run cap.
    let server = serve(
        "flood",
        &[
            "--max-running",
            "2",
            "--max-runs-per-client",
            "8",
            "--max-connections-per-address",
            "1100",
        ],
    )
    .await;
    let server = std::sync::Arc::new(server);
    let run = json!({"language": "python", "code": "print('flood')"}).to_string();
    let request = format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{run}",
        server.head("POST", "/api/v1/runs"),
        run.len()
    );
    let flood: Vec<_> = (0..1000)
        .map(|_| {
            let (server, request) = (server.clone(), request.clone());
            tokio::spawn(async move { server.exchange(3, request.as_bytes()).await })
        })
        .collect();
    // While the flood is answered, another client's hello world finishes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.hello_world().await;

    let (mut ran, mut refused) = (0, 0);
    for answer in flood {
        match answer.await.unwrap() {
            Ok(a) if a.status == 200 => {
                assert_eq!(a.json()["stdout"], "flood\n");
                ran += 1;
            }
            // Beyond its share: its runs waiting or running (8 here), or the pace of starting
            // runs (`--runs-per-minute`, with its burst).
            Ok(a) if a.status == 429 => {
                let json = a.json();
                match json["field"].as_str() {
                    Some("client") => assert_eq!(json["limit"], "8"),
                    Some("runs_per_minute") => {}
                    _ => panic!("the flood's 429 names neither cap: {json}"),
                }
                assert!(a.header("retry-after").is_some());
                refused += 1;
            }
            Ok(a) => panic!("the flood got {}: {:?}", a.status, a.json()),
            Err(e) => panic!("a flood request was not answered: {e}"),
        }
    }
    eprintln!("flood: {ran} ran, {refused} refused with 429");
    assert!(ran >= 8, "its share ran: {ran}");
    assert!(refused >= 500, "most of the flood was refused: {refused}");
    assert_eq!(ran + refused, 1000);
    server.hello_world().await;
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn a_slowloris_of_1000_connections_is_cut_off_while_others_are_answered() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve("slowloris", &["--header-timeout", "3"]).await;
    let before = server.rss_kib();
    // Two addresses, each under the per-address cap (512): only the header timeout cuts them.
    let mut slow = Vec::new();
    for i in 0..1000u32 {
        let mut tcp = server.connect_from(10 + (i % 2) as u8).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHo").await.unwrap();
        slow.push(tcp);
    }
    let opened = Instant::now();
    // A byte at a time, now and then, while another client is served.
    let dribble = async {
        for _ in 0..8 {
            for tcp in &mut slow {
                let _ = tcp.write_all(b"s").await;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let served = async {
        let health = server.request(WELL_BEHAVED, "GET", "/healthz", None).await;
        assert_eq!(health.status, 200, "{:?}", health.json());
        server.hello_world().await;
    };
    tokio::join!(dribble, served);
    let during = server.rss_kib();
    let mut cut = 0;
    for tcp in &mut slow {
        if closed_within(tcp, TIMEOUT.saturating_sub(opened.elapsed())).await {
            cut += 1;
        }
    }
    assert_eq!(cut, 1000, "every slow connection was cut off");
    eprintln!(
        "slowloris: 1000 cut off {:.1} s after opening; RSS {:.1} MiB before, {:.1} MiB with them",
        opened.elapsed().as_secs_f64(),
        mib(before),
        mib(during)
    );
    assert!(
        during < before + 64 * 1024,
        "1000 slow connections cost the server {:.1} MiB",
        mib(during - before)
    );
    server.hello_world().await;
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_caps_are_closed_at_once_and_idle_ones_time_out() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve(
        "caps",
        &[
            "--max-connections",
            "60",
            "--max-connections-per-address",
            "20",
            "--header-timeout",
            "2",
        ],
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(server.connect_from(10).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = server.connect_from(10).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "the 21st from one address is closed at once"
    );
    for n in [11, 12] {
        for _ in 0..20 {
            held.push(server.connect_from(n).await.unwrap());
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut over = server.connect_from(13).await.unwrap();
    assert!(
        closed_within(&mut over, Duration::from_secs(1)).await,
        "the 61st in all is closed at once"
    );
    // Idle connections (not a byte sent) go at the header timeout; then others get in.
    let idle = Instant::now();
    for tcp in &mut held {
        assert!(
            closed_within(tcp, Duration::from_secs(10)).await,
            "idle closed"
        );
    }
    eprintln!(
        "caps: 60 idle connections closed after {:?}",
        idle.elapsed()
    );
    server.hello_world().await;
    server.stop().await;
}

#[tokio::test]
async fn an_oversized_body_is_refused_before_it_is_read_and_big_bodies_do_not_pile_up() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve("bodies", &[]).await;
    let before = server.rss_kib();
    // 50 MiB declared: 413 as soon as the headers are in, not a byte of the body read.
    let mut tcp = server.connect_from(10).await.unwrap();
    let head = format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        server.head("POST", "/api/v1/runs"),
        50 * 1024 * 1024
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut raw))
        .await
        .expect("answered without the body")
        .unwrap();
    let answer = parse_answer(&raw).unwrap();
    assert_eq!(answer.status, 413, "{:?}", answer.json());
    // 50 MiB streamed with no length: refused (411) before it is read.
    let mut tcp = server.connect_from(10).await.unwrap();
    let head = format!(
        "{}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        server.head("POST", "/api/v1/jobs")
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 1 << 20, "[".repeat(1 << 20));
    let mut answered = Vec::new();
    {
        let (mut read, mut write) = tcp.split();
        let mut sent = 0;
        while sent < 50 {
            tokio::select! {
                n = read.read_buf(&mut answered) => if n.unwrap_or(0) == 0 { break },
                w = write.write_all(chunk.as_bytes()) => if w.is_err() { break } else { sent += 1 },
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answered)).await;
    let answer = parse_answer(&answered).unwrap();
    assert_eq!(answer.status, 411, "{:?}", answer.json());

    // Bodies within the cap but with source above the source cap (1 MiB): 413 naming `code`;
    // and twenty of them at once, 30 MiB each, do not pile up in the server: beyond the budget
    // of bodies held at once they are refused (503) as they arrive.
    let code = "#".repeat(30 << 20);
    let body = json!({"language": "python", "code": code}).to_string();
    let request = std::sync::Arc::new(format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.head("POST", "/api/v1/runs"),
        body.len()
    ));
    let server = std::sync::Arc::new(server);
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (server, peak) = (server.clone(), peak.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(server.rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let posts: Vec<_> = (0..20)
        .map(|_| {
            let (server, request) = (server.clone(), request.clone());
            tokio::spawn(async move { server.exchange(11, request.as_bytes()).await })
        })
        .collect();
    let (mut too_large, mut busy) = (0, 0);
    for post in posts {
        let answer = post.await.unwrap().unwrap();
        match answer.status {
            413 => {
                assert_eq!(answer.json()["field"], "code");
                too_large += 1;
            }
            // The budget of bodies held at once is spent: refused before the rest is read.
            503 => {
                assert!(answer.header("retry-after").is_some());
                busy += 1;
            }
            other => panic!("{other} {:?}", answer.json()),
        }
    }
    assert!(
        too_large > 0 && busy > 0,
        "{too_large} read and refused, {busy} not read"
    );
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "bodies: RSS {:.1} MiB before, peak {:.1} MiB with 20 bodies of 30 MiB at once",
        mib(before),
        mib(peak)
    );
    // The budget (256 MiB of bodies) and, for a moment, what a body's parse makes of it before
    // the body goes (at most as much again). Before the budget there was no bound (620 MB), and
    // with its room given back as soon as a body was in, the parses came on top of it (381 MB).
    assert!(
        peak < before + (2 * 256 + 32) * 1024,
        "20 bodies of 30 MiB took the server from {:.1} to {:.1} MiB",
        mib(before),
        mib(peak)
    );
    server.hello_world().await;
    std::sync::Arc::into_inner(server).unwrap().stop().await;
}

#[tokio::test]
async fn deeply_nested_json_is_refused_with_400_not_a_crash() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve("nested", &[]).await;
    let deep = "[".repeat(100_000);
    let in_a_field = format!(r#"{{"language":"python","code":"x","limits":{}"#, deep);
    for body in [&deep, &in_a_field] {
        for path in ["/api/v1/runs", "/api/v1/jobs"] {
            let request = format!(
                "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                server.head("POST", path),
                body.len()
            );
            let answer = server.exchange(10, request.as_bytes()).await.unwrap();
            assert_eq!(answer.status, 400, "{path}: {:?}", answer.json());
        }
    }
    // The same as a WebSocket message: an error message, and the connection goes on.
    let mut ws = server.websocket_from(10).await;
    ws.send(Message::text(format!(
        r#"{{"type":"run","language":{deep}"#
    )))
    .await
    .unwrap();
    let answer = next_text(&mut ws).await;
    assert_eq!(answer["type"], "error", "{answer}");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next_text(&mut ws).await["type"], "pong");
    server.hello_world().await;
    server.stop().await;
}

/// The next text message (the server's heartbeat pings are skipped).
async fn next_text(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>) -> Value {
    tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await.expect("the connection stays open").unwrap() {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                _ => continue,
            }
        }
    })
    .await
    .expect("a message within the timeout")
}

/// A program whose output is 1 MB of control bytes: six times that as JSON.
const BIG_OUTPUT: &str = "import sys\nsys.stdout.write('\\x01' * 1_000_000)";

#[tokio::test]
async fn clients_that_never_read_do_not_block_others_or_grow_memory_without_bound() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve(
        "never-read",
        &["--max-runs-per-client", "64", "--resume-grace-ms", "1000"],
    )
    .await;
    // A finished job of 1 MB of control bytes.
    let job = server
        .request(
            3,
            "POST",
            "/api/v1/jobs",
            Some(&json!({"language": "python", "code": BIG_OUTPUT})),
        )
        .await;
    assert_eq!(job.status, 202, "{:?}", job.json());
    let id = job.json()["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    loop {
        let view = server
            .request(3, "GET", &format!("/api/v1/jobs/{id}"), None)
            .await;
        let view = view.json();
        if view["summary"].is_object() {
            assert_eq!(view["stdout"].as_str().unwrap().len(), 1_000_000);
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "the job never ended: {view}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let before = server.rss_kib();

    // 200 polls of it (6 MB of JSON each) that are never read.
    let mut stuck = Vec::new();
    for i in 0..200u32 {
        let mut tcp = server.connect_from(10 + (i % 2) as u8).await.unwrap();
        let request = format!("{}\r\n", server.head("GET", &format!("/api/v1/jobs/{id}")));
        tcp.write_all(request.as_bytes()).await.unwrap();
        stuck.push(tcp);
    }
    // 16 sync runs of the same program whose answers are never read.
    for _ in 0..16 {
        let mut tcp = server.connect_from(12).await.unwrap();
        let body = json!({"language": "python", "code": BIG_OUTPUT}).to_string();
        let request = format!(
            "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            server.head("POST", "/api/v1/runs"),
            body.len()
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        stuck.push(tcp);
    }
    // 4 WebSockets whose endless output is never read.
    let mut sockets = Vec::new();
    for _ in 0..4 {
        let mut ws = server.websocket_from(13).await;
        let run = json!({"type": "run", "language": "python",
                         "code": "while True: print('x' * 1000)",
                         "limits": {"wall_ms": 5000}});
        ws.send(Message::text(run.to_string())).await.unwrap();
        sockets.push(ws);
    }
    // Meanwhile another client is served, and the server's memory stays bounded.
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let sampler = {
        let (pid, peak) = (server.pid(), peak.clone());
        tokio::spawn(async move {
            loop {
                let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("VmRSS:"))
                            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    })
                    .unwrap_or(0);
                peak.fetch_max(rss, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    server.hello_world().await;
    // Until every sync run has ended and its answer waits to be read.
    let started = Instant::now();
    loop {
        let health = server.request(WELL_BEHAVED, "GET", "/healthz", None).await;
        let health = health.json();
        if health["running"] == 0 && health["queued"] == 0 {
            break;
        }
        assert!(started.elapsed() < TIMEOUT, "runs never ended: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.hello_world().await;
    sampler.abort();
    let peak = peak.load(std::sync::atomic::Ordering::Relaxed);
    eprintln!(
        "never-read: RSS {:.1} MiB before, peak {:.1} MiB with 200 unread job views, 16 unread \
         sync answers and 4 unread WebSockets",
        mib(before),
        mib(peak)
    );
    assert!(
        peak < before + 100 * 1024,
        "unread answers took the server from {:.1} to {:.1} MiB",
        mib(before),
        mib(peak)
    );
    drop(stuck);
    drop(sockets);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_drops_mid_run_leaves_no_container() {
    let _one = ONE_AT_A_TIME.lock().await;
    let server = serve("drop", &["--resume-grace-ms", "1000"]).await;
    let sleeper = json!({"language": "python",
                         "code": "import time\nprint('started', flush=True)\ntime.sleep(60)"});
    // A sync run whose client goes once it runs.
    let mut tcp = server.connect_from(10).await.unwrap();
    let body = sleeper.to_string();
    let request = format!(
        "{}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        server.head("POST", "/api/v1/runs"),
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    while server.containers().await.is_empty() {
        assert!(started.elapsed() < TIMEOUT, "the run never got a container");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(tcp);
    server.no_containers_left().await;

    // A WebSocket that vanishes (no close frame) once its program has printed.
    let mut ws = server.websocket_from(11).await;
    let mut run = sleeper.clone();
    run["type"] = "run".into();
    ws.send(Message::text(run.to_string())).await.unwrap();
    tokio::time::timeout(TIMEOUT, async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Binary(data) = message {
                if data.windows(7).any(|w| w == b"started") {
                    return;
                }
            }
        }
        panic!("the connection closed before the program printed");
    })
    .await
    .expect("the program printed");
    assert!(!server.containers().await.is_empty());
    drop(ws);
    server.no_containers_left().await;
    server.hello_world().await;
    server.stop().await;
}

//! `onpyrunner attack`: what hostile clients cost a well-behaved one, on loopback, bounded in
//! count and time. It starts `onpyrunner serve` (the program [`Serve`] names) with its bounds
//! given explicitly at their defaults, then times a well-behaved client's hello world over
//! `POST /api/v1/runs` (a new connection per run, one run after another) in three phases:
//!
//! 1. no attack;
//! 2. while `--slow` connections send their headers a byte at a time (slowloris), spread over
//!    `--slow-addresses` addresses so that each stays under the per-address cap and only the
//!    header timeout cuts them off; a cut connection is opened again at once;
//! 3. the same, and a flood client that keeps `--flood` runs posted at once from one address,
//!    posting again whenever it is refused (429 beyond its share, or a connection closed by the
//!    per-address cap) after `--flood-pause-ms`.
//!
//! The server tells clients apart by address, so every kind of client binds its own loopback
//! address before connecting (Linux routes all of 127/8 to `lo`): the well-behaved client
//! 127.0.0.2, the flood 127.0.0.3, the slow connections 127.0.0.10 and on.
//!
//! It reports p50/p90/p99 of each phase next to the first's, whether every well-behaved run
//! succeeded, what the attackers got (answers by status, connections cut), and the server's
//! resident memory before, at its peak and after. The server is stopped with SIGTERM at the end.
//! `--write FILE` puts the report in FILE's `attack` section and leaves the rest alone.
use crate::hello::{hello_world, HELLO_OUTPUT};
use crate::load::{Serve, Server};
use crate::machine::{kib_to_mb, utc_now};
use crate::section::{command_line, publish};
use crate::stats::{percentile, Quantiles};
use anyhow::{bail, Context};
use clap::Args;
use onpyrunner_protocol::run::RunBody;
use std::fmt::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Args)]
pub struct AttackArgs {
    /// Hello worlds the well-behaved client runs in each phase, one after another
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub runs: usize,
    /// Runs the flood client keeps posted at once, from one address
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub flood: usize,
    /// Milliseconds a flood connection waits after a refusal before it posts again
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub flood_pause_ms: u64,
    /// Slow connections sending their headers a byte at a time
    #[arg(long, default_value_t = 2000, value_name = "N")]
    pub slow: usize,
    /// Addresses the slow connections are spread over (127.0.0.10 and on)
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub slow_addresses: u8,
    /// Milliseconds between two bytes of a slow connection
    #[arg(long, default_value_t = 1000, value_name = "MS")]
    pub slow_byte_ms: u64,
    /// Upper bound on the well-behaved client's runs in each attacked phase, in seconds
    #[arg(long, default_value_t = 80, value_name = "SECONDS")]
    pub phase_seconds: u64,
    /// Language of the hello worlds
    #[arg(long, default_value = "python", value_name = "ID")]
    pub lang: String,
    /// Upper bound on the whole command; it stops by itself after this
    #[arg(long, default_value_t = 240, value_name = "SECONDS")]
    pub max_seconds: u64,
    /// Write the report into this Markdown file's `attack` section instead of printing it
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
}

/// The well-behaved client's address.
const WELL_BEHAVED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// The flood client's address.
const FLOOD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// The first of the slow connections' addresses.
const SLOW_FIRST: u8 = 10;

/// The server's bounds, given explicitly at `onpyrunner serve`'s defaults so that the report
/// says what was measured.
const HEADER_TIMEOUT_S: u64 = 10;
const MAX_CONNECTIONS: usize = 4096;
const MAX_PER_ADDRESS: usize = 512;
/// `--max-runs-per-client` is the running slots plus this, as by default.
const PER_CLIENT_ABOVE_RUNNING: usize = 16;

/// Longest a well-behaved run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// One well-behaved run.
#[derive(Debug)]
struct Run {
    took: Duration,
    /// `None` when it FINISHED with the right output.
    failure: Option<String>,
}

/// One phase of well-behaved runs.
#[derive(Debug)]
struct Phase {
    name: String,
    runs: Vec<Run>,
    /// The phase's time bound ended it before `--runs`.
    cut_short: bool,
}

impl Phase {
    fn quantiles(&self) -> Option<Quantiles> {
        let took: Vec<Duration> = self.runs.iter().map(|r| r.took).collect();
        Quantiles::of(&took)
    }

    fn failed(&self) -> usize {
        self.runs.iter().filter(|r| r.failure.is_some()).count()
    }
}

/// What the flood client got.
#[derive(Debug, Default)]
struct FloodCounts {
    /// Requests sent.
    posted: AtomicU64,
    /// 200: a run of the flood's share ran.
    ran: AtomicU64,
    /// 429 naming `client`: beyond its share.
    refused_client: AtomicU64,
    /// Other 429s (the queue is full).
    refused_busy: AtomicU64,
    /// Any other status.
    other: AtomicU64,
    /// Connections closed (or failed) before an answer: the per-address cap.
    unanswered: AtomicU64,
}

/// What the slow connections got.
#[derive(Debug, Default)]
struct SlowCounts {
    opened: AtomicU64,
    /// Closed by the server.
    cut: AtomicU64,
    /// Connects that failed.
    failed: AtomicU64,
    /// How long each cut connection was held.
    held: Mutex<Vec<Duration>>,
}

#[derive(Debug, Default)]
struct Report {
    date: String,
    command: String,
    lang: String,
    running: usize,
    per_client: usize,
    flood: usize,
    flood_pause_ms: u64,
    slow: usize,
    slow_addresses: u8,
    slow_byte_ms: u64,
    phases: Vec<Phase>,
    flood_counts: Arc<FloodCounts>,
    slow_counts: Arc<SlowCounts>,
    rss_before_kib: u64,
    rss_peak_kib: u64,
    rss_after_kib: u64,
    healthy_after: bool,
    total: Duration,
}

/// Run the attack against a server started from `serve`; the exit code is 1 if a
/// well-behaved run failed or the server was not healthy afterwards.
pub async fn run(args: AttackArgs, serve: Serve) -> anyhow::Result<i32> {
    if args.runs == 0 {
        bail!("--runs is 0: nothing to measure");
    }
    if args.slow > 0 && args.slow_addresses == 0 {
        bail!("--slow-addresses must be at least 1");
    }
    if usize::from(SLOW_FIRST) + usize::from(args.slow_addresses) > 255 {
        bail!("--slow-addresses: at most {}", 255 - SLOW_FIRST);
    }
    let language = onpyrunner_languages::find(&args.lang)
        .with_context(|| format!("--lang {:?}: unknown language", args.lang))?;
    raise_open_files_limit(args.slow + args.flood + 256)?;
    let started = Instant::now();
    let running = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_client = running + PER_CLIENT_ABOVE_RUNNING;
    let flags: Vec<String> = [
        ("--header-timeout", HEADER_TIMEOUT_S.to_string()),
        ("--max-connections", MAX_CONNECTIONS.to_string()),
        ("--max-connections-per-address", MAX_PER_ADDRESS.to_string()),
        ("--max-running", running.to_string()),
        ("--max-runs-per-client", per_client.to_string()),
        // The well-behaved client's runs, one after another, are faster than the default
        // pace (120 a minute): off, so what is measured is the flood's share, not the pace.
        ("--runs-per-minute", "0".to_string()),
    ]
    .into_iter()
    .flat_map(|(flag, value)| [flag.to_string(), value])
    .collect();
    let mut server = Server::start(&serve, "attack", &flags).await?;
    let mut report = Report {
        date: utc_now(),
        lang: language.id.clone(),
        running,
        per_client,
        flood: args.flood,
        flood_pause_ms: args.flood_pause_ms,
        slow: args.slow,
        slow_addresses: args.slow_addresses,
        slow_byte_ms: args.slow_byte_ms,
        ..Report::default()
    };
    let bound = Duration::from_secs(args.max_seconds);
    let measured =
        tokio::time::timeout(bound, measure(&args, language, &server, &mut report)).await;
    let stopped = server.stop().await;
    match measured {
        Ok(measured) => measured?,
        Err(_) => bail!(
            "the attack did not finish within --max-seconds {}",
            args.max_seconds
        ),
    }
    stopped?;
    report.total = started.elapsed();
    report.command = command_line();
    publish("attack", args.write.as_deref(), &render(&report))?;
    let ok = report.phases.iter().all(|p| p.failed() == 0) && report.healthy_after;
    Ok(if ok { 0 } else { 1 })
}

async fn measure(
    args: &AttackArgs,
    language: &'static onpyrunner_languages::Language,
    server: &Server,
    report: &mut Report,
) -> anyhow::Result<()> {
    let addr: SocketAddr = server.addr.parse().context("the server's address")?;
    let body = serde_json::to_string(&RunBody::code(&language.id, hello_world(language)))?;
    let target = Target {
        addr,
        host: server.addr.clone(),
        body: Arc::new(body),
    };
    // Warm up: the pool is full and the path is hot before the clock starts.
    for _ in 0..3 {
        let warm = target.well_behaved_run().await;
        if let Some(failure) = warm.failure {
            bail!("the warm-up run failed: {failure}");
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.rss_before_kib = server.rss_kib();
    let peak = Arc::new(AtomicU64::new(report.rss_before_kib));
    let sampler = server.sample_peak(peak.clone());

    eprintln!("attack: {} runs with no attack", args.runs);
    report
        .phases
        .push(target.phase("no attack", args.runs, None).await);

    let stop = CancellationToken::new();
    let mut attackers = tokio::task::JoinSet::new();
    let phase_bound = Some(Duration::from_secs(args.phase_seconds));
    if args.slow > 0 {
        eprintln!(
            "attack: opening {} slow connections from {} addresses",
            args.slow, args.slow_addresses
        );
        let counts = report.slow_counts.clone();
        let every = Duration::from_millis(args.slow_byte_ms.max(1));
        for i in 0..args.slow {
            let source = Ipv4Addr::new(
                127,
                0,
                0,
                SLOW_FIRST + (i % usize::from(args.slow_addresses)) as u8,
            );
            // Spread over the first second: no burst at the listen backlog, no beat in step.
            let delay = Duration::from_millis((i as u64 * 1000) / args.slow as u64);
            attackers.spawn(target.clone().slow(
                source,
                delay,
                every,
                counts.clone(),
                stop.clone(),
            ));
        }
        let counts = report.slow_counts.clone();
        wait_for(
            "the slow connections to open",
            Duration::from_secs(20),
            || counts.opened.load(Ordering::Relaxed) >= args.slow as u64,
        )
        .await;
        let name = format!("{} slow connections", args.slow);
        eprintln!("attack: {} runs with {name}", args.runs);
        report
            .phases
            .push(target.phase(&name, args.runs, phase_bound).await);
    }
    if args.flood > 0 {
        eprintln!(
            "attack: a flood of {} runs at once from {FLOOD}",
            args.flood
        );
        let counts = report.flood_counts.clone();
        let pause = Duration::from_millis(args.flood_pause_ms);
        for i in 0..args.flood {
            let delay = Duration::from_millis((i as u64 * 500) / args.flood as u64);
            attackers.spawn(
                target
                    .clone()
                    .flood(delay, pause, counts.clone(), stop.clone()),
            );
        }
        let counts = report.flood_counts.clone();
        wait_for("the flood to be refused", Duration::from_secs(20), || {
            counts.refused_client.load(Ordering::Relaxed) > 0
        })
        .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let name = if args.slow > 0 {
            format!(
                "{} slow connections and a flood of {} runs",
                args.slow, args.flood
            )
        } else {
            format!("a flood of {} runs", args.flood)
        };
        eprintln!("attack: {} runs with {name}", args.runs);
        report
            .phases
            .push(target.phase(&name, args.runs, phase_bound).await);
    }
    eprintln!("attack: stopping the attackers");
    stop.cancel();
    while attackers.join_next().await.is_some() {}
    // The flood's runs end as their connections close; give the server a moment.
    tokio::time::sleep(Duration::from_secs(3)).await;
    sampler.abort();
    report.rss_peak_kib = peak.load(Ordering::Relaxed);
    report.rss_after_kib = server.rss_kib();
    report.healthy_after = target.well_behaved_run().await.failure.is_none();
    Ok(())
}

/// Poll `done` every 50 ms for at most `within` (then go on: the report shows the counts).
async fn wait_for(what: &str, within: Duration, done: impl Fn() -> bool) {
    let began = Instant::now();
    while !done() {
        if began.elapsed() > within {
            eprintln!("attack: gave up waiting for {what} after {within:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The server, and the run every client posts.
#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    /// What requests name in `Host`.
    host: String,
    body: Arc<String>,
}

impl Target {
    /// A connection from `source`.
    async fn connect_from(&self, source: Ipv4Addr) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source.into(), 0))?;
        socket.set_nodelay(true)?;
        socket.connect(self.addr).await
    }

    /// `POST /api/v1/runs` with the hello world on `conn`, and its answer.
    async fn post(&self, conn: &mut BufReader<TcpStream>, close: bool) -> anyhow::Result<Answer> {
        let request = format!(
            "POST /api/v1/runs HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: {}\r\n\r\n{}",
            self.host,
            self.body.len(),
            if close { "close" } else { "keep-alive" },
            self.body
        );
        conn.get_mut().write_all(request.as_bytes()).await?;
        read_answer(conn).await
    }

    /// Runs one after another until `runs` or the time bound.
    async fn phase(&self, name: &str, runs: usize, bound: Option<Duration>) -> Phase {
        let began = Instant::now();
        let mut phase = Phase {
            name: name.to_string(),
            runs: Vec::with_capacity(runs),
            cut_short: false,
        };
        for _ in 0..runs {
            if bound.is_some_and(|b| began.elapsed() >= b) {
                phase.cut_short = true;
                break;
            }
            phase.runs.push(self.well_behaved_run().await);
        }
        phase
    }

    /// One hello world from the well-behaved client, on a new connection.
    async fn well_behaved_run(&self) -> Run {
        let began = Instant::now();
        let outcome = tokio::time::timeout(RUN_TIMEOUT, async {
            let mut conn = BufReader::new(self.connect_from(WELL_BEHAVED).await?);
            self.post(&mut conn, true).await
        })
        .await;
        let took = began.elapsed();
        let failure = match outcome {
            Err(_) => Some(format!("no answer within {RUN_TIMEOUT:?}")),
            Ok(Err(e)) => Some(e.to_string()),
            Ok(Ok(answer)) => check_hello(&answer).err(),
        };
        Run { took, failure }
    }

    /// One of the flood's posters: after `delay`, post, and post again at once after a run,
    /// or after `pause` when refused, on a kept-alive connection, until `stop`.
    async fn flood(
        self,
        delay: Duration,
        pause: Duration,
        counts: Arc<FloodCounts>,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let mut conn: Option<BufReader<TcpStream>> = None;
        loop {
            let posted = async {
                if conn.is_none() {
                    conn = Some(BufReader::new(self.connect_from(FLOOD).await?));
                }
                counts.posted.fetch_add(1, Ordering::Relaxed);
                self.post(conn.as_mut().expect("connected"), false).await
            };
            let answer = tokio::select! {
                _ = stop.cancelled() => return,
                answer = posted => answer,
            };
            let refused = match answer {
                Ok(a) if a.status == 200 => {
                    counts.ran.fetch_add(1, Ordering::Relaxed);
                    false
                }
                Ok(a) if a.status == 429 => {
                    let field = serde_json::from_slice::<serde_json::Value>(&a.body)
                        .ok()
                        .and_then(|v| v["field"].as_str().map(str::to_string));
                    if field.as_deref() == Some("client") {
                        counts.refused_client.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counts.refused_busy.fetch_add(1, Ordering::Relaxed);
                    }
                    true
                }
                Ok(_) => {
                    counts.other.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                    true
                }
                Err(_) => {
                    counts.unanswered.fetch_add(1, Ordering::Relaxed);
                    conn = None;
                    true
                }
            };
            if refused {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
            }
        }
    }

    /// One slow connection from `source`: after `delay`, a request's headers a byte every
    /// `every`, never finished; opened again whenever the server closes it, until `stop`.
    async fn slow(
        self,
        source: Ipv4Addr,
        delay: Duration,
        every: Duration,
        counts: Arc<SlowCounts>,
        stop: CancellationToken,
    ) {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
        let head = format!("GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Slow: ", self.host).into_bytes();
        loop {
            let mut tcp = match self.connect_from(source).await {
                Ok(tcp) => tcp,
                Err(_) => {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            counts.opened.fetch_add(1, Ordering::Relaxed);
            let began = Instant::now();
            let (mut read, mut write) = tcp.split();
            let mut tick = tokio::time::interval(every);
            let mut buf = [0u8; 512];
            // The request line and Host, then an endless header value.
            let mut bytes = head.iter().copied().chain(std::iter::repeat(b'a'));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    // Anything the server does (an answer, a close, a reset) ends it.
                    _ = read.read(&mut buf) => break,
                    _ = tick.tick() => {
                        let byte = [bytes.next().expect("endless")];
                        if write.write_all(&byte).await.is_err() {
                            break;
                        }
                    }
                }
            }
            counts.cut.fetch_add(1, Ordering::Relaxed);
            counts.held.lock().expect("held lock").push(began.elapsed());
        }
    }
}

/// An HTTP answer, as far as the clients here read it.
#[derive(Debug)]
struct Answer {
    status: u16,
    body: Vec<u8>,
}

/// Read one answer, framed by its `Content-Length` or chunked (a run's answer is streamed).
async fn read_answer(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Answer> {
    let mut line = String::new();
    if conn.read_line(&mut line).await? == 0 {
        bail!("the connection closed before an answer");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("not an HTTP status line: {line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    for _ in 0..100 {
        line.clear();
        if conn.read_line(&mut line).await? == 0 {
            bail!("the connection closed inside the answer's headers");
        }
        let header = line.trim_end();
        if header.is_empty() {
            let body = match (length, chunked) {
                (_, true) => read_chunked(conn).await?,
                (Some(length), false) => {
                    let mut body = vec![0; length];
                    conn.read_exact(&mut body).await?;
                    body
                }
                (None, false) => bail!("an answer with neither Content-Length nor chunks"),
            };
            return Ok(Answer { status, body });
        }
        if let Some((name, value)) = header.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().context("Content-Length")?);
            }
            if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.to_ascii_lowercase().contains("chunked");
            }
        }
    }
    bail!("more than 100 header lines")
}

/// A chunked body put together (hello worlds' answers are small: at most 1 MiB is taken).
async fn read_chunked(conn: &mut BufReader<TcpStream>) -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        conn.read_line(&mut line).await?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
            .with_context(|| format!("not a chunk size: {line:?}"))?;
        if size == 0 {
            // The trailer's end.
            line.clear();
            conn.read_line(&mut line).await?;
            return Ok(body);
        }
        if body.len() + size > 1024 * 1024 {
            bail!("an answer over 1 MiB");
        }
        let start = body.len();
        body.resize(start + size, 0);
        conn.read_exact(&mut body[start..]).await?;
        line.clear();
        conn.read_line(&mut line).await?;
    }
}

/// Whether an answer is a hello world that FINISHED with the right output.
fn check_hello(answer: &Answer) -> Result<(), String> {
    let text = String::from_utf8_lossy(&answer.body);
    if answer.status != 200 {
        return Err(format!("status {}: {text}", answer.status));
    }
    let json: serde_json::Value =
        serde_json::from_slice(&answer.body).map_err(|e| format!("not JSON ({e}): {text}"))?;
    if json["state"] != "FINISHED" || json["stdout"] != HELLO_OUTPUT {
        return Err(format!("not a finished hello world: {text}"));
    }
    Ok(())
}

/// Raise the soft limit on open files to what the clients need (at most the hard limit).
fn raise_open_files_limit(needed: usize) -> anyhow::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer, which
    // lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            bail!("cannot read the open files limit");
        }
        let needed = needed as libc::rlim_t;
        if limit.rlim_cur >= needed {
            return Ok(());
        }
        if limit.rlim_max < needed {
            bail!(
                "the clients need {needed} open files but the hard limit is {}; lower --slow \
                 or --flood, or raise it (ulimit -Hn)",
                limit.rlim_max
            );
        }
        let wanted = libc::rlimit {
            rlim_cur: needed,
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
            bail!("cannot raise the open files limit to {needed}");
        }
    }
    Ok(())
}

fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Attack: a well-behaved client among hostile ones\n");
    let _ = writeln!(
        o,
        "Made by `onpyrunner {}` on {}, in {:.0} s. It starts `onpyrunner serve` on loopback \
         with its bounds at their defaults (`--header-timeout {HEADER_TIMEOUT_S}`, \
         `--max-connections {MAX_CONNECTIONS}`, `--max-connections-per-address \
         {MAX_PER_ADDRESS}`, `--max-running {}`, `--max-runs-per-client {}`), but for \
         `--runs-per-minute 0` (the well-behaved client runs faster than the default pace), and \
         times a \
         well-behaved client ({WELL_BEHAVED}) running a {} hello world over `POST \
         /api/v1/runs`, a new connection per run, one after another: with no attack, while \
         {} slow connections ({} addresses from 127.0.0.{SLOW_FIRST}, a header byte every {} \
         ms, opened again when cut) hold the server, and with those and a flood client \
         ({FLOOD}) keeping {} runs posted at once (posting again {} ms after each refusal). \
         The attack stops by itself.\n",
        r.command,
        r.date,
        r.total.as_secs_f64(),
        r.running,
        r.per_client,
        r.lang,
        r.slow,
        r.slow_addresses,
        r.slow_byte_ms,
        r.flood,
        r.flood_pause_ms,
    );
    let base = r.phases.first().and_then(Phase::quantiles);
    let _ = writeln!(
        o,
        "| Well-behaved client's hello world, in ms | Runs | Succeeded | p50 | p90 | p99 | \
         p50 vs no attack | p99 vs no attack |\n|---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for phase in &r.phases {
        let q = phase.quantiles();
        let cell = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
        let ratio = |v: Option<f64>, b: Option<f64>| match (v, b) {
            (Some(v), Some(b)) if b > 0.0 => format!("{:.1}x", v / b),
            _ => "-".into(),
        };
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} | {} | {} | {} | {} |",
            phase.name,
            if phase.cut_short {
                " (cut short by --phase-seconds)"
            } else {
                ""
            },
            phase.runs.len(),
            phase.runs.len() - phase.failed(),
            cell(q.map(|q| q.p50)),
            cell(q.map(|q| q.p90)),
            cell(q.map(|q| q.p99)),
            ratio(q.map(|q| q.p50), base.map(|b| b.p50)),
            ratio(q.map(|q| q.p99), base.map(|b| b.p99)),
        );
    }
    let all: usize = r.phases.iter().map(|p| p.runs.len()).sum();
    let failed: usize = r.phases.iter().map(Phase::failed).sum();
    let _ = writeln!(
        o,
        "\n**Every well-behaved run succeeded: {}** ({} of {all}{}).\n",
        if failed == 0 { "yes" } else { "no" },
        all - failed,
        if r.healthy_after {
            ", and one more after the attack"
        } else {
            "; the run after the attack failed"
        }
    );
    for phase in &r.phases {
        for run in phase.runs.iter().filter(|r| r.failure.is_some()).take(3) {
            let _ = writeln!(
                o,
                "- failed ({}): {}",
                phase.name,
                run.failure.as_deref().unwrap_or("")
            );
        }
    }
    let f = &r.flood_counts;
    let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
    if let (true, Some(flooded)) = (r.flood > 0, r.phases.last()) {
        let p50 = |phase: &Phase| phase.quantiles().map_or(0.0, |q| q.p50);
        let first = r.phases.first().map_or(0.0, p50);
        let _ = writeln!(
            o,
            "In the flood's phase the flood ran {} runs and the well-behaved client {}, one after \
             another: the queue takes turns across clients (the least recently served first), so \
             a well-behaved run waits for one of the {} running slots to free, not behind the \
             {} more the flood may keep waiting; its p50 is {:.0} ms above the unattacked one.\n",
            n(&f.ran),
            flooded.runs.len(),
            r.running,
            r.per_client.saturating_sub(r.running),
            p50(flooded) - first,
        );
    }
    if r.flood > 0 {
        let _ = writeln!(
            o,
            "**The flood** ({FLOOD}) posted {} times: {} ran (200), {} were refused with 429 \
             naming `client` (beyond its share of {}), {} with another 429, {} got another \
             status, and {} connections were closed before an answer (past the per-address \
             cap of {MAX_PER_ADDRESS}, the flood's connections are closed as they are \
             accepted).\n",
            n(&f.posted),
            n(&f.ran),
            n(&f.refused_client),
            r.per_client,
            n(&f.refused_busy),
            n(&f.other),
            n(&f.unanswered),
        );
    }
    if r.slow > 0 {
        let s = &r.slow_counts;
        let mut held = s.held.lock().expect("held lock").clone();
        held.sort();
        let held_ms = |p| {
            percentile(&held, p).map_or("-".to_string(), |d| format!("{:.1} s", d.as_secs_f64()))
        };
        let _ = writeln!(
            o,
            "**The slow connections** were opened {} times ({} connects failed); the server \
             cut {} of them off, after {} (p50; p99 {}) of a header byte every {} ms.\n",
            n(&s.opened),
            n(&s.failed),
            n(&s.cut),
            held_ms(50.0),
            held_ms(99.0),
            r.slow_byte_ms,
        );
    }
    let _ = writeln!(o, "| Server resident memory (VmRSS) | |\n|---|---:|");
    let _ = writeln!(
        o,
        "| Before the attack (after the warm-up) | {:.1} MB |",
        kib_to_mb(r.rss_before_kib)
    );
    let _ = writeln!(
        o,
        "| Peak, sampled every 50 ms | {:.1} MB |",
        kib_to_mb(r.rss_peak_kib)
    );
    let _ = writeln!(
        o,
        "| 3 s after the attackers stopped | {:.1} MB |",
        kib_to_mb(r.rss_after_kib)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_has_one_row_per_phase_with_ratios_to_the_first() {
        let runs = |ms: &[u64]| {
            ms.iter()
                .map(|&m| Run {
                    took: Duration::from_millis(m),
                    failure: None,
                })
                .collect()
        };
        let report = Report {
            phases: vec![
                Phase {
                    name: "no attack".into(),
                    runs: runs(&[10, 10, 10]),
                    cut_short: false,
                },
                Phase {
                    name: "flood".into(),
                    runs: runs(&[20, 20, 30]),
                    cut_short: true,
                },
            ],
            flood: 10,
            healthy_after: true,
            ..Report::default()
        };
        let text = render(&report);
        assert!(
            text.contains("| no attack | 3 | 3 | 10.0 | 10.0 | 10.0 | 1.0x | 1.0x |"),
            "{text}"
        );
        assert!(
            text.contains("| flood (cut short by --phase-seconds) | 3 | 3 | 20.0 | 30.0 | 30.0 | 2.0x | 3.0x |"),
            "{text}"
        );
        assert!(
            text.contains("**Every well-behaved run succeeded: yes**"),
            "{text}"
        );
    }

    #[test]
    fn a_hello_world_is_checked_by_status_state_and_output() {
        let ok = Answer {
            status: 200,
            body: br#"{"state":"FINISHED","stdout":"hello, world\n"}"#.to_vec(),
        };
        assert_eq!(check_hello(&ok), Ok(()));
        let busy = Answer {
            status: 429,
            body: br#"{"error":"busy"}"#.to_vec(),
        };
        assert!(check_hello(&busy).unwrap_err().starts_with("status 429"));
        let wrong = Answer {
            status: 200,
            body: br#"{"state":"TIMEOUT","stdout":""}"#.to_vec(),
        };
        assert!(check_hello(&wrong).is_err());
    }
}

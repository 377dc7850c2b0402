//! `onpyrunner load`: the service under many WebSocket clients, on loopback, bounded in count
//! and time. It starts `onpyrunner serve` (the program [`Serve`] names) as a child process, then:
//!
//! 1. `--clients` clients connect at once and each runs a hello world: every one must reach a
//!    final state; time to the first output byte and to the summary, p50/p90/p99.
//! 2. `--idle` connections are opened and held (answering pings) for `--hold-seconds`: the
//!    server's resident memory before and with them, and how many it dropped.
//!
//! The server is stopped with SIGTERM at the end (it removes its containers). The report is
//! Markdown; `--write FILE` puts it in FILE's `load` section and leaves the rest alone.
//!
//! The server is whatever [`Serve`] names (the `onpyrunner` binary passes itself): this crate
//! knows its command line and its "listening" line, not its code.
use crate::hello::{hello_world, HELLO_OUTPUT};
use crate::machine::{kib_to_mb, rss_kib, utc_now};
use crate::section::{command_line, publish};
use crate::stats::Quantiles;
use anyhow::{bail, Context};
use clap::Args;
use futures_util::{SinkExt, StreamExt};
use onpyrunner_protocol::run::RunBody;
use onpyrunner_protocol::ws::{ClientMessage, ServerMessage};
use onpyrunner_protocol::{OutputChunk, OutputStream};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Clients that each run one hello world, all at once
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub clients: usize,
    /// Idle connections to hold
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub idle: usize,
    /// Seconds the idle connections are held (the server pings them meanwhile)
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub hold_seconds: u64,
    /// Language of the hello worlds
    #[arg(long, default_value = "python", value_name = "ID")]
    pub lang: String,
    /// Upper bound on the whole command; it stops by itself after this
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub max_seconds: u64,
    /// Write the report into this Markdown file's `load` section instead of printing it
    #[arg(long, value_name = "FILE")]
    pub write: Option<PathBuf>,
}

/// What one hello-world client saw.
#[derive(Debug, Default)]
struct ClientResult {
    state: Option<String>,
    stdout: Vec<u8>,
    first_byte: Option<Duration>,
    done: Option<Duration>,
    error: Option<String>,
    queued: bool,
}

#[derive(Debug, Default)]
struct Report {
    date: String,
    command: String,
    lang: String,
    clients: usize,
    wall: Duration,
    states: BTreeMap<String, usize>,
    lost: Vec<String>,
    wrong_output: usize,
    queued: usize,
    first_byte: Option<Quantiles>,
    done: Option<Quantiles>,
    rss_start_kib: u64,
    rss_peak_runs_kib: u64,
    idle: usize,
    idle_opened: usize,
    idle_dropped: u64,
    hold: Duration,
    rss_before_idle_kib: u64,
    rss_idle_kib: u64,
    total: Duration,
}

/// How to start the server under test.
#[derive(Debug, Clone)]
pub struct Serve {
    /// An executable taking `serve --listen ADDR --instance NAME` and the flags of
    /// `onpyrunner serve` (`--max-queued N`, `--max-runs-per-client N`, ...).
    pub program: PathBuf,
    /// What it prints on stderr before its address once it listens (`http://` included).
    pub listening: &'static str,
}

/// Run the load test against a server started from `serve`; the exit code is 1 if a client
/// was lost, got wrong output, or an idle connection failed or was dropped.
pub async fn run(args: LoadArgs, serve: Serve) -> anyhow::Result<i32> {
    if args.clients == 0 && args.idle == 0 {
        bail!("--clients and --idle are both 0: nothing to do");
    }
    let language = onpyrunner_languages::find(&args.lang)
        .with_context(|| format!("--lang {:?}: unknown language", args.lang))?;
    let started = Instant::now();
    let mut server = Server::start(
        &serve,
        "load",
        &flags(args.clients, args.clients.max(args.idle)),
    )
    .await?;
    let bound = Duration::from_secs(args.max_seconds);
    let measured = tokio::time::timeout(bound, measure(&args, language, &server)).await;
    let stopped = server.stop().await;
    let mut report = match measured {
        Ok(report) => report?,
        Err(_) => bail!(
            "the load run did not finish within --max-seconds {}",
            args.max_seconds
        ),
    };
    stopped?;
    report.total = started.elapsed();
    report.command = command_line();
    publish("load", args.write.as_deref(), &render(&report))?;
    let ok = report.lost.is_empty()
        && report.wrong_output == 0
        && report.idle_opened == report.idle
        && report.idle_dropped == 0;
    Ok(if ok { 0 } else { 1 })
}

async fn measure(
    args: &LoadArgs,
    language: &'static onpyrunner_languages::Language,
    server: &Server,
) -> anyhow::Result<Report> {
    let mut report = Report {
        date: utc_now(),
        lang: language.id.clone(),
        clients: args.clients,
        idle: args.idle,
        hold: Duration::from_secs(args.hold_seconds),
        ..Report::default()
    };
    // Warm up: the pool is full and the path is hot before the clock starts.
    for _ in 0..3 {
        let warm = hello(server, language).await;
        if warm.state.as_deref() != Some("FINISHED") {
            bail!("the warm-up run failed: {warm:?}");
        }
    }
    report.rss_start_kib = server.rss_kib();

    if args.clients > 0 {
        eprintln!("load: {} clients run a hello world at once", args.clients);
        let peak = Arc::new(AtomicU64::new(0));
        let sampler = server.sample_peak(peak.clone());
        let began = Instant::now();
        let clients = (0..args.clients).map(|_| hello(server, language));
        let results = futures_util::future::join_all(clients).await;
        report.wall = began.elapsed();
        sampler.abort();
        report.rss_peak_runs_kib = peak.load(Ordering::Relaxed);
        let mut first = Vec::new();
        let mut done = Vec::new();
        for r in &results {
            match (&r.state, &r.error) {
                (Some(state), _) => *report.states.entry(state.clone()).or_default() += 1,
                (None, Some(e)) => report.lost.push(e.clone()),
                (None, None) => report.lost.push("no final state".into()),
            }
            if r.state.as_deref() == Some("FINISHED") && r.stdout != HELLO_OUTPUT.as_bytes() {
                report.wrong_output += 1;
            }
            report.queued += r.queued as usize;
            first.extend(r.first_byte);
            done.extend(r.done);
        }
        report.first_byte = Quantiles::of(&first);
        report.done = Quantiles::of(&done);
    }

    if args.idle > 0 {
        eprintln!("load: holding {} idle connections", args.idle);
        tokio::time::sleep(Duration::from_secs(1)).await;
        report.rss_before_idle_kib = server.rss_kib();
        let dropped = Arc::new(AtomicU64::new(0));
        let stop = tokio_util::sync::CancellationToken::new();
        let mut holders = Vec::with_capacity(args.idle);
        for _ in 0..args.idle {
            match server.connect().await {
                Ok(ws) => {
                    let dropped = dropped.clone();
                    let stop = stop.clone();
                    holders.push(tokio::spawn(hold_idle(ws, stop, dropped)));
                }
                Err(e) => {
                    eprintln!("load: an idle connection failed: {e}");
                    break;
                }
            }
        }
        report.idle_opened = holders.len();
        tokio::time::sleep(report.hold).await;
        report.rss_idle_kib = server.rss_kib();
        report.idle_dropped = dropped.load(Ordering::Relaxed);
        stop.cancel();
        futures_util::future::join_all(holders).await;
    }
    Ok(report)
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

/// Hold a connection open, reading (which answers the server's pings), until `stop`.
async fn hold_idle(
    mut ws: Client,
    stop: tokio_util::sync::CancellationToken,
    dropped: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = ws.close(None).await;
                return;
            }
            message = ws.next() => match message {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One client: connect, run a hello world, read to the summary.
async fn hello(server: &Server, language: &onpyrunner_languages::Language) -> ClientResult {
    let mut result = ClientResult::default();
    let begin = Instant::now();
    let outcome = tokio::time::timeout(CLIENT_TIMEOUT, async {
        let mut ws = server.connect().await?;
        let run = ClientMessage::Run(RunBody::code(&language.id, hello_world(language)));
        ws.send(Message::text(serde_json::to_string(&run)?)).await?;
        while let Some(message) = ws.next().await {
            match message? {
                Message::Binary(frame) => {
                    result.first_byte.get_or_insert_with(|| begin.elapsed());
                    match OutputChunk::from_frame(&frame) {
                        Some(chunk) if chunk.stream == OutputStream::Stdout => {
                            result.stdout.extend_from_slice(&chunk.data)
                        }
                        Some(_) => {}
                        None => bail!("an output frame with no stream tag"),
                    }
                }
                Message::Text(text) => match serde_json::from_str::<ServerMessage>(&text)? {
                    ServerMessage::Summary { summary, .. } => {
                        result.done = Some(begin.elapsed());
                        result.state = Some(summary.state.to_string());
                        let _ = ws.close(None).await;
                        return Ok(());
                    }
                    ServerMessage::Queued { .. } => result.queued = true,
                    ServerMessage::Error(err) => bail!("error: {}", err.error),
                    _ => {}
                },
                _ => {}
            }
        }
        bail!("the connection closed before the summary")
    })
    .await;
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(e)) => result.error = Some(e.to_string()),
        Err(_) => result.error = Some(format!("no summary within {CLIENT_TIMEOUT:?}")),
    }
    result
}

const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The server's flags for `clients` hello worlds at once and `connections` connections at once,
/// all from loopback's one address.
fn flags(clients: usize, connections: usize) -> Vec<String> {
    let n = |n: usize| n.to_string();
    vec![
        // Every client gets a place in the queue: none is refused as busy.
        "--max-queued".into(),
        n(clients + 64),
        // All of them come from one address: the per-client cap must not refuse them.
        "--max-runs-per-client".into(),
        n(clients + 64),
        // Nor the per-address connection cap, the per-client WebSocket cap or the per-client
        // rate of starting runs.
        "--max-connections-per-address".into(),
        n(connections + 64),
        "--max-websockets-per-client".into(),
        n(connections + 64),
        "--runs-per-minute".into(),
        "0".into(),
    ]
}

/// The server under test as a child process on a free loopback port (`load` and `attack`
/// share it).
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: String,
    pub(crate) pid: u32,
}

impl Server {
    /// Start `serve` with `--listen 127.0.0.1:0`, an instance named `NAME-PID` and `flags`, and
    /// wait until it listens.
    pub(crate) async fn start(
        serve: &Serve,
        name: &str,
        flags: &[String],
    ) -> anyhow::Result<Server> {
        let instance = format!("{name}-{}", std::process::id());
        let mut child = Command::new(&serve.program)
            .args(["serve", "--listen", "127.0.0.1:0", "--instance", &instance])
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start onpyrunner serve")?;
        let pid = child.id().context("the server exited at once")?;
        let mut lines = BufReader::new(child.stderr.take().expect("piped")).lines();
        let addr = tokio::time::timeout(Duration::from_secs(120), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(serve.listening) {
                    return Ok(addr.to_string());
                }
                eprintln!("serve: {line}");
            }
            bail!("onpyrunner serve exited before listening")
        })
        .await
        .context("onpyrunner serve did not listen within 120 s")??;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        eprintln!("{name}: server {pid} (instance {instance}) listening on {addr}");
        Ok(Server { child, addr, pid })
    }

    async fn connect(&self) -> anyhow::Result<Client> {
        let request = format!("ws://{}/api/v1/ws", self.addr).into_client_request()?;
        let tcp = TcpStream::connect(&self.addr).await?;
        tcp.set_nodelay(true)?;
        let (ws, _) = tokio_tungstenite::client_async(request, tcp).await?;
        Ok(ws)
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.pid)
    }

    /// Sample the server's RSS every 50 ms into `peak` until aborted.
    pub(crate) fn sample_peak(&self, peak: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
        let pid = self.pid;
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    }

    /// SIGTERM, then wait for a clean exit (the server removes its containers).
    pub(crate) async fn stop(&mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid, which has not been reaped yet.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .context("the server did not exit within 60 s of SIGTERM")??;
        if !status.success() {
            bail!("the server exited with {status} after SIGTERM");
        }
        Ok(())
    }
}

fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Load: many WebSocket clients\n");
    let _ = writeln!(
        o,
        "Made by `onpyrunner {}` on {}, in {:.0} s. It starts `onpyrunner serve` on loopback \
         (queue large enough for every client, pools and running slots at their defaults) and \
         drives it over `/api/v1/ws`; the load stops by itself.\n",
        r.command,
        r.date,
        r.total.as_secs_f64()
    );
    if r.clients > 0 {
        let finals: Vec<String> = r.states.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let _ =
            writeln!(
            o,
            "**{} clients at once**, each connecting and running a {} hello world: {} reached a \
             final state ({}), {} lost, {} with wrong output, {} waited in the queue. All done \
             in {:.1} s ({:.1} runs per second).\n",
            r.clients,
            r.lang,
            r.states.values().sum::<usize>(),
            if finals.is_empty() { "none".into() } else { finals.join(", ") },
            r.lost.len(),
            r.wrong_output,
            r.queued,
            r.wall.as_secs_f64(),
            r.clients as f64 / r.wall.as_secs_f64().max(1e-9),
        );
        let _ = writeln!(
            o,
            "| From sending the run to | p50 | p90 | p99 |\n|---|---:|---:|---:|"
        );
        for (what, q) in [
            ("the first output byte", r.first_byte),
            ("the summary", r.done),
        ] {
            match q {
                Some(q) => {
                    let _ = writeln!(
                        o,
                        "| {what} | {:.0} ms | {:.0} ms | {:.0} ms |",
                        q.p50, q.p90, q.p99
                    );
                }
                None => {
                    let _ = writeln!(o, "| {what} | - | - | - |");
                }
            }
        }
        let _ = writeln!(
            o,
            "\nWith this many clients at once nearly every run waits for one of the running \
             slots (one per core), so the latencies are mostly queueing: the last client waits \
             for the {} before it.\n",
            r.clients - 1
        );
        if !r.lost.is_empty() {
            let _ = writeln!(o, "Lost: {}\n", r.lost.join("; "));
        }
    }
    let _ = writeln!(o, "| Server resident memory (VmRSS) | |\n|---|---:|");
    let _ = writeln!(
        o,
        "| After the warm-up | {:.1} MB |",
        kib_to_mb(r.rss_start_kib)
    );
    if r.clients > 0 {
        let _ = writeln!(
            o,
            "| Peak during the {} runs | {:.1} MB |",
            r.clients,
            kib_to_mb(r.rss_peak_runs_kib)
        );
    }
    if r.idle > 0 {
        let _ = writeln!(
            o,
            "| Before the idle connections | {:.1} MB |",
            kib_to_mb(r.rss_before_idle_kib)
        );
        let per = r.rss_idle_kib.saturating_sub(r.rss_before_idle_kib) as f64
            / r.idle_opened.max(1) as f64;
        let _ = writeln!(
            o,
            "| With {} idle connections, after {} s | {:.1} MB ({:.1} KiB per connection) |",
            r.idle_opened,
            r.hold.as_secs(),
            kib_to_mb(r.rss_idle_kib),
            per
        );
        let _ = writeln!(
            o,
            "\n**{} idle connections**: {} opened, {} dropped by the server while held \
             (each is pinged every 2 s and answers).",
            r.idle, r.idle_opened, r.idle_dropped
        );
    }
    o
}

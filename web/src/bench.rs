//! `onpyrunner bench`: latency, throughput and memory of the engine in one run, next to the
//! baselines that give the figures a meaning (`docker run`, the daemon's raw lifecycle rate).
//!
//! - Latency: a hello world per language, one run at a time, three ways, interleaved run by run
//!   so that a busy moment of the machine hits all three alike: through the pool (the pool is
//!   full before each run, so each is a hit), through a fresh container (an engine without
//!   pools: each run makes its container), and through `docker run --rm -i` with the same
//!   container shape (the `docker` CLI is used here as the baseline only, never on a run's path).
//! - Where the time goes: the pooled path by hand on the raw client (unpause, first byte, the
//!   launcher's status, removal), to explain the engine's figures.
//! - Throughput: completed runs per second at 1, 4 and 8 callers, next to the daemon's
//!   create+start+wait+remove cycles per second of the same container at the same concurrency.
//! - Memory: this process's VmRSS with every pool full (the bench process is the supervisor).
use anyhow::{bail, Context};
use clap::Args;
use futures_util::StreamExt;
use onpyrunner_images::{languages, Language};
use onpyrunner_protocol::{AttachDecoder, AttachMode, StatusScanner, StreamKind};
use onpyrunner_supervisor::docker::types::ContainerConfig;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{self, RunSpec};
use onpyrunner_supervisor::sandbox::{self, Labels, LABEL_OWNER};
use onpyrunner_supervisor::session::{Event, Reason};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;
use tokio_util::codec::FramedRead;

/// Callers of the throughput measurement.
pub const CONCURRENCY: [usize; 3] = [1, 4, 8];
/// What every hello world prints.
pub const HELLO_OUTPUT: &str = "hello, world\n";
/// Longest one run may take before it counts as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the pools may take to fill.
const FILL_TIMEOUT: Duration = Duration::from_secs(180);
/// Runs of the pooled path by hand (where the time goes), at most.
const BREAKDOWN_RUNS: usize = 20;

/// Measure latency, throughput and memory of the engine against the real daemon and images.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Languages to measure, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub langs: Vec<String>,
    /// Timed runs per language and path [default: 100; 5 with --quick]
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Seconds of each throughput measurement [default: 20; 2 with --quick]
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
    /// Write the Markdown report into this file's `bench` section (between `<!-- bench:begin -->`
    /// and `<!-- bench:end -->`; other sections are kept) instead of stdout
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    /// Few runs and short throughput windows, for smoke tests
    #[arg(long)]
    pub quick: bool,
    /// Stop the timed latency runs of a language after this many seconds, whatever is left
    /// (Java takes about 6 s per round of three paths) [default: 240]
    #[arg(long, value_name = "S", default_value_t = 240)]
    pub lang_seconds: u64,
    /// Stop starting new measurements after this many minutes; what is left is reported as cut
    #[arg(long, value_name = "MINUTES", default_value_t = 25)]
    pub max_minutes: u64,
}

/// The hello world of a language: its source and what it prints.
pub fn hello_world(lang: &Language) -> &'static str {
    match lang.id.as_str() {
        "node" => "console.log(\"hello, world\");\n",
        "java" => {
            "public class Main {\n    public static void main(String[] args) {\n        \
             System.out.println(\"hello, world\");\n    }\n}\n"
        }
        // CPython, PyPy, and any Python added later.
        _ => "print(\"hello, world\")\n",
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90, p99 in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Quantiles {
    pub fn of(samples: &[Duration]) -> Option<Quantiles> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let ms = |p| percentile(&sorted, p).map(|d| d.as_secs_f64() * 1000.0);
        Some(Quantiles {
            p50: ms(50.0)?,
            p90: ms(90.0)?,
            p99: ms(99.0)?,
        })
    }
}

/// The three ways a run is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Pool,
    Fresh,
    DockerRun,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Pool, Path::Fresh, Path::DockerRun];
    pub fn label(self) -> &'static str {
        match self {
            Path::Pool => "pool",
            Path::Fresh => "fresh container",
            Path::DockerRun => "docker run",
        }
    }
}

/// The samples of one language on one path.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub first_byte: Vec<Duration>,
    pub completion: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Latency {
    fn add(&mut self, sample: Result<Sample, String>) {
        match sample {
            Ok(s) => {
                self.first_byte.push(s.first_byte);
                self.completion.push(s.completion);
            }
            Err(e) => self.failures.push(e),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    first_byte: Duration,
    completion: Duration,
}

/// How the pooled path is run by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the pool does it: paused, unpaused at the claim.
    Paused = 0,
    /// The same, with a container being made alongside, as the pool's refill does after
    /// every claim.
    PausedWithRefill = 1,
    /// Started and never paused: the launcher waits blocked on stdin, so no unpause.
    Running = 2,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Paused, Variant::PausedWithRefill, Variant::Running];
    pub fn label(self) -> &'static str {
        match self {
            Variant::Paused => "paused",
            Variant::PausedWithRefill => "paused, refill alongside",
            Variant::Running => "running, never paused",
        }
    }
}

/// The pooled path by hand, per run (all from just before unpause).
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    pub unpause: Vec<Duration>,
    pub first_byte: Vec<Duration>,
    /// The launcher's status trailer arrived (the program ended and was reaped).
    pub status: Vec<Duration>,
    /// The container is removed.
    pub removed: Vec<Duration>,
    /// The run stage's wall time as the launcher measured it (interpreter start to exit).
    pub program_wall: Vec<Duration>,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LanguageReport {
    pub id: String,
    pub name: String,
    pub paths: BTreeMap<Path, Latency>,
    pub pool_hits: u64,
    pub pool_misses: u64,
    /// The pooled path by hand, per [`Variant`] (indexed by `Variant as usize`).
    pub breakdown: [Breakdown; 3],
}

impl LanguageReport {
    fn quantiles(&self, path: Path) -> (Option<Quantiles>, Option<Quantiles>) {
        match self.paths.get(&path) {
            Some(l) => (Quantiles::of(&l.first_byte), Quantiles::of(&l.completion)),
            None => (None, None),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ThroughputRow {
    pub callers: usize,
    pub engine_runs: u64,
    pub engine_failed: u64,
    pub engine_secs: f64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub raw_cycles: u64,
    pub raw_failed: u64,
    pub raw_secs: f64,
}

impl ThroughputRow {
    pub fn engine_rate(&self) -> f64 {
        rate(self.engine_runs, self.engine_secs)
    }
    pub fn raw_rate(&self) -> f64 {
        rate(self.raw_cycles, self.raw_secs)
    }
    /// Ours as a percentage of the daemon's raw capacity.
    pub fn percent(&self) -> Option<f64> {
        let raw = self.raw_rate();
        (raw > 0.0).then(|| 100.0 * self.engine_rate() / raw)
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub docker: String,
    pub kernel: String,
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    /// Containers on the daemon at the start that are not this bench's.
    pub other_containers: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub rss_before_kib: u64,
    pub rss_full_kib: u64,
    /// (language, pool size) of the pools that were full when measured.
    pub pools: Vec<(String, usize)>,
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub command: String,
    pub runs: usize,
    pub seconds: u64,
    pub machine: Machine,
    pub languages: Vec<LanguageReport>,
    pub throughput: Vec<ThroughputRow>,
    pub memory: Memory,
    /// Measurements skipped because the time bound was reached.
    pub cut: Vec<String>,
    pub total: Duration,
}

/// One target: what it asks, what was measured, whether it is met (`None`: not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The limits the targets set.
pub const CPYTHON_FIRST_BYTE_MS: f64 = 25.0;
pub const CPYTHON_COMPLETION_MS: f64 = 60.0;
pub const PYPY_NODE_FIRST_BYTE_MS: f64 = 60.0;
pub const JAVA_RATIO: f64 = 0.5;
pub const THROUGHPUT_PERCENT: f64 = 90.0;
pub const MEMORY_MB: f64 = 50.0;

impl Report {
    fn language(&self, id: &str) -> Option<&LanguageReport> {
        self.languages.iter().find(|l| l.id == id)
    }

    /// The targets, computed from the measured figures.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let pool = |id: &str| self.language(id).map(|l| l.quantiles(Path::Pool));
        let (fb, done) = pool("python").unwrap_or((None, None));
        targets.push(limit_target(
            format!("CPython hello world through the pool: first byte p50 <= {CPYTHON_FIRST_BYTE_MS} ms"),
            fb.map(|q| q.p50),
            CPYTHON_FIRST_BYTE_MS,
        ));
        targets.push(limit_target(
            format!("CPython hello world through the pool: completion p50 <= {CPYTHON_COMPLETION_MS} ms"),
            done.map(|q| q.p50),
            CPYTHON_COMPLETION_MS,
        ));
        for (id, name) in [("pypy", "PyPy"), ("node", "Node.js")] {
            let (fb, _) = pool(id).unwrap_or((None, None));
            targets.push(limit_target(
                format!("{name} hello world through the pool: first byte p50 <= {PYPY_NODE_FIRST_BYTE_MS} ms"),
                fb.map(|q| q.p50),
                PYPY_NODE_FIRST_BYTE_MS,
            ));
        }
        let java = self.language("java").and_then(|l| {
            let ours = l.quantiles(Path::Pool).1?.p50;
            let docker = l.quantiles(Path::DockerRun).1?.p50;
            Some((ours, docker))
        });
        targets.push(Target {
            what: "Java hello world completion through the pool <= half of `docker run` (p50)"
                .into(),
            measured: match java {
                Some((ours, docker)) => format!(
                    "{ours:.0} ms vs {docker:.0} ms: {:.2} of `docker run`",
                    ours / docker
                ),
                None => "not measured".into(),
            },
            met: java.map(|(ours, docker)| ours <= JAVA_RATIO * docker),
        });
        let levels: Vec<(usize, f64)> = self
            .throughput
            .iter()
            .filter_map(|t| Some((t.callers, t.percent()?)))
            .collect();
        targets.push(Target {
            what: format!(
                "Sustained throughput >= {THROUGHPUT_PERCENT}% of the daemon's raw lifecycle capacity (at every concurrency)"
            ),
            measured: if levels.is_empty() {
                "not measured".into()
            } else {
                levels
                    .iter()
                    .map(|(c, p)| format!("{p:.0}% at {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: (!levels.is_empty()).then(|| levels.iter().all(|(_, p)| *p >= THROUGHPUT_PERCENT)),
        });
        let mb = (self.memory.rss_full_kib > 0).then(|| kib_to_mb(self.memory.rss_full_kib));
        targets.push(Target {
            what: format!("Supervisor resident memory <= {MEMORY_MB} MB with the pools full"),
            measured: mb.map_or("not measured".into(), |mb| format!("{mb:.1} MB")),
            met: mb.map(|mb| mb <= MEMORY_MB),
        });
        targets
    }
}

fn limit_target(what: String, measured_ms: Option<f64>, limit_ms: f64) -> Target {
    Target {
        what,
        measured: measured_ms.map_or("not measured".into(), |ms| format!("{ms:.1} ms")),
        met: measured_ms.map(|ms| ms <= limit_ms),
    }
}

pub fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// Run the whole bench; the exit code is 0 when every measurement ran (targets met or not).
pub async fn bench_command(
    docker: &Docker,
    args: BenchArgs,
    command: String,
) -> anyhow::Result<i32> {
    let runs = args.runs.unwrap_or(if args.quick { 5 } else { 100 });
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 20 });
    if runs == 0 || seconds == 0 {
        bail!("--runs and --seconds must be at least 1");
    }
    let selected: Vec<&'static Language> = if args.langs.is_empty() {
        languages().iter().collect()
    } else {
        args.langs
            .iter()
            .map(|id| crate::cli::find_language(id.trim()))
            .collect::<anyhow::Result<_>>()?
    };
    for lang in &selected {
        if docker
            .inspect_image(&images::image_ref(lang))
            .await?
            .is_none()
        {
            bail!(
                "the {} image {} is missing; build it with `onpyrunner images`",
                lang.id,
                images::image_ref(lang)
            );
        }
    }
    let tag = run::random_hex(3);
    let bench = Bench {
        docker: docker.clone(),
        tag: tag.clone(),
        runs,
        seconds,
        warmups: if args.quick { 1 } else { 3 },
        deadline: Instant::now() + Duration::from_secs(args.max_minutes.max(1) * 60),
        lang_budget: Duration::from_secs(args.lang_seconds.max(1)),
        selected,
    };
    let mut report = Report {
        command,
        runs,
        seconds,
        ..Report::default()
    };
    let started = Instant::now();
    let engines = Engines::default();
    let measured = tokio::select! {
        r = bench.measure(&mut report, &engines) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress("shutting down the engines and removing the bench's containers");
    engines.shutdown().await;
    bench.remove_leftovers().await;
    measured?;
    report.total = started.elapsed();
    report.machine.load_end = load_average();
    let markdown = render(&report);
    match &args.write {
        Some(path) => {
            crate::load::write_section(path, "bench", &markdown)?;
            progress(&format!("wrote the bench section of {}", path.display()));
        }
        None => print!("{markdown}"),
    }
    Ok(0)
}

fn progress(message: &str) {
    eprintln!("bench: {message}");
}

/// The engines the bench started, shut down on every path.
#[derive(Default)]
struct Engines(tokio::sync::Mutex<Vec<Engine>>);

impl Engines {
    async fn start(&self, docker: &Docker, config: EngineConfig) -> anyhow::Result<Engine> {
        let instance = config.instance.clone();
        let engine = timeout(FILL_TIMEOUT, Engine::start(docker.clone(), config))
            .await
            .with_context(|| format!("engine {instance} did not start in time"))??;
        self.0.lock().await.push(engine.clone());
        Ok(engine)
    }

    async fn shutdown(&self) {
        let engines = std::mem::take(&mut *self.0.lock().await);
        for engine in engines {
            let _ = timeout(Duration::from_secs(120), engine.shutdown()).await;
        }
    }
}

struct Bench {
    docker: Docker,
    /// Distinguishes this bench's engines and containers from everyone else's.
    tag: String,
    runs: usize,
    seconds: u64,
    warmups: usize,
    deadline: Instant,
    /// Longest the timed latency runs of one language may take.
    lang_budget: Duration,
    selected: Vec<&'static Language>,
}

impl Bench {
    fn late(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Owner label of the containers this bench makes without an engine.
    fn owner(&self, what: &str) -> String {
        format!("bench-{}-{what}", self.tag)
    }

    fn config(&self, what: &str, pools: impl Fn(&Language) -> usize) -> EngineConfig {
        EngineConfig {
            instance: format!("bench-{}-{what}", self.tag),
            pool_sizes: languages()
                .iter()
                .map(|l| (l.id.clone(), pools(l)))
                .collect(),
            max_running: *CONCURRENCY.iter().max().expect("levels"),
            max_queued: 1024,
            ..EngineConfig::default()
        }
    }

    async fn measure(&self, report: &mut Report, engines: &Engines) -> anyhow::Result<()> {
        report.machine = machine(&self.docker).await?;
        report.memory.rss_before_kib = vm_rss_kib();

        // The pooled engine: the selected languages' pools at their table sizes.
        let selected = |l: &Language| self.selected.iter().any(|s| s.id == l.id);
        let pooled = engines
            .start(
                &self.docker,
                self.config("pool", |l| if selected(l) { l.pool_size } else { 0 }),
            )
            .await?;
        progress("filling the pools");
        wait_full(&pooled, None).await?;
        report.memory.rss_full_kib = vm_rss_kib();
        report.memory.pools = pooled
            .pools()
            .values()
            .map(|p| (p.language().id.clone(), p.target()))
            .collect();
        let fresh = engines
            .start(&self.docker, self.config("fresh", |_| 0))
            .await?;

        for lang in &self.selected {
            report
                .languages
                .push(self.latency(lang, &pooled, &fresh, &mut report.cut).await?);
        }
        report.throughput = self.throughput(&pooled, &mut report.cut).await?;
        Ok(())
    }

    /// Latency of one language, the three paths interleaved run by run, then the breakdown.
    async fn latency(
        &self,
        lang: &'static Language,
        pooled: &Engine,
        fresh: &Engine,
        cut: &mut Vec<String>,
    ) -> anyhow::Result<LanguageReport> {
        let spec = RunSpec::single(
            lang,
            hello_world(lang),
            Limits::defaults(lang, &Caps::default()),
        );
        let docker_args = docker_run_args(
            &sandbox::container_config(
                &images::image_ref(lang),
                &spec.limits,
                &Labels {
                    owner: self.owner("cli"),
                    language: lang.id.clone(),
                    run: "docker-run".into(),
                    created_unix: run::unix_now(),
                },
                // The baseline runs the table's commands cold, as `docker run` users do.
                &[],
            ),
            &shell_command(lang),
        );
        let pool = pooled.pools()[&lang.id].clone();
        let mut report = LanguageReport {
            id: lang.id.clone(),
            name: format!("{} {}", lang.name, lang.version),
            ..LanguageReport::default()
        };
        progress(&format!(
            "{}: {} warm-up runs per path",
            lang.id, self.warmups
        ));
        for _ in 0..self.warmups {
            wait_full(pooled, Some(&lang.id)).await?;
            let _ = engine_run(pooled, spec.clone()).await;
            let _ = engine_run(fresh, spec.clone()).await;
            let _ = docker_run(&docker_args, hello_world(lang)).await;
            self.wait_removed("cli").await;
        }
        let hits = pool.stats().hits.load(Ordering::Relaxed);
        let misses = pool.stats().misses.load(Ordering::Relaxed);
        let budget = Instant::now() + self.lang_budget;
        for i in 0..self.runs {
            if self.late() || Instant::now() >= budget {
                cut.push(format!(
                    "{}: latency stopped after {i} of {} rounds ({})",
                    lang.id,
                    self.runs,
                    if self.late() {
                        "the total time bound, --max-minutes".to_string()
                    } else {
                        format!(
                            "its time budget of {} s, --lang-seconds",
                            self.lang_budget.as_secs()
                        )
                    }
                ));
                break;
            }
            if i % 10 == 0 {
                progress(&format!("{}: run {}/{}", lang.id, i + 1, self.runs));
            }
            wait_full(pooled, Some(&lang.id)).await?;
            let sample = engine_run(pooled, spec.clone()).await;
            report.paths.entry(Path::Pool).or_default().add(sample);
            let sample = engine_run(fresh, spec.clone()).await;
            report.paths.entry(Path::Fresh).or_default().add(sample);
            let sample = docker_run(&docker_args, hello_world(lang)).await;
            report.paths.entry(Path::DockerRun).or_default().add(sample);
            self.wait_removed("cli").await;
        }
        report.pool_hits = pool.stats().hits.load(Ordering::Relaxed) - hits;
        report.pool_misses = pool.stats().misses.load(Ordering::Relaxed) - misses;

        let probes = self.runs.min(BREAKDOWN_RUNS);
        progress(&format!(
            "{}: 3 x {probes} runs by hand on the raw client",
            lang.id
        ));
        for i in 0..3 * probes {
            if self.late() {
                cut.push(format!("{}: breakdown cut (time bound)", lang.id));
                break;
            }
            // The variants take turns.
            let variant = Variant::ALL[i % 3];
            let b = &mut report.breakdown[variant as usize];
            match timeout(RUN_TIMEOUT, self.probe(&spec, variant)).await {
                Ok(Ok(p)) => {
                    b.unpause.push(p.unpause);
                    b.first_byte.push(p.first_byte);
                    b.status.push(p.status);
                    b.removed.push(p.removed);
                    b.program_wall.push(p.program_wall);
                }
                Ok(Err(e)) => b.failures.push(format!("{e:#}")),
                Err(_) => b.failures.push("timed out".into()),
            }
        }
        for (path, l) in &report.paths {
            if !l.failures.is_empty() {
                progress(&format!(
                    "{} {}: {} failed runs, first: {}",
                    lang.id,
                    path.label(),
                    l.failures.len(),
                    l.failures[0]
                ));
            }
        }
        Ok(report)
    }

    /// The pooled path by hand: make a container as the pool does (create, attach, start,
    /// pause), then time unpause, first byte, the status trailer and removal.
    /// With `alongside`, a container is made as the pool's refill makes one (create, attach,
    /// start, pause) at the same time as the run, as happens after every claim.
    async fn probe(&self, spec: &RunSpec, variant: Variant) -> anyhow::Result<Probe> {
        let alongside = variant == Variant::PausedWithRefill;
        let paused = variant != Variant::Running;
        let docker = &self.docker;
        let labels = Labels {
            owner: self.owner("probe"),
            language: spec.language.id.clone(),
            run: run::random_hex(8),
            created_unix: run::unix_now(),
        };
        let config = sandbox::container_config(
            &images::image_ref(spec.language),
            &spec.limits,
            &labels,
            &[],
        );
        let id = docker.create_container(None, &config).await?;
        let probed = async {
            let io = docker.attach_container(&id).await?;
            docker.start_container(&id).await?;
            if paused {
                docker.pause_container(&id).await?;
            }
            // A pooled container waits paused for a while; let this one settle too.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let begin = Instant::now();
            let refill = async {
                if alongside {
                    let labels = Labels {
                        run: run::random_hex(8),
                        ..labels.clone()
                    };
                    let config = sandbox::container_config(
                        &images::image_ref(spec.language),
                        &spec.limits,
                        &labels,
                        &[],
                    );
                    make_and_remove(docker, &config).await
                } else {
                    Ok(())
                }
            };
            let (measured, refilled) =
                tokio::join!(self.probed_run(&id, io, spec, begin, paused), refill);
            refilled?;
            measured
        }
        .await;
        if probed.is_err() {
            let _ = docker.remove_container(&id).await;
        }
        probed
    }

    /// The timed part of `probe`: from unpause to removal.
    async fn probed_run(
        &self,
        id: &str,
        io: onpyrunner_supervisor::docker::AttachIo,
        spec: &RunSpec,
        begin: Instant,
        paused: bool,
    ) -> anyhow::Result<Probe> {
        let docker = &self.docker;
        let nonce = run::random_hex(16);
        let frame = run::launch_request(spec, nonce.clone()).encode()?;
        if paused {
            docker.unpause_container(id).await?;
        }
        let unpause = begin.elapsed();
        let (read_half, mut write_half) = tokio::io::split(io);
        write_half.write_all(&frame).await?;
        write_half.shutdown().await?;
        let mut frames = FramedRead::new(read_half, AttachDecoder::new(AttachMode::Multiplexed));
        let mut scanners = [StatusScanner::new(&nonce), StatusScanner::new(&nonce)];
        let mut first_byte = None;
        let mut status = None;
        while let Some(chunk) = frames.next().await {
            let chunk = chunk?;
            let index = match chunk.stream {
                StreamKind::Stdout => 0,
                StreamKind::Stderr => 1,
                _ => continue,
            };
            let scanned = scanners[index].push(&chunk.data);
            if !scanned.output.is_empty() && first_byte.is_none() {
                first_byte = Some(begin.elapsed());
            }
            if let Some(found) = scanned.status {
                status.get_or_insert(found);
            }
            if scanners.iter().all(StatusScanner::done) {
                break;
            }
        }
        let at_status = begin.elapsed();
        let status = match status {
            Some(Ok(s)) => s,
            Some(Err(e)) => bail!("unreadable status: {e}"),
            None => bail!("no status from the launcher"),
        };
        if status.exit_code != Some(0) {
            bail!("the program failed: {status:?}");
        }
        docker.remove_container(id).await?;
        Ok(Probe {
            unpause,
            first_byte: first_byte.context("no output")?,
            status: at_status,
            removed: begin.elapsed(),
            program_wall: Duration::from_millis(status.wall_ms),
        })
    }

    /// Runs per second through the engine and raw daemon cycles per second, level by level.
    async fn throughput(
        &self,
        pooled: &Engine,
        cut: &mut Vec<String>,
    ) -> anyhow::Result<Vec<ThroughputRow>> {
        let Some(lang) = onpyrunner_images::find("python") else {
            return Ok(vec![]);
        };
        if !pooled.pools().contains_key("python") {
            cut.push("throughput: needs python among --langs".into());
            return Ok(vec![]);
        }
        let limits = Limits::defaults(lang, &Caps::default());
        let spec = RunSpec::single(lang, hello_world(lang), limits.clone());
        let pool = pooled.pools()["python"].clone();
        let window = Duration::from_secs(self.seconds);
        let mut rows = Vec::new();
        for callers in CONCURRENCY {
            if self.late() {
                cut.push(format!(
                    "throughput: {callers} callers and up skipped (time bound)"
                ));
                break;
            }
            wait_full(pooled, Some("python")).await?;
            let mut row = ThroughputRow {
                callers,
                ..ThroughputRow::default()
            };
            progress(&format!(
                "throughput: engine, {callers} callers, {window:?}"
            ));
            let hits = pool.stats().hits.load(Ordering::Relaxed);
            let misses = pool.stats().misses.load(Ordering::Relaxed);
            let (ok, failed, secs) = concurrently(callers, window, || {
                let (engine, spec) = (pooled.clone(), spec.clone());
                async move { engine_run(&engine, spec).await.map(drop) }
            })
            .await;
            (row.engine_runs, row.engine_failed, row.engine_secs) = (ok, failed, secs);
            row.pool_hits = pool.stats().hits.load(Ordering::Relaxed) - hits;
            row.pool_misses = pool.stats().misses.load(Ordering::Relaxed) - misses;
            // Let the pool refill so its making does not run into the raw measurement.
            wait_full(pooled, Some("python")).await?;

            progress(&format!(
                "throughput: raw daemon cycles, {callers} callers, {window:?}"
            ));
            let image = images::image_ref(lang);
            let owner = self.owner("raw");
            let (ok, failed, secs) = concurrently(callers, window, || {
                let (docker, image, owner, limits) = (
                    self.docker.clone(),
                    image.clone(),
                    owner.clone(),
                    limits.clone(),
                );
                async move { raw_cycle(&docker, &image, &owner, &limits).await }
            })
            .await;
            (row.raw_cycles, row.raw_failed, row.raw_secs) = (ok, failed, secs);
            rows.push(row);
        }
        Ok(rows)
    }

    /// `docker run --rm` may return before the daemon has removed the container: wait for it,
    /// so that the removal does not run into the next measured run.
    async fn wait_removed(&self, what: &str) {
        let label = format!("{LABEL_OWNER}={}", self.owner(what));
        let _ = timeout(Duration::from_secs(10), async {
            while self
                .docker
                .list_containers(std::slice::from_ref(&label))
                .await
                .is_ok_and(|l| !l.is_empty())
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
    }

    /// Remove what the bench made outside its engines (a run cut short by Ctrl-C or an error).
    async fn remove_leftovers(&self) {
        for what in ["raw", "probe", "cli"] {
            let label = format!("{LABEL_OWNER}={}", self.owner(what));
            if let Ok(list) = self.docker.list_containers(&[label]).await {
                for c in list {
                    let _ = self.docker.remove_container(&c.id).await;
                }
            }
        }
    }
}

struct Probe {
    unpause: Duration,
    first_byte: Duration,
    status: Duration,
    removed: Duration,
    program_wall: Duration,
}

/// Make a container as the pool's refill does (create, attach, start, pause), then remove it.
async fn make_and_remove(docker: &Docker, config: &ContainerConfig) -> anyhow::Result<()> {
    let id = docker.create_container(None, config).await?;
    let made = async {
        let io = docker.attach_container(&id).await?;
        docker.start_container(&id).await?;
        docker.pause_container(&id).await?;
        drop(io);
        anyhow::Ok(())
    }
    .await;
    docker.remove_container(&id).await?;
    made
}

/// Wait until the pools (or one language's pool) are full.
async fn wait_full(engine: &Engine, only: Option<&str>) -> anyhow::Result<()> {
    let full = || {
        engine
            .pools()
            .iter()
            .filter(|(id, _)| only.is_none_or(|o| o == id.as_str()))
            .all(|(_, p)| p.ready() >= p.target())
    };
    let waited = timeout(FILL_TIMEOUT, async {
        while !full() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    waited.with_context(|| format!("the pools did not fill within {FILL_TIMEOUT:?}"))
}

/// `callers` loops of `one` for `window`; returns (succeeded, failed, seconds until the last
/// caller finished its last run).
async fn concurrently<F, Fut>(callers: usize, window: Duration, one: F) -> (u64, u64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let begin = Instant::now();
    let end = begin + window;
    let caller = || async {
        while Instant::now() < end {
            match timeout(RUN_TIMEOUT, one()).await {
                Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    };
    // The callers take turns on this task; the work they wait for runs in the engine's tasks
    // and in the daemon.
    futures_util::future::join_all((0..callers).map(|_| caller())).await;
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        begin.elapsed().as_secs_f64(),
    )
}

/// One hello world through an engine: time to the first output and to the summary.
async fn engine_run(engine: &Engine, spec: RunSpec) -> Result<Sample, String> {
    let begin = Instant::now();
    let mut session = engine.submit(spec).map_err(|e| e.to_string())?;
    session.close_stdin();
    let mut first_byte = None;
    let mut stdout = Vec::new();
    loop {
        let event = timeout(RUN_TIMEOUT, session.events.recv())
            .await
            .map_err(|_| format!("no summary within {RUN_TIMEOUT:?}"))?
            .ok_or("the events ended without a summary")?;
        match event {
            Event::Output(chunk) => {
                first_byte.get_or_insert(begin.elapsed());
                if chunk.stream == run::OutputStream::Stdout {
                    stdout.extend_from_slice(&chunk.data);
                }
            }
            Event::Summary(summary) => {
                let completion = begin.elapsed();
                if summary.reason != Reason::Exited || summary.exit_code != Some(0) {
                    return Err(format!("the run ended badly: {summary:?}"));
                }
                if stdout != HELLO_OUTPUT.as_bytes() {
                    return Err(format!(
                        "unexpected output {:?}",
                        String::from_utf8_lossy(&stdout)
                    ));
                }
                return Ok(Sample {
                    first_byte: first_byte.ok_or("no output")?,
                    completion,
                });
            }
            _ => {}
        }
    }
}

/// The `docker run` arguments for a container shaped like `config` (the same limits and
/// lock-down), running `command` instead of the launcher.
pub fn docker_run_args(config: &ContainerConfig, command: &[String]) -> Vec<String> {
    let h = &config.host_config;
    let mut a: Vec<String> = ["run", "--rm", "-i", "--network", &h.network_mode]
        .map(String::from)
        .to_vec();
    let mut flag = |name: &str, value: String| {
        a.push(name.to_string());
        a.push(value);
    };
    let mut tmpfs: Vec<_> = h.tmpfs.iter().collect();
    tmpfs.sort();
    for (path, options) in tmpfs {
        flag("--tmpfs", format!("{path}:{options}"));
    }
    flag("--user", config.user.clone());
    flag("--workdir", config.working_dir.clone());
    for cap in &h.cap_drop {
        flag("--cap-drop", cap.clone());
    }
    for opt in &h.security_opt {
        flag("--security-opt", opt.clone());
    }
    flag("--memory", format!("{}b", h.memory));
    flag("--memory-swap", format!("{}b", h.memory_swap));
    flag("--cpus", format!("{}", h.nano_cpus as f64 / 1e9));
    flag("--pids-limit", h.pids_limit.to_string());
    for u in &h.ulimits {
        flag("--ulimit", format!("{}={}:{}", u.name, u.soft, u.hard));
    }
    flag("--ipc", h.ipc_mode.clone());
    flag("--log-driver", h.log_config.kind.clone());
    for e in &config.env {
        flag("--env", e.clone());
    }
    let mut labels: Vec<_> = config.labels.iter().collect();
    labels.sort();
    for (k, v) in labels {
        flag("--label", format!("{k}={v}"));
    }
    if h.readonly_rootfs {
        a.push("--read-only".into());
    }
    if h.init {
        a.push("--init".into());
    }
    a.push(config.image.clone());
    a.extend(command.iter().cloned());
    a
}

/// The language's own compile and run commands on a file read from stdin, through `sh` (the
/// table's fixed commands and file name only; nothing here comes from a user).
pub fn shell_command(lang: &Language) -> Vec<String> {
    let files = [onpyrunner_protocol::SourceFile {
        name: lang.source_file.clone(),
        content: vec![],
    }];
    let quote = |argv: Vec<String>| {
        argv.iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut script = format!("cat > '{}'", lang.source_file);
    if !lang.compile.is_empty() {
        script += &format!(" && {}", quote(run::expand_command(&lang.compile, &files)));
    }
    script += &format!(" && exec {}", quote(run::expand_command(&lang.run, &files)));
    vec!["sh".into(), "-c".into(), script]
}

/// One hello world through `docker run`: time to the first byte on its stdout and to its exit.
async fn docker_run(args: &[String], program: &str) -> Result<Sample, String> {
    let begin = Instant::now();
    let mut child = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start docker: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let program = program.as_bytes().to_vec();
    let ran = timeout(RUN_TIMEOUT, async move {
        let writing = async move {
            let _ = stdin.write_all(&program).await;
            // Dropping stdin closes it: EOF ends `cat`.
        };
        let reading = async {
            let mut out = Vec::new();
            let mut first_byte = None;
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first_byte.get_or_insert(begin.elapsed());
                        out.extend_from_slice(&buf[..n]);
                    }
                }
            }
            (out, first_byte)
        };
        let mut err = Vec::new();
        let (_, (out, first_byte), _) =
            tokio::join!(writing, reading, stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (out, first_byte, err, status, begin.elapsed())
    })
    .await
    .map_err(|_| format!("docker run took longer than {RUN_TIMEOUT:?}"))?;
    let (out, first_byte, err, status, completion) = ran;
    let status = status.map_err(|e| e.to_string())?;
    if !status.success() || out != HELLO_OUTPUT.as_bytes() {
        return Err(format!(
            "docker run: {status}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ));
    }
    Ok(Sample {
        first_byte: first_byte.ok_or("no output")?,
        completion,
    })
}

/// One create+start+wait+remove cycle of a container shaped like ours, running
/// `python3.15 -c pass`, through the raw client.
async fn raw_cycle(
    docker: &Docker,
    image: &str,
    owner: &str,
    limits: &Limits,
) -> Result<(), String> {
    let labels = Labels {
        owner: owner.to_string(),
        language: "python".into(),
        run: run::random_hex(8),
        created_unix: run::unix_now(),
    };
    let mut config = sandbox::container_config(image, limits, &labels, &[]);
    config.cmd = ["python3.15", "-c", "pass"].map(String::from).to_vec();
    let id = docker
        .create_container(None, &config)
        .await
        .map_err(|e| e.to_string())?;
    let ran = async {
        docker.start_container(&id).await?;
        docker.wait_container(&id).await
    }
    .await;
    let removed = docker.remove_container(&id).await;
    match (ran, removed) {
        (Ok(0), Ok(())) => Ok(()),
        (Ok(code), Ok(())) => Err(format!("exit code {code}")),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

fn vm_rss_kib() -> u64 {
    crate::load::rss_kib(std::process::id())
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

async fn machine(docker: &Docker) -> anyhow::Result<Machine> {
    let version = docker.version().await?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
        .unwrap_or_else(|| "?".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let others = docker
        .list_containers(&[])
        .await
        .map(|l| l.len())
        .unwrap_or(0);
    Ok(Machine {
        cpu,
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_mib: memory_kib / 1024,
        docker: format!(
            "{} (API {}, {}/{})",
            version.version, version.api_version, version.os, version.arch
        ),
        kernel: version.kernel_version,
        date: utc_now(),
        load_start: load_average(),
        load_end: String::new(),
        other_containers: others,
    })
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
pub fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    utc_date(secs)
}

/// Civil date of a Unix time (Howard Hinnant's days-from-civil, inverted).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let rem = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

fn ms(q: Option<Quantiles>, pick: fn(&Quantiles) -> f64) -> String {
    q.map_or("-".into(), |q| format!("{:.1}", pick(&q)))
}

fn p50_ms(samples: &[Duration]) -> Option<f64> {
    Quantiles::of(samples).map(|q| q.p50)
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The Markdown report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Made by `{}` on {}, in {:.0} s. Re-run it to refresh this file; every figure below \
         comes from that one run.\n",
        r.command,
        m.date,
        r.total.as_secs_f64()
    );
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| CPU | {} ({} cores) |", m.cpu, m.cores);
    let _ = writeln!(o, "| Memory | {} MiB |", m.memory_mib);
    let _ = writeln!(o, "| Docker | {} |", m.docker);
    let _ = writeln!(o, "| Kernel | {} |", m.kernel);
    let _ = writeln!(
        o,
        "| Load average (1, 5, 15 min) at start | {} |",
        m.load_start
    );
    let _ = writeln!(o, "| Load average at end | {} |", m.load_end);
    let _ = writeln!(
        o,
        "| Other containers on the daemon at start | {} |\n",
        m.other_containers
    );
    let busy = m
        .load_start
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l >= 0.5)
        || m.other_containers > 0;
    if busy {
        let _ = writeln!(
            o,
            "Measured on a shared, busy machine (see the load and the other containers above): \
             other people's tests and benchmarks ran on the same cores and the same daemon, so \
             the tails (p90, p99) in particular are noisy.\n"
        );
    }

    let _ = writeln!(o, "## Latency: hello world, one run at a time\n");
    let _ = writeln!(
        o,
        "From submit to the first output byte and to completion (the engine's `Summary`; for \
         `docker run`, the client's exit), in ms, {} runs per row. The three paths take turns \
         run by run. **pool**: the engine with the language's pool, full before each run (every \
         run a pool hit). **fresh container**: the same engine code with no pool (every run \
         creates, attaches, starts and removes its container). **docker run**: `docker run --rm \
         -i` with the same limits and lock-down (`sandbox::container_config` turned into CLI \
         flags), the table's commands on a file fed through stdin (`sh -c 'cat > main.py && \
         exec python3.15 -u main.py'`).\n",
        r.runs
    );
    let _ = writeln!(
        o,
        "| Language | Path | Runs | First byte p50 | p90 | p99 | Completion p50 | p90 | p99 |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.languages {
        for path in Path::ALL {
            let Some(lat) = l.paths.get(&path) else {
                continue;
            };
            let (fb, done) = l.quantiles(path);
            let failed = if lat.failures.is_empty() {
                String::new()
            } else {
                format!(" ({} failed)", lat.failures.len())
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                l.id,
                path.label(),
                lat.completion.len(),
                failed,
                ms(fb, |q| q.p50),
                ms(fb, |q| q.p90),
                ms(fb, |q| q.p99),
                ms(done, |q| q.p50),
                ms(done, |q| q.p90),
                ms(done, |q| q.p99),
            );
        }
    }
    let _ = writeln!(o);
    let hits: Vec<String> = r
        .languages
        .iter()
        .map(|l| format!("{} {} hits / {} misses", l.id, l.pool_hits, l.pool_misses))
        .collect();
    let _ = writeln!(
        o,
        "Pool counters over the timed runs: {}.\n",
        hits.join(", ")
    );

    let _ = writeln!(o, "## Where the time goes on the pooled path\n");
    let _ = writeln!(
        o,
        "The pooled path by hand on the raw client, without the engine: a container made as the \
         pool makes it (create, attach, start, pause, 50 ms paused), then, from just before \
         unpause: the unpause call, the first output byte, the launcher's status trailer (the \
         program has exited and was reaped), the container removed (force). \"Program\" is the \
         run stage's wall time as the launcher measured it (interpreter start to exit). p50 in \
         ms. The engine starts the pool's refill when the run ends (or 300 ms after the claim), \
         so a short run has the machine to itself; the second row of each language makes a \
         container alongside (create, attach, start, pause) to show what overlapping with a \
         refill costs. The third row never pauses its container: the launcher waits blocked \
         on stdin, costing no CPU, and the run starts without an unpause. The last two \
         columns are the engine's pooled p50 minus this path's p50 (first byte, and \
         completion minus the status: the engine sends the `Summary` at the status and \
         removes the container after it): what the engine adds (admission, the claim, tasks \
         and channels).\n"
    );
    let _ = writeln!(
        o,
        "| Language | Container | Runs | Unpause | First byte | Status | Removed | Program | Engine first byte minus this | Engine completion minus this |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.languages {
        let (fb, done) = l.quantiles(Path::Pool);
        for (variant, b) in Variant::ALL.iter().zip(&l.breakdown) {
            let over = |engine: Option<Quantiles>, raw: &[Duration]| {
                cell(engine.zip(p50_ms(raw)).map(|(e, r)| e.p50 - r))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                l.id,
                variant.label(),
                b.removed.len(),
                if b.failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", b.failures.len())
                },
                cell(p50_ms(&b.unpause)),
                cell(p50_ms(&b.first_byte)),
                cell(p50_ms(&b.status)),
                cell(p50_ms(&b.removed)),
                cell(p50_ms(&b.program_wall)),
                over(fb, &b.first_byte),
                over(done, &b.status),
            );
        }
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Throughput\n");
    let _ = writeln!(
        o,
        "Completed CPython hello worlds per second through the engine (pool of {} on, at most \
         {} running, queue 1024), each caller submitting its next run when the last one ends, \
         {} s per level; next to it, the daemon's raw lifecycle capacity measured right after \
         with the same number of callers: create+start+wait+remove cycles per second of a \
         container of the same shape (`sandbox::container_config`, the python image, \
         `python3.15 -c pass`) through our raw client.\n",
        onpyrunner_images::find("python").map_or(0, |l| l.pool_size),
        CONCURRENCY.iter().max().unwrap_or(&0),
        r.seconds
    );
    let _ = writeln!(
        o,
        "| Callers | Engine runs/s | Runs (failed) | Pool hits / misses | Raw cycles/s | Cycles (failed) | Engine % of raw |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|");
    for t in &r.throughput {
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} ({}) | {} / {} | {:.1} | {} ({}) | {} |",
            t.callers,
            t.engine_rate(),
            t.engine_runs,
            t.engine_failed,
            t.pool_hits,
            t.pool_misses,
            t.raw_rate(),
            t.raw_cycles,
            t.raw_failed,
            t.percent().map_or("-".into(), |p| format!("{p:.0}%"))
        );
    }
    let _ = writeln!(o);

    let _ = writeln!(o, "## Supervisor memory\n");
    let pools: Vec<String> = r
        .memory
        .pools
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "VmRSS of the bench process, which is the supervisor (engine, pools, Docker client, \
         tokio runtime), from `/proc/self/status`.\n"
    );
    let _ = writeln!(o, "| When | VmRSS |\n|---|---:|");
    let _ = writeln!(
        o,
        "| Before the engine started | {:.1} MB |",
        kib_to_mb(r.memory.rss_before_kib)
    );
    let _ = writeln!(
        o,
        "| Every pool full ({}) | {:.1} MB |\n",
        pools.join(", "),
        kib_to_mb(r.memory.rss_full_kib)
    );

    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| Target | Measured | Met |\n|---|---|---|");
    let targets = r.targets();
    for t in &targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, met);
    }
    let _ = writeln!(o);
    let missed: Vec<&Target> = targets.iter().filter(|t| t.met == Some(false)).collect();
    if missed.is_empty() {
        let _ = writeln!(o, "Every measured target is met.\n");
    } else {
        let _ = writeln!(o, "### Why the missed targets are missed\n");
        for line in explain(r, &missed) {
            let _ = writeln!(o, "- {line}");
        }
        let _ = writeln!(o);
    }
    let failures: Vec<String> = r
        .languages
        .iter()
        .flat_map(|l| {
            let latency = l
                .paths
                .iter()
                .map(|(path, lat)| (path.label(), &lat.failures));
            let by_hand = Variant::ALL
                .iter()
                .zip(&l.breakdown)
                .map(|(v, b)| (v.label(), &b.failures));
            latency
                .chain(by_hand)
                .filter(|(_, f)| !f.is_empty())
                .map(move |(what, f)| {
                    format!("{} {what}: {} failed; the first: {}", l.id, f.len(), f[0])
                })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(o, "## Failed runs\n");
        let _ = writeln!(
            o,
            "Failed runs are left out of the figures above (the daemon restarting or \
             refusing under load shows up here).\n"
        );
        for f in failures {
            let _ = writeln!(o, "- {}", f.replace('\n', " "));
        }
        let _ = writeln!(o);
    }
    if !r.cut.is_empty() {
        let _ = writeln!(o, "## Cut short\n");
        for c in &r.cut {
            let _ = writeln!(o, "- {c}");
        }
        let _ = writeln!(o);
    }
    o
}

/// Why each missed target is missed, from this run's breakdown figures.
fn explain(r: &Report, missed: &[&Target]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut explained: Vec<&str> = Vec::new();
    for t in missed {
        let id = [
            ("CPython", "python"),
            ("PyPy", "pypy"),
            ("Node", "node"),
            ("Java", "java"),
        ]
        .iter()
        .find(|(prefix, _)| t.what.starts_with(prefix))
        .map(|(_, id)| *id);
        if let Some(id) = id {
            if !explained.contains(&id) {
                explained.push(id);
                let whats: Vec<&str> = missed
                    .iter()
                    .filter(|m| {
                        r.language(id)
                            .is_some_and(|l| m.what.starts_with(name_prefix(l)))
                    })
                    .map(|m| m.what.as_str())
                    .collect();
                lines.push(explain_language(r, id, &whats));
            }
        } else if t.what.starts_with("Sustained") {
            for row in &r.throughput {
                let Some(p) = row.percent().filter(|p| *p < THROUGHPUT_PERCENT) else {
                    continue;
                };
                lines.push(format!(
                    "Throughput at {} callers is {p:.0}% of the raw cycle rate ({:.1} vs {:.1} \
                     per second; {} pool hits, {} misses). An engine run costs the daemon more \
                     than a raw cycle: attach, pause and unpause on top of create, start, wait \
                     and remove, plus the output through the attach stream; with more callers \
                     than pooled containers most runs miss and make their container on the \
                     run's path, and the pool refills one container at a time. On 2 cores the \
                     daemon, containerd, the shims and the interpreters all share the same CPUs, \
                     so the extra API calls come straight out of the cycle rate.",
                    row.callers,
                    row.engine_rate(),
                    row.raw_rate(),
                    row.pool_hits,
                    row.pool_misses
                ));
            }
        } else if t.what.starts_with("Supervisor") {
            lines.push(format!(
                "Memory: {:.1} MB before the engine started and {:.1} MB with the pools full.",
                kib_to_mb(r.memory.rss_before_kib),
                kib_to_mb(r.memory.rss_full_kib)
            ));
        }
    }
    lines
}

/// How a language's targets begin ("CPython", "PyPy", "Node.js", "Java").
fn name_prefix(l: &LanguageReport) -> &'static str {
    match l.id.as_str() {
        "python" => "CPython",
        "pypy" => "PyPy",
        "node" => "Node",
        "java" => "Java",
        _ => "\0",
    }
}

fn explain_language(r: &Report, id: &str, whats: &[&str]) -> String {
    let Some(l) = r.language(id) else {
        return format!("{id}: not measured.");
    };
    let (fb, done) = l.quantiles(Path::Pool);
    let (fb, done) = (fb.map_or(0.0, |q| q.p50), done.map_or(0.0, |q| q.p50));
    let p = |b: &Breakdown| {
        Some((
            p50_ms(&b.unpause)?,
            p50_ms(&b.first_byte)?,
            p50_ms(&b.status)?,
            p50_ms(&b.removed)?,
            p50_ms(&b.program_wall)?,
        ))
    };
    let running = p(&l.breakdown[Variant::Running as usize]);
    let (Some(alone), Some(with)) = (
        p(&l.breakdown[Variant::Paused as usize]),
        p(&l.breakdown[Variant::PausedWithRefill as usize]),
    ) else {
        return format!(
            "{} ({}): no breakdown was measured.",
            l.name,
            whats.join("; ")
        );
    };
    let (unpause, first, status, removed, program) = alone;
    let mut text = format!(
        "**{}** ({}). The engine's pooled p50 is {fb:.0} ms to the first byte and {done:.0} ms \
         to completion (the `Summary`, sent at the launcher's status; the container is removed \
         after it). The same path by hand: unpause {unpause:.0} ms; first byte at {first:.0} \
         ms, so {:.0} ms pass inside the container between unpause and the first byte (the \
         launcher reads the frame, writes the file{}, starts the program, which prints); the \
         launcher's status at {status:.0} ms (the run stage took {program:.0} ms by the \
         launcher's clock); the forced removal after it takes {:.0} ms more. With a refill \
         alongside: first byte {:.0} ms and status {:.0} ms, so a refill competing for the 2 \
         cores would cost {:.0} ms and {:.0} ms. The engine itself adds {:.0} ms to the first \
         byte and {:.0} ms to completion.",
        l.name,
        whats.join("; "),
        first - unpause,
        if id == "java" { ", compiles it" } else { "" },
        removed - status,
        with.1,
        with.2,
        with.1 - first,
        with.2 - status,
        fb - first,
        done - status,
    );
    if let Some((_, first_running, _, _, _)) = running {
        let _ = write!(
            text,
            " A container kept running instead of paused (the launcher blocked on stdin) gives \
             the first byte at {first_running:.0} ms instead of {:.0} ms: the unpause is most \
             of the difference.",
            alone.1
        );
    }
    if id == "java" {
        if let Some(docker) = l.quantiles(Path::DockerRun).1 {
            let compile = first - unpause - program;
            let _ = write!(
                text,
                " Half of `docker run`'s {:.0} ms is {:.0} ms, but compiling with javac and \
                 starting the JVM twice (about {compile:.0} ms before the run stage even \
                 begins) is paid on both paths alike: the pool saves the container's start-up \
                 ({:.0} ms here), not the compiler.",
                docker.p50,
                docker.p50 * JAVA_RATIO,
                docker.p50 - done
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&ms(&[7]), 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
        let q = Quantiles::of(&ms(&[30, 10, 20])).unwrap();
        assert_eq!((q.p50, q.p90, q.p99), (20.0, 30.0, 30.0));
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc_date(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(951_782_400 + 3_661), "2000-02-29 01:01 UTC");
        assert_eq!(utc_date(1_767_225_600), "2026-01-01 00:00 UTC");
    }

    #[test]
    fn docker_run_has_the_sandbox_shape() {
        let lang = onpyrunner_images::find("java").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = Labels {
            owner: "bench-x-cli".into(),
            language: "java".into(),
            run: "r".into(),
            created_unix: 1,
        };
        let config = sandbox::container_config("img:tag", &limits, &labels, &[]);
        let args = docker_run_args(&config, &shell_command(lang));
        let text = args.join(" ");
        for want in [
            "run --rm -i --network none",
            "--read-only",
            "--user 1000:1000",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--memory 805306368b",
            "--memory-swap 805306368b",
            "--cpus 1",
            "--pids-limit 128",
            "--ulimit core=0:0",
            "--ulimit nofile=1024:1024",
            "--ipc private",
            "--init",
            "--log-driver none",
            "--label onpyrunner.owner=bench-x-cli",
            "--tmpfs /work:rw,exec,nosuid,nodev,size=128m",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        let image = args.iter().position(|a| a == "img:tag").unwrap();
        assert_eq!(args[image + 1..image + 3], ["sh", "-c"]);
        let script = &args[image + 3];
        assert!(
            script.starts_with("cat > 'Main.java' && 'javac' "),
            "{script}"
        );
        assert!(script.contains("'Main.java' && exec 'java' "), "{script}");
    }

    fn report(python_pool: (u64, u64), java: (u64, u64), raw: u64, rss_kib: u64) -> Report {
        let lang = |id: &str, pool: (u64, u64), docker: (u64, u64)| {
            let mut l = LanguageReport {
                id: id.into(),
                name: id.into(),
                ..LanguageReport::default()
            };
            for (path, (fb, done)) in [(Path::Pool, pool), (Path::DockerRun, docker)] {
                let lat = l.paths.entry(path).or_default();
                lat.first_byte = ms(&[fb]);
                lat.completion = ms(&[done]);
            }
            l
        };
        Report {
            languages: vec![
                lang("python", python_pool, (300, 400)),
                lang("java", java, (1000, 2000)),
            ],
            throughput: vec![ThroughputRow {
                callers: 4,
                engine_runs: 95,
                engine_secs: 10.0,
                raw_cycles: raw,
                raw_secs: 10.0,
                ..ThroughputRow::default()
            }],
            memory: Memory {
                rss_full_kib: rss_kib,
                ..Memory::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn targets_follow_the_figures() {
        let met: Vec<_> = report((20, 55), (500, 900), 100, 20_000)
            .targets()
            .into_iter()
            .map(|t| t.met)
            .collect();
        // python fb, python done, pypy, node, java, throughput, memory
        assert_eq!(
            met,
            [
                Some(true),
                Some(true),
                None,
                None,
                Some(true),
                Some(true),
                Some(true)
            ]
        );
        let met: Vec<_> = report((30, 61), (500, 1100), 200, 60_000)
            .targets()
            .into_iter()
            .map(|t| t.met)
            .collect();
        assert_eq!(
            met,
            [
                Some(false),
                Some(false),
                None,
                None,
                Some(false),
                Some(false),
                Some(false)
            ]
        );
        let text = render(&report((30, 61), (500, 1100), 200, 60_000));
        assert!(text.contains("## Targets"), "{text}");
        assert!(text.contains("| **no** |"), "{text}");
        assert!(text.contains("48% at 4"), "{text}");
    }
}

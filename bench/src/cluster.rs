//! `onpyrunner cluster-bench`: what a run pays for going through Redis, and the cluster's
//! throughput with one and with two workers, from one run.
//!
//! 1. Latency: a CPython hello world, one run at a time, through an engine of this process (the
//!    default path, no Redis) and through Redis: an API node ([`RedisRunner`]) queues it, a
//!    worker ([`Worker`], what `onpyrunner worker` runs) over a second engine takes it, and its
//!    events come back through Redis. The two paths take turns run by run and each pool is
//!    full before each run, so both are pool hits and the difference is the hop.
//! 2. Throughput: runs per second at each `--callers` level for `--seconds`: through the local
//!    engine, through Redis with one worker, and with two (the second on
//!    `--second-docker-host` when given, a daemon of its own with its own data root and socket).
//!
//! The workers run in this process, each with its own engine and Redis connections, over Redis
//! as any other node does: the queue and the hop are the ones of a cluster on loopback.
use crate::engines::{wait_full, Engines};
use crate::hello::hello_world;
use crate::machine::{load_average, utc_now};
use crate::paths::{engine_run, Sample};
use crate::plan::{progress, THROUGHPUT_LANGUAGE};
use crate::redis_server::RedisServer;
use crate::section::publish;
use crate::stats::{failures_note, Quantiles};
use crate::throughput::concurrently;
use anyhow::{bail, Context};
use clap::Args;
use onpyrunner_languages::{languages, Language};
use onpyrunner_supervisor::cluster::{Admission, ClusterConfig, RedisRunner, Worker};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{random_hex, RunSpec};
use onpyrunner_supervisor::runner::Runner;
use onpyrunner_supervisor::scheduler::Cost;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// Runs one engine (or one worker) executes at once, as `onpyrunner bench` measures throughput.
const MAX_RUNNING: usize = 8;
/// The throughput rows of the local engine, the baseline of the others.
const LOCAL: &str = "local engine, no Redis";

/// Measure the Redis hop and the cluster's throughput with one and two workers.
#[derive(Debug, Args)]
pub struct ClusterBenchArgs {
    /// The Redis to measure through (`redis://[:password@]host:port/`) [default: a
    /// redis-server of its own on a free loopback port, with a password, stopped at the end]
    #[arg(long, value_name = "URL")]
    pub redis: Option<String>,
    /// Docker daemon of the second worker, with the CPython image loaded
    /// (`scripts/second-dockerd.sh` starts one) [default: the first worker's daemon]
    #[arg(long, value_name = "HOST")]
    pub second_docker_host: Option<String>,
    /// Timed hello worlds per path [default: 100; 5 with --quick]
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Seconds of each throughput measurement [default: 20; 2 with --quick]
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
    /// Callers of the throughput measurement, comma-separated
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "4,8,16",
        value_name = "N"
    )]
    pub callers: Vec<usize>,
    /// Write the report into this Markdown file's `cluster` section instead of printing it
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    /// Few runs and short windows, for smoke tests
    #[arg(long)]
    pub quick: bool,
    /// Upper bound on the whole command; it stops by itself after this
    #[arg(long, value_name = "MINUTES", default_value_t = 20)]
    pub max_minutes: u64,
}

/// What one cluster bench measured.
#[derive(Debug, Default)]
struct Report {
    command: String,
    date: String,
    load_start: String,
    load_end: String,
    redis: String,
    second_daemon: Option<String>,
    local: Latency,
    redis_path: Latency,
    throughput: Vec<Row>,
    total: Duration,
}

#[derive(Debug, Default)]
struct Latency {
    first_byte: Vec<Duration>,
    completion: Vec<Duration>,
    failures: Vec<String>,
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

/// One throughput measurement.
#[derive(Debug)]
struct Row {
    setup: &'static str,
    callers: usize,
    ok: u64,
    failed: u64,
    secs: f64,
    /// Runs each engine executed (its pool's hits and misses), in order.
    per_engine: Vec<u64>,
}

impl Row {
    fn rate(&self) -> f64 {
        if self.secs > 0.0 {
            self.ok as f64 / self.secs
        } else {
            0.0
        }
    }
}

/// Run the cluster bench; `command` is the command line the report says it was made by. The
/// exit code is 1 if a run failed.
pub async fn run(docker: &Docker, args: ClusterBenchArgs, command: String) -> anyhow::Result<i32> {
    let runs = args.runs.unwrap_or(if args.quick { 5 } else { 100 });
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 20 });
    if runs == 0 || seconds == 0 || args.callers.contains(&0) || args.callers.is_empty() {
        bail!("--runs, --seconds and every --callers level must be at least 1");
    }
    let lang =
        onpyrunner_languages::find(THROUGHPUT_LANGUAGE).context("CPython is in the table")?;
    let second = match &args.second_docker_host {
        Some(host) => {
            let second = Docker::from_host(Some(host))?;
            second
                .ping()
                .await
                .with_context(|| format!("--second-docker-host {host} does not answer"))?;
            Some(second)
        }
        None => None,
    };
    for daemon in std::iter::once(docker).chain(second.as_ref()) {
        let image = images::image_ref(lang);
        if daemon.inspect_image(&image).await?.is_none() {
            bail!(
                "the CPython image {image} is missing on a daemon the bench uses ({}): build it \
                 with `onpyrunner images`, or load it with `scripts/second-dockerd.sh`",
                daemon.socket().display()
            );
        }
    }
    let own_redis = match &args.redis {
        Some(_) => None,
        None => Some(RedisServer::start().await?),
    };
    let url = match (&args.redis, &own_redis) {
        (Some(url), _) => url.clone(),
        (None, Some(own)) => own.url(),
        (None, None) => unreachable!("started above"),
    };
    let bench = ClusterBench {
        tag: random_hex(3),
        lang,
        runs,
        seconds,
        callers: args.callers.clone(),
        config: ClusterConfig::new(url, format!("bench-{}", random_hex(3))),
        docker: docker.clone(),
        second,
    };
    let mut report = Report {
        command,
        date: utc_now(),
        load_start: load_average(),
        redis: if own_redis.is_some() {
            "a redis-server of its own on loopback (no persistence)".into()
        } else {
            "the one given by --redis".into()
        },
        second_daemon: args.second_docker_host.clone(),
        ..Report::default()
    };
    let started = Instant::now();
    let parts = Parts::default();
    let bound = Duration::from_secs(args.max_minutes.max(1) * 60);
    let measured = tokio::select! {
        r = tokio::time::timeout(bound, bench.measure(&mut report, &parts)) => {
            r.unwrap_or_else(|_| bail!("not done within --max-minutes {}", args.max_minutes))
        }
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress("shutting down the API node, the workers and the engines");
    parts.shutdown().await;
    drop(own_redis);
    measured?;
    report.total = started.elapsed();
    report.load_end = load_average();
    publish("cluster", args.write.as_deref(), &render(&report))?;
    let failed = !report.local.failures.is_empty()
        || !report.redis_path.failures.is_empty()
        || report.throughput.iter().any(|r| r.failed > 0);
    Ok(i32::from(failed))
}

struct ClusterBench {
    tag: String,
    lang: &'static Language,
    runs: usize,
    seconds: u64,
    callers: Vec<usize>,
    config: ClusterConfig,
    docker: Docker,
    second: Option<Docker>,
}

/// What the bench started, shut down on every path.
#[derive(Default)]
struct Parts {
    engines: Engines,
    workers: tokio::sync::Mutex<Vec<Worker>>,
    api: tokio::sync::Mutex<Option<RedisRunner>>,
}

impl Parts {
    async fn shutdown(&self) {
        if let Some(api) = self.api.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(30), api.shutdown()).await;
        }
        for worker in std::mem::take(&mut *self.workers.lock().await) {
            let _ = tokio::time::timeout(Duration::from_secs(60), worker.shutdown()).await;
        }
        self.engines.shutdown().await;
    }
}

impl ClusterBench {
    /// An engine with only the measured language's pool, at its table size.
    fn engine_config(&self, what: &str) -> EngineConfig {
        EngineConfig {
            instance: format!("bench-{}-{what}", self.tag),
            pool_sizes: languages()
                .iter()
                .map(|l| {
                    (
                        l.id.clone(),
                        if l.id == self.lang.id { l.pool_size } else { 0 },
                    )
                })
                .collect(),
            max_running: MAX_RUNNING,
            max_queued: 1024,
            // As `onpyrunner bench`'s throughput: the daemon, not the admission budget, bounds it.
            budget: Cost::UNLIMITED,
            ..EngineConfig::default()
        }
    }

    /// A worker over an engine of its own on `docker`, taking jobs from the bench's Redis.
    async fn worker(&self, parts: &Parts, docker: &Docker, what: &str) -> anyhow::Result<Engine> {
        let engine = parts
            .engines
            .start(docker, self.engine_config(what))
            .await?;
        let worker = Worker::start(engine.clone(), &self.config)
            .await
            .with_context(|| format!("worker {what} did not start"))?;
        parts.workers.lock().await.push(worker);
        Ok(engine)
    }

    fn spec(&self) -> RunSpec {
        RunSpec::single(
            self.lang,
            hello_world(self.lang),
            Limits::defaults(self.lang, &Caps::default()),
        )
    }

    async fn measure(&self, report: &mut Report, parts: &Parts) -> anyhow::Result<()> {
        let local = parts
            .engines
            .start(&self.docker, self.engine_config("local"))
            .await?;
        let first = self.worker(parts, &self.docker, "worker-1").await?;
        let api = RedisRunner::connect(&self.config, Admission::new(1024, 1024), None)
            .await
            .context("the API node did not connect to Redis")?;
        *parts.api.lock().await = Some(api.clone());
        progress("filling the pools");
        wait_full(&local, None).await?;
        wait_full(&first, None).await?;

        let spec = self.spec();
        progress("latency: 3 warm-up runs per path");
        for _ in 0..3 {
            let _ = engine_run(&local, spec.clone()).await;
            let _ = engine_run(&api, spec.clone()).await;
        }
        for i in 0..self.runs {
            if i % 20 == 0 {
                progress(&format!("latency: run {}/{}", i + 1, self.runs));
            }
            wait_full(&local, None).await?;
            wait_full(&first, None).await?;
            report.local.add(engine_run(&local, spec.clone()).await);
            wait_full(&local, None).await?;
            wait_full(&first, None).await?;
            report.redis_path.add(engine_run(&api, spec.clone()).await);
        }

        // Local and one worker take turns level by level, so that a busy moment of the machine
        // hits both alike; two workers come after (the second one, once started, takes jobs).
        for &callers in &self.callers {
            self.through(report, &local, &[&local], callers, LOCAL)
                .await?;
            self.through(report, &api, &[&first], callers, "Redis, 1 worker")
                .await?;
        }
        // The local engine's pool is not wanted any more: its containers would take the
        // daemon's time from the workers.
        local.shutdown().await;
        let second_daemon = self.second.as_ref().unwrap_or(&self.docker);
        let second = self.worker(parts, second_daemon, "worker-2").await?;
        for &callers in &self.callers {
            self.through(
                report,
                &api,
                &[&first, &second],
                callers,
                "Redis, 2 workers",
            )
            .await?;
        }
        Ok(())
    }

    /// Runs per second from `callers` callers through `runner`, with `engines` executing them
    /// (their pools full at the start).
    async fn through<R: Runner + Clone>(
        &self,
        report: &mut Report,
        runner: &R,
        engines: &[&Engine],
        callers: usize,
        setup: &'static str,
    ) -> anyhow::Result<()> {
        for engine in engines {
            wait_full(engine, None).await?;
        }
        progress(&format!("throughput: {setup}, {callers} callers"));
        let executed = |engine: &Engine| {
            engine.pools().get(&self.lang.id).map_or(0, |pool| {
                let stats = pool.stats();
                stats.hits.load(Ordering::Relaxed) + stats.misses.load(Ordering::Relaxed)
            })
        };
        let before: Vec<u64> = engines.iter().map(|e| executed(e)).collect();
        let spec = self.spec();
        let (ok, failed, secs) = concurrently(callers, Duration::from_secs(self.seconds), || {
            let (runner, spec) = (runner.clone(), spec.clone());
            async move { engine_run(&runner, spec).await.map(drop) }
        })
        .await;
        report.throughput.push(Row {
            setup,
            callers,
            ok,
            failed,
            secs,
            per_engine: engines
                .iter()
                .zip(before)
                .map(|(e, b)| executed(e) - b)
                .collect(),
        });
        Ok(())
    }
}

fn render(r: &Report) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "## Cluster: the Redis hop, one worker and two\n");
    let _ = writeln!(
        o,
        "Made by `{}` on {}, in {:.0} s, through {}. Load average at start {}, at end {}.\n",
        r.command,
        r.date,
        r.total.as_secs_f64(),
        r.redis,
        r.load_start,
        r.load_end
    );
    let _ = writeln!(
        o,
        "**Latency.** A CPython hello world, one run at a time, in ms. **local**: an engine in \
         the bench's process (the default path, no Redis). **through Redis**: an API node \
         (`RedisRunner`) queues the run in Redis, a worker (`Worker`, as `onpyrunner worker` \
         runs it) over an engine of its own takes it, and its events come back through Redis. \
         The two take turns run by run; both pools are full before every run, so both are \
         pool hits and the difference is the hop.\n"
    );
    let _ = writeln!(
        o,
        "| Path | Runs | First byte p50 | p90 | p99 | Completion p50 | p90 | p99 |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|"
    );
    for (label, l) in [("local", &r.local), ("through Redis", &r.redis_path)] {
        let (f, c) = (Quantiles::of(&l.first_byte), Quantiles::of(&l.completion));
        let q = |q: Option<Quantiles>, pick: fn(&Quantiles) -> f64| {
            q.map_or("-".to_string(), |q| format!("{:.1}", pick(&q)))
        };
        let _ = writeln!(
            o,
            "| {label}{} | {} | {} | {} | {} | {} | {} | {} |",
            failures_note(&l.failures),
            l.completion.len(),
            q(f, |q| q.p50),
            q(f, |q| q.p90),
            q(f, |q| q.p99),
            q(c, |q| q.p50),
            q(c, |q| q.p90),
            q(c, |q| q.p99),
        );
    }
    if let (Some(local), Some(redis)) = (
        Quantiles::of(&r.local.completion),
        Quantiles::of(&r.redis_path.completion),
    ) {
        let _ = writeln!(
            o,
            "\nThe hop costs {:+.1} ms at p50 and {:+.1} ms at p99 of completion ({:.2}x and \
             {:.2}x the local figures).\n",
            redis.p50 - local.p50,
            redis.p99 - local.p99,
            redis.p50 / local.p50,
            redis.p99 / local.p99
        );
    }
    let second = match &r.second_daemon {
        Some(host) => format!(
            "the second worker's engine is on a second Docker daemon ({host}: its own data \
             root, exec root, containerd and socket, started by `scripts/second-dockerd.sh`)"
        ),
        None => "both workers' engines are on the same Docker daemon (no \
                 --second-docker-host)"
            .to_string(),
    };
    let _ = writeln!(
        o,
        "**Throughput.** Completed hello worlds per second for {} s per row, each caller \
         submitting its next run when the last one ended. Every engine has a CPython pool of \
         its table size and runs at most {MAX_RUNNING} at once (the last column: how many runs each \
         engine executed, from its pool's counters); {second}. On this machine all \
         of them share the same 2 cores, so the second worker adds a daemon's and an engine's \
         parallelism, not a machine's CPU: the figure shows what the queue costs and whether \
         runs spread over the workers, not what a second machine would add.\n",
        r.throughput
            .first()
            .map_or(0, |row| row.secs.round() as u64)
    );
    let _ = writeln!(
        o,
        "| Setup | Callers | Runs | Failed | Runs/s | vs local | Executed by each engine |\n\
         |---|---:|---:|---:|---:|---:|---|"
    );
    for row in &r.throughput {
        let local = r
            .throughput
            .iter()
            .find(|l| l.setup == LOCAL && l.callers == row.callers)
            .map(Row::rate)
            .filter(|&rate| rate > 0.0);
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {:.1} | {} | {} |",
            row.setup,
            row.callers,
            row.ok,
            row.failed,
            row.rate(),
            local.map_or("-".into(), |l| format!("{:.2}x", row.rate() / l)),
            row.per_engine
                .iter()
                .map(u64::to_string)
                .collect::<Vec<_>>()
                .join(" / ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_compares_each_setup_with_local() {
        let ms = |v: &[u64]| v.iter().map(|&m| Duration::from_millis(m)).collect();
        let report = Report {
            command: "onpyrunner cluster-bench".into(),
            local: Latency {
                first_byte: ms(&[10, 10]),
                completion: ms(&[20, 20]),
                failures: vec![],
            },
            redis_path: Latency {
                first_byte: ms(&[12, 14]),
                completion: ms(&[25, 30]),
                failures: vec!["no summary".into()],
            },
            throughput: vec![
                Row {
                    setup: LOCAL,
                    callers: 8,
                    ok: 100,
                    failed: 0,
                    secs: 10.0,
                    per_engine: vec![100],
                },
                Row {
                    setup: "Redis, 2 workers",
                    callers: 8,
                    ok: 150,
                    failed: 1,
                    secs: 10.0,
                    per_engine: vec![90, 61],
                },
            ],
            ..Report::default()
        };
        let text = render(&report);
        assert!(text.contains("| local | 2 | 10.0 |"), "{text}");
        assert!(
            text.contains("| through Redis (1 failed: no summary) | 2 | 12.0 |"),
            "{text}"
        );
        assert!(
            text.contains("costs +5.0 ms at p50 and +10.0 ms at p99"),
            "{text}"
        );
        assert!(
            text.contains("| Redis, 2 workers | 8 | 150 | 1 | 15.0 | 1.50x | 90 / 61 |"),
            "{text}"
        );
        assert!(text.contains("same Docker daemon"), "{text}");
    }
}

//! Command-line interface: `onpyrunner serve`, `run`, `images`, `languages`, `bench`, `load`,
//! `attack`.
use crate::proxies::TrustedProxies;
use crate::quota::{QuotaConfig, Rate};
use crate::server::ServerConfig;
use crate::tokens::Tokens;
use anyhow::{bail, Context};
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use onpyrunner_languages::{languages, Language};
use onpyrunner_protocol::{Event, OutputStream, Reason, SourceFile, Summary};
use onpyrunner_supervisor::cluster::ClusterConfig;
use onpyrunner_supervisor::container;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::EngineConfig;
use onpyrunner_supervisor::images::{self, BuildOptions, Built};
use onpyrunner_supervisor::limits::{Caps, LimitRequest, Limits};
use onpyrunner_supervisor::run::{self, Maker, Placement, RunSpec};
use onpyrunner_supervisor::scheduler::Cost;
use onpyrunner_supervisor::uids::{UidRange, Uids};
use std::io::Write;
use std::path::PathBuf;
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;

/// A fast, safe online code runner: every run gets its own fresh, locked-down container.
#[derive(Debug, Parser)]
#[command(name = "onpyrunner", version, propagate_version = true)]
pub struct Cli {
    /// Docker daemon socket (unix:///path or /path) [default: /var/run/docker.sock]
    #[arg(long, global = true, env = "DOCKER_HOST", value_name = "URL")]
    pub docker_host: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once at start; boxing would only obscure the arguments"
)]
pub enum Command {
    /// Run a program in a fresh sandbox; its stdout, stderr and exit code become this command's.
    ///
    /// Standard input is passed through to the program. The first FILE is saved under the
    /// language's entry name (main.py, main.js, Main.java); further files keep their names.
    Run(RunArgs),
    /// List the language images and build the missing ones (Debian sid, via debootstrap).
    Images(ImagesArgs),
    /// List the languages this build knows.
    Languages,
    /// Serve the HTTP API (and the IDE) until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Execute runs queued in Redis (`--redis`, required) by `serve --redis` nodes, on this
    /// machine's Docker daemon, until SIGTERM or SIGINT. Takes serve's engine flags (--instance,
    /// --pool, --max-running, --run-uids...); the HTTP ones are unused.
    Worker(Box<ServeArgs>),
    /// Measure latency, throughput and memory against the real daemon; print a Markdown report.
    ///
    /// Hello world per language through the pool, through a fresh container and through
    /// `docker run`; runs per second at 1, 4 and 8 callers next to the daemon's raw lifecycle
    /// rate; the supervisor's memory with the pools full; and which targets are met.
    Bench(onpyrunner_bench::bench::BenchArgs),
    /// Measure what a run pays for going through Redis (hello world p50/p99, local against
    /// Redis, run by run) and the cluster's throughput with one and with two workers.
    ///
    /// Starts a redis-server of its own on loopback unless --redis is given; the workers run in
    /// this process, the second on --second-docker-host when given. Prints Markdown (or writes
    /// the `cluster` section of --write FILE). Exits 1 if a run failed.
    ClusterBench(onpyrunner_bench::cluster::ClusterBenchArgs),
    /// Load-test the service over WebSockets on loopback: many clients running a hello world at
    /// once, then many idle connections held; latency and the server's memory, in Markdown.
    ///
    /// Starts `onpyrunner serve` itself (on a free loopback port) and stops it at the end. Bounded
    /// in count (--clients, --idle) and time (--max-seconds). Exits 1 if a client was lost.
    Load(onpyrunner_bench::load::LoadArgs),
    /// Time a well-behaved client's hello world on loopback with no attack, among 2000 slow
    /// connections (slowloris), and among those and a flood of 1000 runs from one address.
    ///
    /// Starts `onpyrunner serve` itself (on a free loopback port) with its bounds at their
    /// defaults; each kind of client binds its own loopback address (127.0.0.2, .3, .10 and on).
    /// Prints p50/p90/p99 next to the unattacked ones, what the attackers got and the server's
    /// memory. Bounded in time (--phase-seconds, --max-seconds). Exits 1 if a well-behaved run
    /// failed.
    Attack(onpyrunner_bench::attack::AttackArgs),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(
        long,
        env = "ONPYRUNNER_LISTEN",
        default_value = "127.0.0.1:8080",
        value_name = "ADDR"
    )]
    pub listen: std::net::SocketAddr,
    /// This supervisor's name on the Docker daemon ([a-z0-9-]); at start-up it removes every
    /// container an earlier run of the same name left. Supervisors sharing a daemon need
    /// distinct names.
    #[arg(
        long,
        env = "ONPYRUNNER_INSTANCE",
        default_value = "local",
        value_name = "NAME"
    )]
    pub instance: String,
    /// A language's pool (repeatable): LANG=N pins it at N containers whatever the demand
    /// (0: no pool); LANG=MIN-MAX lets it follow demand between MIN and MAX. By default a pool
    /// starts at the table's size, grows when runs find it empty and shrinks when idle,
    /// between 1 and 8
    #[arg(
        long = "pool",
        env = "ONPYRUNNER_POOL",
        value_delimiter = ',',
        value_name = "LANG=N|LANG=MIN-MAX"
    )]
    pub pools: Vec<String>,
    /// MiB the pools may hold together, each pooled container counted at its language's
    /// memory limit; a pool that must grow beyond it takes room from idle pools above their
    /// floor [default: a quarter of the machine's memory]
    #[arg(long, env = "ONPYRUNNER_POOL_MEMORY_MIB", value_name = "MIB")]
    pub pool_memory_mib: Option<u64>,
    /// Seconds without a miss after which a pool shrinks by one container (and again for each
    /// further period), down to its floor
    #[arg(
        long,
        env = "ONPYRUNNER_POOL_IDLE_SECONDS",
        default_value_t = 60,
        value_name = "SECONDS"
    )]
    pub pool_idle_seconds: u64,
    /// Runs executing at once [default: the number of CPUs]
    #[arg(long, env = "ONPYRUNNER_MAX_RUNNING", value_name = "N")]
    pub max_running: Option<usize>,
    /// Runs waiting for a slot; beyond this, requests get 429 with Retry-After [default: 64 per
    /// running slot]
    #[arg(long, env = "ONPYRUNNER_MAX_QUEUED", value_name = "N")]
    pub max_queued: Option<usize>,
    /// Runs one client (its address, an IPv6 one by its /64, or its API token) may have
    /// waiting or running at once; beyond this, 429 naming `client` [default: 16 more than the
    /// running slots]. A token may set its own. Behind a reverse proxy every client has the
    /// proxy's address unless the proxy is in --trusted-proxies
    #[arg(long, env = "ONPYRUNNER_MAX_RUNS_PER_CLIENT", value_name = "N")]
    pub max_runs_per_client: Option<usize>,
    /// Runs one client may start a minute (REST runs and jobs, WebSocket runs), sustained;
    /// beyond it, 429 with Retry-After naming `runs_per_minute`. 0: no limit. A token may set
    /// its own
    #[arg(
        long,
        env = "ONPYRUNNER_RUNS_PER_MINUTE",
        default_value_t = 120,
        value_name = "N"
    )]
    pub runs_per_minute: u32,
    /// Runs one client may start at once before --runs-per-minute paces it
    #[arg(
        long,
        env = "ONPYRUNNER_RUNS_BURST",
        default_value_t = 30,
        value_name = "N"
    )]
    pub runs_burst: u32,
    /// WebSockets one client may hold open; beyond it the upgrade gets 429 naming `websockets`.
    /// A token may set its own
    #[arg(
        long,
        env = "ONPYRUNNER_MAX_WEBSOCKETS_PER_CLIENT",
        default_value_t = 8,
        value_name = "N"
    )]
    pub max_websockets_per_client: usize,
    /// API tokens, a TOML file (see docs/protocol.md, "Authentication"). With it, starting or
    /// following runs needs a valid token (else 401), and a token's client is its name, with
    /// the token's quotas; reread on SIGHUP. Without it the service is open and clients are
    /// told apart by address
    #[arg(long, env = "ONPYRUNNER_TOKENS", value_name = "FILE")]
    pub tokens: Option<PathBuf>,
    /// Reverse proxies (addresses or CIDR ranges, comma-separated) whose X-Forwarded-For names
    /// the client; from any other peer the header is ignored [default: none]
    #[arg(
        long,
        env = "ONPYRUNNER_TRUSTED_PROXIES",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub trusted_proxies: Vec<String>,
    /// Runs one client may have executing at once; its further runs wait while other clients'
    /// runs go ahead [default: no cap beyond the running slots; waiting clients take turns]
    #[arg(long, env = "ONPYRUNNER_MAX_RUNNING_PER_CLIENT", value_name = "N")]
    pub max_running_per_client: Option<usize>,
    /// CPUs that running runs' CPU quotas may add up to: a run that does not fit waits, even
    /// with a slot free. Raise it with --max-running above the CPU count [default: the CPUs
    /// this process may use]
    #[arg(long, env = "ONPYRUNNER_CPU_BUDGET", value_name = "CPUS")]
    pub cpu_budget: Option<f64>,
    /// MiB that running runs' memory limits may add up to [default: three quarters of the
    /// machine's memory]
    #[arg(long, env = "ONPYRUNNER_MEMORY_BUDGET_MIB", value_name = "MIB")]
    pub memory_budget_mib: Option<u64>,
    /// Seconds a shutdown waits for runs to end before removing what is left
    #[arg(
        long,
        env = "ONPYRUNNER_SHUTDOWN_GRACE",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    pub shutdown_grace: u64,
    /// Jobs kept in memory at most
    #[arg(
        long,
        env = "ONPYRUNNER_JOBS_MAX",
        default_value_t = 1000,
        value_name = "N"
    )]
    pub jobs_max: usize,
    /// Seconds a finished job is kept
    #[arg(
        long,
        env = "ONPYRUNNER_JOBS_TTL",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub jobs_ttl: u64,
    /// MiB of output kept by ended jobs at most; beyond it the oldest go before their TTL
    #[arg(
        long,
        env = "ONPYRUNNER_JOBS_MAX_MIB",
        default_value_t = 256,
        value_name = "MIB"
    )]
    pub jobs_max_mib: usize,
    /// Origins a browser may open the WebSocket from, comma-separated (`*`: any)
    /// [default: the server's own origin]
    #[arg(
        long,
        env = "ONPYRUNNER_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_name = "URL"
    )]
    pub allowed_origins: Vec<String>,
    /// Milliseconds between WebSocket pings; a client silent for 3 of them is dropped (its
    /// run waits --resume-grace-ms to be resumed)
    #[arg(
        long,
        env = "ONPYRUNNER_WS_PING_MS",
        default_value_t = 2000,
        value_name = "MS"
    )]
    pub ws_ping_ms: u64,
    /// Milliseconds a WebSocket run whose connection was lost goes on, waiting to be resumed,
    /// before it is killed
    #[arg(
        long,
        env = "ONPYRUNNER_RESUME_GRACE_MS",
        default_value_t = 60_000,
        value_name = "MS"
    )]
    pub resume_grace_ms: u64,
    /// MiB that ended runs kept for resuming may hold together (their output); past it the
    /// oldest are forgotten before their grace is up
    #[arg(
        long,
        env = "ONPYRUNNER_RESUME_MAX_MIB",
        default_value_t = 256,
        value_name = "MIB"
    )]
    pub resume_max_mib: u64,
    /// Host names the server answers to besides the loopback names and the listen address
    /// (requests naming another host get 421: DNS rebinding); with --listen 0.0.0.0 and no
    /// names, any
    #[arg(
        long,
        env = "ONPYRUNNER_ALLOWED_HOSTS",
        value_delimiter = ',',
        value_name = "NAME"
    )]
    pub allowed_hosts: Vec<String>,
    /// Seconds a connection may take to send a request's headers (also between requests on a
    /// kept-alive connection)
    #[arg(
        long,
        env = "ONPYRUNNER_HEADER_TIMEOUT",
        default_value_t = 10,
        value_name = "S"
    )]
    pub header_timeout: u64,
    /// Let requests raise their limits above the language's defaults, up to the server's caps
    /// (by default a request may only lower them)
    #[arg(long, env = "ONPYRUNNER_ALLOW_RAISED_LIMITS")]
    pub allow_raised_limits: bool,
    /// Start even if the Docker daemon says it would not enforce seccomp, memory, swap, pids
    /// or CPU limits (refused by default, saying what is missing)
    #[arg(long, env = "ONPYRUNNER_ALLOW_WEAK_DAEMON")]
    pub allow_weak_daemon: bool,
    /// Uids the containers run as, START-END: each live container (running or pooled) has one
    /// of its own, so per-user kernel counters (RLIMIT_NPROC, inotify instances) are not
    /// shared between runs. Must hold at least --max-running plus all pooled containers;
    /// supervisors sharing a daemon should have ranges of their own
    #[arg(
        long,
        env = "ONPYRUNNER_RUN_UIDS",
        default_value_t = UidRange::DEFAULT,
        value_name = "START-END"
    )]
    pub run_uids: UidRange,
    /// OCI runtime the containers run under, by its name in the Docker daemon's configuration
    /// (e.g. runsc, for gVisor), for every language (NAME) or one (LANG=NAME, over the language
    /// table's `runtime`); repeatable. It must be registered with the daemon [default: the
    /// daemon's default, runc]
    #[arg(
        long = "runtime",
        env = "ONPYRUNNER_RUNTIME",
        value_delimiter = ',',
        value_name = "[LANG=]NAME"
    )]
    pub runtimes: Vec<String>,
    /// Hosts a Judge0 submission's `callback_url` may name, comma-separated (`host` or
    /// `host:port`; http only). A name must resolve to public addresses; to call a loopback or
    /// private address, name the address itself. [default: none: callbacks are refused]
    #[arg(
        long,
        env = "ONPYRUNNER_JUDGE0_CALLBACK_HOSTS",
        value_delimiter = ',',
        value_name = "HOST[:PORT]"
    )]
    pub judge0_callback_hosts: Vec<String>,
    /// HTTP connections open at once, in all
    #[arg(
        long,
        env = "ONPYRUNNER_MAX_CONNECTIONS",
        default_value_t = 4096,
        value_name = "N"
    )]
    pub max_connections: usize,
    /// HTTP connections open at once from one address
    #[arg(
        long,
        env = "ONPYRUNNER_MAX_CONNECTIONS_PER_ADDRESS",
        default_value_t = 512,
        value_name = "N"
    )]
    pub max_connections_per_address: usize,
    /// Redis to share runs through, redis://:PASSWORD@HOST:PORT/ (see docs/deploy.md): runs are
    /// queued there and executed by worker nodes (`onpyrunner worker`), this one included
    /// unless --no-worker. Without it, runs execute in this process
    #[arg(
        long,
        env = "ONPYRUNNER_REDIS",
        hide_env_values = true,
        value_name = "URL"
    )]
    pub redis: Option<String>,
    /// The prefix of every Redis key, so that clusters can share a server ([A-Za-z0-9._-])
    #[arg(
        long,
        env = "ONPYRUNNER_REDIS_PREFIX",
        default_value = "onpyrunner",
        value_name = "PREFIX"
    )]
    pub redis_prefix: String,
    /// Seconds a run's events stay in Redis after it ended (a client may resume from any
    /// node until then)
    #[arg(
        long,
        env = "ONPYRUNNER_REDIS_RUN_TTL",
        default_value_t = 600,
        value_name = "SECONDS"
    )]
    pub redis_run_ttl: u64,
    /// With --redis: only queue runs, execute none here (no Docker needed)
    #[arg(long, env = "ONPYRUNNER_NO_WORKER", requires = "redis")]
    pub no_worker: bool,
}

impl ServeArgs {
    /// The server configuration; errors name the flag.
    pub fn config(&self, docker_host: Option<String>) -> anyhow::Result<ServerConfig> {
        let mut engine = EngineConfig {
            instance: self.instance.clone(),
            shutdown_grace: std::time::Duration::from_secs(self.shutdown_grace),
            ..EngineConfig::default()
        };
        engine.caps.raise = self.allow_raised_limits;
        engine.allow_weak_daemon = self.allow_weak_daemon;
        engine.retained_max_bytes = self.resume_max_mib.saturating_mul(1024 * 1024);
        engine.run_uids = self.run_uids;
        for runtime in &self.runtimes {
            let (lang, name) = match runtime.split_once('=') {
                Some((lang, name)) => (Some(lang), name),
                None => (None, runtime.as_str()),
            };
            if !onpyrunner_languages::valid_runtime_name(name) {
                bail!("--runtime {runtime:?}: a runtime name is [A-Za-z0-9._-]+, e.g. runsc");
            }
            match lang {
                Some(lang) => {
                    find_language(lang).with_context(|| format!("--runtime {runtime:?}"))?;
                    engine.runtimes.insert(lang.to_string(), name.to_string());
                }
                None => engine.runtime = Some(name.to_string()),
            }
        }
        if let Some(n) = self.max_running {
            if n == 0 {
                bail!("--max-running must be at least 1");
            }
            engine.max_running = n;
            engine.max_queued = 64 * n;
        }
        if let Some(n) = self.max_queued {
            engine.max_queued = n;
        }
        engine.max_per_client = match self.max_runs_per_client {
            Some(0) => bail!("--max-runs-per-client must be at least 1"),
            Some(n) => n,
            None => engine.max_running + 16,
        };
        engine.max_running_per_client = match self.max_running_per_client {
            Some(0) => bail!("--max-running-per-client must be at least 1"),
            other => other,
        };
        if let Some(cpus) = self.cpu_budget {
            if !(cpus.is_finite() && cpus >= 0.1) {
                bail!("--cpu-budget must be at least 0.1 CPUs");
            }
            engine.budget.millicpus = Cost::of_cpus(cpus);
        }
        if let Some(mib) = self.memory_budget_mib {
            if mib < 32 {
                bail!("--memory-budget-mib must be at least 32");
            }
            engine.budget.memory_mib = mib;
        }
        for pool in &self.pools {
            let Some((lang, size)) = pool.split_once('=') else {
                bail!(
                    "--pool {pool:?}: expected LANG=N or LANG=MIN-MAX, e.g. python=4 or java=1-6"
                );
            };
            find_language(lang).with_context(|| format!("--pool {pool:?}"))?;
            let number = |n: &str| -> anyhow::Result<usize> {
                n.parse().with_context(|| {
                    format!("--pool {pool:?}: sizes must be whole numbers, e.g. java=1-6")
                })
            };
            match size.split_once('-') {
                Some((min, max)) => {
                    let (min, max) = (number(min)?, number(max)?);
                    if min > max {
                        bail!("--pool {pool:?}: MIN must not be above MAX");
                    }
                    engine.pool_ranges.insert(
                        lang.to_string(),
                        onpyrunner_supervisor::pool_sizing::SizeRange::following(min, min, max),
                    );
                    engine.pool_sizes.remove(lang);
                }
                None => {
                    engine.pool_sizes.insert(lang.to_string(), number(size)?);
                    engine.pool_ranges.remove(lang);
                }
            }
        }
        if let Some(mib) = self.pool_memory_mib {
            engine.pool_memory_mib = mib;
        }
        if self.pool_idle_seconds == 0 {
            bail!("--pool-idle-seconds must be at least 1");
        }
        engine.pool_idle = std::time::Duration::from_secs(self.pool_idle_seconds);
        if self.runs_per_minute > 0 && self.runs_burst == 0 {
            bail!("--runs-burst must be at least 1 (or --runs-per-minute 0 for no limit)");
        }
        if self.max_websockets_per_client == 0 {
            bail!("--max-websockets-per-client must be at least 1");
        }
        let trusted_proxies = TrustedProxies::parse(&self.trusted_proxies)
            .map_err(|e| anyhow::anyhow!("--trusted-proxies {e}"))?;
        let tokens = match &self.tokens {
            Some(path) => {
                let tokens = Tokens::load(path).context("--tokens")?;
                Some((path.clone(), tokens))
            }
            None => None,
        };
        let needed = engine.max_running + engine.pooled();
        if self.run_uids.len() < needed {
            bail!(
                "--run-uids {}: holds {} uids; --max-running ({}) plus the pooled containers ({}) need {needed}",
                self.run_uids,
                self.run_uids.len(),
                engine.max_running,
                engine.pooled()
            );
        }
        if self.ws_ping_ms < 100 {
            bail!("--ws-ping-ms must be at least 100");
        }
        if !onpyrunner_supervisor::engine::valid_instance(&self.instance) {
            bail!(
                "--instance {:?}: 1 to 40 characters of [a-z0-9-]",
                self.instance
            );
        }
        let judge0_callbacks =
            crate::judge0::callback::Callbacks::parse(&self.judge0_callback_hosts)
                .map_err(|e| anyhow::anyhow!("--judge0-callback-hosts: {e}"))?;
        let cluster = match &self.redis {
            Some(url) => {
                if !onpyrunner_supervisor::cluster::wire::valid_prefix(&self.redis_prefix) {
                    bail!(
                        "--redis-prefix {:?}: 1 to 64 characters of [A-Za-z0-9._-]",
                        self.redis_prefix
                    );
                }
                if self.redis_run_ttl == 0 {
                    bail!("--redis-run-ttl must be at least 1");
                }
                let mut cluster = ClusterConfig::new(url.clone(), self.redis_prefix.clone());
                cluster.run_ttl = std::time::Duration::from_secs(self.redis_run_ttl);
                Some(cluster)
            }
            None => None,
        };
        Ok(ServerConfig {
            judge0_callbacks,
            cluster,
            worker: !self.no_worker,
            listen: self.listen,
            docker_host,
            engine,
            jobs_max: self.jobs_max,
            jobs_ttl: std::time::Duration::from_secs(self.jobs_ttl),
            jobs_max_bytes: self.jobs_max_mib.saturating_mul(1024 * 1024),
            allowed_hosts: self.allowed_hosts.clone(),
            tokens,
            trusted_proxies,
            quotas: QuotaConfig {
                runs: Rate {
                    per_minute: self.runs_per_minute,
                    burst: self.runs_burst,
                },
                max_websockets: self.max_websockets_per_client,
            },
            listen_limits: crate::listener::ListenLimits {
                header_read_timeout: std::time::Duration::from_secs(self.header_timeout.max(1)),
                max_connections: self.max_connections.max(1),
                max_per_address: self.max_connections_per_address.max(1),
            },
            ws: crate::ws_config::WsConfig {
                allowed_origins: self.allowed_origins.clone(),
                ping_interval: std::time::Duration::from_millis(self.ws_ping_ms),
                resume_grace: std::time::Duration::from_millis(self.resume_grace_ms),
            },
        })
    }
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Language id (see `onpyrunner languages`): python, pypy, node, java, c, cpp, rust, go
    #[arg(short, long, value_name = "ID")]
    pub lang: String,
    /// Wall-time limit in seconds [default: the language's]
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub time_limit: Option<f64>,
    /// Memory limit in MiB [default: the language's]
    #[arg(short = 'm', long, value_name = "MIB")]
    pub memory_limit: Option<u64>,
    /// Source files; the first is the entry point
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Arguments passed to the program (after `--`)
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Only list; build nothing (exits 1 if an image is missing)
    #[arg(long)]
    pub check: bool,
    /// Only these languages [default: all]
    #[arg(long = "lang", value_name = "ID")]
    pub langs: Vec<String>,
    /// The launcher binary to put in the images [default: beside this executable]
    #[arg(long, value_name = "PATH")]
    pub launcher: Option<PathBuf>,
    /// Debian mirror for debootstrap
    #[arg(long, env = "ONPYRUNNER_MIRROR", default_value = images::DEFAULT_MIRROR)]
    pub mirror: String,
}

/// Run a parsed command line; returns the process exit code.
pub async fn main(cli: Cli) -> anyhow::Result<i32> {
    match cli.command {
        Command::Languages => {
            for lang in languages() {
                println!("{:<8} {} {}", lang.id, lang.name, lang.version);
            }
            Ok(0)
        }
        Command::Images(args) => {
            let docker = connect(cli.docker_host.as_deref()).await?;
            images_command(&docker, args).await
        }
        Command::Run(args) => {
            let docker = connect(cli.docker_host.as_deref()).await?;
            run_command(&docker, args).await
        }
        Command::Serve(args) => {
            let config = args.config(cli.docker_host.clone())?;
            crate::server::run(config, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Worker(args) => {
            let config = args.config(cli.docker_host.clone())?;
            if config.cluster.is_none() {
                bail!("worker: --redis URL is required (the Redis that serve --redis nodes use)");
            }
            crate::server::run_worker(config, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Load(args) => {
            // The server under test is this same executable's `serve`.
            let serve = onpyrunner_bench::load::Serve {
                program: std::env::current_exe().context("cannot find this executable")?,
                listening: crate::server::LISTENING,
            };
            onpyrunner_bench::load::run(args, serve).await
        }
        Command::Attack(args) => {
            let serve = onpyrunner_bench::load::Serve {
                program: std::env::current_exe().context("cannot find this executable")?,
                listening: crate::server::LISTENING,
            };
            onpyrunner_bench::attack::run(args, serve).await
        }
        Command::Bench(args) => {
            let docker = connect(cli.docker_host.as_deref()).await?;
            onpyrunner_bench::bench::run(&docker, args, typed_command()).await
        }
        Command::ClusterBench(args) => {
            let docker = connect(cli.docker_host.as_deref()).await?;
            onpyrunner_bench::cluster::run(&docker, args, typed_command()).await
        }
    }
}

/// This command line as typed, for a report to say what made it.
fn typed_command() -> String {
    std::iter::once("onpyrunner".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Resolves on the first SIGTERM or SIGINT; a second one exits at once (what is left is swept
/// at the next start).
async fn shutdown_signal() {
    use futures_util::StreamExt;
    use signal_hook::consts::{SIGINT, SIGTERM};
    let mut signals = match signal_hook_tokio::Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install signal handlers; serving until killed");
            return std::future::pending().await;
        }
    };
    if let Some(signal) = signals.next().await {
        tracing::info!(signal, "shutdown requested");
    }
    tokio::spawn(async move {
        if signals.next().await.is_some() {
            eprintln!("onpyrunner: second signal, exiting now");
            std::process::exit(130);
        }
    });
}

async fn connect(host: Option<&str>) -> anyhow::Result<Docker> {
    let docker = Docker::from_host(host)?;
    docker.ping().await?;
    Ok(docker)
}

fn find_language(id: &str) -> anyhow::Result<&'static Language> {
    onpyrunner_languages::find(id).with_context(|| {
        let ids: Vec<&str> = languages().iter().map(|l| l.id.as_str()).collect();
        format!("unknown language {id:?}; known: {}", ids.join(", "))
    })
}

async fn images_command(docker: &Docker, args: ImagesArgs) -> anyhow::Result<i32> {
    let selected: Vec<&'static Language> = if args.langs.is_empty() {
        languages().iter().collect()
    } else {
        args.langs
            .iter()
            .map(|id| find_language(id))
            .collect::<anyhow::Result<_>>()?
    };
    let mut opts = BuildOptions {
        mirror: args.mirror,
        ..BuildOptions::default()
    };
    if let Some(launcher) = args.launcher {
        opts.launcher = launcher;
    }
    let mut missing = 0;
    let mut rows = Vec::new();
    for lang in selected {
        let (state, status) = if args.check {
            let status = images::status(docker, lang).await?;
            if !status.present {
                missing += 1;
            }
            (if status.present { "present" } else { "missing" }, status)
        } else {
            let started = std::time::Instant::now();
            let mut progress = |line: &str| eprintln!("  {line}");
            let state = match images::ensure(docker, lang, &opts, &mut progress).await? {
                Built::Present => "present",
                built => {
                    eprintln!("  {}: done in {:.0?}", lang.id, started.elapsed());
                    if built == Built::Everything {
                        "built"
                    } else {
                        "launcher updated"
                    }
                }
            };
            (state, images::status(docker, lang).await?)
        };
        let size = status.size;
        rows.push((lang, state, size));
    }
    println!(
        "{:<8} {:<22} {:<36} {:<17} {:>8}",
        "ID", "LANGUAGE", "IMAGE", "STATE", "SIZE"
    );
    for (lang, state, size) in rows {
        let size = if size > 0 {
            format!("{} MB", size / 1_000_000)
        } else {
            "-".into()
        };
        println!(
            "{:<8} {:<22} {:<36} {:<17} {:>8}",
            lang.id,
            format!("{} {}", lang.name, lang.version),
            images::image_ref(lang),
            state,
            size
        );
    }
    Ok(if missing > 0 { 1 } else { 0 })
}

/// Exit code for a run that hit the wall clock, as `timeout(1)` uses.
pub const EXIT_TIMEOUT: i32 = 124;
/// Exit code when the sandbox itself failed.
pub const EXIT_SANDBOX_ERROR: i32 = 125;

async fn run_command(docker: &Docker, args: RunArgs) -> anyhow::Result<i32> {
    // Stdin and stdout are the terminal's: output shows as it comes (`run_live`).
    let lang = onpyrunner_languages::live(find_language(&args.lang)?);
    let mut files = Vec::new();
    for (i, path) in args.files.iter().enumerate() {
        let content =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let name = if i == 0 {
            lang.source_file.clone()
        } else {
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        files.push(SourceFile { name, content });
    }
    let request = LimitRequest {
        wall_ms: match args.time_limit {
            Some(s) if !(s.is_finite() && s > 0.0) => {
                bail!("--time-limit must be a positive number of seconds")
            }
            Some(s) => Some((s * 1000.0).round() as u64),
            None => None,
        },
        memory_mib: args.memory_limit,
        ..LimitRequest::default()
    };
    // The CLI's user runs their own machine: they may raise limits up to the caps.
    let caps = Caps {
        raise: true,
        ..Caps::default()
    };
    let limits = Limits::resolve(lang, &request, &caps).map_err(|e| {
        anyhow::anyhow!("{e}")
            .context("bad limit (--time-limit is in seconds, --memory-limit in MiB)")
    })?;
    let spec = RunSpec {
        client: None,
        language: lang,
        files,
        args: args.args,
        limits,
        judge: None,
    };
    run::validate(&spec)?;

    let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(16);
    let (out_tx, mut out_rx) = mpsc::channel::<Event>(64);
    tokio::spawn(async move {
        let mut stdin = tokio::io::stdin();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stdin.read(&mut buf).await {
                Ok(0) | Err(_) => break, // dropping the sender is EOF for the program
                Ok(n) => {
                    if stdin_tx
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
    });
    let printer = tokio::task::spawn_blocking(move || {
        let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
        while let Some(event) = out_rx.blocking_recv() {
            let Event::Output(chunk) = event else {
                continue;
            };
            let _ = match chunk.stream {
                OutputStream::Stdout => {
                    let mut out = stdout.lock();
                    out.write_all(&chunk.data).and_then(|_| out.flush())
                }
                OutputStream::Stderr => {
                    let mut err = stderr.lock();
                    err.write_all(&chunk.data).and_then(|_| err.flush())
                }
            };
        }
    });
    let owner = format!("cli-{}", run::random_hex(6));
    // One run and no supervisor to share uids with: a uid of the default range picked at
    // random, unlikely to be one a local `serve` has handed out.
    let range = UidRange::DEFAULT;
    let pick = u32::from_str_radix(&run::random_hex(4), 16).unwrap_or(0);
    let uid = range.first() + pick % range.len() as u32;
    let maker = Maker {
        docker: docker.clone(),
        owner: owner.clone(),
        uids: Uids::new(UidRange::new(uid, uid).expect("a uid of the default range")),
    };
    let placement = Placement {
        image: images::image_ref(lang),
        runtime: lang.runtime.clone(),
    };
    let outcome = tokio::select! {
        outcome = run::run_fresh(&maker, &placement, &spec, stdin_rx, out_tx) => outcome?,
        _ = tokio::signal::ctrl_c() => {
            remove_owned(docker, &owner).await;
            eprintln!("onpyrunner: interrupted");
            return Ok(130);
        }
    };
    let _ = printer.await;
    if std::env::var_os("ONPYRUNNER_VERBOSE").is_some() {
        eprintln!("onpyrunner: {outcome:?}");
    }
    Ok(exit_code(&outcome, &spec))
}

/// The CLI's exit code for a run: the program's own, 128+N for signal N, `timeout(1)`'s 124 on
/// the wall clock; each limit and failure also said on stderr.
fn exit_code(summary: &Summary, spec: &RunSpec) -> i32 {
    let usage = &summary.usage;
    match summary.reason {
        Reason::Timeout => {
            eprintln!(
                "onpyrunner: time limit of {} ms exceeded",
                spec.limits.wall_ms
            );
            return EXIT_TIMEOUT;
        }
        Reason::OutputLimit => {
            eprintln!(
                "onpyrunner: output limit of {} bytes exceeded",
                spec.limits.output_bytes
            );
            return 137;
        }
        Reason::Stopped | Reason::Shutdown | Reason::ClientGone => return 130,
        Reason::MemoryLimit => eprintln!(
            "onpyrunner: memory limit of {} MiB exceeded",
            spec.limits.memory_mib
        ),
        Reason::InternalError => eprintln!(
            "onpyrunner: sandbox error: {}",
            summary.error.as_deref().unwrap_or("unknown")
        ),
        Reason::CompileError => eprintln!("onpyrunner: compilation failed"),
        Reason::Exited => {}
    }
    match (usage.exit_code, usage.signal) {
        (_, Some(sig)) => 128 + sig,
        (Some(code), None) => code,
        (None, None) => EXIT_SANDBOX_ERROR,
    }
}

/// Remove every container this process made (after Ctrl-C dropped a run mid-way).
async fn remove_owned(docker: &Docker, owner: &str) {
    let label = format!("{}={owner}", container::LABEL_OWNER);
    if let Ok(list) = docker.list_containers(&[label]).await {
        for c in list {
            let _ = docker.remove_container(&c.id).await;
        }
    }
}

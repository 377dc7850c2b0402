//! `onpyrunner serve`: the engine behind the HTTP API, until a shutdown signal.
use crate::browser::Hosts;
use crate::identity::Identity;
use crate::jobs::Jobs;
use crate::judge0::callback::Callbacks;
use crate::listener::{self, ListenLimits};
use crate::proxies::TrustedProxies;
use crate::quota::{QuotaConfig, Quotas};
use crate::router;
use crate::state::AppState;
use crate::tokens::Tokens;
use crate::ws_config::WsConfig;
use anyhow::Context;
use onpyrunner_supervisor::cluster::{Admission, ClusterConfig, RedisRunner, Worker};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use onpyrunner_supervisor::runner::Runner;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything `serve` is configured with, built once from flags and environment.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub docker_host: Option<String>,
    pub engine: EngineConfig,
    pub jobs_max: usize,
    pub jobs_ttl: Duration,
    /// Output kept by ended jobs at most.
    pub jobs_max_bytes: usize,
    pub ws: WsConfig,
    /// Host names besides the loopback ones and the listen address (see `browser::Hosts`).
    pub allowed_hosts: Vec<String>,
    /// Timeouts and connection caps of the HTTP server.
    pub listen_limits: ListenLimits,
    /// The tokens file and what it held at start; `None`: an open service.
    pub tokens: Option<(PathBuf, Tokens)>,
    pub trusted_proxies: TrustedProxies,
    /// What one client may take by default (rate of runs, open WebSockets).
    pub quotas: QuotaConfig,
    /// The hosts a Judge0 `callback_url` may name.
    pub judge0_callbacks: Callbacks,
    /// Runs go through this Redis (`--redis`) instead of straight to the engine.
    pub cluster: Option<ClusterConfig>,
    /// With `cluster`: this process is also a worker (not `--no-worker`).
    pub worker: bool,
}

/// The line `worker` prints once it takes jobs, then its name; tests and scripts wait for it.
pub const WORKING: &str = "onpyrunner: worker taking jobs as ";

/// How often ended jobs past their TTL are dropped.
const JOBS_EXPIRY_INTERVAL: Duration = Duration::from_secs(5);

/// The line `serve` prints once it listens; tests and scripts wait for it.
pub const LISTENING: &str = "onpyrunner: listening on http://";

/// Start the engine, serve until `shutdown` resolves, then shut the engine down (every run
/// ends as STOPPED with reason `shutdown`, pools removed) and stop serving.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    raise_open_files_limit();
    let docker = Docker::from_host(config.docker_host.as_deref())?;
    let mut elsewhere: Option<crate::jobs::Elsewhere> = None;
    let (runner, engine, worker): (Arc<dyn Runner>, Option<Engine>, Option<Worker>) =
        match &config.cluster {
            None => {
                let engine = Engine::start(docker, config.engine.clone())
                    .await
                    .context("cannot start the engine")?;
                (Arc::new(engine.clone()), Some(engine), None)
            }
            Some(cluster) => {
                let worker = if config.worker {
                    Some(start_worker(docker, &config, cluster).await?)
                } else {
                    None
                };
                let engine = worker.as_ref().map(|w| w.engine().clone());
                let admission = Admission {
                    caps: config.engine.caps.clone(),
                    max_queued: config.engine.max_queued,
                    max_per_client: config.engine.max_per_client,
                };
                let runner = RedisRunner::connect(cluster, admission, engine.clone())
                    .await
                    .context("cannot start the API node")?;
                let finder = runner.clone();
                elsewhere = Some(Arc::new(move |id: &str| finder.elsewhere(id)));
                (Arc::new(runner), engine, worker)
            }
        };
    let listener =
        listen(config.listen).with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let mut jobs =
        Jobs::new(config.jobs_max, config.jobs_ttl).with_max_bytes(config.jobs_max_bytes);
    if let Some(elsewhere) = elsewhere {
        jobs = jobs.with_elsewhere(elsewhere);
    }
    let expiry = jobs.expire_every(JOBS_EXPIRY_INTERVAL);
    let mut identity = Identity::open().with_proxies(config.trusted_proxies.clone());
    if let Some((_, tokens)) = &config.tokens {
        if tokens.is_empty() {
            tracing::warn!("the tokens file has no token: no run can start");
        }
        identity = identity.with_tokens(tokens.clone());
    }
    let state = AppState::new(runner.clone(), jobs)
        .with_ws(config.ws.clone())
        .with_hosts(Hosts::for_listen(addr, &config.allowed_hosts))
        .with_identity(identity)
        .with_quotas(Quotas::new(config.quotas.clone()))
        .with_judge0_callbacks(config.judge0_callbacks.clone());
    let reload = config
        .tokens
        .as_ref()
        .map(|(path, _)| tokio::spawn(reload_on_sighup(state.identity.clone(), path.clone())));
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = listener::serve(
        listener,
        router::routes(state),
        config.listen_limits.clone(),
        async {
            let _ = serving_stopped.await;
        },
    );
    let server = tokio::spawn(server);
    eprintln!("{LISTENING}{addr}");
    tracing::info!(%addr, owner = engine.as_ref().map(|e| e.owner()), "serving");

    shutdown.await;
    tracing::info!("shutting down: stopping runs and removing the pools");
    runner.shutdown().await;
    if let Some(worker) = worker {
        worker.shutdown().await;
    }
    let _ = stop_serving.send(());
    // Requests still open (a slow client) do not hold the process.
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at exit");
    }
    expiry.abort();
    if let Some(reload) = reload {
        reload.abort();
    }
    eprintln!("onpyrunner: stopped");
    Ok(())
}

/// Start this machine's engine and a worker taking jobs for it from the cluster.
async fn start_worker(
    docker: Docker,
    config: &ServerConfig,
    cluster: &ClusterConfig,
) -> anyhow::Result<Worker> {
    let engine = Engine::start(docker, config.engine.clone())
        .await
        .context("cannot start the engine")?;
    match Worker::start(engine.clone(), cluster).await {
        Ok(worker) => Ok(worker),
        Err(e) => {
            engine.shutdown().await;
            Err(e).context("cannot start the worker")
        }
    }
}

/// `onpyrunner worker`: take jobs from the cluster for this machine's engine until `shutdown`
/// resolves, then end its runs (reason `shutdown`) and remove its containers.
pub async fn run_worker(
    config: ServerConfig,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    raise_open_files_limit();
    let cluster = config.cluster.clone().context("a worker needs --redis")?;
    let docker = Docker::from_host(config.docker_host.as_deref())?;
    let worker = start_worker(docker, &config, &cluster).await?;
    eprintln!("{WORKING}{}", worker.name());
    shutdown.await;
    tracing::info!("shutting down: stopping runs and removing the pools");
    worker.shutdown().await;
    eprintln!("onpyrunner: stopped");
    Ok(())
}

/// Reread the tokens file at every SIGHUP; a file that cannot be used leaves the tokens in
/// force as they were (and says why).
async fn reload_on_sighup(identity: Arc<Identity>, path: PathBuf) {
    use futures_util::StreamExt;
    let mut signals = match signal_hook_tokio::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            tracing::error!(error = %e, "cannot install the SIGHUP handler: tokens are read at start only");
            return;
        }
    };
    while signals.next().await.is_some() {
        match identity.reload(&path) {
            // At warn, so that the default filter shows the operator that it took.
            Ok(n) => tracing::warn!(path = %path.display(), tokens = n, "tokens reloaded"),
            Err(e) => {
                tracing::error!(error = %e, "tokens not reloaded; the old ones stay in force")
            }
        }
    }
}

/// A listener whose connections have Nagle's algorithm off (Linux copies `TCP_NODELAY` from the
/// listening socket to the ones it accepts). With it on, every small WebSocket frame after the
/// first waits for the client's delayed ACK, about 40 ms: streamed output crawls.
pub fn listen(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Raise the soft limit on open files to the hard one: every connection and every run's attach
/// stream is a descriptor, and the default soft limit (often 1024) is what a flood hits first.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer, which
    // lives on this stack frame for the whole call.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::warn!("could not raise the open files limit");
            }
        }
    }
}

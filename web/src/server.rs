//! `onpyrunner serve`: the engine behind the HTTP API, until a shutdown signal.
use crate::api::{self, AppState};
use crate::jobs::Jobs;
use anyhow::Context;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

/// Everything `serve` is configured with, built once from flags and environment.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub docker_host: Option<String>,
    pub engine: EngineConfig,
    pub jobs_max: usize,
    pub jobs_ttl: Duration,
}

/// The line `serve` prints once it listens; tests and scripts wait for it.
pub const LISTENING: &str = "onpyrunner: listening on http://";

/// Start the engine, serve until `shutdown` resolves, then shut the engine down (every run
/// ends as STOPPED with reason `shutdown`, pools removed) and stop serving.
pub async fn run(config: ServerConfig, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let docker = Docker::from_host(config.docker_host.as_deref())?;
    let engine = Engine::start(docker, config.engine.clone())
        .await
        .context("cannot start the engine")?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let state = AppState {
        engine: engine.clone(),
        jobs: Jobs::new(config.jobs_max, config.jobs_ttl),
    };
    let (stop_serving, serving_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = warp::serve(api::routes(state))
        .incoming(listener)
        .graceful(async {
            let _ = serving_stopped.await;
        })
        .run();
    let server = tokio::spawn(server);
    eprintln!("{LISTENING}{addr}");
    tracing::info!(%addr, owner = engine.owner(), "serving");

    shutdown.await;
    tracing::info!("shutting down: stopping runs and removing the pools");
    engine.shutdown().await;
    let _ = stop_serving.send(());
    // Requests still open (a slow client) do not hold the process.
    if tokio::time::timeout(Duration::from_secs(2), server)
        .await
        .is_err()
    {
        tracing::warn!("connections still open at exit");
    }
    eprintln!("onpyrunner: stopped");
    Ok(())
}

//! The engines a bench run starts: shut down on every path, and waited on until their pools
//! are full.
use crate::plan::FILL_TIMEOUT;
use anyhow::Context;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use std::time::Duration;
use tokio::time::timeout;

/// The engines the bench started, shut down on every path by [`Engines::shutdown`].
#[derive(Default)]
pub struct Engines(tokio::sync::Mutex<Vec<Engine>>);

impl Engines {
    pub async fn start(&self, docker: &Docker, config: EngineConfig) -> anyhow::Result<Engine> {
        let instance = config.instance.clone();
        let engine = timeout(FILL_TIMEOUT, Engine::start(docker.clone(), config))
            .await
            .with_context(|| format!("engine {instance} did not start in time"))??;
        self.0.lock().await.push(engine.clone());
        Ok(engine)
    }

    pub async fn shutdown(&self) {
        let engines = std::mem::take(&mut *self.0.lock().await);
        for engine in engines {
            let _ = timeout(Duration::from_secs(120), engine.shutdown()).await;
        }
    }
}

/// Wait until the pools (or one language's pool) are full.
pub async fn wait_full(engine: &Engine, only: Option<&str>) -> anyhow::Result<()> {
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

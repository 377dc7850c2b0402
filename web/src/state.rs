//! What the handlers share: the engine, the job table and the WebSocket endpoint's
//! configuration.
use crate::jobs::Jobs;
use crate::ws_config::WsConfig;
use onpyrunner_supervisor::engine::Engine;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub jobs: Jobs,
    pub ws: Arc<WsConfig>,
}

impl AppState {
    /// The state with the WebSocket endpoint's default configuration.
    pub fn new(engine: Engine, jobs: Jobs) -> Self {
        AppState {
            engine,
            jobs,
            ws: Arc::new(WsConfig::default()),
        }
    }

    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = Arc::new(ws);
        self
    }
}

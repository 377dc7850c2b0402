//! What the handlers share: where runs go (the engine, behind the [`Runner`] interface so
//! that tests can stand in for it), the job table and the WebSocket endpoint's configuration.
use crate::jobs::Jobs;
use crate::ws_config::WsConfig;
use onpyrunner_supervisor::runner::Runner;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<dyn Runner>,
    pub jobs: Jobs,
    pub ws: Arc<WsConfig>,
}

impl AppState {
    /// The state with the WebSocket endpoint's default configuration.
    pub fn new(engine: impl Runner, jobs: Jobs) -> Self {
        AppState {
            engine: Arc::new(engine),
            jobs,
            ws: Arc::new(WsConfig::default()),
        }
    }

    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = Arc::new(ws);
        self
    }
}

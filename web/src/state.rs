//! What the handlers share: where runs go (the engine, behind the [`Runner`] interface so
//! that tests can stand in for it), the job table, the WebSocket endpoint's configuration, and
//! how clients are identified and limited.
use crate::body::Bodies;
use crate::browser::Hosts;
use crate::identity::Identity;
use crate::jobs::Jobs;
use crate::judge0::callback::Callbacks;
use crate::quota::Quotas;
use crate::ws_config::WsConfig;
use onpyrunner_supervisor::runner::Runner;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<dyn Runner>,
    pub jobs: Jobs,
    pub ws: Arc<WsConfig>,
    /// The host names requests may carry (see `browser`).
    pub hosts: Arc<Hosts>,
    /// Who a request is from: tokens and trusted proxies.
    pub identity: Arc<Identity>,
    /// What one client may take: its rate of starting runs, its open WebSockets.
    pub quotas: Arc<Quotas>,
    /// Bounds on request bodies being received.
    pub bodies: Bodies,
    /// The hosts a Judge0 submission's `callback_url` may name (none by default).
    pub judge0_callbacks: Arc<Callbacks>,
}

impl AppState {
    /// The state with the WebSocket endpoint's default configuration.
    pub fn new(engine: impl Runner, jobs: Jobs) -> Self {
        AppState {
            engine: Arc::new(engine),
            jobs,
            ws: Arc::new(WsConfig::default()),
            hosts: Arc::new(Hosts::default()),
            identity: Arc::new(Identity::open()),
            quotas: Arc::new(Quotas::default()),
            bodies: Bodies::default(),
            judge0_callbacks: Arc::new(Callbacks::none()),
        }
    }

    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = Arc::new(ws);
        self
    }

    pub fn with_identity(mut self, identity: Identity) -> Self {
        self.identity = Arc::new(identity);
        self
    }

    pub fn with_quotas(mut self, quotas: Quotas) -> Self {
        self.quotas = Arc::new(quotas);
        self
    }

    pub fn with_judge0_callbacks(mut self, callbacks: Callbacks) -> Self {
        self.judge0_callbacks = Arc::new(callbacks);
        self
    }

    pub fn with_hosts(mut self, hosts: Hosts) -> Self {
        self.hosts = Arc::new(hosts);
        self
    }
}

//! What the web crate's tests share: a server over a real listener, engine, daemon and images,
//! for the WebSocket tests (`ws.rs`, `piston_ws.rs`), whose client connects with a real
//! WebSocket client; and in-process state over a real engine or over the stand-in runner, for
//! the tests that ask through warp's test client (`piston.rs`, `judge0.rs`). Each test binary
//! uses only part of it.
#![allow(dead_code)]
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner::ws_config::WsConfig;
use onpyrunner_e2e::{assert_instance_clean, engine_config, instance_containers};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;

/// In-process state over a real engine, daemon and images; its containers' instance is `name`.
pub async fn engine_state(name: &str) -> AppState {
    let engine = Engine::start(Docker::from_host(None).unwrap(), engine_config(name, &[]))
        .await
        .expect("engine starts (is the daemon running? `bash scripts/setup.sh`)");
    AppState::new(engine, Jobs::new(100, Duration::from_secs(60)))
}

/// In-process state over the stand-in runner: routing and refusals, which start nothing.
pub fn stand_in_state() -> AppState {
    AppState::new(
        onpyrunner_e2e::stand_in::StandIn::new(),
        Jobs::new(10, Duration::from_secs(60)),
    )
}

pub const TIMEOUT: Duration = Duration::from_secs(120);

pub type Client = WebSocketStream<TcpStream>;

pub struct Server {
    pub addr: SocketAddr,
    pub state: AppState,
    pub instance: String,
}

/// A server of its own for test `test` (its containers' instance is named after it).
pub async fn serve(test: &str, tweak: impl FnOnce(&mut EngineConfig, &mut WsConfig)) -> Server {
    let mut config = engine_config(test, &[]);
    let mut ws = WsConfig::default();
    tweak(&mut config, &mut ws);
    let instance = config.instance.clone();
    let engine = Engine::start(Docker::from_host(None).unwrap(), config)
        .await
        .expect("engine starts (is the daemon running? `bash scripts/setup.sh`)");
    let state = AppState::new(engine, Jobs::new(10, Duration::from_secs(60))).with_ws(ws);
    let listener = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes(state.clone())).incoming(listener).run());
    Server {
        addr,
        state,
        instance,
    }
}

impl Server {
    /// A WebSocket to `path`, from a browser at `origin` if one is given.
    pub async fn connect_to(&self, path: &str, origin: Option<&str>) -> Result<Client, WsError> {
        let mut request = format!("ws://{}{path}", self.addr)
            .into_client_request()
            .unwrap();
        if let Some(origin) = origin {
            request
                .headers_mut()
                .insert("origin", origin.parse().unwrap());
        }
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        tokio::time::timeout(TIMEOUT, tokio_tungstenite::client_async(request, tcp))
            .await
            .expect("the handshake within the timeout")
            .map(|(ws, _)| ws)
    }

    pub fn docker(&self) -> Docker {
        Docker::from_host(None).unwrap()
    }

    /// Whether every container of this server is gone within `secs` seconds.
    pub async fn no_containers_within(&self, secs: u64) -> bool {
        let docker = self.docker();
        tokio::time::timeout(Duration::from_secs(secs), async {
            while !instance_containers(&docker, &self.instance)
                .await
                .is_empty()
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok()
    }

    /// Shut the engine down; nothing of this server may be left on the daemon.
    pub async fn finish(self) {
        self.state.engine.shutdown().await;
        assert_instance_clean(&self.docker(), &self.instance).await;
    }
}

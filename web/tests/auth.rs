//! Who may run, and how much, without a daemon (the stand-in runner records every spec it
//! accepts): API tokens in each accepted form, their quotas on the RunSpec, raised limits per
//! token, X-Forwarded-For only from trusted proxies, the per-client rate of starting runs and
//! the per-client WebSocket cap, and the token path a browser (the IDE) takes on a WebSocket.
use futures_util::{SinkExt, StreamExt};
use onpyrunner::identity::Identity;
use onpyrunner::jobs::Jobs;
use onpyrunner::listener::{self, ListenLimits, Peer};
use onpyrunner::proxies::TrustedProxies;
use onpyrunner::quota::{QuotaConfig, Quotas, Rate};
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner::tokens::Tokens;
use onpyrunner_e2e::stand_in::StandIn;
use onpyrunner_protocol::run::RunBody;
use onpyrunner_protocol::ws::{ClientMessage, ServerMessage};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

const TIMEOUT: Duration = Duration::from_secs(20);
const CI: &str = "ci-secret-0123456789abcdef";
const IDE: &str = "ide-secret-0123456789abcdef";
const RUN: &str = r#"{"language": "python", "code": "hi\n"}"#;

fn tokens_file() -> String {
    format!(
        r#"
        [[token]]
        name = "ci"
        secret = "{CI}"
        max_in_flight = 7
        max_running = 3
        raise_limits = true

        [[token]]
        name = "ide"
        secret = "{IDE}"
        "#
    )
}

fn state(identity: Identity, quotas: QuotaConfig) -> (AppState, Arc<StandIn>) {
    let runner = Arc::new(StandIn::new());
    let state = AppState::new(runner.clone(), Jobs::new(10, Duration::from_secs(60)))
        .with_identity(identity)
        .with_quotas(Quotas::new(quotas));
    (state, runner)
}

fn with_tokens() -> (AppState, Arc<StandIn>) {
    let tokens = Tokens::parse(&tokens_file()).unwrap();
    state(Identity::open().with_tokens(tokens), QuotaConfig::default())
}

struct Answer {
    status: u16,
    json: Value,
    headers: warp::http::HeaderMap,
}

/// A request from `peer` with `headers`, in process.
async fn call(
    s: &AppState,
    method: &str,
    path: &str,
    peer: &str,
    headers: &[(&str, &str)],
) -> Answer {
    let mut request = warp::test::request()
        .method(method)
        .path(path)
        .extension(Peer(peer.parse().unwrap()));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if method == "POST" {
        request = request.header("content-type", "application/json").body(RUN);
    }
    let response = request.reply(&routes(s.clone())).await;
    Answer {
        status: response.status().as_u16(),
        json: serde_json::from_slice(response.body()).unwrap_or(Value::Null),
        headers: response.headers().clone(),
    }
}

const PEER: &str = "198.51.100.7:40000";

#[tokio::test]
async fn with_tokens_no_token_and_a_wrong_one_get_the_same_401_and_nothing_runs() {
    let (s, runner) = with_tokens();
    let wrong = "Bearer not-a-token-0123456789";
    let cases: [(&str, &str); 5] = [
        ("POST", "/api/v1/runs"),
        ("POST", "/api/v1/jobs"),
        ("GET", "/api/v1/jobs/0123"),
        ("DELETE", "/api/v1/jobs/0123"),
        ("GET", "/api/v1/ws"),
    ];
    for (method, path) in cases {
        let missing = call(&s, method, path, PEER, &[]).await;
        assert_eq!(missing.status, 401, "{method} {path}: {}", missing.json);
        assert_eq!(
            missing.headers["www-authenticate"], "Bearer realm=\"onpyrunner\"",
            "{method} {path}"
        );
        assert_eq!(missing.json["field"], "Authorization");
        for headers in [
            &[("authorization", wrong)][..],
            &[("x-auth-token", "not-a-token-0123456789")][..],
            &[("authorization", "Basic Y2k6c2VjcmV0")][..],
        ] {
            let bad = call(&s, method, path, PEER, headers).await;
            assert_eq!(bad.status, 401, "{method} {path} {headers:?}");
            assert_eq!(bad.json, missing.json, "no hint which tokens exist");
            assert_eq!(
                bad.headers["www-authenticate"],
                missing.headers["www-authenticate"]
            );
        }
    }
    // A route that does not exist is still 404, and a wrong method still 405.
    assert_eq!(
        call(&s, "GET", "/api/v1/nothing", PEER, &[]).await.status,
        404
    );
    assert_eq!(call(&s, "GET", "/api/v1/runs", PEER, &[]).await.status, 405);
    assert!(
        runner.accepted.lock().unwrap().is_empty(),
        "nothing started"
    );
    // The reads and the IDE's files stay open.
    for path in [
        "/",
        "/assets/app.js",
        "/healthz",
        "/metrics",
        "/api/v1/languages",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(call(&s, "GET", path, PEER, &[]).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn require_for_reads_closes_the_reads_but_not_the_ides_files() {
    let tokens = Tokens::parse(&format!("require_for_reads = true\n{}", tokens_file())).unwrap();
    let (s, _) = state(Identity::open().with_tokens(tokens), QuotaConfig::default());
    let bearer = format!("Bearer {IDE}");
    for path in [
        "/healthz",
        "/metrics",
        "/api/v1/languages",
        "/api/v1/openapi.json",
    ] {
        assert_eq!(call(&s, "GET", path, PEER, &[]).await.status, 401, "{path}");
        let with = call(&s, "GET", path, PEER, &[("authorization", &bearer)]).await;
        assert_eq!(with.status, 200, "{path}");
    }
    for path in ["/", "/assets/app.js"] {
        assert_eq!(call(&s, "GET", path, PEER, &[]).await.status, 200, "{path}");
    }
}

#[tokio::test]
async fn every_accepted_form_of_a_token_runs_as_the_tokens_client_with_its_quotas() {
    let (s, runner) = with_tokens();
    let bearer = format!("Bearer {CI}");
    let lower = format!("bearer {CI}");
    let forms: [(&str, &str); 4] = [
        ("authorization", &bearer),
        ("authorization", &lower),
        ("authorization", CI),
        ("x-auth-token", CI),
    ];
    for (name, value) in forms {
        for path in ["/api/v1/runs", "/api/v1/jobs"] {
            let answer = call(&s, "POST", path, PEER, &[(name, value)]).await;
            assert!(
                answer.status == 200 || answer.status == 202,
                "{name}: {value} on {path}: {} {}",
                answer.status,
                answer.json
            );
        }
    }
    let clients: Vec<_> = runner
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|spec| spec.client.clone().expect("a client"))
        .collect();
    assert_eq!(clients.len(), 8);
    for client in clients {
        assert_eq!(client.name, "token:ci");
        assert_eq!(client.max_in_flight, Some(7));
        assert_eq!(client.max_running, Some(3));
    }
    // A token without quotas: the engine's defaults.
    let answer = call(&s, "POST", "/api/v1/runs", PEER, &[("x-auth-token", IDE)]).await;
    assert_eq!(answer.status, 200);
    let last = runner
        .accepted
        .lock()
        .unwrap()
        .last()
        .unwrap()
        .client
        .clone();
    let last = last.unwrap();
    assert_eq!(
        (last.name.as_str(), last.max_in_flight, last.max_running),
        ("token:ide", None, None)
    );
}

#[tokio::test]
async fn raise_limits_is_per_token() {
    let (s, runner) = with_tokens();
    let raised = r#"{"language": "python", "code": "x", "limits": {"wall_ms": 20000}}"#;
    let post = |secret: &'static str| {
        let s = s.clone();
        async move {
            let response = warp::test::request()
                .method("POST")
                .path("/api/v1/runs")
                .extension(Peer(PEER.parse().unwrap()))
                .header("content-type", "application/json")
                .header("x-auth-token", secret)
                .body(raised)
                .reply(&routes(s))
                .await;
            let json: Value = serde_json::from_slice(response.body()).unwrap();
            (response.status().as_u16(), json)
        }
    };
    let (status, err) = post(IDE).await;
    assert_eq!(status, 422, "{err}");
    assert_eq!(err["field"], "limits.wall_ms");
    assert_eq!(err["limit"], "10000", "the language's default");
    let (status, run) = post(CI).await;
    assert_eq!(status, 200, "{run}");
    let accepted = runner.accepted.lock().unwrap();
    assert_eq!(accepted.len(), 1);
    assert_eq!(accepted[0].limits.wall_ms, 20000);
}

#[tokio::test]
async fn forwarded_for_names_the_client_only_from_a_trusted_proxy() {
    let identity = Identity::open().with_proxies(TrustedProxies::parse(&["10.0.0.0/8"]).unwrap());
    let (s, runner) = state(identity, QuotaConfig::default());
    let xff = [("x-forwarded-for", "203.0.113.50, 10.0.0.9")];
    let spoofed = [("x-forwarded-for", "203.0.113.50")];
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", "10.0.0.2:1", &xff)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &spoofed)
            .await
            .status,
        200
    );
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", "[2001:db8:5:6::77]:1", &spoofed)
            .await
            .status,
        200
    );
    let names: Vec<String> = runner
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|spec| spec.client.clone().unwrap().name)
        .collect();
    assert_eq!(
        names,
        ["203.0.113.50", "198.51.100.7", "2001:db8:5:6::/64"],
        "the proxy's client; the spoofing peer itself; a v6 peer by its /64"
    );
}

#[tokio::test]
async fn past_its_rate_a_client_gets_429_with_retry_after_then_recovers() {
    // Ten a second, two at once.
    let quotas = QuotaConfig {
        runs: Rate {
            per_minute: 600,
            burst: 2,
        },
        ..QuotaConfig::default()
    };
    let (s, runner) = state(Identity::open(), quotas);
    for path in ["/api/v1/runs", "/api/v1/jobs"] {
        let answer = call(&s, "POST", path, PEER, &[]).await;
        assert!(answer.status < 300, "{path}: {}", answer.json);
    }
    let refused = call(&s, "POST", "/api/v1/runs", PEER, &[]).await;
    assert_eq!(refused.status, 429, "{}", refused.json);
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(refused.json["field"], "runs_per_minute");
    assert_eq!(refused.json["limit"], "600");
    assert_eq!(
        call(&s, "POST", "/api/v1/jobs", PEER, &[]).await.status,
        429,
        "jobs share the bucket"
    );
    assert_eq!(runner.accepted.lock().unwrap().len(), 2);
    // Another client is not held back, and reads are not counted.
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", "198.51.100.8:1", &[])
            .await
            .status,
        200
    );
    assert_eq!(
        call(&s, "GET", "/api/v1/languages", PEER, &[]).await.status,
        200
    );
    // A tenth of a second later there is room for one more.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &[]).await.status,
        200
    );
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &[]).await.status,
        429
    );
}

#[tokio::test]
async fn a_tokens_own_rate_replaces_the_default() {
    let tokens = Tokens::parse(&format!(
        "[[token]]\nname = \"fast\"\nsecret = \"{CI}\"\nruns_per_minute = 6000\nruns_burst = 5"
    ))
    .unwrap();
    let quotas = QuotaConfig {
        runs: Rate {
            per_minute: 60,
            burst: 1,
        },
        ..QuotaConfig::default()
    };
    let (s, _) = state(Identity::open().with_tokens(tokens), quotas);
    for i in 0..5 {
        let answer = call(&s, "POST", "/api/v1/runs", PEER, &[("x-auth-token", CI)]).await;
        assert_eq!(answer.status, 200, "run {i}: {}", answer.json);
    }
    let refused = call(&s, "POST", "/api/v1/runs", PEER, &[("x-auth-token", CI)]).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.json["limit"], "6000");
}

/// The routes on our own accept loop (which puts the peer on each request), on loopback.
async fn serve(s: &AppState) -> SocketAddr {
    let tcp = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = tcp.local_addr().unwrap();
    tokio::spawn(listener::serve(
        tcp,
        routes(s.clone()),
        ListenLimits::default(),
        std::future::pending(),
    ));
    addr
}

type Client = WebSocketStream<TcpStream>;

/// A WebSocket to `addr`, offering these subprotocols (as a browser's `new WebSocket(url,
/// protocols)` does) and sending these headers.
async fn connect(
    addr: SocketAddr,
    protocols: Option<&str>,
    headers: &[(&'static str, &str)],
) -> Result<(Client, Option<String>), WsError> {
    let mut request = format!("ws://{addr}/api/v1/ws")
        .into_client_request()
        .unwrap();
    if let Some(protocols) = protocols {
        request
            .headers_mut()
            .insert("sec-websocket-protocol", protocols.parse().unwrap());
    }
    for (name, value) in headers {
        request.headers_mut().insert(*name, value.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let (ws, response) = tokio_tungstenite::client_async(request, tcp).await?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .map(|v| v.to_str().unwrap().to_string());
    Ok((ws, chosen))
}

fn refused_status(result: Result<(Client, Option<String>), WsError>) -> u16 {
    match result {
        Err(WsError::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("refused otherwise: {e}"),
        Ok(_) => panic!("not refused"),
    }
}

async fn send(ws: &mut Client, message: &ClientMessage) {
    let text = serde_json::to_string(message).unwrap();
    ws.send(Message::text(text)).await.unwrap();
}

/// The next text message.
async fn hear(ws: &mut Client) -> ServerMessage {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection is open")
            .unwrap();
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Run `code` on `ws` to its summary.
async fn run_to_the_end(ws: &mut Client, code: &str) {
    send(ws, &ClientMessage::Run(RunBody::code("python", code))).await;
    let first = hear(ws).await;
    assert!(matches!(first, ServerMessage::State { .. }), "{first:?}");
    send(ws, &ClientMessage::Eof).await;
    while !matches!(hear(ws).await, ServerMessage::Summary { .. }) {}
}

#[tokio::test]
async fn a_browser_sends_its_token_as_a_websocket_subprotocol() {
    let (s, runner) = with_tokens();
    let addr = serve(&s).await;
    assert_eq!(refused_status(connect(addr, None, &[]).await), 401);
    assert_eq!(
        refused_status(
            connect(
                addr,
                Some("onpyrunner, onpyrunner.token.wrong-0123456789"),
                &[]
            )
            .await
        ),
        401
    );
    let offer = format!("onpyrunner, onpyrunner.token.{IDE}");
    let (mut ws, chosen) = connect(addr, Some(&offer), &[]).await.unwrap();
    assert_eq!(
        chosen.as_deref(),
        Some("onpyrunner"),
        "one of the offers comes back"
    );
    run_to_the_end(&mut ws, "from the IDE").await;
    ws.close(None).await.unwrap();
    // Other clients may send a header on the upgrade.
    let bearer = format!("Bearer {CI}");
    let (mut ws, chosen) = connect(addr, None, &[("authorization", &bearer)])
        .await
        .unwrap();
    assert_eq!(chosen, None, "no subprotocol offered, none chosen");
    run_to_the_end(&mut ws, "from a script").await;
    let names: Vec<String> = runner
        .accepted
        .lock()
        .unwrap()
        .iter()
        .map(|spec| spec.client.clone().unwrap().name)
        .collect();
    assert_eq!(names, ["token:ide", "token:ci"]);
    // A browser cannot see why a handshake failed; it asks with a plain GET (as the IDE does):
    // 401 for a bad token, 400 ("not an upgrade") for a good one.
    let probe = |token: &'static str| {
        let s = s.clone();
        async move {
            warp::test::request()
                .path("/api/v1/ws")
                .extension(Peer(PEER.parse().unwrap()))
                .header("authorization", format!("Bearer {token}"))
                .reply(&routes(s))
                .await
                .status()
                .as_u16()
        }
    };
    assert_eq!(probe("wrong-0123456789abcdef").await, 401);
    assert_eq!(probe(IDE).await, 400);
}

#[tokio::test]
async fn past_its_websocket_cap_a_client_gets_429_before_the_upgrade() {
    let quotas = QuotaConfig {
        max_websockets: 2,
        ..QuotaConfig::default()
    };
    let (s, _) = state(Identity::open(), quotas);
    let addr = serve(&s).await;
    let (first, _) = connect(addr, None, &[]).await.unwrap();
    let (_second, _) = connect(addr, None, &[]).await.unwrap();
    assert_eq!(refused_status(connect(addr, None, &[]).await), 429);
    // The probe a browser makes says why.
    let response = warp::test::request()
        .path("/api/v1/ws")
        .extension(Peer(addr))
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(response.status(), 429);
    let err: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(
        (err["field"].as_str(), err["limit"].as_str()),
        (Some("websockets"), Some("2"))
    );
    assert!(response.headers().contains_key("retry-after"));
    // A closed one gives its place back.
    drop(first);
    let reopened = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(ws) = connect(addr, None, &[]).await {
                return ws;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(reopened.is_ok(), "a place came back");
}

#[tokio::test]
async fn websocket_runs_count_against_the_rate_and_the_error_says_when_to_retry() {
    let quotas = QuotaConfig {
        runs: Rate {
            per_minute: 60,
            burst: 1,
        },
        ..QuotaConfig::default()
    };
    let (s, runner) = state(Identity::open(), quotas);
    let addr = serve(&s).await;
    let (mut ws, _) = connect(addr, None, &[]).await.unwrap();
    run_to_the_end(&mut ws, "one").await;
    send(&mut ws, &ClientMessage::Run(RunBody::code("python", "two"))).await;
    let ServerMessage::Error(err) = hear(&mut ws).await else {
        panic!("an error")
    };
    assert_eq!(err.status, Some(429));
    assert_eq!(err.field.as_deref(), Some("runs_per_minute"));
    assert_eq!(err.limit.as_deref(), Some("60"));
    assert_eq!(err.retry_after, Some(1));
    assert_eq!(runner.accepted.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_reloaded_tokens_file_takes_effect_and_a_broken_one_changes_nothing() {
    let dir = std::env::temp_dir().join(format!("onpyrunner-tokens-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tokens.toml");
    std::fs::write(&path, tokens_file()).unwrap();
    let identity = Identity::open().with_tokens(Tokens::load(&path).unwrap());
    let (s, _) = state(identity, QuotaConfig::default());
    let ci = [("x-auth-token", CI)];
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &ci).await.status,
        200
    );
    // The ci token is revoked.
    let other = "other-secret-0123456789abcdef";
    std::fs::write(
        &path,
        format!("[[token]]\nname = \"other\"\nsecret = \"{other}\""),
    )
    .unwrap();
    assert_eq!(s.identity.reload(&path).unwrap(), 1);
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &ci).await.status,
        401
    );
    let new = [("x-auth-token", other)];
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &new).await.status,
        200
    );
    // A broken file is refused, naming the key, and the tokens in force stay.
    std::fs::write(&path, "[[token]]\nname = \"x\"\nsecret = \"short\"").unwrap();
    let err = s.identity.reload(&path).unwrap_err();
    assert!(err.to_string().contains("token[0].secret"), "{err}");
    assert_eq!(
        call(&s, "POST", "/api/v1/runs", PEER, &new).await.status,
        200
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! The web layer without a Docker daemon: routes, validation and errors, jobs, SSE and the
//! WebSocket protocol (runs, resume, ping) over a stand-in runner that echoes its program's
//! source and stdin (onpyrunner_e2e::stand_in). These run in seconds anywhere; what real
//! programs do is tested against the real daemon in the other files.
use futures_util::{SinkExt, StreamExt};
use onpyrunner::jobs::Jobs;
use onpyrunner::router::routes;
use onpyrunner::state::AppState;
use onpyrunner::ws_config::WsConfig;
use onpyrunner_e2e::stand_in::StandIn;
use onpyrunner_protocol::run::RunBody;
use onpyrunner_protocol::ws::{ClientMessage, ServerMessage};
use onpyrunner_protocol::{OutputChunk, OutputStream, RunState};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const TIMEOUT: Duration = Duration::from_secs(20);

fn state() -> (AppState, Arc<StandIn>) {
    let runner = Arc::new(StandIn::new());
    let state = AppState::new(runner.clone(), Jobs::new(10, Duration::from_secs(60)));
    (state, runner)
}

async fn call(s: &AppState, method: &str, path: &str, body: &str) -> (u16, Value) {
    let response = warp::test::request()
        .method(method)
        .path(path)
        .header("content-type", "application/json")
        .body(body)
        .reply(&routes(s.clone()))
        .await;
    let json = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
    (response.status().as_u16(), json)
}

#[tokio::test]
async fn invalid_runs_are_refused_naming_the_field_and_limit_and_nothing_starts() {
    let (s, runner) = state();
    let cases = [
        (
            r#"{"language": "cobol", "code": "x"}"#.to_string(),
            422,
            "language",
        ),
        (r#"{"language": "python"}"#.into(), 422, "code"),
        (
            r#"{"language": "python", "code": "x", "bogus": 1}"#.into(),
            422,
            "",
        ),
        (
            r#"{"language": "python", "code": "x", "limits": {"wall_ms": 1000000}}"#.into(),
            422,
            "limits.wall_ms",
        ),
        (
            json!({"language": "python", "code": "x".repeat(2 << 20)}).to_string(),
            413,
            "code",
        ),
        (
            r#"{"language": "python", "files": [{"name": "../x.py", "content": ""}]}"#.into(),
            422,
            "files[0].name",
        ),
        ("not json".into(), 400, ""),
        (
            r#"{"language": "python", "code": "x", "tests": []}"#.into(),
            422,
            "tests",
        ),
        (
            json!({"language": "python", "code": "x", "tests": vec![json!({"input": ""}); 65]})
                .to_string(),
            422,
            "tests",
        ),
        (
            r#"{"language": "python", "code": "x", "stdin": "1", "tests": [{"input": "2"}]}"#
                .into(),
            422,
            "stdin",
        ),
        (
            json!({"language": "python", "code": "x",
                   "tests": [{"input": "x".repeat(5 << 20)}, {"input": "x".repeat(5 << 20)}]})
            .to_string(),
            413,
            "tests[].input",
        ),
        (
            r#"{"language": "python", "code": "x", "tests": [{"input": "1", "expected_output": null}]}"#
                .into(),
            422,
            "",
        ),
    ];
    for (body, want, field) in cases {
        for path in ["/api/v1/runs", "/api/v1/jobs"] {
            let (status, err) = call(&s, "POST", path, &body).await;
            assert_eq!(status, want, "{path} {body:.80}: {err}");
            if !field.is_empty() {
                assert_eq!(err["field"], field, "{err}");
            }
            assert!(err["error"].as_str().is_some(), "{err}");
        }
    }
    let (_, err) = call(
        &s,
        "POST",
        "/api/v1/runs",
        r#"{"language":"python","code":"x","limits":{"wall_ms":1000000}}"#,
    )
    .await;
    assert_eq!(
        err["limit"], "10000",
        "the language's default: limits only go down"
    );
    assert!(
        runner.accepted.lock().unwrap().is_empty(),
        "nothing started"
    );
    let (status, _) = call(&s, "GET", "/api/v1/nothing", "").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_sync_run_and_a_job_render_the_same_run() {
    let (s, _) = state();
    let body = r#"{"language": "python", "code": "hi\n", "stdin": "there\n"}"#;
    let (status, run) = call(&s, "POST", "/api/v1/runs", body).await;
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["stdout"], "hi\nthere\n");
    assert_eq!(run["state"], "FINISHED");
    assert_eq!(run["reason"], "exited");
    assert_eq!(run["exit_code"], 0);

    let (status, job) = call(&s, "POST", "/api/v1/jobs", body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let view = tokio::time::timeout(TIMEOUT, s.jobs.finished(&id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(view.stdout, "hi\nthere\n");
    assert_eq!(view.state, RunState::Finished);
    // Its events as SSE, ids being log positions: READY 1, RUNNING 2, "hi\nthere\n" 11 (one
    // stream's output in a row is one entry of the log), FINISHED 12, summary 13.
    let response = warp::test::request()
        .path(&format!("/api/v1/jobs/{id}/events"))
        .header("last-event-id", "2")
        .reply(&routes(s.clone()))
        .await;
    let body = String::from_utf8(response.body().to_vec()).unwrap();
    assert!(
        body.starts_with("event:stdout\ndata:{\"data\":\"hi\\nthere\\n\"}\nid:11\n"),
        "{body}"
    );
    assert!(body.contains("\nid:13\n"), "{body}");
    for past in ["14", "x"] {
        let response = warp::test::request()
            .path(&format!("/api/v1/jobs/{id}/events"))
            .header("last-event-id", past)
            .reply(&routes(s.clone()))
            .await;
        assert_eq!(response.status(), 400, "{past}");
    }
    let response = warp::test::request()
        .path(&format!("/api/v1/jobs/{id}/events"))
        .header("last-event-id", "13")
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(response.status(), 204, "resumed after the summary");
}

type Client = WebSocketStream<TcpStream>;

async fn connect(addr: std::net::SocketAddr) -> Client {
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_tungstenite::client_async(format!("ws://{addr}/api/v1/ws"), tcp)
        .await
        .unwrap()
        .0
}

async fn send(ws: &mut Client, message: &ClientMessage) {
    let text = serde_json::to_string(message).unwrap();
    ws.send(Message::text(text)).await.unwrap();
}

/// Ask to resume `run` from `seq`; the server's answer.
async fn resume(ws: &mut Client, run: &str, seq: u64) -> Result<ServerMessage, OutputChunk> {
    let message = ClientMessage::Resume {
        run: run.to_string(),
        seq,
    };
    send(ws, &message).await;
    hear(ws).await
}

/// The next message, text parsed, output as a chunk.
async fn hear(ws: &mut Client) -> Result<ServerMessage, OutputChunk> {
    loop {
        let message = tokio::time::timeout(TIMEOUT, ws.next())
            .await
            .expect("a message within the timeout")
            .expect("the connection is open")
            .unwrap();
        match message {
            Message::Text(text) => return Ok(serde_json::from_str(&text).unwrap()),
            Message::Binary(frame) => return Err(OutputChunk::from_frame(&frame).unwrap()),
            _ => {}
        }
    }
}

#[tokio::test]
async fn the_websocket_protocol_runs_resumes_and_answers_pings_in_typed_messages() {
    let (s, _) = state();
    let s = s.with_ws(WsConfig {
        resume_grace: Duration::from_secs(30),
        ..WsConfig::default()
    });
    let listener = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes(s.clone())).incoming(listener).run());

    let mut ws = connect(addr).await;
    send(&mut ws, &ClientMessage::Ping).await;
    assert_eq!(hear(&mut ws).await, Ok(ServerMessage::Pong));
    send(&mut ws, &ClientMessage::Run(RunBody::code("python", "abc"))).await;
    let Ok(ServerMessage::State {
        run,
        seq: 1,
        state: RunState::Ready,
        ..
    }) = hear(&mut ws).await
    else {
        panic!("READY first")
    };
    assert!(matches!(
        hear(&mut ws).await,
        Ok(ServerMessage::State { seq: 2, .. })
    ));
    let chunk = hear(&mut ws).await.unwrap_err();
    assert_eq!(
        (chunk.stream, &chunk.data[..]),
        (OutputStream::Stdout, &b"abc"[..])
    );
    // A second run while this one goes is refused.
    send(&mut ws, &ClientMessage::Run(RunBody::code("python", "x"))).await;
    let Ok(ServerMessage::Error(err)) = hear(&mut ws).await else {
        panic!("an error")
    };
    assert_eq!(
        (err.status, err.field.as_deref()),
        (Some(409), Some("type"))
    );
    // The connection breaks (no close frame): the run waits; stdin sent meanwhile is lost with
    // the connection, and the new one resumes from position 5 (READY, RUNNING, "abc").
    drop(ws);
    let mut ws = connect(addr).await;
    let resumed = resume(&mut ws, &run, 5).await;
    assert_eq!(
        resumed,
        Ok(ServerMessage::Resumed {
            run: run.clone(),
            seq: 5,
            state: RunState::Running
        })
    );
    send(&mut ws, &ClientMessage::Stdin { data: "de".into() }).await;
    let chunk = hear(&mut ws).await.unwrap_err();
    assert_eq!(&chunk.data[..], b"de");
    send(&mut ws, &ClientMessage::Eof).await;
    assert!(matches!(
        hear(&mut ws).await,
        Ok(ServerMessage::State {
            seq: 8,
            state: RunState::Finished,
            ..
        })
    ));
    let Ok(ServerMessage::Summary {
        seq: 9, summary, ..
    }) = hear(&mut ws).await
    else {
        panic!("the summary")
    };
    assert_eq!(summary.usage.exit_code, Some(0));
    // From the middle of the output: the rest of it, exactly (split as the log keeps it).
    let resumed = resume(&mut ws, &run, 4).await;
    assert!(matches!(resumed, Ok(ServerMessage::Resumed { seq: 4, .. })));
    assert_eq!(&hear(&mut ws).await.unwrap_err().data[..], b"cde");
    assert!(matches!(
        hear(&mut ws).await,
        Ok(ServerMessage::State { seq: 8, .. })
    ));
    ws.close(None).await.unwrap();
}

#[tokio::test]
async fn a_close_frame_ends_the_run_at_once_but_not_one_another_connection_resumed() {
    let (s, _) = state();
    let listener = onpyrunner::server::listen("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(warp::serve(routes(s.clone())).incoming(listener).run());

    // Resumed elsewhere, then the old connection says goodbye: the run goes on.
    let mut old = connect(addr).await;
    send(&mut old, &ClientMessage::Run(RunBody::code("python", "x"))).await;
    let Ok(ServerMessage::State { run, .. }) = hear(&mut old).await else {
        panic!()
    };
    let mut new = connect(addr).await;
    let resumed = resume(&mut new, &run, 0).await;
    assert!(matches!(resumed, Ok(ServerMessage::Resumed { .. })));
    old.close(None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    send(&mut new, &ClientMessage::Eof).await;
    let summary = loop {
        if let Ok(ServerMessage::Summary { summary, .. }) = hear(&mut new).await {
            break summary;
        }
    };
    assert_eq!(summary.reason, onpyrunner_protocol::Reason::Exited);

    // The only connection says goodbye: the run is ended as client_gone.
    send(&mut new, &ClientMessage::Run(RunBody::code("python", "y"))).await;
    let Ok(ServerMessage::State { run, .. }) = hear(&mut new).await else {
        panic!()
    };
    new.close(None).await.unwrap();
    let log = tokio::time::timeout(TIMEOUT, async {
        loop {
            if let Ok(view) = s.engine.resume(&run, 0) {
                if view.ended() {
                    return view;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("ended within the timeout");
    let summary = log.log().summary().unwrap();
    assert_eq!(summary.reason, onpyrunner_protocol::Reason::ClientGone);
}

#[tokio::test]
async fn ended_jobs_expire_on_a_timer_and_the_byte_budget_holds_when_a_job_ends() {
    let runner = Arc::new(StandIn::new());
    let jobs = Jobs::new(10, Duration::from_millis(300)).with_max_bytes(10);
    let _expiry = jobs.expire_every(Duration::from_millis(50));
    let s = AppState::new(runner, jobs);
    let post = |code: &str| {
        let body = json!({"language": "python", "code": code}).to_string();
        let s = s.clone();
        async move {
            let (status, job) = call(&s, "POST", "/api/v1/jobs", &body).await;
            assert_eq!(status, 202, "{job}");
            job["id"].as_str().unwrap().to_string()
        }
    };
    // Two jobs of 8 bytes each: over the budget of 10 as soon as the second ends, so the older
    // one goes then, with no third job posted.
    let older = post("12345678").await;
    s.jobs.finished(&older).await.unwrap();
    let newer = post("abcdefgh").await;
    s.jobs.finished(&newer).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(
        s.jobs.view(&older).is_none(),
        "the older job went at the newer one's end"
    );
    assert!(s.jobs.view(&newer).is_some());
    // And past the TTL, with nothing posted at all, the timer drops it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, err) = call(&s, "GET", &format!("/api/v1/jobs/{newer}"), "").await;
    assert_eq!(status, 404, "{err}");
}

#[tokio::test]
async fn a_web_page_elsewhere_cannot_drive_the_server_through_the_users_browser() {
    let (s, runner) = state();
    let body = r#"{"language": "python", "code": "x"}"#;
    let post = |headers: &'static [(&'static str, &'static str)]| {
        let s = s.clone();
        async move {
            let mut request = warp::test::request()
                .method("POST")
                .path("/api/v1/runs")
                .body(body);
            for (name, value) in headers {
                request = request.header(*name, *value);
            }
            let response = request.reply(&routes(s)).await;
            let json: Value = serde_json::from_slice(response.body()).unwrap_or(Value::Null);
            (response.status().as_u16(), json)
        }
    };
    // A cross-site form or a "simple" fetch cannot send JSON without a preflight.
    for kind in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let headers: &'static [(&str, &str)] = Box::leak(Box::new([("content-type", kind)]));
        let (status, err) = post(headers).await;
        assert_eq!(status, 415, "{kind}: {err}");
        assert_eq!(err["field"], "Content-Type");
    }
    let (status, _) = post(&[]).await;
    assert_eq!(status, 415, "no content type");
    // DNS rebinding: the page's own name in Host.
    let (status, err) = post(&[
        ("content-type", "application/json"),
        ("host", "evil.example:8080"),
    ])
    .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (421, Some("Host")),
        "{err}"
    );
    let response = warp::test::request()
        .path("/")
        .header("host", "evil.example")
        .reply(&routes(s.clone()))
        .await;
    assert_eq!(
        response.status(),
        421,
        "not even the IDE's page is served to another name"
    );
    // Another site's page, by its Origin.
    let (status, err) = post(&[
        ("content-type", "application/json"),
        ("host", "127.0.0.1:8080"),
        ("origin", "http://evil.example"),
    ])
    .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (403, Some("Origin")),
        "{err}"
    );
    assert!(
        runner.accepted.lock().unwrap().is_empty(),
        "nothing started"
    );
    // The server's own page, and a client that is no browser, are served.
    let (status, run) = post(&[
        ("content-type", "application/json; charset=utf-8"),
        ("host", "127.0.0.1:8080"),
        ("origin", "http://127.0.0.1:8080"),
    ])
    .await;
    assert_eq!(status, 200, "{run}");
    let (status, _) = post(&[
        ("content-type", "application/json"),
        ("host", "localhost:8080"),
    ])
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_job_view_is_streamed_and_equals_the_job_as_kept() {
    let (s, _) = state();
    // 300 KiB of output with multi-byte characters across the 64 KiB pieces it is read in,
    // control bytes and quotes, and a second write after stdin.
    let code: String = "é€\u{1}\"\\\n".repeat(300 * 1024 / 10);
    let body = json!({"language": "python", "code": code, "stdin": "tail"}).to_string();
    let (status, job) = call(&s, "POST", "/api/v1/jobs", &body).await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    let view = tokio::time::timeout(TIMEOUT, s.jobs.finished(&id))
        .await
        .unwrap()
        .unwrap();
    let (status, polled) = call(&s, "GET", &format!("/api/v1/jobs/{id}"), "").await;
    assert_eq!(status, 200);
    assert_eq!(polled, serde_json::to_value(&view).unwrap());
    assert_eq!(polled["stdout"].as_str().unwrap(), format!("{code}tail"));
    assert!(
        !polled["stdout"].as_str().unwrap().contains('\u{fffd}'),
        "no character was split"
    );
    assert_eq!(polled["summary"]["reason"], "exited");
}

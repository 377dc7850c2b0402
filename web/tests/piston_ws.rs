//! Piston v2's WebSocket, `/api/v2/connect`, over a real listener, with a real WebSocket
//! client, engine, daemon and images: what a Piston client sees, message by message, and the
//! close codes.
use futures_util::{SinkExt, StreamExt};
use onpyrunner::router::routes;
use onpyrunner_e2e::instance_containers;
use onpyrunner_protocol::piston::{Close, PistonStage, PistonStream, ServerMessage};
use onpyrunner_supervisor::engine::EngineConfig;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::Error as WsError;

mod support;
use support::{Client, Server, TIMEOUT};

async fn serve(test: &str, tweak: impl FnOnce(&mut EngineConfig)) -> Server {
    support::serve(&format!("pws-{test}"), |config, _| tweak(config)).await
}

impl Server {
    async fn connect(&self) -> Client {
        self.connect_to("/api/v2/connect", None)
            .await
            .expect("the upgrade succeeds")
    }
}

/// What a client heard: the server's messages in order, then how the server closed.
#[derive(Debug, Default)]
struct Heard {
    messages: Vec<ServerMessage>,
    /// The close frame's code and reason; `Some((0, ""))` for a connection that ended without
    /// one.
    close: Option<(u16, String)>,
}

impl Heard {
    fn text(&self, of: PistonStream) -> String {
        self.messages
            .iter()
            .filter_map(|m| match m {
                ServerMessage::Data { stream, data } if *stream == of => Some(data.as_str()),
                _ => None,
            })
            .collect()
    }

    fn stdout(&self) -> String {
        self.text(PistonStream::Stdout)
    }

    fn stderr(&self) -> String {
        self.text(PistonStream::Stderr)
    }

    /// The messages but the output: what says where the run is.
    fn steps(&self) -> Vec<ServerMessage> {
        self.messages
            .iter()
            .filter(|m| !matches!(m, ServerMessage::Data { .. }))
            .cloned()
            .collect()
    }

    fn closed_with(&self) -> Option<Close> {
        self.close
            .as_ref()
            .and_then(|(code, _)| Close::of_code(*code))
    }
}

async fn send(ws: &mut Client, message: Value) {
    tokio::time::timeout(TIMEOUT, ws.send(Message::text(message.to_string())))
        .await
        .expect("sent within the timeout")
        .unwrap();
}

/// Read into `heard` until `done` holds or the server closes (within the timeout).
async fn hear_until(ws: &mut Client, heard: &mut Heard, mut done: impl FnMut(&Heard) -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !done(heard) && heard.close.is_none() {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => heard.messages.push(
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("not a Piston message: {text}: {e}")),
                ),
                Some(Ok(Message::Close(frame))) => {
                    heard.close = Some(frame.map_or((0, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }))
                }
                // The heartbeat.
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("unexpected frame {other:?}"),
                None | Some(Err(_)) => heard.close = Some((0, String::new())),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; heard so far: {heard:?}"));
}

async fn hear_to_close(ws: &mut Client) -> Heard {
    let mut heard = Heard::default();
    hear_until(ws, &mut heard, |_| false).await;
    heard
}

fn init(language: &str, code: &str) -> Value {
    json!({"type": "init", "language": language, "version": "*", "files": [{"content": code}]})
}

fn runtime(language: &str) -> ServerMessage {
    let found = onpyrunner::piston::find_runtime(language, "*").unwrap();
    ServerMessage::Runtime {
        language: found.language,
        version: found.version,
    }
}

fn stage(stage: PistonStage) -> ServerMessage {
    ServerMessage::Stage { stage }
}

fn exit(stage: PistonStage, code: Option<i32>, signal: Option<&str>) -> ServerMessage {
    ServerMessage::Exit {
        stage,
        code,
        signal: signal.map(str::to_string),
    }
}

fn stdin(data: &str) -> Value {
    json!({"type": "data", "stream": "stdin", "data": data})
}

/// A program that says `waiting` and then waits for a line of input.
const WAITING: &str = "print('waiting', flush=True)\ninput()";

async fn start_waiting(ws: &mut Client) -> Heard {
    send(ws, init("python", WAITING)).await;
    let mut heard = Heard::default();
    hear_until(ws, &mut heard, |h| h.stdout().contains("waiting")).await;
    assert!(heard.close.is_none(), "{heard:?}");
    heard
}

#[tokio::test]
async fn a_python_program_answers_each_line_of_stdin_as_it_comes() {
    let server = serve("hello", |_| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        init(
            "py",
            "name = input('name? ')\nprint(f'hello {name}')\nagain = input()\nprint(f'bye {again}')",
        ),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| h.stdout().contains("name? ")).await;
    send(&mut ws, stdin("Ada\n")).await;
    // The answer comes while stdin is still open: the program is waiting for its next line.
    hear_until(&mut ws, &mut heard, |h| h.stdout().contains("hello Ada\n")).await;
    assert!(heard.close.is_none(), "{heard:?}");
    send(&mut ws, stdin("for now")).await;
    send(&mut ws, stdin("\n")).await;
    hear_until(&mut ws, &mut heard, |_| false).await;
    assert_eq!(heard.stdout(), "name? hello Ada\nbye for now\n");
    assert_eq!(
        heard.steps(),
        [
            runtime("python"),
            stage(PistonStage::Run),
            exit(PistonStage::Run, Some(0), None),
        ]
    );
    assert_eq!(heard.closed_with(), Some(Close::JobCompleted));
    assert_eq!(heard.close.unwrap().1, "Job Completed");
    server.finish().await;
}

#[tokio::test]
async fn a_c_program_has_a_compile_stage_then_a_run_stage_each_with_its_exit() {
    let server = serve("c", |_| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        init(
            "c",
            "#include <stdio.h>\nint main(void) { char b[32]; if (!fgets(b, 32, stdin)) return 9;\
             printf(\"hello %s\", b); return 3; }\n",
        ),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| {
        h.messages.contains(&stage(PistonStage::Run))
    })
    .await;
    send(&mut ws, stdin("you\n")).await;
    hear_until(&mut ws, &mut heard, |_| false).await;
    assert_eq!(heard.stdout(), "hello you\n");
    assert_eq!(
        heard.steps(),
        [
            runtime("c"),
            stage(PistonStage::Compile),
            exit(PistonStage::Compile, Some(0), None),
            stage(PistonStage::Run),
            exit(PistonStage::Run, Some(3), None),
        ]
    );
    assert_eq!(heard.closed_with(), Some(Close::JobCompleted));
    server.finish().await;
}

#[tokio::test]
async fn a_compile_error_ends_after_the_compile_stage_without_a_run_stage() {
    let server = serve("compile-error", |_| {}).await;
    let mut ws = server.connect().await;
    send(&mut ws, init("gcc", "int main( {")).await;
    let heard = hear_to_close(&mut ws).await;
    assert!(heard.stderr().contains("error"), "{heard:?}");
    assert_eq!(
        heard.steps(),
        [
            runtime("c"),
            stage(PistonStage::Compile),
            exit(PistonStage::Compile, Some(1), None),
        ]
    );
    assert_eq!(heard.closed_with(), Some(Close::JobCompleted));
    server.finish().await;
}

#[tokio::test]
async fn a_runtime_error_exits_with_its_code_and_its_stderr() {
    let server = serve("runtime-error", |_| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        init("python3", "print('before')\nraise ValueError('bad')"),
    )
    .await;
    let heard = hear_to_close(&mut ws).await;
    assert_eq!(heard.stdout(), "before\n");
    assert!(heard.stderr().contains("ValueError: bad"), "{heard:?}");
    assert_eq!(
        heard.steps().last(),
        Some(&exit(PistonStage::Run, Some(1), None))
    );
    assert_eq!(heard.closed_with(), Some(Close::JobCompleted));
    server.finish().await;
}

#[tokio::test]
async fn each_close_code_is_pistons() {
    let server = serve("close-codes", |_| {}).await;

    // 4001: no init within a second.
    let mut ws = server.connect().await;
    let opened = Instant::now();
    let heard = hear_to_close(&mut ws).await;
    assert_eq!(heard.closed_with(), Some(Close::InitializationTimeout));
    assert_eq!(heard.close.as_ref().unwrap().1, "Initialization Timeout");
    let took = opened.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert!(heard.messages.is_empty(), "{heard:?}");

    // 4003: data or a signal before init.
    for message in [stdin("x\n"), json!({"type": "signal", "signal": "SIGKILL"})] {
        let mut ws = server.connect().await;
        send(&mut ws, message).await;
        let heard = hear_to_close(&mut ws).await;
        assert_eq!(
            heard.closed_with(),
            Some(Close::NotInitialized),
            "{heard:?}"
        );
    }

    // 4002: an error message first, Piston's words for an invalid init, or bad JSON.
    for (message, error) in [
        (
            json!({"type": "init", "version": "*", "files": []}).to_string(),
            "language is required as a string",
        ),
        (init("cobol", "x").to_string(), "cobol-* runtime is unknown"),
        ("{oops".to_string(), "invalid message: not JSON"),
    ] {
        let mut ws = server.connect().await;
        ws.send(Message::text(message)).await.unwrap();
        let heard = hear_to_close(&mut ws).await;
        assert_eq!(heard.closed_with(), Some(Close::ErrorNotified), "{heard:?}");
        match heard.messages.as_slice() {
            [ServerMessage::Error { message }] => assert!(message.starts_with(error), "{message}"),
            other => panic!("{other:?}"),
        }
    }

    // 4000, 4004, 4005: during a run, which the close ends.
    for (message, close) in [
        (init("python", "print(1)"), Close::AlreadyInitialized),
        (
            json!({"type": "data", "stream": "stdout", "data": "x"}),
            Close::CanOnlyWriteToStdin,
        ),
        (
            json!({"type": "signal", "signal": "SIGNOPE"}),
            Close::InvalidSignal,
        ),
        (
            json!({"type": "signal", "signal": 32}),
            Close::InvalidSignal,
        ),
    ] {
        let mut ws = server.connect().await;
        let mut heard = start_waiting(&mut ws).await;
        // An unknown type is ignored, as Piston ignores it.
        send(&mut ws, json!({"type": "eof"})).await;
        send(&mut ws, message).await;
        hear_until(&mut ws, &mut heard, |_| false).await;
        assert_eq!(heard.closed_with(), Some(close), "{heard:?}");
        assert_eq!(heard.close.as_ref().unwrap().1, close.reason());
        assert!(
            server.no_containers_within(10).await,
            "{close:?}: the run's container is still there"
        );
    }
    server.finish().await;
}

/// A program that ticks until SIGTERM, which it catches: it says so and exits with 3.
const CATCHES_SIGTERM: &str = "import signal, sys, time
def bye(*_):
    print('caught SIGTERM', flush=True)
    sys.exit(3)
signal.signal(signal.SIGTERM, bye)
while True:
    print('tick', flush=True)
    time.sleep(0.1)";

#[tokio::test]
async fn a_signal_reaches_the_program_which_handles_it_or_dies_of_it() {
    let server = serve("signal", |_| {}).await;
    let mut ws = server.connect().await;
    send(&mut ws, init("python", CATCHES_SIGTERM)).await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| h.stdout().contains("tick")).await;
    // A signal a process ignores by default does nothing: the ticks go on.
    send(&mut ws, json!({"type": "signal", "signal": "SIGWINCH"})).await;
    let ticks = heard.stdout().matches("tick").count();
    hear_until(&mut ws, &mut heard, |h| {
        h.stdout().matches("tick").count() >= ticks + 3
    })
    .await;
    assert!(heard.close.is_none(), "{heard:?}");
    // The program's own handler runs: its output, then its own exit code.
    send(&mut ws, json!({"type": "signal", "signal": "SIGTERM"})).await;
    hear_until(&mut ws, &mut heard, |_| false).await;
    assert!(heard.stdout().ends_with("caught SIGTERM\n"), "{heard:?}");
    assert_eq!(
        heard.steps().last(),
        Some(&exit(PistonStage::Run, Some(3), None))
    );
    assert_eq!(heard.closed_with(), Some(Close::JobCompleted));

    // A busy loop with no handler dies of the signal, sent as a number (SIGUSR1), and says so.
    let busy = "print('looping', flush=True)\nwhile True: pass";
    for (signal, name) in [(json!(10), "SIGUSR1"), (json!("SIGKILL"), "SIGKILL")] {
        let mut ws = server.connect().await;
        send(&mut ws, init("python", busy)).await;
        let mut heard = Heard::default();
        hear_until(&mut ws, &mut heard, |h| h.stdout().contains("looping")).await;
        let sent = Instant::now();
        send(&mut ws, json!({"type": "signal", "signal": signal})).await;
        hear_until(&mut ws, &mut heard, |_| false).await;
        assert!(
            sent.elapsed() < Duration::from_secs(2),
            "{name}: {:?}",
            sent.elapsed()
        );
        assert_eq!(
            heard.steps().last(),
            Some(&exit(PistonStage::Run, None, Some(name))),
            "{heard:?}"
        );
        assert_eq!(heard.closed_with(), Some(Close::JobCompleted));
    }
    assert!(server.no_containers_within(10).await);
    server.finish().await;
}

#[tokio::test]
async fn a_client_that_disconnects_has_its_run_killed_at_once() {
    let server = serve("disconnect", |_| {}).await;
    // With a close frame, then with the TCP connection dropped: no grace period either way.
    for goodbye in [true, false] {
        let mut ws = server.connect().await;
        start_waiting(&mut ws).await;
        assert_eq!(
            instance_containers(&server.docker(), &server.instance)
                .await
                .len(),
            1
        );
        let left = Instant::now();
        if goodbye {
            ws.close(None).await.unwrap();
        }
        drop(ws);
        assert!(
            server.no_containers_within(10).await,
            "goodbye {goodbye}: the run's container is still there after 10 s"
        );
        assert!(left.elapsed() < Duration::from_secs(10));
    }
    assert_eq!(
        server
            .state
            .engine
            .status()
            .ended(onpyrunner_protocol::RunState::Stopped),
        2
    );
    server.finish().await;
}

#[tokio::test]
async fn the_prefix_a_trailing_slash_the_origin_check_and_the_size_caps_hold() {
    let server = serve("guards", |_| {}).await;
    for path in [
        "/api/v2/connect/",
        "/api/v2/piston/connect",
        "/api/v2/piston/connect/",
    ] {
        let mut ws = server.connect_to(path, None).await.expect(path);
        send(&mut ws, init("python", "print('hi')")).await;
        let heard = hear_to_close(&mut ws).await;
        assert_eq!(heard.stdout(), "hi\n", "{path}");
        assert_eq!(heard.closed_with(), Some(Close::JobCompleted), "{path}");
    }
    match server
        .connect_to("/api/v2/connect", Some("http://evil.example"))
        .await
    {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(body["message"], body["error"], "{body}");
        }
        other => panic!("expected 403, got {other:?}"),
    }
    let own = format!("http://{}", server.addr);
    let mut ws = server
        .connect_to("/api/v2/connect", Some(&own))
        .await
        .expect("own origin");
    let huge = init("python", &"#".repeat(3 * 1024 * 1024));
    let _ = ws.send(Message::text(huge.to_string())).await;
    let heard = hear_to_close(&mut ws).await;
    assert!(
        matches!(heard.close, Some((1009, _)) | Some((0, _))),
        "message too big: {heard:?}"
    );
    assert_eq!(server.state.engine.status().accepted, 3);
    server.finish().await;
}

#[tokio::test]
async fn a_full_queue_is_refused_with_an_error_on_the_socket_and_pistons_message_over_rest() {
    let server = serve("full", |config| {
        config.max_running = 1;
        config.max_queued = 0;
    })
    .await;
    let mut holder = server.connect().await;
    start_waiting(&mut holder).await;
    let mut ws = server.connect().await;
    send(&mut ws, init("python", "print(1)")).await;
    let heard = hear_to_close(&mut ws).await;
    assert_eq!(heard.closed_with(), Some(Close::ErrorNotified), "{heard:?}");
    assert!(
        matches!(heard.messages.as_slice(), [ServerMessage::Error { .. }]),
        "{heard:?}"
    );
    let filter = routes(server.state.clone());
    let response = warp::test::request()
        .method("POST")
        .path("/api/v2/execute")
        .header("host", "127.0.0.1:2000")
        .body(
            json!({"language": "py", "version": "*", "files": [{"content": "print(1)"}]})
                .to_string(),
        )
        .reply(&filter);
    let response = tokio::time::timeout(TIMEOUT, response).await.unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["message"], body["error"], "{body}");
    assert!(body["limit"].is_string(), "{body}");
    drop(holder);
    server.finish().await;
}

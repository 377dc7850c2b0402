//! `/api/v1/ws` over a real listener, with a real WebSocket client, engine, daemon and images.
use futures_util::{SinkExt, StreamExt};
use onpyrunner_e2e::instance_containers;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::Error as WsError;

mod support;
use support::{serve, Client, TIMEOUT};

impl support::Server {
    async fn connect(&self) -> Client {
        self.connect_to("/api/v1/ws", None)
            .await
            .expect("the upgrade succeeds")
    }
}

/// What a client heard of one run.
#[derive(Debug, Default)]
struct Heard {
    states: Vec<String>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    summary: Option<Value>,
    errors: Vec<Value>,
    /// The run's id and the position just after the last thing heard (docs/protocol.md).
    run: Option<String>,
    seq: u64,
    resumed: Vec<Value>,
    /// The `compiled` message, with how much stdout and stderr came before it.
    compiled: Option<(Value, usize, usize)>,
}

impl Heard {
    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    fn summary(&self) -> &Value {
        self.summary.as_ref().expect("a summary was heard")
    }
}

/// Start a program that says `waiting` and then waits for a line of input; hear up to there.
async fn start_waiting_run(ws: &mut Client) -> Heard {
    send(
        ws,
        json!({"type": "run", "language": "python",
               "code": "print('waiting', flush=True)\ninput()"}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(ws, &mut heard, |h| h.stdout_text().contains("waiting")).await;
    heard
}

async fn send(ws: &mut Client, message: Value) {
    ws.send(Message::text(message.to_string())).await.unwrap();
}

/// Read messages into `heard` until `done` holds (within the timeout).
async fn hear_until(ws: &mut Client, heard: &mut Heard, mut done: impl FnMut(&Heard) -> bool) {
    tokio::time::timeout(TIMEOUT, async {
        while !done(heard) {
            let message = ws
                .next()
                .await
                .expect("the connection stays open")
                .expect("a message");
            match message {
                Message::Binary(data) => {
                    match data.first() {
                        Some(1) => heard.stdout.extend_from_slice(&data[1..]),
                        Some(2) => heard.stderr.extend_from_slice(&data[1..]),
                        other => panic!("output frame with stream byte {other:?}"),
                    }
                    heard.seq += data.len() as u64 - 1;
                }
                Message::Text(text) => {
                    let value: Value = serde_json::from_str(&text).unwrap();
                    if let Some(seq) = value["seq"].as_u64() {
                        heard.seq = seq;
                    }
                    if let Some(run) = value["run"].as_str() {
                        heard.run = Some(run.to_string());
                    }
                    match value["type"].as_str().unwrap() {
                        "state" => heard
                            .states
                            .push(value["state"].as_str().unwrap().to_string()),
                        "summary" => heard.summary = Some(value),
                        "error" => heard.errors.push(value),
                        "queued" | "pong" => {}
                        "resumed" => heard.resumed.push(value),
                        "compiled" => {
                            assert!(heard.compiled.is_none(), "compiled twice: {value}");
                            let at = (heard.stdout.len(), heard.stderr.len());
                            heard.compiled = Some((value, at.0, at.1));
                        }
                        other => panic!("unknown message type {other}"),
                    }
                }
                _ => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out; heard so far: {heard:?}"));
}

async fn hear_run(ws: &mut Client) -> Heard {
    let mut heard = Heard::default();
    hear_until(ws, &mut heard, |h| h.summary.is_some()).await;
    heard
}

#[tokio::test]
async fn an_interactive_program_then_another_run_on_the_same_connection() {
    let server = serve("ws-interactive", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python",
               "code": "name = input('What is your name? ')\nprint(f'Hello, {name}!')"}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| {
        h.stdout_text().contains("What is your name? ")
    })
    .await;
    assert_eq!(heard.states, ["READY", "RUNNING"]);
    send(&mut ws, json!({"type": "stdin", "data": "Ada\n"})).await;
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    assert_eq!(heard.stdout_text(), "What is your name? Hello, Ada!\n");
    assert_eq!(heard.states, ["READY", "RUNNING", "FINISHED"]);
    let summary = heard.summary();
    assert_eq!(summary["state"], "FINISHED");
    assert_eq!(summary["exit_code"], 0);
    assert!(summary["memory_kib"].as_u64().unwrap() > 0);
    assert!(summary["run"].as_str().is_some());

    // The next run, with batch input and EOF right after it.
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "stdin": "1\n2\n",
               "code": "import sys\nprint(sum(int(l) for l in sys.stdin))"}),
    )
    .await;
    send(&mut ws, json!({"type": "eof"})).await;
    let heard = hear_run(&mut ws).await;
    assert_eq!(heard.stdout_text(), "3\n");
    assert_eq!(heard.summary()["exit_code"], 0);
    ws.close(None).await.unwrap();
    server.finish().await;
}

#[tokio::test]
async fn a_websocket_run_shows_what_python_printed_before_it_reads_without_a_flush() {
    // A WebSocket run is interactive: CPython runs with -u (the table's run_live), where a
    // REST run is buffered as judges run it and would show the greeting only at the end.
    let server = serve("ws-live", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python",
               "code": "import sys\nprint('Hi! Your name?')\nname = sys.stdin.readline().strip()\nprint(f'Hello, {name}!')"}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| {
        h.stdout_text().contains("Your name?\n") || h.summary.is_some()
    })
    .await;
    assert!(heard.summary.is_none(), "{:?}", heard.stdout_text());
    send(&mut ws, json!({"type": "stdin", "data": "Ada\n"})).await;
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    assert_eq!(heard.stdout_text(), "Hi! Your name?\nHello, Ada!\n");
    server.finish().await;
}

#[tokio::test]
async fn output_is_binary_safe_and_streams_are_kept_apart() {
    let server = serve("ws-binary", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python",
               "code": "import sys\nsys.stdout.buffer.write(b'\\xff\\xfe\\x00ok\\xc3')\nsys.stdout.flush()\nsys.stderr.write('oops')"}),
    )
    .await;
    let heard = hear_run(&mut ws).await;
    assert_eq!(heard.stdout, b"\xff\xfe\x00ok\xc3");
    assert_eq!(heard.stderr, b"oops");
    server.finish().await;
}

#[tokio::test]
async fn a_compiled_language_says_when_its_compile_ended_between_the_warnings_and_the_output() {
    let server = serve("ws-compiled", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "c",
               "code": "#include <stdio.h>\n#warning careful\nint main(void) { puts(\"out\"); return 0; }\n"}),
    )
    .await;
    let heard = hear_run(&mut ws).await;
    let (compiled, stdout_before, stderr_before) = heard.compiled.clone().expect("compiled");
    assert_eq!(compiled["stage"], "compile", "{compiled}");
    assert_eq!(compiled["exit_code"], 0, "{compiled}");
    assert!(compiled["wall_ms"].as_u64().is_some(), "{compiled}");
    assert_eq!(stdout_before, 0, "{heard:?}");
    assert_eq!(
        stderr_before,
        heard.stderr.len(),
        "the warning came before: {heard:?}"
    );
    assert!(String::from_utf8_lossy(&heard.stderr).contains("#warning careful"));
    assert_eq!(heard.stdout_text(), "out\n");
    // A language without a compile stage has none.
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "code": "print(1)"}),
    )
    .await;
    let heard = hear_run(&mut ws).await;
    assert!(heard.compiled.is_none(), "{heard:?}");
    server.finish().await;
}

#[tokio::test]
async fn stop_ends_a_program_that_ignores_sigterm_as_stopped() {
    let server = serve("ws-stop", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python",
               "code": "import signal\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('looping', flush=True)\nwhile True: pass"}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| h.stdout_text().contains("looping")).await;
    let pressed = Instant::now();
    send(&mut ws, json!({"type": "stop"})).await;
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    assert!(
        pressed.elapsed() < Duration::from_secs(1),
        "stopped in {:?}",
        pressed.elapsed()
    );
    assert_eq!(heard.summary()["state"], "STOPPED");
    assert_eq!(heard.summary()["reason"], "stopped");
    // Nothing to stop any more: an error, and the connection goes on.
    send(&mut ws, json!({"type": "stop"})).await;
    hear_until(&mut ws, &mut heard, |h| !h.errors.is_empty()).await;
    assert_eq!(heard.errors[0]["status"], 409);
    server.finish().await;
}

#[tokio::test]
async fn bad_messages_get_errors_naming_the_field_and_nothing_starts() {
    let server = serve("ws-errors", |_, _| {}).await;
    let mut ws = server.connect().await;
    let mut heard = Heard::default();
    ws.send(Message::text("{not json")).await.unwrap();
    send(
        &mut ws,
        json!({"type": "run", "language": "cobol", "code": "x"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "code": "x", "limits": {"wall_ms": 999_999_999}}),
    )
    .await;
    send(&mut ws, json!({"type": "dance"})).await;
    send(&mut ws, json!({"type": "stdin", "data": "x"})).await;
    hear_until(&mut ws, &mut heard, |h| h.errors.len() == 5).await;
    let e = &heard.errors;
    assert_eq!(e[0]["status"], 400, "{e:?}");
    assert_eq!(
        (e[1]["status"].as_u64(), e[1]["field"].as_str()),
        (Some(422), Some("language"))
    );
    assert_eq!(e[2]["field"], "limits.wall_ms");
    assert!(e[2]["limit"].as_str().is_some(), "{e:?}");
    assert_eq!(e[3]["status"], 422);
    assert_eq!(e[4]["status"], 409);
    assert!(heard.states.is_empty(), "nothing started: {heard:?}");

    // A second run while one is going is refused; the first one goes on.
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "code": "input()\nprint('first')"}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "code": "print('second')"}),
    )
    .await;
    hear_until(&mut ws, &mut heard, |h| h.errors.len() == 6).await;
    assert_eq!(heard.errors[5]["status"], 409);
    assert!(heard.errors[5]["error"]
        .as_str()
        .unwrap()
        .contains("still going"));
    send(&mut ws, json!({"type": "stdin", "data": "\n"})).await;
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    assert_eq!(heard.stdout_text(), "first\n");
    server.finish().await;
}

#[tokio::test]
async fn origins_off_the_allow_list_are_refused_and_oversized_messages_close_the_connection() {
    let server = serve("ws-origin", |_, _| {}).await;
    let own = format!("http://{}", server.addr);
    match server
        .connect_to("/api/v1/ws", Some("http://evil.example"))
        .await
    {
        Err(WsError::Http(response)) => assert_eq!(response.status(), 403),
        other => panic!("expected 403, got {other:?}"),
    }
    let mut ws = server
        .connect_to("/api/v1/ws", Some(&own))
        .await
        .expect("own origin");

    let huge = json!({"type": "run", "language": "python", "code": "x".repeat(3 * 1024 * 1024)});
    // The frame cap (256 KiB) or the message cap (2 MiB) closes the connection.
    let _ = ws.send(Message::text(huge.to_string())).await;
    let closed = tokio::time::timeout(TIMEOUT, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) => return None,
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .expect("closed within the timeout");
    if let Some(code) = closed {
        assert_eq!(code, 1009, "message too big");
    }
    assert_eq!(server.state.engine.status().accepted, 0);
    server.finish().await;
}

#[tokio::test]
async fn a_client_that_vanishes_has_its_run_killed_and_container_removed_within_seconds() {
    let server = serve("ws-vanish", |_, ws| {
        ws.ping_interval = Duration::from_millis(300);
        // Not resumed within it: killed (the grace period is tested on its own below).
        ws.resume_grace = Duration::from_millis(500);
    })
    .await;
    let docker = server.docker();
    let mut ws = server.connect().await;
    start_waiting_run(&mut ws).await;
    assert_eq!(
        instance_containers(&docker, &server.instance).await.len(),
        1
    );
    // The client stops reading and answering pings but keeps its TCP connection open.
    let vanished = Instant::now();
    let container_gone = server.no_containers_within(10).await;
    assert!(
        container_gone,
        "the run's container is still there after 10 s"
    );
    let took = vanished.elapsed();
    assert!(
        took >= Duration::from_millis(600),
        "dropped too early: {took:?}"
    );
    assert_eq!(
        server
            .state
            .engine
            .status()
            .ended(onpyrunner_protocol::RunState::Stopped),
        1
    );
    drop(ws);
    server.finish().await;
}

#[tokio::test]
async fn a_slow_client_slows_the_program_down_instead_of_growing_memory() {
    let server = serve("ws-slow", |config, _| {
        config.caps.output_bytes = 256 * 1024 * 1024;
        config.caps.raise = true;
    })
    .await;
    let mut ws = server.connect().await;
    // 24 MiB of output: more than every buffer between the program and this client.
    send(
        &mut ws,
        json!({"type": "run", "language": "python",
               "limits": {"output_bytes": 128 * 1024 * 1024, "wall_ms": 60_000},
               "code": "import sys\nb = b'x' * 65536\nfor _ in range(384): sys.stdout.buffer.write(b)"}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| h.stdout.len() > 1024 * 1024).await;
    // Stop reading for 3 s: the program must wait for us.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let resumed = Instant::now();
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    let summary = heard.summary();
    eprintln!("the rest arrived in {:?}", resumed.elapsed());
    assert_eq!(heard.stdout.len(), 24 * 1024 * 1024, "{summary}");
    assert_eq!(summary["exit_code"], 0, "{summary}");
    assert!(
        summary["wall_ms"].as_u64().unwrap() >= 2500,
        "the program did not wait for the client: {summary}"
    );
    server.finish().await;
}

/// A program that writes to both streams for a while, then waits for a line of input.
const CHATTY: &str = "import sys, time\n\
for i in range(40):\n    print(i, flush=True)\n    print('e', i, file=sys.stderr, flush=True)\n    time.sleep(0.05)\n\
print('waiting', flush=True)\nprint('got', input())";

fn chatty_expected() -> (String, String) {
    let mut out: String = (0..40).map(|i| format!("{i}\n")).collect();
    out.push_str("waiting\ngot back\n");
    let err = (0..40).map(|i| format!("e {i}\n")).collect();
    (out, err)
}

#[tokio::test]
async fn a_dropped_connection_resumes_by_id_and_seq_with_nothing_lost_or_repeated() {
    let server = serve("ws-resume", |_, _| {}).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "run", "language": "python", "code": CHATTY}),
    )
    .await;
    let mut heard = Heard::default();
    hear_until(&mut ws, &mut heard, |h| h.stdout_text().contains("5\n")).await;
    let run = heard.run.clone().expect("the run's id");
    assert_eq!(run.len(), 32, "128 random bits: {run}");
    // The connection breaks without a close frame (a phone in a tunnel).
    drop(ws);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "resume", "run": run, "seq": heard.seq}),
    )
    .await;
    hear_until(&mut ws, &mut heard, |h| {
        h.stdout_text().contains("waiting\n")
    })
    .await;
    assert_eq!(heard.resumed.len(), 1, "{heard:?}");
    assert_eq!(heard.resumed[0]["state"], "RUNNING");
    // Stdin works again on the new connection.
    send(&mut ws, json!({"type": "stdin", "data": "back\n"})).await;
    hear_until(&mut ws, &mut heard, |h| h.summary.is_some()).await;
    let (out, err) = chatty_expected();
    assert_eq!(heard.stdout_text(), out, "stdout as an undisturbed run's");
    assert_eq!(
        String::from_utf8_lossy(&heard.stderr),
        err,
        "stderr likewise"
    );
    assert_eq!(heard.states, ["READY", "RUNNING", "FINISHED"]);
    assert_eq!(heard.summary()["exit_code"], 0);
    assert_eq!(heard.summary()["run"], run.as_str());

    // Resumed again from the start after its end: the whole run once more, exact.
    let mut again = Heard::default();
    send(&mut ws, json!({"type": "resume", "run": run, "seq": 0})).await;
    hear_until(&mut ws, &mut again, |h| h.summary.is_some()).await;
    assert_eq!(again.stdout_text(), out);
    assert_eq!(again.seq, heard.seq, "the same log, the same end");
    // Past the end, and an unknown run, are refused naming the field.
    send(
        &mut ws,
        json!({"type": "resume", "run": run, "seq": heard.seq + 1}),
    )
    .await;
    send(
        &mut ws,
        json!({"type": "resume", "run": "0".repeat(32), "seq": 0}),
    )
    .await;
    hear_until(&mut ws, &mut again, |h| h.errors.len() == 2).await;
    assert_eq!(again.errors[0]["field"], "seq");
    assert_eq!(again.errors[0]["status"], 422);
    assert_eq!(again.errors[1]["field"], "run");
    assert_eq!(again.errors[1]["status"], 404);
    ws.close(None).await.unwrap();
    server.finish().await;
}

#[tokio::test]
async fn a_run_whose_client_never_comes_back_is_killed_and_removed_after_the_grace_period() {
    let grace = Duration::from_secs(2);
    let server = serve("ws-grace", |_, ws| ws.resume_grace = grace).await;
    let mut ws = server.connect().await;
    let heard = start_waiting_run(&mut ws).await;
    let run = heard.run.clone().unwrap();
    drop(ws);
    let dropped = Instant::now();
    let gone = server.no_containers_within(15).await;
    assert!(
        gone,
        "the run's container outlived its grace period by 13 s"
    );
    assert!(
        dropped.elapsed() >= grace,
        "killed before the grace period ended: {:?}",
        dropped.elapsed()
    );
    // It ended as client_gone; resuming it now finds it ended (summary and all), or gone.
    let mut ws = server.connect().await;
    send(
        &mut ws,
        json!({"type": "resume", "run": run, "seq": heard.seq}),
    )
    .await;
    let mut after = Heard::default();
    hear_until(&mut ws, &mut after, |h| {
        h.summary.is_some() || !h.errors.is_empty()
    })
    .await;
    if let Some(summary) = &after.summary {
        assert_eq!(summary["reason"], "client_gone", "{summary}");
        assert_eq!(summary["state"], "STOPPED");
    }
    assert_eq!(
        server
            .state
            .engine
            .status()
            .ended(onpyrunner_protocol::RunState::Stopped),
        1
    );
    ws.close(None).await.unwrap();
    server.finish().await;
}

//! Piston v2's WebSocket, `/api/v2/connect` (engineer-man/piston, API 3.1.1,
//! `api/src/api/v2.js`), as a rendering of our runs: one run per connection. The client's
//! `init` is an execute request, checked by `piston::parse` as `POST /api/v2/execute` checks
//! it; the run's events become Piston's `runtime`, `stage`, `data` and `exit` messages
//! ([`Event::Compiled`] ends the compile stage); its close codes are Piston's
//! ([`Close`]). The connection is `ws_socket`'s (origin, per-client cap, size caps,
//! heartbeat, backpressure), as `/api/v1/ws`'s is.
//!
//! Where Piston is broken we are not (docs/compat.md, "WebSocket"): a `signal` reaches the
//! program, and a connection that ends, however it ends, kills its run at once (no resume
//! here).
//!
//! Two tasks besides the writer: the reader (this connection's own task) reads the client and
//! writes stdin; a forwarder turns the run's events into messages, waiting whenever the client
//! is slow, so that a slow client slows the program.
use crate::error::ApiError;
use crate::identity::Caller;
use crate::piston::{self, Execute, Runtime};
use crate::request::caps_of;
use crate::state::AppState;
use crate::ws_socket::Socket;
use bytes::{Bytes, BytesMut};
use onpyrunner_protocol::piston::{
    signal_number, Close, OutputText, PistonStage, PistonStream, ServerMessage, INIT_TIMEOUT_MS,
};
use onpyrunner_protocol::run::{OutputStream, RunState};
use onpyrunner_protocol::{Event, Reason};
use onpyrunner_supervisor::session::{RunControl, Session};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// Stdin the reader holds while the program's stdin channel is full, before it stops reading
/// the connection. Below it the reader goes on hearing the client, so a `signal` or a close
/// behind stdin the program has not read is acted on at once.
const STDIN_HELD_BYTES: usize = 64 * 1024;

/// The connection's run, once `init` started it.
struct Job {
    control: RunControl,
    /// Holds the connection's attachment to the run.
    forwarder: JoinHandle<()>,
}

/// Why a client message ends the connection.
enum Refusal {
    /// Closed with this code, as Piston closes.
    Close(Close),
    /// An `error` message, then 4002.
    Error(String),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Error(e.error)
    }
}

/// Stdin the program's channel had no room for yet, in the order it came.
#[derive(Default)]
struct HeldStdin {
    to: Option<mpsc::Sender<Bytes>>,
    bytes: BytesMut,
}

/// Serve one connection, once upgraded (`ws_socket::upgrade`).
pub async fn connection(mut socket: Socket, state: AppState, caller: Caller) {
    let init_by = tokio::time::sleep(Duration::from_millis(INIT_TIMEOUT_MS));
    tokio::pin!(init_by);
    let mut job: Option<Job> = None;
    let mut held = HeldStdin::default();
    // Once we closed, the client's answering close is awaited and nothing else is acted on.
    let mut closed = false;
    loop {
        let to = held.to.clone();
        let message = tokio::select! {
            room = async { to.as_ref().expect("held stdin has a channel").reserve().await },
                if !held.bytes.is_empty() =>
            {
                if let Ok(room) = room {
                    room.send(held.bytes.split().freeze());
                } else {
                    held.bytes.clear(); // the program's stdin is closed: it has ended
                }
                continue;
            }
            message = socket.next(), if held.bytes.len() < STDIN_HELD_BYTES => match message {
                Some(message) => message,
                None => break,
            },
            () = &mut init_by, if job.is_none() && !closed => {
                close(&socket, Close::InitializationTimeout).await;
                closed = true;
                continue;
            }
        };
        if closed {
            continue;
        }
        let text = match &message {
            Message::Text(text) => text.as_str(),
            // Piston parses a binary frame as JSON too.
            Message::Binary(data) => std::str::from_utf8(data).unwrap_or("\u{fffd}"),
            _ => continue,
        };
        if let Err(refusal) = handle(text, &state, &caller, &mut job, &mut held, &socket) {
            let code = match refusal {
                Refusal::Close(code) => code,
                Refusal::Error(message) => {
                    send(&socket, ServerMessage::Error { message }).await;
                    Close::ErrorNotified
                }
            };
            // Nothing of the run follows our close: it ends here.
            end(&mut job);
            close(&socket, code).await;
            closed = true;
        }
    }
    end(&mut job);
}

/// Kill the connection's run, if it is still going, and stop forwarding it.
fn end(job: &mut Option<Job>) {
    if let Some(job) = job.take() {
        job.forwarder.abort();
        job.control.stop(Reason::ClientGone);
    }
}

async fn send(socket: &Socket, message: ServerMessage) {
    let _ = socket.send(Message::text(message.to_json())).await;
}

async fn close(socket: &Socket, code: Close) {
    let _ = socket.send(close_frame(code)).await;
}

fn close_frame(code: Close) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code.code()),
        reason: code.reason().into(),
    }))
}

/// One client message, read as Piston reads it: by `type`, an unknown one ignored.
fn handle(
    text: &str,
    state: &AppState,
    caller: &Caller,
    job: &mut Option<Job>,
    held: &mut HeldStdin,
    socket: &Socket,
) -> Result<(), Refusal> {
    let message: Value = serde_json::from_str(text)
        .map_err(|e| Refusal::Error(format!("invalid message: not JSON: {e}")))?;
    match message.get("type").and_then(Value::as_str) {
        Some("init") => {
            if job.is_some() {
                return Err(Refusal::Close(Close::AlreadyInitialized));
            }
            *job = Some(start(&message, state, caller, socket)?);
        }
        Some("data") => {
            let job = job.as_ref().ok_or(Refusal::Close(Close::NotInitialized))?;
            if message.get("stream").and_then(Value::as_str) != Some("stdin") {
                return Err(Refusal::Close(Close::CanOnlyWriteToStdin));
            }
            let Some(data) = message.get("data").and_then(Value::as_str) else {
                return Err(Refusal::Error("data must be a string".into()));
            };
            write_stdin(&job.control, held, data.as_bytes());
        }
        Some("signal") => {
            let job = job.as_ref().ok_or(Refusal::Close(Close::NotInitialized))?;
            let signal = match message.get("signal") {
                Some(Value::String(name)) => signal_number(name),
                // Ours: the number of a signal Piston names.
                Some(Value::Number(n)) => n
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .filter(|&n| onpyrunner_protocol::piston::signal_name(n).is_some()),
                _ => None,
            };
            let signal = signal.ok_or(Refusal::Close(Close::InvalidSignal))?;
            deliver(&job.control, signal);
        }
        _ => {}
    }
    Ok(())
}

/// Send the program the signal, as Piston means to and does not: its processes get it and do
/// what they do with it (a handler runs, the default ends or stops them). SIGKILL is the run's
/// own Stop, which is at once and says so (`stopped`). Past
/// [`SIGNALS_HELD`](onpyrunner_supervisor::session::SIGNALS_HELD) waiting to be delivered, a
/// signal is dropped.
fn deliver(control: &RunControl, signal: i32) {
    if signal == SIGKILL {
        control.stop(Reason::Stopped);
    } else {
        control.signal(signal);
    }
}

const SIGKILL: i32 = 9;

/// Queue stdin for the program, in order; what its channel has no room for is held (see
/// [`STDIN_HELD_BYTES`]). After the program's stdin closed (its run ended, or its stdin cap
/// was reached) what comes is dropped.
fn write_stdin(control: &RunControl, held: &mut HeldStdin, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    if !held.bytes.is_empty() {
        held.bytes.extend_from_slice(data);
        return;
    }
    let Some(tx) = control.stdin() else { return };
    if let Err(mpsc::error::TrySendError::Full(data)) = tx.try_send(Bytes::copy_from_slice(data)) {
        held.bytes.extend_from_slice(&data);
        held.to = Some(tx);
    }
}

/// `init`: the run, checked as `POST /api/v2/execute` checks it, counted against the caller's
/// rate of starting runs, submitted, and handed to a forwarder.
fn start(body: &Value, state: &AppState, caller: &Caller, socket: &Socket) -> Result<Job, Refusal> {
    let Execute {
        runtime,
        mut spec,
        stdin,
    } = piston::parse(body, &caps_of(state.engine.as_ref(), caller))?;
    state.quotas.start_run(caller).map_err(ApiError::from)?;
    spec.client = caller.client();
    // Someone may be typing: the output shows as it comes (the table's `run_live`).
    spec.language = onpyrunner_languages::live(spec.language);
    let compiles = !spec.language.compile.is_empty();
    let session = state.engine.submit(spec).map_err(ApiError::from)?;
    // Piston's WebSocket ignores `stdin` in `init`; ours writes it first when one is given.
    let given = body
        .get("stdin")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if let (Some(tx), true) = (session.stdin(), given) {
        // The channel is new and empty: the first input always fits.
        let _ = tx.try_send(stdin);
    }
    Ok(Job {
        control: session.control(),
        forwarder: tokio::spawn(forward(session, runtime, compiles, socket.sender())),
    })
}

/// The run's events as Piston's messages, ending with the close (4999, or 4002 after an
/// `error` when the run could not be carried out). Waits whenever the client is slow.
async fn forward(
    mut session: Session,
    runtime: Runtime,
    compiles: bool,
    out: mpsc::Sender<Message>,
) {
    let send = |message: ServerMessage| out.send(Message::text(message.to_json()));
    let runtime = ServerMessage::Runtime {
        language: runtime.language,
        version: runtime.version,
    };
    if send(runtime).await.is_err() {
        return;
    }
    let first = if compiles {
        PistonStage::Compile
    } else {
        PistonStage::Run
    };
    let mut stage: Option<PistonStage> = None;
    let (mut stdout, mut stderr) = (OutputText::default(), OutputText::default());
    while let Some(event) = session.recv().await {
        let mut messages = Vec::new();
        if stage.is_none() && !matches!(event, Event::State { .. } | Event::Queued { .. }) {
            stage = Some(first);
            messages.push(ServerMessage::Stage { stage: first });
        }
        match event {
            Event::State {
                state: RunState::Running,
                ..
            } if stage.is_none() => {
                stage = Some(first);
                messages.push(ServerMessage::Stage { stage: first });
            }
            Event::Output(chunk) => {
                let (stream, text) = match chunk.stream {
                    OutputStream::Stdout => (PistonStream::Stdout, &mut stdout),
                    OutputStream::Stderr => (PistonStream::Stderr, &mut stderr),
                };
                let data = text.push(&chunk.data);
                if !data.is_empty() {
                    messages.push(ServerMessage::Data { stream, data });
                }
            }
            Event::Compiled(usage) => {
                messages.extend(rest(&mut stdout, &mut stderr));
                messages.push(ServerMessage::Exit {
                    stage: PistonStage::Compile,
                    code: usage.exit_code,
                    signal: usage
                        .signal
                        .and_then(onpyrunner_protocol::piston::signal_name),
                });
                stage = Some(PistonStage::Run);
                messages.push(ServerMessage::Stage {
                    stage: PistonStage::Run,
                });
            }
            Event::Summary(summary) => {
                messages.extend(rest(&mut stdout, &mut stderr));
                let close = match summary.reason {
                    // The run was not carried out to an end of its own: as Piston reports an
                    // exception of the job.
                    Reason::InternalError | Reason::Shutdown => {
                        messages.push(ServerMessage::Error {
                            message: summary.error.clone().unwrap_or_else(|| {
                                format!("the run was stopped ({:?})", summary.reason)
                            }),
                        });
                        Close::ErrorNotified
                    }
                    _ => {
                        let (code, signal) = piston::exit_status(&summary);
                        messages.push(ServerMessage::Exit {
                            stage: stage_of(summary.usage.stage),
                            code,
                            signal,
                        });
                        Close::JobCompleted
                    }
                };
                for message in messages {
                    if send(message).await.is_err() {
                        return;
                    }
                }
                let _ = out.send(close_frame(close)).await;
                return;
            }
            _ => {}
        }
        for message in messages {
            if send(message).await.is_err() {
                return;
            }
        }
    }
}

/// What each stream holds of a cut character, sent when its stage ends.
fn rest(stdout: &mut OutputText, stderr: &mut OutputText) -> Vec<ServerMessage> {
    [
        (PistonStream::Stdout, stdout.finish()),
        (PistonStream::Stderr, stderr.finish()),
    ]
    .into_iter()
    .filter(|(_, data)| !data.is_empty())
    .map(|(stream, data)| ServerMessage::Data { stream, data })
    .collect()
}

fn stage_of(stage: onpyrunner_protocol::Stage) -> PistonStage {
    match stage {
        onpyrunner_protocol::Stage::Compile => PistonStage::Compile,
        onpyrunner_protocol::Stage::Run => PistonStage::Run,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_supervisor::session::Detach;

    #[test]
    fn sigkill_is_the_runs_stop_and_any_other_signal_is_the_programs() {
        let (writer, session) = onpyrunner_supervisor::session::open("r".into(), Detach::Kill);
        let control = session.control();
        deliver(&control, signal_number("SIGTERM").unwrap());
        deliver(&control, 28);
        assert!(!writer.stop_signal().is_stopped());
        deliver(&control, signal_number("SIGKILL").unwrap());
        assert!(writer.stop_signal().is_stopped());
        assert_eq!(writer.stop_signal().reason(), Reason::Stopped);
        let delivered = futures_util::FutureExt::now_or_never(async {
            (writer.signals().next().await, writer.signals().next().await)
        });
        assert_eq!(delivered, Some((15, 28)));
    }
}

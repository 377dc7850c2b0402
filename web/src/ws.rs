//! `/api/v1/ws`: runs over a WebSocket, one after another on the same connection. The protocol
//! is written down in `docs/protocol.md`; this module is its server side.
//!
//! A connection is three tasks:
//! - the reader (this connection's own task) handles client messages and the heartbeat, and
//!   never waits on the client or the program, so `stop` is always heard;
//! - the writer sends what the other two queue, as fast as the client reads (backpressure);
//! - a forwarder per run turns its session events into messages. It waits whenever the writer
//!   does, so a slow client slows the program down instead of growing memory.
//!
//! When the reader ends (close frame, lost connection, heartbeat timeout) the forwarder is
//! aborted; that drops the run's events and the engine ends it as `client_gone`, killing the
//! program and removing its container.
use crate::error::ApiError;
use crate::request::{self, RunBody};
use crate::state::AppState;
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use onpyrunner_supervisor::run::OutputStream;
use onpyrunner_supervisor::session::{Event, Stopper};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use warp::http::HeaderMap;
use warp::http::StatusCode;
use warp::reply::Response;

/// Largest message a client may send (the library's default is 64 MiB).
pub const MAX_MESSAGE_BYTES: usize = 2 * 1024 * 1024;
/// Largest frame a client may send (the library's default is 16 MiB).
pub const MAX_FRAME_BYTES: usize = 256 * 1024;
/// Bytes the library may hold for a client that does not read, beyond what the writer waits on.
pub const MAX_WRITE_BUFFER_BYTES: usize = 1024 * 1024;
/// Bytes read from a connection at a time. The library's default, 128 KiB, is allocated and
/// zeroed for every connection: 1000 idle ones held 100 MB.
const READ_BUFFER_BYTES: usize = 4 * 1024;
/// Messages queued for the writer before the queuing side waits.
const OUT_BUFFER: usize = 16;
/// Intervals without a sign of life (a frame received, or a send that waited for the client and
/// then went through) after which a connection counts as gone.
const DEAD_AFTER_INTERVALS: u32 = 3;
/// First byte of an output frame: which stream.
pub const STDOUT_TAG: u8 = 1;
pub const STDERR_TAG: u8 = 2;

/// The upgrade: checks the request and the origin, answers 101, then serves the connection
/// with our own limits. (warp's `ws()` filter cannot set the read buffer's size.)
pub fn upgrade(headers: HeaderMap, on_upgrade: Option<OnUpgrade>, state: AppState) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = header("sec-websocket-key");
    let Some(key) = key.filter(|_| {
        has_token("connection", "upgrade")
            && has_token("upgrade", "websocket")
            && header("sec-websocket-version") == Some("13")
    }) else {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "this is a WebSocket endpoint (version 13): send an upgrade request; see docs/protocol.md",
        )
        .into_response();
    };
    let origin = header("origin");
    if !state.ws.origin_allowed(origin, header("host")) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "origin {:?} is not allowed to open a WebSocket here (see --allowed-origins)",
                origin.unwrap_or_default()
            ),
        )
        .into_response();
    }
    let accept = derive_accept_key(key.as_bytes());
    if let Some(on_upgrade) = on_upgrade {
        tokio::spawn(async move {
            match on_upgrade.await {
                Ok(upgraded) => {
                    let socket = WebSocketStream::from_raw_socket(
                        TokioIo::new(upgraded),
                        Role::Server,
                        Some(socket_config()),
                    )
                    .await;
                    connection(socket, state).await;
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
    }
    warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept)
        .body(warp::hyper::body::Bytes::new().into())
        .expect("a valid response")
}

fn socket_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        // Every message is flushed as it is sent; nothing is gathered first.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES)
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// A client message (text frames).
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ClientMessage {
    Run(RunBody),
    Stdin { data: String },
    Eof,
    Stop,
}

/// The connection's current run, as the reader holds it.
struct CurrentRun {
    id: String,
    stdin: Option<mpsc::Sender<Bytes>>,
    stopper: Stopper,
    /// Set by the forwarder once the summary is queued: the next run may start.
    ended: Arc<AtomicBool>,
    forwarder: JoinHandle<()>,
}

/// Signs of life, as milliseconds since the connection opened.
struct Liveness {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Liveness {
    fn touch(&self) {
        self.last_ms
            .store(self.opened.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    fn quiet_for(&self) -> Duration {
        let now = self.opened.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

async fn connection<S>(socket: WebSocketStream<S>, state: AppState)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(OUT_BUFFER);
    let live = Arc::new(Liveness {
        opened: Instant::now(),
        last_ms: AtomicU64::new(0),
    });
    let gone = CancellationToken::new();
    // Pings skip the output queue: when it is full the client is slow, not gone, and a ping
    // stuck behind its output would get no pong in time.
    let ping_now = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let live = live.clone();
        let gone = gone.clone();
        let ping_now = ping_now.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    _ = ping_now.notified() => Message::Ping(Bytes::new()),
                    message = out_rx.recv() => match message {
                        Some(message) => message,
                        None => break,
                    },
                };
                // A send that had to wait finished because the client read: a sign of life.
                // One that did not wait proves nothing (the kernel took it).
                let mut sending = sink.send(message);
                let sent = match (&mut sending).now_or_never() {
                    Some(sent) => sent,
                    None => {
                        let sent = sending.await;
                        live.touch();
                        sent
                    }
                };
                if sent.is_err() {
                    break;
                }
            }
            gone.cancel();
            let _ = sink.close().await;
        })
    };
    let mut ping = tokio::time::interval(state.ws.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dead_after = state.ws.ping_interval * DEAD_AFTER_INTERVALS;
    let mut run: Option<CurrentRun> = None;
    loop {
        let message = tokio::select! {
            message = stream.next() => message,
            _ = gone.cancelled() => break,
            _ = ping.tick() => {
                if live.quiet_for() > dead_after {
                    tracing::info!(run = ?run.as_ref().map(|r| &r.id), "WebSocket client silent: dropping the connection");
                    break;
                }
                ping_now.notify_one();
                continue;
            }
        };
        let Some(Ok(message)) = message else { break };
        live.touch();
        let reply = match message {
            Message::Close(_) => break,
            Message::Binary(data) => write_stdin(&mut run, data),
            Message::Text(text) => handle_text(text.as_str(), &state, &mut run, &out_tx),
            // Ping and pong: the library answers pings itself.
            _ => Ok(()),
        };
        if let Err(err) = reply {
            if out_tx.send(error_message(err)).await.is_err() {
                break;
            }
        }
    }
    // The client is gone or closed: its run, if still going, ends as client_gone.
    if let Some(run) = run.take() {
        run.forwarder.abort();
    }
    drop(out_tx);
    writer.abort();
}

fn handle_text(
    text: &str,
    state: &AppState,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
) -> Result<(), ApiError> {
    let message: ClientMessage = serde_json::from_str(text).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("invalid message: {e}"))
    })?;
    match message {
        ClientMessage::Run(body) => start_run(body, state, run, out),
        ClientMessage::Stdin { data } => write_stdin(run, Bytes::from(data.into_bytes())),
        ClientMessage::Eof => {
            current(run)?.stdin = None;
            Ok(())
        }
        ClientMessage::Stop => {
            current(run)?.stopper.stop();
            Ok(())
        }
    }
}

/// The run still going on this connection, or an error saying there is none.
fn current(run: &mut Option<CurrentRun>) -> Result<&mut CurrentRun, ApiError> {
    match run {
        Some(r) if !r.ended.load(Ordering::Acquire) => Ok(r),
        _ => Err(
            ApiError::new(StatusCode::CONFLICT, "no run is going on this connection").field("type"),
        ),
    }
}

fn start_run(
    body: RunBody,
    state: &AppState,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
) -> Result<(), ApiError> {
    if let Ok(r) = current(run) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {} is still going on this connection; stop it or wait for its summary",
                r.id
            ),
        )
        .field("type"));
    }
    let (spec, stdin) = request::run_spec(&body, &state.engine)?;
    let session = state.engine.submit(spec)?;
    let (id, events, stdin_tx, stopper) = session.into_parts();
    if let (Some(tx), false) = (&stdin_tx, stdin.is_empty()) {
        // The channel is new and empty: the batch input always fits.
        let _ = tx.try_send(stdin);
    }
    let ended = Arc::new(AtomicBool::new(false));
    let forwarder = tokio::spawn(forward(id.clone(), events, out.clone(), ended.clone()));
    *run = Some(CurrentRun {
        id,
        stdin: stdin_tx,
        stopper,
        ended,
        forwarder,
    });
    Ok(())
}

fn write_stdin(run: &mut Option<CurrentRun>, data: Bytes) -> Result<(), ApiError> {
    let run = current(run)?;
    let Some(stdin) = &run.stdin else {
        return Err(
            ApiError::new(StatusCode::CONFLICT, "stdin is closed (EOF was sent)").field("stdin"),
        );
    };
    if data.is_empty() {
        return Ok(());
    }
    stdin.try_send(data).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "stdin is full: the program has not read the last {} messages; wait, or stop it",
                onpyrunner_supervisor::engine::STDIN_BUFFER
            ),
        )
        .field("stdin")
        .limit(onpyrunner_supervisor::engine::STDIN_BUFFER),
        mpsc::error::TrySendError::Closed(_) => {
            ApiError::new(StatusCode::CONFLICT, "the program's stdin is closed").field("stdin")
        }
    })
}

/// Turn one run's events into messages, waiting whenever the client is slow.
async fn forward(
    id: String,
    mut events: mpsc::Receiver<Event>,
    out: mpsc::Sender<Message>,
    ended: Arc<AtomicBool>,
) {
    while let Some(event) = events.recv().await {
        if matches!(event, Event::Summary(_)) {
            ended.store(true, Ordering::Release);
        }
        if out.send(event_message(&id, event)).await.is_err() {
            return;
        }
    }
}

/// A session event as the client gets it.
pub fn event_message(run: &str, event: Event) -> Message {
    match event {
        Event::Output(chunk) => {
            let mut frame = BytesMut::with_capacity(chunk.data.len() + 1);
            frame.put_u8(match chunk.stream {
                OutputStream::Stdout => STDOUT_TAG,
                OutputStream::Stderr => STDERR_TAG,
            });
            frame.put_slice(&chunk.data);
            Message::binary(frame.freeze())
        }
        Event::State { state, at_unix_ms } => Message::text(
            json!({"type": "state", "run": run, "state": state, "at_unix_ms": at_unix_ms})
                .to_string(),
        ),
        Event::Queued { position } => {
            Message::text(json!({"type": "queued", "run": run, "position": position}).to_string())
        }
        Event::Summary(summary) => {
            let mut value = serde_json::to_value(&summary).expect("a summary serializes");
            value["type"] = "summary".into();
            value["run"] = run.into();
            Message::text(value.to_string())
        }
    }
}

fn error_message(err: ApiError) -> Message {
    let mut value: Value = serde_json::to_value(&err).expect("an error serializes");
    value["type"] = "error".into();
    value["status"] = err.status.as_u16().into();
    Message::text(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_parse_and_unknown_fields_are_refused() {
        let run: ClientMessage =
            serde_json::from_str(r#"{"type":"run","language":"python","code":"print(1)"}"#)
                .unwrap();
        assert!(matches!(run, ClientMessage::Run(b) if b.language == "python"));
        let stdin: ClientMessage =
            serde_json::from_str(r#"{"type":"stdin","data":"x\n"}"#).unwrap();
        assert!(matches!(stdin, ClientMessage::Stdin { data } if data == "x\n"));
        assert!(matches!(
            serde_json::from_str(r#"{"type":"eof"}"#).unwrap(),
            ClientMessage::Eof
        ));
        assert!(serde_json::from_str::<ClientMessage>(
            r#"{"type":"run","language":"python","code":"x","bogus":1}"#
        )
        .is_err());
        assert!(serde_json::from_str::<ClientMessage>(r#"{"type":"launch"}"#).is_err());
    }

    #[test]
    fn output_frames_carry_the_stream_then_the_exact_bytes() {
        let chunk = onpyrunner_supervisor::run::OutputChunk {
            stream: OutputStream::Stderr,
            data: Bytes::from_static(b"\xff\xfe ok"),
        };
        let message = event_message("r1", Event::Output(chunk));
        assert_eq!(
            message,
            Message::Binary(Bytes::from_static(b"\x02\xff\xfe ok"))
        );
    }
}

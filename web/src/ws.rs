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
//! When the reader ends, the forwarder is aborted, which drops the connection's attachment to
//! its run. After a close frame the run is killed at once (`client_gone`); after a lost
//! connection or a heartbeat timeout it goes on unattached for `resume_grace`, and a new
//! connection may resume it by id and position (docs/protocol.md, "Resuming after a drop").
use crate::error::ApiError;
use crate::identity::Caller;
use crate::listener::Place;
use crate::request::{self, RunBody};
use crate::state::AppState;
use crate::tokens;
use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use onpyrunner_protocol::ws::{ClientMessage, ErrorBody, ServerMessage};
use onpyrunner_protocol::{Event, Reason};
use onpyrunner_supervisor::engine::ResumeError;
use onpyrunner_supervisor::session::{Detach, RunControl, Session};
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

/// The upgrade (its caller already admitted by the route): checks the origin and the caller's
/// count of open WebSockets, then the request, answers 101, then serves the connection with our
/// own limits. (warp's `ws()` filter cannot set the read buffer's size.) The count comes before
/// the request's own checks so that a plain GET tells a browser, which cannot see why a
/// handshake failed, whether it would have been refused (the IDE asks this way).
pub fn upgrade(
    headers: HeaderMap,
    on_upgrade: Option<OnUpgrade>,
    state: AppState,
    caller: Caller,
    place: Option<Place>,
) -> Response {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let has_token = |name: &str, token: &str| {
        header(name).is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
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
    let slot = match state.quotas.open_websocket(&caller) {
        Ok(slot) => slot,
        Err(e) => return ApiError::from(e).into_response(),
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
    let accept = derive_accept_key(key.as_bytes());
    // A browser that sends its token as a subprotocol must get one of its offers back.
    let speaks_ours = headers
        .get_all("sec-websocket-protocol")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == tokens::WS_PROTOCOL);
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
                    connection(socket, state, caller).await;
                    // The connection counts against the client's and the server's caps until
                    // here.
                    drop(slot);
                    drop(place);
                }
                Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
            }
        });
    }
    let mut response = warp::http::Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", accept);
    if speaks_ours {
        response = response.header("sec-websocket-protocol", tokens::WS_PROTOCOL);
    }
    response
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

/// The connection's current run (its own, or one it resumed), as the reader holds it.
struct CurrentRun {
    id: String,
    control: RunControl,
    /// Set by the forwarder once the summary is queued: the next run may start.
    ended: Arc<AtomicBool>,
    /// Owns the connection's attachment to the run: aborting it detaches.
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

async fn connection<S>(socket: WebSocketStream<S>, state: AppState, caller: Caller)
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
    // Pings and pongs skip the output queue: when it is full the client is slow, not gone, and
    // a ping stuck behind its output would get no answer in time.
    let ping_now = Arc::new(tokio::sync::Notify::new());
    let pong_now = Arc::new(tokio::sync::Notify::new());
    let writer = {
        let live = live.clone();
        let gone = gone.clone();
        let ping_now = ping_now.clone();
        let pong_now = pong_now.clone();
        tokio::spawn(async move {
            loop {
                let message = tokio::select! {
                    biased;
                    _ = ping_now.notified() => Message::Ping(Bytes::new()),
                    _ = pong_now.notified() => Message::text(ServerMessage::Pong.to_json()),
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
    let mut said_goodbye = false;
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
            Message::Close(_) => {
                said_goodbye = true;
                break;
            }
            Message::Binary(data) => write_stdin(&mut run, data),
            Message::Text(text) => {
                handle_text(text.as_str(), &state, &caller, &mut run, &out_tx, &pong_now)
            }
            // Ping and pong: the library answers pings itself.
            _ => Ok(()),
        };
        if let Err(err) = reply {
            if out_tx.send(error_message(err)).await.is_err() {
                break;
            }
        }
    }
    // A client that closed is done with its run; one that was lost may come back for it. An
    // old connection's late close frame does not kill a run another connection resumed.
    if let Some(run) = run.take() {
        if said_goodbye && run.control.attached() <= 1 {
            run.control.stop(Reason::ClientGone);
        }
        run.forwarder.abort();
    }
    drop(out_tx);
    writer.abort();
}

fn handle_text(
    text: &str,
    state: &AppState,
    caller: &Caller,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
    pong_now: &tokio::sync::Notify,
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
        ClientMessage::Run(body) => start_run(body, state, caller, run, out),
        ClientMessage::Resume { run: id, seq } => resume_run(&id, seq, state, run, out),
        ClientMessage::Stdin { data } => write_stdin(run, Bytes::from(data.into_bytes())),
        ClientMessage::Eof => {
            current(run)?.control.close_stdin();
            Ok(())
        }
        ClientMessage::Stop => {
            current(run)?.control.stop(Reason::Stopped);
            Ok(())
        }
        ClientMessage::Ping => {
            pong_now.notify_one();
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

/// Refuse a second run while one is going on this connection.
fn idle(run: &mut Option<CurrentRun>) -> Result<(), ApiError> {
    match current(run) {
        Ok(r) => Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "run {} is still going on this connection; stop it or wait for its summary",
                r.id
            ),
        )
        .field("type")),
        Err(_) => Ok(()),
    }
}

fn start_run(
    body: RunBody,
    state: &AppState,
    caller: &Caller,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
) -> Result<(), ApiError> {
    idle(run)?;
    state.quotas.start_run(caller)?;
    let (mut spec, stdin) = request::run_spec(body, state.engine.as_ref(), caller)?;
    // Someone may be typing into this run: its output shows as it comes (`run_live`). A judged
    // run reads no typing and runs buffered, as judges run it.
    if spec.judge.is_none() {
        spec.language = onpyrunner_languages::live(spec.language);
    }
    let session = state
        .engine
        .submit_with(spec, Detach::After(state.ws.resume_grace))?;
    if let (Some(tx), false) = (session.stdin(), stdin.is_empty()) {
        // The channel is new and empty: the batch input always fits.
        let _ = tx.try_send(stdin);
    }
    *run = Some(follow(session, None, out));
    Ok(())
}

fn resume_run(
    id: &str,
    seq: u64,
    state: &AppState,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
) -> Result<(), ApiError> {
    idle(run)?;
    let session = state.engine.resume(id, seq).map_err(|e| match e {
        ResumeError::PastTheEnd { end, .. } => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
                .field("seq")
                .limit(end)
        }
        _ => ApiError::new(StatusCode::NOT_FOUND, e.to_string()).field("run"),
    })?;
    let resumed = ServerMessage::Resumed {
        run: session.id.clone(),
        seq,
        state: session.log().state(),
    };
    *run = Some(follow(session, Some(resumed), out));
    Ok(())
}

/// Hand the session to a forwarder that sends `first`, then the run's events.
fn follow(
    session: Session,
    first: Option<ServerMessage>,
    out: &mpsc::Sender<Message>,
) -> CurrentRun {
    let ended = Arc::new(AtomicBool::new(session.ended() && first.is_none()));
    CurrentRun {
        id: session.id.clone(),
        control: session.control(),
        ended: ended.clone(),
        forwarder: tokio::spawn(forward(session, first, out.clone(), ended)),
    }
}

fn write_stdin(run: &mut Option<CurrentRun>, data: Bytes) -> Result<(), ApiError> {
    let run = current(run)?;
    let Some(stdin) = run.control.stdin() else {
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

/// Turn one run's events into messages, waiting whenever the client is slow. Holds the
/// connection's attachment to the run.
async fn forward(
    mut session: Session,
    first: Option<ServerMessage>,
    out: mpsc::Sender<Message>,
    ended: Arc<AtomicBool>,
) {
    if let Some(first) = first {
        if out.send(Message::text(first.to_json())).await.is_err() {
            return;
        }
    }
    while let Some((event, seq)) = session.events.next().await {
        if matches!(event, Event::Summary(_)) {
            ended.store(true, Ordering::Release);
        }
        if out
            .send(event_message(&session.id, seq, event))
            .await
            .is_err()
        {
            return;
        }
    }
    ended.store(true, Ordering::Release);
}

/// A run's event as the client gets it: output in a binary frame, the rest as text.
pub fn event_message(run: &str, seq: u64, event: Event) -> Message {
    match event {
        Event::Output(chunk) => Message::binary(chunk.frame()),
        event => Message::text(
            ServerMessage::of_event(run, seq, event)
                .expect("only output has no text message")
                .to_json(),
        ),
    }
}

fn error_message(err: ApiError) -> Message {
    let body = ErrorBody {
        status: Some(err.status.as_u16()),
        retry_after: err.retry_after,
        error: err.error,
        field: err.field,
        limit: err.limit,
    };
    Message::text(ServerMessage::Error(body).to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_frames_carry_the_stream_then_the_exact_bytes() {
        let chunk = onpyrunner_protocol::OutputChunk {
            stream: onpyrunner_protocol::OutputStream::Stderr,
            data: Bytes::from_static(b"\xff\xfe ok"),
        };
        let message = event_message("r1", 9, Event::Output(chunk));
        assert_eq!(
            message,
            Message::Binary(Bytes::from_static(b"\x02\xff\xfe ok"))
        );
    }
}

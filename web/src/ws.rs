//! `/api/v1/ws`: runs over a WebSocket, one after another on the same connection. The protocol
//! is written down in `docs/protocol.md`; this module is its server side.
//!
//! A connection is three tasks:
//! - the reader (this connection's own task) handles client messages and the heartbeat, and
//!   never waits on the program, so `stop` is always heard;
//! - the writer sends what the other two queue, as fast as the client reads (backpressure; the
//!   handshake, the writer and the heartbeat are `ws_socket`'s, shared with Piston's
//!   WebSocket);
//! - a forwarder per run turns its session events into messages. It waits whenever the writer
//!   does, so a slow client slows the program down instead of growing memory.
//!
//! When the reader ends, the forwarder is aborted, which drops the connection's attachment to
//! its run. After a close frame the run is killed at once (`client_gone`); after a lost
//! connection or a heartbeat timeout it goes on unattached for `resume_grace`, and a new
//! connection may resume it by id and position (docs/protocol.md, "Resuming after a drop").
use crate::error::ApiError;
use crate::identity::Caller;
use crate::request::{self, RunBody};
use crate::state::AppState;
use crate::ws_socket::Socket;
use bytes::Bytes;
use onpyrunner_protocol::ws::{ClientMessage, ErrorBody, ServerMessage};
use onpyrunner_protocol::{Event, Reason};
use onpyrunner_supervisor::engine::ResumeError;
use onpyrunner_supervisor::session::{Detach, RunControl, Session};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use warp::http::StatusCode;

/// The connection's current run (its own, or one it resumed), as the reader holds it.
struct CurrentRun {
    id: String,
    control: RunControl,
    /// Set by the forwarder once the summary is queued: the next run may start.
    ended: Arc<AtomicBool>,
    /// Owns the connection's attachment to the run: aborting it detaches.
    forwarder: JoinHandle<()>,
}

/// Serve one connection, once upgraded (`ws_socket::upgrade`).
pub async fn connection(mut socket: Socket, state: AppState, caller: Caller) {
    let out_tx = socket.sender();
    let mut run: Option<CurrentRun> = None;
    while let Some(message) = socket.next().await {
        let reply = match message {
            Message::Binary(data) => write_stdin(&mut run, data),
            Message::Text(text) => {
                handle_text(text.as_str(), &state, &caller, &mut run, &out_tx, &socket)
            }
            _ => Ok(()),
        };
        if let Err(err) = reply {
            if !socket.send(error_message(err)).await {
                break;
            }
        }
    }
    // A client that closed is done with its run; one that was lost may come back for it. An
    // old connection's late close frame does not kill a run another connection resumed.
    if let Some(run) = run.take() {
        if socket.said_goodbye() && run.control.attached() <= 1 {
            run.control.stop(Reason::ClientGone);
        }
        run.forwarder.abort();
    }
}

fn handle_text(
    text: &str,
    state: &AppState,
    caller: &Caller,
    run: &mut Option<CurrentRun>,
    out: &mpsc::Sender<Message>,
    socket: &Socket,
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
            // It skips the output queue, as pings do.
            socket.send_urgent(Message::text(ServerMessage::Pong.to_json()));
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

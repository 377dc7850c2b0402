//! `GET /api/v1/jobs/{id}/events`: a job's events as Server-Sent Events.
//!
//! ```text
//! event: state      data: {"state":"READY","at_unix_ms":1718000000000}
//! event: queued     data: {"position":2}                     (only while it waits for a slot)
//! event: state      data: {"state":"RUNNING","at_unix_ms":...}
//! event: stdout     data: {"data":"hello\n"}                  (or stderr)
//! event: state      data: {"state":"FINISHED","at_unix_ms":...}
//! event: summary    data: {"state":"FINISHED","reason":"exited",...}   then the stream ends
//! ```
//!
//! Output is text: invalid UTF-8 is replaced by U+FFFD (the WebSocket carries exact bytes), a
//! character split across writes is held back until complete, and one event carries at most
//! 64 KiB. A client that connects late first gets everything that happened so far, then live
//! events, from the same ordered log, so nothing is lost or repeated. Every event has an `id`;
//! a client that reconnects with `Last-Event-ID` resumes right after that event (an
//! `EventSource` does this by itself), and gets `204 No Content` once it has had the summary,
//! which tells an `EventSource` to stop reconnecting. Comments (`:`) keep idle connections
//! alive.
use crate::error::{no_such_job, ApiError};
use crate::job_log::{Cursor, LogEvent};
use crate::jobs::{Jobs, Subscription};
use onpyrunner_protocol::OutputStream;
use serde_json::json;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

/// Silence after which a keep-alive comment is sent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// Events taken from the log at once.
const BATCH: usize = 64;

/// The route, with keep-alive comments after `keep_alive` of silence.
pub fn route(
    jobs: Jobs,
    keep_alive: Duration,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone + Send + Sync + 'static {
    warp::path!("api" / "v1" / "jobs" / String / "events")
        .and(warp::get())
        .and(warp::header::optional::<String>("last-event-id"))
        .map(move |id: String, last: Option<String>| events(&jobs, &id, last, keep_alive))
}

fn events(jobs: &Jobs, id: &str, last_event_id: Option<String>, keep_alive: Duration) -> Response {
    let Some(subscription) = jobs.subscribe(id) else {
        return no_such_job(id);
    };
    let cursor = match last_event_id {
        None => Cursor::default(),
        Some(text) => match text.trim().parse::<Cursor>() {
            Ok(cursor) if subscription.contains(cursor) => cursor,
            _ => {
                return ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("Last-Event-ID {text:?} is not the id of an event of job {id:?}"),
                )
                .field("Last-Event-ID")
                .into_response()
            }
        },
    };
    let read = subscription.read_now(cursor, 1);
    if read.complete && read.events.is_empty() {
        // Resumed after the summary: nothing more will come.
        return StatusCode::NO_CONTENT.into_response();
    }
    let stream = futures_util::stream::unfold(
        Follow {
            subscription,
            cursor,
            pending: VecDeque::new(),
            complete: false,
        },
        |mut follow| async move {
            loop {
                if let Some((event, cursor)) = follow.pending.pop_front() {
                    follow.cursor = cursor;
                    return Some((Ok::<_, Infallible>(sse_event(event, cursor)), follow));
                }
                if follow.complete {
                    return None;
                }
                let read = follow.subscription.next(follow.cursor, BATCH).await;
                follow.complete = read.complete;
                follow.pending.extend(read.events);
            }
        },
    );
    let stream = warp::sse::keep_alive()
        .interval(keep_alive)
        .text("keep-alive")
        .stream(stream);
    warp::sse::reply(stream).into_response()
}

struct Follow {
    subscription: Subscription,
    cursor: Cursor,
    pending: VecDeque<(LogEvent, Cursor)>,
    complete: bool,
}

fn sse_event(event: LogEvent, cursor: Cursor) -> Event {
    let (name, data) = match event {
        LogEvent::State { state, at_unix_ms } => {
            ("state", json!({"state": state, "at_unix_ms": at_unix_ms}))
        }
        LogEvent::Queued { position } => ("queued", json!({"position": position})),
        LogEvent::Output { stream, text } => (
            match stream {
                OutputStream::Stdout => "stdout",
                OutputStream::Stderr => "stderr",
            },
            json!({"data": text}),
        ),
        LogEvent::Summary(summary) => (
            "summary",
            serde_json::to_value(&summary).expect("a summary serializes"),
        ),
    };
    // JSON text has no raw newline, so each event is one `data:` line.
    Event::default()
        .event(name)
        .id(cursor.to_string())
        .data(data.to_string())
}

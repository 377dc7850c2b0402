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
//! 64 KiB. The events are the run's own log (the engine's, which the WebSocket reads too): a
//! client that connects late first gets everything that happened so far, then live events, so
//! nothing is lost or repeated. Every event's `id` is its sequence number, the position after it
//! in the run's log (docs/protocol.md);
//! a client that reconnects with `Last-Event-ID` resumes right after that event (an
//! `EventSource` does this by itself), and gets `204 No Content` once it has had the summary,
//! which tells an `EventSource` to stop reconnecting. Comments (`:`) keep idle connections
//! alive.
use crate::error::{no_such_job, ApiError};
use crate::jobs::Jobs;
use onpyrunner_protocol::Event as RunEvent;
use serde_json::json;
use std::convert::Infallible;
use std::time::Duration;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::sse::Event;
use warp::{Filter, Rejection, Reply};

/// Silence after which a keep-alive comment is sent.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

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
    let Some(log) = jobs.subscribe(id) else {
        return no_such_job(id);
    };
    let bad = |text: &str| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("Last-Event-ID {text:?} is not the id of an event of job {id:?}"),
        )
        .field("Last-Event-ID")
        .into_response()
    };
    let seq = match last_event_id {
        None => 0,
        Some(text) => match text.trim().parse::<u64>() {
            Ok(seq) => seq,
            Err(_) => return bad(&text),
        },
    };
    // The job's events are its run's log, read as text from the position after the last one
    // the client had; a position past the end was never an event id of this job.
    let Some(follower) = log.watch(seq) else {
        return bad(&seq.to_string());
    };
    if log.is_closed() && seq == log.end() {
        // Resumed after the summary: nothing more will come.
        return StatusCode::NO_CONTENT.into_response();
    }
    let stream = futures_util::stream::unfold(follower.as_text(), |mut follower| async move {
        let (event, seq) = follower.next().await?;
        Some((Ok::<_, Infallible>(sse_event(event, seq)), follower))
    });
    let stream = warp::sse::keep_alive()
        .interval(keep_alive)
        .text("keep-alive")
        .stream(stream);
    warp::sse::reply(stream).into_response()
}

fn sse_event(event: RunEvent, seq: u64) -> Event {
    let (name, data) = match event {
        RunEvent::State { state, at_unix_ms } => {
            ("state", json!({"state": state, "at_unix_ms": at_unix_ms}))
        }
        RunEvent::Queued { position } => ("queued", json!({"position": position})),
        RunEvent::Output(chunk) => (
            chunk.stream.as_str(),
            json!({"data": String::from_utf8_lossy(&chunk.data)}),
        ),
        RunEvent::Compiled(usage) => (
            "compiled",
            serde_json::to_value(&usage).expect("a usage serializes"),
        ),
        RunEvent::Test(test) => (
            "test",
            serde_json::to_value(&test).expect("a test result serializes"),
        ),
        RunEvent::Summary(summary) => (
            "summary",
            serde_json::to_value(&summary).expect("a summary serializes"),
        ),
    };
    // JSON text has no raw newline, so each event is one `data:` line.
    Event::default()
        .event(name)
        .id(seq.to_string())
        .data(data.to_string())
}

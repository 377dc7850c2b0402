//! Judge0's submission routes (`submissions_controller.rb`), over our job table: a submission
//! is a job kept under its token, its origin the [`Submission`] as posted. Each route's checks
//! come in the controller's order (its `before_action`s, then the action's), with its words.
use super::info::{json_reply, not_found};
use super::render::{render, requested, DEFAULT_FIELDS};
use super::statuses::Status;
use super::submission::{accept, Accepted, Errors, Submission};
use super::text::{query_pairs, ruby_to_i};
use super::{callback, MAX_BATCH};
use crate::body::{Received, Room};
use crate::identity::Caller;
use crate::request::caps_of;
use crate::state::AppState;
use bytes::Bytes;
use onpyrunner_supervisor::engine::SubmitError;
use onpyrunner_supervisor::session::unix_ms;
use serde_json::{json, Value};
use std::sync::Arc;
use warp::http::StatusCode;
use warp::reply::Response;

/// A query string, as the controller's `params` read it (the last of a repeated name wins).
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(raw: &str) -> Self {
        Query(query_pairs(raw))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn is_true(&self, name: &str) -> bool {
        self.get(name) == Some("true")
    }

    /// `check_requested_fields`: 400 for a field the serializer does not have.
    fn fields(&self) -> Result<Vec<&'static str>, Refusal> {
        requested(self.get("fields")).map_err(|unknown| {
            error(
                StatusCode::BAD_REQUEST,
                format!("invalid fields: [{}]", unknown.join(", ")),
            )
        })
    }
}

/// A refusal in Judge0's shape, `{error}` with its status.
struct Refusal {
    status: StatusCode,
    error: String,
}

impl Refusal {
    fn reply(self) -> Response {
        json_reply(self.status, &json!({"error": self.error}))
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Refusal {
    Refusal {
        status,
        error: message.into(),
    }
}

fn queue_is_full() -> Refusal {
    error(StatusCode::SERVICE_UNAVAILABLE, "queue is full")
}

const NOT_UTF8: &str = "some attributes for this submission cannot be converted to UTF-8, use base64_encoded=true query parameter";
const NOT_UTF8_MANY: &str = "some attributes for one or more submissions cannot be converted to UTF-8, use base64_encoded=true query parameter";

fn parse_json(bytes: &[u8]) -> Result<Value, Refusal> {
    serde_json::from_slice(bytes).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: not JSON: {e}"),
        )
    })
}

/// Why a valid submission did not start.
enum NotStarted {
    Invalid(Errors),
    Refused(Refusal),
}

/// Start an accepted submission as a job under its token; and its callback, if it has one.
fn start(
    s: &AppState,
    accepted: Accepted,
    caller: &Caller,
    room: Room,
) -> Result<Arc<Submission>, NotStarted> {
    let Accepted {
        submission,
        mut spec,
        stdin,
    } = accepted;
    spec.client = caller.client();
    let language = spec.language.id.clone();
    let session = s.engine.submit(spec).map_err(|e| match e {
        SubmitError::Busy(_) | SubmitError::ClientBusy { .. } => {
            NotStarted::Refused(queue_is_full())
        }
        SubmitError::Invalid(invalid) => {
            NotStarted::Invalid(Errors::of("source_code", invalid.to_string()))
        }
        other => NotStarted::Refused(error(StatusCode::SERVICE_UNAVAILABLE, other.to_string())),
    })?;
    let submission = Arc::new(submission);
    let token = submission.token.clone();
    s.jobs
        .insert_as(
            token.clone(),
            submission.clone(),
            session,
            &language,
            stdin,
            room,
        )
        .map_err(|_| NotStarted::Refused(queue_is_full()))?;
    if let (Some(url), Some(log)) = (submission.callback_url.clone(), s.jobs.subscribe(&token)) {
        let callbacks = s.judge0_callbacks.clone();
        let kept = submission.clone();
        tokio::spawn(async move {
            log.closed().await;
            // As Judge0's worker sends it: the default fields, base64.
            let body = render(&kept, &log, &DEFAULT_FIELDS, true).expect("base64 is text");
            callback::deliver(&callbacks, &url, Bytes::from(body.to_string())).await;
        });
    }
    Ok(submission)
}

/// `POST /submissions?base64_encoded=&wait=&fields=`.
pub async fn create(s: AppState, query: Query, body: Received, caller: Caller) -> Response {
    let Received { bytes, room } = body;
    let wait = query.is_true("wait");
    if !s.jobs.has_room() {
        return queue_is_full().reply();
    }
    let fields = match query.fields() {
        Ok(fields) => fields,
        Err(refusal) => return refusal.reply(),
    };
    let base64 = query.is_true("base64_encoded");
    let value = match parse_json(&bytes) {
        Ok(value) => value,
        Err(refusal) => return refusal.reply(),
    };
    drop(bytes);
    let caps = caps_of(s.engine.as_ref(), &caller);
    let accepted = match accept(
        &value,
        base64,
        &caps,
        &s.judge0_callbacks,
        caller.key.clone(),
        unix_ms(),
    ) {
        Ok(accepted) => accepted,
        Err(errors) => return json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!(errors)),
    };
    drop(value);
    let submission = match start(&s, accepted, &caller, room) {
        Ok(submission) => submission,
        Err(NotStarted::Invalid(errors)) => {
            return json_reply(StatusCode::UNPROCESSABLE_ENTITY, &json!(errors))
        }
        Err(NotStarted::Refused(refusal)) => return refusal.reply(),
    };
    if !wait {
        return json_reply(StatusCode::CREATED, &json!({"token": submission.token}));
    }
    let Some(log) = s.jobs.subscribe(&submission.token) else {
        return not_found();
    };
    log.closed().await;
    match render(&submission, &log, &fields, base64) {
        Ok(view) => json_reply(StatusCode::CREATED, &view),
        Err(_) => json_reply(
            StatusCode::CREATED,
            &json!({"error": NOT_UTF8, "token": submission.token}),
        ),
    }
}

/// `GET /submissions/{token}?base64_encoded=&fields=`.
pub fn show(s: &AppState, token: &str, query: &Query) -> Response {
    let fields = match query.fields() {
        Ok(fields) => fields,
        Err(refusal) => return refusal.reply(),
    };
    let Some((submission, log)) = s.jobs.origin::<Submission>(token) else {
        return not_found();
    };
    match render(&submission, &log, &fields, query.is_true("base64_encoded")) {
        Ok(view) => json_reply(StatusCode::OK, &view),
        Err(_) => error(StatusCode::BAD_REQUEST, NOT_UTF8).reply(),
    }
}

/// `DELETE /submissions/{token}?fields=`: only an ended submission; the answer is what it was,
/// base64 (Judge0 forces it, so that what was deleted can be read).
pub fn destroy(s: &AppState, token: &str, query: &Query) -> Response {
    let fields = match query.fields() {
        Ok(fields) => fields,
        Err(refusal) => return refusal.reply(),
    };
    let Some((submission, log)) = s.jobs.origin::<Submission>(token) else {
        return not_found();
    };
    let view = render(&submission, &log, &fields, true).expect("base64 is text");
    if !log.is_closed() {
        let status = match log.state() {
            onpyrunner_protocol::RunState::Running => Status::Processing,
            _ => Status::InQueue,
        };
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "submission cannot be deleted because its status is {} ({})",
                status.id(),
                status.description()
            ),
        )
        .reply();
    }
    if !s.jobs.remove_ended(token) {
        return not_found();
    }
    json_reply(StatusCode::OK, &view)
}

/// The tokens of a batch, 1 to [`MAX_BATCH`], or the 400 Judge0 gives.
fn batch_size(n: usize) -> Result<(), Refusal> {
    if n > MAX_BATCH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("number of submissions in a batch should be less than or equal to {MAX_BATCH}"),
        ));
    }
    if n == 0 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "there should be at least one submission in a batch",
        ));
    }
    Ok(())
}

/// `POST /submissions/batch?base64_encoded=`: `{submissions: [...]}`, answered with one item
/// per submission, `{token}` or its errors; 201 when one at least is valid, else 422. `fields`
/// and `wait` are ignored, as in Judge0.
pub fn batch_create(s: &AppState, query: &Query, body: Received, caller: &Caller) -> Response {
    let Received { bytes, room } = body;
    let value = match parse_json(&bytes) {
        Ok(value) => value,
        Err(refusal) => return refusal.reply(),
    };
    drop(bytes);
    if !s.jobs.has_room() {
        return queue_is_full().reply();
    }
    let items = value
        .get("submissions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Err(refusal) = batch_size(items.len()) {
        return refusal.reply();
    }
    let base64 = query.is_true("base64_encoded");
    let caps = caps_of(s.engine.as_ref(), caller);
    // The body's room goes with the first job: it is taken until that one ends.
    let mut room = Some(room);
    let mut answers = Vec::with_capacity(items.len());
    let mut any_valid = false;
    for item in &items {
        let answer = match accept(
            item,
            base64,
            &caps,
            &s.judge0_callbacks,
            caller.key.clone(),
            unix_ms(),
        ) {
            Err(errors) => json!(errors),
            Ok(accepted) => match start(s, accepted, caller, room.take().unwrap_or_default()) {
                Ok(submission) => {
                    any_valid = true;
                    json!({"token": submission.token})
                }
                Err(NotStarted::Invalid(errors)) => json!(errors),
                Err(NotStarted::Refused(_)) => json!({"error": "queue is full"}),
            },
        };
        answers.push(answer);
    }
    let status = if any_valid {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    json_reply(status, &json!(answers))
}

/// `GET /submissions/batch?tokens=&base64_encoded=&fields=`: `{submissions: [... | null]}`,
/// in the tokens' order (also taken from a `tokens` header, as Judge0 does).
pub fn batch_show(s: &AppState, query: &Query, header: Option<&str>) -> Response {
    let fields = match query.fields() {
        Ok(fields) => fields,
        Err(refusal) => return refusal.reply(),
    };
    let tokens: Vec<&str> = header
        .or(query.get("tokens"))
        .unwrap_or("")
        .trim()
        .split(',')
        .collect();
    // Ruby's split drops the empty strings at the end.
    let end = tokens
        .iter()
        .rposition(|t| !t.is_empty())
        .map_or(0, |i| i + 1);
    let tokens = &tokens[..end];
    if let Err(refusal) = batch_size(tokens.len()) {
        return refusal.reply();
    }
    let base64 = query.is_true("base64_encoded");
    let mut views = Vec::with_capacity(tokens.len());
    for token in tokens {
        let view = match s.jobs.origin::<Submission>(token) {
            Some((submission, log)) => match render(&submission, &log, &fields, base64) {
                Ok(view) => view,
                Err(_) => return error(StatusCode::BAD_REQUEST, NOT_UTF8_MANY).reply(),
            },
            None => Value::Null,
        };
        views.push(view);
    }
    json_reply(StatusCode::OK, &json!({"submissions": views}))
}

/// `GET /submissions?page=&per_page=&base64_encoded=&fields=`: the caller's own
/// submissions, newest first, 20 a page, with will_paginate's `meta`.
pub fn index(s: &AppState, query: &Query, caller: &Caller) -> Response {
    let fields = match query.fields() {
        Ok(fields) => fields,
        Err(refusal) => return refusal.reply(),
    };
    let page = query.get("page").map_or(1, ruby_to_i);
    let per_page = query.get("per_page").map_or(20, ruby_to_i);
    if page <= 0 {
        return error(StatusCode::BAD_REQUEST, format!("invalid page: {page}")).reply();
    }
    if per_page <= 0 {
        return error(
            StatusCode::BAD_REQUEST,
            format!("invalid per_page: {per_page}"),
        )
        .reply();
    }
    let mut own: Vec<_> = s
        .jobs
        .origins::<Submission>()
        .into_iter()
        .filter(|(submission, _)| submission.owner == caller.key)
        .collect();
    own.sort_by(|a, b| (b.0.created_at_ms, &b.0.token).cmp(&(a.0.created_at_ms, &a.0.token)));
    let total = own.len() as i64;
    let total_pages = (total + per_page - 1) / per_page;
    let base64 = query.is_true("base64_encoded");
    let start = ((page - 1).saturating_mul(per_page)).min(total) as usize;
    let mut views = Vec::new();
    for (submission, log) in own.iter().skip(start).take(per_page as usize) {
        match render(submission, log, &fields, base64) {
            Ok(view) => views.push(view),
            Err(_) => return error(StatusCode::BAD_REQUEST, NOT_UTF8_MANY).reply(),
        }
    }
    json_reply(
        StatusCode::OK,
        &json!({
            "submissions": views,
            "meta": {
                "current_page": page,
                "next_page": (page < total_pages).then_some(page + 1),
                "prev_page": (page > 1).then_some(page - 1),
                "total_pages": total_pages,
                "total_count": total,
            },
        }),
    )
}

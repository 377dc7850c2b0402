//! The REST API's handlers (`/api/v1/...` and `/healthz`); `crate::router` routes to them.
use crate::jobs::Jobs;
use crate::ws::WsConfig;
use bytes::Bytes;
use onpyrunner_images::Language;
use onpyrunner_protocol::SourceFile;
use onpyrunner_supervisor::engine::{Engine, SubmitError};
use onpyrunner_supervisor::limits::{LimitRequest, Limits};
use onpyrunner_supervisor::run::{RunSpec, MAX_SOURCE_BYTES};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::sync::Arc;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub jobs: Jobs,
    pub ws: Arc<WsConfig>,
}

impl AppState {
    /// The state with the WebSocket endpoint's default configuration.
    pub fn new(engine: Engine, jobs: Jobs) -> Self {
        AppState {
            engine,
            jobs,
            ws: Arc::new(WsConfig::default()),
        }
    }

    pub fn with_ws(mut self, ws: WsConfig) -> Self {
        self.ws = Arc::new(ws);
        self
    }
}

/// A run as clients post it (REST and WebSocket alike).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    pub language: String,
    pub code: Option<String>,
    pub files: Option<Vec<FileBody>>,
    pub stdin: Option<String>,
    pub args: Option<Vec<String>>,
    pub limits: Option<LimitRequest>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    pub name: String,
    pub content: String,
}

/// An error as clients get it.
#[derive(Debug, Serialize)]
pub struct ApiError {
    #[serde(skip)]
    pub status: StatusCode,
    #[serde(skip)]
    pub retry_after: Option<u64>,
    pub error: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: impl Into<String>) -> Self {
        ApiError {
            status,
            retry_after: None,
            error: error.into(),
            field: None,
            limit: None,
        }
    }

    pub fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn limit(mut self, limit: impl ToString) -> Self {
        self.limit = Some(limit.to_string());
        self
    }

    pub fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after;
        let mut response =
            warp::reply::with_status(warp::reply::json(&self), status).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert("retry-after", secs.to_string().parse().expect("digits"));
        }
        response
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        let message = e.to_string();
        match e {
            SubmitError::Invalid(invalid) => {
                let mut err =
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message).field(invalid.field);
                err.limit = invalid.limit;
                err
            }
            SubmitError::Busy(busy) => {
                let mut err =
                    ApiError::new(StatusCode::TOO_MANY_REQUESTS, message).limit(busy.max_queued);
                err.retry_after = Some(busy.retry_after_secs());
                err
            }
            SubmitError::LanguageUnavailable { .. } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).field("language")
            }
            _ => {
                let mut err = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message);
                err.retry_after = Some(5);
                err
            }
        }
    }
}

/// Turn a posted run into a spec; the error names the field and the limit.
pub fn run_spec(body: &RunBody, engine: &Engine) -> Result<(RunSpec, Bytes), ApiError> {
    let language = find_language(&body.language)?;
    let files = match (&body.code, &body.files) {
        (Some(code), None) => vec![SourceFile {
            name: language.source_file.clone(),
            content: code.clone().into_bytes(),
        }],
        (None, Some(files)) if !files.is_empty() => files
            .iter()
            .map(|f| SourceFile {
                name: f.name.clone(),
                content: f.content.clone().into_bytes(),
            })
            .collect(),
        (Some(_), Some(_)) => {
            return Err(unprocessable("give either code or files, not both").field("code"))
        }
        _ => return Err(unprocessable("code or files is required").field("code")),
    };
    let total: usize = files.iter().map(|f| f.content.len()).sum();
    if total > MAX_SOURCE_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("source of {total} bytes exceeds the limit of {MAX_SOURCE_BYTES} bytes"),
        )
        .field(if body.code.is_some() { "code" } else { "files" })
        .limit(MAX_SOURCE_BYTES));
    }
    let caps = &engine.config().caps;
    let stdin = Bytes::from(body.stdin.clone().unwrap_or_default().into_bytes());
    if stdin.len() as u64 > caps.stdin_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "stdin of {} bytes exceeds the limit of {} bytes",
                stdin.len(),
                caps.stdin_bytes
            ),
        )
        .field("stdin")
        .limit(caps.stdin_bytes));
    }
    let request = body.limits.clone().unwrap_or_default();
    let limits = Limits::resolve(language, &request, caps).map_err(|e| {
        unprocessable(e.to_string())
            .field(format!("limits.{}", e.field))
            .limit(&e.max)
    })?;
    let spec = RunSpec {
        language,
        files,
        args: body.args.clone().unwrap_or_default(),
        limits,
    };
    Ok((spec, stdin))
}

fn unprocessable(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, message)
}

fn find_language(id: &str) -> Result<&'static Language, ApiError> {
    onpyrunner_images::find(id).ok_or_else(|| {
        let ids: Vec<&str> = onpyrunner_images::languages()
            .iter()
            .map(|l| l.id.as_str())
            .collect();
        unprocessable(format!(
            "unknown language {id:?}; known: {}",
            ids.join(", ")
        ))
        .field("language")
    })
}

/// `GET /healthz`.
pub fn healthz(s: &AppState) -> Response {
    let engine = &s.engine;
    let ok = engine.daemon_up() && !engine.is_shutting_down();
    let pools: serde_json::Map<String, serde_json::Value> = engine
        .pools()
        .iter()
        .map(|(id, p)| {
            (
                id.clone(),
                json!({"ready": p.ready(), "target": p.target()}),
            )
        })
        .collect();
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "docker": engine.daemon_up(),
        "shutting_down": engine.is_shutting_down(),
        "running": engine.queue().running(),
        "queued": engine.queue().queued(),
        "pools": pools,
    });
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// `GET /api/v1/languages`.
pub fn languages(s: &AppState) -> Response {
    let list: Vec<_> = onpyrunner_images::languages()
        .iter()
        .map(|l| {
            json!({
                "id": l.id,
                "name": l.name,
                "version": l.version,
                "source_file": l.source_file,
                "available": s.engine.available(&l.id),
                "limits": l.limits,
            })
        })
        .collect();
    warp::reply::json(&list).into_response()
}

fn parse_body(body: &[u8]) -> Result<RunBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("invalid request body: {e}"))
    })
}

/// `POST /api/v1/runs`: the run, to its end.
pub async fn post_run(s: AppState, body: Bytes) -> Result<Response, ApiError> {
    let body = parse_body(&body)?;
    let (spec, stdin) = run_spec(&body, &s.engine)?;
    let session = s.engine.submit(spec)?;
    let (_, mut events, stdin_tx, _stopper) = session.into_parts();
    if let Some(tx) = stdin_tx {
        tokio::spawn(async move {
            if !stdin.is_empty() {
                let _ = tx.send(stdin).await;
            }
        });
    }
    // Dropping this future (the client left) drops `events`: the run ends as client_gone.
    let mut stdout = Vec::new();
    let mut stderr = Vec::new();
    let mut summary = None;
    use onpyrunner_supervisor::run::OutputStream;
    use onpyrunner_supervisor::session::Event;
    while let Some(event) = events.recv().await {
        match event {
            Event::Output(c) if c.stream == OutputStream::Stdout => {
                stdout.extend_from_slice(&c.data)
            }
            Event::Output(c) => stderr.extend_from_slice(&c.data),
            Event::Summary(s) => summary = Some(s),
            _ => {}
        }
    }
    let summary = summary.ok_or_else(|| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run ended without a summary",
        )
    })?;
    let mut reply = serde_json::to_value(&summary).expect("summary serializes");
    reply["stdout"] = String::from_utf8_lossy(&stdout).into_owned().into();
    reply["stderr"] = String::from_utf8_lossy(&stderr).into_owned().into();
    Ok(warp::reply::json(&reply).into_response())
}

/// `POST /api/v1/jobs`: the run as a job, answered at once.
pub fn post_job(s: &AppState, body: &[u8]) -> Result<Response, ApiError> {
    let body = parse_body(body)?;
    let (spec, stdin) = run_spec(&body, &s.engine)?;
    if !s.jobs.has_room() {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many jobs kept (limit {}); retry later", s.jobs.max()),
        )
        .limit(s.jobs.max());
        err.retry_after = Some(5);
        return Err(err);
    }
    let language = spec.language.id.clone();
    let session = s.engine.submit(spec)?;
    let id = s.jobs.insert(session, &language, stdin).map_err(|e| {
        let mut err = ApiError::new(StatusCode::TOO_MANY_REQUESTS, e.to_string()).limit(e.max);
        err.retry_after = Some(5);
        err
    })?;
    let location = format!("/api/v1/jobs/{id}");
    let reply = warp::reply::with_status(
        warp::reply::json(&json!({"id": id, "location": location})),
        StatusCode::ACCEPTED,
    );
    Ok(warp::reply::with_header(reply, "location", location).into_response())
}

/// `GET /api/v1/jobs/{id}`.
pub fn job(s: &AppState, id: &str) -> Response {
    match s.jobs.view(id) {
        Some(view) => warp::reply::json(&view).into_response(),
        None => no_such_job(id),
    }
}

/// `DELETE /api/v1/jobs/{id}`.
pub fn stop_job(s: &AppState, id: &str) -> Response {
    if s.jobs.stop(id) {
        warp::reply::with_status(
            warp::reply::json(&json!({"id": id, "stopping": true})),
            StatusCode::ACCEPTED,
        )
        .into_response()
    } else {
        no_such_job(id)
    }
}

pub(crate) fn no_such_job(id: &str) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no job {id:?} (unknown, or expired)"),
    )
    .field("id")
    .into_response()
}

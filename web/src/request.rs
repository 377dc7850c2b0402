//! A run as clients post it (REST and WebSocket alike), and its validation into a
//! [`RunSpec`]: errors name the field and the limit.
use crate::error::ApiError;
use crate::identity::Caller;
use bytes::Bytes;
use onpyrunner_languages::Language;
use onpyrunner_protocol::SourceFile;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{RunSpec, MAX_SOURCE_BYTES};
use onpyrunner_supervisor::runner::Runner;
use warp::http::StatusCode;

/// A run as clients post it: part of the run model.
pub use onpyrunner_protocol::run::{FileBody, RunBody};

/// The posted JSON: 400 when it is not JSON, 422 when it is not a run.
pub fn parse_body(body: &[u8]) -> Result<RunBody, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let status = if e.is_data() {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, format!("invalid request body: {e}"))
    })
}

/// Turn a posted run of `caller` into a spec; the error names the field and the limit. The
/// caller's token may let it raise its limits up to the caps.
pub fn run_spec(
    body: &RunBody,
    engine: &dyn Runner,
    caller: &Caller,
) -> Result<(RunSpec, Bytes), ApiError> {
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
    let caps = engine.caps();
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
    let caps = Caps {
        raise: caps.raise || caller.raise_limits(),
        ..caps.clone()
    };
    let limits = Limits::resolve(language, &request, &caps).map_err(|e| {
        unprocessable(e.to_string())
            .field(format!("limits.{}", e.field))
            .limit(&e.max)
    })?;
    let spec = RunSpec {
        client: caller.client(),
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
    onpyrunner_languages::find(id).ok_or_else(|| {
        let ids: Vec<&str> = onpyrunner_languages::languages()
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

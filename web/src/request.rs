//! A run as clients post it (REST and WebSocket alike), and its validation into a
//! [`RunSpec`]: errors name the field and the limit.
use crate::error::ApiError;
use crate::identity::Caller;
use bytes::Bytes;
use onpyrunner_languages::Language;
use onpyrunner_protocol::run::{CompareMode, TestBody};
use onpyrunner_protocol::SourceFile;
use onpyrunner_supervisor::judging::{JudgeSpec, TestCase, MAX_TESTS};
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{RunSpec, MAX_SOURCE_BYTES};
use onpyrunner_supervisor::runner::Runner;
use warp::http::StatusCode;

/// A run as clients post it: part of the run model.
pub use onpyrunner_protocol::run::{FileBody, RunBody};

/// The posted JSON: 400 when it is not JSON, 422 when it is not a run.
pub fn parse_body(body: &[u8]) -> Result<RunBody, ApiError> {
    // Whether it is JSON at all is asked first: parsing a run stops at the first error it
    // meets, which in `[[[[...` (unclosed) is the shape, an array where a run should be, and
    // the answer was 422 for what is not JSON. The scan keeps nothing and nests without
    // recursion, however deep the brackets.
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("invalid request body: not JSON: {e}"),
        )
    })?;
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
    body: RunBody,
    engine: &dyn Runner,
    caller: &Caller,
) -> Result<(RunSpec, Bytes), ApiError> {
    let (mut spec, stdin) = run_spec_within(body, &caps_of(engine, caller))?;
    spec.client = caller.client();
    Ok((spec, stdin))
}

/// The caps `caller`'s runs are held to: the engine's, raised when its token allows.
pub fn caps_of(engine: &dyn Runner, caller: &Caller) -> Caps {
    Caps {
        raise: engine.caps().raise || caller.raise_limits(),
        ..engine.caps().clone()
    }
}

/// [`run_spec`] against the caps alone, for no one in particular: no IO and no engine (the
/// `rest_run_body` fuzz target calls it). The source and stdin move into the spec, not copied
/// (they may be 17 MiB).
pub fn run_spec_within(body: RunBody, caps: &Caps) -> Result<(RunSpec, Bytes), ApiError> {
    let language = find_language(&body.language)?;
    let source_field = if body.code.is_some() { "code" } else { "files" };
    let files = match (body.code, body.files) {
        (Some(code), None) => vec![SourceFile {
            name: language.source_file.clone(),
            content: code.into_bytes(),
        }],
        (None, Some(files)) if !files.is_empty() => files
            .into_iter()
            .map(|f| SourceFile {
                name: f.name,
                content: f.content.into_bytes(),
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
        .field(source_field)
        .limit(MAX_SOURCE_BYTES));
    }
    let judge = judge_spec(body.tests, body.compare, body.stdin.is_some())?;
    let stdin = Bytes::from(body.stdin.unwrap_or_default().into_bytes());
    check_stdin(stdin.len(), caps)?;
    let request = body.limits.unwrap_or_default();
    let limits = Limits::resolve(language, &request, caps).map_err(|e| {
        unprocessable(e.to_string())
            .field(format!("limits.{}", e.field))
            .limit(&e.max)
    })?;
    let spec = RunSpec {
        client: None,
        language,
        files,
        args: body.args.unwrap_or_default(),
        limits,
        judge,
    };
    Ok((spec, stdin))
}

/// Most bytes of all tests' inputs of one run together, and of their expected outputs: the
/// inputs travel in the launch frame beside the source (16 MiB in all), the expected outputs
/// stay in the server's memory while the run goes.
pub const MAX_TESTS_INPUT_BYTES: usize = 8 * 1024 * 1024;
pub const MAX_TESTS_EXPECTED_BYTES: usize = 8 * 1024 * 1024;

/// A judged run's tests, checked: `None` when the run is not judged.
/// A run's stdin within the caps: 413 naming `stdin` and the limit when it is not.
pub fn check_stdin(len: usize, caps: &Caps) -> Result<(), ApiError> {
    if len as u64 > caps.stdin_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "stdin of {len} bytes exceeds the limit of {} bytes",
                caps.stdin_bytes
            ),
        )
        .field("stdin")
        .limit(caps.stdin_bytes));
    }
    Ok(())
}

fn judge_spec(
    tests: Option<Vec<TestBody>>,
    compare: Option<CompareMode>,
    has_stdin: bool,
) -> Result<Option<JudgeSpec>, ApiError> {
    // `compare` without tests has nothing to compare: it is ignored, as the document says.
    let Some(tests) = tests else {
        return Ok(None);
    };
    if has_stdin {
        return Err(
            unprocessable("give stdin or tests, not both: each test's input is its stdin")
                .field("stdin"),
        );
    }
    if tests.is_empty() || tests.len() > MAX_TESTS {
        return Err(unprocessable(format!(
            "{} tests: a judged run has 1 to {MAX_TESTS}",
            tests.len()
        ))
        .field("tests")
        .limit(MAX_TESTS));
    }
    let inputs: usize = tests.iter().map(|t| t.input.len()).sum();
    if inputs > MAX_TESTS_INPUT_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the tests' inputs of {inputs} bytes exceed the limit of {MAX_TESTS_INPUT_BYTES} bytes"
            ),
        )
        .field("tests[].input")
        .limit(MAX_TESTS_INPUT_BYTES));
    }
    let expected: usize = tests
        .iter()
        .map(|t| t.expected_output.as_ref().map_or(0, String::len))
        .sum();
    if expected > MAX_TESTS_EXPECTED_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the tests' expected outputs of {expected} bytes exceed the limit of {MAX_TESTS_EXPECTED_BYTES} bytes"
            ),
        )
        .field("tests[].expected_output")
        .limit(MAX_TESTS_EXPECTED_BYTES));
    }
    Ok(Some(JudgeSpec {
        tests: tests
            .into_iter()
            .map(|t| TestCase {
                input: t.input.into_bytes(),
                expected: t.expected_output.map(String::into_bytes),
            })
            .collect(),
        compare: compare.unwrap_or_default(),
    }))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn status(body: &str) -> u16 {
        match parse_body(body.as_bytes()) {
            Ok(_) => 200,
            Err(e) => e.status.as_u16(),
        }
    }

    #[test]
    fn what_is_not_json_is_400_and_json_that_is_not_a_run_is_422() {
        let deep = "[".repeat(100_000);
        assert_eq!(status(&deep), 400, "unclosed, however deep");
        assert_eq!(
            status(&format!(r#"{{"language":"python","limits":{deep}"#)),
            400
        );
        assert_eq!(status(r#"{"language": 1"#), 400, "cut short");
        assert_eq!(status(r#"{"language":"python"} x"#), 400, "trailing bytes");
        assert_eq!(status(""), 400);
        let closed = format!("{deep}{}", "]".repeat(100_000));
        assert_eq!(status(&closed), 422, "deep but JSON: not a run");
        assert_eq!(status(r#"{"language": 1}"#), 422);
        assert_eq!(status(r#"{"code": "x"}"#), 422, "no language");
        assert_eq!(status(r#"{"language":"python","code":"x"}"#), 200);
    }
}

//! A submission as Judge0's serializer renders it (`app/serializers/submission_serializer.rb`):
//! every column the client asks for (`fields`, default the eight of `default_fields`, `*`
//! all), texts as they are or as Ruby's `encode64`, `status` `{id, description}`, `language`
//! `{id, name}`, decimals as strings, sizes in KB, times with milliseconds. The results are
//! read from the job's run log, whatever its state.
use super::statuses::{ending, Status};
use super::submission::Submission;
use super::text::{decimal, encode64, seconds, timestamp};
use onpyrunner_protocol::run::{Event, OutputStream, RunState, Summary};
use onpyrunner_supervisor::run_log::RunLog;
use serde_json::{json, Map, Value};

/// Every field, in the serializer's order (the table's columns, then `status` and
/// `language`).
pub const FIELDS: [&str; 35] = [
    "source_code",
    "language_id",
    "stdin",
    "expected_output",
    "stdout",
    "status_id",
    "created_at",
    "finished_at",
    "time",
    "memory",
    "stderr",
    "token",
    "number_of_runs",
    "cpu_time_limit",
    "cpu_extra_time",
    "wall_time_limit",
    "memory_limit",
    "stack_limit",
    "max_processes_and_or_threads",
    "enable_per_process_and_thread_time_limit",
    "enable_per_process_and_thread_memory_limit",
    "max_file_size",
    "compile_output",
    "exit_code",
    "exit_signal",
    "message",
    "wall_time",
    "compiler_options",
    "command_line_arguments",
    "redirect_stderr_to_stdout",
    "callback_url",
    "additional_files",
    "enable_network",
    "status",
    "language",
];

/// `SubmissionSerializer.default_fields`.
pub const DEFAULT_FIELDS: [&str; 8] = [
    "token",
    "time",
    "memory",
    "stdout",
    "stderr",
    "compile_output",
    "message",
    "status",
];

/// The fields a `fields` parameter asks for (`Fields::Submission`), or the unknown ones.
pub fn requested(fields: Option<&str>) -> Result<Vec<&'static str>, Vec<String>> {
    let asked: Vec<&str> = fields
        .unwrap_or("")
        .split(',')
        .filter(|f| !f.is_empty())
        .collect();
    let unknown: Vec<String> = asked
        .iter()
        .filter(|f| **f != "*" && !FIELDS.contains(f))
        .map(|f| f.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(unknown);
    }
    if asked.contains(&"*") {
        return Ok(FIELDS.to_vec());
    }
    let known: Vec<&'static str> = FIELDS
        .iter()
        .copied()
        .filter(|f| asked.contains(f))
        .collect();
    Ok(if known.is_empty() {
        DEFAULT_FIELDS.to_vec()
    } else {
        known
    })
}

/// What the run's log says so far.
#[derive(Debug, Default)]
struct Observed {
    compile_output: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    /// Both streams in the order they came (for `redirect_stderr_to_stdout`).
    both: Vec<u8>,
    state: Option<RunState>,
    finished_at_ms: Option<u64>,
    summary: Option<Summary>,
}

fn observe(log: &RunLog, compiles: bool) -> Observed {
    let mut seen = Observed::default();
    let mut compiling = compiles;
    let mut pos = 0;
    while let Some((event, next)) = log.read(pos) {
        match event {
            Event::State { state, at_unix_ms } => {
                seen.state = Some(state);
                if state.is_final() {
                    seen.finished_at_ms = Some(at_unix_ms);
                }
            }
            Event::Output(chunk) if compiling => seen.compile_output.extend_from_slice(&chunk.data),
            Event::Output(chunk) => {
                match chunk.stream {
                    OutputStream::Stdout => seen.stdout.extend_from_slice(&chunk.data),
                    OutputStream::Stderr => seen.stderr.extend_from_slice(&chunk.data),
                }
                seen.both.extend_from_slice(&chunk.data);
            }
            Event::Compiled(_) => compiling = false,
            Event::Summary(summary) => seen.summary = Some(summary),
            _ => {}
        }
        pos = next;
    }
    seen
}

/// A text field's bytes could not be shown without base64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUtf8;

/// The submission's `fields`, as Judge0 renders them; `Err` when one is not UTF-8 and
/// `base64` is off (Judge0 then asks for `base64_encoded=true`).
pub fn render(
    submission: &Submission,
    log: &RunLog,
    fields: &[&str],
    base64: bool,
) -> Result<Value, NotUtf8> {
    let seen = observe(log, !submission.language.ours.compile.is_empty());
    let text = |bytes: Option<&[u8]>| -> Result<Value, NotUtf8> {
        match bytes {
            None => Ok(Value::Null),
            Some(b) if base64 => Ok(Value::String(encode64(b))),
            Some(b) => std::str::from_utf8(b)
                .map(|s| Value::String(s.to_string()))
                .map_err(|_| NotUtf8),
        }
    };
    let some = |b: &[u8]| (!b.is_empty()).then(|| b.to_vec());
    let (stdout, stderr) = if submission.redirect_stderr_to_stdout {
        (some(&seen.both), None)
    } else {
        (some(&seen.stdout), some(&seen.stderr))
    };
    let compile_output = some(&seen.compile_output);
    let ended = seen.summary.as_ref().map(|summary| {
        ending(
            summary,
            stdout.as_deref(),
            submission.expected_output.as_deref(),
        )
    });
    let status = match (&ended, seen.state) {
        (Some(e), _) => e.status,
        (None, Some(RunState::Running)) => Status::Processing,
        (None, _) => Status::InQueue,
    };
    let failed_compile = ended.as_ref().is_some_and(|e| e.compile_failed);
    // A failed compile reports nothing of a run: Judge0 clears these.
    let ran = ended.is_some() && !failed_compile;
    let usage = seen.summary.as_ref().map(|s| &s.usage).filter(|_| ran);
    let compile_output = match (&seen.summary, failed_compile) {
        (Some(s), true) if s.reason == onpyrunner_protocol::Reason::Timeout => {
            Some(b"Compilation time limit exceeded.".to_vec())
        }
        _ => compile_output,
    };
    let message = ended.as_ref().and_then(|e| e.message.clone());
    let language = &submission.language;
    let mut out = Map::new();
    for &field in fields {
        let value = match field {
            "source_code" => text(Some(&submission.source_code))?,
            "language_id" => json!(language.id),
            "stdin" => text(submission.stdin.as_deref())?,
            "expected_output" => text(submission.expected_output.as_deref())?,
            "stdout" => text(stdout.as_deref().filter(|_| ran))?,
            "stderr" => text(stderr.as_deref().filter(|_| ran))?,
            "compile_output" => text(compile_output.as_deref().filter(|_| ended.is_some()))?,
            "status_id" => json!(status.id()),
            "created_at" => json!(timestamp(submission.created_at_ms)),
            "finished_at" => match (ended.is_some(), seen.finished_at_ms) {
                (true, Some(ms)) => json!(timestamp(ms)),
                _ => Value::Null,
            },
            "time" => usage.map_or(Value::Null, |u| json!(seconds(u.cpu_ms))),
            "wall_time" => usage.map_or(Value::Null, |u| json!(seconds(u.wall_ms))),
            "memory" => usage.map_or(Value::Null, |u| json!(u.memory_kib)),
            "token" => json!(submission.token),
            "number_of_runs" => json!(submission.number_of_runs),
            "cpu_time_limit" => json!(decimal(submission.cpu_time_limit)),
            "cpu_extra_time" => json!(decimal(submission.cpu_extra_time)),
            "wall_time_limit" => json!(decimal(submission.wall_time_limit)),
            "memory_limit" => json!(submission.memory_limit),
            "stack_limit" => json!(submission.stack_limit),
            "max_processes_and_or_threads" => json!(submission.max_processes_and_or_threads),
            "enable_per_process_and_thread_time_limit" => {
                json!(submission.enable_per_process_and_thread_time_limit)
            }
            "enable_per_process_and_thread_memory_limit" => {
                json!(submission.enable_per_process_and_thread_memory_limit)
            }
            "max_file_size" => json!(submission.max_file_size),
            "exit_code" => json!(ended.as_ref().and_then(|e| e.exit_code)),
            "exit_signal" => json!(ended.as_ref().and_then(|e| e.exit_signal)),
            "message" => match &message {
                Some(m) if base64 => json!(encode64(m.as_bytes())),
                m => json!(m),
            },
            "compiler_options" => json!(submission.compiler_options),
            "command_line_arguments" => json!(submission.command_line_arguments),
            "redirect_stderr_to_stdout" => json!(submission.redirect_stderr_to_stdout),
            "callback_url" => json!(submission.callback_url),
            "additional_files" => Value::Null,
            "enable_network" => json!(submission.enable_network),
            "status" => json!(status.view()),
            "language" => json!({"id": language.id, "name": language.name}),
            _ => continue,
        };
        out.insert(field.to_string(), value);
    }
    Ok(Value::Object(out))
}

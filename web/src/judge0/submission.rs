//! A Judge0 submission as it is posted: validated as Judge0's model validates it
//! (`app/models/submission.rb`: its checks in its order, its sentences, 422
//! `{field: [messages]}`), its limits mapped onto ours, and kept as the job's origin so that a
//! rendering can echo what was asked.
use super::callback::Callbacks;
use super::languages::{self, Judge0Language};
use super::text::{decimal, decode64};
use crate::identity::ClientKey;
use bytes::Bytes;
use onpyrunner_protocol::SourceFile;
use onpyrunner_supervisor::limits::{Caps, LimitRequest, Limits};
use onpyrunner_supervisor::run::{RunSpec, MAX_SOURCE_BYTES};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;
use std::cmp::Ordering;

/// A submission as posted, with its limits as they apply: the origin of its job.
#[derive(Debug, Clone)]
pub struct Submission {
    pub token: String,
    pub language: Judge0Language,
    pub source_code: Vec<u8>,
    pub stdin: Option<Vec<u8>>,
    pub expected_output: Option<Vec<u8>>,
    pub number_of_runs: u64,
    pub cpu_time_limit: f64,
    pub cpu_extra_time: f64,
    pub wall_time_limit: f64,
    /// KB, as every size below.
    pub memory_limit: u64,
    pub stack_limit: u64,
    pub max_processes_and_or_threads: u64,
    pub max_file_size: u64,
    pub enable_per_process_and_thread_time_limit: bool,
    pub enable_per_process_and_thread_memory_limit: bool,
    pub redirect_stderr_to_stdout: bool,
    pub enable_network: bool,
    pub compiler_options: Option<String>,
    pub command_line_arguments: Option<String>,
    pub callback_url: Option<String>,
    pub created_at_ms: u64,
    /// Who posted it: `GET /submissions` lists a caller's own.
    pub owner: Option<ClientKey>,
}

/// Judge0's validation errors, in the order its model adds them: `{field: [messages]}`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Errors(pub Vec<(&'static str, Vec<String>)>);

impl Errors {
    pub fn add(&mut self, field: &'static str, message: impl Into<String>) {
        match self.0.iter_mut().find(|(f, _)| *f == field) {
            Some((_, messages)) => messages.push(message.into()),
            None => self.0.push((field, vec![message.into()])),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn of(field: &'static str, message: impl Into<String>) -> Self {
        let mut errors = Errors::default();
        errors.add(field, message);
        errors
    }
}

impl Serialize for Errors {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (field, messages) in &self.0 {
            map.serialize_entry(field, messages)?;
        }
        map.end()
    }
}

/// What a submission may ask of a language on this server: Judge0's configuration (seconds,
/// KB), filled from the language's limits and the caller's caps.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub wall_time_limit: f64,
    pub max_wall_time_limit: f64,
    pub memory_limit: u64,
    pub max_memory_limit: u64,
    pub max_processes_and_or_threads: u64,
    pub max_max_processes_and_or_threads: u64,
    pub max_file_size: u64,
    pub max_max_file_size: u64,
}

/// Judge0's default stack (KB); checked, not applied (see docs/compat.md).
pub const STACK_LIMIT: u64 = 64_000;
/// We run a submission once: its time is that run's.
pub const MAX_NUMBER_OF_RUNS: u64 = 1;
/// Judge0's bound on `compiler_options` and `command_line_arguments`.
pub const MAX_OPTIONS: usize = 512;

impl Bounds {
    pub fn of(lang: &onpyrunner_languages::Language, caps: &Caps) -> Self {
        let (_, most) = Limits::request_range(lang, caps);
        let defaults = Limits::defaults(lang, caps);
        Bounds {
            wall_time_limit: defaults.wall_ms as f64 / 1000.0,
            max_wall_time_limit: most.wall_ms.unwrap_or(defaults.wall_ms) as f64 / 1000.0,
            memory_limit: defaults.memory_mib * 1024,
            max_memory_limit: most.memory_mib.unwrap_or(defaults.memory_mib) * 1024,
            max_processes_and_or_threads: defaults.pids.max(1) as u64,
            max_max_processes_and_or_threads: defaults.pids.max(1) as u64,
            max_file_size: defaults.file_size_mib * 1024,
            max_max_file_size: defaults.file_size_mib * 1024,
        }
    }

    /// What every language allows: the least of each bound, so that a client that keeps
    /// within `/config_info` is refused by none.
    pub fn everywhere(caps: &Caps) -> Self {
        let all: Vec<Bounds> = onpyrunner_languages::languages()
            .iter()
            .map(|l| Bounds::of(l, caps))
            .collect();
        let least = |f: fn(&Bounds) -> f64| all.iter().map(f).fold(f64::INFINITY, f64::min);
        let least_u = |f: fn(&Bounds) -> u64| all.iter().map(f).min().unwrap_or(0);
        Bounds {
            wall_time_limit: least(|b| b.wall_time_limit),
            max_wall_time_limit: least(|b| b.max_wall_time_limit),
            memory_limit: least_u(|b| b.memory_limit),
            max_memory_limit: least_u(|b| b.max_memory_limit),
            max_processes_and_or_threads: least_u(|b| b.max_processes_and_or_threads),
            max_max_processes_and_or_threads: least_u(|b| b.max_max_processes_and_or_threads),
            max_file_size: least_u(|b| b.max_file_size),
            max_max_file_size: least_u(|b| b.max_max_file_size),
        }
    }
}

/// A submission ready to run: its record and the run.
pub struct Accepted {
    pub submission: Submission,
    pub spec: RunSpec,
    pub stdin: Bytes,
}

/// A number as Rails' numericality reads a parameter: a JSON number or a numeric string;
/// `Err` for anything else ("is not a number"), `None` when absent or null.
fn number(body: &Value, field: &str) -> Result<Option<f64>, ()> {
    match body.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n.as_f64().map(Some).ok_or(()),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => s.trim().parse::<f64>().map(Some).map_err(|_| ()),
        Some(_) => Err(()),
    }
}

/// A boolean as ActiveModel casts one: `false`, `0`, `"0"`, `"f"`, `"false"`, `"off"` are
/// false, `""` and null nil, anything else true.
fn boolean(body: &Value, field: &str) -> Option<bool> {
    match body.get(field)? {
        Value::Null => None,
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(!matches!(
            s.as_str(),
            "0" | "f" | "F" | "false" | "FALSE" | "off" | "OFF"
        )),
        _ => Some(true),
    }
}

/// A text parameter (a number is taken as its digits, as Rails' params are strings).
fn text(body: &Value, field: &str) -> Option<String> {
    match body.get(field)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        other => Some(other.to_string()),
    }
}

fn blank(s: &Option<String>) -> bool {
    s.as_deref().is_none_or(|s| s.trim().is_empty())
}

/// One numeric bound as Rails words it: `must be greater than 0`, `must be less than or equal
/// to 15.0`.
#[derive(Clone, Copy)]
enum Bound {
    Above(f64),
    AtLeast(f64),
    AtMost(f64),
}

/// `value` against `bounds`, with Judge0's messages; integers as integers, floats as Ruby
/// writes them.
fn check_number(
    errors: &mut Errors,
    field: &'static str,
    value: Result<Option<f64>, ()>,
    bounds: &[Bound],
    integer: bool,
) -> Option<f64> {
    let write = |x: f64| {
        if integer {
            format!("{}", x as i64)
        } else {
            decimal(x)
        }
    };
    match value {
        Err(()) => {
            errors.add(field, "is not a number");
            None
        }
        Ok(None) => None,
        Ok(Some(v)) => {
            for bound in bounds {
                let refused = match *bound {
                    Bound::Above(x) => (!matches!(v.partial_cmp(&x), Some(Ordering::Greater)))
                        .then(|| format!("must be greater than {}", write(x))),
                    Bound::AtLeast(x) => {
                        (!matches!(v.partial_cmp(&x), Some(Ordering::Greater | Ordering::Equal)))
                            .then(|| format!("must be greater than or equal to {}", write(x)))
                    }
                    Bound::AtMost(x) => {
                        (!matches!(v.partial_cmp(&x), Some(Ordering::Less | Ordering::Equal)))
                            .then(|| format!("must be less than or equal to {}", write(x)))
                    }
                };
                if let Some(message) = refused {
                    errors.add(field, message);
                }
            }
            Some(v)
        }
    }
}

/// Validate a posted submission of `owner` and make its run, or say what Judge0 would.
pub fn accept(
    body: &Value,
    base64: bool,
    caps: &Caps,
    callbacks: &Callbacks,
    owner: Option<ClientKey>,
    now_ms: u64,
) -> Result<Accepted, Errors> {
    let mut errors = Errors::default();
    if !body.is_object() {
        errors.add("source_code", "can't be blank");
        errors.add("language_id", "can't be blank");
        return Err(errors);
    }
    let decode =
        |field: &str| text(body, field).map(|t| if base64 { decode64(&t) } else { t.into_bytes() });
    let source_code = decode("source_code");
    let stdin = decode("stdin");
    let expected_output = decode("expected_output");

    let language_id = match number(body, "language_id") {
        Ok(Some(id)) if id >= 0.0 && id.fract() == 0.0 && id <= f64::from(u32::MAX) => {
            Some(id as u32)
        }
        Ok(Some(id)) => Some(id.max(0.0).min(f64::from(u32::MAX)) as u32),
        _ => None,
    };
    let language = language_id.and_then(languages::find);
    let bounds = match &language {
        Some(l) => Bounds::of(l.ours, caps),
        None => Bounds::everywhere(caps),
    };

    // Presence, then each number, in the model's order.
    if source_code
        .as_deref()
        .is_none_or(|s| s.iter().all(u8::is_ascii_whitespace))
    {
        errors.add("source_code", "can't be blank");
    }
    if language_id.is_none() {
        errors.add("language_id", "can't be blank");
    }
    let max_wall = bounds.max_wall_time_limit;
    let number_of_runs = check_number(
        &mut errors,
        "number_of_runs",
        number(body, "number_of_runs"),
        &[Bound::Above(0.0), Bound::AtMost(MAX_NUMBER_OF_RUNS as f64)],
        true,
    );
    let cpu_time_limit = check_number(
        &mut errors,
        "cpu_time_limit",
        number(body, "cpu_time_limit"),
        &[Bound::AtLeast(0.0), Bound::AtMost(max_wall)],
        false,
    );
    let cpu_extra_time = check_number(
        &mut errors,
        "cpu_extra_time",
        number(body, "cpu_extra_time"),
        &[Bound::AtLeast(0.0), Bound::AtMost(max_wall)],
        false,
    );
    let wall_time_limit = check_number(
        &mut errors,
        "wall_time_limit",
        number(body, "wall_time_limit"),
        &[Bound::AtLeast(1.0), Bound::AtMost(max_wall)],
        false,
    );
    let memory_limit = check_number(
        &mut errors,
        "memory_limit",
        number(body, "memory_limit"),
        &[
            Bound::AtLeast(2048.0),
            Bound::AtMost(bounds.max_memory_limit as f64),
        ],
        true,
    );
    let stack_limit = check_number(
        &mut errors,
        "stack_limit",
        number(body, "stack_limit"),
        &[
            Bound::AtLeast(0.0),
            Bound::AtMost(bounds.max_memory_limit as f64),
        ],
        true,
    );
    let processes = check_number(
        &mut errors,
        "max_processes_and_or_threads",
        number(body, "max_processes_and_or_threads"),
        &[
            Bound::Above(0.0),
            Bound::AtMost(bounds.max_max_processes_and_or_threads as f64),
        ],
        true,
    );
    let per_process_time = boolean(body, "enable_per_process_and_thread_time_limit");
    if per_process_time == Some(true) {
        errors.add(
            "enable_per_process_and_thread_time_limit",
            "this option cannot be enabled",
        );
    }
    let per_process_memory = boolean(body, "enable_per_process_and_thread_memory_limit");
    if per_process_memory == Some(true) {
        errors.add(
            "enable_per_process_and_thread_memory_limit",
            "this option cannot be enabled",
        );
    }
    let max_file_size = check_number(
        &mut errors,
        "max_file_size",
        number(body, "max_file_size"),
        &[
            Bound::AtLeast(0.0),
            Bound::AtMost(bounds.max_max_file_size as f64),
        ],
        true,
    );
    let compiler_options = text(body, "compiler_options");
    let command_line_arguments = text(body, "command_line_arguments");
    for (field, value) in [
        ("compiler_options", &compiler_options),
        ("command_line_arguments", &command_line_arguments),
    ] {
        if value
            .as_ref()
            .is_some_and(|v| v.chars().count() > MAX_OPTIONS)
        {
            errors.add(
                field,
                format!("is too long (maximum is {MAX_OPTIONS} characters)"),
            );
        }
    }
    // Then the model's own checks.
    if let (Some(id), None) = (language_id, &language) {
        errors.add(
            "language_id",
            format!("language with id {id} doesn't exist"),
        );
    }
    if language_id.is_none() {
        errors.add("language_id", "language with id  doesn't exist");
    }
    if !blank(&compiler_options) {
        errors.add(
            "compiler_options",
            "setting compiler options is not allowed",
        );
    }
    let callback_url = text(body, "callback_url").filter(|u| !u.trim().is_empty());
    if let Some(url) = &callback_url {
        if let Err(message) = callbacks.check(url) {
            errors.add("callback_url", message);
        }
    }
    if !blank(&text(body, "additional_files")) {
        errors.add(
            "additional_files",
            "setting additional files is not allowed",
        );
    }
    let enable_network = boolean(body, "enable_network");
    if enable_network == Some(true) {
        errors.add("enable_network", "enabling network is not allowed");
    }
    // Our own bounds, beyond Judge0's: sizes the run model refuses.
    let source_code = source_code.unwrap_or_default();
    if source_code.len() > MAX_SOURCE_BYTES {
        errors.add(
            "source_code",
            format!("is too long (maximum is {MAX_SOURCE_BYTES} characters)"),
        );
    }
    if stdin
        .as_ref()
        .is_some_and(|s| s.len() as u64 > caps.stdin_bytes)
    {
        errors.add(
            "stdin",
            format!("is too long (maximum is {} characters)", caps.stdin_bytes),
        );
    }
    let Some(language) = language else {
        return Err(errors);
    };
    if !errors.is_empty() {
        return Err(errors);
    }

    let wall_time_limit = wall_time_limit.unwrap_or(bounds.wall_time_limit);
    let cpu_extra_time = cpu_extra_time.unwrap_or(0.0);
    // The CPU limit is the wall clock's (see docs/compat.md): one CPU cannot use more CPU
    // time than wall time.
    let wall_ms = match cpu_time_limit {
        Some(cpu) => wall_time_limit.min(cpu + cpu_extra_time),
        None => wall_time_limit,
    };
    let memory_limit = memory_limit.map_or(bounds.memory_limit, |kb| kb as u64);
    let request = LimitRequest {
        wall_ms: Some(((wall_ms * 1000.0).ceil() as u64).max(100)),
        memory_mib: Some(memory_limit.div_ceil(1024).max(32)),
        ..LimitRequest::default()
    };
    let limits = Limits::resolve(language.ours, &request, caps).map_err(|e| {
        let field = if e.field == "memory_mib" {
            "memory_limit"
        } else {
            "wall_time_limit"
        };
        Errors::of(field, e.to_string())
    })?;
    let args = command_line_arguments
        .as_deref()
        .map(split_arguments)
        .unwrap_or_default();
    let spec = RunSpec {
        client: None,
        language: language.ours,
        files: vec![SourceFile {
            name: language.ours.source_file.clone(),
            content: source_code.clone(),
        }],
        args,
        limits,
        judge: None,
    };
    onpyrunner_supervisor::run::check(&spec).map_err(|e| {
        let field = match e.field.as_str() {
            "args" => "command_line_arguments",
            "stdin" => "stdin",
            _ => "source_code",
        };
        Errors::of(field, e.message.clone())
    })?;
    let stdin_bytes = Bytes::from(stdin.clone().unwrap_or_default());
    let submission = Submission {
        token: uuid_v4(),
        language,
        source_code,
        stdin,
        expected_output,
        number_of_runs: number_of_runs.map_or(1, |n| n as u64),
        cpu_time_limit: cpu_time_limit.unwrap_or(wall_time_limit),
        cpu_extra_time,
        wall_time_limit,
        memory_limit,
        stack_limit: stack_limit.map_or(STACK_LIMIT, |kb| kb as u64),
        max_processes_and_or_threads: processes
            .map_or(bounds.max_processes_and_or_threads, |n| n as u64),
        max_file_size: max_file_size.map_or(bounds.max_file_size, |kb| kb as u64),
        enable_per_process_and_thread_time_limit: false,
        enable_per_process_and_thread_memory_limit: false,
        redirect_stderr_to_stdout: boolean(body, "redirect_stderr_to_stdout").unwrap_or(false),
        enable_network: false,
        compiler_options,
        command_line_arguments,
        callback_url,
        created_at_ms: now_ms,
        owner,
    };
    Ok(Accepted {
        submission,
        spec,
        stdin: stdin_bytes,
    })
}

/// The program's arguments as bash reads Judge0's `run` script (`run_cmd` then the
/// arguments): Judge0 first drops `$&;<>|` and backticks, then bash splits on whitespace,
/// quotes grouping.
pub fn split_arguments(line: &str) -> Vec<String> {
    let clean: String = line
        .trim()
        .chars()
        .filter(|c| !"$&;<>|`".contains(*c))
        .collect();
    let mut args = Vec::new();
    let mut current = String::new();
    let mut started = false;
    let mut quote: Option<char> = None;
    for c in clean.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => current.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                started = true;
            }
            (None, c) if c.is_whitespace() => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            (None, c) => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

/// A token as Judge0 makes one (`SecureRandom.uuid`): a random version-4 UUID.
pub fn uuid_v4() -> String {
    let hex = onpyrunner_supervisor::run::random_hex(16);
    let mut bytes: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
        .collect();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let h: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refusal(body: Value) -> Value {
        match accept(&body, false, &Caps::default(), &Callbacks::none(), None, 0) {
            Ok(_) => json!("accepted"),
            Err(e) => serde_json::to_value(&e).unwrap(),
        }
    }

    #[test]
    fn refusals_are_judge0s_in_its_words() {
        assert_eq!(
            refusal(json!({})),
            json!({"source_code": ["can't be blank"],
                   "language_id": ["can't be blank", "language with id  doesn't exist"]})
        );
        assert_eq!(
            refusal(json!({"source_code": "x", "language_id": 70})),
            json!({"language_id": ["language with id 70 doesn't exist"]})
        );
        assert_eq!(
            refusal(
                json!({"source_code": "x", "language_id": 71, "wall_time_limit": 99,
                           "memory_limit": 1000, "cpu_time_limit": "abc"})
            ),
            json!({"cpu_time_limit": ["is not a number"],
                   "wall_time_limit": ["must be less than or equal to 10.0"],
                   "memory_limit": ["must be greater than or equal to 2048"]})
        );
        assert_eq!(
            refusal(
                json!({"source_code": "x", "language_id": 71, "enable_network": true,
                           "additional_files": "UEsD", "compiler_options": "-O3",
                           "callback_url": "http://example.com/"})
            ),
            json!({"compiler_options": ["setting compiler options is not allowed"],
                   "callback_url": ["setting callback is not allowed"],
                   "additional_files": ["setting additional files is not allowed"],
                   "enable_network": ["enabling network is not allowed"]})
        );
        assert_eq!(
            refusal(
                json!({"source_code": "x", "language_id": 71, "enable_network": false,
                           "number_of_runs": 2})
            ),
            json!({"number_of_runs": ["must be less than or equal to 1"]})
        );
        assert_eq!(
            refusal(
                json!({"source_code": "x", "language_id": "71", "memory_limit": 128000.0,
                           "cpu_time_limit": 2, "enable_per_process_and_thread_time_limit": false})
            ),
            json!("accepted")
        );
    }

    #[test]
    fn limits_map_onto_ours() {
        let body = json!({"source_code": "x", "language_id": 71, "cpu_time_limit": 1,
                          "cpu_extra_time": 0.5, "memory_limit": 64000,
                          "command_line_arguments": "a 'b c' \"d\" ;e"});
        let a = accept(&body, false, &Caps::default(), &Callbacks::none(), None, 0).unwrap();
        assert_eq!(a.spec.limits.wall_ms, 1500);
        assert_eq!(a.spec.limits.memory_mib, 63);
        assert_eq!(a.spec.args, ["a", "b c", "d", "e"]);
        assert_eq!(a.submission.memory_limit, 64000);
        let body = json!({"source_code": "eA==", "language_id": 50, "stdin": "aGkK"});
        let a = accept(&body, true, &Caps::default(), &Callbacks::none(), None, 0).unwrap();
        assert_eq!(a.spec.files[0].content, b"x");
        assert_eq!(a.spec.files[0].name, "main.c");
        assert_eq!(&a.stdin[..], b"hi\n");
    }

    #[test]
    fn tokens_are_version_4_uuids() {
        let t = uuid_v4();
        assert_eq!(t.len(), 36);
        assert_eq!(&t[14..15], "4");
        assert!("89ab".contains(&t[19..20]));
        assert_ne!(t, uuid_v4());
    }
}

//! Piston v2's REST API (engineer-man/piston, API 3.1.1: `GET /api/v2/runtimes`,
//! `POST /api/v2/execute`) as a rendering of our runs, so that Piston's clients work unchanged.
//! A request is validated as Piston validates it, in its order and with its sentences, then
//! becomes a [`RunSpec`] held to the same caps as any run; the answer is the run's events seen
//! as Piston's two stages (the compile's end is [`Event::Compiled`]). docs/compat.md says what
//! differs and why.
use crate::body::Received;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::request::caps_of;
use crate::state::AppState;
use bytes::Bytes;
use onpyrunner_languages::Language;
use onpyrunner_protocol::piston::signal_name;
use onpyrunner_protocol::run::{OutputStream, Reason, Stage, Summary, Usage};
use onpyrunner_protocol::{Event, SourceFile};
use onpyrunner_supervisor::limits::{Caps, LimitRequest, Limits};
use onpyrunner_supervisor::run::RunSpec;
use serde::Serialize;
use serde_json::Value;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply;

/// How Piston's users name our languages: Piston's own names and aliases (its
/// `packages/*/metadata.json`) where it has the language, and what people type besides.
/// A language of the table that is not here is listed under its id, without aliases.
const NAMES: &[Name] = &[
    Name {
        id: "python",
        language: "python",
        aliases: &["py", "py3", "python3", "cpython"],
        runtime: None,
    },
    Name {
        id: "pypy",
        language: "pypy",
        aliases: &["pypy3"],
        runtime: None,
    },
    Name {
        id: "node",
        language: "javascript",
        aliases: &["js", "node", "node-js", "node-javascript"],
        runtime: Some("node"),
    },
    Name {
        id: "java",
        language: "java",
        aliases: &[],
        runtime: None,
    },
    Name {
        id: "c",
        language: "c",
        aliases: &["gcc"],
        runtime: Some("gcc"),
    },
    Name {
        id: "cpp",
        language: "c++",
        aliases: &["cpp", "g++"],
        runtime: Some("gcc"),
    },
    Name {
        id: "rust",
        language: "rust",
        aliases: &["rs"],
        runtime: None,
    },
    Name {
        id: "go",
        language: "go",
        aliases: &["golang"],
        runtime: None,
    },
];

/// One language's Piston name.
struct Name {
    /// Ours, in the language table.
    id: &'static str,
    language: &'static str,
    aliases: &'static [&'static str],
    /// The package that provides it, when that is not the language (Piston's gcc gives c and
    /// c++).
    runtime: Option<&'static str>,
}

/// A language of the table as Piston lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Runtime {
    pub language: String,
    /// Semver (`3.15.0`): Piston's clients parse it.
    pub version: String,
    pub aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    #[serde(skip)]
    semver: [u64; 3],
    #[serde(skip)]
    ours: &'static Language,
}

impl Runtime {
    fn of(ours: &'static Language) -> Self {
        let semver = semver_of(&ours.version);
        let name = NAMES.iter().find(|n| n.id == ours.id);
        Runtime {
            language: name.map_or(ours.id.clone(), |n| n.language.to_string()),
            version: format!("{}.{}.{}", semver[0], semver[1], semver[2]),
            aliases: name.map_or(Vec::new(), |n| {
                n.aliases.iter().map(|a| a.to_string()).collect()
            }),
            runtime: name.and_then(|n| n.runtime).map(str::to_string),
            semver,
            ours,
        }
    }

    fn named(&self, name: &str) -> bool {
        self.language == name || self.aliases.iter().any(|a| a == name)
    }
}

/// Every language of the table, as Piston lists them.
pub fn runtimes() -> Vec<Runtime> {
    onpyrunner_languages::languages()
        .iter()
        .map(Runtime::of)
        .collect()
}

/// The runtime `language` (a name or an alias) at the highest version `selector` allows.
pub fn find_runtime(language: &str, selector: &str) -> Option<Runtime> {
    runtimes()
        .into_iter()
        .filter(|r| r.named(language) && satisfies(r.semver, selector))
        .max_by_key(|r| r.semver)
}

/// The leading `major.minor.patch` of a table version (`3.11 (PyPy 8.0)` is 3.11.0), the
/// missing parts 0.
fn semver_of(version: &str) -> [u64; 3] {
    let mut out = [0; 3];
    let numeric = version
        .split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .next()
        .unwrap_or("");
    for (slot, part) in out.iter_mut().zip(numeric.split('.')) {
        *slot = part.parse().unwrap_or(0);
    }
    out
}

/// Whether `version` is in the semver range `selector`, read as npm's `semver` reads the
/// forms clients send: `*`, `x`, `3`, `3.15`, `3.15.0`, `3.x`, the operators `= > >= < <= ~ ^`,
/// ranges of comparators separated by spaces, `a - b` and `||`. Pre-release tags match
/// nothing (our versions have none); what cannot be read matches nothing, as in npm.
pub fn satisfies(version: [u64; 3], selector: &str) -> bool {
    selector.split("||").any(|set| {
        let mut tokens: Vec<String> = Vec::new();
        let mut words = set.split_whitespace();
        while let Some(word) = words.next() {
            // `>= 3` is `>=3`.
            if word.chars().all(|c| "<>=~^".contains(c)) && word != "-" {
                let next = words.next().unwrap_or("");
                tokens.push(format!("{word}{next}"));
            } else {
                tokens.push(word.to_string());
            }
        }
        if let [low, dash, high] = tokens.as_slice() {
            if dash == "-" {
                return holds(version, &format!(">={low}")) == Some(true)
                    && holds(version, &format!("<={high}")) == Some(true);
            }
        }
        tokens.iter().all(|t| holds(version, t) == Some(true))
    })
}

/// One comparator; `None` when it cannot be read.
fn holds(v: [u64; 3], comparator: &str) -> Option<bool> {
    let op_len = comparator
        .find(|c: char| !"<>=~^".contains(c))
        .unwrap_or(comparator.len());
    let (op, rest) = comparator.split_at(op_len);
    let rest = rest.strip_prefix(['v', 'V']).unwrap_or(rest);
    let rest = rest.split('+').next().unwrap_or(""); // build metadata is ignored
    let mut given = Vec::new();
    for part in rest.split('.') {
        if matches!(part, "x" | "X" | "*") {
            break;
        }
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) || given.len() == 3 {
            return None;
        }
        given.push(part.parse::<u64>().ok()?);
    }
    if rest.is_empty() {
        given.clear();
    }
    let n = given.len();
    let mut low = [0; 3];
    low[..n].copy_from_slice(&given);
    // The first version past the partial one: 3.15 -> 3.16.0.
    let past = |at: usize| {
        let mut p = [0; 3];
        p[..at].copy_from_slice(&given[..at]);
        p[at - 1] += 1;
        p
    };
    Some(match (op, n) {
        (_, 0) => !matches!(op, ">" | "<"),
        ("" | "=", 3) => v == low,
        ("" | "=", _) => low <= v && v < past(n),
        (">=", _) => v >= low,
        (">", 3) => v > low,
        (">", _) => v >= past(n),
        ("<", _) => v < low,
        ("<=", 3) => v <= low,
        ("<=", _) => v < past(n),
        ("~" | "~>", 1) => low <= v && v < past(1),
        ("~" | "~>", _) => low <= v && v < past(2),
        ("^", _) => {
            // Up to the first non-zero part given (or the last part given).
            let at = given.iter().position(|&p| p != 0).map_or(n, |i| i + 1);
            low <= v && v < past(at)
        }
        _ => return None,
    })
}

/// `GET /api/v2/runtimes`.
pub fn list(_: &AppState) -> Response {
    warp::reply::json(&runtimes()).into_response()
}

/// A request refused. What Piston refuses too (a field it checks, or one of ours that it would
/// take for its own: 422) is Piston's 400 `{message}`; what only our layers refuse (stdin past
/// its cap 413, queue or client full 429, 503) keeps its status and our `{error, field?,
/// limit?}`, with Piston's `message` beside it (`error::for_path`).
fn refuse(err: ApiError) -> Response {
    if !matches!(
        err.status,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
    ) {
        return err.into_response();
    }
    warp::reply::with_status(
        warp::reply::json(&serde_json::json!({"message": err.error})),
        StatusCode::BAD_REQUEST,
    )
    .into_response()
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, message)
}

/// A posted execute request (or a WebSocket's `init`), checked.
pub(crate) struct Execute {
    pub runtime: Runtime,
    pub spec: RunSpec,
    /// As Piston gives it to the program: with a newline at its end.
    pub stdin: Bytes,
}

/// JavaScript's falsy values, which Piston takes for "not given": missing, null, false, 0,
/// "".
fn falsy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => !b,
        Some(Value::Number(n)) => n.as_f64() == Some(0.0),
        Some(Value::String(s)) => s.is_empty(),
        Some(_) => false,
    }
}

/// Piston's checks first, in its order and words (`api/src/api/v2.js`), then ours.
pub(crate) fn parse(body: &Value, caps: &Caps) -> Result<Execute, ApiError> {
    let text = |field: &str| match body.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        _ => Err(bad(format!("{field} is required as a string"))),
    };
    let language = text("language")?;
    let version = text("version")?;
    let Some(Value::Array(files)) = body.get("files") else {
        return Err(bad("files is required as an array"));
    };
    for (i, file) in files.iter().enumerate() {
        if !file.get("content").is_some_and(Value::is_string) {
            return Err(bad(format!("files[{i}].content is required as a string")));
        }
    }
    let runtime = find_runtime(language, version)
        .ok_or_else(|| bad(format!("{language}-{version} runtime is unknown")))?;
    let encoding = |file: &Value| file.get("encoding").cloned().unwrap_or(Value::Null);
    if !files.iter().any(|f| {
        let e = encoding(f);
        falsy(Some(&e)) || e == "utf8"
    }) {
        return Err(bad("files must include at least one utf8 encoded file"));
    }
    let ours = runtime.ours;
    let (_, most) = Limits::request_range(ours, caps);
    let most_wall = most.wall_ms.unwrap_or(caps.wall_ms);
    let most_memory = most.memory_mib.unwrap_or(caps.memory_mib) * MIB;
    let compile_wall = Limits::defaults(ours, caps).compile_wall_ms;
    let mut given = std::collections::HashMap::new();
    for constraint in ["memory_limit", "timeout", "cpu_time"] {
        for stage in ["compile", "run"] {
            let name = format!("{stage}_{constraint}");
            let value = body.get(&name);
            if falsy(value) {
                continue;
            }
            let Some(value) = value.and_then(Value::as_f64) else {
                return Err(bad(format!("If specified, {name} must be a number")));
            };
            // Piston's own default is no memory limit (-1), under which it checks nothing
            // else, and its clients send -1 for "no limit" (piston-client does by default). A
            // run here always has one: a negative memory limit is the language's default.
            if constraint == "memory_limit" && value < 0.0 {
                continue;
            }
            let limit = match (constraint, stage) {
                ("memory_limit", _) => most_memory,
                (_, "compile") => compile_wall,
                _ => most_wall,
            };
            if value > limit as f64 {
                return Err(bad(format!(
                    "{name} cannot exceed the configured limit of {limit}"
                )));
            }
            if value < 0.0 {
                return Err(bad(format!("{name} must be non-negative")));
            }
            given.insert(name, value.ceil() as u64);
        }
    }

    let mut sources = Vec::with_capacity(files.len());
    let mut entry = None;
    for (i, file) in files.iter().enumerate() {
        let name = match file.get("name") {
            None | Some(Value::Null) => format!("file{i}.code"),
            Some(Value::String(s)) if s.is_empty() => format!("file{i}.code"),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad(format!("files[{i}].name must be a string"))),
        };
        let content = file["content"].as_str().expect("checked above");
        // As Piston: an encoding it does not know is utf8.
        let content = match encoding(file).as_str() {
            Some("base64") => decode_base64(content)
                .ok_or_else(|| bad(format!("files[{i}].content is not valid base64")))?,
            Some("hex") => data_encoding::HEXLOWER_PERMISSIVE
                .decode(content.as_bytes())
                .map_err(|_| bad(format!("files[{i}].content is not valid hex")))?,
            _ => {
                entry.get_or_insert(i);
                content.as_bytes().to_vec()
            }
        };
        sources.push(SourceFile { name, content });
    }
    // The first utf8 file is the program: it goes first, under the name the language's
    // commands run (`main.py`, `Main.java`).
    let entry = entry.ok_or_else(|| bad("files must include at least one utf8 encoded file"))?;
    let mut program = sources.remove(entry);
    program.name = ours.source_file.clone();
    sources.insert(0, program);

    let stdin = match body.get("stdin") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return Err(bad("If specified, stdin must be a string")),
    };
    // As Piston: the input ends with a newline.
    let mut stdin = stdin.into_bytes();
    if stdin.last() != Some(&b'\n') {
        stdin.push(b'\n');
    }
    crate::request::check_stdin(stdin.len(), caps)?;
    let args = match body.get("args") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(args)) => args
            .iter()
            .map(|a| a.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| bad("If specified, args must be an array of strings"))?,
        Some(_) => return Err(bad("If specified, args must be an array of strings")),
    };

    let request = LimitRequest {
        wall_ms: given.get("run_timeout").copied(),
        memory_mib: given.get("run_memory_limit").map(|b| b.div_ceil(MIB)),
        ..LimitRequest::default()
    };
    let mut limits = Limits::resolve(ours, &request, caps).map_err(|e| {
        let (field, least) = match e.field {
            "memory_mib" => (
                "run_memory_limit",
                e.min
                    .parse::<u64>()
                    .map_or(e.min.clone(), |m| (m * MIB).to_string()),
            ),
            _ => ("run_timeout", e.min.clone()),
        };
        bad(format!("{field} cannot be below {least}"))
    })?;
    if let Some(&ms) = given.get("compile_timeout") {
        limits.compile_wall_ms = ms;
    }
    let spec = RunSpec {
        client: None,
        language: ours,
        files: sources,
        args,
        limits,
        judge: None,
    };
    // The file names, the sizes and the arguments, before anything starts.
    onpyrunner_supervisor::run::check(&spec).map_err(|e| bad(e.to_string()))?;
    Ok(Execute {
        runtime,
        spec,
        stdin: Bytes::from(stdin),
    })
}

const MIB: u64 = 1024 * 1024;

/// Base64 as Node's `Buffer.from(s, "base64")` takes it: either alphabet, padding optional,
/// whitespace ignored; but a character outside the alphabet is an error here, not skipped.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let bare = compact.trim_end_matches('=');
    data_encoding::BASE64_NOPAD
        .decode(bare.as_bytes())
        .or_else(|_| data_encoding::BASE64URL_NOPAD.decode(bare.as_bytes()))
        .ok()
}

/// `POST /api/v2/execute`: the run, to its end, as Piston answers it.
pub async fn execute(s: AppState, body: Received, caller: Caller) -> Response {
    let Received { bytes, room } = body;
    let value: Value = match serde_json::from_slice(&bytes) {
        Ok(value) => value,
        Err(e) => return refuse(bad(format!("invalid request body: not JSON: {e}"))),
    };
    drop(bytes);
    // The body's room stays taken until the run ends: the spec holds its source and stdin.
    let _room = room;
    let Execute {
        runtime,
        mut spec,
        stdin,
    } = match parse(&value, &caps_of(s.engine.as_ref(), &caller)) {
        Ok(execute) => execute,
        Err(e) => return refuse(e),
    };
    drop(value);
    spec.client = caller.client();
    let compiles = !spec.language.compile.is_empty();
    let mut session = match s.engine.submit(spec) {
        Ok(session) => session,
        Err(e) => return refuse(e.into()),
    };
    if let Some(tx) = session.stdin() {
        tokio::spawn(async move {
            let _ = tx.send(stdin).await;
        });
    }
    session.close_stdin();
    // Dropping this future (the client left) drops the session: the run ends as client_gone.
    let mut streams = Streams::default();
    let mut compiled: Option<Streams> = None;
    let mut summary = None;
    while let Some(event) = session.recv().await {
        match event {
            Event::Output(chunk) => streams.push(chunk.stream, &chunk.data),
            Event::Compiled(_) => compiled = Some(std::mem::take(&mut streams)),
            Event::Summary(s) => summary = Some(s),
            _ => {}
        }
    }
    let Some(summary) = summary else {
        return refuse(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the run ended without a summary",
        ));
    };
    let answer = answer(runtime, compiles, &summary, compiled, streams);
    warp::reply::json(&answer).into_response()
}

/// One stage's output: each stream, and both in the order they came.
#[derive(Debug, Default)]
struct Streams {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    output: Vec<u8>,
    /// The stream written last: the one that went past the output cap, when one did.
    last: Option<OutputStream>,
}

impl Streams {
    fn push(&mut self, stream: OutputStream, data: &[u8]) {
        match stream {
            OutputStream::Stdout => self.stdout.extend_from_slice(data),
            OutputStream::Stderr => self.stderr.extend_from_slice(data),
        }
        self.output.extend_from_slice(data);
        self.last = Some(stream);
    }
}

/// A stage as Piston reports it.
#[derive(Debug, Clone, Serialize)]
pub struct StageResult {
    pub stdout: String,
    pub stderr: String,
    pub output: String,
    pub code: Option<i32>,
    pub signal: Option<String>,
    pub message: Option<String>,
    /// RE, SG, TO, OL, EL, XX, or null when the stage ended well.
    pub status: Option<&'static str>,
    /// Milliseconds.
    pub cpu_time: u64,
    pub wall_time: u64,
    /// Bytes.
    pub memory: u64,
}

/// Piston's answer.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub language: String,
    pub version: String,
    pub run: StageResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile: Option<StageResult>,
}

fn answer(
    runtime: Runtime,
    compiles: bool,
    summary: &Summary,
    compiled: Option<Streams>,
    streams: Streams,
) -> Answer {
    let ended = stage(&summary.usage, Some(summary), &streams);
    let (compile, run) = match (summary.usage.stage, compiled) {
        // The compile ended the run: Piston's `run` is then its compile.
        (Stage::Compile, _) => (Some(ended.clone()), ended),
        (Stage::Run, Some(out)) => {
            let usage = summary.compile.clone().unwrap_or_else(|| {
                let mut usage = Usage::new(Stage::Compile);
                usage.exit_code = Some(0);
                usage
            });
            (Some(stage(&usage, None, &out)), ended)
        }
        (Stage::Run, None) => (None, ended),
    };
    Answer {
        language: runtime.language,
        version: runtime.version,
        compile: compile.filter(|_| compiles),
        run,
    }
}

/// How the stage that ended the run ended, as Piston's WebSocket says it in `exit`: its exit
/// code, or the signal that ended it (`SIGKILL` for a time, output or memory limit, and for a
/// run stopped by a client's `signal`).
pub(crate) fn exit_status(summary: &Summary) -> (Option<i32>, Option<String>) {
    if summary.reason == Reason::Stopped {
        return (None, Some("SIGKILL".into()));
    }
    let ended = stage(&summary.usage, Some(summary), &Streams::default());
    (ended.code, ended.signal)
}

/// A stage's report; `ending` is the run's summary when this stage ended the run.
fn stage(usage: &Usage, ending: Option<&Summary>, out: &Streams) -> StageResult {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let reason = ending.map_or(Reason::Exited, |s| s.reason);
    let killed = |status, message: String| (status, Some("SIGKILL".into()), Some(message), None);
    let (status, signal, message, code) = match reason {
        Reason::Exited | Reason::CompileError => match (usage.signal, usage.exit_code) {
            (Some(n), _) => (
                Some("SG"),
                signal_name(n),
                Some(format!("Caught fatal signal {n}")),
                None,
            ),
            (None, Some(0)) | (None, None) => (None, None, None, usage.exit_code),
            (None, Some(code)) => (
                Some("RE"),
                None,
                Some(format!("Exited with error status {code}")),
                Some(code),
            ),
        },
        Reason::Timeout => killed(Some("TO"), "Time limit exceeded".into()),
        Reason::OutputLimit => match out.last {
            Some(OutputStream::Stderr) => killed(Some("EL"), "stderr length exceeded".into()),
            _ => killed(Some("OL"), "stdout length exceeded".into()),
        },
        Reason::MemoryLimit => killed(Some("SG"), "Memory limit exceeded".into()),
        Reason::Stopped | Reason::Shutdown | Reason::ClientGone | Reason::InternalError => {
            let why = ending
                .and_then(|s| s.error.clone())
                .unwrap_or_else(|| format!("the run was stopped ({reason:?})"));
            (Some("XX"), None, Some(why), None)
        }
    };
    StageResult {
        stdout: text(&out.stdout),
        stderr: text(&out.stderr),
        output: text(&out.output),
        code,
        signal,
        message,
        status,
        cpu_time: usage.cpu_ms,
        wall_time: usage.wall_ms,
        memory: usage.memory_kib * 1024,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_read_as_npm_semver_reads_them() {
        let v = [3, 15, 0];
        for yes in [
            "*",
            "x",
            "3",
            "3.x",
            "3.15",
            "3.15.0",
            "=3.15.0",
            "v3.15.0",
            "^3",
            "^3.1",
            "~3.15",
            ">=3.15",
            ">3.14",
            "> 3.14.9",
            "<4",
            "<=3.15",
            ">=3 <4",
            "2 || 3",
            "3.0 - 3.15",
            "3.15.0+build",
        ] {
            assert!(satisfies(v, yes), "{yes}");
        }
        for no in [
            "2",
            "3.14",
            "3.15.1",
            "^4",
            "~3.14",
            ">3.15",
            "<3.15",
            ">=3.16",
            "3.15.0-beta",
            "python",
            "3..1",
            "1 - 3.14",
        ] {
            assert!(!satisfies(v, no), "{no}");
        }
        assert!(!satisfies([0, 2, 5], "^0.1"));
        assert!(satisfies([0, 1, 5], "^0.1"));
    }

    #[test]
    fn table_versions_become_semver() {
        assert_eq!(semver_of("3.11 (PyPy 8.0)"), [3, 11, 0]);
        assert_eq!(semver_of("16 (GNU C11)"), [16, 0, 0]);
        assert_eq!(semver_of("1.97 (2024 edition)"), [1, 97, 0]);
        assert_eq!(semver_of("24"), [24, 0, 0]);
    }

    #[test]
    fn names_and_aliases_find_their_language() {
        for (name, id) in [
            ("py", "python"),
            ("python3", "python"),
            ("python", "python"),
            ("js", "node"),
            ("node", "node"),
            ("javascript", "node"),
            ("c++", "cpp"),
            ("cpp", "cpp"),
            ("g++", "cpp"),
            ("gcc", "c"),
            ("c", "c"),
            ("rs", "rust"),
            ("go", "go"),
            ("golang", "go"),
            ("java", "java"),
            ("pypy", "pypy"),
            ("pypy3", "pypy"),
        ] {
            assert_eq!(
                find_runtime(name, "*").map(|r| r.ours.id.as_str()),
                Some(id),
                "{name}"
            );
        }
        assert!(find_runtime("cobol", "*").is_none());
        assert!(find_runtime("python", "2").is_none());
        // Every language of the table has a Piston name.
        for l in onpyrunner_languages::languages() {
            assert!(NAMES.iter().any(|n| n.id == l.id), "{}", l.id);
        }
    }

    fn refusal(body: Value) -> String {
        match parse(&body, &Caps::default()) {
            Ok(_) => "accepted".into(),
            Err(e) => e.error,
        }
    }

    #[test]
    fn refusals_are_pistons_in_its_order() {
        use serde_json::json;
        let f = json!([{"content": "print(1)"}]);
        for (body, message) in [
            (json!({}), "language is required as a string"),
            (json!({"language": 3}), "language is required as a string"),
            (json!({"language": "py"}), "version is required as a string"),
            (
                json!({"language": "py", "version": "*"}),
                "files is required as an array",
            ),
            (
                json!({"language": "py", "version": "*", "files": [{"name": "a"}]}),
                "files[0].content is required as a string",
            ),
            (
                json!({"language": "cobol", "version": "1", "files": f}),
                "cobol-1 runtime is unknown",
            ),
            (
                json!({"language": "py", "version": "*", "files": [{"content": "AA==", "encoding": "base64"}]}),
                "files must include at least one utf8 encoded file",
            ),
            (
                json!({"language": "py", "version": "*", "files": f, "run_timeout": "1"}),
                "If specified, run_timeout must be a number",
            ),
            (
                json!({"language": "py", "version": "*", "files": f, "run_timeout": 1e9}),
                "run_timeout cannot exceed the configured limit of 10000",
            ),
            (
                json!({"language": "py", "version": "*", "files": f, "compile_timeout": -5}),
                "compile_timeout must be non-negative",
            ),
            (
                // Piston's "no limit", as piston-client sends it: the language's default.
                json!({"language": "py", "version": "*", "files": f, "compile_memory_limit": -1, "run_memory_limit": -5}),
                "accepted",
            ),
            (
                json!({"language": "py", "version": "*", "files": f, "run_timeout": 0, "stdin": null, "args": null}),
                "accepted",
            ),
        ] {
            assert_eq!(refusal(body.clone()), message, "{body}");
        }
    }

    #[test]
    fn the_first_utf8_file_is_the_program_under_the_languages_name() {
        use serde_json::json;
        let body = json!({"language": "python", "version": "3", "files": [
            {"name": "data.bin", "content": "aGk=", "encoding": "base64"},
            {"name": "", "content": "print(1)"},
            {"content": "6869", "encoding": "hex"},
            {"name": null, "content": "x = 1", "encoding": "latin1"},
        ], "stdin": "a"});
        let run = parse(&body, &Caps::default()).unwrap();
        let names: Vec<&str> = run.spec.files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["main.py", "data.bin", "file2.code", "file3.code"]);
        assert_eq!(run.spec.files[1].content, b"hi");
        assert_eq!(run.spec.files[2].content, b"hi");
        assert_eq!(&run.stdin[..], b"a\n");
    }
}

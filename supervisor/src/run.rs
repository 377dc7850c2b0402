//! One run on a fresh container: create, attach, start, send the framed source and stdin,
//! stream the output, and remove the container on every path.
use crate::docker::{AttachIo, Docker, DockerError};
pub use crate::error::RunError;
pub use crate::ids::{random_hex, unix_now};
use crate::judging::{JudgeSpec, Judging, TEST_GRACE_MS};
use crate::limits::Limits;
use crate::sandbox::{with_room, Resume};
pub use crate::sandbox::{Leftover, Maker, Placement, Sandbox};
use crate::session::{Signals, StopSignal};
use bytes::Bytes;
use futures_util::StreamExt;
use onpyrunner_languages::{Language, FILES_PLACEHOLDER};
use onpyrunner_protocol::launch::{self, RunRequest, SourceFile};
use onpyrunner_protocol::{
    AttachError, Event, OutputChunk, OutputStream, Piece, Reason, Record, RecordScanner, RunStatus,
    Stage, StreamKind, Summary, Usage,
};
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch};
use tokio_util::codec::FramedRead;

/// Largest total source size of one run.
pub const MAX_SOURCE_BYTES: usize = 1024 * 1024;
/// Most program arguments of one run.
pub const MAX_ARGS: usize = 64;
/// Longest argument, in bytes.
pub const MAX_ARG_BYTES: usize = 4096;
/// How long a warm language's container may take from start to its readiness marker (a JVM
/// warming up javac on one CPU takes 2-3 s; more on a loaded machine).
pub const WARM_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub language: &'static Language,
    /// The first file is the entry point.
    pub files: Vec<SourceFile>,
    pub args: Vec<String>,
    pub limits: Limits,
    /// Who asked for it, for the per-client caps and turn-taking. `None` is the machine's own
    /// user (the CLI, tests, the benchmark), who is not capped.
    pub client: Option<Client>,
    /// A judged run's tests: the program runs once per test instead of once on stdin, and
    /// `limits.wall_ms` is each test's wall clock.
    pub judge: Option<JudgeSpec>,
}

/// Who asks for a run (an address, or an API token's name) and what they may take beyond the
/// engine's defaults for every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// What tells clients apart: the same name is the same client.
    pub name: String,
    /// Runs waiting or running at once; `None` is the engine's `max_per_client`.
    pub max_in_flight: Option<usize>,
    /// Runs executing at once; `None` is the engine's `max_running_per_client`.
    pub max_running: Option<usize>,
}

impl Client {
    /// A client with the engine's default quotas.
    pub fn new(name: impl Into<String>) -> Self {
        Client {
            name: name.into(),
            max_in_flight: None,
            max_running: None,
        }
    }
}

impl RunSpec {
    /// A single-file run saved under the language's source file name.
    pub fn single(language: &'static Language, code: impl Into<Vec<u8>>, limits: Limits) -> Self {
        let file = SourceFile {
            name: language.source_file.clone(),
            content: code.into(),
        };
        RunSpec {
            language,
            files: vec![file],
            args: vec![],
            limits,
            client: None,
            judge: None,
        }
    }
}

/// A run refused before anything started: the field, what is wrong with it, and the limit it
/// passed, if that is what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct Invalid {
    pub field: String,
    pub message: String,
    pub limit: Option<String>,
}

impl Invalid {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Invalid {
            field: field.into(),
            message: message.into(),
            limit: None,
        }
    }

    fn limit(mut self, limit: impl ToString) -> Self {
        self.limit = Some(limit.to_string());
        self
    }
}

/// Check a run before anything is started; the error names the field and the limit.
pub fn check(spec: &RunSpec) -> Result<(), Invalid> {
    if spec.files.is_empty() {
        return Err(Invalid::new("files", "at least one file is required"));
    }
    if spec.files.len() > launch::MAX_FILES {
        return Err(Invalid::new(
            "files",
            format!(
                "{} files exceed the limit of {}",
                spec.files.len(),
                launch::MAX_FILES
            ),
        )
        .limit(launch::MAX_FILES));
    }
    let total: usize = spec.files.iter().map(|f| f.content.len()).sum();
    if total > MAX_SOURCE_BYTES {
        return Err(Invalid::new(
            "files",
            format!("{total} bytes of source exceed the limit of {MAX_SOURCE_BYTES} bytes"),
        )
        .limit(MAX_SOURCE_BYTES));
    }
    for (i, f) in spec.files.iter().enumerate() {
        let field = format!("files[{i}].name");
        launch::validate_file_name(&f.name).map_err(|e| Invalid::new(&field, e.to_string()))?;
        if spec.files[..i].iter().any(|g| g.name == f.name) {
            return Err(Invalid::new(field, format!("{:?} appears twice", f.name)));
        }
    }
    if spec.args.len() > MAX_ARGS {
        return Err(
            Invalid::new("args", format!("more than {MAX_ARGS} arguments")).limit(MAX_ARGS),
        );
    }
    if spec
        .args
        .iter()
        .any(|a| a.contains('\0') || a.len() > MAX_ARG_BYTES)
    {
        return Err(Invalid::new(
            "args",
            format!("an argument has a NUL byte or exceeds {MAX_ARG_BYTES} bytes"),
        )
        .limit(MAX_ARG_BYTES));
    }
    Ok(())
}

/// [`check`], as a [`RunError`].
pub fn validate(spec: &RunSpec) -> Result<(), RunError> {
    check(spec).map_err(|e| RunError::Invalid(e.to_string()))
}

/// Expand `{files}` in a table command to every file name of the run.
pub fn expand_command(template: &[String], files: &[SourceFile]) -> Vec<String> {
    let mut argv = Vec::with_capacity(template.len() + files.len());
    for arg in template {
        if arg == FILES_PLACEHOLDER {
            argv.extend(files.iter().map(|f| f.name.clone()));
        } else {
            argv.push(arg.clone());
        }
    }
    argv
}

/// The frame the launcher reads: the language's commands, never anything built from user text
/// but the file names (validated) and the program's arguments (passed as argv, not to a shell).
pub fn launch_request(spec: &RunSpec, nonce: String) -> RunRequest {
    let mut run = expand_command(&spec.language.run, &spec.files);
    run.extend(spec.args.iter().cloned());
    RunRequest {
        nonce,
        compile: expand_command(&spec.language.compile, &spec.files),
        run,
        files: spec.files.clone(),
        judge: spec.judge.as_ref().map(|judge| launch::Judge {
            wall_ms: u32::try_from(spec.limits.wall_ms).unwrap_or(u32::MAX),
            inputs: judge.tests.iter().map(|t| t.input.clone()).collect(),
        }),
    }
}

enum Ending {
    Status(Result<RunStatus, String>),
    StreamClosed,
    StreamError(AttachError),
    /// Killed from outside: output cap, wall clock, or a stop with its reason.
    Killed(Reason),
}

/// The caller's side of a run: stdin in (dropping the sender is EOF), output out, and a signal
/// that stops the run (SIGKILL: the program cannot ignore it) and says why.
pub struct Controls {
    pub stdin: mpsc::Receiver<Bytes>,
    /// Output, and a judged run's test verdicts, in order.
    pub output: mpsc::Sender<Event>,
    pub stop: StopSignal,
    /// Signals for the program while it runs (not a way to end the run: `stop` is).
    pub signals: Signals,
}

/// Run a program on a fresh container. Output is sent as it arrives; closing `stdin`'s sender
/// sends EOF to the program. The container is removed before this returns (or, if the future is
/// dropped, right after).
pub async fn run_fresh(
    maker: &Maker,
    placement: &Placement,
    spec: &RunSpec,
    stdin: mpsc::Receiver<Bytes>,
    output: mpsc::Sender<Event>,
) -> Result<Summary, RunError> {
    validate(spec)?;
    let docker = &maker.docker;
    let sandbox = Sandbox::create(maker, spec.language, &spec.limits, placement, false).await?;
    let controls = Controls {
        stdin,
        output,
        stop: StopSignal::default(),
        signals: Signals::default(),
    };
    run_in(docker, sandbox, spec, controls).await
}

/// Run a program in a sandbox (fresh, or claimed from the pool and unpaused), then remove it.
pub async fn run_in(
    docker: &Docker,
    sandbox: Sandbox,
    spec: &RunSpec,
    controls: Controls,
) -> Result<Summary, RunError> {
    let (result, leftover) = run_in_keep(docker, sandbox, spec, controls).await;
    let removed = leftover.remove().await;
    let outcome = result?;
    removed?;
    Ok(outcome)
}

/// `run_in`, but the container is handed back for the caller to remove after it has reported
/// the outcome.
pub async fn run_in_keep(
    docker: &Docker,
    sandbox: Sandbox,
    spec: &RunSpec,
    controls: Controls,
) -> (Result<Summary, RunError>, Leftover) {
    let mut sandbox = sandbox;
    let ready = async {
        validate(spec)?;
        if sandbox.awaiting_ready {
            // A fresh container of a warm language: its warm-up is not part of the run's wall
            // time.
            if !sandbox.started {
                sandbox.start(docker).await?;
            }
            sandbox.wait_ready(docker, WARM_READY_TIMEOUT).await?;
        }
        let nonce = random_hex(16);
        let frame = launch_request(spec, nonce.clone())
            .encode()
            .map_err(|e| RunError::Invalid(e.to_string()))?;
        Ok::<_, RunError>((nonce, frame))
    }
    .await;
    let Sandbox {
        id,
        io,
        started,
        awaiting_ready: _,
        resume,
        cpu_before_ns,
        sigkill_means_oom,
        guard,
    } = sandbox;
    let leftover = Leftover { guard };
    let (nonce, frame) = match ready {
        Ok(ready) => ready,
        Err(e) => return (Err(e), leftover),
    };
    let result = drive(
        docker,
        &id,
        io,
        resume,
        started,
        cpu_before_ns,
        sigkill_means_oom,
        spec,
        frame,
        nonce,
        controls,
    )
    .await;
    (result, leftover)
}

#[allow(clippy::too_many_arguments)]
async fn drive(
    docker: &Docker,
    id: &str,
    io: AttachIo,
    resume: Resume,
    started: bool,
    cpu_before_ns: u64,
    sigkill_means_oom: bool,
    spec: &RunSpec,
    frame: Vec<u8>,
    nonce: String,
    controls: Controls,
) -> Result<Summary, RunError> {
    let Controls {
        mut stdin,
        output,
        stop,
        signals,
    } = controls;
    let (read_half, mut write_half) = tokio::io::split(io);
    if !started {
        docker.start_container(id).await?;
    }
    let started = Instant::now();
    // The compile stage has its own clock and output budget; the compiled record starts the
    // run stage's.
    let first_stage = if spec.language.compile.is_empty() {
        Stage::Run
    } else {
        Stage::Compile
    };
    // A judged run's clock is each test's, plus the grace for the launcher's record: the
    // launcher kills a test at its own clock.
    let run_wall_ms = match spec.judge {
        Some(_) => spec.limits.wall_ms + TEST_GRACE_MS,
        None => spec.limits.wall_ms,
    };
    let first_wall = match first_stage {
        Stage::Compile => spec.limits.compile_wall_ms,
        Stage::Run => run_wall_ms,
    };
    let (clock, mut clock_changed) = watch::channel(Clock {
        stage: first_stage,
        started,
        deadline: started + Duration::from_millis(first_wall),
    });
    let run_wall = Duration::from_millis(run_wall_ms);
    let mut judging = spec
        .judge
        .as_ref()
        .map(|judge| Judging::new(judge, sigkill_means_oom));
    let mut compile_usage: Option<Usage> = None;

    let stdin_cap = spec.limits.stdin_bytes;
    let writer = tokio::spawn(async move {
        write_half.write_all(&frame).await?;
        let mut sent: u64 = 0;
        while let Some(chunk) = stdin.recv().await {
            let room = stdin_cap.saturating_sub(sent) as usize;
            let take = chunk.len().min(room);
            write_half.write_all(&chunk[..take]).await?;
            sent += take as u64;
            if take < chunk.len() {
                // Past the cap the program sees EOF, as if the input had ended there.
                break;
            }
        }
        write_half.shutdown().await
    });
    let writer_abort = writer.abort_handle();

    let mut frames = FramedRead::new(read_half, resume.decoder);
    *frames.read_buffer_mut() = with_room(resume.read_buf);
    // Output that `wait_ready` decoded past the readiness marker comes first.
    let mut frames = futures_util::stream::iter(resume.pending.into_iter().map(Ok)).chain(frames);
    // The trailer ends both streams; Docker copies them independently, so the run's output is
    // complete only once both trailers were seen (or the stream ended).
    // Each stream with its scanner and the stage its next bytes belong to.
    let mut scanners = [
        (
            OutputStream::Stdout,
            RecordScanner::new(&nonce),
            first_stage,
        ),
        (
            OutputStream::Stderr,
            RecordScanner::new(&nonce),
            first_stage,
        ),
    ];
    let mut status: Option<Result<RunStatus, String>> = None;
    let mut budgets = Budgets {
        compile: spec.limits.compile_output_bytes,
        run: spec.limits.output_bytes,
    };
    let mut truncated = false;
    let mut boundaries = Boundaries::default();

    let reading = async {
        // Count output against the stage's budget (cut at it) and give it to the judging as
        // it comes, in its own stream's order, whether it is sent now or held back.
        fn account(
            (budgets, truncated, judging): (&mut Budgets, &mut bool, &mut Option<Judging<'_>>),
            (stream, stage): (OutputStream, Stage),
            mut data: Bytes,
        ) -> Bytes {
            let budget = match stage {
                Stage::Compile => &mut budgets.compile,
                Stage::Run => &mut budgets.run,
            };
            if data.len() as u64 > *budget {
                data.truncate(*budget as usize);
                *truncated = true;
            }
            *budget -= data.len() as u64;
            if let (Some(judging), Stage::Run) = (judging.as_mut(), stage) {
                judging.output(stream, &data);
            }
            data
        }
        // Forward within the stage's output budget; an ending when the budget ran out or the
        // receiver left.
        async fn forward(
            output: &mpsc::Sender<Event>,
            state: (&mut Budgets, &mut bool, &mut Option<Judging<'_>>),
            (stream, stage): (OutputStream, Stage),
            data: Bytes,
        ) -> Result<(), Ending> {
            if data.is_empty() {
                return Ok(());
            }
            let data = account(
                (&mut *state.0, &mut *state.1, &mut *state.2),
                (stream, stage),
                data,
            );
            send(output, stream, data).await?;
            if *state.1 {
                return Err(Ending::Killed(Reason::OutputLimit));
            }
            Ok(())
        }
        // Send output already accounted for.
        async fn send(
            output: &mpsc::Sender<Event>,
            stream: OutputStream,
            data: Bytes,
        ) -> Result<(), Ending> {
            if !data.is_empty()
                && output
                    .send(Event::Output(OutputChunk { stream, data }))
                    .await
                    .is_err()
            {
                return Err(Ending::Killed(Reason::ClientGone));
            }
            Ok(())
        }
        // Give clients what is due: boundaries' events and the output held back after them
        // (accounted for when it came); then the output cap's ending if it was reached.
        async fn release(
            output: &mpsc::Sender<Event>,
            truncated: bool,
            due: Vec<Due>,
        ) -> Result<(), Ending> {
            for item in due {
                match item {
                    Due::Event(event) => {
                        if output.send(event).await.is_err() {
                            return Err(Ending::Killed(Reason::ClientGone));
                        }
                    }
                    Due::Output(stream, data) => send(output, stream, data).await?,
                }
            }
            if truncated {
                return Err(Ending::Killed(Reason::OutputLimit));
            }
            Ok(())
        }
        loop {
            let chunk = match frames.next().await {
                Some(Ok(chunk)) => chunk,
                end => {
                    release(&output, truncated, boundaries.due(true)).await?;
                    for (stream, scanner, at) in scanners.iter_mut() {
                        let rest = scanner.finish();
                        let state = (&mut budgets, &mut truncated, &mut judging);
                        forward(&output, state, (*stream, *at), rest).await?;
                    }
                    return Err::<std::convert::Infallible, _>(match (end, status.take()) {
                        (Some(Err(e)), _) => Ending::StreamError(e),
                        (_, Some(status)) => Ending::Status(status),
                        _ => Ending::StreamClosed,
                    });
                }
            };
            let index = match chunk.stream {
                StreamKind::Stdout => 0,
                StreamKind::Stderr => 1,
                StreamKind::System => {
                    let message = String::from_utf8_lossy(&chunk.data).into_owned();
                    return Err(Ending::StreamError(AttachError::Io(message)));
                }
                StreamKind::Stdin => continue,
            };
            let (stream, scanner, at) = &mut scanners[index];
            for piece in scanner.push(&chunk.data) {
                match piece {
                    Piece::Output(data) => {
                        let state = (&mut budgets, &mut truncated, &mut judging);
                        if boundaries.holding(*stream) {
                            // Judged now, in its stream's order; sent once it is due.
                            let data = account(state, (*stream, *at), data);
                            if boundaries.hold(*stream, data) || truncated {
                                release(&output, truncated, boundaries.due(true)).await?
                            }
                        } else {
                            forward(&output, state, (*stream, *at), data).await?
                        }
                    }
                    Piece::Record(Ok(Record::Test(ended))) => {
                        // The stdout record ends the test. Stdout held back since an earlier
                        // boundary (stderr lagging by more than a test) was judged as it came,
                        // so it stays held until stderr catches up.
                        let mut event = None;
                        if let (OutputStream::Stdout, Some(judging)) = (*stream, judging.as_mut()) {
                            event = Some(Event::Test(judging.ended(ended)));
                            // The next test has its own clock and output budget.
                            budgets.run = spec.limits.output_bytes;
                            let now = Instant::now();
                            clock.send_modify(|clock| clock.deadline = now + run_wall);
                        }
                        boundaries.pass(*stream, event);
                        release(&output, truncated, boundaries.due(false)).await?;
                    }
                    Piece::Record(Ok(Record::Compiled(usage))) => {
                        let first = *at == Stage::Compile;
                        *at = Stage::Run;
                        if clock.borrow().stage == Stage::Compile {
                            // The first stream to say so starts the run stage's clock.
                            let now = Instant::now();
                            clock.send_replace(Clock {
                                stage: Stage::Run,
                                started: now,
                                deadline: now + run_wall,
                            });
                            compile_usage = Some(usage.clone());
                        }
                        if first {
                            boundaries.pass(*stream, Some(Event::Compiled(usage)));
                            release(&output, truncated, boundaries.due(false)).await?;
                        }
                    }
                    Piece::Record(Ok(Record::Status(found))) => {
                        status.get_or_insert(Ok(found));
                    }
                    Piece::Record(Err(bad)) => {
                        status.get_or_insert(Err(bad));
                    }
                }
            }
            if scanners.iter().all(|(_, s, _)| s.done()) {
                return Err(Ending::Status(
                    status.take().expect("a done scanner found a status"),
                ));
            }
        }
    };
    let ending = {
        tokio::pin!(reading);
        loop {
            let deadline = clock_changed.borrow_and_update().deadline;
            tokio::select! {
                result = &mut reading => match result {
                    Err(ending) => break ending,
                    Ok(never) => match never {},
                },
                () = tokio::time::sleep_until(deadline.into()) => {
                    break Ending::Killed(Reason::Timeout);
                }
                // The compiled record moved the deadline: sleep until the new one.
                _ = clock_changed.changed() => {}
                reason = stop.stopped() => break Ending::Killed(reason),
                signal = signals.next() => {
                    // Delivered apart, so that a slow daemon never holds up the run's clock.
                    let (docker, id) = (docker.clone(), id.to_string());
                    tokio::spawn(async move {
                        let signal_text = signal.to_string();
                        let cmd = crate::container::signal_command(&signal_text);
                        if let Err(e) = docker.exec_detached(&id, &cmd).await {
                            tracing::debug!(container_id = %id, signal, "signal not delivered: {e}");
                        }
                    });
                }
            }
        }
    };
    writer_abort.abort();
    let Clock {
        stage,
        started: stage_started,
        ..
    } = *clock.borrow();
    let mut usage = Usage::new(stage);
    // The wall time of the stage that ended the run.
    usage.wall_ms = stage_started.elapsed().as_millis() as u64;
    let mut summary = match ending {
        Ending::Status(Ok(status)) => {
            // A SIGKILL we did not send is most likely the kernel's OOM killer: ask Docker.
            let oom = status.usage.signal == Some(SIGKILL) && exited_state(docker, id).await?.1;
            reported(status, oom)
        }
        Ending::Status(Err(bad)) => Summary {
            usage,
            ..Summary::internal(
                stage,
                format!("internal error: unreadable launcher status: {bad}"),
            )
        },
        Ending::StreamClosed | Ending::StreamError(_) => {
            let (code, oom) = exited_state(docker, id).await?;
            // Under gVisor the memory limit's kill hits the sandbox, and Docker often does not
            // say OOM: a SIGKILL we did not send is the memory limit there.
            let oom = oom || (sigkill_means_oom && code == 128 + i64::from(SIGKILL));
            let stream_error = match ending {
                Ending::StreamError(e) => Some(e),
                _ => None,
            };
            let summary = ended_without_status(code, oom, stream_error, usage);
            if summary.reason == Reason::Exited && !docker.stays_up().await {
                // Not the program's doing: the daemon stopping ended the container.
                Summary {
                    usage: summary.usage,
                    ..Summary::internal(
                        stage,
                        format!(
                            "internal error: the sandbox ended without a status (exit code {code})"
                        ),
                    )
                }
            } else {
                summary
            }
        }
        Ending::Killed(reason) => {
            // The launcher could not report: the container's cgroup says what the program
            // used, read before the container is killed.
            if let Ok(Ok(stats)) =
                tokio::time::timeout(STATS_TIMEOUT, docker.container_stats(id)).await
            {
                let ns = stats
                    .cpu_stats
                    .cpu_usage
                    .total_usage
                    .saturating_sub(cpu_before_ns);
                // The cgroup counts the compiler's CPU too.
                let compiled_ms = compile_usage.as_ref().map_or(0, |u| u.cpu_ms);
                usage.cpu_ms = (ns / 1_000_000).saturating_sub(compiled_ms);
                let memory = &stats.memory_stats;
                usage.memory_kib = memory.max_usage.or(memory.usage).unwrap_or(0) / 1024;
            }
            Summary::new(reason, usage)
        }
    };
    summary.output_truncated = truncated;
    summary.compile = compile_usage;
    summary.judge = judging.map(|judging| judging.finish(summary.reason, &summary.usage));
    Ok(summary)
}

/// The stage going now, when it began, and when its wall clock runs out.
#[derive(Clone, Copy)]
struct Clock {
    stage: Stage,
    started: Instant,
    deadline: Instant,
}

/// Where stdout and stderr stand against the run's boundaries (the compile's end, each test's
/// end), each marked by a record on both streams. Docker copies the two streams apart, so one
/// may pass a boundary while the other still carries output from before it. A boundary's event
/// (`Compiled`, `Test`) is said once both streams passed it, and until then the output of the
/// stream ahead is held back: clients get a stage's or a test's output before its event, and
/// nothing of the next one before it. More than [`Boundaries::MAX_HELD`] bytes held, or the
/// streams' end, make everything pending said at once.
#[derive(Default)]
struct Boundaries {
    /// Boundaries passed by stdout and by stderr.
    passed: [usize; 2],
    /// Boundaries said to clients (both streams passed them, or they were forced).
    said: usize,
    /// The events of boundaries passed but not said, by boundary.
    events: BTreeMap<usize, Event>,
    /// Output of the stream ahead, with the boundaries it had passed when it came.
    held: VecDeque<(usize, OutputStream, Bytes)>,
    held_bytes: usize,
}

/// What is due to clients, in order.
#[derive(Debug, PartialEq)]
enum Due {
    Event(Event),
    Output(OutputStream, Bytes),
}

impl Boundaries {
    const MAX_HELD: usize = 64 * 1024;

    fn slot(stream: OutputStream) -> usize {
        match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        }
    }

    /// `stream` passed its next boundary; `event` is the boundary's event if this record
    /// makes one (the first stream's is kept).
    fn pass(&mut self, stream: OutputStream, event: Option<Event>) {
        let at = &mut self.passed[Self::slot(stream)];
        if let Some(event) = event {
            self.events.entry(*at).or_insert(event);
        }
        *at += 1;
    }

    /// Whether `stream`'s output must wait: it passed a boundary not said yet.
    fn holding(&self, stream: OutputStream) -> bool {
        self.passed[Self::slot(stream)] > self.said
    }

    /// Hold output of a stream that is [`Self::holding`]; true when so much is held that
    /// everything pending should be said now.
    fn hold(&mut self, stream: OutputStream, data: Bytes) -> bool {
        self.held_bytes += data.len();
        self.held
            .push_back((self.passed[Self::slot(stream)], stream, data));
        self.held_bytes > Self::MAX_HELD
    }

    /// The events of the boundaries both streams passed (`all`: every boundary either passed),
    /// each followed by the output held that came after it.
    fn due(&mut self, all: bool) -> Vec<Due> {
        let [out, err] = self.passed;
        let upto = if all { out.max(err) } else { out.min(err) };
        let mut due = Vec::new();
        while self.said < upto {
            if let Some(event) = self.events.remove(&self.said) {
                due.push(Due::Event(event));
            }
            self.said += 1;
            while self.held.front().is_some_and(|(at, _, _)| *at <= self.said) {
                let (_, stream, data) = self.held.pop_front().expect("a front");
                self.held_bytes -= data.len();
                due.push(Due::Output(stream, data));
            }
        }
        due
    }
}

/// What each stage may still write.
struct Budgets {
    compile: u64,
    run: u64,
}

/// The summary of a program that ended by itself, as the launcher reported it (`oom`: the
/// kernel's OOM killer sent the SIGKILL it died of).
fn reported(status: RunStatus, oom: bool) -> Summary {
    let RunStatus { usage, error } = status;
    let reason = if oom {
        Reason::MemoryLimit
    } else if error.is_some() {
        Reason::InternalError
    } else if usage.stage == Stage::Compile {
        Reason::CompileError
    } else {
        Reason::Exited
    };
    let mut summary = Summary::new(reason, usage);
    summary.oom_killed = oom;
    summary.error = error.map(|e| format!("internal error: {e}"));
    summary
}

/// The summary of a run whose container ended (exit `code`, `oom`: the kernel's OOM killer
/// struck) without the launcher's status.
///
/// A container that died of a signal nobody outside sent (the wall clock, the output cap and
/// Stop end a run as `Ending::Killed`, not here) was ended by its own program: the launcher and
/// docker-init run as the program's user, so the program may kill the launcher, or send
/// docker-init a SIGTERM that it passes on. That is the program's doing, like any signal it
/// dies of, not an internal error. Anything else without a status is.
fn ended_without_status(
    code: i64,
    oom: bool,
    stream_error: Option<AttachError>,
    mut usage: Usage,
) -> Summary {
    let signal = (code > 128 && code < 160).then(|| code as i32 - 128);
    if oom {
        usage.exit_code = Some(code as i32);
        usage.signal = signal;
        let mut summary = Summary::new(Reason::MemoryLimit, usage);
        summary.oom_killed = true;
        return summary;
    }
    match (stream_error, signal) {
        (None, Some(signal)) => {
            usage.signal = Some(signal);
            Summary::new(Reason::Exited, usage)
        }
        (stream_error, _) => {
            usage.exit_code = Some(code as i32);
            usage.signal = signal;
            let error = match stream_error {
                Some(e) => format!("attach stream failed: {e}"),
                None => format!("the sandbox ended without a status (exit code {code})"),
            };
            let mut summary = Summary::internal(usage.stage, format!("internal error: {error}"));
            summary.usage = usage;
            summary
        }
    }
}

/// How long a killed run's cgroup counters are waited for before the summary goes without them.
const STATS_TIMEOUT: Duration = Duration::from_millis(500);

/// Linux's SIGKILL.
const SIGKILL: i32 = 9;

/// Wait for the container to stop, then read its exit code and whether the OOM killer struck.
async fn exited_state(docker: &Docker, id: &str) -> Result<(i64, bool), DockerError> {
    let code = tokio::time::timeout(Duration::from_secs(5), docker.wait_container(id)).await;
    let state = docker.inspect_container(id).await?.state;
    let code = match code {
        Ok(Ok(code)) => code,
        _ => state.exit_code,
    };
    Ok((code, state.oom_killed))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Caps, Limits};
    use onpyrunner_protocol::RunState;

    fn spec(lang: &str) -> RunSpec {
        let lang = onpyrunner_languages::find(lang).unwrap();
        RunSpec::single(lang, "x", Limits::defaults(lang, &Caps::default()))
    }

    #[test]
    fn a_boundarys_event_is_said_once_both_streams_passed_it_with_the_output_held_after() {
        use OutputStream::{Stderr, Stdout};
        let bytes = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let compiled = Event::Compiled(Usage::new(Stage::Compile));
        // Any event stands in for a test's here.
        let test = |i: usize| Event::Queued { position: i };
        let mut b = Boundaries::default();
        assert!(!b.holding(Stdout) && !b.holding(Stderr) && b.due(false).is_empty());
        // stderr passes the compile's end first; its next output waits for stdout's.
        b.pass(Stderr, Some(compiled.clone()));
        assert!(b.holding(Stderr) && !b.holding(Stdout));
        assert!(b.due(false).is_empty());
        assert!(!b.hold(Stderr, bytes("test 0 err")));
        b.pass(Stdout, Some(Event::Compiled(Usage::new(Stage::Run))));
        assert_eq!(
            b.due(false),
            [
                Due::Event(compiled),
                Due::Output(Stderr, bytes("test 0 err"))
            ],
            "the first stream's event, then what was held"
        );
        // stdout two tests ahead: each test's event comes as stderr catches up, with stdout's
        // output of the test after it.
        b.pass(Stdout, Some(test(0)));
        b.hold(Stdout, bytes("test 1 out"));
        b.pass(Stdout, Some(test(1)));
        b.hold(Stdout, bytes("test 2 out"));
        assert!(b.due(false).is_empty());
        b.pass(Stderr, None);
        assert_eq!(
            b.due(false),
            [
                Due::Event(test(0)),
                Due::Output(Stdout, bytes("test 1 out"))
            ]
        );
        // The streams' end: everything pending, in order.
        assert_eq!(
            b.due(true),
            [
                Due::Event(test(1)),
                Due::Output(Stdout, bytes("test 2 out"))
            ]
        );
        assert!(b.due(true).is_empty() && b.held.is_empty() && b.held_bytes == 0);
        // Too much held: said at once.
        let mut b = Boundaries::default();
        b.pass(Stdout, None);
        assert!(b.hold(Stdout, Bytes::from(vec![b'x'; Boundaries::MAX_HELD + 1])));
    }

    #[test]
    fn files_placeholder_expands_to_every_file() {
        let mut s = spec("java");
        s.files.push(SourceFile {
            name: "Util.java".into(),
            content: vec![],
        });
        let req = launch_request(&s, "n".into());
        assert!(req
            .compile
            .ends_with(&["Main.java".to_string(), "Util.java".to_string()]));
        assert_eq!(req.run.last().unwrap(), "Main");
    }

    #[test]
    fn args_are_appended_to_the_run_command() {
        let mut s = spec("python");
        s.args = vec!["a b".into(), "$(x)".into()];
        let req = launch_request(&s, "n".into());
        assert_eq!(&req.run[req.run.len() - 2..], ["a b", "$(x)"]);
        assert!(req.compile.is_empty());
    }

    #[test]
    fn invalid_runs_name_the_field() {
        let mut s = spec("python");
        s.files[0].name = "../etc/passwd".into();
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("files[0].name"));
        let mut s = spec("python");
        s.files[0].content = vec![b'x'; MAX_SOURCE_BYTES + 1];
        assert!(validate(&s)
            .unwrap_err()
            .to_string()
            .contains("exceed the limit"));
        let mut s = spec("python");
        s.files.clear();
        assert!(validate(&s).unwrap_err().to_string().contains("files"));
        // Refused here, not by the launch framing once a container was claimed.
        let mut s = spec("python");
        s.files = (0..=launch::MAX_FILES)
            .map(|i| SourceFile {
                name: format!("f{i}.py"),
                content: Vec::new(),
            })
            .collect();
        let err = validate(&s).unwrap_err().to_string();
        assert!(
            err.contains("files: 65 files exceed the limit of 64"),
            "{err}"
        );
        let mut s = spec("python");
        s.args = vec!["x".into(); MAX_ARGS + 1];
        assert!(validate(&s).unwrap_err().to_string().contains("args"));
    }

    #[test]
    fn launcher_reports_map_to_reasons() {
        let status = |stage, exit_code, error: Option<&str>| RunStatus {
            usage: Usage {
                exit_code,
                wall_ms: 5,
                cpu_ms: 4,
                memory_kib: 1000,
                ..Usage::new(stage)
            },
            error: error.map(str::to_string),
        };
        let ok = reported(status(Stage::Run, Some(0), None), false);
        assert_eq!((ok.reason, ok.state), (Reason::Exited, RunState::Finished));
        assert_eq!(ok.usage.memory_kib, 1000);
        let failed = reported(status(Stage::Run, Some(3), None), false);
        assert_eq!(
            failed.reason,
            Reason::Exited,
            "a non-zero exit is still the program's"
        );
        let compile = reported(status(Stage::Compile, Some(1), None), false);
        assert_eq!(compile.reason, Reason::CompileError);
        let mut killed = status(Stage::Run, None, None);
        killed.usage.signal = Some(SIGKILL);
        let oom = reported(killed, true);
        assert_eq!(oom.reason, Reason::MemoryLimit);
        assert!(oom.oom_killed);
        let broken = reported(status(Stage::Run, None, Some("bad frame")), false);
        assert_eq!(broken.reason, Reason::InternalError);
        assert_eq!(broken.error.as_deref(), Some("internal error: bad frame"));
    }

    #[test]
    fn a_container_ended_without_a_status_is_the_programs_doing_only_when_a_signal_ended_it() {
        let usage = || Usage {
            wall_ms: 7,
            ..Usage::new(Stage::Run)
        };
        // The program killed its launcher (137) or had docker-init pass on a SIGTERM (143).
        for (code, signal) in [(137, 9), (143, 15)] {
            let summary = ended_without_status(code, false, None, usage());
            assert_eq!(
                (summary.state, summary.reason),
                (RunState::Finished, Reason::Exited),
                "{code}"
            );
            assert_eq!(
                (summary.usage.exit_code, summary.usage.signal),
                (None, Some(signal))
            );
            assert_eq!(summary.usage.wall_ms, 7);
            assert!(summary.error.is_none());
        }
        let oom = ended_without_status(137, true, None, usage());
        assert_eq!(oom.reason, Reason::MemoryLimit);
        assert!(oom.oom_killed);
        // A launcher that failed before it knew the nonce, or exited without writing it.
        for code in [125, 0, 1] {
            let broken = ended_without_status(code, false, None, usage());
            assert_eq!(broken.reason, Reason::InternalError, "{code}");
            assert_eq!(broken.usage.exit_code, Some(code as i32));
            let error = broken.error.unwrap();
            assert!(error.contains(&format!("exit code {code}")), "{error}");
        }
        let lost = ended_without_status(137, false, Some(AttachError::Io("reset".into())), usage());
        assert_eq!(lost.reason, Reason::InternalError);
        assert!(lost.error.unwrap().contains("attach stream failed: "));
    }

    #[test]
    fn nonces_are_random_hex() {
        let (a, b) = (random_hex(16), random_hex(16));
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}

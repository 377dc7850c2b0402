//! A stand-in for the engine, for tests of the web layer that need no real program: routing,
//! validation, errors, assets, the OpenAPI document, and the WebSocket protocol's framing and
//! resume. It validates a run as the engine does, then "runs" it without Docker: the program's
//! stdout is its source followed by whatever arrives on stdin, until EOF; then it finishes with
//! exit code 0. A Stop, or nobody attached for the detach grace period, ends it as the engine
//! would. Tests that need real programs use the real engine and daemon.
use onpyrunner_protocol::{
    Event, OutputChunk, OutputStream, Reason, RunState, Stage, Summary, Usage,
};
use onpyrunner_supervisor::engine::{ResumeError, SubmitError};
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::run::{self, RunSpec};
use onpyrunner_supervisor::runner::{Runner, Status};
use onpyrunner_supervisor::session::{self, unix_ms, Detach, RunWriter, Session};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

/// See the module docs.
#[derive(Default)]
pub struct StandIn {
    caps: Caps,
    runs: Mutex<HashMap<String, Arc<RunWriter>>>,
    /// Every run accepted, in order.
    pub accepted: Mutex<Vec<RunSpec>>,
}

impl StandIn {
    pub fn new() -> Self {
        StandIn::default()
    }
}

impl Runner for StandIn {
    fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError> {
        run::check(&spec).map_err(SubmitError::Invalid)?;
        let id = run::random_hex(16);
        let (mut writer, session) = session::open(id.clone(), detach);
        let source = spec.files[0].content.clone();
        self.accepted.lock().unwrap().push(spec);
        let stdin = std::mem::replace(&mut writer.stdin, tokio::sync::mpsc::channel(1).1);
        let writer = Arc::new(writer);
        self.runs.lock().unwrap().insert(id, writer.clone());
        tokio::spawn(play(writer, stdin, source));
        Ok(session)
    }

    fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError> {
        let runs = self.runs.lock().unwrap();
        let writer = runs.get(id).ok_or(ResumeError::NoSuchRun)?;
        let end = writer.log().end();
        writer
            .attach(seq)
            .ok_or(ResumeError::PastTheEnd { seq, end })
    }

    fn caps(&self) -> &Caps {
        &self.caps
    }

    fn available(&self, _language: &str) -> bool {
        true
    }

    fn status(&self) -> Status {
        Status {
            docker_up: true,
            accepted: self.accepted.lock().unwrap().len() as u64,
            ..Status::default()
        }
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async {})
    }
}

async fn play(
    writer: Arc<RunWriter>,
    mut stdin: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    source: Vec<u8>,
) {
    let state = |state| Event::State {
        state,
        at_unix_ms: unix_ms(),
    };
    let out = |data: bytes::Bytes| {
        Event::Output(OutputChunk {
            stream: OutputStream::Stdout,
            data,
        })
    };
    let _ = writer.push(state(RunState::Ready));
    let _ = writer.push(state(RunState::Running));
    let _ = writer.push(out(source.into()));
    let reason = loop {
        tokio::select! {
            data = stdin.recv() => match data {
                Some(data) => { let _ = writer.push(out(data)); }
                None => break Reason::Exited,
            },
            why = writer.stop_signal().stopped() => break why,
            _ = writer.abandoned() => break Reason::ClientGone,
        }
    };
    let mut usage = Usage::new(Stage::Run);
    if reason == Reason::Exited {
        usage.exit_code = Some(0);
    }
    let summary = Summary::new(reason, usage);
    let _ = writer.push(state(summary.state));
    let _ = writer.push(Event::Summary(summary));
}

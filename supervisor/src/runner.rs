//! What a front end needs of the place runs go: the [`Runner`] trait. The engine is one; a test
//! stands in with another (so routing, validation and errors are tested without Docker), and an
//! API node that only queues runs for other machines will be a third.
use crate::limits::Caps;
use crate::metrics::Histogram;
use crate::run;
use crate::run::RunSpec;
use crate::scheduler::Busy;
use crate::session::{Detach, Session};
use onpyrunner_protocol::RunState;
use std::future::Future;
use std::pin::Pin;

/// Why a run was not accepted. Nothing was started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    /// The request is invalid: the field, and the limit it passed.
    #[error("{0}")]
    Invalid(run::Invalid),
    #[error(transparent)]
    Busy(#[from] Busy),
    /// This client has as many runs waiting or running as it may.
    #[error(
        "you have {max} runs waiting or running, as many as one client may; wait for one to end"
    )]
    ClientBusy { max: usize },
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("the Docker daemon is not answering; try again shortly")]
    DaemonDown,
    /// The cluster's queue (Redis) did not answer in time: nothing was queued.
    #[error("the run queue is not answering ({0}); try again shortly")]
    QueueDown(String),
    #[error(
        "language {language:?} is not available on this server (its image {image} is missing)"
    )]
    LanguageUnavailable { language: String, image: String },
}

/// Why a run could not be resumed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResumeError {
    #[error("no such run (unknown, killed after its grace period, or ended too long ago)")]
    NoSuchRun,
    #[error("seq {seq} is past the end of the run's log ({end})")]
    PastTheEnd { seq: u64, end: u64 },
}

/// Where runs are submitted, resumed and counted.
pub trait Runner: Send + Sync + 'static {
    /// Accept a run, or refuse it with nothing started. Its events begin with `State(READY)`.
    fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError>;

    /// Attach to a run again, from the position `seq` of its log.
    fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError>;

    /// The caps no run's limits may pass.
    fn caps(&self) -> &Caps;

    /// Whether runs of this language can be accepted (its image is there).
    fn available(&self, language: &str) -> bool;

    /// Health and counters, read at one moment.
    fn status(&self) -> Status;

    /// Stop admitting and end every run (reason `shutdown`).
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// [`submit_with`](Self::submit_with): the run ends when its caller leaves.
    fn submit(&self, spec: RunSpec) -> Result<Session, SubmitError> {
        self.submit_with(spec, Detach::Kill)
    }
}

/// One pool's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolStatus {
    pub language: String,
    /// Containers ready for a claim.
    pub ready: usize,
    /// Ready plus being made.
    pub size: usize,
    /// What the pool should hold now, and the range it moves in.
    pub target: usize,
    pub floor: usize,
    pub ceiling: usize,
    /// Ready containers removed because the target went down.
    pub shrunk: u64,
    pub hits: u64,
    pub misses: u64,
    pub created: u64,
    pub failures: u64,
}

/// Everything `/healthz` and `/metrics` show, read at one moment.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub docker_up: bool,
    /// Whether the cluster's Redis answers; `None` without one.
    pub redis_up: Option<bool>,
    pub shutting_down: bool,
    pub pools: Vec<PoolStatus>,
    /// MiB the pools' targets are charged together, and their budget.
    pub pool_memory_mib: (u64, u64),
    /// Runs by final state.
    pub ended: Vec<(RunState, u64)>,
    pub internal_errors: u64,
    pub accepted: u64,
    pub refused_busy: u64,
    pub queued: usize,
    pub running: usize,
    pub swept: u64,
    pub first_byte: Histogram,
    pub completion: Histogram,
}

impl Status {
    /// Runs that ended in `state`.
    pub fn ended(&self, state: RunState) -> u64 {
        self.ended
            .iter()
            .find(|(s, _)| *s == state)
            .map_or(0, |(_, n)| *n)
    }
}

/// A shared runner is a runner (so a front end can hold `Arc<dyn Runner>` and hand it on).
impl<R: Runner + ?Sized> Runner for std::sync::Arc<R> {
    fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError> {
        (**self).submit_with(spec, detach)
    }

    fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError> {
        (**self).resume(id, seq)
    }

    fn caps(&self) -> &Caps {
        (**self).caps()
    }

    fn available(&self, language: &str) -> bool {
        (**self).available(language)
    }

    fn status(&self) -> Status {
        (**self).status()
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        (**self).shutdown()
    }
}

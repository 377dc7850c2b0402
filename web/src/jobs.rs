//! Asynchronous jobs: a session whose events are gathered in memory, so that a client can post
//! a run and poll it. Kept for a TTL after they end, at most `max` at once, and the oldest ended
//! ones go early when the output kept passes `max_bytes` (the embedded default; a shared store
//! comes with the Redis queue).
//!
//! Each job keeps its events in a [`JobLog`], which polling (`view`) and live streams
//! (`subscribe`, for `GET /api/v1/jobs/{id}/events`) both read.
use crate::job_log::{Cursor, JobLog, Read};
use bytes::Bytes;
use onpyrunner_protocol::{Event, Reason, RunState, Summary};
use onpyrunner_supervisor::session::{Session, StopSignal};
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// One job as clients see it.
#[derive(Debug, Clone, Serialize)]
pub struct JobView {
    pub id: String,
    pub language: String,
    pub state: RunState,
    /// Place in the queue while waiting (1 is next).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<usize>,
    /// Output so far (invalid UTF-8 replaced; the WebSocket carries exact bytes).
    pub stdout: String,
    pub stderr: String,
    /// Set once the job has ended.
    pub summary: Option<Summary>,
}

struct Job {
    language: String,
    stopper: StopSignal,
    data: Mutex<JobData>,
    /// Bumped on every change, so waiters (sync runs) wake up.
    changes: watch::Sender<u64>,
}

struct JobData {
    state: RunState,
    queue_position: Option<usize>,
    /// Every event in order, and the output.
    log: JobLog,
    summary: Option<Summary>,
    ended_at: Option<Instant>,
    /// The session's event channel closed: nothing more will be logged.
    closed: bool,
}

/// The table of jobs.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<HashMap<String, Arc<Job>>>>,
    max: usize,
    ttl: Duration,
    max_bytes: usize,
}

/// Output kept by ended jobs at most, by default: without it, 1000 jobs of 16 MiB each would
/// hold 16 GB.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The table is full of jobs that have not ended.
#[derive(Debug, thiserror::Error)]
#[error("too many jobs in progress (limit {max}); retry later")]
pub struct JobsFull {
    pub max: usize,
}

impl Jobs {
    pub fn new(max: usize, ttl: Duration) -> Self {
        Jobs {
            inner: Arc::new(Mutex::new(HashMap::new())),
            max,
            ttl,
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }

    /// Keep at most `max_bytes` of output in ended jobs; the oldest go first.
    pub fn with_max_bytes(mut self, max_bytes: usize) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether a new job fits, after dropping expired ones (checked before submitting, so a
    /// refused job starts nothing).
    pub fn has_room(&self) -> bool {
        let mut table = self.inner.lock().expect("jobs lock");
        self.expire(&mut table);
        table.len() < self.max || oldest_ended(&table).is_some()
    }

    /// Keep a submitted session as a job: feed it `stdin` then EOF, and gather its events.
    pub fn insert(
        &self,
        session: Session,
        language: &str,
        stdin: Bytes,
    ) -> Result<String, JobsFull> {
        let mut session = session;
        let id = session.id.clone();
        let stdin_tx = session.stdin();
        session.close_stdin();
        let stopper = session.stopper();
        let (changes, _) = watch::channel(0);
        let job = Arc::new(Job {
            language: language.to_string(),
            stopper,
            data: Mutex::new(JobData {
                state: RunState::Ready,
                queue_position: None,
                log: JobLog::default(),
                summary: None,
                ended_at: None,
                closed: false,
            }),
            changes,
        });
        {
            let mut table = self.inner.lock().expect("jobs lock");
            self.expire(&mut table);
            if table.len() >= self.max {
                match oldest_ended(&table) {
                    Some(oldest) => {
                        table.remove(&oldest);
                    }
                    None => {
                        job.stopper.stop(Reason::Stopped);
                        return Err(JobsFull { max: self.max });
                    }
                }
            }
            table.insert(id.clone(), job.clone());
        }
        if let Some(stdin_tx) = stdin_tx {
            tokio::spawn(async move {
                if !stdin.is_empty() {
                    let _ = stdin_tx.send(stdin).await;
                }
                // Dropping the sender is EOF.
            });
        }
        tokio::spawn(async move {
            // The job holds the session until the summary: it never detaches early.
            while let Some(event) = session.recv().await {
                let mut data = job.data.lock().expect("job lock");
                data.log.push(&event);
                match event {
                    Event::State { state, .. } => {
                        data.state = state;
                        if state != RunState::Ready {
                            data.queue_position = None;
                        }
                        if state.is_final() {
                            data.ended_at = Some(Instant::now());
                        }
                    }
                    Event::Queued { position } => data.queue_position = Some(position),
                    Event::Output(_) => {}
                    Event::Summary(summary) => data.summary = Some(summary),
                }
                drop(data);
                job.changes.send_modify(|n| *n += 1);
            }
            job.data.lock().expect("job lock").closed = true;
            job.changes.send_modify(|n| *n += 1);
        });
        Ok(id)
    }

    pub fn view(&self, id: &str) -> Option<JobView> {
        let job = self.get(id)?;
        let data = job.data.lock().expect("job lock");
        Some(JobView {
            id: id.to_string(),
            language: job.language.clone(),
            state: data.state,
            queue_position: data.queue_position,
            stdout: String::from_utf8_lossy(data.log.stdout()).into_owned(),
            stderr: String::from_utf8_lossy(data.log.stderr()).into_owned(),
            summary: data.summary.clone(),
        })
    }

    /// Stop a job; `false` when there is no such job.
    pub fn stop(&self, id: &str) -> bool {
        match self.get(id) {
            Some(job) => {
                job.stopper.stop(Reason::Stopped);
                true
            }
            None => false,
        }
    }

    /// Wait until the job has its summary.
    pub async fn finished(&self, id: &str) -> Option<JobView> {
        let job = self.get(id)?;
        let mut changes = job.changes.subscribe();
        loop {
            let ended = {
                let data = job.data.lock().expect("job lock");
                data.summary.is_some() || data.closed
            };
            if ended {
                return self.view(id);
            }
            if changes.changed().await.is_err() {
                return self.view(id);
            }
        }
    }

    /// Follow a job's events from the start or from a cursor. The job stays readable through
    /// the subscription even if it expires from the table meanwhile.
    pub fn subscribe(&self, id: &str) -> Option<Subscription> {
        let job = self.get(id)?;
        // Subscribed before the first read: a change after that read is never missed.
        let changes = job.changes.subscribe();
        Some(Subscription { job, changes })
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        self.inner.lock().expect("jobs lock").get(id).cloned()
    }

    /// Drop ended jobs past their TTL, then the oldest ended ones while the output kept is over
    /// `max_bytes`.
    fn expire(&self, table: &mut HashMap<String, Arc<Job>>) {
        let ttl = self.ttl;
        table.retain(|_, job| {
            let data = job.data.lock().expect("job lock");
            data.ended_at.is_none_or(|at| at.elapsed() < ttl)
        });
        let mut ended: Vec<(Instant, usize, String)> = Vec::new();
        let mut kept = 0;
        for (id, job) in table.iter() {
            let data = job.data.lock().expect("job lock");
            let bytes = data.log.stdout().len() + data.log.stderr().len();
            kept += bytes;
            if let Some(at) = data.ended_at {
                ended.push((at, bytes, id.clone()));
            }
        }
        ended.sort();
        for (_, bytes, id) in ended {
            if kept <= self.max_bytes {
                break;
            }
            table.remove(&id);
            kept -= bytes;
        }
    }
}

fn oldest_ended(table: &HashMap<String, Arc<Job>>) -> Option<String> {
    table
        .iter()
        .filter_map(|(id, job)| {
            let at = job.data.lock().expect("job lock").ended_at?;
            Some((at, id))
        })
        .min()
        .map(|(_, id)| id.clone())
}

/// A reader of one job's events (see [`Jobs::subscribe`]).
pub struct Subscription {
    job: Arc<Job>,
    changes: watch::Receiver<u64>,
}

impl Subscription {
    /// Whether `cursor` is a position in this job's log (a resumed client sent it back).
    pub fn contains(&self, cursor: Cursor) -> bool {
        self.job.data.lock().expect("job lock").log.contains(cursor)
    }

    /// Up to `max` events after `cursor`, as the log is now.
    pub fn read_now(&self, cursor: Cursor, max: usize) -> Read {
        let data = self.job.data.lock().expect("job lock");
        data.log.read(cursor, data.closed, max)
    }

    /// Up to `max` events after `cursor`; when there is none, wait for the next change.
    pub async fn next(&mut self, cursor: Cursor, max: usize) -> Read {
        loop {
            let read = self.read_now(cursor, max);
            if !read.events.is_empty() || read.complete {
                return read;
            }
            // The job's sender lives as long as the job: `changed` fails only if the job
            // itself is gone, and then `closed` was set before.
            if self.changes.changed().await.is_err() {
                let data = self.job.data.lock().expect("job lock");
                let mut read = data.log.read(cursor, true, max);
                read.complete = read.events.is_empty();
                return read;
            }
        }
    }
}

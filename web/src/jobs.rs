//! Asynchronous jobs: a run whose client posts it and polls it later. A job is the engine's run
//! itself, held attached (so it is never abandoned) and unpaced (it runs at full speed whoever
//! reads it); polling (`view`) and live streams (`subscribe`, for
//! `GET /api/v1/jobs/{id}/events`) are renderings of the run's own log. Kept for a TTL after
//! they end, at most `max` at once, and the oldest ended ones go early when the output kept
//! passes `max_bytes` (the embedded default; a shared store comes with the Redis queue). Both
//! are enforced when a job ends, when one is posted, and on a timer (`expire_every`).
use crate::body::Room;
use bytes::Bytes;
use onpyrunner_protocol::{OutputStream, Reason, RunState, Summary};
use onpyrunner_supervisor::run_log::RunLog;
use onpyrunner_supervisor::session::{Session, StopSignal};
use serde::Serialize;
use std::any::Any;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// What a job was posted as, for an API that answers with the request's own fields (a Judge0
/// submission echoes its source, stdin and limits): kept with the job and gone with it.
pub type Origin = Arc<dyn Any + Send + Sync>;

struct Job {
    language: String,
    origin: Option<Origin>,
    log: RunLog,
    stop: StopSignal,
    /// When the summary came in.
    ended_at: Arc<Mutex<Option<Instant>>>,
}

impl Job {
    fn ended_at(&self) -> Option<Instant> {
        *self.ended_at.lock().expect("job lock")
    }
}

/// Where a job this table does not hold may be found: on a node of a cluster, a job another
/// node took, from Redis (the run from its start, and its language).
pub type Elsewhere = Arc<dyn Fn(&str) -> Option<(Session, String)> + Send + Sync>;

/// The table of jobs.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<HashMap<String, Arc<Job>>>>,
    max: usize,
    ttl: Duration,
    max_bytes: usize,
    elsewhere: Option<Elsewhere>,
}

/// Output kept by ended jobs at most, by default: without it, 1000 jobs of 16 MiB each would
/// hold 16 GB.
pub const DEFAULT_MAX_BYTES: usize = 256 * 1024 * 1024;

/// The table was full of jobs that have not ended: the job that did not fit.
struct Full {
    job: Arc<Job>,
}

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
            elsewhere: None,
        }
    }

    /// Look for jobs the table does not hold with `elsewhere`, and keep what it finds (a job
    /// of another node: polling, its events and DELETE then work here too).
    pub fn with_elsewhere(mut self, elsewhere: Elsewhere) -> Self {
        self.elsewhere = Some(elsewhere);
        self
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

    /// Keep a submitted session as a job: feed it `stdin` then EOF, and hold it until its end,
    /// and `room` (its body's room in the budget) as long.
    pub fn insert(
        &self,
        session: Session,
        language: &str,
        stdin: Bytes,
        room: Room,
    ) -> Result<String, JobsFull> {
        let id = session.id.clone();
        self.keep(id, None, session, language, stdin, room)
    }

    /// [`insert`](Self::insert) under an id of the caller's choosing (an API whose ids have a
    /// shape of their own: Judge0's tokens are UUIDs), with what it was posted as. The id must
    /// not be one the table holds.
    pub fn insert_as(
        &self,
        id: String,
        origin: Origin,
        session: Session,
        language: &str,
        stdin: Bytes,
        room: Room,
    ) -> Result<String, JobsFull> {
        self.keep(id, Some(origin), session, language, stdin, room)
    }

    fn keep(
        &self,
        id: String,
        origin: Option<Origin>,
        session: Session,
        language: &str,
        stdin: Bytes,
        room: Room,
    ) -> Result<String, JobsFull> {
        let mut session = session.unpaced();
        let stdin_tx = session.stdin();
        session.close_stdin();
        if let Err(full) = self.hold(&id, origin, session, language, room) {
            full.job.stop.stop(Reason::Stopped);
            return Err(JobsFull { max: self.max });
        }
        if let Some(stdin_tx) = stdin_tx {
            tokio::spawn(async move {
                if !stdin.is_empty() {
                    let _ = stdin_tx.send(stdin).await;
                }
                // Dropping the sender is EOF.
            });
        }
        Ok(id)
    }

    /// Put the job in the table (unless it is full of jobs that have not ended) and hold its
    /// session until its end; a job the table holds already under `id` is kept instead.
    fn hold(
        &self,
        id: &str,
        origin: Option<Origin>,
        session: Session,
        language: &str,
        room: Room,
    ) -> Result<Arc<Job>, Full> {
        let job = Arc::new(Job {
            language: language.to_string(),
            origin,
            log: session.log().clone(),
            stop: session.stopper(),
            ended_at: Arc::new(Mutex::new(None)),
        });
        {
            let mut table = self.inner.lock().expect("jobs lock");
            self.expire(&mut table);
            if let Some(held) = table.get(id) {
                return Ok(held.clone());
            }
            if table.len() >= self.max {
                match oldest_ended(&table) {
                    Some(oldest) => {
                        table.remove(&oldest);
                    }
                    None => return Err(Full { job }),
                }
            }
            table.insert(id.to_string(), job.clone());
        }
        let ended_at = job.ended_at.clone();
        let jobs = self.clone();
        tokio::spawn(async move {
            // Attached until the summary: a job is never abandoned.
            session.log().closed().await;
            *ended_at.lock().expect("job lock") = Some(Instant::now());
            drop(session);
            drop(room);
            // The byte budget holds as soon as a job ends, not only when the next one comes.
            jobs.expire_now();
        });
        Ok(job)
    }

    pub fn view(&self, id: &str) -> Option<JobView> {
        let job = self.get(id)?;
        let text = |stream| String::from_utf8_lossy(&job.log.output(stream)).into_owned();
        Some(JobView {
            id: id.to_string(),
            language: job.language.clone(),
            state: job.log.state(),
            queue_position: job.log.queue_position(),
            stdout: text(OutputStream::Stdout),
            stderr: text(OutputStream::Stderr),
            summary: job.log.summary(),
        })
    }

    /// Stop a job; `false` when there is no such job.
    pub fn stop(&self, id: &str) -> bool {
        match self.get(id) {
            Some(job) => {
                job.stop.stop(Reason::Stopped);
                true
            }
            None => false,
        }
    }

    /// Wait until the job has its summary.
    pub async fn finished(&self, id: &str) -> Option<JobView> {
        let job = self.get(id)?;
        job.log.closed().await;
        self.view(id)
    }

    /// The job's run log, to follow (it stays readable even if the job expires meanwhile).
    pub fn subscribe(&self, id: &str) -> Option<RunLog> {
        Some(self.get(id)?.log.clone())
    }

    /// A job posted with an origin of type `T` ([`insert_as`](Self::insert_as)): the origin
    /// and the run's log. `None` for no such job, or one posted otherwise.
    pub fn origin<T: Any + Send + Sync>(&self, id: &str) -> Option<(Arc<T>, RunLog)> {
        let job = self.get(id)?;
        let origin = job.origin.clone()?.downcast::<T>().ok()?;
        Some((origin, job.log.clone()))
    }

    /// Every job posted with an origin of type `T`, with its log, in no order.
    pub fn origins<T: Any + Send + Sync>(&self) -> Vec<(Arc<T>, RunLog)> {
        let table = self.inner.lock().expect("jobs lock");
        table
            .values()
            .filter_map(|job| {
                let origin = job.origin.clone()?.downcast::<T>().ok()?;
                Some((origin, job.log.clone()))
            })
            .collect()
    }

    /// Forget a job whose summary is in; `false` when there is no such job or it has not ended.
    pub fn remove_ended(&self, id: &str) -> bool {
        let mut table = self.inner.lock().expect("jobs lock");
        if table.get(id).is_some_and(|job| job.log.is_closed()) {
            table.remove(id);
            return true;
        }
        false
    }

    fn get(&self, id: &str) -> Option<Arc<Job>> {
        if let Some(job) = self.inner.lock().expect("jobs lock").get(id).cloned() {
            return Some(job);
        }
        // Another node's job: followed from here from now on. Nothing is stopped if the table
        // is full (the job is not ours to stop): it is just not found here.
        let (session, language) = (self.elsewhere.as_ref()?)(id)?;
        self.hold(id, None, session.unpaced(), &language, Room::default())
            .ok()
    }

    /// Drop what is past its TTL or over the byte budget, now.
    pub fn expire_now(&self) {
        let mut table = self.inner.lock().expect("jobs lock");
        self.expire(&mut table);
    }

    /// Enforce the TTL every `every`, whether or not jobs are posted, until the table is
    /// dropped everywhere else.
    pub fn expire_every(&self, every: Duration) -> tokio::task::JoinHandle<()> {
        let table = Arc::downgrade(&self.inner);
        let (max, ttl, max_bytes) = (self.max, self.ttl, self.max_bytes);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(inner) = table.upgrade() else { return };
                Jobs {
                    inner,
                    max,
                    ttl,
                    max_bytes,
                    elsewhere: None,
                }
                .expire_now();
            }
        })
    }

    /// Drop ended jobs past their TTL, then the oldest ended ones while the output kept is over
    /// `max_bytes`.
    fn expire(&self, table: &mut HashMap<String, Arc<Job>>) {
        let ttl = self.ttl;
        table.retain(|_, job| job.ended_at().is_none_or(|at| at.elapsed() < ttl));
        let mut ended: Vec<(Instant, u64, String)> = Vec::new();
        let mut kept = 0;
        for (id, job) in table.iter() {
            let bytes = job.log.output_bytes();
            kept += bytes;
            if let Some(at) = job.ended_at() {
                ended.push((at, bytes, id.clone()));
            }
        }
        ended.sort();
        for (_, bytes, id) in ended {
            if kept <= self.max_bytes as u64 {
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
        .filter_map(|(id, job)| Some((job.ended_at()?, id)))
        .min()
        .map(|(_, id)| id.clone())
}

/// A job as the JSON of a [`JobView`], produced a piece at a time from the run's log
/// ([`crate::output_json`]): a poll of a job with 16 MiB of output costs the server a piece,
/// not the output copied and escaped whole (about six times its size for control bytes).
pub fn view_json(
    jobs: &Jobs,
    id: &str,
) -> Option<
    impl futures_util::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + Sync + 'static,
> {
    let job = jobs.get(id)?;
    let mut head = serde_json::Map::new();
    head.insert("id".into(), id.into());
    head.insert("language".into(), job.language.clone().into());
    head.insert(
        "state".into(),
        serde_json::to_value(job.log.state()).expect("a state serializes"),
    );
    if let Some(position) = job.log.queue_position() {
        head.insert("queue_position".into(), position.into());
    }
    let head = serde_json::Value::Object(head).to_string();
    // The fields without their braces, then the output, then the summary.
    let opening = head[1..head.len() - 1].to_string();
    Some(crate::output_json::stream(
        job.log.clone(),
        opening,
        |log| {
            let summary = serde_json::to_string(&log.summary()).expect("a summary serializes");
            format!(",\"summary\":{summary}")
        },
    ))
}

//! An API node's [`Runner`]: runs are checked here, queued in Redis for a worker, and followed
//! from their events stream into a local log (a mirror), so the web layer sees a [`Session`]
//! as it does with the engine.
use super::sweep::sweep_once;
use super::wire::{self, Control, Job, CONTROL_FIELD, SENDER_FIELD};
use super::{entry_field, every, read_stream, ClusterConfig, ClusterError, Redis, SWEEP_EVERY};
use crate::engine::Engine;
use crate::images;
use crate::limits::Caps;
use crate::run::{self, RunSpec};
use crate::runner::{ResumeError, Runner, Status, SubmitError};
use crate::scheduler::Busy;
use crate::session::{self, Detach, RunShared, RunWriter, Session};
use bytes::Bytes;
use onpyrunner_protocol::{Event, Reason, RunState, Stage, Summary};
use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A mirror that cannot reach Redis for this long ends its run as `internal_error`.
pub const REDIS_LOST: Duration = Duration::from_secs(30);
/// Control entries a run's control stream keeps at most.
const MAX_CONTROL: usize = 10_000;

/// Queue the job, the run's first event (entry `1-0`: the worker numbers the run's events
/// after it, see [`wire`]) and its language at once, unless the cluster's queue is full or the
/// client has as many runs queued or running in the whole cluster as it may. KEYS: jobs,
/// events, language, the client's jobs. ARGV: cap, job, the READY event's field and value, the
/// language, the language key's lifetime until the run ends (when it gets the streams'), the
/// client's cap (0: no client).
///
/// The client's jobs are a set of its entries in the jobs stream; an entry is deleted when its
/// run ends (by its worker or the sweep), so the entries still there are the runs that count,
/// and the others are dropped here: nothing needs to remember to decrement a count.
/// Returns `{0, jobs queued or running, ''}` (queue full), `{2, the client's, ''}` (client at
/// its cap) or `{1, jobs queued or running before, the job's entry}`.
const SUBMIT: &str = r"
local queued = redis.call('XLEN', KEYS[1])
if queued >= tonumber(ARGV[1]) then return {0, queued, ''} end
local cap = tonumber(ARGV[7])
if cap > 0 then
  local held = 0
  for _, entry in ipairs(redis.call('SMEMBERS', KEYS[4])) do
    if #redis.call('XRANGE', KEYS[1], entry, entry) > 0 then
      held = held + 1
    else
      redis.call('SREM', KEYS[4], entry)
    end
  end
  if held >= cap then return {2, held, ''} end
end
redis.call('XADD', KEYS[2], '1-0', ARGV[3], ARGV[4])
redis.call('SET', KEYS[3], ARGV[5], 'EX', ARGV[6])
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
if cap > 0 then
  redis.call('SADD', KEYS[4], entry)
  redis.call('EXPIRE', KEYS[4], ARGV[6])
end
return {1, queued, entry}
";
/// How long a run's language key lives before its run ends: a backstop, should nothing end it.
const LANGUAGE_BACKSTOP: Duration = Duration::from_secs(24 * 3600);

/// Runs queued through Redis and executed by whichever worker takes them.
#[derive(Clone)]
pub struct RedisRunner {
    inner: Arc<Inner>,
}

/// A run this node mirrors, and when it ended.
type Mirrored = (Arc<RunShared>, Option<Instant>);

/// What an API node admits.
#[derive(Debug, Clone)]
pub struct Admission {
    /// The caps no run's limits may pass.
    pub caps: Caps,
    /// Jobs queued or running in the whole cluster beyond which submits are refused as busy.
    pub max_queued: usize,
    /// Runs one client may have queued or running in the whole cluster (a token's own quota,
    /// `Client::max_in_flight`, overrides it), whichever API nodes took them.
    pub max_per_client: usize,
}

impl Admission {
    /// The default caps, `max_queued` and `max_per_client`.
    pub fn new(max_queued: usize, max_per_client: usize) -> Self {
        Admission {
            caps: Caps::default(),
            max_queued,
            max_per_client,
        }
    }
}

struct Inner {
    redis: Redis,
    admission: Admission,
    /// The consumer name this node claims lost workers' jobs under.
    name: String,
    /// Whether Redis answered the last health check.
    up: AtomicBool,
    /// The languages the live workers can run, and how many live.
    workers: Mutex<(BTreeSet<String>, usize)>,
    queued: AtomicUsize,
    accepted: AtomicU64,
    refused_busy: AtomicU64,
    /// The runs this node mirrors (submitted here or resumed here), and when each ended.
    runs: Mutex<HashMap<String, Mirrored>>,
    /// An engine in this process (`serve --redis` with its worker): its health and pools are
    /// this node's too.
    local: Option<Engine>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RedisRunner {
    /// Connect (a wrong password or an unreachable server is an error here, said plainly),
    /// make the workers' group, and start the health checks and the sweep.
    pub async fn connect(
        config: &ClusterConfig,
        admission: Admission,
        local: Option<Engine>,
    ) -> Result<RedisRunner, ClusterError> {
        let redis = Redis::open(config)?;
        redis.ping().await?;
        redis.ensure_group().await?;
        let inner = Arc::new(Inner {
            redis,
            admission,
            name: format!("api-{}", run::random_hex(6)),
            up: AtomicBool::new(true),
            workers: Mutex::new((BTreeSet::new(), 0)),
            queued: AtomicUsize::new(0),
            accepted: AtomicU64::new(0),
            refused_busy: AtomicU64::new(0),
            runs: Mutex::new(HashMap::new()),
            local,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.check().await;
        inner.tasks.spawn(maintain(inner.clone()));
        Ok(RedisRunner { inner })
    }

    /// Whether Redis answered the last health check.
    pub fn redis_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }

    /// A run any node of the cluster accepted, from its start, with its language: for a job
    /// polled on a node other than the one it was posted to. `None` when Redis has no such
    /// run (or does not answer).
    pub fn elsewhere(&self, id: &str) -> Option<(Session, String)> {
        if !valid_run_id(id) {
            return None;
        }
        let key = self.inner.redis.keys.language(id);
        let language: Option<String> = self
            .inner
            .redis
            .blocking_call(|conn| redis::cmd("GET").arg(&key).query(conn))
            .ok()?;
        let language = language?;
        let session = self.resume(id, 0).ok()?;
        Some((session, language))
    }
}

/// Whether `id` can be a run's id (ours are 32 hex digits): anything else is not looked up.
fn valid_run_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Inner {
    /// Health: PING, the live workers' languages, the queue's length.
    async fn check(&self) {
        let up = self.redis.ping().await.is_ok();
        let was = self.up.swap(up, Ordering::Relaxed);
        if was && !up {
            tracing::error!(server = %self.redis.server, "Redis stopped answering");
        } else if up && !was {
            tracing::warn!(server = %self.redis.server, "Redis answers again");
        }
        if !up {
            return;
        }
        if let Ok(seen) = super::worker::live_workers(&self.redis).await {
            *self.workers.lock().expect("runner lock") = seen;
        }
        if let Ok(n) = self
            .redis
            .query::<usize>(redis::cmd("XLEN").arg(self.redis.keys.jobs()))
            .await
        {
            self.queued.store(n, Ordering::Relaxed);
        }
    }

    /// Forget mirrors of runs that ended longer ago than the streams are kept.
    fn forget_old(&self) {
        let ttl = self.redis.run_ttl;
        self.runs
            .lock()
            .expect("runner lock")
            .retain(|_, (_, ended)| ended.is_none_or(|at| at.elapsed() < ttl));
    }

    /// Start mirroring a run: its events from after stream entry `from` into its log, its
    /// stdin, EOF, Stop and signals out to its control stream. `held`: the client's jobs key
    /// and the run's entry in it, taken out before the run's end reaches the log, so that a
    /// client that saw its run end may submit the next at once.
    fn mirror(
        self: &Arc<Self>,
        run: Arc<RunShared>,
        stdin: mpsc::Receiver<Bytes>,
        from: String,
        stop_when_abandoned: bool,
        held: Option<(String, String)>,
    ) {
        self.runs
            .lock()
            .expect("runner lock")
            .insert(run.id.clone(), (run.clone(), None));
        let inner = self.clone();
        self.tasks.spawn(async move {
            let last = Mutex::new(from);
            let held = Mutex::new(held);
            let events = follow_events(&inner, &run, &last, &held);
            let control = forward_control(&inner, &run, stdin, stop_when_abandoned);
            tokio::select! {
                () = events => {}
                () = control => {
                    // The Stop is sent: its summary still comes through the events.
                    follow_events(&inner, &run, &last, &held).await;
                }
            }
            run.ended();
            if let Some(entry) = inner.runs.lock().expect("runner lock").get_mut(&run.id) {
                entry.1 = Some(Instant::now());
            }
        });
    }
}

/// Push the run's events into its log until its summary. `last` is the last stream entry
/// already in the log ("0": none), kept up to date. `held` is released (see
/// [`Inner::mirror`]) before the first event of the run's end is pushed.
async fn follow_events(
    inner: &Inner,
    run: &RunShared,
    last: &Mutex<String>,
    held: &Mutex<Option<(String, String)>>,
) {
    let key = inner.redis.keys.events(&run.id);
    let mut conn = None;
    let mut failing_since: Option<Instant> = None;
    while !run.log.is_closed() {
        if conn.is_none() {
            conn = inner.redis.blocking().await.ok();
        }
        let result = match conn.as_mut() {
            Some(c) => {
                let from = last.lock().expect("mirror lock").clone();
                read_stream(c, &key, &from, 512, None)
                    .await
                    .map_err(|e| inner.redis.broken(e))
            }
            None => Err(inner.redis.failed("cannot connect")),
        };
        match result {
            Ok(reply) => {
                failing_since = None;
                for entry in reply {
                    if let Some(event) =
                        entry_field(&entry).and_then(|(f, v)| wire::decode_event(f, &v))
                    {
                        if ends_the_run(&event) {
                            release(inner, held).await;
                        }
                        let _ = run.log.push(event);
                    }
                    *last.lock().expect("mirror lock") = entry.id;
                }
            }
            Err(e) => {
                conn = None;
                let since = *failing_since.get_or_insert_with(Instant::now);
                if since.elapsed() > REDIS_LOST {
                    tracing::error!(run = %run.id, error = %e, "lost Redis: ending the mirrored run");
                    let summary =
                        Summary::internal(Stage::Run, format!("lost the run's events: {e}"));
                    for event in wire::final_events(summary) {
                        let _ = run.log.push(event);
                    }
                    return;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }
    }
}

fn ends_the_run(event: &Event) -> bool {
    match event {
        Event::State { state, .. } => state.is_final(),
        Event::Summary(_) => true,
        _ => false,
    }
}

/// Take the run's entry out of its client's jobs (once). Should Redis not take it, the entry
/// goes at the client's next submit after its worker deleted the job.
async fn release(inner: &Inner, held: &Mutex<Option<(String, String)>>) {
    let taken = held.lock().expect("mirror lock").take();
    if let Some((key, entry)) = taken {
        if let Err(e) = inner
            .redis
            .query::<()>(redis::cmd("SREM").arg(&key).arg(&entry))
            .await
        {
            tracing::debug!(error = %e, "the client's count of runs is freed at its next run");
        }
    }
}

/// Send the run's stdin, EOF, Stop and signals to its control stream; returns once a Stop
/// was sent.
async fn forward_control(
    inner: &Inner,
    run: &RunShared,
    mut stdin: mpsc::Receiver<Bytes>,
    stop_when_abandoned: bool,
) {
    let mut open = true;
    let abandoned = async {
        if stop_when_abandoned {
            run.abandoned().await
        } else {
            std::future::pending().await
        }
    };
    tokio::pin!(abandoned);
    let mut sent = 0u64;
    loop {
        let control = tokio::select! {
            chunk = stdin.recv(), if open => match chunk {
                Some(data) => Control::Stdin { data: data.to_vec() },
                None => {
                    open = false;
                    Control::Eof
                }
            },
            reason = run.stop.stopped() => Control::Stop { reason },
            signal = run.signals.next() => Control::Signal { signal },
            () = &mut abandoned => Control::Stop { reason: Reason::ClientGone },
        };
        let stop = matches!(control, Control::Stop { .. });
        sent += 1;
        let mut cmd = redis::cmd("XADD");
        cmd.arg(inner.redis.keys.control(&run.id))
            .arg("MAXLEN")
            .arg("~")
            .arg(MAX_CONTROL)
            .arg("*")
            .arg(CONTROL_FIELD)
            .arg(control.encode())
            .arg(SENDER_FIELD)
            .arg(wire::sender(&inner.name, sent));
        // In order: the next chunk waits until this one is in (or given up on). A retry of an
        // entry that did go in is told apart by its sender field.
        let sent = inner
            .redis
            .retrying(|| inner.redis.query::<String>(&cmd))
            .await;
        if let Err(e) = sent {
            tracing::warn!(run = %run.id, error = %e, "could not send stdin, Stop or a signal to the run");
        }
        if stop {
            return;
        }
    }
}

/// Health every second, the sweep, and forgetting old mirrors, until shutdown.
async fn maintain(inner: Arc<Inner>) {
    every(SWEEP_EVERY, &inner.shutdown, || async {
        inner.check().await;
        if inner.up.load(Ordering::Relaxed) {
            if let Err(e) = sweep_once(&inner.redis, &inner.name).await {
                tracing::warn!(error = %e, "sweep for lost workers failed");
            }
        }
        inner.forget_old();
    })
    .await
}

impl Runner for RedisRunner {
    fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        run::check(&spec).map_err(SubmitError::Invalid)?;
        if !self.available(&spec.language.id) {
            return Err(SubmitError::LanguageUnavailable {
                language: spec.language.id.clone(),
                image: images::image_ref(spec.language),
            });
        }
        if !self.redis_up() {
            return Err(SubmitError::QueueDown(format!(
                "Redis at {} is not answering",
                inner.redis.server
            )));
        }
        let id = run::random_hex(16);
        let job = Job::of(&id, &spec).encode();
        let ready = wire::encode_event(&Event::State {
            state: RunState::Ready,
            at_unix_ms: session::unix_ms(),
        });
        let keys = &inner.redis.keys;
        let (jobs, events, language) = (keys.jobs(), keys.events(&id), keys.language(&id));
        let client_cap = spec.client.as_ref().map_or(0, |c| {
            c.max_in_flight
                .unwrap_or(inner.admission.max_per_client)
                .max(1)
        });
        let client_jobs = keys.client(spec.client.as_ref().map_or("", |c| c.name.as_str()));
        let max_queued = inner.admission.max_queued;
        let (accepted, queued, entry): (u8, usize, String) = inner
            .redis
            .blocking_call(|conn| {
                redis::Script::new(SUBMIT)
                    .key(&jobs)
                    .key(&events)
                    .key(&language)
                    .key(&client_jobs)
                    .arg(max_queued)
                    .arg(&job)
                    .arg(ready.0)
                    .arg(ready.1.as_ref())
                    .arg(&spec.language.id)
                    .arg(LANGUAGE_BACKSTOP.as_secs())
                    .arg(client_cap)
                    .invoke(conn)
            })
            .map_err(|e| {
                inner.up.store(false, Ordering::Relaxed);
                SubmitError::QueueDown(e.to_string())
            })?;
        match accepted {
            0 => {
                inner.refused_busy.fetch_add(1, Ordering::Relaxed);
                return Err(SubmitError::Busy(Busy {
                    queued,
                    max_queued,
                    retry_after: Duration::from_secs(1),
                }));
            }
            2 => {
                inner.refused_busy.fetch_add(1, Ordering::Relaxed);
                return Err(SubmitError::ClientBusy { max: client_cap });
            }
            _ => {}
        }
        inner.accepted.fetch_add(1, Ordering::Relaxed);
        let (writer, session) = session::open(id, detach);
        let RunWriter { run, stdin } = writer;
        let held = (client_cap > 0).then_some((client_jobs, entry));
        inner.mirror(run, stdin, "0".into(), true, held);
        Ok(session)
    }

    fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError> {
        let inner = &self.inner;
        let local = inner
            .runs
            .lock()
            .expect("runner lock")
            .get(id)
            .map(|(run, _)| run.clone());
        if let Some(run) = local {
            let end = run.log.end();
            return Session::attach(run, seq).ok_or(ResumeError::PastTheEnd { seq, end });
        }
        // A run of another node: its log so far, from Redis, into a mirror of our own.
        if !valid_run_id(id) {
            return Err(ResumeError::NoSuchRun);
        }
        let key = inner.redis.keys.events(id);
        let entries: redis::streams::StreamRangeReply = inner
            .redis
            .blocking_call(|conn| redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query(conn))
            .map_err(|_| ResumeError::NoSuchRun)?;
        let Some(last) = entries.ids.last().map(|e| e.id.clone()) else {
            return Err(ResumeError::NoSuchRun);
        };
        let (writer, first) = session::open(id.to_string(), Detach::Kill);
        let RunWriter { run, stdin } = writer;
        for entry in &entries.ids {
            if let Some(event) = entry_field(entry).and_then(|(f, v)| wire::decode_event(f, &v)) {
                let _ = run.log.push(event);
            }
        }
        let end = run.log.end();
        let session =
            Session::attach(run.clone(), seq).ok_or(ResumeError::PastTheEnd { seq, end })?;
        drop(first);
        // Whether to kill it when nobody is attached is the rule of the node that took it.
        inner.mirror(run, stdin, last, false, None);
        Ok(session)
    }

    fn caps(&self) -> &Caps {
        &self.inner.admission.caps
    }

    /// A language is available when a live worker has its image; with no live worker, every
    /// language of the table (a run waits for a worker to start).
    fn available(&self, language: &str) -> bool {
        let (languages, live) = &*self.inner.workers.lock().expect("runner lock");
        if *live == 0 {
            onpyrunner_languages::find(language).is_some()
        } else {
            languages.contains(language)
        }
    }

    fn status(&self) -> Status {
        let inner = &self.inner;
        let mut status = match &inner.local {
            Some(engine) => engine.status(),
            None => Status {
                docker_up: true,
                ..Status::default()
            },
        };
        status.redis_up = Some(self.redis_up());
        status.shutting_down |= inner.shutdown.is_cancelled();
        status.queued = inner.queued.load(Ordering::Relaxed);
        status.accepted = inner.accepted.load(Ordering::Relaxed);
        status.refused_busy = inner.refused_busy.load(Ordering::Relaxed);
        status
    }

    /// Stop admitting, stop every run this node mirrors (reason `shutdown`) and wait a little
    /// for their summaries.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let inner = &self.inner;
            let runs: Vec<Arc<RunShared>> = inner
                .runs
                .lock()
                .expect("runner lock")
                .values()
                .filter(|(_, ended)| ended.is_none())
                .map(|(run, _)| run.clone())
                .collect();
            for run in runs {
                run.stop.stop(Reason::Shutdown);
            }
            // The maintenance task ends with the token; the mirrors with their summaries.
            inner.shutdown.cancel();
            inner.tasks.close();
            if tokio::time::timeout(Duration::from_secs(3), inner.tasks.wait())
                .await
                .is_err()
            {
                tracing::warn!("mirrored runs did not end within the shutdown grace");
            }
        })
    }
}

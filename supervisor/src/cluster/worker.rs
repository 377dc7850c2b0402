//! A worker node: it takes jobs from the workers' group while its engine has room, runs each
//! on the engine, writes the run's events to its events stream and applies what comes on its
//! control stream. Its heartbeat key says it lives; its owner record per run says which runs
//! it started (see the module's faults, [`super`]).
use super::sweep::{append_event, settle, sweep_once};
use super::wire::{self, Control, Job, Senders, CONTROL_FIELD, GROUP, JOB_FIELD, SENDER_FIELD};
use super::{
    entry_field, every, field, read_stream, ClusterConfig, ClusterError, Failed, Redis,
    HEARTBEAT_EVERY, HEARTBEAT_TTL, MAX_EVENTS, SWEEP_EVERY, WRITE_RETRY,
};
use crate::engine::Engine;
use crate::session::{Detach, RunControl};
use bytes::Bytes;
use onpyrunner_protocol::{Event, Reason, RunState, Stage, Summary};
use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A running worker; [`shutdown`](Worker::shutdown) ends it.
pub struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Redis,
    engine: Engine,
    /// The consumer name in the group, and the heartbeat key's name: the engine's owner label,
    /// so a worker's jobs and its containers are named alike.
    name: String,
    /// One per run the engine may execute at once: a job is taken only with one in hand.
    slots: Arc<Semaphore>,
    /// The job entries being run here.
    in_flight: Mutex<HashSet<String>>,
    /// Look at our own pending entries before taking new ones: at start, after the jobs
    /// connection broke (a delivery may have reached Redis's log and not us), and after a job
    /// was left pending.
    recover: AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Worker {
    /// Connect, join the group, say we live, and start taking jobs for `engine`.
    pub async fn start(engine: Engine, config: &ClusterConfig) -> Result<Worker, ClusterError> {
        let redis = Redis::open(config)?;
        redis.ping().await?;
        redis.ensure_group().await?;
        let inner = Arc::new(Inner {
            name: engine.owner().to_string(),
            slots: Arc::new(Semaphore::new(engine.config().max_running)),
            in_flight: Mutex::new(HashSet::new()),
            recover: AtomicBool::new(true),
            redis,
            engine,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
        });
        inner.heartbeat().await?;
        inner.tasks.spawn(heartbeat(inner.clone()));
        inner.tasks.spawn(sweep(inner.clone()));
        inner.tasks.spawn(take(inner.clone()));
        Ok(Worker { inner })
    }

    /// The worker's consumer name (its engine's owner label).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Stop taking jobs, shut the engine down (its runs end as `shutdown`, and their summaries
    /// are written), and take the heartbeat away.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.engine.shutdown().await;
        inner.tasks.close();
        if tokio::time::timeout(Duration::from_secs(5), inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the worker's runs did not all report their end to Redis");
        }
        let _ = inner
            .redis
            .query::<()>(redis::cmd("DEL").arg(inner.redis.keys.worker(&inner.name)))
            .await;
    }
}

impl Inner {
    /// Refresh the heartbeat key: it lives [`HEARTBEAT_TTL`] and holds our languages.
    async fn heartbeat(&self) -> Result<(), Failed> {
        let languages: Vec<&str> = onpyrunner_languages::languages()
            .iter()
            .map(|l| l.id.as_str())
            .filter(|id| self.engine.available(id))
            .collect();
        let value = serde_json::to_string(&languages).expect("strings serialize");
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.redis.keys.worker(&self.name))
            .arg(value)
            .arg("PX")
            .arg(HEARTBEAT_TTL.as_millis() as u64);
        self.redis.query(&cmd).await
    }
}

/// The languages the live workers can run, and how many live (from their heartbeat keys).
pub(crate) async fn live_workers(redis: &Redis) -> Result<(BTreeSet<String>, usize), Failed> {
    let mut cursor = 0u64;
    let mut keys: Vec<String> = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(redis.keys.workers_pattern())
            .arg("COUNT")
            .arg(100);
        let (next, found): (u64, Vec<String>) = redis.query(&cmd).await?;
        keys.extend(found);
        cursor = next;
        if cursor == 0 || keys.len() > 10_000 {
            break;
        }
    }
    let mut languages = BTreeSet::new();
    if keys.is_empty() {
        return Ok((languages, 0));
    }
    let values: Vec<Option<String>> = redis.query(redis::cmd("MGET").arg(&keys)).await?;
    let mut live = 0;
    for value in values.into_iter().flatten() {
        live += 1;
        if let Ok(list) = serde_json::from_str::<Vec<String>>(&value) {
            languages.extend(list);
        }
    }
    Ok((languages, live))
}

async fn heartbeat(inner: Arc<Inner>) {
    every(HEARTBEAT_EVERY, &inner.shutdown, || async {
        if let Err(e) = inner.heartbeat().await {
            tracing::warn!(error = %e, "heartbeat failed");
        }
    })
    .await
}

async fn sweep(inner: Arc<Inner>) {
    every(SWEEP_EVERY, &inner.shutdown, || async {
        if let Err(e) = sweep_once(&inner.redis, &inner.name).await {
            tracing::warn!(error = %e, "sweep for lost workers failed");
        }
    })
    .await
}

/// Take jobs while there is room, until shutdown.
async fn take(inner: Arc<Inner>) {
    let mut conn = None;
    loop {
        let permit = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            permit = inner.slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        if conn.is_none() {
            match inner.redis.blocking().await {
                Ok(c) => {
                    conn = Some(c);
                    inner.recover.store(true, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach Redis to take jobs");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        if inner.recover.swap(false, Ordering::Relaxed) {
            let c = conn.as_mut().expect("connected above");
            if let Err(e) = recover(&inner, c).await {
                tracing::warn!(error = %e, "looking at our own pending jobs failed");
                inner.recover.store(true, Ordering::Relaxed);
                conn = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        }
        let jobs = inner.redis.keys.jobs();
        let read = tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            read = read_stream(
                conn.as_mut().expect("connected above"),
                &jobs,
                ">",
                1,
                Some((GROUP, &inner.name)),
            ) => read,
        };
        let entry = match read {
            Ok(entries) => entries.into_iter().next(),
            Err(e) => {
                tracing::warn!(error = %e, "reading jobs failed");
                conn = None;
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        let Some(entry) = entry else { continue };
        let job = entry_field(&entry)
            .filter(|(field, _)| *field == JOB_FIELD)
            .map(|(_, value)| Job::decode(&value));
        let inner2 = inner.clone();
        inner
            .in_flight
            .lock()
            .expect("worker lock")
            .insert(entry.id.clone());
        inner.tasks.spawn(async move {
            let _permit = permit;
            let settled = match job {
                Some(Ok(job)) => run_job(&inner2, &entry.id, job).await,
                other => {
                    tracing::warn!(entry = %entry.id, job = ?other, "a job that cannot be read: dropped");
                    let mut pipe = redis::pipe();
                    pipe.cmd("XACK").arg(&jobs).arg(GROUP).arg(&entry.id).ignore();
                    pipe.cmd("XDEL").arg(&jobs).arg(&entry.id).ignore();
                    inner2.redis.pipe::<()>(&pipe).await.is_ok()
                }
            };
            inner2.in_flight.lock().expect("worker lock").remove(&entry.id);
            if !settled {
                // Still pending with us: the take loop settles it once Redis answers.
                inner2.recover.store(true, Ordering::Relaxed);
            }
        });
    }
}

/// Settle the entries pending with us that we are not running, as the sweep settles a lost
/// worker's: the run ends as `internal_error` if it had started, else it is queued again.
async fn recover(
    inner: &Inner,
    conn: &mut redis::aio::MultiplexedConnection,
) -> Result<(), Failed> {
    let jobs = inner.redis.keys.jobs();
    let pending = read_stream(conn, &jobs, "0", 100, Some((GROUP, &inner.name)))
        .await
        .map_err(|e| inner.redis.broken(e))?;
    for entry in pending {
        if inner
            .in_flight
            .lock()
            .expect("worker lock")
            .contains(&entry.id)
        {
            continue;
        }
        tracing::warn!(entry = %entry.id, "a job pending with us that we are not running: settling it");
        settle(&inner.redis, &entry, &inner.name).await?;
    }
    Ok(())
}

/// Run one job to its end on the engine, its events out to Redis and its control in. Returns
/// whether its entry is settled (false: it is still pending with us).
async fn run_job(inner: &Arc<Inner>, entry: &str, job: Job) -> bool {
    let redis = &inner.redis;
    let id = job.id.clone();
    let mut set_owner = redis::cmd("SET");
    set_owner.arg(redis.keys.owner(&id)).arg(&inner.name);
    let owner = redis.retrying(|| redis.query::<()>(&set_owner)).await;
    if let Err(e) = owner {
        // Not started: queued again once Redis answers.
        tracing::warn!(run = %id, error = %e, "cannot record the run's owner; leaving the job pending");
        return false;
    }
    let session = job.spec().map_err(|e| e.to_string()).and_then(|spec| {
        inner
            .engine
            .submit_with(spec, Detach::Kill)
            .map_err(|e| e.to_string())
    });
    let mut session = match session {
        Ok(session) => session,
        Err(message) => {
            tracing::warn!(run = %id, error = %message, "the worker's engine refused the job");
            for (n, event) in (1..).zip(wire::final_events(Summary::internal(Stage::Run, message)))
            {
                let _ = write(inner, &id, n, &event).await;
            }
            return redis.retrying(|| redis.finish(&id, entry)).await.is_ok();
        }
    };
    let done = CancellationToken::new();
    let control = tokio::spawn(apply_control(
        inner.clone(),
        id.clone(),
        session.control(),
        done.clone(),
    ));
    let stopper = session.stopper();
    let mut first = true;
    let mut written = 0usize;
    while let Some(event) = session.recv().await {
        // The API node wrote the run's READY when it queued the job.
        if std::mem::take(&mut first)
            && matches!(
                event,
                Event::State {
                    state: RunState::Ready,
                    ..
                }
            )
        {
            continue;
        }
        written += 1;
        if written == MAX_EVENTS {
            stopper.stop(Reason::OutputLimit);
        }
        if let Err(e) = write(inner, &id, written as u64, &event).await {
            tracing::error!(run = %id, error = %e, "cannot write the run's events: stopping it");
            stopper.stop(Reason::Shutdown);
        }
    }
    done.cancel();
    let _ = control.await;
    match redis.retrying(|| redis.finish(&id, entry)).await {
        Ok(()) => true,
        Err(e) => {
            // Its summary is in: acknowledged once Redis answers.
            tracing::warn!(run = %id, error = %e, "cannot settle the run's job");
            false
        }
    }
}

/// Write the run's `n`th event, retrying for [`WRITE_RETRY`] while Redis fails. A retry that
/// Redis refuses as not newer had gone in (the answer was lost): written once, as it should.
/// Refused so on the first try, the stream has moved on without us (the sweep ended the run).
async fn write(inner: &Inner, run: &str, n: u64, event: &Event) -> Result<(), Failed> {
    let id = wire::event_id(n);
    let started = std::time::Instant::now();
    let mut retry = false;
    loop {
        let e = match append_event(&inner.redis, run, &id, event).await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if not_newer(&e) {
            return if retry { Ok(()) } else { Err(e) };
        }
        if started.elapsed() > WRITE_RETRY {
            return Err(e);
        }
        retry = true;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn not_newer(e: &ClusterError) -> bool {
    matches!(e, ClusterError::Redis { message, .. } if wire::not_newer(message))
}

/// Apply the run's control entries (stdin, EOF, Stop, signals) in order until `done`.
async fn apply_control(
    inner: Arc<Inner>,
    run: String,
    control: RunControl,
    done: CancellationToken,
) {
    let redis = &inner.redis;
    let key = redis.keys.control(&run);
    let mut last = "0".to_string();
    let mut conn = None;
    let mut stdin = control.stdin();
    let mut senders = Senders::default();
    loop {
        if conn.is_none() {
            conn = tokio::select! {
                _ = done.cancelled() => return,
                c = redis.blocking() => c.ok(),
            };
            if conn.is_none() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        }
        let read = tokio::select! {
            _ = done.cancelled() => return,
            read = read_stream(conn.as_mut().expect("connected above"), &key, &last, 64, None) => read,
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(_) => {
                conn = None;
                continue;
            }
        };
        for entry in entries {
            last = entry.id.clone();
            if !senders.fresh(field(&entry, SENDER_FIELD).as_deref()) {
                continue; // a retry of an entry already applied
            }
            let Some(c) = field(&entry, CONTROL_FIELD).and_then(|v| Control::decode(&v)) else {
                continue;
            };
            match c {
                Control::Stdin { data } => {
                    if let Some(tx) = &stdin {
                        let send = tx.send(Bytes::from(data));
                        tokio::select! {
                            _ = done.cancelled() => return,
                            sent = send => if sent.is_err() { stdin = None },
                        }
                    }
                }
                Control::Eof => {
                    stdin = None;
                    control.close_stdin();
                }
                Control::Stop { reason } => control.stop(reason),
                Control::Signal { signal } => {
                    control.signal(signal);
                }
            }
        }
    }
}

//! The engine: one supervisor instance's pools, scheduler, run sessions and cleanup.
//!
//! - `submit` validates a run, takes a place in the [`RunQueue`] (or refuses with `Busy`) and
//!   starts a session task that reports events until its [`Summary`].
//! - A session claims a paused container from its language's pool (a miss makes a fresh one),
//!   runs, and always removes the container.
//! - Cleanup survives crashes: every container carries the owner label `<instance>.<pid>-<rand>`
//!   and the engine holds that owner's lock while it lives ([`owner`](crate::owner)). At
//!   start-up and in the periodic sweep, containers of the same instance whose owner is gone
//!   are removed (a crashed incarnation left them), never those of a live neighbour; the sweep
//!   also removes its own containers that are neither pooled nor running and older than a grace
//!   period; after the daemon comes back from a restart the pools are flushed and refilled.
//! - `shutdown` stops admitting, ends every queued or running session as STOPPED (reason
//!   `shutdown`), drains the pools and removes anything left of this owner, within a bound.
use crate::container::{LABEL_CREATED, LABEL_MANAGED, LABEL_OWNER, LABEL_UID};
use crate::docker::{Docker, DockerError};
use crate::images;
use crate::limits::Caps;
use crate::metrics::Metrics;
use crate::owner::{self, OwnerLock};
use crate::pool::{Demand, Pool};
use crate::pool_sizing::{PoolPlan, SizeRange, Sizing};
use crate::run::{self, Controls, Maker, Placement, RunError, RunSpec, Sandbox};
use crate::run_log::LogFull;
use crate::scheduler::{Cost, LocalQueue, Request, RunQueue, Ticket};
use crate::session::{unix_ms, Detach, RunShared, RunWriter, Session};
use crate::uids::{UidRange, Uids};
use onpyrunner_languages::Language;
use onpyrunner_protocol::{Event, Reason, RunState, Stage, Summary, Usage};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Output chunks buffered between the run and its log.
pub const EVENT_BUFFER: usize = 32;
/// Output bytes the log may hold beyond its slowest follower before the program is slowed
/// down (backpressure).
pub const FOLLOW_WINDOW: u64 = 256 * 1024;
pub use crate::runner::{ResumeError, SubmitError};
pub use crate::session::STDIN_BUFFER;
/// A container that is neither pooled nor running is removed once it is older than this (the
/// longest a pooled container may take to be made, with room to spare).
pub const SWEEP_GRACE: Duration = Duration::from_secs(150);

/// Everything an engine is configured with.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This supervisor's name on the daemon, `[a-z0-9-]+`. Its start-up sweep removes every
    /// container of the same name, so supervisors sharing a daemon need distinct names.
    pub instance: String,
    /// Pinned pool sizes per language id (`--pool LANG=N`): exactly this many, whatever the
    /// demand.
    pub pool_sizes: BTreeMap<String, usize>,
    /// Pool ranges per language id (`--pool LANG=MIN-MAX`): follow demand within them. A
    /// language in neither map starts at its table size and follows demand between 1 and
    /// [`DEFAULT_CEILING`](crate::pool_sizing::DEFAULT_CEILING).
    pub pool_ranges: BTreeMap<String, SizeRange>,
    /// MiB the pools' targets may be charged together, each pooled container at its language's
    /// memory limit.
    pub pool_memory_mib: u64,
    /// A pool that has not missed for this long shrinks by one container, down to its floor.
    pub pool_idle: Duration,
    /// Runs executing at once.
    pub max_running: usize,
    /// Runs waiting beyond those; more are refused as busy.
    pub max_queued: usize,
    /// Runs one client may have waiting or running at once (see `RunSpec::client`), so that
    /// no client takes the whole queue.
    pub max_per_client: usize,
    /// Runs one client may have executing at once (a token's own quota overrides it); `None`
    /// is only the count of slots. Waiting clients take turns either way.
    pub max_running_per_client: Option<usize>,
    /// The host's budget: runs execute at once only while their CPU quotas and memory limits
    /// together fit in it, whatever `max_running` says.
    pub budget: Cost,
    pub caps: Caps,
    pub sweep_interval: Duration,
    pub health_interval: Duration,
    /// How long `shutdown` waits for sessions to end before it removes what is left anyway.
    pub shutdown_grace: Duration,
    /// What the ended runs kept for their detach grace (so a dropped client can come back for
    /// the rest) may hold together, output plus a fixed cost per run; past it the oldest are
    /// forgotten early.
    pub retained_max_bytes: u64,
    /// Start even when the daemon says it would not enforce seccomp or a limit (the engine
    /// refuses to by default).
    pub allow_weak_daemon: bool,
    /// The uids containers run as, one per live container: at least `max_running` plus every
    /// pooled container (checked at start).
    pub run_uids: UidRange,
    /// The OCI runtime of languages whose table entry names none (`None`: the daemon's
    /// default). It must be registered with the daemon (checked at start).
    pub runtime: Option<String>,
    /// The OCI runtime per language id, over the table's and `runtime`.
    pub runtimes: BTreeMap<String, String>,
}

impl EngineConfig {
    /// The runtime a language's containers run under: this config's for the language, else
    /// the table's, else the config's default; `None` is the daemon's default.
    pub fn runtime_for(&self, language: &Language) -> Option<String> {
        self.runtimes
            .get(&language.id)
            .or(language.runtime.as_ref())
            .or(self.runtime.as_ref())
            .cloned()
    }

    /// The sizes a language's pool may take: pinned, configured, or the table's default.
    pub fn pool_range(&self, language: &Language) -> SizeRange {
        if let Some(&n) = self.pool_sizes.get(&language.id) {
            return SizeRange::pinned(n);
        }
        if let Some(range) = self.pool_ranges.get(&language.id) {
            return SizeRange::following(range.floor, language.pool_size, range.ceiling);
        }
        SizeRange::default_for(language.pool_size)
    }

    /// Containers the pools may keep at most, in all (ready or being made): their ceilings.
    pub fn pooled(&self) -> usize {
        onpyrunner_languages::languages()
            .iter()
            .map(|l| self.pool_range(l).ceiling)
            .sum()
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        let max_running = crate::scheduler::default_max_running();
        EngineConfig {
            instance: "local".into(),
            pool_sizes: BTreeMap::new(),
            pool_ranges: BTreeMap::new(),
            pool_memory_mib: crate::scheduler::default_pool_memory_mib(),
            pool_idle: crate::pool_sizing::DEFAULT_IDLE,
            max_running,
            max_queued: 64 * max_running,
            max_per_client: max_running + 16,
            max_running_per_client: None,
            budget: Cost::machine(),
            caps: Caps::default(),
            sweep_interval: Duration::from_secs(30),
            health_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(10),
            retained_max_bytes: 256 * 1024 * 1024,
            allow_weak_daemon: false,
            run_uids: UidRange::DEFAULT,
            runtime: None,
            runtimes: BTreeMap::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("configuration: {0}")]
    Config(String),
}

/// A cheap-to-clone handle on the engine.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    docker: Docker,
    config: EngineConfig,
    owner: String,
    /// Makes every container of this engine, each as a uid of its own.
    maker: Maker,
    pools: BTreeMap<String, Pool>,
    /// The pools' sizing: ticked by the maintenance task so that idle pools shrink.
    demand: Arc<Demand>,
    /// Language id -> image and runtime, for the languages whose image exists.
    placements: BTreeMap<String, Placement>,
    queue: Arc<dyn RunQueue>,
    /// Cancelled by `shutdown`: no new runs; queued and running ones end as STOPPED.
    shutdown: CancellationToken,
    sessions: TaskTracker,
    /// Runs waiting or running per client.
    clients: Arc<Mutex<HashMap<String, usize>>>,
    /// Every run that may still be attached to: running ones, and ended ones for their detach
    /// grace period (a client that dropped comes back for the rest).
    runs: Mutex<HashMap<String, Arc<RunShared>>>,
    /// The ended runs among `runs`, oldest first, with what each holds.
    retained: Mutex<Retained>,
    /// Containers in use by a session right now (the sweeps leave them alone).
    active: Mutex<HashSet<String>>,
    daemon_up: AtomicBool,
    metrics: Metrics,
    maintenance: Mutex<Option<JoinHandle<()>>>,
    /// Proof of life for the sweeps of other supervisors on this daemon.
    _owner_lock: OwnerLock,
}

/// Whether an instance name is usable in labels and container names.
pub fn valid_instance(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

impl Engine {
    /// Connect, sweep what an earlier incarnation of this instance left, and start the pools
    /// and the maintenance task.
    pub async fn start(docker: Docker, config: EngineConfig) -> Result<Engine, EngineError> {
        if !valid_instance(&config.instance) {
            return Err(EngineError::Config(format!(
                "instance: {:?} must be 1 to 40 characters of [a-z0-9-]",
                config.instance
            )));
        }
        if config.max_running == 0 {
            return Err(EngineError::Config(
                "max_running: must be at least 1".into(),
            ));
        }
        for id in config
            .pool_sizes
            .keys()
            .chain(config.pool_ranges.keys())
            .chain(config.runtimes.keys())
        {
            if onpyrunner_languages::find(id).is_none() {
                return Err(EngineError::Config(format!(
                    "pool size or runtime for unknown language {id:?}"
                )));
            }
        }
        // Every live container holds a uid of its own: each running slot and each pooled
        // container needs one.
        let needed = config.max_running + config.pooled();
        if config.run_uids.len() < needed {
            return Err(EngineError::Config(format!(
                "run_uids (--run-uids): {} holds {} uids; {} running slots and {} pooled containers need {needed}",
                config.run_uids,
                config.run_uids.len(),
                config.max_running,
                config.pooled()
            )));
        }
        docker.ping().await?;
        // Every sandbox relies on these; a daemon that would silently not enforce one is
        // refused, with what is missing.
        let info = docker.info().await?;
        let missing = info.missing();
        if !missing.is_empty() {
            if config.allow_weak_daemon {
                tracing::warn!(?missing, "the Docker daemon would not enforce all of a sandbox's limits; running anyway as told");
            } else {
                return Err(EngineError::Config(format!(
                    "the Docker daemon would not enforce {}; fix the daemon (kernel cgroup options, seccomp), or pass --allow-weak-daemon to run anyway",
                    missing.join(", ")
                )));
            }
        }
        let owner = format!(
            "{}.{}-{}",
            config.instance,
            std::process::id(),
            run::random_hex(4)
        );
        // Held for the engine's life: neighbours on this daemon see that we live.
        let owner_lock = OwnerLock::acquire(&owner).map_err(|e| {
            EngineError::Config(format!(
                "cannot take the owner lock in {}: {e}",
                owner::lock_dir().display()
            ))
        })?;
        let prefix = format!("{}.", config.instance);
        let mut swept = 0;
        let mut neighbours = HashSet::new();
        let mut sharing_uids = 0;
        for c in list_managed(&docker).await? {
            if c.uid.is_some_and(|uid| config.run_uids.contains(uid)) && owner::is_alive(&c.owner) {
                sharing_uids += 1;
            }
            if !c.owner.starts_with(&prefix) {
                continue;
            }
            if owner::is_alive(&c.owner) {
                neighbours.insert(c.owner.clone());
                continue;
            }
            remove_logged(&docker, &c.id, "left by an earlier run of this instance").await;
            swept += 1;
        }
        if swept > 0 {
            tracing::info!(swept, instance = %config.instance, "start-up sweep removed leftovers");
        }
        if !neighbours.is_empty() {
            tracing::warn!(instance = %config.instance, others = ?neighbours, "another live supervisor uses this instance name on this daemon; its containers are left alone");
        }
        if sharing_uids > 0 {
            tracing::warn!(run_uids = %config.run_uids, containers = sharing_uids, "containers of another live supervisor on this daemon run as uids of this one's range; give each supervisor a --run-uids range of its own");
        }
        let maker = Maker {
            docker: docker.clone(),
            owner: owner.clone(),
            uids: Uids::new(config.run_uids),
        };

        let shutdown = CancellationToken::new();
        let mut placements = BTreeMap::new();
        for lang in onpyrunner_languages::languages() {
            let image = images::image_ref(lang);
            if docker.inspect_image(&image).await?.is_none() {
                tracing::warn!(language = %lang.id, %image, "image missing: language unavailable (build it with `onpyrunner images`)");
                continue;
            }
            let runtime = config.runtime_for(lang);
            if let Some(runtime) = &runtime {
                if !info.runtimes.contains_key(runtime) {
                    let mut known: Vec<&str> = info.runtimes.keys().map(String::as_str).collect();
                    known.sort_unstable();
                    return Err(EngineError::Config(format!(
                        "runtime {runtime:?} (of language {}) is not registered with the Docker daemon, which has: {}; register it under \"runtimes\" in /etc/docker/daemon.json and send dockerd SIGHUP (scripts/setup.sh does this for runsc), or choose another with --runtime",
                        lang.id,
                        known.join(", ")
                    )));
                }
            }
            placements.insert(lang.id.clone(), Placement { image, runtime });
        }
        // The pools start once every language's runtime is known to exist and their sizing
        // fits its budget: none is left filling when the engine refuses to start.
        let plans: Vec<PoolPlan> = placements
            .keys()
            .map(|id| onpyrunner_languages::find(id).expect("a language of the table"))
            .map(|lang| PoolPlan {
                language: lang.id.clone(),
                cost_mib: crate::limits::Limits::defaults(lang, &config.caps).memory_mib,
                range: config.pool_range(lang),
            })
            .filter(|plan| plan.range.ceiling > 0)
            .collect();
        let sizing = Sizing::new(
            config.pool_memory_mib,
            config.pool_idle,
            plans,
            Instant::now(),
        )
        .map_err(|e| EngineError::Config(e.to_string()))?;
        let demand = Demand::new(sizing);
        let mut pools = BTreeMap::new();
        for (id, placement) in &placements {
            let lang = onpyrunner_languages::find(id).expect("a language of the table");
            if demand.index(id).is_some() {
                let pool = Pool::start_in(
                    maker.clone(),
                    lang,
                    placement.clone(),
                    demand.clone(),
                    &config.caps,
                    shutdown.clone(),
                );
                pools.insert(id.clone(), pool);
            }
        }
        let queue: Arc<dyn RunQueue> = Arc::new(LocalQueue::with_budget(
            config.max_running,
            config.max_queued,
            config.budget,
        ));
        let inner = Arc::new(Inner {
            docker,
            config,
            owner,
            maker,
            pools,
            demand,
            placements,
            queue,
            shutdown,
            sessions: TaskTracker::new(),
            runs: Mutex::new(HashMap::new()),
            retained: Mutex::new(Retained::default()),
            clients: Arc::new(Mutex::new(HashMap::new())),
            active: Mutex::new(HashSet::new()),
            daemon_up: AtomicBool::new(true),
            metrics: Metrics::default(),
            maintenance: Mutex::new(None),
            _owner_lock: owner_lock,
        });
        inner.metrics.swept.fetch_add(swept, Ordering::Relaxed);
        let handle = tokio::spawn(maintain(inner.clone()));
        *inner.maintenance.lock().expect("engine lock") = Some(handle);
        Ok(Engine { inner })
    }

    /// The owner label value of every container this engine makes.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    pub fn config(&self) -> &EngineConfig {
        &self.inner.config
    }

    pub fn docker(&self) -> &Docker {
        &self.inner.docker
    }

    pub fn pools(&self) -> &BTreeMap<String, Pool> {
        &self.inner.pools
    }

    /// The pools' sizing (targets, budget).
    pub fn demand(&self) -> &Demand {
        &self.inner.demand
    }

    /// Whether this language's image is there, so runs of it can be accepted.
    pub fn available(&self, language: &str) -> bool {
        self.inner.placements.contains_key(language)
    }

    /// The uids this engine's containers run as.
    pub fn uids(&self) -> &Uids {
        &self.inner.maker.uids
    }

    pub fn queue(&self) -> &dyn RunQueue {
        self.inner.queue.as_ref()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Whether the daemon answered the last health check.
    pub fn daemon_up(&self) -> bool {
        self.inner.daemon_up.load(Ordering::Relaxed)
    }

    pub fn is_shutting_down(&self) -> bool {
        self.inner.shutdown.is_cancelled()
    }

    /// Accept a run: validated, then admitted or queued, or refused. Nothing is started when
    /// this returns an error. The session's events begin with `State(READY)`; dropping the
    /// session ends the run as `client_gone`.
    pub fn submit(&self, spec: RunSpec) -> Result<Session, SubmitError> {
        self.submit_with(spec, Detach::Kill)
    }

    /// [`submit`](Self::submit), with the rule for a run nobody is attached to.
    pub fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError> {
        let inner = &self.inner;
        if inner.shutdown.is_cancelled() {
            return Err(SubmitError::ShuttingDown);
        }
        run::check(&spec).map_err(SubmitError::Invalid)?;
        let Some(placement) = inner.placements.get(&spec.language.id).cloned() else {
            return Err(SubmitError::LanguageUnavailable {
                language: spec.language.id.clone(),
                image: images::image_ref(spec.language),
            });
        };
        if !self.daemon_up() {
            return Err(SubmitError::DaemonDown);
        }
        let client = match &spec.client {
            Some(client) => {
                let max = client.max_in_flight.unwrap_or(inner.config.max_per_client);
                Some(
                    ClientSlot::take(&inner.clients, &client.name, max).ok_or_else(|| {
                        inner.metrics.refused_busy.fetch_add(1, Ordering::Relaxed);
                        SubmitError::ClientBusy { max }
                    })?,
                )
            }
            None => None,
        };
        let request = Request {
            client: spec
                .client
                .as_ref()
                .map_or_else(String::new, |c| c.name.clone()),
            max_running: spec
                .client
                .as_ref()
                .and_then(|c| c.max_running.or(inner.config.max_running_per_client)),
            cost: Cost::of(&spec.limits),
        };
        let ticket = inner.queue.enqueue(&request).inspect_err(|_| {
            inner.metrics.refused_busy.fetch_add(1, Ordering::Relaxed);
        })?;
        inner.metrics.accepted.fetch_add(1, Ordering::Relaxed);
        // The id is what a client resumes with: 128 random bits, so it cannot be guessed.
        let id = run::random_hex(16);
        // The caller's session is attached before the task starts, so the run is not abandoned
        // before its caller has it.
        let (writer, session) = crate::session::open(id.clone(), detach);
        let RunWriter { run, stdin } = writer;
        inner
            .runs
            .lock()
            .expect("engine lock")
            .insert(id, run.clone());
        let task = SessionTask {
            inner: inner.clone(),
            run,
            spec,
            placement,
            stdin: Some(stdin),
            accepted: Instant::now(),
            state: RunState::Ready,
            _client: client,
        };
        inner.sessions.spawn(task.run(ticket));
        Ok(session)
    }

    /// Attach to a run again, following its log from `seq` (the position just after what the
    /// caller had). Works while the run goes on and for its detach grace period after it ended.
    pub fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError> {
        let run = self
            .inner
            .runs
            .lock()
            .expect("engine lock")
            .get(id)
            .cloned()
            .ok_or(ResumeError::NoSuchRun)?;
        let end = run.log.end();
        Session::attach(run, seq).ok_or(ResumeError::PastTheEnd { seq, end })
    }

    /// Stop admitting, end every session as STOPPED (reason `shutdown`), drain the pools and
    /// remove everything of this owner. Returns within about `shutdown_grace` plus the time the
    /// daemon takes to remove the containers.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.shutdown.cancel();
        inner.sessions.close();
        let pools = futures_util::future::join_all(inner.pools.values().map(Pool::drain));
        let sessions = tokio::time::timeout(inner.config.shutdown_grace, inner.sessions.wait());
        let (_, sessions) = tokio::join!(pools, sessions);
        if sessions.is_err() {
            tracing::warn!("sessions did not end within the shutdown grace period");
        }
        let maintenance = inner.maintenance.lock().expect("engine lock").take();
        if let Some(handle) = maintenance {
            let _ = handle.await;
        }
        // Anything left (a removal that failed, a container made as shutdown began).
        if let Ok(left) = list_managed(&inner.docker).await {
            for c in left.iter().filter(|c| c.owner == inner.owner) {
                remove_logged(&inner.docker, &c.id, "left at shutdown").await;
            }
        }
    }
}

impl crate::runner::Runner for Engine {
    fn submit_with(&self, spec: RunSpec, detach: Detach) -> Result<Session, SubmitError> {
        Engine::submit_with(self, spec, detach)
    }

    fn resume(&self, id: &str, seq: u64) -> Result<Session, ResumeError> {
        Engine::resume(self, id, seq)
    }

    fn caps(&self) -> &Caps {
        &self.inner.config.caps
    }

    fn available(&self, language: &str) -> bool {
        Engine::available(self, language)
    }

    fn status(&self) -> crate::runner::Status {
        let m = &self.inner.metrics;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        crate::runner::Status {
            docker_up: self.daemon_up(),
            redis_up: None,
            shutting_down: self.is_shutting_down(),
            pools: self
                .pools()
                .iter()
                .map(|(id, pool)| {
                    let s = pool.stats();
                    let range = pool.range();
                    crate::runner::PoolStatus {
                        language: id.clone(),
                        ready: pool.ready(),
                        size: pool.size(),
                        target: pool.target(),
                        floor: range.floor,
                        ceiling: range.ceiling,
                        shrunk: load(&s.shrunk),
                        hits: load(&s.hits),
                        misses: load(&s.misses),
                        created: load(&s.created),
                        failures: load(&s.failures),
                    }
                })
                .collect(),
            pool_memory_mib: self.inner.demand.charged_and_budget_mib(),
            ended: RunState::ALL
                .into_iter()
                .filter(|s| s.is_final())
                .map(|s| (s, m.ended(s)))
                .collect(),
            internal_errors: load(&m.internal_errors),
            accepted: load(&m.accepted),
            refused_busy: load(&m.refused_busy),
            queued: self.queue().queued(),
            running: self.queue().running(),
            swept: load(&m.swept),
            first_byte: m.first_byte.clone(),
            completion: m.completion.clone(),
        }
    }

    fn shutdown(&self) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        Box::pin(Engine::shutdown(self))
    }
}

/// One of our containers as the sweeps see it.
struct Managed {
    id: String,
    owner: String,
    state: String,
    created_unix: u64,
    uid: Option<u32>,
}

async fn list_managed(docker: &Docker) -> Result<Vec<Managed>, DockerError> {
    let list = docker
        .list_containers(&[format!("{LABEL_MANAGED}=1")])
        .await?;
    Ok(list
        .into_iter()
        .map(|c| Managed {
            owner: c.labels.get(LABEL_OWNER).cloned().unwrap_or_default(),
            created_unix: c
                .labels
                .get(LABEL_CREATED)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            uid: c.labels.get(LABEL_UID).and_then(|v| v.parse().ok()),
            id: c.id,
            state: c.state,
        })
        .collect())
}

async fn remove_logged(docker: &Docker, id: &str, why: &str) {
    match docker.remove_container(id).await {
        Ok(()) => tracing::info!(container_id = %id, why, "swept container"),
        Err(e) => {
            tracing::warn!(container_id = %id, why, error = %e, "sweeping a container failed")
        }
    }
}

/// Health checks every `health_interval`, sweeps every `sweep_interval`, until shutdown.
async fn maintain(inner: Arc<Inner>) {
    let mut health = tokio::time::interval(inner.config.health_interval);
    let mut sweep = tokio::time::interval(inner.config.sweep_interval);
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    sweep.tick().await; // the start-up sweep just ran
                        // Containers seen unknown (neither pooled nor running) and old at the last sweep: removed
                        // when seen so again, which closes the race with a claim in flight.
    let mut suspects: HashSet<String> = HashSet::new();
    loop {
        tokio::select! {
            _ = inner.shutdown.cancelled() => return,
            _ = health.tick() => {
                inner.demand.tick();
                let up = tokio::time::timeout(Duration::from_secs(3), inner.docker.ping())
                    .await
                    .is_ok_and(|r| r.is_ok());
                let was = inner.daemon_up.swap(up, Ordering::Relaxed);
                if was && !up {
                    tracing::error!("the Docker daemon stopped answering");
                } else if up && !was {
                    tracing::warn!("the Docker daemon answers again: flushing and refilling the pools");
                    for pool in inner.pools.values() {
                        pool.flush().await;
                    }
                    sweep_once(&inner, &mut suspects, true).await;
                }
            }
            _ = sweep.tick() => {
                if inner.daemon_up.load(Ordering::Relaxed) {
                    sweep_once(&inner, &mut suspects, false).await;
                }
            }
        }
    }
}

/// Remove this instance's containers that nothing uses: ones of another owner that is no longer
/// alive (an earlier incarnation), and ones neither pooled nor running that are older than `SWEEP_GRACE`, or
/// (`dead_too`, after a daemon restart) that have exited.
async fn sweep_once(inner: &Inner, suspects: &mut HashSet<String>, dead_too: bool) {
    // Containers whose removal failed hold their uid until they are gone.
    let uids = &inner.maker.uids;
    for id in uids.parked() {
        match inner.docker.remove_container(&id).await {
            Ok(()) => uids.removed(&id),
            Err(e) => {
                tracing::warn!(container_id = %id, error = %e, "a container holding a uid still cannot be removed")
            }
        }
    }
    let Ok(list) = list_managed(&inner.docker).await else {
        return;
    };
    let prefix = format!("{}.", inner.config.instance);
    let now = run::unix_now();
    let mut known: HashSet<String> = inner.active.lock().expect("engine lock").clone();
    for pool in inner.pools.values() {
        known.extend(pool.ready_ids());
    }
    let mut next_suspects = HashSet::new();
    for c in list.iter().filter(|c| c.owner.starts_with(&prefix)) {
        if known.contains(&c.id) {
            continue;
        }
        let why = if c.owner != inner.owner {
            // Another supervisor's: only once it is gone (a neighbour's live runs stay).
            (!owner::is_alive(&c.owner)).then_some("left by an earlier run of this instance")
        } else if dead_too && matches!(c.state.as_str(), "exited" | "dead") {
            Some("died with the daemon")
        } else if now.saturating_sub(c.created_unix) > SWEEP_GRACE.as_secs() {
            if suspects.contains(&c.id) {
                Some("unused and older than the sweep grace period")
            } else {
                next_suspects.insert(c.id.clone());
                None
            }
        } else {
            None
        };
        if let Some(why) = why {
            remove_logged(&inner.docker, &c.id, why).await;
            inner.metrics.swept.fetch_add(1, Ordering::Relaxed);
        }
    }
    *suspects = next_suspects;
}

/// One accepted run, from READY to its summary.
struct SessionTask {
    inner: Arc<Inner>,
    run: Arc<RunShared>,
    spec: RunSpec,
    placement: Placement,
    /// The program's stdin, handed to the run once it starts.
    stdin: Option<mpsc::Receiver<bytes::Bytes>>,
    accepted: Instant,
    state: RunState,
    /// The client's place among its runs in flight, given back when the task ends.
    _client: Option<ClientSlot>,
}

/// What an ended run costs to keep besides its output: its entries, events and map slots.
const RETAINED_RUN_BYTES: u64 = 4096;

/// The ended runs kept for their grace period, oldest first, and what they hold together.
#[derive(Default)]
struct Retained {
    runs: VecDeque<(String, u64)>,
    bytes: u64,
}

impl Retained {
    /// Keeps run `id`, holding `bytes`; returns the runs to forget so that all fit in `max`
    /// (the oldest, and never the one just kept).
    fn keep(&mut self, id: String, bytes: u64, max: u64) -> Vec<String> {
        let mut evicted = Vec::new();
        while self.bytes.saturating_add(bytes) > max {
            let Some((old, old_bytes)) = self.runs.pop_front() else {
                break;
            };
            self.bytes -= old_bytes;
            evicted.push(old);
        }
        self.runs.push_back((id, bytes));
        self.bytes += bytes;
        evicted
    }

    fn forget(&mut self, id: &str) {
        if let Some(at) = self.runs.iter().position(|(kept, _)| kept == id) {
            let (_, bytes) = self.runs.remove(at).expect("found");
            self.bytes -= bytes;
        }
    }
}

/// One of a client's runs in flight (waiting or running); dropped when the run is over.
struct ClientSlot {
    clients: Arc<Mutex<HashMap<String, usize>>>,
    name: String,
}

impl ClientSlot {
    /// A place for one more run of `name`, if it has fewer than `max`.
    fn take(clients: &Arc<Mutex<HashMap<String, usize>>>, name: &str, max: usize) -> Option<Self> {
        let mut table = clients.lock().expect("engine lock");
        let n = table.entry(name.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(ClientSlot {
            clients: clients.clone(),
            name: name.to_string(),
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut table = self.clients.lock().expect("engine lock");
        if let Some(n) = table.get_mut(&self.name) {
            *n -= 1;
            if *n == 0 {
                table.remove(&self.name);
            }
        }
    }
}

impl SessionTask {
    async fn run(mut self, ticket: Ticket) {
        self.emit_state(RunState::Ready);
        let stage = if self.spec.language.compile.is_empty() {
            Stage::Run
        } else {
            Stage::Compile
        };
        let admitted = tokio::select! {
            permit = self.admission(ticket) => Ok(permit),
            why = interrupted(&self.run, &self.inner.shutdown) => Err(why),
        };
        let queued_ms = self.accepted.elapsed().as_millis() as u64;
        let _permit = match admitted {
            Ok(permit) => permit,
            Err(why) => {
                let summary = Summary::new(why, Usage::new(stage));
                return self.finish(summary, queued_ms).await;
            }
        };
        // The sandbox is made in a task of its own: a Stop during the create call must not drop
        // the request, or the daemon makes a container nobody knows the id of.
        let mut making = self.inner.sessions.spawn(make_sandbox(
            self.inner.clone(),
            self.spec.clone(),
            self.placement.clone(),
        ));
        let sandbox = tokio::select! {
            made = &mut making => made.unwrap_or_else(|e| Err(RunError::Internal(format!("making the sandbox failed: {e}")))),
            why = interrupted(&self.run, &self.inner.shutdown) => {
                self.inner.sessions.spawn(async move {
                    if let Ok(Ok(sandbox)) = making.await {
                        if let Err(e) = sandbox.remove().await {
                            tracing::warn!(error = %e, "removing an unused sandbox failed (the sweep will retry)");
                        }
                    }
                });
                let summary = Summary::new(why, Usage::new(stage));
                return self.finish(summary, queued_ms).await;
            }
        };
        let sandbox = match sandbox {
            Ok(sandbox) => sandbox,
            Err(e) => {
                let summary =
                    Summary::internal(stage, internal_message(&e, Phase::Making, &self.run.id));
                return self.finish(summary, queued_ms).await;
            }
        };
        let container = sandbox.id().to_string();
        self.inner
            .active
            .lock()
            .expect("engine lock")
            .insert(container.clone());
        self.emit_state(RunState::Running);
        let (summary, leftover) = self.execute(sandbox).await;
        let summary = summary.unwrap_or_else(|e| {
            Summary::internal(stage, internal_message(&e, Phase::Running, &self.run.id))
        });
        let inner = self.inner.clone();
        let language = self.spec.language.id.clone();
        // The caller hears the end first; removing the container takes 50 to 100 ms more.
        self.finish(summary, queued_ms).await;
        if let Some(pool) = inner.pools.get(&language) {
            pool.refill_now();
        }
        if let Err(e) = leftover.remove().await {
            tracing::warn!(container_id = %container, error = %e, "removing a run's container failed (the sweep will retry)");
        }
        inner.active.lock().expect("engine lock").remove(&container);
    }

    /// Wait for a run slot, reporting the queue position as it changes.
    async fn admission(&self, mut ticket: Ticket) -> crate::scheduler::Permit {
        let mut positions = ticket.positions();
        if ticket.position() > 0 {
            self.emit(Event::Queued {
                position: ticket.position(),
            });
        }
        loop {
            tokio::select! {
                permit = &mut ticket => return permit,
                Ok(()) = positions.changed() => {
                    let position = *positions.borrow_and_update();
                    if position > 0 {
                        self.emit(Event::Queued { position });
                    }
                }
            }
        }
    }

    /// Run in the sandbox, writing output into the run's log at the pace of its slowest
    /// follower; a Stop, shutdown or abandoned run kills the program. The container comes back
    /// for removal after the summary is sent.
    async fn execute(&mut self, sandbox: Sandbox) -> (Result<Summary, RunError>, run::Leftover) {
        let stop = self.run.stop.clone();
        let (out_tx, mut out_rx) = mpsc::channel(EVENT_BUFFER);
        let controls = Controls {
            stdin: self.stdin.take().expect("a session runs once"),
            output: out_tx,
            stop: stop.clone(),
            signals: self.run.signals.clone(),
        };
        let docker = self.inner.docker.clone();
        let spec = self.spec.clone();
        let running = run::run_in_keep(&docker, sandbox, &spec, controls);
        let accepted = self.accepted;
        let metrics = &self.inner.metrics;
        let log = &self.run.log;
        let log_full = AtomicBool::new(false);
        let log_full = &log_full;
        let forwarding = async move {
            let mut first = true;
            while let Some(event) = out_rx.recv().await {
                if first {
                    metrics.first_byte.observe(accepted.elapsed());
                    first = false;
                }
                if let Err(LogFull) = log.push(event) {
                    log_full.store(true, Ordering::Relaxed);
                    stop.stop(Reason::OutputLimit);
                }
                if !stop.is_stopped() {
                    tokio::select! {
                        _ = log.room(FOLLOW_WINDOW) => {}
                        _ = stop.stopped() => {}
                    }
                }
            }
        };
        let both = async { tokio::join!(running, forwarding).0 };
        tokio::pin!(both);
        let (summary, leftover) = tokio::select! {
            ran = &mut both => ran,
            why = interrupted(&self.run, &self.inner.shutdown) => {
                self.run.stop.stop(why);
                both.await
            }
        };
        let summary = summary.map(|mut summary| {
            summary.output_truncated |= log_full.load(Ordering::Relaxed);
            summary
        });
        (summary, leftover)
    }

    async fn finish(mut self, mut summary: Summary, queued_ms: u64) {
        summary.queued_ms = queued_ms;
        let state = summary.state;
        if summary.reason == Reason::InternalError {
            // Say so when the cause is the daemon going away (a restart ends every container).
            // An internal error is rare; the caller waits the two seconds this takes at most.
            let answers = self.inner.docker.stays_up().await;
            if !answers {
                let error = summary.error.get_or_insert_with(|| "internal error".into());
                error.push_str(
                    "; the Docker daemon stopped answering (restarted or stopped), which ends every container",
                );
            }
            self.inner
                .metrics
                .internal_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(session = %self.run.id, error = ?summary.error, "run ended with an internal error");
        }
        self.inner.metrics.count_final(state);
        self.inner
            .metrics
            .completion
            .observe(self.accepted.elapsed());
        self.emit_state(state);
        self.emit(Event::Summary(summary));
        self.run.ended();
        // Resumable for its grace period after the end, then forgotten.
        let inner = self.inner.clone();
        let id = self.run.id.clone();
        match self.run.detach {
            Detach::Kill => {
                inner.runs.lock().expect("engine lock").remove(&id);
            }
            Detach::After(grace) => {
                let bytes = RETAINED_RUN_BYTES + self.run.log.output_bytes();
                let evicted = inner.retained.lock().expect("engine lock").keep(
                    id.clone(),
                    bytes,
                    inner.config.retained_max_bytes,
                );
                if !evicted.is_empty() {
                    tracing::debug!(
                        runs = evicted.len(),
                        "ended runs forgotten before their grace: retained budget full"
                    );
                    let mut runs = inner.runs.lock().expect("engine lock");
                    for id in &evicted {
                        runs.remove(id);
                    }
                }
                let shutdown = inner.shutdown.clone();
                let sessions = inner.sessions.clone();
                sessions.spawn(async move {
                    tokio::select! {
                        _ = tokio::time::sleep(grace) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    inner.runs.lock().expect("engine lock").remove(&id);
                    inner.retained.lock().expect("engine lock").forget(&id);
                });
            }
        }
    }

    fn emit_state(&mut self, to: RunState) {
        if to != RunState::Ready {
            match self.state.go(to) {
                Ok(state) => self.state = state,
                Err(e) => {
                    // A bug; the caller still hears the state it is given.
                    tracing::error!(session = %self.run.id, error = %e, "bad run state transition");
                }
            }
        }
        self.emit(Event::State {
            state: to,
            at_unix_ms: unix_ms(),
        });
    }

    /// Append an event to the run's log (only output can be refused; see `execute`).
    fn emit(&self, event: Event) {
        let _ = self.run.log.push(event);
    }
}

/// A paused container from the pool, or a fresh one on a miss (or when the run's limits differ
/// from the pool's).
async fn make_sandbox(
    inner: Arc<Inner>,
    spec: RunSpec,
    placement: Placement,
) -> Result<Sandbox, RunError> {
    if let Some(pool) = inner.pools.get(&spec.language.id) {
        if pool.fits(&spec.limits) {
            if let Some(sandbox) = pool.claim().await {
                return Ok(sandbox);
            }
        }
    }
    Sandbox::create(&inner.maker, spec.language, &spec.limits, &placement, false).await
}

/// Resolves when the run must end early, and says why: a Stop, the server's shutdown, or
/// nobody attached for the detach grace period.
async fn interrupted(run: &RunShared, shutdown: &tokio_util::sync::CancellationToken) -> Reason {
    tokio::select! {
        why = run.stop.stopped() => why,
        _ = shutdown.cancelled() => Reason::Shutdown,
        _ = run.abandoned() => Reason::ClientGone,
    }
}

/// Where a sandbox failed.
#[derive(Debug, Clone, Copy)]
enum Phase {
    Making,
    Running,
}

/// What a user is told of a sandbox that failed: what happened in their terms, never the
/// daemon's raw message or a container id (those go to the log, and the metrics count it).
fn internal_message(e: &RunError, phase: Phase, run: &str) -> String {
    tracing::warn!(run, ?phase, error = %e, "the sandbox failed");
    match (e, phase) {
        (RunError::Docker(DockerError::Unreachable { .. }), _) => {
            "internal error: lost the Docker daemon during the run; try again".into()
        }
        (_, Phase::Making) => "internal error: the sandbox could not be started; try again".into(),
        (_, Phase::Running) => {
            "internal error: the sandbox failed during the run; try again".into()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ended_runs_past_the_retained_budget_are_forgotten_oldest_first() {
        let mut retained = Retained::default();
        assert!(retained.keep("a".into(), 40, 100).is_empty());
        assert!(retained.keep("b".into(), 40, 100).is_empty());
        assert_eq!(retained.keep("c".into(), 40, 100), ["a"]);
        assert_eq!(retained.bytes, 80);
        retained.forget("b");
        retained.forget("b");
        assert_eq!(retained.bytes, 40);
        // One bigger than the whole budget is still kept, alone.
        assert_eq!(retained.keep("huge".into(), 500, 100), ["c"]);
        assert_eq!(retained.bytes, 500);
        assert!(retained.keep("d".into(), 1, 100) == ["huge"]);
    }

    #[test]
    fn users_are_told_what_failed_in_their_terms_without_daemon_details() {
        let daemon = RunError::Docker(DockerError::Stream {
            op: "create container",
            message: "No such container: 3f2a9c1e77".into(),
        });
        for phase in [Phase::Making, Phase::Running] {
            let message = internal_message(&daemon, phase, "r");
            assert!(
                message.starts_with("internal error: the sandbox"),
                "{message}"
            );
            assert!(
                !message.contains("3f2a9c1e77") && !message.contains("No such"),
                "{message}"
            );
        }
        let gone = RunError::Docker(DockerError::Unreachable {
            socket: "/var/run/docker.sock".into(),
            reason: "connection refused".into(),
        });
        let message = internal_message(&gone, Phase::Running, "r");
        assert!(message.contains("Docker daemon"), "{message}");
        assert!(!message.contains("refused"), "{message}");
    }

    #[test]
    fn instance_names_are_label_safe() {
        assert!(valid_instance("local"));
        assert!(valid_instance("node-2"));
        assert!(!valid_instance(""));
        assert!(
            !valid_instance("a.b"),
            "the dot separates instance and process"
        );
        assert!(!valid_instance("UPPER"));
        assert!(!valid_instance(&"x".repeat(41)));
    }
}

//! A pool of prewarmed containers per language: created with the language's default limits,
//! attached, started (the launcher blocks reading its frame from stdin; for a warm language,
//! only after its warm process is ready, see `Sandbox::wait_ready`) and paused. A claim
//! unpauses one (~13 ms) instead of creating and starting a container (~160 ms). Containers are
//! never reused: every claim takes one out and the pool refills in the background.
//!
//! The container at the head of the pool, the next to be claimed, is kept unpaused ("hot"): its
//! launcher waits blocked on stdin, which costs no CPU, and a claim of it skips the unpause
//! (about 15 ms, most of a CPython hello world's time to first byte). The pool heats its next
//! head when it refills, after the run that claimed the last one has had the CPU to itself.
//!
//! How many containers a pool keeps is its [`Demand`]'s to say ([`crate::pool_sizing`]): it
//! grows when claims miss and shrinks when idle, within one memory budget for an engine's
//! pools. A pool removes its ready containers beyond a lowered target (paused ones first, the
//! hot head last), and makes up to [`MAKERS`] containers at once when it is short of more than
//! one.
//!
//! A pooled container goes through these states; anything else is a bug reported as an error:
//!
//! ```text
//! Creating --start--> Starting --pause--> Paused --unpause--> Hot --claim--> Claimed (to a run)
//!                        \------(the head of an empty pool)-----^
//! Paused --claim (unpause)--> Claimed
//! Creating, Starting, Paused, Hot --fail/drain--> Removed
//! ```
use crate::limits::{Caps, Limits};
use crate::pool_sizing::{PoolPlan, SizeRange, Sizing};
use crate::run::{Maker, Placement, RunError, Sandbox};
use onpyrunner_languages::Language;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// States of a pooled container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PooledState {
    Creating,
    Starting,
    Paused,
    /// Unpaused ahead of its claim, the launcher blocked on stdin.
    Hot,
    Claimed,
    Removed,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pooled container cannot go from {from:?} to {to:?}")]
pub struct BadTransition {
    pub from: PooledState,
    pub to: PooledState,
}

impl PooledState {
    /// The allowed transitions, written down once.
    pub fn go(self, to: PooledState) -> Result<PooledState, BadTransition> {
        use PooledState::*;
        let allowed = matches!(
            (self, to),
            (Creating, Starting)
                | (Starting, Paused | Hot)
                | (Paused, Hot)
                | (Paused | Hot, Claimed)
                | (Creating | Starting | Paused | Hot, Removed)
        );
        if allowed {
            Ok(to)
        } else {
            Err(BadTransition { from: self, to })
        }
    }
}

/// A paused container ready for a run.
pub struct Warm {
    sandbox: Sandbox,
    state: PooledState,
}

impl Warm {
    pub fn id(&self) -> &str {
        self.sandbox.id()
    }
}

/// Counters of one pool, for metrics and tests.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub created: AtomicU64,
    pub failures: AtomicU64,
    /// Ready containers removed because the target went down (an idle pool shrinking).
    pub shrunk: AtomicU64,
}

/// The sizing of an engine's pools, shared by them: claims report to it, the engine's
/// maintenance ticks it, and a pool whose target moved is woken to make or remove containers.
pub struct Demand {
    sizing: Mutex<Sizing>,
    /// Each pool's wake-up, by its index in the sizing (registered when the pool starts).
    wakers: Mutex<Vec<Option<Arc<Notify>>>>,
}

impl Demand {
    pub fn new(sizing: Sizing) -> Arc<Demand> {
        let n = sizing.len();
        Arc::new(Demand {
            sizing: Mutex::new(sizing),
            wakers: Mutex::new(vec![None; n]),
        })
    }

    /// One pool of exactly `size` containers of `language`, outside any budget.
    pub fn fixed(language: &Language, size: usize) -> Arc<Demand> {
        let plan = PoolPlan {
            language: language.id.clone(),
            cost_mib: language.limits.memory_mib,
            range: SizeRange::pinned(size),
        };
        let sizing = Sizing::new(u64::MAX, Duration::MAX, vec![plan], Instant::now())
            .expect("no budget: floors always fit");
        Demand::new(sizing)
    }

    /// The index of `language`'s pool in the sizing.
    pub fn index(&self, language: &str) -> Option<usize> {
        let sizing = self.sizing.lock().expect("demand lock");
        (0..sizing.len()).find(|&i| sizing.plan(i).language == language)
    }

    pub fn target(&self, pool: usize) -> usize {
        self.sizing.lock().expect("demand lock").target(pool)
    }

    pub fn range(&self, pool: usize) -> SizeRange {
        self.sizing.lock().expect("demand lock").plan(pool).range
    }

    /// MiB charged for every pool's target, and the budget they stay within.
    pub fn charged_and_budget_mib(&self) -> (u64, u64) {
        let sizing = self.sizing.lock().expect("demand lock");
        (sizing.charged_mib(), sizing.budget_mib())
    }

    fn claimed(&self, pool: usize, hit: bool) {
        let changed = self
            .sizing
            .lock()
            .expect("demand lock")
            .claimed(pool, hit, Instant::now());
        self.wake(&changed);
    }

    /// Shrink the pools that have been idle long enough (the engine calls this every second).
    pub fn tick(&self) {
        let changed = self
            .sizing
            .lock()
            .expect("demand lock")
            .tick(Instant::now());
        self.wake(&changed);
    }

    fn wake(&self, pools: &[usize]) {
        if pools.is_empty() {
            return;
        }
        let wakers = self.wakers.lock().expect("demand lock");
        for &i in pools {
            if let Some(Some(wake)) = wakers.get(i) {
                wake.notify_one();
            }
        }
    }
}

/// What a pool holds: the containers ready for a claim (the head first) and how many are
/// being made, under one lock so that makers never overshoot the target together.
#[derive(Default)]
struct Stock {
    ready: VecDeque<Warm>,
    making: usize,
}

struct Inner {
    /// Every container the pool makes takes a uid of its own from `maker.uids` when it is
    /// created, and gives it back when it is removed, claimed or not.
    maker: Maker,
    language: &'static Language,
    placement: Placement,
    limits: Limits,
    demand: Arc<Demand>,
    /// This pool's index in `demand`.
    index: usize,
    stock: Mutex<Stock>,
    wake: Arc<Notify>,
    stats: PoolStats,
    /// The pool's own token: cancelled by `drain()` or by the parent token given to `start`.
    cancel: CancellationToken,
    /// The makers, awaited by `drain()` so that nothing they make outlives the pool.
    makers: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    fn target(&self) -> usize {
        self.demand.target(self.index)
    }
}

/// The pool of one language. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Start a pool of exactly `size` containers for `language`; it fills in the background
    /// until `drain()` is called or `cancel` is cancelled.
    pub fn start(
        maker: Maker,
        language: &'static Language,
        placement: Placement,
        size: usize,
        caps: &Caps,
        cancel: CancellationToken,
    ) -> Pool {
        let demand = Demand::fixed(language, size);
        Pool::start_in(maker, language, placement, demand, caps, cancel)
    }

    /// Start `language`'s pool of `demand` (which must have one): its size follows the
    /// sizing's target for it.
    pub fn start_in(
        maker: Maker,
        language: &'static Language,
        placement: Placement,
        demand: Arc<Demand>,
        caps: &Caps,
        cancel: CancellationToken,
    ) -> Pool {
        let index = demand
            .index(&language.id)
            .expect("the demand sizes a pool of this language");
        let wake = Arc::new(Notify::new());
        demand.wakers.lock().expect("demand lock")[index] = Some(wake.clone());
        let inner = Arc::new(Inner {
            maker,
            language,
            placement,
            limits: Limits::defaults(language, caps),
            demand,
            index,
            stock: Mutex::new(Stock::default()),
            wake,
            stats: PoolStats::default(),
            cancel: cancel.child_token(),
            makers: Mutex::new(Vec::new()),
        });
        // A pinned pool keeps one maker, as pools did before they followed demand: its size
        // never jumps, and one maker keeps the head hot and the rest paused without a race.
        let pinned = inner
            .demand
            .sizing
            .lock()
            .expect("demand lock")
            .plan(index)
            .range
            .is_pinned();
        let makers = if pinned { 1 } else { MAKERS };
        let handles = (0..makers).map(|_| tokio::spawn(refill(inner.clone())));
        inner.makers.lock().expect("pool lock").extend(handles);
        Pool { inner }
    }

    pub fn language(&self) -> &'static Language {
        self.inner.language
    }

    /// The containers the pool should hold now (ready or being made).
    pub fn target(&self) -> usize {
        self.inner.target()
    }

    /// The sizes the pool may take.
    pub fn range(&self) -> SizeRange {
        self.inner.demand.range(self.inner.index)
    }

    pub fn ready(&self) -> usize {
        self.inner.stock.lock().expect("pool lock").ready.len()
    }

    /// Ready containers plus those being made.
    pub fn size(&self) -> usize {
        let stock = self.inner.stock.lock().expect("pool lock");
        stock.ready.len() + stock.making
    }

    /// Ids of the paused containers waiting in the pool (the sweeps leave them alone).
    pub fn ready_ids(&self) -> Vec<String> {
        let stock = self.inner.stock.lock().expect("pool lock");
        stock.ready.iter().map(|w| w.id().to_string()).collect()
    }

    pub fn stats(&self) -> &PoolStats {
        &self.inner.stats
    }

    /// Whether a run with these limits can use a pooled container: the kernel-enforced limits
    /// were fixed at creation; the supervisor-enforced ones (wall time, output, stdin) are free.
    pub fn fits(&self, limits: &Limits) -> bool {
        let own = &self.inner.limits;
        own.memory_mib == limits.memory_mib
            && own.cpus == limits.cpus
            && own.pids == limits.pids
            && own.file_size_mib == limits.file_size_mib
            && own.tmpfs_mib == limits.tmpfs_mib
    }

    /// Take a paused container, unpause it and hand it over as a started sandbox. `None` when
    /// the pool is empty (counted as a miss); the caller then makes a fresh container.
    pub async fn claim(&self) -> Option<Sandbox> {
        loop {
            let warm = self
                .inner
                .stock
                .lock()
                .expect("pool lock")
                .ready
                .pop_front();
            let Some(mut warm) = warm else {
                self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
                // The pool was too small: it grows (which wakes it), and refills at once.
                self.inner.demand.claimed(self.inner.index, false);
                self.inner.wake.notify_one();
                return None;
            };
            // Refill once the run is under way (the engine calls `refill_now` when it ends):
            // making a container at once would compete with the run's start for the CPU.
            let inner = self.inner.clone();
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::time::sleep(REFILL_DELAY) => inner.wake.notify_one(),
                    _ = inner.cancel.cancelled() => {}
                }
            });
            let unpaused = match warm.state {
                PooledState::Hot => Ok(()),
                _ => self.inner.maker.docker.unpause_container(warm.id()).await,
            };
            match unpaused {
                Ok(()) => {
                    warm.state = warm
                        .state
                        .go(PooledState::Claimed)
                        .expect("paused or hot -> claimed");
                    self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                    self.inner.demand.claimed(self.inner.index, true);
                    return Some(warm.sandbox);
                }
                Err(e) => {
                    // Died while paused (daemon restart, sweep): drop it, try the next one.
                    tracing::warn!(container_id = %warm.id(), error = %e, "pooled container lost");
                    self.inner.stats.failures.fetch_add(1, Ordering::Relaxed);
                    remove(warm).await;
                }
            }
        }
    }

    /// Start refilling now (a claimed container's run has ended).
    pub fn refill_now(&self) {
        self.inner.wake.notify_one();
    }

    /// Remove every ready container and let the refiller make new ones: after the daemon came
    /// back from a restart, the paused containers it had are dead.
    pub async fn flush(&self) {
        self.remove_ready().await;
        self.inner.wake.notify_one();
    }

    /// Stop refilling, wait for the makers (each finishes or removes what it is making), and
    /// remove every ready container. Nothing of the pool exists on the daemon afterwards.
    pub async fn drain(&self) {
        self.inner.cancel.cancel();
        let makers = std::mem::take(&mut *self.inner.makers.lock().expect("pool lock"));
        for maker in makers {
            if let Err(e) = maker.await {
                tracing::error!(language = %self.inner.language.id, error = %e, "pool refiller failed");
            }
        }
        self.remove_ready().await;
    }

    async fn remove_ready(&self) {
        let all: Vec<Warm> = self
            .inner
            .stock
            .lock()
            .expect("pool lock")
            .ready
            .drain(..)
            .collect();
        for warm in all {
            remove(warm).await;
        }
    }
}

/// Remove a pooled container that will never be claimed.
async fn remove(mut warm: Warm) {
    warm.state = warm
        .state
        .go(PooledState::Removed)
        .expect("paused or hot -> removed");
    let id = warm.id().to_string();
    if let Err(e) = warm.sandbox.remove().await {
        tracing::warn!(container_id = %id, error = %e, "removing a pooled container failed");
    }
}

/// One of a pool's [`MAKERS`]: keep the target's worth of containers ready or being made,
/// remove ready ones beyond it; back off while the daemon fails. A container being made is
/// never abandoned half-way (that is how containers leaked): cancellation is checked between
/// containers, and one finished after cancellation is removed at once.
async fn refill(inner: Arc<Inner>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        heat_head(&inner).await;
        trim(&inner).await;
        let Some(hot) = reserve(&inner) else {
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.cancel.cancelled() => break,
            }
        };
        let made = match tokio::time::timeout(MAKE_TIMEOUT, make_one(&inner, hot)).await {
            Ok(made) => made,
            // A daemon that hangs: whatever was made is removed by its guard, or by the sweep.
            Err(_) => Err(RunError::TooSlow {
                what: "making a pooled container",
                after: MAKE_TIMEOUT,
            }),
        };
        let cancelled = inner.cancel.is_cancelled();
        // Into the pool under the same lock that counted it as being made; what is not kept
        // is handled after the lock is released.
        let left = {
            let mut stock = inner.stock.lock().expect("pool lock");
            stock.making -= 1;
            match made {
                Ok(warm) if !cancelled => {
                    stock.ready.push_back(warm);
                    None
                }
                other => Some(other),
            }
        };
        match left {
            None => {
                backoff = MIN_BACKOFF;
                inner.stats.created.fetch_add(1, Ordering::Relaxed);
            }
            Some(Ok(warm)) => {
                remove(warm).await;
                break;
            }
            Some(Err(e)) => {
                inner.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(language = %inner.language.id, error = %e, ?backoff, "pool refill failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    // flush() after a daemon restart: try again at once.
                    _ = inner.wake.notified() => backoff = MIN_BACKOFF,
                    _ = inner.cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Take a place to make one more container, if the pool holds fewer than its target; says
/// whether it is to be the head of an empty pool (hot at once: never paused and unpaused, two
/// daemon calls saved, which counts when runs drain the pool as fast as it fills). Wakes the
/// other maker when the pool is short of more than this one.
fn reserve(inner: &Inner) -> Option<bool> {
    let target = inner.target();
    let mut stock = inner.stock.lock().expect("pool lock");
    let have = stock.ready.len() + stock.making;
    if have >= target {
        return None;
    }
    let hot = have == 0;
    stock.making += 1;
    drop(stock);
    if have + 1 < target {
        inner.wake.notify_one();
    }
    Some(hot)
}

/// Remove the ready containers beyond the target (the target went down): the last made
/// first, so the hot head goes last.
async fn trim(inner: &Inner) {
    loop {
        let target = inner.target();
        let extra = {
            let mut stock = inner.stock.lock().expect("pool lock");
            if stock.ready.len() + stock.making > target {
                stock.ready.pop_back()
            } else {
                None
            }
        };
        let Some(warm) = extra else { return };
        inner.stats.shrunk.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(language = %inner.language.id, container_id = %warm.id(), target, "pool shrinks");
        remove(warm).await;
    }
}

/// Containers a pool that follows demand may be making at once (a pinned pool makes one at a
/// time): a burst that grew the pool by several is refilled two at a time (a warm JVM takes about 1.7 s to make), more would only share the
/// same cores.
pub const MAKERS: usize = 2;

/// How long after a claim the refill starts, unless the run ends sooner.
pub const REFILL_DELAY: Duration = Duration::from_millis(300);
/// Unpause the container at the head of the pool, unless the head is hot already. A claim that
/// comes meanwhile takes the next one (and unpauses it itself).
async fn heat_head(inner: &Inner) {
    let head = {
        let mut stock = inner.stock.lock().expect("pool lock");
        match stock.ready.front() {
            Some(w) if w.state == PooledState::Paused => stock.ready.pop_front(),
            _ => None,
        }
    };
    let Some(mut warm) = head else { return };
    match inner.maker.docker.unpause_container(warm.id()).await {
        Ok(()) => {
            warm.state = warm.state.go(PooledState::Hot).expect("paused -> hot");
            inner
                .stock
                .lock()
                .expect("pool lock")
                .ready
                .push_front(warm);
        }
        Err(e) => {
            tracing::warn!(container_id = %warm.id(), error = %e, "pooled container lost");
            inner.stats.failures.fetch_add(1, Ordering::Relaxed);
            remove(warm).await;
        }
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Longest one container may take to be created, started and paused.
const MAKE_TIMEOUT: Duration = Duration::from_secs(120);

/// Create, start and pause one container. On failure whatever was created is removed before
/// returning, not left to a drop that may run on a runtime going away.
async fn make_one(inner: &Inner, hot: bool) -> Result<Warm, RunError> {
    let state = PooledState::Creating;
    let mut sandbox = Sandbox::create(
        &inner.maker,
        inner.language,
        &inner.limits,
        &inner.placement,
        true,
    )
    .await?;
    let state = state
        .go(PooledState::Starting)
        .expect("creating -> starting");
    let started = async {
        let docker = &inner.maker.docker;
        sandbox.start(docker).await?;
        // A warm language's container is paused only once its warm process is ready: paused
        // earlier, the warm-up would be frozen and the run would pay for it.
        sandbox
            .wait_ready(docker, crate::run::WARM_READY_TIMEOUT)
            .await?;
        if !hot {
            docker.pause_container(sandbox.id()).await?;
        }
        Ok::<(), RunError>(())
    }
    .await;
    if let Err(e) = started {
        let _ = sandbox.remove().await;
        return Err(e);
    }
    let state = if hot {
        state.go(PooledState::Hot).expect("starting -> hot")
    } else {
        state.go(PooledState::Paused).expect("starting -> paused")
    };
    Ok(Warm { sandbox, state })
}

#[cfg(test)]
mod tests {
    use super::PooledState::*;

    #[test]
    fn only_written_down_transitions_are_allowed() {
        assert_eq!(Creating.go(Starting), Ok(Starting));
        assert_eq!(Starting.go(Paused), Ok(Paused));
        assert_eq!(Paused.go(Claimed), Ok(Claimed));
        assert_eq!(Paused.go(Hot), Ok(Hot));
        assert_eq!(
            Starting.go(Hot),
            Ok(Hot),
            "made as the head of an empty pool"
        );
        assert_eq!(Hot.go(Claimed), Ok(Claimed));
        assert!(
            Hot.go(Paused).is_err(),
            "a hot container is claimed or removed"
        );
        assert_eq!(Paused.go(Removed), Ok(Removed));
        assert!(
            Claimed.go(Paused).is_err(),
            "a claimed container is never reused"
        );
        assert!(Creating.go(Claimed).is_err());
        assert!(Removed.go(Starting).is_err());
        let err = Claimed.go(Paused).unwrap_err();
        assert!(err.to_string().contains("Claimed"));
    }
}

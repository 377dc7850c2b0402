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
//! A pooled container goes through these states; anything else is a bug reported as an error:
//!
//! ```text
//! Creating --start--> Starting --pause--> Paused --unpause--> Hot --claim--> Claimed (to a run)
//!                        \------(the head of an empty pool)-----^
//! Paused --claim (unpause)--> Claimed
//! Creating, Starting, Paused, Hot --fail/drain--> Removed
//! ```
use crate::limits::{Caps, Limits};
use crate::run::{Maker, Placement, RunError, Sandbox};
use onpyrunner_languages::Language;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
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
}

struct Inner {
    /// Every container the pool makes takes a uid of its own from `maker.uids` when it is
    /// created, and gives it back when it is removed, claimed or not.
    maker: Maker,
    language: &'static Language,
    placement: Placement,
    limits: Limits,
    target: usize,
    ready: Mutex<VecDeque<Warm>>,
    /// Containers being made right now (counted so the refiller does not overshoot).
    making: AtomicUsize,
    wake: Notify,
    stats: PoolStats,
    /// The pool's own token: cancelled by `drain()` or by the parent token given to `start`.
    cancel: CancellationToken,
    /// The refiller, awaited by `drain()` so that nothing it makes outlives the pool.
    refiller: Mutex<Option<JoinHandle<()>>>,
}

/// The pool of one language. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Start a pool of `size` containers for `language`; it fills in the background until
    /// `drain()` is called or `cancel` is cancelled.
    pub fn start(
        maker: Maker,
        language: &'static Language,
        placement: Placement,
        size: usize,
        caps: &Caps,
        cancel: CancellationToken,
    ) -> Pool {
        let inner = Arc::new(Inner {
            maker,
            language,
            placement,
            limits: Limits::defaults(language, caps),
            target: size,
            ready: Mutex::new(VecDeque::new()),
            making: AtomicUsize::new(0),
            wake: Notify::new(),
            stats: PoolStats::default(),
            cancel: cancel.child_token(),
            refiller: Mutex::new(None),
        });
        let handle = tokio::spawn(refill(inner.clone()));
        *inner.refiller.lock().expect("pool lock") = Some(handle);
        Pool { inner }
    }

    pub fn language(&self) -> &'static Language {
        self.inner.language
    }

    pub fn target(&self) -> usize {
        self.inner.target
    }

    pub fn ready(&self) -> usize {
        self.inner.ready.lock().expect("pool lock").len()
    }

    /// Ids of the paused containers waiting in the pool (the sweeps leave them alone).
    pub fn ready_ids(&self) -> Vec<String> {
        let ready = self.inner.ready.lock().expect("pool lock");
        ready.iter().map(|w| w.id().to_string()).collect()
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
            let warm = self.inner.ready.lock().expect("pool lock").pop_front();
            let Some(mut warm) = warm else {
                self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
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

    /// Stop refilling, wait for the refiller (it finishes or removes what it is making), and
    /// remove every ready container. Nothing of the pool exists on the daemon afterwards.
    pub async fn drain(&self) {
        self.inner.cancel.cancel();
        let refiller = self.inner.refiller.lock().expect("pool lock").take();
        if let Some(refiller) = refiller {
            if let Err(e) = refiller.await {
                tracing::error!(language = %self.inner.language.id, error = %e, "pool refiller failed");
            }
        }
        self.remove_ready().await;
    }

    async fn remove_ready(&self) {
        let all: Vec<Warm> = self
            .inner
            .ready
            .lock()
            .expect("pool lock")
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

/// Keep `target` containers ready; back off while the daemon fails. A container being made is
/// never abandoned half-way (that is how containers leaked): cancellation is checked between
/// containers, and one finished after cancellation is removed at once.
async fn refill(inner: Arc<Inner>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        if !inner.cancel.is_cancelled() {
            heat_head(&inner).await;
        }
        let have =
            inner.ready.lock().expect("pool lock").len() + inner.making.load(Ordering::Relaxed);
        if have >= inner.target {
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.cancel.cancelled() => break,
            }
        }
        if inner.cancel.is_cancelled() {
            break;
        }
        // Into an empty pool the new container goes as its head: hot at once, never paused and
        // unpaused (two daemon calls saved, which counts when runs drain the pool as fast as
        // it fills).
        let hot = inner.ready.lock().expect("pool lock").is_empty();
        inner.making.fetch_add(1, Ordering::Relaxed);
        let made = match tokio::time::timeout(MAKE_TIMEOUT, make_one(&inner, hot)).await {
            Ok(made) => made,
            // A daemon that hangs: whatever was made is removed by its guard, or by the sweep.
            Err(_) => Err(RunError::TooSlow {
                what: "making a pooled container",
                after: MAKE_TIMEOUT,
            }),
        };
        inner.making.fetch_sub(1, Ordering::Relaxed);
        match made {
            Ok(warm) if inner.cancel.is_cancelled() => {
                remove(warm).await;
                break;
            }
            Ok(warm) => {
                backoff = MIN_BACKOFF;
                inner.stats.created.fetch_add(1, Ordering::Relaxed);
                inner.ready.lock().expect("pool lock").push_back(warm);
            }
            Err(e) => {
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

/// How long after a claim the refill starts, unless the run ends sooner.
pub const REFILL_DELAY: Duration = Duration::from_millis(300);
/// Unpause the container at the head of the pool, unless the head is hot already. A claim that
/// comes meanwhile takes the next one (and unpauses it itself).
async fn heat_head(inner: &Inner) {
    let head = {
        let mut ready = inner.ready.lock().expect("pool lock");
        match ready.front() {
            Some(w) if w.state == PooledState::Paused => ready.pop_front(),
            _ => None,
        }
    };
    let Some(mut warm) = head else { return };
    match inner.maker.docker.unpause_container(warm.id()).await {
        Ok(()) => {
            warm.state = warm.state.go(PooledState::Hot).expect("paused -> hot");
            inner.ready.lock().expect("pool lock").push_front(warm);
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

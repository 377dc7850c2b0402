//! A pool of prewarmed containers per language: created with the language's default limits,
//! attached, started (the launcher blocks reading its frame from stdin; for a warm language,
//! only after its warm process is ready, see `Sandbox::wait_ready`) and paused. A claim
//! unpauses one (~13 ms) instead of creating and starting a container (~160 ms). Containers are
//! never reused: every claim takes one out and the pool refills in the background.
//!
//! A pooled container goes through these states; anything else is a bug reported as an error:
//!
//! ```text
//! Creating --start--> Starting --pause--> Paused --claim--> Claimed (handed to a run)
//!     \________________\__________________\--fail/drain--> Removed
//! ```
use crate::docker::Docker;
use crate::limits::{Caps, Limits};
use crate::run::{RunError, Sandbox};
use onpyrunner_images::Language;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// States of a pooled container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarmState {
    Creating,
    Starting,
    Paused,
    Claimed,
    Removed,
}

/// A transition the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pooled container cannot go from {from:?} to {to:?}")]
pub struct BadTransition {
    pub from: WarmState,
    pub to: WarmState,
}

impl WarmState {
    /// The allowed transitions, written down once.
    pub fn go(self, to: WarmState) -> Result<WarmState, BadTransition> {
        use WarmState::*;
        let allowed = matches!(
            (self, to),
            (Creating, Starting)
                | (Starting, Paused)
                | (Paused, Claimed)
                | (Creating | Starting | Paused, Removed)
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
    state: WarmState,
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
    docker: Docker,
    language: &'static Language,
    image: String,
    owner: String,
    limits: Limits,
    target: usize,
    ready: Mutex<VecDeque<Warm>>,
    /// Containers being made right now (counted so the refiller does not overshoot).
    making: AtomicUsize,
    wake: Notify,
    stats: PoolStats,
    cancel: CancellationToken,
}

/// The pool of one language. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
}

impl Pool {
    /// Start a pool of `size` containers for `language`; it fills in the background.
    pub fn start(
        docker: Docker,
        language: &'static Language,
        image: String,
        owner: String,
        size: usize,
        caps: &Caps,
        cancel: CancellationToken,
    ) -> Pool {
        let inner = Arc::new(Inner {
            docker,
            language,
            image,
            owner,
            limits: Limits::defaults(language, caps),
            target: size,
            ready: Mutex::new(VecDeque::new()),
            making: AtomicUsize::new(0),
            wake: Notify::new(),
            stats: PoolStats::default(),
            cancel,
        });
        tokio::spawn(refill(inner.clone()));
        Pool { inner }
    }

    pub fn language(&self) -> &'static Language {
        self.inner.language
    }

    /// The limits every pooled container was created with; a run with other kernel-enforced
    /// limits needs a fresh container.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn target(&self) -> usize {
        self.inner.target
    }

    pub fn ready(&self) -> usize {
        self.inner.ready.lock().expect("pool lock").len()
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
            self.inner.wake.notify_one();
            let Some(mut warm) = warm else {
                self.inner.stats.misses.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            match self.inner.docker.unpause_container(warm.id()).await {
                Ok(()) => {
                    warm.state = warm
                        .state
                        .go(WarmState::Claimed)
                        .expect("paused -> claimed");
                    self.inner.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Some(warm.sandbox);
                }
                Err(e) => {
                    // Died while paused (daemon restart, sweep): drop it, try the next one.
                    tracing::warn!(container_id = %warm.id(), error = %e, "pooled container lost");
                    self.inner.stats.failures.fetch_add(1, Ordering::Relaxed);
                    let _ = warm.sandbox.remove().await;
                }
            }
        }
    }

    /// Remove every ready container (shutdown). The refiller stops when the token is cancelled.
    pub async fn drain(&self) {
        let all: Vec<Warm> = self
            .inner
            .ready
            .lock()
            .expect("pool lock")
            .drain(..)
            .collect();
        for mut warm in all {
            warm.state = warm
                .state
                .go(WarmState::Removed)
                .expect("paused -> removed");
            let _ = warm.sandbox.remove().await;
        }
    }
}

/// Keep `target` containers ready; back off while the daemon fails.
async fn refill(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(200);
    loop {
        if inner.cancel.is_cancelled() {
            break;
        }
        let have =
            inner.ready.lock().expect("pool lock").len() + inner.making.load(Ordering::Relaxed);
        if have >= inner.target {
            tokio::select! {
                _ = inner.wake.notified() => continue,
                _ = inner.cancel.cancelled() => break,
            }
        }
        inner.making.fetch_add(1, Ordering::Relaxed);
        let made = tokio::select! {
            made = make_one(&inner) => made,
            _ = inner.cancel.cancelled() => { inner.making.fetch_sub(1, Ordering::Relaxed); break }
        };
        inner.making.fetch_sub(1, Ordering::Relaxed);
        match made {
            Ok(warm) => {
                backoff = Duration::from_millis(200);
                inner.stats.created.fetch_add(1, Ordering::Relaxed);
                inner.ready.lock().expect("pool lock").push_back(warm);
            }
            Err(e) => {
                inner.stats.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(language = %inner.language.id, error = %e, ?backoff, "pool refill failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = inner.cancel.cancelled() => break,
                }
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
    // Shutting down: whatever is still ready goes.
    let all: Vec<Warm> = inner.ready.lock().expect("pool lock").drain(..).collect();
    for warm in all {
        let _ = warm.sandbox.remove().await;
    }
}

async fn make_one(inner: &Inner) -> Result<Warm, RunError> {
    let state = WarmState::Creating;
    let mut sandbox = Sandbox::create(
        &inner.docker,
        &inner.image,
        &inner.owner,
        inner.language,
        &inner.limits,
    )
    .await?;
    let state = state.go(WarmState::Starting).expect("creating -> starting");
    sandbox.start(&inner.docker).await?;
    // A warm language's container is paused only once its warm process is ready: paused
    // earlier, the warm-up would be frozen and the run would pay for it.
    sandbox.wait_ready(crate::run::WARM_READY_TIMEOUT).await?;
    inner.docker.pause_container(sandbox.id()).await?;
    let state = state.go(WarmState::Paused).expect("starting -> paused");
    Ok(Warm { sandbox, state })
}

#[cfg(test)]
mod tests {
    use super::WarmState::*;

    #[test]
    fn only_written_down_transitions_are_allowed() {
        assert_eq!(Creating.go(Starting), Ok(Starting));
        assert_eq!(Starting.go(Paused), Ok(Paused));
        assert_eq!(Paused.go(Claimed), Ok(Claimed));
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

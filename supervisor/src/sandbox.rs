//! The live handle on one run's container: created with its limits and labels (the shape is
//! [`container`](crate::container)'s) as a uid of its own, attached before it starts so no
//! output is missed, maybe started and paused by the pool, and removed on every path (a guard
//! removes it if the handle is dropped, and gives its uid back only once it is removed).
use crate::container::{self, Labels};
use crate::docker::{AttachIo, Docker, DockerError};
use crate::error::RunError;
use crate::ids::{random_hex, unix_now};
use crate::limits::Limits;
use crate::uids::{UidLease, Uids};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use onpyrunner_languages::Language;
use onpyrunner_protocol::warm::find_ready_marker;
use onpyrunner_protocol::{AttachChunk, AttachDecoder, AttachError, AttachMode, StreamKind};
use std::time::Duration;
use tokio_util::codec::FramedRead;

/// Most stdout bytes read while looking for the readiness marker; only JVM noise comes before it.
const MAX_BEFORE_READY: usize = 64 * 1024;

/// Bytes read from the attach stream at a time.
const READ_BUFFER: usize = 64 * 1024;

/// A read buffer holding `rest` with room for a full read. `BytesMut` grows a shared buffer only
/// to the capacity it was first made with: from an empty one, every read would take 8 bytes.
pub(crate) fn with_room(rest: BytesMut) -> BytesMut {
    let mut buffer = BytesMut::with_capacity(READ_BUFFER.max(rest.len()));
    buffer.extend_from_slice(&rest);
    buffer
}

/// What every sandbox of one supervisor is made with: the daemon, the owner label, and the uids
/// its containers take. Cheap to clone.
#[derive(Clone)]
pub struct Maker {
    pub docker: Docker,
    pub owner: String,
    pub uids: Uids,
}

/// What a language's sandboxes are made from: its image, and the OCI runtime they run under
/// (`None`: the daemon's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub image: String,
    pub runtime: Option<String>,
}

/// Removes the container when dropped unless `remove()` was called: the run future may be
/// cancelled at any await, and the container must go on every path. Holds the container's uid
/// until the container is removed; when removal fails the uid is parked under the container's
/// id (the engine's sweep frees it once the container is gone).
pub(crate) struct ContainerGuard {
    docker: Docker,
    id: Option<String>,
    uid: Option<UidLease>,
}

impl ContainerGuard {
    pub(crate) async fn remove(mut self) -> Result<(), DockerError> {
        match self.id.take() {
            Some(id) => {
                let removed = self.docker.remove_container(&id).await;
                release(self.uid.take(), &id, removed.is_ok());
                removed
            }
            None => Ok(()),
        }
    }
}

/// Give a removed container's uid back, or park it while the container may still exist.
fn release(uid: Option<UidLease>, container_id: &str, removed: bool) {
    match uid {
        Some(uid) if !removed => uid.park(container_id),
        _ => {}
    }
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let docker = self.docker.clone();
            let uid = self.uid.take();
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(async move {
                        let removed = docker.remove_container(&id).await;
                        if let Err(e) = &removed {
                            tracing::warn!(container_id = %id, error = %e, "removing abandoned container failed");
                        }
                        release(uid, &id, removed.is_ok());
                    });
                }
                Err(_) => release(uid, &id, false),
            }
        }
    }
}

/// A container made for one run: created with its limits and labels, already attached (so no
/// output can be missed), and possibly started (a pooled container is started and paused).
pub struct Sandbox {
    pub(crate) id: String,
    pub(crate) io: AttachIo,
    pub(crate) started: bool,
    /// A warm language whose readiness marker was not read yet (see `wait_ready`).
    pub(crate) awaiting_ready: bool,
    /// Where reading the attach stream stopped, for the run to go on from there.
    pub(crate) resume: Resume,
    /// CPU the container had used when it got ready (a warm JVM's warm-up), in ns: not the
    /// run's, when its CPU time has to be read from the cgroup.
    pub(crate) cpu_before_ns: u64,
    /// The container ending by a SIGKILL we did not send means the memory limit, whatever
    /// Docker's OOMKilled says. Under gVisor the OOM killer picks the Sentry itself (the
    /// whole sandbox ends with 137, no status), and Docker's flag races with the exit: it was
    /// false for 3 of 6 such kills here, each with the kernel's memcg OOM in the log. (A kill
    /// from outside, `docker kill` or a daemon restart, reads the same.)
    pub(crate) sigkill_means_oom: bool,
    pub(crate) guard: ContainerGuard,
}

/// The attach decoder's state after `wait_ready`: it may be inside a frame, have bytes
/// buffered, or have decoded output past the marker. None of it may be lost.
pub(crate) struct Resume {
    pub(crate) decoder: AttachDecoder,
    pub(crate) read_buf: BytesMut,
    pub(crate) pending: Vec<AttachChunk>,
}

impl Sandbox {
    /// Create and attach a container for `language` with `limits`, as a uid of its own; not
    /// started yet. No free uid is an error ([`RunError::NoUid`]). `pooled`: for the pool,
    /// which decides what the launcher starts early ([`container::launcher_args`]).
    pub async fn create(
        maker: &Maker,
        language: &Language,
        limits: &Limits,
        placement: &Placement,
        pooled: bool,
    ) -> Result<Sandbox, RunError> {
        let uid = maker.uids.take()?;
        let docker = &maker.docker;
        let run_id = random_hex(8);
        let labels = Labels {
            owner: maker.owner.clone(),
            language: language.id.clone(),
            run: run_id.clone(),
            created_unix: unix_now(),
        };
        let launcher_args = container::launcher_args(language, pooled);
        let config = container::container_config(
            &placement.image,
            limits,
            &labels,
            &launcher_args,
            &language.env,
            uid.uid(),
            placement.runtime.as_deref(),
        );
        let name = format!("onpyrunner-{}-{run_id}", language.id);
        // A failed create made no container (one made with warnings is removed before the
        // error comes back), so the uid goes back with the lease.
        let id = match docker.create_container(Some(&name), &config).await {
            Ok(id) => id,
            Err(e) if e.is_not_found() => {
                return Err(RunError::ImageMissing {
                    language: language.id.clone(),
                    image: placement.image.clone(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let guard = ContainerGuard {
            docker: docker.clone(),
            id: Some(id.clone()),
            uid: Some(uid),
        };
        // Attach before start: the attach survives a later pause, and a paused container
        // refuses new attaches (409).
        let io = docker.attach_container(&id).await?;
        Ok(Sandbox {
            id,
            io,
            started: false,
            awaiting_ready: !launcher_args.is_empty(),
            resume: Resume {
                decoder: AttachDecoder::new(AttachMode::Multiplexed),
                read_buf: BytesMut::new(),
                pending: Vec::new(),
            },
            cpu_before_ns: 0,
            sigkill_means_oom: placement
                .runtime
                .as_deref()
                .is_some_and(container::is_gvisor),
            guard,
        })
    }

    /// For a warm language, read the attach stream up to the launcher's readiness marker: the
    /// warm process is then warmed up and blocked (so a pause freezes no warm-up work), and the
    /// marker never reaches the user. Output after the marker is kept for the run. Anything
    /// before it is warm-up noise, logged and dropped. Does nothing for other languages or a
    /// second time. The container must be started.
    pub async fn wait_ready(&mut self, docker: &Docker, timeout: Duration) -> Result<(), RunError> {
        if !self.awaiting_ready {
            return Ok(());
        }
        let not_ready = |reason: String| RunError::NotReady {
            container_id: self.id.clone(),
            reason,
        };
        let decoder = std::mem::replace(
            &mut self.resume.decoder,
            AttachDecoder::new(AttachMode::Multiplexed),
        );
        let mut frames = FramedRead::new(&mut self.io, decoder);
        *frames.read_buffer_mut() = with_room(std::mem::take(&mut self.resume.read_buf));
        let mut stdout = Vec::new();
        let reading = async {
            loop {
                let chunk = match frames.next().await {
                    Some(Ok(chunk)) => chunk,
                    Some(Err(e)) => return Err(RunError::Attach(e)),
                    None => return Err(not_ready("the container ended first".into())),
                };
                match chunk.stream {
                    StreamKind::Stdout => {
                        stdout.extend_from_slice(&chunk.data);
                        if let Some(end) = find_ready_marker(&stdout) {
                            return Ok(stdout.split_off(end));
                        }
                        if stdout.len() > MAX_BEFORE_READY {
                            return Err(not_ready(format!(
                                "{} bytes on stdout and no readiness marker",
                                stdout.len()
                            )));
                        }
                    }
                    StreamKind::Stderr => tracing::warn!(
                        container_id = %self.id,
                        output = %String::from_utf8_lossy(&chunk.data),
                        "stderr before the readiness marker"
                    ),
                    StreamKind::System => {
                        let message = String::from_utf8_lossy(&chunk.data).into_owned();
                        return Err(RunError::Attach(AttachError::Io(message)));
                    }
                    StreamKind::Stdin => {}
                }
            }
        };
        let found = tokio::time::timeout(timeout, reading).await;
        let parts = frames.into_parts();
        self.resume.decoder = parts.codec;
        self.resume.read_buf = parts.read_buf;
        let after = match found {
            Ok(found) => found?,
            Err(_) => return Err(not_ready(format!("no readiness marker within {timeout:?}"))),
        };
        if let Some(noise) = stdout.strip_suffix(onpyrunner_protocol::warm::READY_MARKER) {
            if !noise.is_empty() {
                tracing::warn!(container_id = %self.id, output = %String::from_utf8_lossy(noise), "stdout before the readiness marker");
            }
        }
        if !after.is_empty() {
            self.resume.pending.push(AttachChunk {
                stream: StreamKind::Stdout,
                data: Bytes::from(after),
            });
        }
        self.awaiting_ready = false;
        // Off the run's path (the pool does this while refilling): what the warm-up used.
        self.cpu_before_ns = match docker.container_stats(&self.id).await {
            Ok(stats) => stats.cpu_stats.cpu_usage.total_usage,
            Err(e) => {
                tracing::debug!(container_id = %self.id, error = %e, "no stats after warm-up");
                0
            }
        };
        Ok(())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Start the launcher; it blocks reading the frame from stdin.
    pub async fn start(&mut self, docker: &Docker) -> Result<(), DockerError> {
        docker.start_container(&self.id).await?;
        self.started = true;
        Ok(())
    }

    /// Force-remove the container now.
    pub async fn remove(self) -> Result<(), DockerError> {
        self.guard.remove().await
    }
}

/// The container of a run that has ended, still to be removed: the caller can report the
/// outcome first (removal takes 50 to 100 ms) and remove it right after. Dropped without
/// `remove`, it is removed in the background.
#[must_use = "the container must be removed"]
pub struct Leftover {
    pub(crate) guard: ContainerGuard,
}

impl Leftover {
    pub async fn remove(self) -> Result<(), DockerError> {
        self.guard.remove().await
    }
}

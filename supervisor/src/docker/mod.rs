//! A Docker Engine API client over the daemon's Unix socket: raw HTTP with hyper, no Docker
//! client crate and no `docker` CLI.
mod request;
pub mod types;

pub use request::{encode_query_value, ApiRequest, Payload, API_VERSION};
use types::*;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};
use hyper::body::{Frame, Incoming};
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, UPGRADE};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyperlocal::UnixConnector;
use std::path::{Path, PathBuf};

/// Where the daemon listens when neither `--docker-host` nor `DOCKER_HOST` says otherwise.
pub const DEFAULT_SOCKET: &str = "/var/run/docker.sock";

/// Hint appended to "daemon unreachable" errors.
pub const START_HINT: &str =
    "start it with `bash scripts/setup.sh` (installs docker.io if missing and starts dockerd), \
     or by hand: `dockerd --bridge=none --iptables=false &`";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    #[error("cannot reach the Docker daemon at {socket}: {reason}; {START_HINT}")]
    Unreachable { socket: PathBuf, reason: String },
    #[error("unsupported Docker host {0:?}: only unix:// sockets are supported")]
    UnsupportedHost(String),
    #[error("Docker daemon refused to {op} ({status}): {message}")]
    Api {
        op: &'static str,
        status: u16,
        message: String,
    },
    #[error("unexpected answer from the Docker daemon to {op}: {detail}")]
    Protocol { op: &'static str, detail: String },
    #[error("{op} failed: {message}")]
    Stream { op: &'static str, message: String },
}

impl DockerError {
    /// The daemon said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, DockerError::Api { status: 404, .. })
    }
    /// The daemon said the request conflicts with the object's state (e.g. already paused).
    pub fn is_conflict(&self) -> bool {
        matches!(self, DockerError::Api { status: 409, .. })
    }
}

pub type Body = BoxBody<Bytes, std::io::Error>;

/// The raw, bidirectional stream of an attached container (after `Upgrade: tcp`).
pub type AttachIo = TokioIo<hyper::upgrade::Upgraded>;

/// A cheap-to-clone handle on the daemon.
#[derive(Clone, Debug)]
pub struct Docker {
    socket: PathBuf,
    client: Client<UnixConnector, Body>,
}

impl Docker {
    /// A client for the daemon at this socket path. Nothing is connected until the first call.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let client = Client::builder(TokioExecutor::new()).build(UnixConnector);
        Docker {
            socket: socket.into(),
            client,
        }
    }

    /// `flag` (e.g. `--docker-host`) wins, then `DOCKER_HOST`, then the default socket.
    /// Both take `unix:///path` or a bare path.
    pub fn from_host(flag: Option<&str>) -> Result<Self, DockerError> {
        let env = std::env::var("DOCKER_HOST").ok().filter(|v| !v.is_empty());
        match flag.map(str::to_owned).or(env) {
            None => Ok(Docker::new(DEFAULT_SOCKET)),
            Some(host) => Ok(Docker::new(socket_path(&host)?)),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn unreachable(&self, reason: impl std::fmt::Display) -> DockerError {
        DockerError::Unreachable {
            socket: self.socket.clone(),
            reason: reason.to_string(),
        }
    }

    /// Send a request; a non-2xx answer becomes `DockerError::Api` with the daemon's message.
    pub async fn send(
        &self,
        req: ApiRequest,
        stream: Option<Body>,
    ) -> Result<Response<Incoming>, DockerError> {
        let op = req.op;
        let (content_type, body): (Option<&str>, Body) = match req.payload {
            Payload::Empty => (None, empty_body()),
            Payload::Json(bytes) => (Some("application/json"), full_body(bytes)),
            Payload::Tar(bytes) => (Some("application/x-tar"), full_body(bytes)),
            Payload::TarStream => (Some("application/x-tar"), stream.unwrap_or_else(empty_body)),
        };
        let uri: hyper::Uri = hyperlocal::Uri::new(&self.socket, &req.path).into();
        let mut builder = Request::builder()
            .method(req.method)
            .uri(uri)
            .header(HOST, "docker");
        if let Some(ct) = content_type {
            builder = builder.header(CONTENT_TYPE, ct);
        }
        let request = builder.body(body).map_err(|e| DockerError::Protocol {
            op,
            detail: format!("bad request: {e}"),
        })?;
        let response = self.client.request(request).await.map_err(|e| {
            if e.is_connect() {
                self.unreachable(connect_reason(&e))
            } else {
                DockerError::Stream {
                    op,
                    message: format!("{e:#}"),
                }
            }
        })?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(api_error(op, response).await)
        }
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        req: ApiRequest,
    ) -> Result<T, DockerError> {
        let op = req.op;
        let response = self.send(req, None).await?;
        let bytes = read_body(op, response).await?;
        serde_json::from_slice(&bytes).map_err(|e| DockerError::Protocol {
            op,
            detail: format!("bad JSON: {e}"),
        })
    }

    async fn no_content(&self, req: ApiRequest) -> Result<(), DockerError> {
        let op = req.op;
        let response = self.send(req, None).await?;
        read_body(op, response).await.map(drop)
    }

    pub async fn ping(&self) -> Result<(), DockerError> {
        self.no_content(request::ping()).await
    }

    /// Whether the daemon keeps answering for about two seconds: a container can die a moment
    /// before a daemon that is stopping (a restart ends every container) stops answering.
    pub async fn stays_up(&self) -> bool {
        for _ in 0..4 {
            let answers = tokio::time::timeout(std::time::Duration::from_millis(500), self.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if !answers {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        true
    }

    pub async fn version(&self) -> Result<Version, DockerError> {
        self.json(request::version()).await
    }

    pub async fn inspect_image(&self, name: &str) -> Result<Option<ImageInspect>, DockerError> {
        match self.json(request::inspect_image(name)).await {
            Ok(image) => Ok(Some(image)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_image(&self, name: &str) -> Result<(), DockerError> {
        self.no_content(request::remove_image(name)).await
    }

    /// Import a root filesystem tarball as `repo:tag`, reporting progress lines.
    pub async fn import_image(
        &self,
        repo: &str,
        tag: &str,
        changes: &[&str],
        tar: Body,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), DockerError> {
        let req = request::import_image(repo, tag, changes);
        let op = req.op;
        let response = self.send(req, Some(tar)).await?;
        follow_progress(op, response, progress).await
    }

    /// Build an image from a whole build context (a tar with a Dockerfile at its root).
    pub async fn build_image(
        &self,
        tag: &str,
        context_tar: Vec<u8>,
        progress: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(), DockerError> {
        let req = request::build_image(tag, context_tar);
        let op = req.op;
        let response = self.send(req, None).await?;
        follow_progress(op, response, progress).await
    }

    /// Create a container; returns its id.
    pub async fn create_container(
        &self,
        name: Option<&str>,
        config: &ContainerConfig,
    ) -> Result<String, DockerError> {
        let created: CreateResponse = self.json(request::create_container(name, config)).await?;
        let warnings = created.warnings.unwrap_or_default();
        let warnings: Vec<String> = warnings.into_iter().filter(|w| !w.is_empty()).collect();
        if !warnings.is_empty() {
            // The daemon made the container but said it dropped something we asked for (a
            // limit it cannot enforce, typically): fail closed, never run with less.
            let _ = self.remove_container(&created.id).await;
            return Err(DockerError::Stream {
                op: "create container",
                message: format!(
                    "the daemon would not apply the container's settings as asked: {}",
                    warnings.join("; ")
                ),
            });
        }
        Ok(created.id)
    }

    /// What the daemon says it supports (`GET /info`).
    pub async fn info(&self) -> Result<DaemonInfo, DockerError> {
        self.json(request::info()).await
    }

    pub async fn start_container(&self, id: &str) -> Result<(), DockerError> {
        self.no_content(request::start_container(id)).await
    }

    /// Attach stdin, stdout and stderr on a connection of its own, hijacked with
    /// `Upgrade: tcp`. Works before start (nothing is missed) and on a running container;
    /// a paused one answers 409.
    pub async fn attach_container(&self, id: &str) -> Result<AttachIo, DockerError> {
        let req = request::attach_container(id);
        let op = req.op;
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.unreachable(e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| DockerError::Stream {
                op,
                message: e.to_string(),
            })?;
        tokio::spawn(async move {
            // Ends when the hijacked stream is dropped; errors then are of no interest.
            let _ = conn.with_upgrades().await;
        });
        let request = Request::builder()
            .method(req.method)
            .uri(req.path)
            .header(HOST, "docker")
            .header(CONNECTION, "Upgrade")
            .header(UPGRADE, "tcp")
            .body(empty_body())
            .map_err(|e| DockerError::Protocol {
                op,
                detail: e.to_string(),
            })?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| DockerError::Stream {
                op,
                message: e.to_string(),
            })?;
        if response.status() != StatusCode::SWITCHING_PROTOCOLS {
            if response.status().is_success() {
                return Err(DockerError::Protocol {
                    op,
                    detail: format!(
                        "expected 101 Switching Protocols, got {}",
                        response.status()
                    ),
                });
            }
            return Err(api_error(op, response).await);
        }
        let upgraded = hyper::upgrade::on(response)
            .await
            .map_err(|e| DockerError::Stream {
                op,
                message: e.to_string(),
            })?;
        Ok(TokioIo::new(upgraded))
    }

    /// Block until the container is not running; returns its exit code.
    pub async fn wait_container(&self, id: &str) -> Result<i64, DockerError> {
        let waited: WaitResponse = self.json(request::wait_container(id)).await?;
        match waited.error {
            Some(err) if !err.message.is_empty() => Err(DockerError::Stream {
                op: "wait container",
                message: err.message,
            }),
            _ => Ok(waited.status_code),
        }
    }

    pub async fn inspect_container(&self, id: &str) -> Result<ContainerInspect, DockerError> {
        self.json(request::inspect_container(id)).await
    }

    /// Stream the container's filesystem as a tar into `out` as it comes (an image's root
    /// filesystem is hundreds of MB: never held whole); returns the bytes written.
    pub async fn export_container<W>(&self, id: &str, out: &mut W) -> Result<u64, DockerError>
    where
        W: tokio::io::AsyncWrite + Unpin + ?Sized,
    {
        use tokio::io::AsyncWriteExt;
        let req = request::export_container(id);
        let op = req.op;
        let mut body = self.send(req, None).await?.into_body();
        let mut written = 0u64;
        let failed = |message: String| DockerError::Stream { op, message };
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| failed(e.to_string()))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data)
                    .await
                    .map_err(|e| failed(format!("cannot write the tar: {e}")))?;
                written += data.len() as u64;
            }
        }
        out.flush()
            .await
            .map_err(|e| failed(format!("cannot write the tar: {e}")))?;
        Ok(written)
    }

    /// The container's CPU time and memory as its cgroup counts them, now.
    pub async fn container_stats(&self, id: &str) -> Result<ContainerStats, DockerError> {
        self.json(request::container_stats(id)).await
    }

    pub async fn kill_container(&self, id: &str, signal: &str) -> Result<(), DockerError> {
        self.no_content(request::kill_container(id, signal)).await
    }

    /// Start `cmd` in a running container as its user, with no stdio, and not wait for it.
    pub async fn exec_detached(&self, id: &str, cmd: &[&str]) -> Result<(), DockerError> {
        let created: CreateResponse = self.json(request::create_exec(id, cmd)).await?;
        self.no_content(request::start_exec(&created.id)).await
    }

    pub async fn pause_container(&self, id: &str) -> Result<(), DockerError> {
        self.no_content(request::pause_container(id)).await
    }

    pub async fn unpause_container(&self, id: &str) -> Result<(), DockerError> {
        self.no_content(request::unpause_container(id)).await
    }

    /// Force-remove; a container that is already gone counts as removed.
    pub async fn remove_container(&self, id: &str) -> Result<(), DockerError> {
        match self.no_content(request::remove_container(id)).await {
            Err(e) if e.is_not_found() => Ok(()),
            // 409 "removal already in progress": someone else is removing it.
            Err(e) if e.is_conflict() => Ok(()),
            other => other,
        }
    }

    pub async fn list_containers(
        &self,
        labels: &[String],
    ) -> Result<Vec<ContainerSummary>, DockerError> {
        self.json(request::list_containers(labels)).await
    }
}

/// `unix:///run/docker.sock` or `/run/docker.sock` -> the path.
pub fn socket_path(host: &str) -> Result<PathBuf, DockerError> {
    if let Some(path) = host.strip_prefix("unix://") {
        if !path.is_empty() {
            return Ok(PathBuf::from(path));
        }
    } else if host.starts_with('/') {
        return Ok(PathBuf::from(host));
    }
    Err(DockerError::UnsupportedHost(host.to_string()))
}

fn connect_reason(e: &hyper_util::client::legacy::Error) -> String {
    use std::error::Error;
    let mut source = e.source();
    let mut reason = e.to_string();
    while let Some(s) = source {
        reason = s.to_string();
        source = s.source();
    }
    reason
}

pub fn empty_body() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

pub fn full_body(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// A streamed body from a sequence of byte chunks (e.g. a `tar` child's stdout).
pub fn stream_body<S>(stream: S) -> Body
where
    S: futures_util::Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    use futures_util::TryStreamExt;
    http_body_util::StreamBody::new(stream.map_ok(Frame::data)).boxed()
}

async fn read_body(op: &'static str, response: Response<Incoming>) -> Result<Bytes, DockerError> {
    response
        .into_body()
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| DockerError::Stream {
            op,
            message: e.to_string(),
        })
}

async fn api_error(op: &'static str, response: Response<Incoming>) -> DockerError {
    let status = response.status().as_u16();
    let message = match read_body(op, response).await {
        Ok(bytes) => serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| b.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).trim().to_string()),
        Err(e) => e.to_string(),
    };
    DockerError::Api {
        op,
        status,
        message,
    }
}

/// Read a JSON-lines progress stream (`/build`, `/images/create`), reporting each message and
/// turning an `error` line into `DockerError::Stream`.
async fn follow_progress(
    op: &'static str,
    response: Response<Incoming>,
    progress: &mut (dyn FnMut(&str) + Send),
) -> Result<(), DockerError> {
    let mut body = response.into_body();
    let mut pending: Vec<u8> = Vec::new();
    let mut failure = None;
    let mut handle = |line: &[u8], failure: &mut Option<String>| {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        match serde_json::from_slice::<ProgressLine>(line) {
            Ok(ProgressLine {
                error: Some(error), ..
            }) => *failure = Some(error),
            Ok(ProgressLine {
                stream: Some(text), ..
            })
            | Ok(ProgressLine {
                status: Some(text), ..
            }) => {
                let text = text.trim_end();
                if !text.is_empty() {
                    progress(text);
                }
            }
            Ok(_) => {}
            Err(_) => progress(String::from_utf8_lossy(line).trim_end()),
        }
    };
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| DockerError::Stream {
            op,
            message: e.to_string(),
        })?;
        if let Ok(data) = frame.into_data() {
            pending.extend_from_slice(&data);
            while let Some(pos) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=pos).collect();
                handle(&line, &mut failure);
            }
        }
    }
    handle(&pending, &mut failure);
    match failure {
        Some(message) => Err(DockerError::Stream { op, message }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_host_accepts_unix_urls_and_paths_only() {
        assert_eq!(
            socket_path("unix:///run/d.sock").unwrap(),
            PathBuf::from("/run/d.sock")
        );
        assert_eq!(
            socket_path("/run/d.sock").unwrap(),
            PathBuf::from("/run/d.sock")
        );
        assert!(matches!(
            socket_path("tcp://1.2.3.4:2375"),
            Err(DockerError::UnsupportedHost(_))
        ));
        assert!(matches!(
            socket_path("unix://"),
            Err(DockerError::UnsupportedHost(_))
        ));
    }

    #[tokio::test]
    async fn missing_socket_names_the_socket_and_how_to_start_docker() {
        let dir = std::env::temp_dir().join(format!("onpyrunner-nosock-{}", std::process::id()));
        let docker = Docker::new(dir.join("docker.sock"));
        let err = docker.ping().await.unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{text}");
        assert!(text.contains("docker.sock"), "{text}");
        assert!(text.contains("scripts/setup.sh"), "{text}");
        let err = docker.attach_container("x").await.unwrap_err();
        assert!(matches!(err, DockerError::Unreachable { .. }), "{err}");
    }
}

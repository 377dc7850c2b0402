//! Why a run could not be carried out in its sandbox (as opposed to a run refused up front,
//! [`Invalid`](crate::run::Invalid), or not accepted, [`SubmitError`](crate::runner::SubmitError)).
use crate::docker::DockerError;
use onpyrunner_protocol::AttachError;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    #[error(transparent)]
    Docker(#[from] DockerError),
    #[error("invalid run: {0}")]
    Invalid(String),
    #[error("no image for language {language:?} ({image}); build it with `onpyrunner images`")]
    ImageMissing { language: String, image: String },
    #[error(transparent)]
    NoUid(#[from] crate::uids::NoFreeUid),
    #[error("attach stream broke: {0}")]
    Attach(#[from] AttachError),
    #[error("{what} took longer than {after:?}")]
    TooSlow { what: &'static str, after: Duration },
    #[error("container {container_id} did not get ready: {reason}")]
    NotReady {
        container_id: String,
        reason: String,
    },
    /// A bug on our side (a task that panicked).
    #[error("{0}")]
    Internal(String),
}

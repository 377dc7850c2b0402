//! Wire formats shared by the supervisor, the in-container launcher, tests and fuzz targets.
//!
//! Everything here is pure: bytes in, values out. No IO and no runtime.

pub mod attach;
pub mod launch;
pub mod status;
pub mod warm;

pub use attach::{AttachChunk, AttachDecoder, AttachError, AttachMode, StreamKind};
pub use launch::{FramingError, RunRequest, SourceFile};
pub use status::{RunStatus, Stage, StatusScanner};

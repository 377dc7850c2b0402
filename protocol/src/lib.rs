//! Wire formats shared by the supervisor, the in-container launcher, tests and fuzz targets.
//!
//! Everything here is pure: bytes in, values out. No IO and no runtime.

pub mod attach;
pub mod judge;
pub mod launch;
pub mod piston;
pub mod run;
pub mod status;
pub mod warm;
pub mod ws;

pub use attach::{AttachChunk, AttachDecoder, AttachError, AttachMode, StreamKind};
pub use judge::{CompareMode, Difference, Verdict};
pub use launch::{FramingError, RunRequest, SourceFile};
pub use run::{Event, OutputChunk, OutputStream, Reason, RunState, Stage, Summary, Usage};
pub use status::{Piece, Record, RecordScanner, RunStatus, TestEnded};

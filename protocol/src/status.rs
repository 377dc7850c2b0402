//! The launcher's status trailer and the scanner that finds it in the stdout stream.
//!
//! SPEC (to implement): after the program (or a failed compile) ends, the launcher writes one
//! record to stdout, in one write: `b"\0ONPYRUNNER-STATUS " + nonce + b" " + json + b"\n"`,
//! where json is `RunStatus` as JSON. User code does not know the nonce, so it cannot forge it;
//! a record with another nonce is plain output and passes through unchanged.
//!
//! `StatusScanner` is fed the stdout chunks in order. It passes user bytes through unchanged and
//! holds back only a tail that could still be the start of the marker (at most marker len - 1
//! bytes), released as soon as the next chunk shows it is not. Once the full marker and its line
//! are seen, it yields the status; bytes after that line are discarded (left-over processes).
//! A marker whose JSON does not parse is reported as `ScanError`.
use bytes::Bytes;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    Compile,
    Run,
}

/// What the launcher measured about the stage that ended the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    pub stage: Stage,
    /// Exit code when the process exited normally.
    pub exit_code: Option<i32>,
    /// Signal number when the process was killed by a signal.
    pub signal: Option<i32>,
    /// Wall time of the stage, from spawn to exit, in milliseconds.
    pub wall_ms: u64,
    /// User + system CPU time of the stage's processes, in milliseconds.
    pub cpu_ms: u64,
    /// Peak resident set size of the stage's largest process, in KiB.
    pub max_rss_kib: u64,
    /// Set when the launcher itself failed (bad frame, spawn failure...).
    pub error: Option<String>,
}

pub const MARKER_PREFIX: &[u8] = b"\0ONPYRUNNER-STATUS ";

/// Encode the trailer the launcher writes.
pub fn encode_status(nonce: &str, status: &RunStatus) -> Vec<u8> {
    let _ = (nonce, status);
    todo!()
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutput {
    /// User bytes that are safe to forward now.
    pub output: Bytes,
    /// The status, once the whole trailer line has been seen.
    pub status: Option<Result<RunStatus, String>>,
}

pub struct StatusScanner {/* to implement */}

impl StatusScanner {
    pub fn new(nonce: &str) -> Self {
        let _ = nonce;
        todo!()
    }
    /// Feed the next stdout chunk.
    pub fn push(&mut self, chunk: &[u8]) -> ScanOutput {
        let _ = chunk;
        todo!()
    }
    /// The stream ended: release anything held back (an incomplete marker is plain output).
    pub fn finish(&mut self) -> Bytes {
        todo!()
    }
    /// True once the status was found; later pushes return nothing.
    pub fn done(&self) -> bool {
        todo!()
    }
}

//! Decoder for Docker's attach stream (`POST /containers/{id}/attach`).
//!
//! SPEC (to implement):
//! - `AttachMode::Multiplexed`: frames of an 8-byte header [stream, 0, 0, 0, len as u32 big-endian]
//!   followed by `len` payload bytes. Stream bytes: 0 stdin, 1 stdout, 2 stderr, 3 system error
//!   (moby stdcopy `Systemerr`). Any other stream byte, or non-zero padding, is an error.
//! - `AttachMode::Tty`: raw bytes, all reported as stdout.
//! - Payload is streamed: as soon as any payload byte is buffered it is yielded (at most
//!   `max_chunk` bytes per item), so a 16 MiB frame never sits whole in memory and output is
//!   forwarded with no added latency. Never `reserve` more than needed for a header.
//! - A zero-length frame yields nothing.
//! - `decode_eof`: clean EOF at a frame boundary -> Ok(None); EOF inside a header or payload ->
//!   `AttachError::Truncated`.
use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

/// Which stream a chunk of attach output belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
    /// Docker's own error channel (stream byte 3).
    System,
}

/// Whether the container was created with a TTY. Stated by the caller, never guessed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachMode {
    Multiplexed,
    Tty,
}

/// A piece of one stream's output, in arrival order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachChunk {
    pub stream: StreamKind,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttachError {
    #[error("unknown stream byte {0} in attach frame header")]
    UnknownStream(u8),
    #[error("malformed attach frame header {0:02x?}")]
    BadHeader([u8; 8]),
    #[error("attach stream ended inside a frame {where_}: {missing} bytes missing")]
    Truncated { where_: &'static str, missing: u64 },
    #[error("io error: {0}")]
    Io(String),
}

impl From<std::io::Error> for AttachError {
    fn from(e: std::io::Error) -> Self {
        AttachError::Io(e.to_string())
    }
}

/// Default largest chunk handed out at once.
pub const DEFAULT_MAX_CHUNK: usize = 64 * 1024;

pub struct AttachDecoder {/* to implement */}

impl AttachDecoder {
    pub fn new(mode: AttachMode) -> Self {
        let _ = mode;
        todo!()
    }
    pub fn with_max_chunk(mode: AttachMode, max_chunk: usize) -> Self {
        let _ = (mode, max_chunk);
        todo!()
    }
}

impl Decoder for AttachDecoder {
    type Item = AttachChunk;
    type Error = AttachError;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<AttachChunk>, AttachError> {
        let _ = src;
        todo!()
    }
}

/// Encode one multiplexed frame (for tests, fakes and fuzzing).
pub fn encode_frame(stream: StreamKind, payload: &[u8], dst: &mut BytesMut) {
    let _ = (stream, payload, dst);
    todo!()
}

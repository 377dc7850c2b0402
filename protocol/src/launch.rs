//! The framing that carries one run to the in-container launcher over the container's stdin.
//!
//! SPEC (to implement): the supervisor writes `encode()` output to the attach stream, then the
//! user's stdin. The launcher reads exactly `PREFIX_LEN` bytes, calls `body_len()`, reads exactly
//! that many more bytes, calls `decode_body()`, and leaves the rest of stdin to the program.
//!
//! Layout: magic b"ONPYRUN1" (8 bytes), body length u32 big-endian (4 bytes), then the body:
//!   nonce: u16 len + bytes (1..=64 bytes, ASCII alphanumeric)
//!   files: u16 count (1..=MAX_FILES), each: name (u16 len + UTF-8), content (u32 len + bytes)
//!   compile argv: u16 count (0 = no compile stage), each arg u16 len + UTF-8 (no NUL)
//!   run argv: u16 count (>= 1), each arg as above
//! Trailing bytes after the run argv are an error. Every length is checked against the bytes left
//! before anything is allocated.
//!
//! File names: 1..=64 bytes of [A-Za-z0-9._-], not starting with '.', so a name can never leave
//! the work directory. `validate_file_name` is public so the supervisor rejects bad names before
//! starting anything.

/// Magic that opens every launch frame.
pub const MAGIC: &[u8; 8] = b"ONPYRUN1";
/// Magic plus the u32 body length.
pub const PREFIX_LEN: usize = 12;
/// Largest body the launcher accepts.
pub const MAX_BODY_LEN: usize = 16 * 1024 * 1024;
pub const MAX_FILES: usize = 64;
pub const MAX_NAME_LEN: usize = 64;
pub const MAX_ARGS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRequest {
    /// Per-run secret that authenticates the launcher's status trailer.
    pub nonce: String,
    pub files: Vec<SourceFile>,
    /// Empty when the language has no compile stage.
    pub compile: Vec<String>,
    pub run: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FramingError {
    #[error("bad magic: not a launch frame")]
    BadMagic,
    #[error("launch frame body of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("launch frame truncated while reading {field}")]
    Truncated { field: &'static str },
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("{0} trailing bytes after the launch frame body")]
    TrailingBytes(usize),
}

impl RunRequest {
    /// Encode the whole frame (prefix and body). Validates like `decode_body` does.
    pub fn encode(&self) -> Result<Vec<u8>, FramingError> {
        todo!()
    }
}

/// Check the prefix and return the body length.
pub fn body_len(prefix: &[u8; PREFIX_LEN]) -> Result<usize, FramingError> {
    let _ = prefix;
    todo!()
}

/// Decode a body (the bytes after the prefix).
pub fn decode_body(body: &[u8]) -> Result<RunRequest, FramingError> {
    let _ = body;
    todo!()
}

/// Check one file name against the rules above.
pub fn validate_file_name(name: &str) -> Result<(), FramingError> {
    let _ = name;
    todo!()
}

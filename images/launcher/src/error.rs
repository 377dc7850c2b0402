//! Everything that can make the launcher itself fail, and the exit code each failure gets.
//!
//! The codes follow the shell and `docker run`: 125 the launcher failed, 126 the command
//! cannot be executed, 127 the command was not found. A program's own exit code is passed
//! through unchanged, so these only mean "launcher failure" together with the message on
//! stderr (and the `error` field of the status trailer, once the nonce is known).
use std::fmt;
use std::io;

use onpyrunner_protocol::FramingError;

/// Exit code when the launcher itself failed (bad frame, unwritable file...).
pub const EXIT_LAUNCHER_FAILED: i32 = 125;
/// Exit code when a stage's command exists but cannot be executed.
pub const EXIT_CANNOT_EXECUTE: i32 = 126;
/// Exit code when a stage's command is not on PATH.
pub const EXIT_NOT_FOUND: i32 = 127;

#[derive(Debug)]
pub enum LaunchError {
    /// Reading the launch frame from stdin failed.
    ReadStdin(io::Error),
    /// Stdin ended before the whole launch frame arrived.
    StdinEnded {
        part: &'static str,
        got: usize,
        wanted: usize,
    },
    /// The launch frame (or a file name in it) is invalid.
    Frame(FramingError),
    /// A source file could not be created or written.
    WriteFile { name: String, source: io::Error },
    /// A stage's command could not be started.
    Spawn { program: String, source: io::Error },
    /// Waiting for a stage's process failed.
    Wait(io::Error),
    /// Preparing a test of a judged run (its input, the work directory) failed.
    Test(io::Error),
}

impl LaunchError {
    pub fn exit_code(&self) -> i32 {
        match self {
            Self::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                EXIT_NOT_FOUND
            }
            Self::Spawn { .. } => EXIT_CANNOT_EXECUTE,
            _ => EXIT_LAUNCHER_FAILED,
        }
    }
}

impl fmt::Display for LaunchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ReadStdin(e) => write!(f, "cannot read the launch frame from stdin: {e}"),
            Self::StdinEnded { part, got, wanted } => write!(
                f,
                "stdin ended after {got} of {wanted} bytes of the launch frame {part}"
            ),
            Self::Frame(e) => write!(f, "bad launch frame: {e}"),
            Self::Test(e) => write!(f, "cannot prepare a test: {e}"),
            Self::WriteFile { name, source } => {
                write!(f, "cannot write source file {name:?}: {source}")
            }
            Self::Spawn { program, source } if source.kind() == io::ErrorKind::NotFound => {
                write!(f, "command not found: {program:?}")
            }
            Self::Spawn { program, source } => write!(f, "cannot execute {program:?}: {source}"),
            Self::Wait(e) => write!(f, "cannot wait for the stage's process: {e}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn_error(kind: io::ErrorKind) -> LaunchError {
        LaunchError::Spawn {
            program: "nope".into(),
            source: io::Error::from(kind),
        }
    }

    #[test]
    fn missing_command_exits_127_and_says_not_found() {
        let err = spawn_error(io::ErrorKind::NotFound);
        assert_eq!(err.exit_code(), 127);
        assert_eq!(err.to_string(), "command not found: \"nope\"");
    }

    #[test]
    fn unexecutable_command_exits_126() {
        assert_eq!(
            spawn_error(io::ErrorKind::PermissionDenied).exit_code(),
            126
        );
        assert_eq!(spawn_error(io::ErrorKind::InvalidInput).exit_code(), 126);
    }

    #[test]
    fn frame_and_file_errors_exit_125() {
        assert_eq!(LaunchError::Frame(FramingError::BadMagic).exit_code(), 125);
        let short = LaunchError::StdinEnded {
            part: "prefix",
            got: 3,
            wanted: 12,
        };
        assert_eq!(short.exit_code(), 125);
        assert_eq!(
            short.to_string(),
            "stdin ended after 3 of 12 bytes of the launch frame prefix"
        );
        let file = LaunchError::WriteFile {
            name: "main.py".into(),
            source: io::ErrorKind::AlreadyExists.into(),
        };
        assert_eq!(file.exit_code(), 125);
    }
}

//! What the launcher tells the outside world: the status trailer on stdout and stderr, and one-line
//! messages on stderr.
use onpyrunner_protocol::status::{encode_record, encode_status};
use onpyrunner_protocol::{Record, RunStatus, Stage, TestEnded, Usage};

use crate::error::LaunchError;
use crate::fdio;

/// Prefix of every message the launcher itself prints, so users can tell it from their
/// program's own stderr.
pub const MESSAGE_PREFIX: &str = "onpyrunner-launcher: ";

/// Longest error message carried in a trailer. Keeps the whole trailer well under PIPE_BUF
/// (4096), so it reaches the pipe in one atomic write that output of left-over processes
/// cannot split.
const MAX_ERROR_LEN: usize = 1024;

/// Print one line to stderr. Errors are ignored: stderr is the last channel there is.
pub fn complain(message: &str) {
    let line = format!("{MESSAGE_PREFIX}{message}\n");
    let _ = fdio::write_all(libc::STDERR_FILENO, line.as_bytes());
}

/// Write the trailer to stderr and to stdout, each in a single write. Docker copies the two
/// pipes independently, so a trailer on stdout alone can overtake stderr bytes written before
/// it; seeing the trailer on both streams tells the supervisor that both are complete.
pub fn write_status(nonce: &str, status: &RunStatus) {
    write_both(&encode_status(nonce, status));
}

fn write_both(record: &[u8]) {
    let _ = fdio::write_all(libc::STDERR_FILENO, record);
    if let Err(e) = fdio::write_all(libc::STDOUT_FILENO, record) {
        complain(&format!("cannot write a record to stdout: {e}"));
    }
}

/// Say that the compile stage succeeded and the run stage starts, on stderr and then stdout
/// (each stream's record marks where that stream's compile output ends).
pub fn write_compiled(nonce: &str, usage: Usage) {
    write_both(&encode_record(nonce, &Record::Compiled(usage)));
}

/// Say that a test of a judged run ended, on stderr and then stdout.
pub fn write_test(nonce: &str, test: &TestEnded) {
    write_both(&encode_record(nonce, &Record::Test(test.clone())));
}

/// The status reported when the launcher failed in (or before) `stage`.
pub fn error_status(stage: Stage, error: &LaunchError) -> RunStatus {
    RunStatus {
        usage: Usage::new(stage),
        error: Some(clip(error.to_string(), MAX_ERROR_LEN)),
    }
}

/// Cut `text` to at most `max` bytes, on a character boundary.
fn clip(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_on_a_char_boundary() {
        assert_eq!(clip("short".into(), 10), "short");
        assert_eq!(clip("abcdef".into(), 3), "abc");
        // 'é' is two bytes: cutting at 2 would split it.
        assert_eq!(clip("aé".into(), 2), "a");
    }

    #[test]
    fn error_status_carries_the_message_and_no_exit_code() {
        let err = LaunchError::Spawn {
            program: "javac".into(),
            source: io::ErrorKind::NotFound.into(),
        };
        let status = error_status(Stage::Compile, &err);
        assert_eq!(status.usage.stage, Stage::Compile);
        assert_eq!(status.usage.exit_code, None);
        assert_eq!(status.usage.signal, None);
        assert_eq!(
            status.error.as_deref(),
            Some("command not found: \"javac\"")
        );
    }

    #[test]
    fn error_status_of_a_huge_message_stays_small() {
        let err = LaunchError::Spawn {
            program: "x".repeat(100_000),
            source: io::ErrorKind::NotFound.into(),
        };
        let status = error_status(Stage::Run, &err);
        assert!(status.error.unwrap().len() <= MAX_ERROR_LEN);
    }
}

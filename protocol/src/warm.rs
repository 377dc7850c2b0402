//! The warm process: a language process (a JVM) the launcher starts when the container starts,
//! before the run arrives, so that the pool pauses a container whose runtime is already loaded
//! and warmed up. It then compiles and runs the program in-process.
//!
//! How the launcher learns it must start one: its argv is `[launcher, WARM_FLAG, warm argv...]`
//! (the table's `warm` field, put there by the supervisor). The source still comes on stdin.
//!
//! Readiness: once the warm process said "ready", the launcher writes `READY_MARKER` on stdout,
//! the first and only thing written before the launch frame is read. The supervisor reads the
//! attach stream up to it before it pauses a pooled container (or, for a fresh one, before the
//! run), so the marker never reaches the user. If the warm process cannot be started or dies
//! before it is ready, the launcher still writes the marker and runs the program the usual way.
//!
//! Control channel: two pipes, the warm process's fd 3 (launcher -> warm) and fd 4
//! (warm -> launcher). Each message is a u32 big-endian body length, then the body: a u32
//! big-endian count of strings, each a u32 big-endian length and that many UTF-8 bytes. The
//! first string is the verb:
//!
//! ```text
//! warm -> launcher  ["ready"]                  warm-up done, blocked on fd 3
//! launcher -> warm  ["compile", argv...]       the table's compile argv, expanded (only when
//!                                              the language has a compile stage)
//! warm -> launcher  ["compiled", "<code>"]     the compiler's exit code, diagnostics already
//!                                              written to fd 2
//! launcher -> warm  ["run", argv...]           the table's run argv plus the program's args;
//!                                              user code starts after this
//! ```
//!
//! A judged run sends, after "compiled 0", one message per test instead of "run" (Java's
//! OnpyrunnerJudge runs each test in the warm JVM itself; the JVM is the test's process):
//!
//! ```text
//! launcher -> warm  ["test", input path, argv...]  the test's input file, the table's run argv
//! warm -> launcher  ["tested", "<code>"]           the test's exit code; ready for the next
//! warm -> launcher  ["tested", "<code>", "last"]   the same, but threads of the test still run:
//!                                                  the launcher kills the process
//! ```
//!
//! A judge process (the table's `judge_process`: Node's images/warm/onpyrunner_judge.js) speaks
//! the same "ready", "test" and "tested" without ever compiling or running a "run", with its
//! stdin a memfd that the launcher refills with each test's input and rewinds before sending
//! "test" (the input path is then `/dev/stdin`). It leads its own process group, which is
//! killed with it. In a pooled container the launcher (`JUDGE_EARLY_FLAG`) starts it at
//! container start, and the process warms up before it says "ready"; otherwise the launcher
//! starts it after the compile stage of a judged run of more than one test, as
//! `judge argv... -- run argv...`. Either way it is used only for a run command that begins with
//! its program and flags.
//!
//! The launcher keeps the test's wall clock (at it, it kills the warm process: the rest of the
//! tests run fresh), its CPU time (the process's, from /proc, before and after) and its memory
//! (the process's peak resident set, reset before the test through /proc/PID/clear_refs). Only
//! the exit code comes from the warm process, after user code ran: a program can forge it, as
//! it can the fork server's report (ptrace); the output, clock and memory limit stay the
//! launcher's.
//!
//! Trust: the warm process is trusted only until user code starts, i.e. until "run" is sent
//! (for a judged run, see above).
//! After that the launcher reads nothing from it, closes both pipes, and only the process's wait
//! status counts (the program's exit code, System.exit(n) or a signal). The warm process never
//! learns the nonce, so it cannot forge the status trailer either.

/// The launcher's argv[1] when a warm process is wanted; the warm argv follows it.
pub const WARM_FLAG: &str = "--warm";

/// The launcher's only argument when the image's judge process is to be started at container
/// start, before the run arrives (a pooled container of a language with a `judge_process`): the
/// launcher says ready once it is, as for a warm process, and a judged run's tests then run in
/// it; any other run kills it first.
pub const JUDGE_EARLY_FLAG: &str = "--judge-early";

/// Written by the launcher on stdout once the warm process is ready. Starts with NUL like the
/// status trailer so it cannot be mistaken for text; nothing is written before it.
pub const READY_MARKER: &[u8] = b"\0ONPYRUNNER-WARM-READY\n";

/// Largest message body either side accepts; checked before anything is allocated.
pub const MAX_MESSAGE_LEN: usize = 4 * 1024 * 1024;
/// Most strings in one message.
pub const MAX_STRINGS: usize = 1024;

pub const VERB_READY: &str = "ready";
pub const VERB_COMPILE: &str = "compile";
pub const VERB_COMPILED: &str = "compiled";
pub const VERB_RUN: &str = "run";
pub const VERB_TEST: &str = "test";
pub const VERB_TESTED: &str = "tested";
/// The third string of a "tested" that the warm process cannot take another test.
pub const TESTED_LAST: &str = "last";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MessageError {
    #[error("warm message of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    #[error("warm message has {0} strings, more than allowed")]
    TooManyStrings(usize),
    #[error("warm message truncated")]
    Truncated,
    #[error("warm message string is not UTF-8")]
    NotUtf8,
    #[error("{0} trailing bytes after the warm message")]
    TrailingBytes(usize),
}

/// Encode one message, length prefix included.
pub fn encode_message<S: AsRef<str>>(parts: &[S]) -> Result<Vec<u8>, MessageError> {
    if parts.len() > MAX_STRINGS {
        return Err(MessageError::TooManyStrings(parts.len()));
    }
    let body_len = 4 + parts.iter().map(|p| 4 + p.as_ref().len()).sum::<usize>();
    if body_len > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge {
            len: body_len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut out = Vec::with_capacity(4 + body_len);
    // Bounded by MAX_MESSAGE_LEN and MAX_STRINGS above, so the casts are exact.
    out.extend_from_slice(&(body_len as u32).to_be_bytes());
    out.extend_from_slice(&(parts.len() as u32).to_be_bytes());
    for part in parts {
        let bytes = part.as_ref().as_bytes();
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }
    Ok(out)
}

/// The body length announced by a message's 4-byte prefix, checked against the limit.
pub fn body_len(prefix: [u8; 4]) -> Result<usize, MessageError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_MESSAGE_LEN {
        return Err(MessageError::TooLarge {
            len,
            limit: MAX_MESSAGE_LEN,
        });
    }
    Ok(len)
}

/// Decode a body (the bytes after the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Vec<String>, MessageError> {
    let mut rest = body;
    let mut take = |n: usize| -> Result<&[u8], MessageError> {
        if n > rest.len() {
            return Err(MessageError::Truncated);
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Ok(head)
    };
    let u32_at = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize;
    let count = u32_at(take(4)?);
    if count > MAX_STRINGS {
        return Err(MessageError::TooManyStrings(count));
    }
    let mut parts = Vec::with_capacity(count);
    for _ in 0..count {
        let len = u32_at(take(4)?);
        let bytes = take(len)?;
        let text = std::str::from_utf8(bytes).map_err(|_| MessageError::NotUtf8)?;
        parts.push(text.to_owned());
    }
    if !rest.is_empty() {
        return Err(MessageError::TrailingBytes(rest.len()));
    }
    Ok(parts)
}

/// Where the readiness marker ends in `stdout` (the bytes seen so far), if it is there.
pub fn find_ready_marker(stdout: &[u8]) -> Option<usize> {
    memchr::memmem::find(stdout, READY_MARKER).map(|at| at + READY_MARKER.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn encode_matches_the_documented_layout() {
        let bytes = encode_message(&["run", "é"]).unwrap();
        let mut expected = vec![0, 0, 0, 17, 0, 0, 0, 2];
        expected.extend_from_slice(b"\0\0\0\x03run\0\0\0\x02");
        expected.extend_from_slice("é".as_bytes());
        assert_eq!(bytes, expected);
        assert_eq!(body_len([0, 0, 0, 17]), Ok(17));
        assert_eq!(decode_body(&bytes[4..]).unwrap(), ["run", "é"]);
    }

    #[test]
    fn empty_strings_and_empty_messages_round_trip() {
        let none: [&str; 0] = [];
        let bytes = encode_message(&none).unwrap();
        assert_eq!(bytes, [0, 0, 0, 4, 0, 0, 0, 0]);
        assert!(decode_body(&bytes[4..]).unwrap().is_empty());
        let bytes = encode_message(&["", "x", ""]).unwrap();
        assert_eq!(decode_body(&bytes[4..]).unwrap(), ["", "x", ""]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_message(&["compile", "javac", "Main.java"]).unwrap();
        let body = &bytes[4..];
        for cut in 0..body.len() {
            assert_eq!(
                decode_body(&body[..cut]),
                Err(MessageError::Truncated),
                "{cut}"
            );
        }
    }

    #[test]
    fn limits_are_checked_before_allocating() {
        assert!(matches!(
            body_len(u32::MAX.to_be_bytes()),
            Err(MessageError::TooLarge { .. })
        ));
        let mut huge_count = u32::MAX.to_be_bytes().to_vec();
        huge_count.extend_from_slice(&[0; 8]);
        assert!(matches!(
            decode_body(&huge_count),
            Err(MessageError::TooManyStrings(_))
        ));
        let mut huge_string = 1u32.to_be_bytes().to_vec();
        huge_string.extend_from_slice(&u32::MAX.to_be_bytes());
        assert_eq!(decode_body(&huge_string), Err(MessageError::Truncated));
        let too_many = vec!["x"; MAX_STRINGS + 1];
        assert!(encode_message(&too_many).is_err());
    }

    #[test]
    fn trailing_bytes_and_bad_utf8_are_errors() {
        let mut bytes = encode_message(&["ready"]).unwrap();
        bytes.push(0);
        assert_eq!(
            decode_body(&bytes[4..]),
            Err(MessageError::TrailingBytes(1))
        );
        let bad = [0, 0, 0, 1, 0, 0, 0, 1, 0xff];
        assert_eq!(decode_body(&bad), Err(MessageError::NotUtf8));
    }

    #[test]
    fn ready_marker_is_found_where_it_ends() {
        let mut out = b"noise".to_vec();
        assert_eq!(find_ready_marker(&out), None);
        out.extend_from_slice(READY_MARKER);
        assert_eq!(find_ready_marker(&out), Some(out.len()));
        out.extend_from_slice(b"after");
        assert_eq!(find_ready_marker(&out), Some(out.len() - 5));
        assert_eq!(
            find_ready_marker(&READY_MARKER[..READY_MARKER.len() - 1]),
            None
        );
    }

    proptest! {
        #[test]
        fn any_message_round_trips(parts in proptest::collection::vec(".*", 0..8)) {
            let bytes = encode_message(&parts).unwrap();
            let len = body_len(bytes[..4].try_into().unwrap()).unwrap();
            prop_assert_eq!(len, bytes.len() - 4);
            prop_assert_eq!(decode_body(&bytes[4..]).unwrap(), parts);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(body in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = decode_body(&body);
        }
    }
}

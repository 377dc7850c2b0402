//! The launcher's status trailer and the scanner that finds it in the stdout stream.
//!
//! After the program (or a failed compile) ends, the launcher writes one record to stdout, in one
//! write: `b"\0ONPYRUNNER-STATUS " + nonce + b" " + json + b"\n"`, where json is `RunStatus` as
//! JSON. User code does not know the nonce, so it cannot forge it; a record with another nonce is
//! plain output and passes through unchanged.
//!
//! `StatusScanner` is fed the stdout chunks in order. It passes user bytes through unchanged and
//! holds back only a tail that could still be the start of the marker (at most marker len - 1
//! bytes), released as soon as the next chunk shows it is not. Once the full marker and its line
//! are seen, it yields the status; bytes after that line are discarded (left-over processes).
//! A marker whose JSON does not parse, or whose line exceeds `MAX_STATUS_LINE_LEN`, yields
//! `Err(reason)`.
pub use crate::run::{Stage, Usage};
use bytes::{Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// What the launcher measured about the stage that ended the run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunStatus {
    #[serde(flatten)]
    pub usage: Usage,
    /// Set when the launcher itself failed (bad frame, spawn failure...).
    pub error: Option<String>,
}

pub const MARKER_PREFIX: &[u8] = b"\0ONPYRUNNER-STATUS ";

/// Longest JSON line accepted after the marker. Only the launcher knows the nonce, so a longer
/// line means a broken launcher; the bound keeps the scanner's memory fixed regardless.
pub const MAX_STATUS_LINE_LEN: usize = 64 * 1024;

/// Encode the trailer the launcher writes.
///
/// Compact JSON escapes control characters inside strings, so the only newline is the last byte.
pub fn encode_status(nonce: &str, status: &RunStatus) -> Vec<u8> {
    let json = serde_json::to_vec(status).expect("RunStatus always serializes");
    let mut out = Vec::with_capacity(MARKER_PREFIX.len() + nonce.len() + 1 + json.len() + 1);
    out.extend_from_slice(MARKER_PREFIX);
    out.extend_from_slice(nonce.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct ScanOutput {
    /// User bytes that are safe to forward now.
    pub output: Bytes,
    /// The status, once the whole trailer line has been seen.
    pub status: Option<Result<RunStatus, String>>,
}

enum State {
    /// Passing user bytes through. `held` is a proper prefix of the marker that ended the last
    /// chunk; it is empty whenever no marker can be in progress.
    Scanning { held: Vec<u8> },
    /// The full marker was seen; collecting the JSON up to the newline.
    Line { line: Vec<u8> },
    /// The status was yielded; everything after it is discarded.
    Done,
}

/// Finds this run's status trailer in stdout. See the module docs.
pub struct StatusScanner {
    /// `MARKER_PREFIX + nonce + " "`.
    marker: Vec<u8>,
    state: State,
}

impl StatusScanner {
    /// `nonce` should pass `launch::validate_nonce`; with any other nonce the scanner is still
    /// correct, only slower on output full of NUL bytes.
    pub fn new(nonce: &str) -> Self {
        let mut marker = Vec::with_capacity(MARKER_PREFIX.len() + nonce.len() + 1);
        marker.extend_from_slice(MARKER_PREFIX);
        marker.extend_from_slice(nonce.as_bytes());
        marker.push(b' ');
        StatusScanner {
            marker,
            state: State::Scanning { held: Vec::new() },
        }
    }

    /// Feed the next stdout chunk.
    pub fn push(&mut self, chunk: &[u8]) -> ScanOutput {
        if matches!(self.state, State::Done) {
            return ScanOutput::default();
        }
        let mut out = BytesMut::new();
        let status = self.scan(chunk, &mut out);
        ScanOutput {
            output: out.freeze(),
            status,
        }
    }

    /// The stream ended: release anything held back (an incomplete marker is plain output).
    ///
    /// A full marker whose line never ended is released too: with no status, the caller reports
    /// the launcher's failure, and the user sees what was actually written.
    pub fn finish(&mut self) -> Bytes {
        match std::mem::replace(&mut self.state, State::Scanning { held: Vec::new() }) {
            State::Scanning { held } => Bytes::from(held),
            State::Line { line } => {
                let mut out = Vec::with_capacity(self.marker.len() + line.len());
                out.extend_from_slice(&self.marker);
                out.extend_from_slice(&line);
                Bytes::from(out)
            }
            State::Done => {
                self.state = State::Done;
                Bytes::new()
            }
        }
    }

    /// True once the status was found; later pushes return nothing.
    pub fn done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Number of bytes currently held back (a partial marker or a status line in progress).
    pub fn held_len(&self) -> usize {
        match &self.state {
            State::Scanning { held } => held.len(),
            State::Line { line } => self.marker.len() + line.len(),
            State::Done => 0,
        }
    }

    fn scan(&mut self, mut input: &[u8], out: &mut BytesMut) -> Option<Result<RunStatus, String>> {
        loop {
            match &mut self.state {
                State::Done => return None,
                State::Line { line } => {
                    let Some(end) = memchr::memchr(b'\n', input) else {
                        if line.len() + input.len() > MAX_STATUS_LINE_LEN {
                            self.state = State::Done;
                            return Some(Err(format!(
                                "status line exceeds {MAX_STATUS_LINE_LEN} bytes"
                            )));
                        }
                        line.extend_from_slice(input);
                        return None;
                    };
                    if line.len() + end > MAX_STATUS_LINE_LEN {
                        self.state = State::Done;
                        return Some(Err(format!(
                            "status line exceeds {MAX_STATUS_LINE_LEN} bytes"
                        )));
                    }
                    line.extend_from_slice(&input[..end]);
                    let parsed = serde_json::from_slice::<RunStatus>(line)
                        .map_err(|e| format!("status line is not valid RunStatus JSON: {e}"));
                    self.state = State::Done;
                    return Some(parsed);
                }
                State::Scanning { held } => {
                    if held.is_empty() {
                        // The marker starts with its only NUL (the nonce is alphanumeric), so
                        // everything before the next NUL is user output.
                        let Some(at) = memchr::memchr(self.marker[0], input) else {
                            out.extend_from_slice(input);
                            return None;
                        };
                        out.extend_from_slice(&input[..at]);
                        input = &input[at..];
                    }
                    let k = held.len();
                    let want = &self.marker[k..];
                    let n = want.len().min(input.len());
                    if input[..n] == want[..n] {
                        if n == want.len() {
                            self.state = State::Line { line: Vec::new() };
                            input = &input[n..];
                            continue;
                        }
                        // The chunk ended inside the marker.
                        held.extend_from_slice(input);
                        return None;
                    }
                    if k == 0 {
                        out.extend_from_slice(&input[..1]);
                        input = &input[1..];
                        continue;
                    }
                    // The held bytes are not the marker. A marker could only start later in
                    // them, so rescan them as fresh input, then go on with this chunk.
                    let old = std::mem::take(held);
                    out.extend_from_slice(&old[..1]);
                    if let Some(status) = self.scan(&old[1..], out) {
                        return Some(status);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NONCE: &str = "abc123";

    fn status() -> RunStatus {
        RunStatus {
            usage: Usage {
                stage: Stage::Run,
                exit_code: Some(3),
                signal: None,
                wall_ms: 1234,
                cpu_ms: 1000,
                memory_kib: 20480,
            },
            error: Some("line\nbreak \0 and NUL".into()),
        }
    }

    /// Everything a caller gets from feeding `chunks` and then calling `finish`.
    #[derive(Debug, Default)]
    struct Scanned {
        output: Vec<u8>,
        statuses: Vec<Result<RunStatus, String>>,
    }

    fn scan_chunks(nonce: &str, chunks: &[&[u8]]) -> Scanned {
        let mut scanner = StatusScanner::new(nonce);
        let marker_len = MARKER_PREFIX.len() + nonce.len() + 1;
        let mut scanned = Scanned::default();
        let mut fed = 0;
        for chunk in chunks {
            fed += chunk.len();
            let out = scanner.push(chunk);
            scanned.output.extend_from_slice(&out.output);
            scanned.statuses.extend(out.status);
            if !scanner.done() && !matches!(scanner.state, State::Line { .. }) {
                // Only a possible partial marker may be held back.
                assert!(scanner.held_len() < marker_len);
                assert_eq!(scanned.output.len() + scanner.held_len(), fed);
            }
        }
        scanned.output.extend_from_slice(&scanner.finish());
        scanned
    }

    fn all_splits(input: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut splits = vec![vec![input]];
        for i in 0..=input.len() {
            splits.push(vec![&input[..i], &input[i..]]);
        }
        splits.push(input.chunks(1).collect());
        splits.push(input.chunks(3).collect());
        splits
    }

    fn for_every_split(nonce: &str, input: &[u8], check: impl Fn(&Scanned)) {
        for chunks in all_splits(input) {
            check(&scan_chunks(nonce, &chunks));
        }
    }

    #[test]
    fn status_is_found_in_every_split_and_later_bytes_are_discarded() {
        let mut input = b"hello\0world\n\0ONPYRUNNER-STAT".to_vec();
        input.extend_from_slice(&encode_status(NONCE, &status()));
        input.extend_from_slice(b"left-over process output");
        for_every_split(NONCE, &input, |s| {
            assert_eq!(s.output, b"hello\0world\n\0ONPYRUNNER-STAT");
            assert_eq!(s.statuses, vec![Ok(status())]);
        });
    }

    #[test]
    fn output_without_a_marker_passes_through_in_every_split() {
        let input = b"plain \0 text with NULs\0\0 and \0ONPY partial markers\0ONPYRUNNER-STATUS";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses.is_empty());
        });
    }

    #[test]
    fn marker_with_another_nonce_is_plain_output() {
        let mut input = encode_status("other1", &status());
        input.extend_from_slice(&encode_status("abc1234", &status()));
        input.extend_from_slice(&encode_status("abc12", &status()));
        for_every_split(NONCE, &input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses.is_empty());
        });
    }

    #[test]
    fn forged_marker_before_the_real_one_is_output() {
        let mut input = encode_status("guess", &status());
        let forged_len = input.len();
        let mut real = status();
        real.usage.exit_code = Some(0);
        input.extend_from_slice(&encode_status(NONCE, &real));
        for_every_split(NONCE, &input, |s| {
            assert_eq!(s.output, &input[..forged_len]);
            assert_eq!(s.statuses, vec![Ok(real.clone())]);
        });
    }

    #[test]
    fn partial_marker_is_released_at_finish() {
        let input = b"out\0ONPYRUNNER-STATUS abc1";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses.is_empty());
        });
    }

    #[test]
    fn marker_without_its_line_end_is_released_at_finish() {
        let input = b"out\0ONPYRUNNER-STATUS abc123 {\"stage\":";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses.is_empty());
        });
    }

    #[test]
    fn held_bytes_are_released_as_soon_as_disproved() {
        let mut scanner = StatusScanner::new(NONCE);
        let out = scanner.push(b"abc\0ONPY");
        assert_eq!(&out.output[..], b"abc");
        assert_eq!(scanner.held_len(), 5);
        let out = scanner.push(b"THON");
        assert_eq!(&out.output[..], b"\0ONPYTHON");
        assert_eq!(scanner.held_len(), 0);
    }

    #[test]
    fn held_bytes_end_where_a_new_marker_begins() {
        let mut scanner = StatusScanner::new(NONCE);
        assert_eq!(&scanner.push(b"\0ONPY").output[..], b"");
        let out = scanner.push(b"\0ONPYRUNNER");
        assert_eq!(&out.output[..], b"\0ONPY");
        assert_eq!(scanner.held_len(), 11);
        let out = scanner.push(&encode_status(NONCE, &status())[11..]);
        assert_eq!(out.status, Some(Ok(status())));
        assert!(out.output.is_empty());
    }

    #[test]
    fn chunks_without_nul_are_forwarded_whole() {
        let mut scanner = StatusScanner::new(NONCE);
        let big = vec![b'x'; 1 << 20];
        let out = scanner.push(&big);
        assert_eq!(out.output.len(), big.len());
        assert_eq!(scanner.held_len(), 0);
    }

    #[test]
    fn invalid_json_is_an_error_status() {
        let mut input = b"\0ONPYRUNNER-STATUS abc123 {not json}\n".to_vec();
        input.extend_from_slice(b"after");
        for_every_split(NONCE, &input, |s| {
            assert!(s.output.is_empty());
            assert_eq!(s.statuses.len(), 1);
            assert!(s.statuses[0].as_ref().unwrap_err().contains("JSON"));
        });
    }

    #[test]
    fn over_long_status_line_is_an_error_status() {
        let mut scanner = StatusScanner::new(NONCE);
        assert_eq!(scanner.push(b"\0ONPYRUNNER-STATUS abc123 ").status, None);
        let filler = vec![b'x'; MAX_STATUS_LINE_LEN / 2];
        assert_eq!(scanner.push(&filler).status, None);
        let out = scanner.push(&filler);
        assert_eq!(out.status, None, "exactly the limit is still accepted");
        let out = scanner.push(b"y");
        assert!(out.status.unwrap().unwrap_err().contains("exceeds"));
        assert!(scanner.done());
    }

    #[test]
    fn nothing_is_returned_after_the_status() {
        let mut scanner = StatusScanner::new(NONCE);
        let out = scanner.push(&encode_status(NONCE, &status()));
        assert_eq!(out.status, Some(Ok(status())));
        assert!(scanner.done());
        assert_eq!(scanner.push(b"more"), ScanOutput::default());
        assert_eq!(
            scanner.push(&encode_status(NONCE, &status())),
            ScanOutput::default()
        );
        assert!(scanner.finish().is_empty());
        assert!(scanner.done());
    }

    #[test]
    fn encode_status_is_one_line_of_json_after_the_marker() {
        let record = encode_status(NONCE, &status());
        let rest = record.strip_prefix(MARKER_PREFIX).unwrap();
        let rest = rest.strip_prefix(b"abc123 ").unwrap();
        let json = rest.strip_suffix(b"\n").unwrap();
        assert!(!json.contains(&b'\n'));
        assert_eq!(serde_json::from_slice::<RunStatus>(json).unwrap(), status());
        let text = String::from_utf8(json.to_vec()).unwrap();
        assert!(text.contains("\"stage\":\"run\""), "{text}");
    }

    #[test]
    fn odd_nonce_with_nul_is_still_scanned_correctly() {
        // Not a valid nonce, but the scanner must not lose or invent bytes for it either.
        let nonce = "a\0b";
        let mut input = b"\0ONPYRUNNER-STATUS a\0ONPYRUNNER-STATUS a".to_vec();
        let user_len = input.len();
        input.extend_from_slice(&encode_status(nonce, &status()));
        for_every_split(nonce, &input, |s| {
            assert_eq!(s.output, &input[..user_len]);
            assert_eq!(s.statuses, vec![Ok(status())]);
        });
    }

    fn run_status() -> impl Strategy<Value = RunStatus> {
        (
            prop_oneof![Just(Stage::Compile), Just(Stage::Run)],
            any::<Option<i32>>(),
            any::<Option<i32>>(),
            any::<u64>(),
            any::<u64>(),
            any::<u64>(),
            any::<Option<String>>(),
        )
            .prop_map(
                |(stage, exit_code, signal, wall_ms, cpu_ms, memory_kib, error)| RunStatus {
                    usage: Usage {
                        stage,
                        exit_code,
                        signal,
                        wall_ms,
                        cpu_ms,
                        memory_kib,
                    },
                    error,
                },
            )
    }

    /// User output rich in NULs and marker fragments, the inputs most likely to confuse.
    fn user_output() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            Just(b"\0".to_vec()),
            (0..MARKER_PREFIX.len()).prop_map(|n| MARKER_PREFIX[..n].to_vec()),
            Just(b"\0ONPYRUNNER-STATUS abc12".to_vec()),
            Just(b"\0ONPYRUNNER-STATUS xyz ".to_vec()),
        ];
        proptest::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
    }

    fn split_at_points<'a>(input: &'a [u8], points: &[usize]) -> Vec<&'a [u8]> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for cut in cuts {
            chunks.push(&input[start..cut]);
            start = cut;
        }
        chunks.push(&input[start..]);
        chunks
    }

    proptest! {
        #[test]
        fn encoded_status_is_found_after_any_user_output(
            nonce in "[A-Za-z0-9]{1,64}",
            user in user_output(),
            status in run_status(),
            after in proptest::collection::vec(any::<u8>(), 0..64),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let marker = [MARKER_PREFIX, nonce.as_bytes(), b" "].concat();
            prop_assume!(!user.windows(marker.len()).any(|w| w == marker));
            let mut input = user.clone();
            input.extend_from_slice(&encode_status(&nonce, &status));
            input.extend_from_slice(&after);
            let scanned = scan_chunks(&nonce, &split_at_points(&input, &points));
            prop_assert_eq!(scanned.output, user);
            prop_assert_eq!(scanned.statuses, vec![Ok(status)]);
        }

        #[test]
        fn output_without_the_marker_is_unchanged(
            user in user_output(),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let marker = b"\0ONPYRUNNER-STATUS abc123 ";
            prop_assume!(!user.windows(marker.len()).any(|w| w == marker));
            let scanned = scan_chunks(NONCE, &split_at_points(&user, &points));
            prop_assert_eq!(scanned.output, user);
            prop_assert!(scanned.statuses.is_empty());
        }
    }
}

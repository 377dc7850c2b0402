//! The launcher's records and the scanner that finds them in the stdout and stderr streams.
//!
//! The launcher writes records to stdout and to stderr, each in one write:
//! `b"\0ONPYRUNNER-STATUS " + nonce + b" " + json + b"\n"`, where json is a [`Record`] as JSON.
//! User code does not know the nonce, so it cannot forge one; a record with another nonce is
//! plain output and passes through unchanged.
//!
//! Three records exist: [`Record::Compiled`], written when the compile stage succeeded and the run
//! stage starts (the supervisor moves the run to the run stage's clock and output budget),
//! [`Record::Test`], written when one test of a judged run ended, and [`Record::Status`], the trailer written when the stage that ends the run is over. Records
//! come on both streams because Docker copies the two pipes independently: what a stream held
//! before its record belongs to the stage before it.
//!
//! `RecordScanner` is fed a stream's chunks in order and returns [`Piece`]s in order: user bytes,
//! passed through unchanged, and records. It holds back only a tail that could still be the start
//! of the marker (at most marker len - 1 bytes), released as soon as the next chunk shows it is
//! not. After the status record, bytes are discarded (left-over processes). A marker whose JSON
//! does not parse, or whose line exceeds `MAX_STATUS_LINE_LEN`, yields `Err(reason)` and ends
//! the scan as a status would.
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

/// One record of the launcher's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// The compile stage succeeded (what it used); the run stage starts now.
    Compiled(Usage),
    /// One test of a judged run ended; the next one starts now.
    Test(TestEnded),
    /// The stage that ends the run is over. The last record.
    Status(RunStatus),
}

/// What the launcher measured of one test of a judged run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TestEnded {
    /// Its place in the run's tests, from 0.
    pub index: u32,
    #[serde(flatten)]
    pub usage: Usage,
    /// The launcher killed it at the test's wall clock.
    pub timed_out: bool,
    /// The kernel's OOM killer struck while it ran (the container's memory.events says so).
    pub memory_exceeded: bool,
}

/// A scanned stream, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// User bytes, safe to forward.
    Output(Bytes),
    /// A record, or why a marker's line is not one (which ends the scan).
    Record(Result<Record, String>),
}

pub const MARKER_PREFIX: &[u8] = b"\0ONPYRUNNER-STATUS ";

/// The version of the records above; a launcher and a supervisor must agree on it (it is part
/// of every image's recipe). 1 had only the status; 2 added the compiled and test records and
/// the tag; 3 is 2 with judged
/// tests of a language with a `judge_server` forked from it.
pub const RECORDS_VERSION: u32 = 3;

/// Longest JSON line accepted after the marker. Only the launcher knows the nonce, so a longer
/// line means a broken launcher; the bound keeps the scanner's memory fixed regardless.
pub const MAX_STATUS_LINE_LEN: usize = 64 * 1024;

/// Encode a record as the launcher writes it.
///
/// Compact JSON escapes control characters inside strings, so the only newline is the last byte.
pub fn encode_record(nonce: &str, record: &Record) -> Vec<u8> {
    let json = serde_json::to_vec(record).expect("a Record always serializes");
    let mut out = Vec::with_capacity(MARKER_PREFIX.len() + nonce.len() + 1 + json.len() + 1);
    out.extend_from_slice(MARKER_PREFIX);
    out.extend_from_slice(nonce.as_bytes());
    out.push(b' ');
    out.extend_from_slice(&json);
    out.push(b'\n');
    out
}

/// Encode the status trailer.
pub fn encode_status(nonce: &str, status: &RunStatus) -> Vec<u8> {
    encode_record(nonce, &Record::Status(status.clone()))
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

/// Finds this run's records in one stream. See the module docs.
pub struct RecordScanner {
    /// `MARKER_PREFIX + nonce + " "`.
    marker: Vec<u8>,
    state: State,
}

/// Collects a push's pieces, joining adjacent output.
#[derive(Default)]
struct Pieces {
    pieces: Vec<Piece>,
    out: BytesMut,
}

impl Pieces {
    fn output(&mut self, bytes: &[u8]) {
        self.out.extend_from_slice(bytes);
    }

    fn record(&mut self, record: Result<Record, String>) {
        self.flush();
        self.pieces.push(Piece::Record(record));
    }

    fn flush(&mut self) {
        if !self.out.is_empty() {
            self.pieces.push(Piece::Output(self.out.split().freeze()));
        }
    }

    fn into_vec(mut self) -> Vec<Piece> {
        self.flush();
        self.pieces
    }
}

impl RecordScanner {
    /// `nonce` should pass `launch::validate_nonce`; with any other nonce the scanner is still
    /// correct, only slower on output full of NUL bytes.
    pub fn new(nonce: &str) -> Self {
        let mut marker = Vec::with_capacity(MARKER_PREFIX.len() + nonce.len() + 1);
        marker.extend_from_slice(MARKER_PREFIX);
        marker.extend_from_slice(nonce.as_bytes());
        marker.push(b' ');
        RecordScanner {
            marker,
            state: State::Scanning { held: Vec::new() },
        }
    }

    /// Feed the next chunk; what it completes, in order.
    pub fn push(&mut self, chunk: &[u8]) -> Vec<Piece> {
        let mut pieces = Pieces::default();
        self.scan(chunk, &mut pieces);
        pieces.into_vec()
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

    /// Number of bytes currently held back (a partial marker or a record line in progress).
    pub fn held_len(&self) -> usize {
        match &self.state {
            State::Scanning { held } => held.len(),
            State::Line { line } => self.marker.len() + line.len(),
            State::Done => 0,
        }
    }

    fn scan(&mut self, mut input: &[u8], out: &mut Pieces) {
        loop {
            match &mut self.state {
                State::Done => return,
                State::Line { line } => {
                    let end = memchr::memchr(b'\n', input);
                    let take = end.unwrap_or(input.len());
                    if line.len() + take > MAX_STATUS_LINE_LEN {
                        self.state = State::Done;
                        out.record(Err(format!(
                            "status line exceeds {MAX_STATUS_LINE_LEN} bytes"
                        )));
                        return;
                    }
                    line.extend_from_slice(&input[..take]);
                    let Some(end) = end else {
                        return;
                    };
                    let parsed = serde_json::from_slice::<Record>(line)
                        .map_err(|e| format!("status line is not a valid record: {e}"));
                    let last = !matches!(parsed, Ok(Record::Compiled(_) | Record::Test(_)));
                    out.record(parsed);
                    if last {
                        self.state = State::Done;
                        return;
                    }
                    self.state = State::Scanning { held: Vec::new() };
                    input = &input[end + 1..];
                }
                State::Scanning { held } => {
                    if held.is_empty() {
                        // The marker starts with its only NUL (the nonce is alphanumeric), so
                        // everything before the next NUL is user output.
                        let Some(at) = memchr::memchr(self.marker[0], input) else {
                            out.output(input);
                            return;
                        };
                        out.output(&input[..at]);
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
                        return;
                    }
                    if k == 0 {
                        out.output(&input[..1]);
                        input = &input[1..];
                        continue;
                    }
                    // The held bytes are not the marker. A marker could only start later in
                    // them, so rescan them as fresh input, then go on with this chunk.
                    let old = std::mem::take(held);
                    out.output(&old[..1]);
                    self.scan(&old[1..], out);
                    if self.done() {
                        return;
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
        /// All user bytes.
        output: Vec<u8>,
        /// The records, each with how many user bytes came before it.
        records: Vec<(usize, Result<Record, String>)>,
    }

    impl Scanned {
        fn statuses(&self) -> Vec<Result<RunStatus, String>> {
            self.records
                .iter()
                .filter_map(|(_, r)| match r {
                    Ok(Record::Status(s)) => Some(Ok(s.clone())),
                    Ok(Record::Compiled(_) | Record::Test(_)) => None,
                    Err(e) => Some(Err(e.clone())),
                })
                .collect()
        }
    }

    /// Output and the first status of one push.
    fn split(pieces: Vec<Piece>) -> (Vec<u8>, Option<Result<Record, String>>) {
        let mut output = Vec::new();
        let mut record = None;
        for piece in pieces {
            match piece {
                Piece::Output(bytes) => output.extend_from_slice(&bytes),
                Piece::Record(r) => {
                    record.get_or_insert(r);
                }
            }
        }
        (output, record)
    }

    fn scan_chunks(nonce: &str, chunks: &[&[u8]]) -> Scanned {
        let mut scanner = RecordScanner::new(nonce);
        let marker_len = MARKER_PREFIX.len() + nonce.len() + 1;
        let mut scanned = Scanned::default();
        let mut fed = 0;
        for chunk in chunks {
            fed += chunk.len();
            for piece in scanner.push(chunk) {
                match piece {
                    Piece::Output(bytes) => {
                        assert!(!bytes.is_empty(), "no empty output pieces");
                        scanned.output.extend_from_slice(&bytes)
                    }
                    Piece::Record(r) => scanned.records.push((scanned.output.len(), r)),
                }
            }
            if !scanner.done() && !matches!(scanner.state, State::Line { .. }) {
                // Only a possible partial marker may be held back.
                assert!(scanner.held_len() < marker_len);
                if scanned.records.is_empty() {
                    assert_eq!(scanned.output.len() + scanner.held_len(), fed);
                }
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
            assert_eq!(s.statuses(), vec![Ok(status())]);
        });
    }

    #[test]
    fn output_without_a_marker_passes_through_in_every_split() {
        let input = b"plain \0 text with NULs\0\0 and \0ONPY partial markers\0ONPYRUNNER-STATUS";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses().is_empty());
        });
    }

    #[test]
    fn marker_with_another_nonce_is_plain_output() {
        let mut input = encode_status("other1", &status());
        input.extend_from_slice(&encode_status("abc1234", &status()));
        input.extend_from_slice(&encode_status("abc12", &status()));
        for_every_split(NONCE, &input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses().is_empty());
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
            assert_eq!(s.statuses(), vec![Ok(real.clone())]);
        });
    }

    #[test]
    fn partial_marker_is_released_at_finish() {
        let input = b"out\0ONPYRUNNER-STATUS abc1";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses().is_empty());
        });
    }

    #[test]
    fn marker_without_its_line_end_is_released_at_finish() {
        let input = b"out\0ONPYRUNNER-STATUS abc123 {\"stage\":";
        for_every_split(NONCE, input, |s| {
            assert_eq!(s.output, input);
            assert!(s.statuses().is_empty());
        });
    }

    #[test]
    fn held_bytes_are_released_as_soon_as_disproved() {
        let mut scanner = RecordScanner::new(NONCE);
        assert_eq!(split(scanner.push(b"abc\0ONPY")).0, b"abc");
        assert_eq!(scanner.held_len(), 5);
        assert_eq!(split(scanner.push(b"THON")).0, b"\0ONPYTHON");
        assert_eq!(scanner.held_len(), 0);
    }

    #[test]
    fn held_bytes_end_where_a_new_marker_begins() {
        let mut scanner = RecordScanner::new(NONCE);
        assert!(scanner.push(b"\0ONPY").is_empty());
        assert_eq!(split(scanner.push(b"\0ONPYRUNNER")).0, b"\0ONPY");
        assert_eq!(scanner.held_len(), 11);
        let (output, record) = split(scanner.push(&encode_status(NONCE, &status())[11..]));
        assert_eq!(record, Some(Ok(Record::Status(status()))));
        assert!(output.is_empty());
    }

    #[test]
    fn chunks_without_nul_are_forwarded_whole() {
        let mut scanner = RecordScanner::new(NONCE);
        let big = vec![b'x'; 1 << 20];
        let pieces = scanner.push(&big);
        assert_eq!(pieces.len(), 1);
        assert_eq!(split(pieces).0.len(), big.len());
        assert_eq!(scanner.held_len(), 0);
    }

    #[test]
    fn invalid_json_is_an_error_status() {
        let mut input = b"\0ONPYRUNNER-STATUS abc123 {not json}\n".to_vec();
        input.extend_from_slice(b"after");
        for_every_split(NONCE, &input, |s| {
            assert!(s.output.is_empty());
            assert_eq!(s.statuses().len(), 1);
            assert!(s.statuses()[0].as_ref().unwrap_err().contains("record"));
        });
    }

    #[test]
    fn over_long_status_line_is_an_error_status() {
        let mut scanner = RecordScanner::new(NONCE);
        assert!(scanner.push(b"\0ONPYRUNNER-STATUS abc123 ").is_empty());
        let filler = vec![b'x'; MAX_STATUS_LINE_LEN / 2];
        assert!(scanner.push(&filler).is_empty());
        assert!(
            scanner.push(&filler).is_empty(),
            "exactly the limit is still accepted"
        );
        let (_, record) = split(scanner.push(b"y"));
        assert!(record.unwrap().unwrap_err().contains("exceeds"));
        assert!(scanner.done());
    }

    #[test]
    fn nothing_is_returned_after_the_status() {
        let mut scanner = RecordScanner::new(NONCE);
        let (_, record) = split(scanner.push(&encode_status(NONCE, &status())));
        assert_eq!(record, Some(Ok(Record::Status(status()))));
        assert!(scanner.done());
        assert!(scanner.push(b"more").is_empty());
        assert!(scanner.push(&encode_status(NONCE, &status())).is_empty());
        assert!(scanner.finish().is_empty());
        assert!(scanner.done());
    }

    fn compiled() -> Usage {
        Usage {
            stage: Stage::Compile,
            exit_code: Some(0),
            signal: None,
            wall_ms: 900,
            cpu_ms: 800,
            memory_kib: 90_000,
        }
    }

    #[test]
    fn compile_output_run_output_and_the_status_come_in_order_in_every_split() {
        let mut input = b"warning: x\n".to_vec();
        input.extend_from_slice(&encode_record(NONCE, &Record::Compiled(compiled())));
        input.extend_from_slice(b"\0program");
        input.extend_from_slice(&encode_status(NONCE, &status()));
        input.extend_from_slice(b"left over");
        for_every_split(NONCE, &input, |s| {
            assert_eq!(s.output, b"warning: x\n\0program");
            assert_eq!(
                s.records,
                vec![
                    (11, Ok(Record::Compiled(compiled()))),
                    (19, Ok(Record::Status(status())))
                ]
            );
        });
    }

    #[test]
    fn compiled_record_is_tagged_and_status_record_keeps_its_fields() {
        let compiled = encode_record(NONCE, &Record::Compiled(compiled()));
        let text = String::from_utf8(compiled).unwrap();
        assert!(
            text.contains("{\"record\":\"compiled\",\"stage\":\"compile\""),
            "{text}"
        );
        let status = String::from_utf8(encode_status(NONCE, &status())).unwrap();
        assert!(status.contains("\"record\":\"status\""), "{status}");
        assert!(status.contains("\"exit_code\":3"), "{status}");
    }

    #[test]
    fn encode_status_is_one_line_of_json_after_the_marker() {
        let record = encode_status(NONCE, &status());
        let rest = record.strip_prefix(MARKER_PREFIX).unwrap();
        let rest = rest.strip_prefix(b"abc123 ").unwrap();
        let json = rest.strip_suffix(b"\n").unwrap();
        assert!(!json.contains(&b'\n'));
        assert_eq!(
            serde_json::from_slice::<Record>(json).unwrap(),
            Record::Status(status())
        );
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
            assert_eq!(s.statuses(), vec![Ok(status())]);
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
            prop_assert_eq!(scanned.statuses(), vec![Ok(status)]);
            prop_assert_eq!(scanned.output, user);
        }

        #[test]
        fn output_of_both_stages_is_kept_apart_by_the_compiled_record(
            before in user_output(),
            after in user_output(),
            status in run_status(),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let marker = b"\0ONPYRUNNER-STATUS abc123 ";
            let clean = |u: &[u8]| !u.windows(marker.len()).any(|w| w == marker);
            prop_assume!(clean(&before) && clean(&after));
            let mut input = before.clone();
            input.extend_from_slice(&encode_record(NONCE, &Record::Compiled(compiled())));
            input.extend_from_slice(&after);
            input.extend_from_slice(&encode_status(NONCE, &status));
            let scanned = scan_chunks(NONCE, &split_at_points(&input, &points));
            prop_assert_eq!(scanned.records, vec![
                (before.len(), Ok(Record::Compiled(compiled()))),
                (before.len() + after.len(), Ok(Record::Status(status))),
            ]);
            prop_assert_eq!(scanned.output, [before, after].concat());
        }

        #[test]
        fn output_without_the_marker_is_unchanged(
            user in user_output(),
            points in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let marker = b"\0ONPYRUNNER-STATUS abc123 ";
            prop_assume!(!user.windows(marker.len()).any(|w| w == marker));
            let scanned = scan_chunks(NONCE, &split_at_points(&user, &points));
            prop_assert!(scanned.statuses().is_empty());
            prop_assert_eq!(scanned.output, user);
        }
    }
}

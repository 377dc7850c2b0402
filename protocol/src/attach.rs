//! Decoder for Docker's attach stream (`POST /containers/{id}/attach`).
//!
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
//!
//! After an error the decoder does not consume the offending bytes, so decoding again reports
//! the same error; callers treat any error as the end of the stream.
use bytes::{Buf, BufMut, Bytes, BytesMut};
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

impl StreamKind {
    /// The stream byte of a multiplexed frame header.
    pub fn as_byte(self) -> u8 {
        match self {
            StreamKind::Stdin => 0,
            StreamKind::Stdout => 1,
            StreamKind::Stderr => 2,
            StreamKind::System => 3,
        }
    }
}

impl TryFrom<u8> for StreamKind {
    type Error = AttachError;
    fn try_from(byte: u8) -> Result<Self, AttachError> {
        match byte {
            0 => Ok(StreamKind::Stdin),
            1 => Ok(StreamKind::Stdout),
            2 => Ok(StreamKind::Stderr),
            3 => Ok(StreamKind::System),
            other => Err(AttachError::UnknownStream(other)),
        }
    }
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

/// Length of a multiplexed frame header.
pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Header,
    /// `remaining` is never 0: a frame whose payload is done goes back to `Header`.
    Payload {
        stream: StreamKind,
        remaining: u32,
    },
}

#[derive(Debug, Clone)]
pub struct AttachDecoder {
    mode: AttachMode,
    /// Always >= 1, so every item carries at least one byte.
    max_chunk: usize,
    state: State,
}

impl AttachDecoder {
    pub fn new(mode: AttachMode) -> Self {
        Self::with_max_chunk(mode, DEFAULT_MAX_CHUNK)
    }

    /// A `max_chunk` of 0 is taken as 1: an empty item would look like progress forever.
    pub fn with_max_chunk(mode: AttachMode, max_chunk: usize) -> Self {
        AttachDecoder {
            mode,
            max_chunk: max_chunk.max(1),
            state: State::Header,
        }
    }

    fn decode_multiplexed(
        &mut self,
        src: &mut BytesMut,
    ) -> Result<Option<AttachChunk>, AttachError> {
        loop {
            match self.state {
                State::Header => {
                    if src.len() < HEADER_LEN {
                        src.reserve(HEADER_LEN - src.len());
                        return Ok(None);
                    }
                    let header: [u8; HEADER_LEN] = src[..HEADER_LEN]
                        .try_into()
                        .expect("slice has header length");
                    if header[1..4] != [0, 0, 0] {
                        return Err(AttachError::BadHeader(header));
                    }
                    let stream = StreamKind::try_from(header[0])?;
                    let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
                    src.advance(HEADER_LEN);
                    if len > 0 {
                        self.state = State::Payload {
                            stream,
                            remaining: len,
                        };
                    }
                }
                State::Payload { stream, remaining } => {
                    if src.is_empty() {
                        return Ok(None);
                    }
                    let n = src.len().min(self.max_chunk).min(remaining as usize);
                    let data = src.split_to(n).freeze();
                    // n <= remaining, so this cannot wrap.
                    let left = remaining - n as u32;
                    self.state = if left == 0 {
                        State::Header
                    } else {
                        State::Payload {
                            stream,
                            remaining: left,
                        }
                    };
                    return Ok(Some(AttachChunk { stream, data }));
                }
            }
        }
    }
}

impl Decoder for AttachDecoder {
    type Item = AttachChunk;
    type Error = AttachError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<AttachChunk>, AttachError> {
        match self.mode {
            AttachMode::Multiplexed => self.decode_multiplexed(src),
            AttachMode::Tty => {
                if src.is_empty() {
                    return Ok(None);
                }
                let n = src.len().min(self.max_chunk);
                Ok(Some(AttachChunk {
                    stream: StreamKind::Stdout,
                    data: src.split_to(n).freeze(),
                }))
            }
        }
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<AttachChunk>, AttachError> {
        if let Some(chunk) = self.decode(src)? {
            return Ok(Some(chunk));
        }
        if self.mode == AttachMode::Tty {
            return Ok(None);
        }
        // `decode` drains every buffered payload byte, so what is left is a partial header.
        match self.state {
            State::Header if src.is_empty() => Ok(None),
            State::Header => Err(AttachError::Truncated {
                where_: "header",
                missing: (HEADER_LEN - src.len()) as u64,
            }),
            State::Payload { remaining, .. } => Err(AttachError::Truncated {
                where_: "payload",
                missing: u64::from(remaining),
            }),
        }
    }
}

/// Encode one multiplexed frame (for tests, fakes and fuzzing).
///
/// A payload longer than `u32::MAX` is written as several frames, which decode to the same bytes.
pub fn encode_frame(stream: StreamKind, payload: &[u8], dst: &mut BytesMut) {
    const MAX_FRAME: usize = u32::MAX as usize;
    let frames = payload.len().div_ceil(MAX_FRAME).max(1);
    dst.reserve(frames * HEADER_LEN + payload.len());
    let mut rest = payload;
    loop {
        let (part, tail) = rest.split_at(rest.len().min(MAX_FRAME));
        dst.put_slice(&[stream.as_byte(), 0, 0, 0]);
        dst.put_u32(u32::try_from(part.len()).expect("part is at most u32::MAX bytes"));
        dst.put_slice(part);
        rest = tail;
        if rest.is_empty() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// What a `FramedRead` would see: the items in order, then the error that ended the stream.
    #[derive(Debug, Default)]
    struct Decoded {
        chunks: Vec<AttachChunk>,
        error: Option<AttachError>,
    }

    impl Decoded {
        fn stream(&self, kind: StreamKind) -> Vec<u8> {
            self.chunks
                .iter()
                .filter(|c| c.stream == kind)
                .flat_map(|c| c.data.iter().copied())
                .collect()
        }

        /// Adjacent chunks of one stream merged: chunk boundaries are not part of the contract.
        fn coalesced(&self) -> Vec<(StreamKind, Vec<u8>)> {
            coalesce(self.chunks.iter().map(|c| (c.stream, c.data.to_vec())))
        }
    }

    fn coalesce(
        parts: impl IntoIterator<Item = (StreamKind, Vec<u8>)>,
    ) -> Vec<(StreamKind, Vec<u8>)> {
        let mut out: Vec<(StreamKind, Vec<u8>)> = Vec::new();
        for (stream, data) in parts {
            if data.is_empty() {
                continue;
            }
            match out.last_mut() {
                Some((last, bytes)) if *last == stream => bytes.extend_from_slice(&data),
                _ => out.push((stream, data)),
            }
        }
        out
    }

    /// Feed `reads` one by one as a `FramedRead` does (decode until `None`, then at EOF
    /// `decode_eof` until `None`), checking every item is non-empty and within `max_chunk`.
    fn decode_reads(mode: AttachMode, max_chunk: usize, reads: &[&[u8]]) -> Decoded {
        let mut decoder = AttachDecoder::with_max_chunk(mode, max_chunk);
        let mut buf = BytesMut::new();
        let mut out = Decoded::default();
        let mut step = |decoder: &mut AttachDecoder, buf: &mut BytesMut, eof: bool| loop {
            let res = if eof {
                decoder.decode_eof(buf)
            } else {
                decoder.decode(buf)
            };
            match res {
                Ok(Some(chunk)) => {
                    assert!(!chunk.data.is_empty(), "empty item");
                    assert!(chunk.data.len() <= max_chunk.max(1), "item over max_chunk");
                    out.chunks.push(chunk);
                }
                Ok(None) => return true,
                Err(e) => {
                    out.error = Some(e);
                    return false;
                }
            }
        };
        for read in reads {
            buf.extend_from_slice(read);
            if !step(&mut decoder, &mut buf, false) {
                return out;
            }
        }
        step(&mut decoder, &mut buf, true);
        out
    }

    /// Every way of reading `input`: whole, split once at every position, split at every pair of
    /// positions, and byte by byte.
    fn all_splits(input: &[u8]) -> Vec<Vec<&[u8]>> {
        let mut splits = vec![vec![input]];
        for i in 0..=input.len() {
            splits.push(vec![&input[..i], &input[i..]]);
            for j in i..=input.len() {
                splits.push(vec![&input[..i], &input[i..j], &input[j..]]);
            }
        }
        splits.push(input.chunks(1).collect());
        splits
    }

    /// Decode `input` in every split with several chunk limits; all must agree with `check`.
    fn for_every_split(mode: AttachMode, input: &[u8], check: impl Fn(&Decoded)) {
        for reads in all_splits(input) {
            for max_chunk in [1, 2, 3, 7, DEFAULT_MAX_CHUNK] {
                let decoded = decode_reads(mode, max_chunk, &reads);
                check(&decoded);
            }
        }
    }

    fn frames(parts: &[(StreamKind, &[u8])]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        for (stream, payload) in parts {
            encode_frame(*stream, payload, &mut buf);
        }
        buf.to_vec()
    }

    #[test]
    fn decode_frames_split_at_every_position() {
        let input = frames(&[
            (StreamKind::Stdout, b"hello "),
            (StreamKind::Stderr, b"oops\n"),
            (StreamKind::Stdout, b""),
            (StreamKind::Stdout, b"world\n"),
            (StreamKind::System, b"err"),
            (StreamKind::Stdin, b"in"),
        ]);
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert_eq!(d.error, None);
            assert_eq!(d.stream(StreamKind::Stdout), b"hello world\n");
            assert_eq!(d.stream(StreamKind::Stderr), b"oops\n");
            assert_eq!(d.stream(StreamKind::System), b"err");
            assert_eq!(d.stream(StreamKind::Stdin), b"in");
            assert_eq!(
                d.coalesced(),
                vec![
                    (StreamKind::Stdout, b"hello ".to_vec()),
                    (StreamKind::Stderr, b"oops\n".to_vec()),
                    (StreamKind::Stdout, b"world\n".to_vec()),
                    (StreamKind::System, b"err".to_vec()),
                    (StreamKind::Stdin, b"in".to_vec()),
                ]
            );
        });
    }

    #[test]
    fn decode_header_split_across_reads() {
        let input = frames(&[(StreamKind::Stderr, b"abc")]);
        let mut decoder = AttachDecoder::new(AttachMode::Multiplexed);
        let mut buf = BytesMut::from(&input[..5]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert_eq!(buf.len(), 5, "a partial header stays buffered");
        buf.extend_from_slice(&input[5..]);
        let chunk = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(chunk.stream, StreamKind::Stderr);
        assert_eq!(&chunk.data[..], b"abc");
        assert_eq!(decoder.decode_eof(&mut buf), Ok(None));
    }

    #[test]
    fn payload_is_yielded_before_the_frame_is_complete() {
        let input = frames(&[(StreamKind::Stdout, b"abcdef")]);
        let mut decoder = AttachDecoder::new(AttachMode::Multiplexed);
        let mut buf = BytesMut::from(&input[..HEADER_LEN + 2]);
        let chunk = decoder.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&chunk.data[..], b"ab");
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&input[HEADER_LEN + 2..]);
        assert_eq!(
            &decoder.decode(&mut buf).unwrap().unwrap().data[..],
            b"cdef"
        );
    }

    #[test]
    fn zero_length_frames_yield_nothing() {
        let input = frames(&[(StreamKind::Stdout, b""), (StreamKind::Stderr, b"")]);
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert_eq!(d.error, None);
            assert!(d.chunks.is_empty());
        });
    }

    #[test]
    fn empty_stream_is_a_clean_eof() {
        let d = decode_reads(AttachMode::Multiplexed, DEFAULT_MAX_CHUNK, &[]);
        assert!(d.chunks.is_empty());
        assert_eq!(d.error, None);
    }

    #[test]
    fn unknown_stream_byte_is_an_error_after_earlier_frames() {
        let mut input = frames(&[(StreamKind::Stdout, b"ok")]);
        input.extend_from_slice(&[4, 0, 0, 0, 0, 0, 0, 1, b'x']);
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert_eq!(d.stream(StreamKind::Stdout), b"ok");
            assert_eq!(d.error, Some(AttachError::UnknownStream(4)));
        });
    }

    #[test]
    fn unknown_stream_byte_255_is_an_error() {
        let input = [255, 0, 0, 0, 0, 0, 0, 0];
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert!(d.chunks.is_empty());
            assert_eq!(d.error, Some(AttachError::UnknownStream(255)));
        });
    }

    #[test]
    fn non_zero_padding_is_a_bad_header() {
        for pad in 1..4 {
            let mut header = [1, 0, 0, 0, 0, 0, 0, 2];
            header[pad] = 0x80;
            let mut input = frames(&[(StreamKind::Stderr, b"e")]);
            input.extend_from_slice(&header);
            input.extend_from_slice(b"zz");
            for_every_split(AttachMode::Multiplexed, &input, |d| {
                assert_eq!(d.stream(StreamKind::Stderr), b"e");
                assert_eq!(d.stream(StreamKind::Stdout), b"");
                assert_eq!(d.error, Some(AttachError::BadHeader(header)));
            });
        }
    }

    #[test]
    fn tty_output_decoded_as_multiplexed_is_a_bad_header() {
        let d = decode_reads(
            AttachMode::Multiplexed,
            DEFAULT_MAX_CHUNK,
            &[b"hello world\n"],
        );
        assert_eq!(d.error, Some(AttachError::BadHeader(*b"hello wo")));
    }

    #[test]
    fn eof_inside_header_is_truncation() {
        let mut input = frames(&[(StreamKind::Stdout, b"full")]);
        input.extend_from_slice(&[2, 0, 0]);
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert_eq!(d.stream(StreamKind::Stdout), b"full");
            assert_eq!(
                d.error,
                Some(AttachError::Truncated {
                    where_: "header",
                    missing: 5
                })
            );
        });
    }

    #[test]
    fn eof_inside_payload_is_truncation_after_the_bytes_that_arrived() {
        let mut input = frames(&[(StreamKind::Stderr, b"0123456789")]);
        input.truncate(HEADER_LEN + 4);
        for_every_split(AttachMode::Multiplexed, &input, |d| {
            assert_eq!(d.stream(StreamKind::Stderr), b"0123");
            assert_eq!(
                d.error,
                Some(AttachError::Truncated {
                    where_: "payload",
                    missing: 6
                })
            );
        });
    }

    #[test]
    fn eof_right_after_header_is_truncation_of_the_whole_payload() {
        let input = [1, 0, 0, 0, 0, 0, 1, 0];
        let d = decode_reads(AttachMode::Multiplexed, DEFAULT_MAX_CHUNK, &[&input]);
        assert_eq!(
            d.error,
            Some(AttachError::Truncated {
                where_: "payload",
                missing: 256
            })
        );
    }

    #[test]
    fn errors_repeat_rather_than_skip_bytes() {
        let mut decoder = AttachDecoder::new(AttachMode::Multiplexed);
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, 0, 0, 0, 1, b'x'][..]);
        assert_eq!(decoder.decode(&mut buf), Err(AttachError::UnknownStream(9)));
        assert_eq!(decoder.decode(&mut buf), Err(AttachError::UnknownStream(9)));
        assert_eq!(buf.len(), 9);
    }

    #[test]
    fn tty_bytes_are_stdout_in_every_split() {
        // Bytes that would be a multiplexed header must pass through untouched.
        let input = b"\x01\x00\x00\x00\x00\x00\x00\x05hi\x02\x00there\n";
        for_every_split(AttachMode::Tty, input, |d| {
            assert_eq!(d.error, None);
            assert_eq!(d.stream(StreamKind::Stdout), input);
            assert!(d.chunks.iter().all(|c| c.stream == StreamKind::Stdout));
        });
    }

    #[test]
    fn zero_max_chunk_still_makes_progress() {
        let input = frames(&[(StreamKind::Stdout, b"abc")]);
        let d = decode_reads(AttachMode::Multiplexed, 0, &[&input]);
        assert_eq!(d.chunks.len(), 3);
        assert_eq!(d.stream(StreamKind::Stdout), b"abc");
    }

    #[test]
    fn decoder_needs_no_more_than_a_header_reserved() {
        let mut decoder = AttachDecoder::new(AttachMode::Multiplexed);
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[1, 0, 0]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.capacity() >= HEADER_LEN);
        // A huge announced length must not make the decoder reserve it.
        buf.extend_from_slice(&[0, 0, 0xff, 0xff, 0xff]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        assert!(buf.capacity() < 1024 * 1024);
    }

    fn decode_16_mib_frame_in_bounded_chunks(max_chunk: usize) {
        const FRAME: usize = 16 * 1024 * 1024;
        const READ: usize = 64 * 1024;
        let payload: Vec<u8> = (0..FRAME).map(|i| (i % 251) as u8).collect();
        let mut input = BytesMut::new();
        encode_frame(StreamKind::Stdout, &payload, &mut input);
        encode_frame(StreamKind::Stderr, b"tail", &mut input);

        let mut decoder = AttachDecoder::with_max_chunk(AttachMode::Multiplexed, max_chunk);
        let mut src = BytesMut::new();
        let mut stdout = Vec::with_capacity(FRAME);
        let mut stderr = Vec::new();
        let mut items = 0usize;
        let mut most_buffered = 0;
        for read in input.chunks(READ) {
            src.extend_from_slice(read);
            most_buffered = most_buffered.max(src.len());
            assert!(
                src.len() <= READ + HEADER_LEN,
                "buffer grew to {}",
                src.len()
            );
            while let Some(chunk) = decoder.decode(&mut src).unwrap() {
                assert!(chunk.data.len() <= max_chunk);
                items += 1;
                match chunk.stream {
                    StreamKind::Stdout => stdout.extend_from_slice(&chunk.data),
                    StreamKind::Stderr => stderr.extend_from_slice(&chunk.data),
                    other => panic!("unexpected stream {other:?}"),
                }
            }
            // Every payload byte fed is handed out at once; at most a partial header waits.
            assert!(src.len() < HEADER_LEN);
            assert!(
                src.capacity() <= 2 * (READ + HEADER_LEN),
                "capacity {}",
                src.capacity()
            );
        }
        assert_eq!(decoder.decode_eof(&mut src), Ok(None));
        assert!(stdout == payload, "stdout differs from the payload");
        assert_eq!(stderr, b"tail");
        assert!(items >= FRAME / max_chunk);
        assert!(most_buffered <= READ + HEADER_LEN);
    }

    #[test]
    fn decode_16_mib_frame_in_default_chunks_without_buffering_it() {
        decode_16_mib_frame_in_bounded_chunks(DEFAULT_MAX_CHUNK);
    }

    #[test]
    fn decode_16_mib_frame_in_small_chunks_without_buffering_it() {
        decode_16_mib_frame_in_bounded_chunks(4096);
    }

    #[test]
    fn encode_frame_writes_header_and_payload() {
        let mut buf = BytesMut::new();
        encode_frame(StreamKind::Stderr, b"xyz", &mut buf);
        encode_frame(StreamKind::System, b"", &mut buf);
        assert_eq!(
            &buf[..],
            b"\x02\x00\x00\x00\x00\x00\x00\x03xyz\x03\x00\x00\x00\x00\x00\x00\x00"
        );
    }

    #[test]
    fn stream_bytes_round_trip() {
        for kind in [
            StreamKind::Stdin,
            StreamKind::Stdout,
            StreamKind::Stderr,
            StreamKind::System,
        ] {
            assert_eq!(StreamKind::try_from(kind.as_byte()), Ok(kind));
        }
        assert_eq!(StreamKind::try_from(4), Err(AttachError::UnknownStream(4)));
    }

    #[test]
    fn framed_read_reports_truncation_at_eof() {
        use futures_util::StreamExt;
        use tokio_util::codec::FramedRead;

        let mut input = frames(&[(StreamKind::Stdout, b"one"), (StreamKind::Stderr, b"two")]);
        input.truncate(input.len() - 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let items: Vec<_> = rt.block_on(
            FramedRead::new(&input[..], AttachDecoder::new(AttachMode::Multiplexed)).collect(),
        );
        assert_eq!(items.len(), 3);
        assert_eq!(items[0].as_ref().unwrap().data, Bytes::from_static(b"one"));
        assert_eq!(items[1].as_ref().unwrap().data, Bytes::from_static(b"tw"));
        assert_eq!(
            items[2],
            Err(AttachError::Truncated {
                where_: "payload",
                missing: 1
            })
        );
    }

    fn stream_kind() -> impl Strategy<Value = StreamKind> {
        prop_oneof![
            Just(StreamKind::Stdin),
            Just(StreamKind::Stdout),
            Just(StreamKind::Stderr),
            Just(StreamKind::System),
        ]
    }

    /// Cut `input` at the given points (taken modulo its length).
    fn split_at_points(input: &[u8], points: &[usize]) -> Vec<Vec<u8>> {
        let mut cuts: Vec<usize> = points.iter().map(|p| p % (input.len() + 1)).collect();
        cuts.sort_unstable();
        let mut reads = Vec::new();
        let mut start = 0;
        for cut in cuts {
            reads.push(input[start..cut].to_vec());
            start = cut;
        }
        reads.push(input[start..].to_vec());
        reads
    }

    proptest! {
        #[test]
        fn encoded_frames_decode_to_the_same_bytes_per_stream(
            parts in proptest::collection::vec(
                (stream_kind(), proptest::collection::vec(any::<u8>(), 0..200)),
                0..12,
            ),
            points in proptest::collection::vec(any::<usize>(), 0..16),
            max_chunk in 1usize..300,
        ) {
            let mut input = BytesMut::new();
            for (stream, payload) in &parts {
                encode_frame(*stream, payload, &mut input);
            }
            let reads = split_at_points(&input, &points);
            let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let decoded = decode_reads(AttachMode::Multiplexed, max_chunk, &reads);
            prop_assert_eq!(&decoded.error, &None);
            let mut expected: HashMap<StreamKind, Vec<u8>> = HashMap::new();
            for (stream, payload) in &parts {
                expected.entry(*stream).or_default().extend_from_slice(payload);
            }
            for kind in [StreamKind::Stdin, StreamKind::Stdout, StreamKind::Stderr, StreamKind::System] {
                prop_assert_eq!(decoded.stream(kind), expected.remove(&kind).unwrap_or_default());
            }
            prop_assert_eq!(decoded.coalesced(), coalesce(parts));
        }

        #[test]
        fn tty_bytes_decode_unchanged_in_any_split(
            input in proptest::collection::vec(any::<u8>(), 0..2000),
            points in proptest::collection::vec(any::<usize>(), 0..16),
            max_chunk in 1usize..300,
        ) {
            let reads = split_at_points(&input, &points);
            let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let decoded = decode_reads(AttachMode::Tty, max_chunk, &reads);
            prop_assert_eq!(&decoded.error, &None);
            prop_assert_eq!(decoded.stream(StreamKind::Stdout), input);
        }

        #[test]
        fn garbage_never_panics_the_decoder(
            input in proptest::collection::vec(any::<u8>(), 0..600),
            points in proptest::collection::vec(any::<usize>(), 0..16),
            max_chunk in 0usize..100,
            tty in any::<bool>(),
        ) {
            let mode = if tty { AttachMode::Tty } else { AttachMode::Multiplexed };
            let reads = split_at_points(&input, &points);
            let reads: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
            let decoded = decode_reads(mode, max_chunk, &reads);
            let total: usize = decoded.chunks.iter().map(|c| c.data.len()).sum();
            prop_assert!(total <= input.len());
        }
    }
}

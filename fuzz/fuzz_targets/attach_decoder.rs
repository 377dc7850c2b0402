//! Arbitrary bytes in arbitrary reads: never a panic, every item within `max_chunk`, and the
//! output (and error) do not depend on how the input was split.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::attach::{AttachDecoder, AttachError, AttachMode, StreamKind};
use tokio_util::codec::Decoder;

/// Stream bytes with adjacent same-stream chunks merged, and the error that ended decoding.
fn decode(
    mode: AttachMode,
    max_chunk: usize,
    reads: &[&[u8]],
) -> (Vec<(StreamKind, Vec<u8>)>, Option<AttachError>) {
    let mut decoder = AttachDecoder::with_max_chunk(mode, max_chunk);
    let mut buf = BytesMut::new();
    let mut out: Vec<(StreamKind, Vec<u8>)> = Vec::new();
    for (i, read) in reads.iter().enumerate() {
        buf.extend_from_slice(read);
        let eof = i + 1 == reads.len();
        loop {
            let item = if eof {
                decoder.decode_eof(&mut buf)
            } else {
                decoder.decode(&mut buf)
            };
            match item {
                Ok(Some(chunk)) => {
                    assert!(!chunk.data.is_empty() && chunk.data.len() <= max_chunk.max(1));
                    match out.last_mut() {
                        Some((stream, data)) if *stream == chunk.stream => {
                            data.extend_from_slice(&chunk.data)
                        }
                        _ => out.push((chunk.stream, chunk.data.to_vec())),
                    }
                }
                Ok(None) => break,
                Err(e) => return (out, Some(e)),
            }
        }
    }
    (out, None)
}

fuzz_target!(|input: (bool, u8, Vec<Vec<u8>>)| {
    let (tty, max_chunk, mut reads) = input;
    let mode = if tty {
        AttachMode::Tty
    } else {
        AttachMode::Multiplexed
    };
    reads.push(Vec::new()); // the EOF read
    let split: Vec<&[u8]> = reads.iter().map(Vec::as_slice).collect();
    let whole = reads.concat();
    assert_eq!(
        decode(mode, usize::from(max_chunk), &split),
        decode(mode, 1 << 16, &[&whole])
    );
});

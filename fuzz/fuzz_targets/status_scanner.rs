//! Arbitrary stdout chunks: never a panic; the output is the input up to the first marker with
//! our nonce when a record is yielded (the fuzzer does not forge a valid compiled record, so
//! the first record is the last), and the whole input otherwise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::status::{Piece, Record, RecordScanner, MAX_STATUS_LINE_LEN};

// Short, so the fuzzer can find the real marker.
const MARKER: &[u8] = b"\0ONPYRUNNER-STATUS n ";

fuzz_target!(|chunks: Vec<Vec<u8>>| {
    let mut scanner = RecordScanner::new("n");
    let (mut output, mut found, mut compiled) = (Vec::new(), false, false);
    for chunk in &chunks {
        for piece in scanner.push(chunk) {
            match piece {
                Piece::Output(bytes) => {
                    assert!(!found || compiled, "no output after the last record");
                    output.extend_from_slice(&bytes)
                }
                Piece::Record(Ok(Record::Compiled(_))) => compiled = true,
                Piece::Record(_) => found = true,
            }
        }
    }
    output.extend_from_slice(&scanner.finish());
    if compiled {
        // A valid compiled record: output continues after it; only the invariants above hold.
        return;
    }
    let all = chunks.concat();
    match all.windows(MARKER.len()).position(|w| w == MARKER) {
        Some(at) => {
            let line = &all[at + MARKER.len()..];
            assert_eq!(
                found,
                line.contains(&b'\n') || line.len() > MAX_STATUS_LINE_LEN
            );
            assert_eq!(output, if found { &all[..at] } else { &all[..] });
        }
        None => assert!(!found && output == all),
    }
});

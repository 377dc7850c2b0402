//! Arbitrary stdout chunks: never a panic; the output is the input up to the first marker with
//! our nonce when a status is yielded, and the whole input otherwise.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::status::{StatusScanner, MAX_STATUS_LINE_LEN};

// Short, so the fuzzer can find the real marker.
const MARKER: &[u8] = b"\0ONPYRUNNER-STATUS n ";

fuzz_target!(|chunks: Vec<Vec<u8>>| {
    let mut scanner = StatusScanner::new("n");
    let (mut output, mut found) = (Vec::new(), false);
    for chunk in &chunks {
        let out = scanner.push(chunk);
        output.extend_from_slice(&out.output);
        found |= out.status.is_some();
    }
    output.extend_from_slice(&scanner.finish());
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

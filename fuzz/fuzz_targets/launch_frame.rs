//! Arbitrary bytes as a prefix and as a body: never a panic, and whatever decodes re-encodes to
//! the same bytes and decodes again to the same request.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::launch::{body_len, decode_body, PREFIX_LEN};

fuzz_target!(|data: &[u8]| {
    if let Some(prefix) = data.first_chunk::<PREFIX_LEN>() {
        let _ = body_len(prefix);
    }
    if let Ok(req) = decode_body(data) {
        let frame = req.encode().expect("a decoded request re-encodes");
        assert_eq!(body_len(frame.first_chunk().unwrap()), Ok(data.len()));
        assert_eq!(&frame[PREFIX_LEN..], data);
        assert_eq!(decode_body(&frame[PREFIX_LEN..]), Ok(req));
    }
});

//! Arbitrary bytes as a WebSocket client's text message (and so as a posted run, which `run`
//! carries): never a panic, and whatever parses serializes to JSON that parses back the same.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner_protocol::ws::ClientMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = serde_json::from_slice::<ClientMessage>(data) else {
        return;
    };
    let again = serde_json::to_vec(&message).expect("a parsed message serializes");
    let back: ClientMessage = serde_json::from_slice(&again).expect("and parses back");
    assert_eq!(back, message);
});

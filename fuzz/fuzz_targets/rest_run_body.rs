//! Arbitrary bytes as the body of `POST /api/v1/runs` (and `/jobs`) through the web crate's
//! parse and validation, as the server does before it submits: never a panic; a refusal is a
//! client's error (400 or 422 for the JSON, 413 or 422 for the run), never a server's; and a
//! run it accepts is within the caps and, once the engine's own check passes, frames for the
//! launcher.
#![no_main]

use libfuzzer_sys::fuzz_target;
use onpyrunner::request::{parse_body, run_spec_within};
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::run;

fuzz_target!(|data: &[u8]| {
    let caps = Caps::default();
    let body = match parse_body(data) {
        Ok(body) => body,
        Err(e) => {
            assert!(matches!(e.status.as_u16(), 400 | 422), "{e:?}");
            return;
        }
    };
    let (spec, stdin) = match run_spec_within(body, &caps) {
        Ok(accepted) => accepted,
        Err(e) => {
            assert!(matches!(e.status.as_u16(), 413 | 422), "{e:?}");
            assert!(e.field.is_some(), "a refused run names the field: {e:?}");
            return;
        }
    };
    assert!(stdin.len() as u64 <= caps.stdin_bytes);
    let source: usize = spec.files.iter().map(|f| f.content.len()).sum();
    assert!(source <= run::MAX_SOURCE_BYTES);
    // Limits only go down: none above the language's default.
    let defaults = &spec.language.limits;
    assert!(spec.limits.wall_ms <= defaults.wall_ms);
    assert!(spec.limits.memory_mib <= defaults.memory_mib);
    assert!(spec.limits.cpus <= defaults.cpus);
    assert!(spec.limits.output_bytes <= defaults.output_bytes);
    if run::check(&spec).is_ok() {
        run::launch_request(&spec, "0123456789abcdef".into())
            .encode()
            .expect("a run the web layer and the engine accept frames for the launcher");
    }
});

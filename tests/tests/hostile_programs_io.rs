//! Hostile programs and requests, continued: output, input, source and names refused before a
//! container exists, and compile bombs. As in `hostile_programs.rs`, every run goes through
//! `run_hostile`, which checks that the container is gone within 2 s of the run's end and that
//! a hello-world beside it succeeds.
use onpyrunner_e2e::hostile::{admit, run_hostile, run_hostile_with, Input};
use onpyrunner_e2e::{
    containers_created, engine_config, hear_all, spec, Harness, Ran, TEST_TIMEOUT,
};
use onpyrunner_protocol::{Reason, RunState, SourceFile, Stage};
use onpyrunner_supervisor::engine::{Engine, SubmitError};
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::run::{RunSpec, MAX_ARG_BYTES, MAX_SOURCE_BYTES};
use sha2::{Digest, Sha256};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

const WALL_MS: u64 = 2000;
const MIB: usize = 1 << 20;

fn with_wall(lang: &str, code: &str, wall_ms: u64) -> RunSpec {
    let mut s = spec(lang, code);
    s.limits.wall_ms = wall_ms;
    s
}

fn assert_exited_with(ran: &Ran, code: i32) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason, s.usage.exit_code),
        (RunState::Finished, Reason::Exited, Some(code)),
        "{ran:?}"
    );
    assert!(s.error.is_none() && !s.output_truncated, "{ran:?}");
}

fn assert_output_limit(ran: &Ran, spec: &RunSpec) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason),
        (RunState::Finished, Reason::OutputLimit),
        "{ran:?}"
    );
    assert!(s.output_truncated && s.error.is_none(), "{ran:?}");
    assert_eq!(
        (ran.stdout.len() + ran.stderr.len()) as u64,
        spec.limits.output_bytes,
        "exactly the cap arrives"
    );
}

fn assert_timed_out(ran: &Ran) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason),
        (RunState::Timeout, Reason::Timeout),
        "{ran:?}"
    );
    assert!(s.error.is_none(), "{ran:?}");
}

// ---- Output

#[tokio::test]
async fn an_endless_yes_is_cut_at_the_output_cap() {
    let cases = [
        (
            "python",
            "import sys\nwhile True: sys.stdout.write('y\\n' * 4096)",
        ),
        // Node's writes to a full pipe wait in its own memory until the event loop runs: a
        // loop that never yields is a memory bomb. This one waits for 'drain', as a stream
        // should.
        (
            "node",
            "const s = 'y\\n'.repeat(4096); (function go() { while (process.stdout.write(s)); process.stdout.once('drain', go); })();",
        ),
        (
            "java",
            "public class Main { public static void main(String[] a) { String s = \"y\\n\".repeat(4096); while (true) System.out.print(s); } }",
        ),
    ];
    for (lang, code) in cases {
        let s = spec(lang, code);
        let ran = run_hostile(&format!("yes-{lang}"), &s, Input::Eof).await;
        assert_output_limit(&ran, &s);
        assert_eq!(ran.stdout, b"y\n".repeat(ran.stdout.len() / 2), "{lang}");
        assert!(ran.outcome.usage.wall_ms < 5000, "{lang}: {ran:?}");
    }
}

#[tokio::test]
async fn output_without_a_newline_arrives_while_the_program_runs_and_when_it_exits() {
    let code = "import sys, time\nsys.stdout.write('no newline')\nsys.stdout.flush()\nwhile True: time.sleep(0.05)";
    let arrived = Arc::new(Mutex::new(None));
    let seen = arrived.clone();
    let outcome = run_hostile_with(
        "no-newline",
        &with_wall("python", code, WALL_MS),
        Input::Eof,
        move |_| {
            seen.lock().unwrap().get_or_insert_with(Instant::now);
        },
    )
    .await;
    let ended = Instant::now();
    assert_timed_out(&outcome.ran);
    assert_eq!(outcome.ran.stdout_text(), "no newline");
    let arrived = arrived.lock().unwrap().expect("output arrived");
    assert!(
        ended - arrived > Duration::from_millis(1000),
        "the partial line came only {:?} before the end of a 2 s run",
        ended - arrived
    );
    let ran = run_hostile(
        "no-newline-exit",
        &spec("python", "print('the end', end='')"),
        Input::Eof,
    )
    .await;
    assert_exited_with(&ran, 0);
    assert_eq!(ran.stdout_text(), "the end");
}

#[tokio::test]
async fn a_mebibyte_of_random_binary_comes_back_byte_exact() {
    let code =
        "import hashlib, os, sys\ndata = os.urandom(1 << 20)\nsys.stdout.buffer.write(data)\n\
                sys.stdout.flush()\nsys.stderr.write(hashlib.sha256(data).hexdigest())";
    let mut s = spec("python", code);
    s.limits.output_bytes = (MIB + 64) as u64;
    let ran = run_hostile("random-binary", &s, Input::Eof).await;
    assert_exited_with(&ran, 0);
    assert_eq!(ran.stdout.len(), MIB);
    let digest: String = Sha256::digest(&ran.stdout)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(ran.stderr_text(), digest, "the bytes changed on the way");
}

#[tokio::test]
async fn a_single_16_mib_write_is_cut_at_the_cap_or_arrives_whole_under_it() {
    let code = "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 65536)";
    let pattern: Vec<u8> = (0..=255u8).cycle().take(16 * MIB).collect();
    // The language's default cap (1 MiB): cut there, the rest never sent.
    let s = spec("python", code);
    assert_eq!(s.limits.output_bytes, MIB as u64);
    let ran = run_hostile("write-16mib-capped", &s, Input::Eof).await;
    assert_output_limit(&ran, &s);
    assert!(ran.stdout == pattern[..MIB], "the first MiB changed");
    // The server's cap, the most a run can be allowed: 16 MiB arrives whole.
    let mut s = spec("python", code);
    s.limits.output_bytes = Caps::default().output_bytes;
    assert_eq!(s.limits.output_bytes, 16 * MIB as u64);
    let ran = run_hostile("write-16mib-whole", &s, Input::Eof).await;
    assert_exited_with(&ran, 0);
    assert_eq!(ran.stdout.len(), pattern.len());
    assert!(ran.stdout == pattern, "16 MiB changed on the way");
}

#[tokio::test]
async fn terminal_escape_sequences_come_back_as_bytes_unchanged() {
    // Clear screen, cursor home, window title, OSC 8 link to javascript:, DCS query, CSI via
    // C1, device status report, bell, backspace, carriage return, NUL, invalid UTF-8.
    let escapes: &[u8] = b"\x1b[2J\x1b[H\x1b]0;owned\x07\x1b]8;;javascript:alert(1)\x1b\\click\x1b]8;;\x1b\\\x1bP+q544e\x1b\\\xc2\x9b6n\x1b[6n\x07\x08\r\x00\xff\xfe\x1b[?1049h\x1bc";
    let code = "import sys\ndata = sys.stdin.buffer.read()\nsys.stdout.buffer.write(bytes.fromhex(data.decode()))\n\
                sys.stderr.buffer.write(bytes.fromhex(data.decode()))";
    let hex: String = escapes.iter().map(|b| format!("{b:02x}")).collect();
    let ran = run_hostile(
        "escapes",
        &spec("python", code),
        Input::Bytes(hex.into_bytes()),
    )
    .await;
    assert_exited_with(&ran, 0);
    assert_eq!(ran.stdout, escapes);
    assert_eq!(ran.stderr, escapes);
}

#[tokio::test]
async fn a_program_that_closes_stdout_and_stderr_runs_on_to_its_exit_or_the_wall_clock() {
    let closing = "import os, sys, time\nprint('before', flush=True)\nprint('err before', file=sys.stderr, flush=True)\n\
                   os.close(1)\nos.close(2)\ntime.sleep(0.5)\n";
    let ran = run_hostile(
        "closed-exit",
        &spec("python", &format!("{closing}os._exit(3)")),
        Input::Eof,
    )
    .await;
    assert_exited_with(&ran, 3);
    assert_eq!(
        (ran.stdout_text().as_str(), ran.stderr_text().as_str()),
        ("before\n", "err before\n")
    );
    let ran = run_hostile(
        "closed-spin",
        &with_wall("python", &format!("{closing}while True: pass"), WALL_MS),
        Input::Eof,
    )
    .await;
    assert_timed_out(&ran);
    assert_eq!(ran.stdout_text(), "before\n");
}

// ---- Input

#[tokio::test]
async fn a_client_flooding_stdin_ends_cleanly_whether_the_program_reads_or_not() {
    // Not read at all: the flood waits in the pipes and the run ends when the program does.
    let ignoring = "import time\ntime.sleep(0.5)\nprint('done')";
    let outcome = run_hostile_with(
        "flood-ignored",
        &spec("python", ignoring),
        Input::Flood {
            total: 64 * MIB,
            chunk: 64 * 1024,
        },
        |_| {},
    )
    .await;
    assert_exited_with(&outcome.ran, 0);
    assert_eq!(outcome.ran.stdout_text(), "done\n");
    assert!(outcome.stdin_sent < 64 * MIB, "{}", outcome.stdin_sent);
    assert!(
        outcome.ran.outcome.usage.wall_ms < 3000,
        "{:?}",
        outcome.ran
    );
    // Read to the end: the program gets the stdin cap's worth, then EOF.
    let reading = "import sys\nn = 0\nwhile True:\n    b = sys.stdin.buffer.read1(1 << 16)\n    \
                   if not b: break\n    n += len(b)\nprint(n)";
    let s = spec("python", reading);
    let outcome = run_hostile_with(
        "flood-read",
        &s,
        Input::Flood {
            total: 32 * MIB,
            chunk: 64 * 1024,
        },
        |_| {},
    )
    .await;
    assert_exited_with(&outcome.ran, 0);
    assert_eq!(
        outcome.ran.stdout_text(),
        format!("{}\n", s.limits.stdin_bytes)
    );
}

#[tokio::test]
async fn a_program_that_closes_stdin_while_the_client_writes_ends_normally() {
    let code = "import os, time\nos.close(0)\nprint('closed', flush=True)\ntime.sleep(1)\nprint('still here')";
    let outcome = run_hostile_with(
        "close-stdin",
        &spec("python", code),
        Input::Flood {
            total: 32 * MIB,
            chunk: 64 * 1024,
        },
        |_| {},
    )
    .await;
    assert_exited_with(&outcome.ran, 0);
    assert_eq!(outcome.ran.stdout_text(), "closed\nstill here\n");
}

// ---- Source, names and arguments: refused before any container exists

async fn engine(test: &str) -> Engine {
    let h = Harness::new(test).await;
    tokio::time::timeout(
        TEST_TIMEOUT,
        Engine::start(h.docker.clone(), engine_config(test, &[])),
    )
    .await
    .expect("engine started within the timeout")
    .expect("engine starts")
}

/// Submit `spec`, expecting it refused with an error naming `field`.
fn refused(engine: &Engine, spec: RunSpec, field: &str) -> String {
    match engine.submit(spec) {
        Err(SubmitError::Invalid(invalid)) => {
            assert_eq!(invalid.field, field, "{invalid}");
            invalid.to_string()
        }
        Err(other) => panic!("expected {field} refused, got {other}"),
        Ok(_) => panic!("expected {field} refused, but the run was accepted"),
    }
}

/// A normal run on the same engine succeeds, and the daemon's event log since `since` holds its
/// container and no other: what was refused touched nothing.
async fn only_the_control_run_made_a_container(engine: Engine, since: SystemTime) {
    let mut session = engine.submit(spec("python", "print('control')")).unwrap();
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout_text(), "control\n", "{:?}", heard.summary());
    let made = containers_created(engine.docker(), engine.owner(), since).await;
    assert_eq!(made.len(), 1, "containers made: {made:?}");
    assert_eq!(engine.metrics().accepted.load(Ordering::Relaxed), 1);
    let instance = engine.config().instance.clone();
    let docker = engine.docker().clone();
    engine.shutdown().await;
    onpyrunner_e2e::assert_instance_clean(&docker, &instance).await;
}

#[tokio::test]
async fn source_above_the_limit_is_refused_before_any_container_is_touched() {
    let _room = admit().await;
    let since = SystemTime::now();
    let engine = engine("big-source").await;
    let mut s = spec("python", "print(1)");
    s.files[0].content = vec![b'#'; MAX_SOURCE_BYTES + 1];
    let message = refused(&engine, s, "files");
    assert!(message.contains(&MAX_SOURCE_BYTES.to_string()), "{message}");
    // Spread over several files, the total counts.
    let mut s = spec("python", "print(1)");
    s.files = (0..4)
        .map(|i| SourceFile {
            name: format!("part{i}.py"),
            content: vec![b'#'; MAX_SOURCE_BYTES / 4 + 1],
        })
        .collect();
    refused(&engine, s, "files");
    only_the_control_run_made_a_container(engine, since).await;
}

#[tokio::test]
async fn hostile_file_names_and_arguments_are_refused_naming_the_field() {
    let _room = admit().await;
    let since = SystemTime::now();
    let engine = engine("bad-names").await;
    let long = "x".repeat(10 * 1024);
    let names = [
        "../x",
        "-rf",
        "-d",
        "a\0b",
        &long,
        "/etc/passwd",
        "..",
        ".",
        "a b",
        "$(id)",
        "a;b",
        "a\nb",
        "main.py\0.txt",
        "",
    ];
    for lang in ["python", "java"] {
        for name in names {
            let mut s = spec(lang, "x");
            s.files.push(SourceFile {
                name: name.to_string(),
                content: b"x".to_vec(),
            });
            let message = refused(&engine, s, "files[1].name");
            assert!(message.len() < 12 * 1024, "{lang} {name:?}");
            let mut s = spec(lang, "x");
            s.files[0].name = name.to_string();
            refused(&engine, s, "files[0].name");
        }
    }
    for args in [
        vec!["a\0b".to_string()],
        vec!["x".repeat(MAX_ARG_BYTES + 1)],
        vec![String::new(); onpyrunner_supervisor::run::MAX_ARGS + 1],
    ] {
        let mut s = spec("python", "x");
        s.args = args;
        refused(&engine, s, "args");
    }
    only_the_control_run_made_a_container(engine, since).await;
}

#[tokio::test]
async fn arguments_that_look_like_options_or_shell_reach_the_program_as_data() {
    let args: Vec<String> = [
        "a\nb",
        "-rf",
        "--version",
        "-c",
        "-cp",
        "$(id)",
        "; rm -rf / #",
        "*",
        "",
        " spaced ",
        "`uname`",
        "--inspect=0.0.0.0:9229",
        "-XX:+PrintFlagsFinal",
    ]
    .map(String::from)
    .to_vec();
    let cases = [
        ("python", "import json, sys\nprint(json.dumps(sys.argv[1:]))"),
        ("node", "console.log(JSON.stringify(process.argv.slice(2)))"),
        (
            "java",
            "public class Main { public static void main(String[] a) { StringBuilder b = new StringBuilder(\"[\"); for (int i = 0; i < a.length; i++) { if (i > 0) b.append(','); b.append('\"').append(a[i].replace(\"\\n\", \"\\\\n\")).append('\"'); } System.out.println(b.append(']')); } }",
        ),
    ];
    for (lang, code) in cases {
        let mut s = spec(lang, code);
        s.args = args.clone();
        let ran = run_hostile(&format!("args-{lang}"), &s, Input::Eof).await;
        assert_exited_with(&ran, 0);
        let got: Vec<String> = serde_json::from_str(ran.stdout_text().trim())
            .unwrap_or_else(|e| panic!("{lang}: {e}: {ran:?}"));
        assert_eq!(got, args, "{lang}");
    }
}

// ---- Compile bombs

#[tokio::test]
async fn java_compile_bombs_end_promptly_as_compile_errors() {
    // 3000 nested generic types: javac's parser runs out of stack.
    let mut nested = String::from("Object");
    for _ in 0..3000 {
        nested = format!("java.util.List<{nested}>");
    }
    let generics = format!(
        "public class Main {{ {nested} x; public static void main(String[] a) {{ System.out.println(1); }} }}"
    );
    // A constant table too big for one method's code (one entry a line, so the diagnostic that
    // quotes the line stays short).
    let entries: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let table = format!(
        "public class Main {{\n static final int[] T = {{\n{}\n}};\n public static void main(String[] a) {{ System.out.println(T.length); }}\n}}\n",
        entries.join(",\n")
    );
    for (name, code, said) in [
        ("generics", generics, "java.lang.StackOverflowError"),
        ("table", table, "code too large"),
    ] {
        let s = spec("java", &code);
        let ran = run_hostile(&format!("compile-{name}"), &s, Input::Eof).await;
        let summary = &ran.outcome;
        assert_eq!(
            (summary.reason, summary.usage.stage),
            (Reason::CompileError, Stage::Compile),
            "{name}: {ran:?}"
        );
        assert!(summary.usage.exit_code.is_some_and(|c| c != 0), "{ran:?}");
        assert!(summary.error.is_none(), "{ran:?}");
        assert!(ran.stderr_text().contains(said), "{name}: {ran:?}");
        assert!(ran.stdout.is_empty(), "{name}: {ran:?}");
        assert!(
            summary.usage.wall_ms < s.limits.wall_ms / 2,
            "{name}: not stopped promptly: {ran:?}"
        );
    }
}

#[tokio::test]
async fn a_compile_stage_killed_from_outside_is_reported_against_the_compile_stage() {
    // Nested conditionals of a generic call: javac's inference takes exponential time.
    let mut e = String::from("1");
    for _ in 0..14 {
        e = format!("f(c ? {e} : f(1))");
    }
    let slow = format!(
        "public class Main {{ static boolean c = true; static <T> T f(T t) {{ return t; }} public static void main(String[] a) {{ Object o = {e}; System.out.println(o); }} }}"
    );
    // The compile stage has its own wall clock (the language's compile_wall_ms), apart from
    // the run's.
    let mut s = spec("java", &slow);
    s.limits.compile_wall_ms = 3000;
    let ran = run_hostile("compile-slow", &s, Input::Eof).await;
    assert_eq!(
        (ran.outcome.reason, ran.outcome.usage.stage),
        (Reason::Timeout, Stage::Compile),
        "{ran:?}"
    );
    assert!(ran.outcome.usage.wall_ms < 4000, "{ran:?}");
    // Diagnostics past the compile stage's output budget (256 KiB): the whole 600 KB line is
    // quoted, twice.
    let entries: Vec<String> = (0..100_000).map(|i| i.to_string()).collect();
    let loud = format!(
        "public class Main {{ static final int[] T = {{{}}}; public static void main(String[] a) {{ }} }}",
        entries.join(",")
    );
    let ran = run_hostile("compile-loud", &spec("java", &loud), Input::Eof).await;
    assert_eq!(
        (ran.outcome.reason, ran.outcome.usage.stage),
        (Reason::OutputLimit, Stage::Compile),
        "{ran:?}"
    );
}

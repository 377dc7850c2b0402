//! End-to-end: CPython and PyPy write stdout buffered, as the judges run them, and a prompt
//! still shows before the answer is typed (input() flushes stdout before it reads).
use bytes::Bytes;
use onpyrunner_e2e::{spec, Harness};
use onpyrunner_protocol::{OutputStream, Reason};
use tokio::sync::mpsc;

async fn prompt_shows_before_the_answer(lang: &str) {
    let h = Harness::new(&format!("prompt-{lang}")).await;
    let code = "print('before the question')\nname = input('name? ')\nprint('hi', name)\n";
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let mut tx = Some(tx);
    let mut seen = Vec::new();
    // The answer goes only once the prompt is out; without the flush the program would wait
    // for it until its wall limit.
    let ran = h
        .run_with(&spec(lang, code), rx, |chunk| {
            if chunk.stream == OutputStream::Stdout {
                seen.extend_from_slice(&chunk.data);
                if seen.ends_with(b"name? ") {
                    if let Some(tx) = tx.take() {
                        tx.try_send(Bytes::from_static(b"bob\n")).unwrap();
                    }
                }
            }
        })
        .await;
    h.assert_no_containers_left().await;
    assert_eq!(ran.outcome.reason, Reason::Exited, "{ran:?}");
    assert_eq!(
        ran.stdout_text(),
        "before the question\nname? hi bob\n",
        "{ran:?}"
    );
}

#[tokio::test]
async fn cpython_input_prompt_shows_before_the_answer_is_typed() {
    prompt_shows_before_the_answer("python").await;
}

#[tokio::test]
async fn pypy_input_prompt_shows_before_the_answer_is_typed() {
    prompt_shows_before_the_answer("pypy").await;
}

/// A line printed before a sleep stays in the buffer and comes out with the rest at the end, in
/// one write; under `-u` it came at once, in a write of its own.
async fn stdout_is_buffered(lang: &str) {
    let h = Harness::new(&format!("buffered-{lang}")).await;
    let code = "import time\nprint('first')\ntime.sleep(0.5)\nprint('second')\n";
    let ran = h.run(&spec(lang, code), b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(0), "{ran:?}");
    let stdout: Vec<&[u8]> = ran
        .chunks
        .iter()
        .filter(|c| c.stream == OutputStream::Stdout)
        .map(|c| &c.data[..])
        .collect();
    assert_eq!(stdout, [b"first\nsecond\n"], "{ran:?}");
}

#[tokio::test]
async fn cpython_writes_stdout_buffered() {
    stdout_is_buffered("python").await;
}

#[tokio::test]
async fn pypy_writes_stdout_buffered() {
    stdout_is_buffered("pypy").await;
}

/// An interactive run (the IDE's WebSocket, the CLI) takes the table's `run_live`: the line
/// printed before the sleep comes at once, in writes of its own.
async fn stdout_is_live_in_an_interactive_run(lang: &str) {
    let h = Harness::new(&format!("live-{lang}")).await;
    let code = "import time\nprint('first')\ntime.sleep(0.5)\nprint('second')\n";
    let mut s = spec(lang, code);
    s.language = onpyrunner_languages::live(s.language);
    let ran = h.run(&s, b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(0), "{ran:?}");
    let first = ran
        .chunks
        .iter()
        .find(|c| c.stream == OutputStream::Stdout)
        .map(|c| &c.data[..]);
    // Under -u, print writes its text and its newline apart.
    assert!(
        first.is_some_and(|f| f.starts_with(b"first") && b"first\n".starts_with(f)),
        "{ran:?}"
    );
    assert_eq!(ran.stdout_text(), "first\nsecond\n");
}

#[tokio::test]
async fn cpython_is_unbuffered_in_an_interactive_run() {
    stdout_is_live_in_an_interactive_run("python").await;
}

#[tokio::test]
async fn pypy_is_unbuffered_in_an_interactive_run() {
    stdout_is_live_in_an_interactive_run("pypy").await;
}

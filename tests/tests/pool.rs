//! The prewarmed pool and interactive runs, against the real daemon and images.
use bytes::Bytes;
use onpyrunner_e2e::{language, spec, until, Harness, TEST_TIMEOUT};
use onpyrunner_protocol::{OutputChunk, Reason, Summary};
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::pool::Pool;
use onpyrunner_supervisor::run::{self, Controls, RunSpec, Sandbox};
use onpyrunner_supervisor::session::StopSignal;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn start_pool(h: &Harness, lang: &str, size: usize, cancel: &CancellationToken) -> Pool {
    let lang = language(lang);
    Pool::start(
        h.maker(),
        lang,
        onpyrunner_e2e::placement(lang),
        size,
        &Caps::default(),
        cancel.clone(),
    )
}

/// A run on a claimed sandbox, with the caller's controls.
async fn run_on(h: &Harness, sandbox: Sandbox, spec: &RunSpec, controls: Controls) -> Summary {
    tokio::time::timeout(
        TEST_TIMEOUT,
        run::run_in(&h.docker, sandbox, spec, controls),
    )
    .await
    .expect("run within timeout")
    .expect("run ok")
}

fn controls() -> (
    mpsc::Sender<Bytes>,
    mpsc::Receiver<OutputChunk>,
    StopSignal,
    Controls,
) {
    let (stdin_tx, stdin) = mpsc::channel(4);
    let (output, out_rx) = mpsc::channel(16);
    let stop = StopSignal::default();
    (
        stdin_tx,
        out_rx,
        stop.clone(),
        Controls {
            stdin,
            output,
            stop,
        },
    )
}

async fn collect(mut rx: mpsc::Receiver<OutputChunk>) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(c) = rx.recv().await {
        all.extend_from_slice(&c.data);
    }
    all
}

#[tokio::test]
async fn pool_fills_is_claimed_and_refills_without_reuse() {
    let h = Harness::new("pool-refill").await;
    let cancel = CancellationToken::new();
    let pool = start_pool(&h, "python", 2, &cancel);
    until("pool to fill", || pool.ready() == 2).await;
    let paused: Vec<_> = h
        .docker
        .list_containers(&[format!("onpyrunner.owner={}", h.owner)])
        .await
        .unwrap();
    assert_eq!(paused.len(), 2);
    // The head is kept unpaused (hot), the rest paused.
    let mut states: Vec<&str> = paused.iter().map(|c| c.state.as_str()).collect();
    states.sort();
    assert_eq!(states, ["paused", "running"], "{paused:?}");

    let sandbox = pool.claim().await.expect("a warm container");
    let claimed_id = sandbox.id().to_string();
    let s = spec("python", "print('from the pool')");
    let (stdin_tx, out_rx, _stop, c) = controls();
    drop(stdin_tx);
    let (outcome, out) = tokio::join!(run_on(&h, sandbox, &s, c), collect(out_rx));
    assert_eq!(out, b"from the pool\n");
    assert_eq!(outcome.usage.exit_code, Some(0));
    assert_eq!(pool.stats().hits.load(Ordering::Relaxed), 1);

    until("pool to refill", || pool.ready() == 2).await;
    assert_eq!(
        pool.stats().created.load(Ordering::Relaxed),
        3,
        "a new container, not a reused one"
    );
    let ids: Vec<String> = h
        .docker
        .list_containers(&[format!("onpyrunner.owner={}", h.owner)])
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert!(!ids.contains(&claimed_id), "the used container is gone");

    pool.drain().await;
    assert_eq!(pool.ready(), 0);
    h.assert_no_containers_left().await;
}

#[tokio::test]
async fn pool_miss_still_runs_on_a_fresh_container() {
    let h = Harness::new("pool-miss").await;
    let cancel = CancellationToken::new();
    let pool = start_pool(&h, "node", 0, &cancel);
    assert!(pool.claim().await.is_none());
    assert_eq!(pool.stats().misses.load(Ordering::Relaxed), 1);
    let ran = h.run(&spec("node", "console.log('fresh')"), b"").await;
    assert_eq!(ran.stdout_text(), "fresh\n");
    pool.drain().await;
    h.assert_no_containers_left().await;
}

#[tokio::test]
async fn interactive_program_answers_a_line_typed_after_its_prompt() {
    let h = Harness::new("interactive").await;
    let cancel = CancellationToken::new();
    let pool = start_pool(&h, "python", 1, &cancel);
    until("pool to fill", || pool.ready() == 1).await;
    let sandbox = pool.claim().await.unwrap();
    let s = spec(
        "python",
        "name = input('name? ')\nprint(f'hello {name}')\nprint(input('again? ')[::-1])",
    );
    let (stdin_tx, mut out_rx, _stop, c) = controls();
    let dialogue = async move {
        let mut seen = Vec::new();
        let expect = |seen: &mut Vec<u8>, text: &[u8]| seen.windows(text.len()).any(|w| w == text);
        while !expect(&mut seen, b"name? ") {
            seen.extend_from_slice(&out_rx.recv().await.expect("prompt").data);
        }
        stdin_tx.send(Bytes::from_static(b"ada\n")).await.unwrap();
        while !expect(&mut seen, b"again? ") {
            seen.extend_from_slice(&out_rx.recv().await.expect("second prompt").data);
        }
        assert!(
            expect(&mut seen, b"hello ada\n"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        stdin_tx.send(Bytes::from_static(b"olleh\n")).await.unwrap();
        while let Some(c) = out_rx.recv().await {
            seen.extend_from_slice(&c.data);
        }
        seen
    };
    let (outcome, seen) = tokio::join!(run_on(&h, sandbox, &s, c), dialogue);
    assert_eq!(
        String::from_utf8_lossy(&seen),
        "name? hello ada\nagain? hello\n"
    );
    assert_eq!(outcome.usage.exit_code, Some(0));
    pool.drain().await;
    h.assert_no_containers_left().await;
}

#[tokio::test]
async fn eof_ends_a_program_that_reads_to_the_end() {
    let h = Harness::new("eof").await;
    let s = spec("node", "let n = 0; process.stdin.on('data', d => n += d.length); process.stdin.on('end', () => console.log('got', n));");
    let sandbox = Sandbox::create(
        &h.maker(),
        s.language,
        &s.limits,
        &onpyrunner_e2e::placement(s.language),
    )
    .await
    .unwrap();
    let (stdin_tx, out_rx, _stop, c) = controls();
    let feeding = async move {
        stdin_tx
            .send(Bytes::from(vec![b'x'; 100_000]))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(stdin_tx); // EOF
    };
    let (outcome, out, ()) = tokio::join!(run_on(&h, sandbox, &s, c), collect(out_rx), feeding);
    assert_eq!(String::from_utf8_lossy(&out), "got 100000\n");
    assert_eq!(outcome.reason, Reason::Exited);
    h.assert_no_containers_left().await;
}

#[tokio::test]
async fn stop_kills_a_program_that_ignores_sigterm_within_a_second() {
    let h = Harness::new("stop").await;
    let cancel = CancellationToken::new();
    let pool = start_pool(&h, "python", 1, &cancel);
    until("pool to fill", || pool.ready() == 1).await;
    let sandbox = pool.claim().await.unwrap();
    let s = spec(
        "python",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('ready', flush=True)\nwhile True: time.sleep(0.01)",
    );
    let (_stdin_tx, mut out_rx, stop, c) = controls();
    let stopping = async move {
        let mut seen = Vec::new();
        while !seen.ends_with(b"ready\n") {
            seen.extend_from_slice(&out_rx.recv().await.expect("ready").data);
        }
        let pressed = Instant::now();
        stop.stop(Reason::Stopped);
        while out_rx.recv().await.is_some() {}
        pressed
    };
    let (outcome, pressed) = tokio::join!(run_on(&h, sandbox, &s, c), stopping);
    assert_eq!(outcome.reason, Reason::Stopped);
    assert!(
        pressed.elapsed() < Duration::from_secs(1),
        "stop took {:?}",
        pressed.elapsed()
    );
    pool.drain().await;
    h.assert_no_containers_left().await;
}

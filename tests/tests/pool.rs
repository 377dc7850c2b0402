//! The prewarmed pool (its size following demand) and interactive runs, against the real daemon
//! and images.
use bytes::Bytes;
use onpyrunner_e2e::{
    assert_instance_clean, engine_config, hear_all, instance_containers, language, spec, until,
    Harness, TEST_TIMEOUT,
};
use onpyrunner_protocol::{Event, Reason, Summary};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::pool::Pool;
use onpyrunner_supervisor::pool_sizing::SizeRange;
use onpyrunner_supervisor::run::{self, Controls, RunSpec, Sandbox};
use onpyrunner_supervisor::scheduler::Cost;
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
    mpsc::Receiver<Event>,
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
            signals: Default::default(),
        },
    )
}

/// The bytes an output event carries; none for other events.
fn output_of(event: Event) -> Bytes {
    match event {
        Event::Output(chunk) => chunk.data,
        _ => Bytes::new(),
    }
}

async fn collect(mut rx: mpsc::Receiver<Event>) -> Vec<u8> {
    let mut all = Vec::new();
    while let Some(event) = rx.recv().await {
        if let Event::Output(c) = event {
            all.extend_from_slice(&c.data);
        }
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
            seen.extend_from_slice(&output_of(out_rx.recv().await.expect("prompt")));
        }
        stdin_tx.send(Bytes::from_static(b"ada\n")).await.unwrap();
        while !expect(&mut seen, b"again? ") {
            seen.extend_from_slice(&output_of(out_rx.recv().await.expect("second prompt")));
        }
        assert!(
            expect(&mut seen, b"hello ada\n"),
            "{}",
            String::from_utf8_lossy(&seen)
        );
        stdin_tx.send(Bytes::from_static(b"olleh\n")).await.unwrap();
        while let Some(event) = out_rx.recv().await {
            seen.extend_from_slice(&output_of(event));
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
        false,
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
            seen.extend_from_slice(&output_of(out_rx.recv().await.expect("ready")));
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

/// An engine whose only pool is `lang`'s, following demand within `range`, with up to five
/// runs at once so that a burst's claims come together.
async fn demand_engine(test: &str, lang: &str, range: SizeRange, idle: Duration) -> Engine {
    let mut config = engine_config(test, &[]);
    config.pool_sizes.remove(lang);
    config.pool_ranges.insert(lang.into(), range);
    config.pool_idle = idle;
    config.max_running = 5;
    config.budget = Cost::UNLIMITED;
    let docker = Docker::from_host(None).expect("DOCKER_HOST is a unix socket");
    tokio::time::timeout(TEST_TIMEOUT, Engine::start(docker, config))
        .await
        .expect("engine started within the timeout")
        .expect("engine starts")
}

/// Five hello worlds, `spacing` apart (all at once for zero), each heard to its end; returns
/// the pool's hits and misses over the burst.
async fn burst(engine: &Engine, lang: &str, spacing: Duration) -> (u64, u64) {
    let pool = engine.pools()[lang].clone();
    let (hits, misses) = (
        pool.stats().hits.load(Ordering::Relaxed),
        pool.stats().misses.load(Ordering::Relaxed),
    );
    let code = match lang {
        "java" => "public class Main { public static void main(String[] a) { System.out.println(\"hi\"); } }",
        _ => "print('hi')",
    };
    let mut runs = Vec::new();
    for i in 0..5 {
        if i > 0 {
            tokio::time::sleep(spacing).await;
        }
        let mut session = engine.submit(spec(lang, code)).expect("accepted");
        runs.push(tokio::spawn(async move {
            session.close_stdin();
            hear_all(&mut session.events).await
        }));
    }
    for run in runs {
        let heard = run.await.expect("the run's task");
        assert_eq!(heard.stdout_text(), "hi\n", "{heard:?}");
    }
    (
        pool.stats().hits.load(Ordering::Relaxed) - hits,
        pool.stats().misses.load(Ordering::Relaxed) - misses,
    )
}

async fn finish(engine: Engine) {
    let instance = engine.config().instance.clone();
    tokio::time::timeout(TEST_TIMEOUT, engine.shutdown())
        .await
        .expect("shutdown within the timeout");
    assert_instance_clean(engine.docker(), &instance).await;
}

#[tokio::test]
async fn a_python_burst_that_misses_grows_the_pool_so_the_next_burst_is_all_warm() {
    let engine = demand_engine(
        "burst-py",
        "python",
        SizeRange::following(1, 2, 6),
        Duration::from_secs(600),
    )
    .await;
    let pool = engine.pools()["python"].clone();
    until("the pool to fill", || pool.ready() == 2).await;
    // Five at once into a pool of two: three find it empty (a fixed pool would miss as many
    // in every burst).
    let (hits, misses) = burst(&engine, "python", Duration::ZERO).await;
    assert_eq!((hits, misses), (2, 3));
    assert_eq!(pool.target(), 5, "grown to the burst's size");
    until("the grown pool to fill", || pool.ready() == 5).await;
    let (hits, misses) = burst(&engine, "python", Duration::ZERO).await;
    assert_eq!((hits, misses), (5, 0), "the second burst is served warm");
    let status = onpyrunner_supervisor::runner::Runner::status(&engine);
    let p = status
        .pools
        .iter()
        .find(|p| p.language == "python")
        .unwrap();
    assert_eq!((p.floor, p.ceiling, p.hits, p.misses), (1, 6, 7, 3));
    finish(engine).await;
}

#[tokio::test]
async fn five_java_runs_within_five_seconds_are_warm_after_the_first_misses() {
    let engine = demand_engine(
        "burst-java",
        "java",
        SizeRange::following(1, 2, 6),
        Duration::from_secs(600),
    )
    .await;
    let pool = engine.pools()["java"].clone();
    until("the pool to fill", || pool.ready() == 2).await;
    // A run a second: a warm JVM takes about 1.7 s to make, so the pool of two runs dry.
    let (hits, misses) = burst(&engine, "java", Duration::from_secs(1)).await;
    assert!(misses <= 2 && hits >= 3, "{hits} hits, {misses} misses");
    // Whatever the first burst missed, the pool grew to what it needs: five at once now.
    if misses > 0 {
        assert!(pool.target() >= 3, "target {}", pool.target());
    }
    let target = pool.target();
    until("the pool to fill", || pool.ready() == target).await;
    let (hits, misses) = burst(&engine, "java", Duration::ZERO).await;
    // The pool had `target`; five at once miss what it lacked, once, and grow it to five.
    assert_eq!(misses as usize, 5usize.saturating_sub(target));
    assert_eq!(hits as usize, 5 - misses as usize);
    assert!(pool.target() >= 5, "target {}", pool.target());
    until("the pool to fill", || pool.ready() == pool.target()).await;
    let (hits, misses) = burst(&engine, "java", Duration::ZERO).await;
    assert_eq!((hits, misses), (5, 0), "the next burst is served warm");
    finish(engine).await;
}

#[tokio::test]
async fn an_idle_pool_shrinks_to_its_floor_and_leaves_no_extra_containers() {
    let engine = demand_engine(
        "shrink",
        "python",
        SizeRange::following(1, 2, 4),
        Duration::from_secs(2),
    )
    .await;
    let instance = engine.config().instance.clone();
    let pool = engine.pools()["python"].clone();
    until("the pool to fill", || pool.ready() == 2).await;
    let (_, misses) = burst(&engine, "python", Duration::ZERO).await;
    assert!(misses >= 2, "{misses}");
    assert_eq!(pool.target(), 4, "grown to its ceiling");
    // Idle from here on: one container less every 2 s, down to the floor of one.
    until("the pool to shrink to its floor", || {
        pool.target() == 1 && pool.size() == 1
    })
    .await;
    assert!(pool.stats().shrunk.load(Ordering::Relaxed) >= 1);
    // The removed containers are gone from the daemon, and the one left is the pool's.
    let started = Instant::now();
    loop {
        let left = instance_containers(engine.docker(), &instance).await;
        if left.len() == 1 {
            assert_eq!(vec![left[0].id.clone()], pool.ready_ids());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "containers of the shrunk pool still there: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It stays at its floor.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!((pool.target(), pool.size()), (1, 1));
    finish(engine).await;
}

/// A pooled Node container holds a judge process started and warmed up with it: a judged run
/// from the pool runs every test in it, the first too, and a plain run from the pool is the
/// usual node (the judge process killed first).
#[tokio::test]
async fn a_pooled_node_container_runs_a_judged_runs_tests_in_its_early_judge_process() {
    let mut config = engine_config("node-early-judge", &[("node", 1)]);
    config.max_running = 2;
    let docker = Docker::from_host(None).expect("DOCKER_HOST is a unix socket");
    let engine = tokio::time::timeout(TEST_TIMEOUT, Engine::start(docker, config))
        .await
        .expect("engine started within the timeout")
        .expect("engine starts");
    let pool = engine.pools()["node"].clone();
    let program = "const fs = require('fs');\n\
        const judge = fs.readFileSync('/proc/self/cmdline', 'utf8').includes('onpyrunner_judge.js');\n\
        console.log(judge ? 'judge' : 'fresh', fs.readFileSync(0, 'utf8').trim());\n";
    for (tests, expected) in [
        (&["1\n", "2\n", "3\n"][..], "judge 1\njudge 2\njudge 3\n"),
        (&["4\n"][..], "judge 4\n"),
    ] {
        until("the pool to fill", || pool.ready() == 1).await;
        let hits = pool.stats().hits.load(Ordering::Relaxed);
        let cases: Vec<(&str, Option<&str>)> = tests.iter().map(|t| (*t, None)).collect();
        let mut session = engine
            .submit(onpyrunner_e2e::judged("node", program, &cases))
            .expect("accepted");
        session.close_stdin();
        let heard = hear_all(&mut session.events).await;
        assert_eq!(heard.stdout_text(), expected, "{heard:?}");
        assert_eq!(heard.stderr_text(), "", "{heard:?}");
        assert_eq!(
            pool.stats().hits.load(Ordering::Relaxed),
            hits + 1,
            "from the pool"
        );
    }
    until("the pool to fill", || pool.ready() == 1).await;
    let mut session = engine.submit(spec("node", program)).expect("accepted");
    let stdin = session.stdin().expect("the run takes stdin");
    stdin
        .send(Bytes::from_static(b"plain\n"))
        .await
        .expect("sent");
    drop(stdin);
    session.close_stdin();
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout_text(), "fresh plain\n", "{heard:?}");
    assert_eq!(heard.summary().usage.exit_code, Some(0), "{heard:?}");
    finish(engine).await;
}

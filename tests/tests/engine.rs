//! Run sessions through the engine (pools, scheduler, states, limits, shutdown), against the
//! real daemon and images.
use bytes::Bytes;
use onpyrunner_e2e::{
    assert_instance_clean, engine_config, hear_all, hear_until, instance_containers, spec, until,
    Harness, Heard, TEST_TIMEOUT,
};
use onpyrunner_protocol::{Event, Reason, RunState};
use onpyrunner_supervisor::engine::{Engine, EngineConfig, SubmitError};
use onpyrunner_supervisor::limits::{Caps, LimitRequest, Limits};
use onpyrunner_supervisor::run::{Client, RunSpec};
use onpyrunner_supervisor::runner::ResumeError;
use onpyrunner_supervisor::session::Detach;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

async fn engine(h: &Harness, config: EngineConfig) -> Engine {
    tokio::time::timeout(TEST_TIMEOUT, Engine::start(h.docker.clone(), config))
        .await
        .expect("engine started within the timeout")
        .expect("engine starts")
}

/// Shut down and check that nothing of the engine is left on the daemon.
async fn finish(h: &Harness, engine: Engine) {
    let instance = engine.config().instance.clone();
    tokio::time::timeout(TEST_TIMEOUT, engine.shutdown())
        .await
        .expect("shutdown within the timeout");
    assert_instance_clean(&h.docker, &instance).await;
}

fn with_limits(lang: &str, code: &str, request: LimitRequest, caps: &Caps) -> RunSpec {
    let mut s = spec(lang, code);
    s.limits = Limits::resolve(s.language, &request, caps).expect("limits in range");
    s
}

/// Held by the tests that stream megabytes and by the one that reads the process's memory, so
/// that they do not overlap (the tests of one binary run in parallel).
static BIG_OUTPUT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn vm_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn a_pooled_run_goes_ready_running_finished_and_the_pool_refills() {
    let h = Harness::new("engine-pool").await;
    let engine = engine(&h, engine_config("pool", &[("python", 2)])).await;
    let pool = engine.pools()["python"].clone();
    until("the pool to fill", || pool.ready() == 2).await;
    let paused = instance_containers(&h.docker, &engine.config().instance).await;
    assert_eq!(paused.len(), 2);
    // The head is kept unpaused (hot), the rest paused.
    let mut states: Vec<&str> = paused.iter().map(|c| c.state.as_str()).collect();
    states.sort();
    assert_eq!(states, ["paused", "running"], "{paused:?}");

    let mut session = engine
        .submit(spec(
            "python",
            "import sys\nprint('out')\nprint('err', file=sys.stderr)",
        ))
        .unwrap();
    let heard = hear_all(&mut session.events).await;
    assert_eq!(
        heard.states,
        [RunState::Ready, RunState::Running, RunState::Finished]
    );
    assert_eq!(heard.stdout_text(), "out\n");
    assert_eq!(heard.stderr_text(), "err\n");
    let summary = heard.summary();
    assert_eq!(summary.state, RunState::Finished);
    assert_eq!(summary.reason, Reason::Exited);
    assert_eq!(summary.usage.exit_code, Some(0));
    assert!(summary.usage.memory_kib > 1000, "{summary:?}");
    assert_eq!(pool.stats().hits.load(Ordering::Relaxed), 1);

    until("the pool to refill", || pool.ready() == 2).await;
    assert_eq!(
        pool.stats().created.load(Ordering::Relaxed),
        3,
        "never reused"
    );
    finish(&h, engine).await;
}

#[tokio::test]
async fn a_pool_miss_still_runs_on_a_fresh_container_and_is_counted() {
    let h = Harness::new("engine-miss").await;
    let engine = engine(&h, engine_config("miss", &[("node", 1)])).await;
    let pool = engine.pools()["node"].clone();
    until("the pool to fill", || pool.ready() == 1).await;
    // Two at once: the first takes the pooled container, the second misses.
    let mut a = engine.submit(spec("node", "console.log('a')")).unwrap();
    let mut b = engine.submit(spec("node", "console.log('b')")).unwrap();
    let (a, b) = tokio::join!(hear_all(&mut a.events), hear_all(&mut b.events));
    assert_eq!(a.stdout_text(), "a\n");
    assert_eq!(b.stdout_text(), "b\n");
    assert_eq!(pool.stats().hits.load(Ordering::Relaxed), 1);
    assert_eq!(pool.stats().misses.load(Ordering::Relaxed), 1);
    finish(&h, engine).await;
}

#[tokio::test]
async fn an_interactive_program_answers_what_is_typed_and_eof_ends_it() {
    let h = Harness::new("engine-interactive").await;
    let engine = engine(&h, engine_config("interactive", &[("python", 1)])).await;
    let code = "import sys\nname = input('name? ')\nprint(f'hello {name}')\n\
                rest = sys.stdin.read()\nprint(f'{len(rest)} more bytes')";
    // An interactive run, as the WebSocket makes it: its output shows as it comes (`run_live`),
    // so the greeting printed before the read is heard before the rest is typed.
    let mut interactive = spec("python", code);
    interactive.language = onpyrunner_languages::live(interactive.language);
    let mut session = engine.submit(interactive).unwrap();
    let stdin = session.stdin().unwrap();
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "name? ").await;
    stdin.send(Bytes::from_static(b"ada\n")).await.unwrap();
    hear_until(&mut session.events, &mut heard, "hello ada\n").await;
    stdin.send(Bytes::from_static(b"12345")).await.unwrap();
    drop(stdin);
    session.close_stdin(); // EOF
    while !heard.hear(session.events.recv().await.expect("until the summary")) {}
    assert_eq!(heard.stdout_text(), "name? hello ada\n5 more bytes\n");
    assert_eq!(heard.summary().reason, Reason::Exited);
    finish(&h, engine).await;
}

#[tokio::test]
async fn stop_ends_a_program_that_ignores_sigterm_as_stopped_within_a_second() {
    let h = Harness::new("engine-stop").await;
    let engine = engine(&h, engine_config("stop", &[("python", 1)])).await;
    let code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n\
                print('ready', flush=True)\nwhile True: time.sleep(0.01)";
    let mut session = engine.submit(spec("python", code)).unwrap();
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "ready\n").await;
    let pressed = Instant::now();
    session.stop();
    while !heard.hear(session.events.recv().await.expect("until the summary")) {}
    let took = pressed.elapsed();
    assert!(took < Duration::from_secs(1), "stop took {took:?}");
    assert_eq!(*heard.states.last().unwrap(), RunState::Stopped);
    assert_eq!(heard.summary().reason, Reason::Stopped);
    finish(&h, engine).await;
}

#[tokio::test]
async fn the_wall_clock_ends_a_run_as_timeout() {
    let h = Harness::new("engine-timeout").await;
    let engine = engine(&h, engine_config("timeout", &[])).await;
    let caps = engine.config().caps.clone();
    let s = with_limits(
        "python",
        "print('start', flush=True)\nwhile True: pass",
        LimitRequest {
            wall_ms: Some(1500),
            ..Default::default()
        },
        &caps,
    );
    let started = Instant::now();
    let mut session = engine.submit(s).unwrap();
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout_text(), "start\n");
    assert_eq!(
        heard.states,
        [RunState::Ready, RunState::Running, RunState::Timeout]
    );
    assert_eq!(heard.summary().reason, Reason::Timeout);
    // The launcher could not report a killed program: the cgroup's count of 1.5 s of busy
    // looping is what the summary says, not 0. (Not near 1500: on a loaded 2-CPU machine the
    // loop got under 700 ms of it.)
    let usage = &heard.summary().usage;
    assert!(
        usage.cpu_ms >= 200,
        "cpu {} ms after 1.5 s of busy looping",
        usage.cpu_ms
    );
    assert!(
        usage.cpu_ms <= 4000,
        "cpu {} ms: more than the run could use",
        usage.cpu_ms
    );
    assert!(usage.memory_kib > 0, "{usage:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    finish(&h, engine).await;
}

#[tokio::test]
async fn an_output_flood_is_cut_at_the_cap_and_a_slow_reader_keeps_memory_bounded() {
    // This test reads the process's memory: no other test may stream megabytes meanwhile.
    let _quiet = BIG_OUTPUT.lock().await;
    let h = Harness::new("engine-flood").await;
    let mut config = engine_config("flood", &[]);
    config.caps.output_bytes = 1 << 30;
    // This test raises the output limit above the language's default on purpose.
    config.caps.raise = true;
    let engine = engine(&h, config).await;
    let caps = engine.config().caps.clone();
    let flood = "import sys\nwhile True: sys.stdout.write('x' * 65536)";

    // Cut at the cap: exactly that many bytes arrive, flagged truncated.
    let s = with_limits(
        "python",
        flood,
        LimitRequest {
            output_bytes: Some(1_000_000),
            ..Default::default()
        },
        &caps,
    );
    let mut session = engine.submit(s).unwrap();
    let heard = hear_all(&mut session.events).await;
    assert_eq!(heard.stdout.len(), 1_000_000);
    let summary = heard.summary();
    assert!(summary.output_truncated);
    assert_eq!(summary.reason, Reason::OutputLimit);
    assert_eq!(summary.state, RunState::Finished);

    // A reader that does not read: the program is held back instead of filling our memory.
    let s = with_limits(
        "python",
        flood,
        LimitRequest {
            output_bytes: Some(1 << 30),
            ..Default::default()
        },
        &caps,
    );
    let before = vm_rss_kib();
    let mut session = engine.submit(s).unwrap();
    let mut heard = Heard::default();
    while !heard.states.contains(&RunState::Running) {
        heard.hear(session.events.recv().await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // What the run's log holds is the window its reader is allowed to lag, not the flood.
    let kept = session.log().output_bytes();
    assert!(
        kept < 8 * 1024 * 1024,
        "the log kept {kept} bytes of a flood nobody read"
    );
    let grown_mib = vm_rss_kib().saturating_sub(before) / 1024;
    assert!(
        grown_mib < 32,
        "memory grew by {grown_mib} MiB while a 1 GiB flood was not read"
    );
    session.stop();
    let rest = hear_all(&mut session.events).await;
    assert_eq!(rest.summary().reason, Reason::Stopped);
    finish(&h, engine).await;
}

#[tokio::test]
async fn a_memory_bomb_is_reported_as_oom() {
    let h = Harness::new("engine-oom").await;
    let engine = engine(&h, engine_config("oom", &[])).await;
    let caps = engine.config().caps.clone();
    let s = with_limits(
        "python",
        "x = []\nwhile True: x.append(bytearray(1 << 20))",
        LimitRequest {
            memory_mib: Some(64),
            ..Default::default()
        },
        &caps,
    );
    let mut session = engine.submit(s).unwrap();
    let heard = hear_all(&mut session.events).await;
    let summary = heard.summary();
    assert!(summary.oom_killed, "{summary:?}");
    assert_eq!(summary.reason, Reason::MemoryLimit);
    assert_eq!(summary.usage.signal, Some(9));
    finish(&h, engine).await;
}

#[tokio::test]
async fn queue_positions_are_reported_and_a_full_queue_says_busy_with_retry_after() {
    let h = Harness::new("engine-queue").await;
    let mut config = engine_config("queue", &[]);
    config.max_running = 1;
    config.max_queued = 2;
    let engine = engine(&h, config).await;
    let slow = "import time\nprint('running', flush=True)\ntime.sleep(30)";
    let mut first = engine.submit(spec("python", slow)).unwrap();
    let mut second = engine.submit(spec("python", "print('second')")).unwrap();
    let mut third = engine.submit(spec("python", "print('third')")).unwrap();
    let busy = match engine.submit(spec("python", "print('fourth')")) {
        Err(SubmitError::Busy(busy)) => busy,
        other => panic!("expected busy, got {other:?}"),
    };
    assert_eq!(busy.max_queued, 2);
    assert!(busy.retry_after_secs() >= 1);
    assert!(busy.to_string().contains("retry after"), "{busy}");

    let mut heard_first = Heard::default();
    hear_until(&mut first.events, &mut heard_first, "running").await;
    // The third moves from 2 to 1 when the second leaves the queue.
    let next = |events: &mut onpyrunner_supervisor::run_log::Follower| events.try_recv();
    let mut second_heard = Heard::default();
    until("the second to hear its position", || {
        if let Some(e) = next(&mut second.events) {
            second_heard.hear(e);
        }
        !second_heard.positions.is_empty()
    })
    .await;
    assert_eq!(second_heard.positions, [1]);
    drop(second); // a client that leaves while queued
    let mut third_heard = Heard::default();
    until("the third to move up", || {
        if let Some(e) = next(&mut third.events) {
            third_heard.hear(e);
        }
        third_heard.positions.ends_with(&[1])
    })
    .await;
    assert_eq!(third_heard.positions, [2, 1]);
    first.stop();
    let third_rest = hear_all(&mut third.events).await;
    assert_eq!(third_rest.stdout_text(), "third\n");
    assert_eq!(third_rest.summary().reason, Reason::Exited);
    assert!(third_rest.summary().queued_ms > 0);
    finish(&h, engine).await;
}

#[tokio::test]
async fn shutdown_stops_queued_and_running_runs_and_leaves_nothing() {
    let h = Harness::new("engine-shutdown").await;
    let mut config = engine_config("shutdown", &[("python", 1), ("node", 1)]);
    config.max_running = 1;
    let engine = engine(&h, config).await;
    until("the pools to fill", || {
        engine.pools().values().all(|p| p.ready() == 1)
    })
    .await;
    let mut running = engine
        .submit(spec("python", "print('up', flush=True)\nwhile True: pass"))
        .unwrap();
    let mut queued = engine.submit(spec("node", "console.log('never')")).unwrap();
    let mut heard = Heard::default();
    hear_until(&mut running.events, &mut heard, "up").await;
    let started = Instant::now();
    let stopping = engine.clone();
    let shutdown = tokio::spawn(async move { stopping.shutdown().await });
    let (running, queued) =
        tokio::join!(hear_all(&mut running.events), hear_all(&mut queued.events));
    shutdown.await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(running.summary().reason, Reason::Shutdown);
    assert_eq!(running.summary().state, RunState::Stopped);
    assert_eq!(queued.summary().reason, Reason::Shutdown);
    assert_eq!(queued.states, [RunState::Ready, RunState::Stopped]);
    assert!(queued.stdout.is_empty());
    assert!(matches!(
        engine.submit(spec("python", "print(1)")),
        Err(SubmitError::ShuttingDown)
    ));
    assert_instance_clean(&h.docker, &engine.config().instance).await;
}

#[tokio::test]
async fn a_client_that_vanishes_has_its_run_killed_and_removed() {
    let h = Harness::new("engine-gone").await;
    let engine = engine(&h, engine_config("gone", &[])).await;
    let mut session = engine
        .submit(spec(
            "python",
            "print('up', flush=True)\nimport time\ntime.sleep(60)",
        ))
        .unwrap();
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "up").await;
    drop(session);
    let instance = engine.config().instance.clone();
    let started = Instant::now();
    while !instance_containers(&h.docker, &instance).await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the container outlived its client"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("the run to be counted as stopped", || {
        engine.metrics().ended(RunState::Stopped) == 1
    })
    .await;
    finish(&h, engine).await;
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_starts() {
    let h = Harness::new("engine-bad").await;
    let engine = engine(&h, engine_config("bad", &[])).await;
    let mut s = spec("python", "print(1)");
    s.files[0].name = "../escape.py".into();
    match engine.submit(s) {
        Err(SubmitError::Invalid(invalid)) => {
            assert_eq!(invalid.field, "files[0].name", "{invalid}")
        }
        other => panic!("expected invalid, got {other:?}"),
    }
    assert_eq!(engine.metrics().accepted.load(Ordering::Relaxed), 0);
    assert!(instance_containers(&h.docker, &engine.config().instance)
        .await
        .is_empty());
    finish(&h, engine).await;
}

#[tokio::test]
async fn the_start_up_sweep_removes_what_an_earlier_run_of_the_instance_left() {
    let h = Harness::new("engine-sweep").await;
    let config = engine_config("sweep", &[("python", 1)]);
    let first = engine(&h, config.clone()).await;
    until("the pool to fill", || first.pools()["python"].ready() == 1).await;
    let live = instance_containers(&h.docker, &config.instance).await;
    assert_eq!(live.len(), 1);
    // What a crashed incarnation left: a container whose owner holds no lock any more (a
    // process that died). The first engine is a live neighbour under the same name.
    let lang = onpyrunner_e2e::language("python");
    let dead_owner = format!("{}.{}-dead", config.instance, u32::MAX);
    let maker = onpyrunner_supervisor::run::Maker {
        owner: dead_owner,
        ..h.maker()
    };
    let crashed = onpyrunner_supervisor::run::Sandbox::create(
        &maker,
        lang,
        &Limits::defaults(lang, &Caps::default()),
        &onpyrunner_e2e::placement(lang),
        false,
    )
    .await
    .unwrap();
    let left = [crashed.id().to_string()];
    std::mem::forget(crashed); // as a crash would: nobody removes it
    let second = engine(&h, config.clone()).await;
    let now = instance_containers(&h.docker, &config.instance).await;
    assert!(
        now.iter().all(|c| c.id != left[0]),
        "the earlier incarnation's container is gone"
    );
    assert!(
        now.iter().any(|c| c.id == live[0].id),
        "the live neighbour's pooled container stays"
    );
    first.shutdown().await;
    finish(&h, second).await;
}

#[tokio::test]
async fn large_output_streams_in_large_chunks_at_full_speed() {
    // 24 MiB kept in a run's log would show in the flood test's memory reading.
    let _loud = BIG_OUTPUT.lock().await;
    let h = Harness::new("engine-bulk").await;
    let mut config = engine_config("bulk", &[("python", 1)]);
    config.caps.output_bytes = 64 * 1024 * 1024;
    config.caps.raise = true;
    let caps = config.caps.clone();
    let engine = engine(&h, config).await;
    let pool = engine.pools()["python"].clone();
    until("the pool to fill", || pool.ready() == 1).await;
    // 24 MiB in 64 KiB writes, through a pooled container (whose read buffer was handed over
    // from the readiness wait) and a fresh one.
    let code = "import sys\nb = b'x' * 65536\nfor _ in range(384): sys.stdout.buffer.write(b)";
    for path in ["pooled", "fresh"] {
        let request = LimitRequest {
            output_bytes: Some(32 * 1024 * 1024),
            ..LimitRequest::default()
        };
        let mut session = engine
            .submit(with_limits("python", code, request, &caps))
            .unwrap();
        let mut chunks = 0usize;
        let mut heard = Heard::default();
        tokio::time::timeout(TEST_TIMEOUT, async {
            while let Some(event) = session.events.recv().await {
                chunks += matches!(event, Event::Output(_)) as usize;
                if heard.hear(event) {
                    break;
                }
            }
        })
        .await
        .expect("the run ends within the timeout");
        assert_eq!(heard.summary().reason, Reason::Exited, "{path}: {heard:?}");
        assert_eq!(heard.stdout.len(), 24 * 1024 * 1024, "{path}");
        // Reads of 8 bytes once made this take 3 million chunks and 12 s.
        assert!(
            chunks < 24 * 1024 * 1024 / 4096,
            "{path}: {chunks} chunks, {} bytes on average",
            heard.stdout.len() / chunks
        );
    }
    assert!(pool.stats().hits.load(Ordering::Relaxed) >= 1);
    finish(&h, engine).await;
}

#[tokio::test]
async fn stop_while_the_container_is_being_created_leaves_no_container() {
    let h = Harness::new("engine-stop-create").await;
    let engine = engine(&h, engine_config("stopcreate", &[])).await;
    let instance = engine.config().instance.clone();
    // No pool: every run creates its container, and Stop lands during the create call.
    for delay_ms in [0, 5, 20, 40, 80] {
        let mut session = engine.submit(spec("python", "print('hi')")).unwrap();
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        session.stop();
        let heard = hear_all(&mut session.events).await;
        assert!(heard.summary().state.is_final(), "{heard:?}");
    }
    // Before shutdown (which would remove anything of its owner anyway).
    let left = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let left = instance_containers(&h.docker, &instance).await;
            if left.is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        left.is_ok(),
        "containers still there 10 s after the runs: {:?}",
        instance_containers(&h.docker, &instance).await
    );
    finish(&h, engine).await;
}

#[tokio::test]
async fn two_supervisors_under_one_instance_name_never_remove_each_others_containers() {
    let h = Harness::new("engine-neighbours").await;
    let mut config = engine_config("neighbours", &[("python", 1)]);
    config.sweep_interval = Duration::from_millis(200);
    let first = engine(&h, config.clone()).await;
    let pool = first.pools()["python"].clone();
    until("the first pool to fill", || pool.ready() == 1).await;
    let mut session = first
        .submit(spec(
            "python",
            "import time\nprint('up', flush=True)\ntime.sleep(3)\nprint('still here')",
        ))
        .unwrap();
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "up").await;
    // A second supervisor with the same (default-like) instance name starts and sweeps while
    // the first one's run goes on; then it runs a program of its own.
    let second = engine(&h, config).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut other = second.submit(spec("python", "print('second')")).unwrap();
    let other_heard = hear_all(&mut other.events).await;
    assert_eq!(other_heard.stdout_text(), "second\n");
    while !heard.hear(session.events.recv().await.expect("until the summary")) {}
    assert_eq!(
        heard.stdout_text(),
        "up\nstill here\n",
        "{:?}",
        heard.summary()
    );
    assert_eq!(heard.summary().reason, Reason::Exited);
    assert_eq!(
        second.metrics().swept.load(Ordering::Relaxed),
        0,
        "nothing of the first swept"
    );
    assert_eq!(pool.ready(), 1, "the first pool was left alone");
    let instance = first.config().instance.clone();
    second.shutdown().await;
    first.shutdown().await;
    assert_instance_clean(&h.docker, &instance).await;
}

#[tokio::test]
async fn one_client_cannot_take_the_whole_queue_from_the_others() {
    let h = Harness::new("engine-per-client").await;
    let mut config = engine_config("per-client", &[]);
    config.max_running = 1;
    config.max_queued = 8;
    config.max_per_client = 2;
    let engine = engine(&h, config).await;
    let of = |client: &str, code: &str| {
        let mut s = spec("python", code);
        s.client = Some(Client::new(client));
        s
    };
    let sleeper = "import time\nprint('up', flush=True)\ntime.sleep(30)";
    let mut first = engine.submit(of("10.0.0.1", sleeper)).unwrap();
    let second = engine.submit(of("10.0.0.1", sleeper)).unwrap();
    let refused = engine.submit(of("10.0.0.1", sleeper)).unwrap_err();
    assert!(
        matches!(refused, SubmitError::ClientBusy { max: 2 }),
        "{refused}"
    );
    assert!(refused.to_string().contains("2 runs"), "{refused}");
    // Another client still gets in (it waits for the one slot, but is not refused).
    let mut other = engine.submit(of("10.0.0.2", "print('other')")).unwrap();
    let mut heard = Heard::default();
    hear_until(&mut first.events, &mut heard, "up").await;
    first.stop();
    while !heard.hear(first.events.recv().await.expect("until the summary")) {}
    // The first client has a place again once one of its runs is over.
    until("the first client's place to come back", || {
        engine.submit(of("10.0.0.1", "print(1)")).is_ok()
    })
    .await;
    drop(second);
    let other_heard = hear_all(&mut other.events).await;
    assert_eq!(other_heard.stdout_text(), "other\n");
    finish(&h, engine).await;
}

#[tokio::test]
async fn a_run_behind_another_clients_500_queued_runs_waits_for_one_slot() {
    let h = Harness::new("engine-turns").await;
    let mut config = engine_config("turns", &[]);
    config.max_running = 1;
    config.max_queued = 1000;
    config.max_per_client = 600;
    let engine = engine(&h, config).await;
    let of = |client: &str, code: &str| {
        let mut s = spec("python", code);
        s.client = Some(Client::new(client));
        s
    };
    let mut running = engine
        .submit(of(
            "10.0.0.1",
            "import time\nprint('up', flush=True)\ntime.sleep(30)",
        ))
        .unwrap();
    let mut heard = Heard::default();
    hear_until(&mut running.events, &mut heard, "up").await;
    let backlog: Vec<_> = (0..500)
        .map(|i| {
            engine
                .submit(of("10.0.0.1", &format!("print({i})")))
                .unwrap()
        })
        .collect();
    let mut other = engine.submit(of("10.0.0.2", "print('other')")).unwrap();
    running.stop();
    while !heard.hear(running.events.recv().await.expect("until the summary")) {}
    let other_heard = hear_all(&mut other.events).await;
    assert_eq!(other_heard.stdout_text(), "other\n");
    assert_eq!(
        other_heard.positions.first(),
        Some(&1),
        "next in line, not behind the backlog"
    );
    assert_eq!(
        other_heard.summary().reason,
        Reason::Exited,
        "{other_heard:?}"
    );
    drop(backlog);
    finish(&h, engine).await;
}

#[tokio::test]
async fn ended_runs_past_the_resume_budget_are_forgotten_oldest_first() {
    let h = Harness::new("engine-retained").await;
    let mut config = engine_config("retained", &[("python", 1)]);
    // Room for one ended run of 1 MiB of output, not two.
    config.retained_max_bytes = 1536 * 1024;
    let engine = engine(&h, config).await;
    let mib = "import sys\nsys.stdout.write('x' * (1 << 20))";
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut session = engine
            .submit_with(spec("python", mib), Detach::After(Duration::from_secs(60)))
            .unwrap();
        let heard = hear_all(&mut session.events).await;
        assert_eq!(heard.stdout.len(), 1 << 20);
        ids.push(session.id.clone());
    }
    let first = engine.resume(&ids[0], 0).map(|_| ()).unwrap_err();
    assert!(matches!(first, ResumeError::NoSuchRun), "{first}");
    let mut second = engine.resume(&ids[1], 0).expect("the newest is kept");
    assert_eq!(hear_all(&mut second.events).await.stdout.len(), 1 << 20);
    finish(&h, engine).await;
}

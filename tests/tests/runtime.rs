//! The OCI runtime option, against the real daemon and images: an engine refuses a runtime the
//! daemon does not have, and runs under gVisor (`runsc`) when the daemon has it registered
//! (`scripts/setup.sh` registers it). The gVisor tests are skipped, saying so, only when the
//! daemon has no `runsc`.
use bytes::Bytes;
use onpyrunner_e2e::{
    engine_config, hear_all, hear_until, spec, until, Harness, Heard, TEST_TIMEOUT,
};
use onpyrunner_protocol::Reason;
use onpyrunner_supervisor::engine::{Engine, EngineConfig};
use onpyrunner_supervisor::uids::UidRange;

const RUNSC: &str = "runsc";

/// Whether the daemon has gVisor registered; says why the test is skipped when not.
async fn runsc_registered(h: &Harness, test: &str) -> bool {
    let info = h.docker.info().await.expect("daemon info");
    let registered = info.runtimes.contains_key(RUNSC);
    if !registered {
        let mut known: Vec<&String> = info.runtimes.keys().collect();
        known.sort();
        eprintln!(
            "skipped {test}: the Docker daemon has no runtime {RUNSC:?} (it has {known:?}); `bash scripts/setup.sh` installs and registers it"
        );
    }
    registered
}

fn gvisor_config(test: &str, first_uid: u32, pool: &[(&str, usize)]) -> EngineConfig {
    EngineConfig {
        runtime: Some(RUNSC.into()),
        max_running: 2,
        max_queued: 8,
        run_uids: UidRange::new(first_uid, first_uid + 9).unwrap(),
        ..engine_config(test, pool)
    }
}

async fn engine(h: &Harness, config: EngineConfig) -> Engine {
    tokio::time::timeout(TEST_TIMEOUT, Engine::start(h.docker.clone(), config))
        .await
        .expect("engine started within the timeout")
        .expect("engine starts")
}

async fn finish(h: &Harness, engine: Engine) {
    let instance = engine.config().instance.clone();
    tokio::time::timeout(TEST_TIMEOUT, engine.shutdown())
        .await
        .expect("shutdown within the timeout");
    onpyrunner_e2e::assert_instance_clean(&h.docker, &instance).await;
}

#[tokio::test]
async fn an_engine_refuses_a_runtime_the_daemon_does_not_have() {
    let h = Harness::new("runtime-missing").await;
    let config = EngineConfig {
        runtimes: [("python".to_string(), "no-such-runtime".to_string())].into(),
        ..engine_config("runtime-missing", &[("python", 1)])
    };
    let instance = config.instance.clone();
    let started = tokio::time::timeout(TEST_TIMEOUT, Engine::start(h.docker.clone(), config))
        .await
        .expect("within the timeout");
    let Err(err) = started else {
        panic!("an engine started with a runtime the daemon does not have");
    };
    let message = err.to_string();
    assert!(message.contains("\"no-such-runtime\""), "{message}");
    assert!(message.contains("of language python"), "{message}");
    assert!(
        message.contains("runc"),
        "names what the daemon has: {message}"
    );
    assert!(
        message.contains("daemon.json"),
        "says how to fix it: {message}"
    );
    onpyrunner_e2e::assert_instance_clean(&h.docker, &instance).await;
}

/// Under gVisor the kernel is gVisor's Sentry: it calls itself Linux 4.4.0.
const UNAME: &str = "import os\nprint(os.uname().release, os.getuid())";

#[tokio::test]
async fn gvisor_runs_a_pooled_and_a_fresh_run_as_their_own_uids() {
    let h = Harness::new("runsc-runs").await;
    if !runsc_registered(&h, "gvisor_runs_a_pooled_and_a_fresh_run_as_their_own_uids").await {
        return;
    }
    let engine = engine(&h, gvisor_config("runsc-runs", 23_100, &[("python", 1)])).await;
    let pool = engine.pools()["python"].clone();
    until("the gVisor pool to fill", || pool.ready() == 1).await;
    // The first claims the pooled container; the second, at once, finds the pool empty.
    let mut a = engine.submit(spec("python", UNAME)).unwrap();
    let mut b = engine.submit(spec("python", UNAME)).unwrap();
    let (a, b) = tokio::join!(hear_all(&mut a.events), hear_all(&mut b.events));
    let mut uids = Vec::new();
    for heard in [&a, &b] {
        assert_eq!(heard.summary().reason, Reason::Exited, "{heard:?}");
        let out = heard.stdout_text();
        let (release, uid) = out.trim().split_once(' ').expect("release and uid");
        assert_eq!(release, "4.4.0", "runs in gVisor's kernel: {out:?}");
        uids.push(uid.parse::<u32>().unwrap());
    }
    assert_ne!(uids[0], uids[1]);
    assert!(
        uids.iter().all(|uid| (23_100..=23_109).contains(uid)),
        "{uids:?}"
    );
    assert_eq!(
        pool.stats().hits.load(std::sync::atomic::Ordering::Relaxed),
        1
    );
    finish(&h, engine).await;
}

#[tokio::test]
async fn gvisor_runs_each_language_with_stdin() {
    let h = Harness::new("runsc-langs").await;
    if !runsc_registered(&h, "gvisor_runs_each_language_with_stdin").await {
        return;
    }
    let pools = [("python", 1), ("pypy", 1), ("node", 1), ("java", 1)];
    let config = EngineConfig {
        max_running: 4,
        ..gvisor_config("runsc-langs", 23_110, &pools)
    };
    let engine = engine(&h, config).await;
    let programs = [
        ("python", "print('hello', input())"),
        ("pypy", "print('hello', input())"),
        (
            "node",
            "process.stdin.on('data', d => console.log('hello', String(d).trim()))",
        ),
        (
            "java",
            "public class Main { public static void main(String[] a) { System.out.println(\"hello \" + new java.util.Scanner(System.in).nextLine()); } }",
        ),
    ];
    for (lang, code) in programs {
        let mut session = engine.submit(spec(lang, code)).unwrap();
        let stdin = session.stdin().unwrap();
        stdin.send(Bytes::from_static(b"gvisor\n")).await.unwrap();
        drop(stdin);
        session.close_stdin();
        let mut heard = Heard::default();
        hear_until(&mut session.events, &mut heard, "hello gvisor\n").await;
        while !heard.hear(session.events.recv().await.expect("until the summary")) {}
        assert_eq!(heard.stdout_text(), "hello gvisor\n", "{lang}: {heard:?}");
        assert_eq!(
            heard.summary().usage.exit_code,
            Some(0),
            "{lang}: {heard:?}"
        );
    }
    finish(&h, engine).await;
}

#[tokio::test]
async fn gvisor_keeps_the_lock_down_and_the_limits() {
    let h = Harness::new("runsc-limits").await;
    if !runsc_registered(&h, "gvisor_keeps_the_lock_down_and_the_limits").await {
        return;
    }
    let engine = engine(&h, gvisor_config("runsc-limits", 23_120, &[("python", 1)])).await;
    let run = |code: &str| {
        let mut session = engine.submit(spec("python", code)).unwrap();
        async move { hear_all(&mut session.events).await }
    };
    let locked = run(r#"
import errno, os, socket
assert os.getuid() != 0 and os.stat('/work').st_uid == os.getuid()
assert sorted(os.listdir('/sys/class/net')) == ['lo'], os.listdir('/sys/class/net')
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2)
    raise SystemExit('network reachable')
except OSError as e:
    assert e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH), e
for path in ('/etc/evil', '/evil'):
    try:
        open(path, 'w')
        raise SystemExit(f'wrote {path}')
    except OSError as e:
        assert e.errno in (errno.EROFS, errno.EACCES), (path, e)
assert 'CapEff:\t0000000000000000' in open('/proc/self/status').read()
print('locked down')
"#)
    .await;
    assert_eq!(locked.stdout_text(), "locked down\n", "{locked:?}");

    let hog = run("x = []\nwhile True: x.append(bytearray(16 << 20))").await;
    assert_eq!(hog.summary().reason, Reason::MemoryLimit, "{hog:?}");
    assert!(hog.summary().oom_killed);

    // The cgroup's pids limit counts gVisor's own host tasks too; the container is given room
    // for them (`container::host_pids_limit`), so a program can have about its `pids` of
    // processes, as under runc: 30 children, all alive at once.
    let children = run(r#"
import os, time
pids = [os.fork() or (time.sleep(3), os._exit(0)) for _ in range(30)]
print(sum(os.waitpid(pid, 0)[1] == 0 for pid in pids), 'children')
"#)
    .await;
    assert_eq!(children.stdout_text(), "30 children\n", "{children:?}");
    // A fork bomb is bounded all the same. gVisor does not fail the fork at the limit: the
    // Sentry cannot make its next host task and the sandbox dies (exit 2, an internal error
    // to the user), at once, leaving the next run unaffected.
    let started = std::time::Instant::now();
    let bomb = run(r#"
import os, time
while True:
    if os.fork() == 0:
        time.sleep(60)
        os._exit(0)
"#)
    .await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(8),
        "{bomb:?}"
    );
    assert_ne!(bomb.summary().reason, Reason::Timeout, "{bomb:?}");
    let after = run("print('still fine')").await;
    assert_eq!(after.stdout_text(), "still fine\n", "{after:?}");
    finish(&h, engine).await;
}

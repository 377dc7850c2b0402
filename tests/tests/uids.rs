//! Every live container runs as a uid of its own from the engine's range, against the real
//! daemon and images. Each test has a range of its own (the tests of a binary run in parallel,
//! and the kernel's per-user counters are the machine's).
use bytes::Bytes;
use onpyrunner_e2e::{
    engine_config, hear_all, hear_until, instance_containers, spec, until, Harness, Heard,
    TEST_TIMEOUT,
};
use onpyrunner_protocol::Reason;
use onpyrunner_supervisor::container::LABEL_UID;
use onpyrunner_supervisor::engine::{Engine, EngineConfig, EngineError};
use onpyrunner_supervisor::session::Session;
use onpyrunner_supervisor::uids::UidRange;

fn config(test: &str, first: u32, last: u32, pool: &[(&str, usize)]) -> EngineConfig {
    EngineConfig {
        max_running: 2,
        max_queued: 8,
        run_uids: UidRange::new(first, last).unwrap(),
        ..engine_config(test, pool)
    }
}

async fn start(h: &Harness, config: EngineConfig) -> Result<Engine, EngineError> {
    tokio::time::timeout(TEST_TIMEOUT, Engine::start(h.docker.clone(), config))
        .await
        .expect("engine started within the timeout")
}

async fn finish(h: &Harness, engine: Engine) {
    let instance = engine.config().instance.clone();
    tokio::time::timeout(TEST_TIMEOUT, engine.shutdown())
        .await
        .expect("shutdown within the timeout");
    onpyrunner_e2e::assert_instance_clean(&h.docker, &instance).await;
}

/// Hear the session up to its first line of stdout, while the program goes on.
async fn first_line(session: &mut Session) -> (Heard, String) {
    let mut heard = Heard::default();
    hear_until(&mut session.events, &mut heard, "\n").await;
    let line = heard
        .stdout_text()
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    (heard, line)
}

/// Let the program read its line of stdin and end; hear the rest.
async fn release(mut session: Session, mut heard: Heard) -> Heard {
    let stdin = session.stdin().expect("stdin open");
    stdin.send(Bytes::from_static(b"go\n")).await.unwrap();
    drop(stdin);
    session.close_stdin();
    let rest = hear_all(&mut session.events).await;
    heard.stdout.extend_from_slice(&rest.stdout);
    heard.stderr.extend_from_slice(&rest.stderr);
    heard.summary = rest.summary;
    heard
}

/// Prints the uid, gid, effective uid and the owner of /work, then waits for a line of stdin.
const WHO: &str = "import os, sys\n\
st = os.stat('/work')\n\
print(os.getuid(), os.getgid(), os.geteuid(), st.st_uid, st.st_gid, flush=True)\n\
sys.stdin.readline()\n";

#[tokio::test]
async fn concurrent_runs_run_as_distinct_uids_of_the_configured_range() {
    let h = Harness::new("uids-distinct").await;
    let engine = start(
        &h,
        config("uids-distinct", 23_000, 23_009, &[("python", 1)]),
    )
    .await
    .expect("engine starts");
    let mut a = engine.submit(spec("python", WHO)).unwrap();
    let mut b = engine.submit(spec("python", WHO)).unwrap();
    // Both have printed and both wait on stdin: their containers are live at the same time.
    let ((heard_a, line_a), (heard_b, line_b)) =
        tokio::join!(first_line(&mut a), first_line(&mut b));
    let ids = |line: &str| -> Vec<u32> {
        line.split_whitespace()
            .map(|n| n.parse().unwrap_or_else(|_| panic!("{line:?}")))
            .collect()
    };
    let (ids_a, ids_b) = (ids(&line_a), ids(&line_b));
    for ids in [&ids_a, &ids_b] {
        assert_eq!(ids.len(), 5, "{ids:?}");
        assert!(
            ids.iter().all(|&id| id == ids[0]),
            "uid, gid, euid and /work's owner are one id: {ids:?}"
        );
        assert_ne!(ids[0], 0, "not root");
        assert!((23_000..=23_009).contains(&ids[0]), "{ids:?} in the range");
    }
    assert_ne!(ids_a[0], ids_b[0], "two live runs, two uids");
    // The pool's refill (made after the claims) holds a third.
    let labelled: Vec<String> = instance_containers(&h.docker, &engine.config().instance)
        .await
        .iter()
        .filter_map(|c| c.labels.get(LABEL_UID).cloned())
        .collect();
    let mut distinct = labelled.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), labelled.len(), "no uid twice: {labelled:?}");
    for heard in [release(a, heard_a).await, release(b, heard_b).await] {
        assert_eq!(heard.summary().reason, Reason::Exited, "{heard:?}");
        assert_eq!(heard.summary().usage.exit_code, Some(0), "{heard:?}");
    }
    finish(&h, engine).await;
}

#[tokio::test]
async fn a_run_holding_every_inotify_instance_of_its_uid_leaves_another_run_its_own() {
    // fs.inotify.max_user_instances counts per uid, machine-wide: the counter one uid shared by
    // every run would make one run's exhaustion every run's.
    let h = Harness::new("uids-inotify").await;
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .expect("inotify limits readable")
        .trim()
        .parse()
        .unwrap();
    if max >= 1000 {
        // A program could not reach it under the container's open-files limit (1024).
        eprintln!(
            "skipped: fs.inotify.max_user_instances is {max}, not below the open-files limit"
        );
        return;
    }
    let engine = start(&h, config("uids-inotify", 23_010, 23_019, &[]))
        .await
        .expect("engine starts");
    let hog = "import ctypes, os, sys\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
fds = []\n\
while libc.inotify_init() >= 0: fds.append(1)\n\
print(len(fds), os.strerror(ctypes.get_errno()), flush=True)\n\
sys.stdin.readline()\n";
    let mut hog = engine.submit(spec("python", hog)).unwrap();
    let (heard_hog, line) = first_line(&mut hog).await;
    assert_eq!(
        line,
        format!("{max} Too many open files"),
        "the hog took every instance its uid may have"
    );
    let other = "import ctypes, os\n\
libc = ctypes.CDLL(None, use_errno=True)\n\
fd = libc.inotify_init()\n\
print('inotify', 'ok' if fd >= 0 else os.strerror(ctypes.get_errno()))\n";
    let mut other = engine.submit(spec("python", other)).unwrap();
    let heard = hear_all(&mut other.events).await;
    assert_eq!(heard.stdout_text(), "inotify ok\n", "{heard:?}");
    let heard_hog = release(hog, heard_hog).await;
    assert_eq!(
        heard_hog.summary().usage.exit_code,
        Some(0),
        "{heard_hog:?}"
    );
    finish(&h, engine).await;
}

#[tokio::test]
async fn a_uid_is_handed_out_again_once_its_container_is_removed() {
    let h = Harness::new("uids-reuse").await;
    // One running slot, no pool: one uid is enough, and every run takes it in turn.
    let config = EngineConfig {
        max_running: 1,
        ..config("uids-reuse", 23_020, 23_020, &[])
    };
    let engine = start(&h, config).await.expect("engine starts");
    for _ in 0..3 {
        let mut session = engine
            .submit(spec("python", "import os\nprint(os.getuid())"))
            .unwrap();
        let heard = hear_all(&mut session.events).await;
        assert_eq!(heard.stdout_text(), "23020\n", "{heard:?}");
    }
    // The container goes after the summary; its uid comes back after that.
    until("the last container's uid to come back", || {
        engine.uids().free() == 1
    })
    .await;
    assert!(engine.uids().parked().is_empty());
    finish(&h, engine).await;
}

#[tokio::test]
async fn an_engine_refuses_a_range_smaller_than_its_slots_and_pools() {
    let h = Harness::new("uids-small").await;
    let config = config("uids-small", 23_030, 23_031, &[("python", 1)]);
    let instance = config.instance.clone();
    let Err(err) = start(&h, config).await else {
        panic!("an engine with 2 uids for 2 running slots and 1 pooled container started");
    };
    let message = err.to_string();
    assert!(message.contains("--run-uids"), "{message}");
    assert!(message.contains("23030-23031 holds 2 uids"), "{message}");
    assert!(message.contains("need 3"), "{message}");
    onpyrunner_e2e::assert_instance_clean(&h.docker, &instance).await;
}

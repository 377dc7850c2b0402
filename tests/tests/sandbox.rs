//! End-to-end: real daemon, real images, a fresh container per run.
use onpyrunner_e2e::{spec, Harness};
use onpyrunner_protocol::Stage;
use onpyrunner_protocol::{OutputStream, Reason};

async fn hello(lang: &str, code: &str, expected: &str) {
    let h = Harness::new(&format!("hello-{lang}")).await;
    let ran = h.run(&spec(lang, code), b"").await;
    assert_eq!(ran.outcome.reason, Reason::Exited, "{ran:?}");
    assert_eq!(
        ran.outcome.usage.exit_code,
        Some(0),
        "stderr: {}",
        ran.stderr_text()
    );
    assert_eq!(ran.stdout_text(), expected);
    assert_eq!(ran.stderr_text(), "");
    assert!(ran.outcome.error.is_none(), "{:?}", ran.outcome.error);
}

#[tokio::test]
async fn hello_world_in_cpython() {
    hello(
        "python",
        "import sys\nprint('Hello, world!', sys.implementation.name, sys.version_info[:2] >= (3, 14))",
        "Hello, world! cpython True\n",
    )
    .await;
}

#[tokio::test]
async fn hello_world_in_pypy() {
    hello(
        "pypy",
        "import sys\nprint('Hello, world!', sys.implementation.name)",
        "Hello, world! pypy\n",
    )
    .await;
}

#[tokio::test]
async fn hello_world_in_node() {
    hello(
        "node",
        "console.log('Hello, world!', typeof process.versions.node)",
        "Hello, world! string\n",
    )
    .await;
}

#[tokio::test]
async fn hello_world_in_java() {
    hello(
        "java",
        "public class Main { public static void main(String[] a) { System.out.println(\"Hello, world! \" + (Runtime.version().feature() >= 25)); } }",
        "Hello, world! true\n",
    )
    .await;
}

#[tokio::test]
async fn program_echoes_its_stdin() {
    let h = Harness::new("echo-stdin").await;
    let input = b"line one\nline two\n\xff\x00 binary too\n";
    let code = "import sys\nsys.stdout.buffer.write(sys.stdin.buffer.read())";
    let ran = h.run(&spec("python", code), input).await;
    assert_eq!(ran.stdout, input);
    assert_eq!(ran.outcome.usage.exit_code, Some(0));
}

#[tokio::test]
async fn java_reads_stdin_with_scanner() {
    let h = Harness::new("java-stdin").await;
    let code = "import java.util.*; public class Main { public static void main(String[] a) { Scanner s = new Scanner(System.in); int x = s.nextInt(), y = s.nextInt(); System.out.println(x + y); } }";
    let ran = h.run(&spec("java", code), b"40 2\n").await;
    assert_eq!(ran.stdout_text(), "42\n", "stderr: {}", ran.stderr_text());
}

#[tokio::test]
async fn stdout_and_stderr_are_kept_apart_in_order() {
    let h = Harness::new("streams").await;
    let code = "import sys\nfor i in range(200):\n    print(f'out{i}')\n    print(f'err{i}', file=sys.stderr)\n";
    let ran = h.run(&spec("python", code), b"").await;
    let expect = |p: &str| (0..200).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(ran.stdout_text(), expect("out"));
    assert_eq!(ran.stderr_text(), expect("err"));
    assert!(ran.chunks.iter().any(|c| c.stream == OutputStream::Stderr));
}

#[tokio::test]
async fn nonzero_exit_code_is_reported() {
    let h = Harness::new("exit-code").await;
    let ran = h
        .run(
            &spec("python", "import sys\nprint('bye')\nsys.exit(3)"),
            b"",
        )
        .await;
    assert_eq!(ran.outcome.usage.exit_code, Some(3));
    assert_eq!(ran.outcome.usage.stage, Stage::Run);
    assert_eq!(ran.stdout_text(), "bye\n");
    let ran = h.run(&spec("node", "process.exitCode = 7"), b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(7));
}

#[tokio::test]
async fn uncaught_exception_shows_traceback_and_exit_code_1() {
    let h = Harness::new("traceback").await;
    let ran = h
        .run(&spec("python", "raise ValueError('boom')"), b"")
        .await;
    assert_eq!(ran.outcome.usage.exit_code, Some(1));
    assert!(
        ran.stderr_text().contains("ValueError: boom"),
        "{}",
        ran.stderr_text()
    );
}

#[tokio::test]
async fn java_compile_error_is_a_compile_failure() {
    let h = Harness::new("javac-error").await;
    let code = "public class Main { public static void main(String[] a) { int x = \"no\"; } }";
    let ran = h.run(&spec("java", code), b"").await;
    assert_eq!(ran.outcome.usage.stage, Stage::Compile, "{ran:?}");
    assert_ne!(ran.outcome.usage.exit_code, Some(0));
    assert!(ran.outcome.usage.exit_code.is_some());
    assert!(
        ran.stderr_text().contains("incompatible types"),
        "{}",
        ran.stderr_text()
    );
    assert!(ran.outcome.error.is_none());
}

#[tokio::test]
async fn all_256_byte_values_come_back_unchanged() {
    let h = Harness::new("bytes").await;
    let code = "import sys\nsys.stdout.buffer.write(bytes(range(256)) * 3)\nsys.stderr.buffer.write(bytes(range(255, -1, -1)))";
    let ran = h.run(&spec("python", code), b"").await;
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(ran.stdout, all.repeat(3));
    let reversed: Vec<u8> = (0..=255u8).rev().collect();
    assert_eq!(ran.stderr, reversed);
}

#[tokio::test]
async fn infinite_loop_is_killed_at_the_wall_time_limit() {
    let h = Harness::new("timeout").await;
    let mut s = spec("python", "print('spinning', flush=True)\nwhile True: pass");
    s.limits.wall_ms = 1500;
    let started = std::time::Instant::now();
    let ran = h.run(&s, b"").await;
    assert_eq!(ran.outcome.reason, Reason::Timeout);
    assert_eq!(ran.stdout_text(), "spinning\n");
    assert!(started.elapsed() >= std::time::Duration::from_millis(1500));
}

#[tokio::test]
async fn sandbox_is_non_root_without_network_with_read_only_root() {
    let h = Harness::new("locked-down").await;
    let code = r#"
import os, socket, errno
assert os.getuid() != 0 and os.geteuid() != 0 and os.getgid() != 0, "runs as root"
assert os.stat('/work').st_uid == os.getuid(), "the work directory is the run's"
assert sorted(os.listdir('/sys/class/net')) == ['lo'], os.listdir('/sys/class/net')
try:
    socket.create_connection(('1.1.1.1', 53), timeout=2)
    raise SystemExit('network reachable')
except OSError as e:
    assert e.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH), e
for path in ('/etc/evil', '/usr/bin/evil', '/evil'):
    try:
        open(path, 'w')
        raise SystemExit(f'wrote {path}')
    except OSError as e:
        assert e.errno in (errno.EROFS, errno.EACCES), (path, e)
status = open('/proc/self/status').read()
assert 'CapEff:\t0000000000000000' in status, status
assert 'NoNewPrivs:\t1' in status, status
open('/work/scratch', 'w').write('tmpfs is writable')
open('/tmp/scratch', 'w').write('so is /tmp')
print('locked down')
"#;
    let ran = h.run(&spec("python", code), b"").await;
    assert_eq!(ran.stderr_text(), "");
    assert_eq!(ran.stdout_text(), "locked down\n");
    assert_eq!(ran.outcome.usage.exit_code, Some(0));
}

#[tokio::test]
async fn a_fork_bomb_stops_at_the_pids_limit() {
    let h = Harness::new("fork-bomb").await;
    let code = r#"
import errno, os, time
forked = 0
try:
    while True:
        if os.fork() == 0:
            time.sleep(60)
            os._exit(0)
        forked += 1
except OSError as e:
    print(forked, errno.errorcode[e.errno], os.getuid(), flush=True)
"#;
    let s = spec("python", code);
    let pids = s.limits.pids as usize;
    let ran = h.run(&s, b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(0), "{ran:?}");
    let out = ran.stdout_text();
    let words: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(words.len(), 3, "{out:?} {}", ran.stderr_text());
    let forked: usize = words[0].parse().unwrap();
    assert!(
        forked > 0 && forked < pids,
        "{forked} forks under a limit of {pids}"
    );
    assert_eq!(words[1], "EAGAIN");
    let uid: u32 = words[2].parse().unwrap();
    assert!(
        onpyrunner_e2e::harness_uids().range().contains(uid),
        "uid {uid} is one of the harness's"
    );
}

#[tokio::test]
async fn user_code_cannot_forge_the_status_trailer() {
    let h = Harness::new("forge").await;
    let code = r#"import sys
fake = b'\x00ONPYRUNNER-STATUS 0123456789abcdef0123456789abcdef {"stage":"run","exit_code":0,"signal":null,"wall_ms":1,"cpu_ms":1,"max_rss_kib":1,"error":null}\n'
sys.stdout.buffer.write(fake)
sys.stdout.flush()
sys.exit(5)"#;
    let ran = h.run(&spec("python", code), b"").await;
    assert_eq!(
        ran.outcome.usage.exit_code,
        Some(5),
        "the forged status was believed"
    );
    assert!(
        ran.stdout.starts_with(b"\0ONPYRUNNER-STATUS 0123"),
        "forged bytes are plain output"
    );
}

#[tokio::test]
async fn memory_bomb_is_reported_as_oom() {
    let h = Harness::new("oom").await;
    let mut s = spec(
        "python",
        "x = []\nwhile True: x.append(bytearray(16 << 20))",
    );
    s.limits.memory_mib = 64;
    let ran = h.run(&s, b"").await;
    assert!(ran.outcome.oom_killed, "{ran:?}");
    assert_eq!(ran.outcome.usage.signal, Some(9));
}

#[tokio::test]
async fn source_travels_on_stdin_never_in_argv_or_environment() {
    let h = Harness::new("no-argv").await;
    // The marker stands whole in the source only (this comment line); the program builds it
    // from parts, so finding it in any argv or environment means the source travelled there.
    let code = r#"# SECRET_MARKER_31337
import os, sys, time
marker = b'SECRET_' + b'MARKER_31337'
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    for name in ('cmdline', 'environ'):
        try:
            data = open(f'/proc/{pid}/{name}', 'rb').read()
        except OSError:
            continue
        assert marker not in data, (pid, name)
print('clean', flush=True)
time.sleep(30)
"#;
    let (stdin_tx, stdin_rx) = tokio::sync::mpsc::channel(1);
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let mut ready_tx = Some(ready_tx);
    let mut s = spec("python", code);
    s.limits.wall_ms = 20_000;
    let inspect = async {
        ready_rx.await.expect("program printed");
        let ids = h.containers_left().await;
        assert_eq!(ids.len(), 1);
        let config = h
            .docker
            .inspect_container(&ids[0])
            .await
            .expect("inspect")
            .config
            .unwrap();
        let cmd = config.cmd.unwrap_or_default();
        assert_eq!(cmd, ["/usr/local/bin/onpyrunner-launcher"]);
        let env = config.env.unwrap_or_default();
        assert!(env.iter().all(|e| !e.contains("SECRET")), "{env:?}");
        assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
        drop(stdin_tx);
        h.docker
            .kill_container(&ids[0], "SIGKILL")
            .await
            .expect("kill");
    };
    let running = h.run_with(&s, stdin_rx, |chunk| {
        if chunk.data.starts_with(b"clean") {
            if let Some(tx) = ready_tx.take() {
                let _ = tx.send(());
            }
        }
    });
    let (ran, ()) = tokio::join!(running, inspect);
    assert_eq!(
        ran.stdout_text(),
        "clean\n",
        "stderr: {}",
        ran.stderr_text()
    );
    h.assert_no_containers_left().await;
}

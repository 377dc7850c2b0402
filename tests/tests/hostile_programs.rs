//! Hostile programs against the sandbox: CPU and time, processes, memory, files, network and
//! privilege. Each case asserts the verdict its user sees; `run_hostile` checks that its
//! container is gone within 2 s of the run's end and that a hello-world started beside it
//! succeeds. Output, input, source and compile-stage cases are in `hostile_programs_io.rs`.
use onpyrunner_e2e::hostile::{run_hostile, secret, Input, SECRET_VAR};
use onpyrunner_e2e::{spec, Harness, Ran};
use onpyrunner_protocol::{Reason, RunState, Stage};
use onpyrunner_supervisor::run::RunSpec;
use std::time::Duration;

/// Wall-time limit of the cases that are meant to run into it.
const WALL_MS: u64 = 2000;

fn with_wall(lang: &str, code: &str, wall_ms: u64) -> RunSpec {
    let mut s = spec(lang, code);
    s.limits.wall_ms = wall_ms;
    s
}

fn with_memory(lang: &str, code: &str, memory_mib: u64) -> RunSpec {
    let mut s = spec(lang, code);
    s.limits.memory_mib = memory_mib;
    s
}

/// Killed at the wall clock, promptly, having used at most its CPU share.
fn assert_timed_out(ran: &Ran, spec: &RunSpec) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason),
        (RunState::Timeout, Reason::Timeout),
        "{ran:?}"
    );
    assert!(s.error.is_none(), "{ran:?}");
    assert!(
        s.usage.wall_ms >= spec.limits.wall_ms && s.usage.wall_ms < spec.limits.wall_ms + 1000,
        "killed at {} ms with a limit of {} ms",
        s.usage.wall_ms,
        spec.limits.wall_ms
    );
    let most = (s.usage.wall_ms as f64 * spec.limits.cpus * 1.15) as u64 + 300;
    assert!(
        s.usage.cpu_ms <= most,
        "{} ms of CPU in {} ms at {} CPUs: the CPU cap did not hold",
        s.usage.cpu_ms,
        s.usage.wall_ms,
        spec.limits.cpus
    );
}

/// Ended by itself with exit code 0 and a verdict that is not an internal error.
fn assert_exited_cleanly(ran: &Ran) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason, s.usage.exit_code),
        (RunState::Finished, Reason::Exited, Some(0)),
        "{ran:?}"
    );
    assert!(s.error.is_none(), "{ran:?}");
}

fn assert_out_of_memory(ran: &Ran) {
    let s = &ran.outcome;
    assert_eq!(
        (s.state, s.reason),
        (RunState::Finished, Reason::MemoryLimit),
        "{ran:?}"
    );
    assert!(s.oom_killed, "{ran:?}");
    assert_eq!(s.usage.signal, Some(9), "{ran:?}");
    assert!(s.error.is_none(), "{ran:?}");
}

// ---- CPU and time

#[tokio::test]
async fn a_busy_loop_is_killed_at_the_wall_limit_in_every_language() {
    let cases = [
        ("python", "print('spinning', flush=True)\nwhile True: pass"),
        ("pypy", "print('spinning', flush=True)\nwhile True: pass"),
        ("node", "console.log('spinning'); for (;;) {}"),
        (
            "java",
            "public class Main { public static void main(String[] a) { System.out.println(\"spinning\"); long n = 0; while (true) n++; } }",
        ),
    ];
    for (lang, code) in cases {
        let s = with_wall(lang, code, WALL_MS);
        let ran = run_hostile(&format!("busy-{lang}"), &s, Input::Eof).await;
        assert_timed_out(&ran, &s);
        // No lower bound on its CPU time: on a loaded machine a busy loop may get little.
        assert_eq!(ran.stdout_text(), "spinning\n", "{lang}");
    }
}

#[tokio::test]
async fn sixty_four_busy_threads_get_one_cpu_and_are_killed_at_the_wall_limit() {
    // The threads spin only once all are started: 64 threads fighting over the GIL would take
    // the main thread seconds to start the rest. Python's pids limit (64, with the launcher and
    // init) refuses the last few, and the program spins with what it got.
    let python = "import threading\ngo = threading.Event()\ndef spin():\n    go.wait()\n    while True: pass\n\
                  n = 0\ntry:\n    while n < 64:\n        threading.Thread(target=spin, daemon=True).start()\n        n += 1\n\
                  except RuntimeError:\n    pass\nprint(n > 56, 'spinning', flush=True)\ngo.set()\nspin()";
    let java = "import java.util.concurrent.CountDownLatch; public class Main { public static void main(String[] a) { CountDownLatch go = new CountDownLatch(1); for (int i = 0; i < 64; i++) { Thread t = new Thread(() -> { try { go.await(); } catch (InterruptedException e) {} long n = 0; while (true) n++; }); t.setDaemon(true); t.start(); } System.out.println(\"True spinning\"); System.out.flush(); go.countDown(); while (true) {} } }";
    for (lang, code) in [("python", python), ("java", java)] {
        let s = with_wall(lang, code, WALL_MS);
        let ran = run_hostile(&format!("threads-{lang}"), &s, Input::Eof).await;
        assert_timed_out(&ran, &s);
        assert_eq!(ran.stdout_text(), "True spinning\n", "{lang}: {ran:?}");
    }
}

#[tokio::test]
async fn a_program_sleeping_forever_is_killed_at_the_wall_limit() {
    let cases = [
        ("python", "import time\nprint('asleep', flush=True)\ntime.sleep(10**9)"),
        ("node", "console.log('asleep'); setInterval(() => {}, 1 << 30);"),
        (
            "java",
            "public class Main { public static void main(String[] a) throws Exception { System.out.println(\"asleep\"); Thread.sleep(Long.MAX_VALUE); } }",
        ),
    ];
    for (lang, code) in cases {
        let s = with_wall(lang, code, WALL_MS);
        let ran = run_hostile(&format!("sleep-{lang}"), &s, Input::Eof).await;
        assert_timed_out(&ran, &s);
        assert_eq!(ran.stdout_text(), "asleep\n", "{lang}");
        assert!(ran.outcome.usage.cpu_ms < 1000, "{lang}: {ran:?}");
    }
}

#[tokio::test]
async fn a_program_that_stops_itself_or_its_whole_group_with_sigstop_times_out() {
    // SIGSTOP to the program leaves the launcher waiting; to the group stops the launcher too.
    for (name, how) in [
        ("self", "os.kill(os.getpid(), signal.SIGSTOP)"),
        ("group", "os.killpg(0, signal.SIGSTOP)"),
    ] {
        let code =
            format!("import os, signal\nprint('stopping', flush=True)\n{how}\nprint('resumed')");
        let s = with_wall("python", &code, WALL_MS);
        let ran = run_hostile(&format!("sigstop-{name}"), &s, Input::Eof).await;
        assert_timed_out(&ran, &s);
        assert_eq!(ran.stdout_text(), "stopping\n", "{name}");
    }
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_is_still_killed_at_the_wall_limit() {
    let python = "import os, signal, time\n\
                  for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1):\n    signal.signal(s, signal.SIG_IGN)\n\
                  if os.fork() == 0:\n    while True: time.sleep(0.01)\n\
                  print('deaf', flush=True)\nwhile True: time.sleep(0.01)";
    let node = "for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP']) process.on(s, () => {});\n\
                console.log('deaf'); setInterval(() => {}, 10);";
    let java = "import sun.misc.Signal; public class Main { public static void main(String[] a) throws Exception { for (String s : new String[] {\"TERM\", \"INT\", \"HUP\"}) Signal.handle(new Signal(s), x -> {}); Runtime.getRuntime().addShutdownHook(new Thread(() -> { while (true) { try { Thread.sleep(1000); } catch (InterruptedException e) {} } })); System.out.println(\"deaf\"); while (true) Thread.sleep(10); } }";
    for (lang, code) in [("python", python), ("node", node), ("java", java)] {
        let s = with_wall(lang, code, WALL_MS);
        let ran = run_hostile(&format!("sigterm-{lang}"), &s, Input::Eof).await;
        assert_timed_out(&ran, &s);
        assert_eq!(ran.stdout_text(), "deaf\n", "{lang}: {ran:?}");
    }
}

// ---- Processes

#[tokio::test]
async fn a_fork_bomb_is_capped_by_the_pids_limit_and_ends_with_its_main_process() {
    // Every child forks forever; the main process stops after 1.5 s and exits, which ends the
    // run: the rest go with the container.
    let code = r#"import errno, os, time
main = os.getpid()
end = time.monotonic() + 1.5
refused = 0
while True:
    try:
        os.fork()
    except OSError as e:
        if e.errno != errno.EAGAIN:
            raise
        refused += 1
    if os.getpid() == main and time.monotonic() > end:
        break
for path in ('/sys/fs/cgroup/pids/pids.max', '/sys/fs/cgroup/pids.max'):
    if os.path.exists(path):
        print('pids.max', open(path).read().strip())
print('forks refused:', refused > 0, flush=True)
os._exit(0)
"#;
    let s = with_wall("python", code, 8000);
    let ran = run_hostile("fork-bomb", &s, Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        format!("pids.max {}\nforks refused: True\n", s.limits.pids)
    );
    assert!(ran.outcome.usage.wall_ms < 6000, "{ran:?}");
}

#[tokio::test]
async fn a_thread_bomb_is_capped_by_the_pids_limit_in_python_and_java() {
    let python = "import threading, time\nn = 0\ntry:\n    while True:\n        \
                  threading.Thread(target=time.sleep, args=(100,), daemon=True).start()\n        n += 1\n\
                  except RuntimeError as e:\n    print('threads', n, 'then', e, flush=True)";
    let java = "public class Main { public static void main(String[] a) { int n = 0; try { while (true) { Thread t = new Thread(() -> { try { Thread.sleep(100000); } catch (InterruptedException e) {} }); t.setDaemon(true); t.start(); n++; } } catch (Throwable e) { System.err.println(\"threads \" + n + \" then \" + e); } } }";
    for (lang, code, error) in [
        ("python", python, "can't start new thread"),
        (
            "java",
            java,
            "java.lang.OutOfMemoryError: unable to create native thread",
        ),
    ] {
        let s = with_wall(lang, code, 8000);
        let ran = run_hostile(&format!("thread-bomb-{lang}"), &s, Input::Eof).await;
        assert_exited_cleanly(&ran);
        // The JVM says what failed on stdout; the program's own line is the last of its stream.
        let text = format!("{}{}", ran.stdout_text(), ran.stderr_text());
        let line = text
            .lines()
            .find(|l| l.starts_with("threads "))
            .unwrap_or_else(|| panic!("{lang}: no count in {text}"));
        let n: i64 = line.split(' ').nth(1).unwrap().parse().unwrap();
        assert!(n > 8 && n < s.limits.pids, "{lang}: {line}");
        assert!(line.contains(error), "{lang}: {line}");
    }
}

/// Processes on this machine whose command line holds `marker` (the daemon is local, so the
/// containers' processes show in our /proc).
fn host_processes_with(marker: &str) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            if cmdline
                .windows(marker.len())
                .any(|w| w == marker.as_bytes())
            {
                found.push(pid);
            }
        }
    }
    found
}

#[tokio::test]
async fn a_setsid_child_that_outlives_the_program_ends_with_the_run() {
    let marker = format!("orphan-{}", onpyrunner_supervisor::run::random_hex(8));
    let code = r#"import os, signal, sys, time
marker = sys.argv[1]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        os.execv(sys.executable, [sys.executable, '-c',
            'import signal, time\nfor s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT): signal.signal(s, signal.SIG_IGN)\nwhile True: time.sleep(1)',
            marker])
    os._exit(0)
os.wait()
time.sleep(1)
print('leaving', flush=True)
"#;
    let mut s = with_wall("python", code, 8000);
    s.args = vec![marker.clone()];
    let watching = async {
        // The detached grandchild shows on the host while the run goes on.
        let started = std::time::Instant::now();
        while host_processes_with(&marker).is_empty() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the grandchild never showed"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let (ran, ()) = tokio::join!(run_hostile("setsid", &s, Input::Eof), watching);
    assert_exited_cleanly(&ran);
    assert_eq!(ran.stdout_text(), "leaving\n");
    assert!(
        ran.outcome.usage.wall_ms < 5000,
        "the run waited for the orphan: {ran:?}"
    );
    assert_eq!(
        host_processes_with(&marker),
        Vec::<u32>::new(),
        "the orphan outlived its container"
    );
}

#[tokio::test]
async fn a_thousand_zombies_are_reaped_or_capped_and_the_run_ends_normally() {
    // 1000 orphans that exit at once, left to init to reap; then children of our own that are
    // never waited for, until the pids limit refuses more.
    let code = r#"import errno, os, time
def fork():
    while True:
        try:
            return os.fork()
        except BlockingIOError:
            time.sleep(0.001)
orphans = 0
for batch in range(40):
    middle = fork()
    if middle == 0:
        for _ in range(25):
            if fork() == 0:
                os._exit(0)
        os._exit(0)
    os.waitpid(middle, 0)
    orphans += 25
zombies = 0
try:
    while zombies < 1000:
        if os.fork() == 0:
            os._exit(0)
        zombies += 1
except BlockingIOError:
    pass
print('orphans', orphans, 'zombies capped', zombies < 64, flush=True)
"#;
    let s = with_wall("python", code, 10_000);
    let ran = run_hostile("zombies", &s, Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(ran.stdout_text(), "orphans 1000 zombies capped True\n");
}

// ---- Memory

#[tokio::test]
async fn a_memory_bomb_is_reported_as_out_of_memory() {
    let cases = [
        (
            "python",
            "x = []\nwhile True: x.append(bytearray(1 << 20))",
            64,
        ),
        (
            "pypy",
            "x = []\nwhile True: x.append(bytearray(1 << 20))",
            128,
        ),
        (
            "node",
            "const a = []; for (;;) a.push(Buffer.alloc(1 << 20, 1));",
            128,
        ),
    ];
    for (lang, code, memory_mib) in cases {
        let s = with_memory(lang, code, memory_mib);
        let ran = run_hostile(&format!("oom-{lang}"), &s, Input::Eof).await;
        assert_out_of_memory(&ran);
    }
}

#[tokio::test]
async fn a_javascript_heap_bomb_is_reported_as_out_of_memory_not_as_a_crash() {
    // Objects on V8's own heap: stopped by the container's limit, not by a smaller heap limit
    // of V8's (which aborts node with SIGABRT and "heap out of memory").
    let code = "const a = []; for (;;) a.push(new Array(1e5).fill(1.5));";
    let s = with_memory("node", code, 256);
    let ran = run_hostile("oom-v8", &s, Input::Eof).await;
    assert_out_of_memory(&ran);
}

#[tokio::test]
async fn a_java_heap_bomb_is_reported_as_out_of_memory_not_as_exit_1() {
    let code = "import java.util.*; public class Main { public static void main(String[] a) { List<long[]> l = new ArrayList<>(); while (true) l.add(new long[1 << 17]); } }";
    let s = with_memory("java", code, 384);
    let ran = run_hostile("oom-java", &s, Input::Eof).await;
    assert_out_of_memory(&ran);
}

#[tokio::test]
async fn filling_shm_tmp_and_work_stops_at_their_sizes_and_the_next_run_finds_them_empty() {
    let code = r#"import errno, os
def fill(d):
    total = 0
    try:
        for i in range(1000):
            with open(f'{d}/fill{i}', 'wb') as f:
                for _ in range(8):
                    f.write(b'x' * (1 << 20))
                    total += 1 << 20
    except OSError as e:
        return total >> 20, errno.errorcode[e.errno]
    return total >> 20, 'no error'
for d in ('/dev/shm', '/tmp', '/work'):
    mib, error = fill(d)
    print(d, 56 <= mib <= 64, error, flush=True)
"#;
    let ran = run_hostile("fill", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "/dev/shm True ENOSPC\n/tmp True ENOSPC\n/work True ENOSPC\n"
    );
    let next = Harness::new("fill-after").await;
    let ran = next
        .run(
            &spec(
                "python",
                "import os\nprint(os.listdir('/dev/shm'), os.listdir('/tmp'), sorted(os.listdir('/work')))",
            ),
            b"",
        )
        .await;
    assert_eq!(ran.stdout_text(), "[] [] ['main.py']\n", "{ran:?}");
}

// ---- Files

#[tokio::test]
async fn writing_to_the_root_filesystem_fails() {
    let code = r#"import errno, os
for path in ('/evil', '/etc/passwd', '/usr/bin/python3.15', '/usr/local/bin/onpyrunner-launcher', '/sbin/docker-init'):
    try:
        open(path, 'ab').close()
        print(path, 'written')
    except OSError as e:
        print(path, errno.errorcode[e.errno] in ('EROFS', 'EACCES'))
for path in ('/newdir', '/usr/newdir'):
    try:
        os.mkdir(path)
        print(path, 'made')
    except OSError as e:
        print(path, errno.errorcode[e.errno] in ('EROFS', 'EACCES'))
"#;
    let ran = run_hostile("write-root", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "/evil True\n/etc/passwd True\n/usr/bin/python3.15 True\n\
         /usr/local/bin/onpyrunner-launcher True\n/sbin/docker-init True\n/newdir True\n/usr/newdir True\n"
    );
}

#[tokio::test]
async fn a_file_beyond_the_size_limit_cannot_be_written() {
    let python = "import errno\nn = 0\ntry:\n    with open('/work/big', 'wb') as f:\n        \
                  while True:\n            f.write(b'x' * (1 << 20))\n            f.flush()\n            n += 1\n\
                  except OSError as e:\n    print(n, errno.errorcode[e.errno])";
    let node = "const fs = require('fs'); const fd = fs.openSync('/work/big', 'w'); const b = Buffer.alloc(1 << 20); let n = 0; try { for (;;) { fs.writeSync(fd, b); n++; } } catch (e) { console.log(n, e.code); }";
    let java = "import java.io.*; public class Main { public static void main(String[] a) throws Exception { int n = 0; try (FileOutputStream f = new FileOutputStream(\"/work/big\")) { byte[] b = new byte[1 << 20]; while (true) { f.write(b); n++; } } catch (IOException e) { System.out.println(n + \" \" + e.getMessage()); } } }";
    for (lang, code, said) in [
        ("python", python, "16 EFBIG\n"),
        ("node", node, "16 EFBIG\n"),
        ("java", java, "16 File too large\n"),
    ] {
        let s = spec(lang, code);
        assert_eq!(s.limits.file_size_mib, 16);
        let ran = run_hostile(&format!("fsize-{lang}"), &s, Input::Eof).await;
        assert_exited_cleanly(&ran);
        assert_eq!(ran.stdout_text(), said, "{lang}");
    }
}

#[tokio::test]
async fn a_million_tiny_files_run_into_the_inode_limit() {
    let code = "import errno\nn = 0\ntry:\n    for i in range(1_000_000):\n        \
                open(f'/work/f{i}', 'w').close()\n        n += 1\n\
                except OSError as e:\n    print(1000 < n < 4096, errno.errorcode[e.errno])";
    let ran = run_hostile("inodes", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(ran.stdout_text(), "True ENOSPC\n");
}

#[tokio::test]
async fn a_million_open_files_run_into_the_descriptor_limit() {
    let code = "import errno, os\nfds = []\ntry:\n    for i in range(1_000_000):\n        \
                fds.append(os.open('/dev/null', os.O_RDONLY))\n\
                except OSError as e:\n    print(1000 < len(fds) < 1024, errno.errorcode[e.errno])";
    let ran = run_hostile("nofile", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(ran.stdout_text(), "True EMFILE\n");
}

#[tokio::test]
async fn links_planted_in_the_work_directory_are_followed_by_nothing_outside() {
    // A file of ours that a link in the container names by its host path.
    let canary = std::env::temp_dir().join(format!(
        "onpyrunner-canary-{}",
        onpyrunner_supervisor::run::random_hex(8)
    ));
    std::fs::write(&canary, b"canary\n").unwrap();
    let before = std::fs::metadata(&canary).unwrap().modified().unwrap();
    let code = r#"import errno, os, sys
canary = sys.argv[1]
targets = {
    'shadow': '/etc/shadow', 'docker.sock': '/var/run/docker.sock', 'run-docker.sock': '/run/docker.sock',
    'init-root': '/proc/1/root', 'host-root': '/proc/1/root/../../..', 'canary': canary,
    'canary-dir': os.path.dirname(canary), 'self-root': '/proc/self/root',
}
for name, target in targets.items():
    os.symlink(target, f'/work/{name}')
for name in ('shadow', 'docker.sock', 'init-root'):
    try:
        open(f'/work/{name}', 'rb').read(1)
        print(name, 'opened')
    except OSError as e:
        print(name, errno.errorcode[e.errno])
# Through the link: a file in the container's own /tmp, wherever the host's canary is.
open('/work/canary', 'w').write('overwritten\n')
open('/work/canary-dir/planted', 'w').write('planted\n')
for source in ('/etc/shadow', '/etc/passwd', '/usr/local/bin/onpyrunner-launcher'):
    try:
        os.link(source, '/work/hard-' + os.path.basename(source))
        print('linked', source)
    except OSError as e:
        print('link', source, errno.errorcode[e.errno])
print('planted', sorted(os.listdir('/work')))
"#;
    let mut s = spec("python", code);
    s.args = vec![canary.to_string_lossy().into_owned()];
    let ran = run_hostile("links", &s, Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "shadow EACCES\ndocker.sock ENOENT\ninit-root EISDIR\n\
         link /etc/shadow EXDEV\nlink /etc/passwd EXDEV\nlink /usr/local/bin/onpyrunner-launcher EXDEV\n\
         planted ['canary', 'canary-dir', 'docker.sock', 'host-root', 'init-root', 'main.py', 'run-docker.sock', 'self-root', 'shadow']\n"
    );
    assert_eq!(std::fs::read(&canary).unwrap(), b"canary\n");
    assert_eq!(
        std::fs::metadata(&canary).unwrap().modified().unwrap(),
        before
    );
    let planted = canary.parent().unwrap().join("planted");
    assert!(!planted.exists(), "{planted:?} appeared on the host");
    std::fs::remove_file(&canary).unwrap();
}

// ---- Network

/// The machine's own addresses, as `hostname -I` lists them.
fn host_addresses() -> Vec<String> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I runs");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn no_address_outside_the_container_is_reachable() {
    let mut targets: Vec<String> = vec!["172.17.0.1".into(), "169.254.169.254".into()];
    targets.extend(host_addresses());
    assert!(targets.len() > 2, "hostname -I listed no address");
    let code = r#"import errno, socket, sys
for host in sys.argv[1:]:
    for port in (22, 80, 2375):
        family = socket.AF_INET6 if ':' in host else socket.AF_INET
        s = socket.socket(family, socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect((host, port))
            print(host, port, 'connected')
        except OSError as e:
            print(host, port, errno.errorcode.get(e.errno, repr(e)))
        s.close()
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
try:
    s.connect(('127.0.0.1', 2375))
except OSError as e:
    print('own loopback', errno.errorcode[e.errno])
try:
    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('8.8.8.8', 53))
except OSError as e:
    print('udp', errno.errorcode[e.errno])
"#;
    let mut s = spec("python", code);
    s.args = targets.clone();
    let ran = run_hostile("tcp", &s, Input::Eof).await;
    assert_exited_cleanly(&ran);
    let mut expected = String::new();
    for host in &targets {
        for port in [22, 80, 2375] {
            expected.push_str(&format!("{host} {port} ENETUNREACH\n"));
        }
    }
    expected.push_str("own loopback ECONNREFUSED\nudp ENETUNREACH\n");
    assert_eq!(ran.stdout_text(), expected, "stderr: {}", ran.stderr_text());
}

#[tokio::test]
async fn dns_lookups_fail() {
    let code = r#"import socket
for name in ('example.com', 'host.docker.internal', 'metadata.google.internal'):
    try:
        socket.getaddrinfo(name, 80)
        print(name, 'resolved')
    except socket.gaierror as e:
        print(name, type(e).__name__, e.errno in (socket.EAI_AGAIN, socket.EAI_NONAME))
"#;
    let python = run_hostile("dns", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&python);
    assert_eq!(
        python.stdout_text(),
        "example.com gaierror True\nhost.docker.internal gaierror True\nmetadata.google.internal gaierror True\n"
    );
    let node = "require('dns').lookup('example.com', (e) => console.log(e ? e.code : 'resolved'));";
    let ran = run_hostile("dns-node", &spec("node", node), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert!(
        ["EAI_AGAIN\n", "ENOTFOUND\n"].contains(&ran.stdout_text().as_str()),
        "{ran:?}"
    );
}

#[tokio::test]
async fn raw_and_packet_sockets_are_refused() {
    let code = r#"import errno, socket
for name, args in [
    ('raw icmp', (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
    ('raw tcp', (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
    ('raw icmpv6', (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)),
    ('packet', (socket.AF_PACKET, socket.SOCK_RAW, 0x0300)),
]:
    try:
        socket.socket(*args)
        print(name, 'opened')
    except OSError as e:
        print(name, errno.errorcode[e.errno])
"#;
    let ran = run_hostile("raw", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "raw icmp EPERM\nraw tcp EPERM\nraw icmpv6 EPERM\npacket EPERM\n"
    );
}

#[tokio::test]
async fn there_is_no_docker_socket_to_find() {
    let code = r#"import os, socket, stat
for path in ('/var/run/docker.sock', '/run/docker.sock', '/run/containerd/containerd.sock', '/var/run/docker/containerd/containerd.sock'):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        print(path, 'connected')
    except OSError as e:
        print(path, type(e).__name__)
found = []
for top in os.listdir('/'):
    if top in ('proc', 'sys'):
        continue
    for root, dirs, files in os.walk('/' + top):
        for name in files + dirs:
            try:
                if stat.S_ISSOCK(os.lstat(os.path.join(root, name)).st_mode):
                    found.append(os.path.join(root, name))
            except OSError:
                pass
print('sockets', found)
"#;
    let ran = run_hostile("docker-sock", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "/var/run/docker.sock FileNotFoundError\n/run/docker.sock FileNotFoundError\n\
         /run/containerd/containerd.sock FileNotFoundError\n\
         /var/run/docker/containerd/containerd.sock FileNotFoundError\nsockets []\n"
    );
}

// ---- Privilege

#[tokio::test]
async fn setuid_unshare_mount_and_setuid_binaries_give_no_privilege() {
    let code = r#"import ctypes, errno, os, subprocess
libc = ctypes.CDLL('libc.so.6', use_errno=True)
def attempt(name, call):
    try:
        call()
        print(name, 'succeeded')
    except OSError as e:
        print(name, errno.errorcode[e.errno])
def c(rc):
    if rc != 0:
        raise OSError(ctypes.get_errno(), 'failed')
attempt('setuid', lambda: os.setuid(0))
attempt('setgid', lambda: os.setgid(0))
attempt('setgroups', lambda: os.setgroups([0]))
attempt('unshare user', lambda: os.unshare(os.CLONE_NEWUSER))
attempt('unshare mount', lambda: os.unshare(os.CLONE_NEWNS))
os.mkdir('/work/m')
attempt('mount', lambda: c(libc.mount(b'none', b'/work/m', b'tmpfs', 0, None)))
attempt('chroot', lambda: os.chroot('/work'))
run = subprocess.run(['/usr/bin/mount', '-t', 'tmpfs', 'none', '/work/m'], capture_output=True)
print('setuid mount', run.returncode != 0, os.path.ismount('/work/m'))
print('uid', os.getuid(), os.geteuid(), os.getgid(), os.getegid())
"#;
    let ran = run_hostile("privilege", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    let text = ran.stdout_text();
    let (attempts, uids) = text.rsplit_once("uid ").expect("the uid line");
    assert_eq!(
        attempts,
        "setuid EPERM\nsetgid EPERM\nsetgroups EPERM\nunshare user EPERM\nunshare mount EPERM\n\
         mount EPERM\nchroot EPERM\nsetuid mount True False\n"
    );
    // Real and effective uid and gid: the run's own uid, from the engine's default --run-uids
    // range (20000-20999) or the harness's own (21000-21999), never root nor the image's user.
    let ids: Vec<u32> = uids
        .split_whitespace()
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{text}");
    assert!(ids.iter().all(|&id| id == ids[0]), "{text}");
    assert!((20000..=21999).contains(&ids[0]), "{text}");
}

#[tokio::test]
async fn the_program_has_no_capabilities_no_new_privileges_and_a_seccomp_filter() {
    let code = "for line in open('/proc/self/status'):\n    \
                if line.startswith(('Cap', 'NoNewPrivs', 'Seccomp:')):\n        print(line, end='')";
    let ran = run_hostile("caps", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(
        ran.stdout_text(),
        "CapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\n\
         CapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n"
    );
}

#[tokio::test]
async fn the_environment_holds_nothing_of_the_supervisors() {
    let secret = secret();
    assert_eq!(
        std::env::var(SECRET_VAR).as_deref(),
        Ok(secret),
        "the test process holds the secret"
    );
    let code = r#"import os
print(sorted(os.environ))
for pid in [p for p in os.listdir('/proc') if p.isdigit()]:
    try:
        data = open(f'/proc/{pid}/environ', 'rb').read()
    except OSError:
        continue
    print(pid, b'ONPYRUNNER' in data, b'hush-' in data)
"#;
    let ran = run_hostile("environment", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    let out = ran.stdout_text();
    assert!(!out.contains(secret) && !out.contains(SECRET_VAR), "{out}");
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some("['HOME', 'HOSTNAME', 'LANG', 'LC_ALL', 'ONLINE_JUDGE', 'PATH', 'TMPDIR']")
    );
    let readable: Vec<&str> = lines.collect();
    assert!(readable.len() >= 2, "init's and our own environ: {out}");
    assert!(
        readable.iter().all(|l| l.ends_with(" False False")),
        "{out}"
    );
}

#[tokio::test]
async fn masked_proc_and_sys_paths_stay_masked() {
    let code = r#"import errno, os
for path in ('/proc/kcore', '/proc/keys', '/proc/timer_list', '/proc/sched_debug', '/proc/latency_stats'):
    try:
        with open(path, 'rb') as f:
            print(path, 'bytes', len(f.read(4096)))
    except OSError as e:
        print(path, errno.errorcode[e.errno])
for path in ('/sys/firmware', '/proc/acpi', '/proc/scsi'):
    try:
        print(path, 'entries', os.listdir(path))
    except OSError as e:
        print(path, errno.errorcode[e.errno])
for path in ('/proc/sysrq-trigger', '/proc/sys/kernel/hostname'):
    try:
        with open(path, 'w') as f:
            f.write('x')
        print(path, 'written')
    except OSError as e:
        print(path, errno.errorcode[e.errno] in ('EROFS', 'EACCES', 'ENOENT'))
"#;
    let ran = run_hostile("masked", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    let out = ran.stdout_text();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 10, "{out}");
    for line in &lines[..5] {
        assert!(
            line.ends_with(" bytes 0") || line.ends_with(" EACCES") || line.ends_with(" ENOENT"),
            "not masked: {line}"
        );
    }
    for line in &lines[5..8] {
        assert!(
            line.ends_with(" entries []") || line.ends_with(" EACCES") || line.ends_with(" ENOENT"),
            "not masked: {line}"
        );
    }
    assert_eq!(
        lines[8..],
        ["/proc/sysrq-trigger True", "/proc/sys/kernel/hostname True"]
    );
}

#[tokio::test]
async fn killing_the_launcher_gives_a_verdict_of_the_program_not_an_internal_error() {
    // The launcher runs as the program's user, so the program may kill it; docker-init, PID 1
    // of the container's namespace, takes no SIGKILL from inside but passes SIGTERM on.
    let cases = [
        ("parent-kill", "os.kill(os.getppid(), signal.SIGKILL)", 9),
        ("init-term", "os.kill(1, signal.SIGTERM)", 15),
        ("everyone", "os.kill(-1, signal.SIGKILL)", 9),
    ];
    for (name, how, signal) in cases {
        let code = format!(
            "import os, signal, time\nprint('launcher', os.getppid(), flush=True)\n{how}\ntime.sleep(30)\nprint('survived')"
        );
        // Had the kill not ended the run, the sleep would have run into the wall clock.
        let s = with_wall("python", &code, 8000);
        let ran = run_hostile(&format!("kill-{name}"), &s, Input::Eof).await;
        let summary = &ran.outcome;
        assert_eq!(
            (summary.state, summary.reason, summary.usage.stage),
            (RunState::Finished, Reason::Exited, Stage::Run),
            "{name}: {ran:?}"
        );
        assert!(summary.error.is_none(), "{name}: {ran:?}");
        assert_eq!(
            (summary.usage.exit_code, summary.usage.signal),
            (None, Some(signal)),
            "{name}: {ran:?}"
        );
        assert!(ran.stdout_text().starts_with("launcher "), "{name}");
        assert!(!ran.stdout_text().contains("survived"), "{name}");
    }
    // SIGKILL to PID 1 from inside is dropped by the kernel: the program goes on.
    let code = "import os, signal\nos.kill(1, signal.SIGKILL)\nprint('init still there')";
    let ran = run_hostile("kill-init", &spec("python", code), Input::Eof).await;
    assert_exited_cleanly(&ran);
    assert_eq!(ran.stdout_text(), "init still there\n");
}

//! Judged tests run by a process started once, against the real daemon and images: CPython and
//! PyPy tests as forks of the image's fork server (images/warm/onpyrunner_fork.py), Java tests
//! in the warm JVM that compiled them (images/warm/OnpyrunnerJudge.java), Node tests in the judge
//! process (images/warm/onpyrunner_judge.js). Every verdict is what
//! a fresh process per test would get, and each test checks where it really ran.
use onpyrunner_e2e::{judged, verdicts, Harness};
use onpyrunner_protocol::judge::Verdict;

/// Says on its first line whether its parent is the fork server, what a fresh `python -u
/// main.py` would show of itself, and whether the last test's file or module state is seen.
const PROGRAM: &str = r#"import os, sys, json
parent = open("/proc/%d/cmdline" % os.getppid(), "rb").read().split(b"\0")
forked = any(a.endswith(b"onpyrunner_fork.py") for a in parent)
counter = globals().get("counter", 0) + 1
json.leak = getattr(json, "leak", 0) + 1
print(forked, __name__, sys.argv, sys.path[0] == os.getcwd(), os.path.exists("made"), counter, json.leak)
open("made", "w").write("by a test")
what = input().split()
if what[0] == "exit3":
    raise SystemExit(3)
if what[0] == "raise":
    print(1 / 0)
if what[0] == "sleep":
    import time
    time.sleep(60)
if what[0] == "bomb":
    # Not a constant: PyPy's compiler would fold it, and every test would be the bomb.
    mib = int("1000")
    x = "x" * (mib * 1024 * 1024)
print(int(what[1]) + int(what[2]))
"#;

const HEAD: &str = "True __main__ ['main.py'] True False 1 1\n";

async fn every_verdict_through_the_fork_server(lang: &str) {
    let h = Harness::new(&format!("judge-fork-{lang}")).await;
    let ok = |sum: &str| format!("{HEAD}{sum}\n");
    let tests = [
        ("sum 1 2\n", Some(ok("3"))),
        ("sum 2 2\n", Some(ok("5"))),
        ("exit3\n", Some(HEAD.to_string())),
        ("raise\n", Some(HEAD.to_string())),
        ("sleep\n", Some(HEAD.to_string())),
        ("sum 40 2\n", Some(ok("42"))),
    ];
    let refs: Vec<(&str, Option<&str>)> = tests.iter().map(|(i, e)| (*i, e.as_deref())).collect();
    let mut s = judged(lang, PROGRAM, &refs);
    s.limits.wall_ms = 2000;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [
            Verdict::Accepted,
            Verdict::WrongAnswer,
            Verdict::RuntimeError,
            Verdict::RuntimeError,
            Verdict::TimeLimit,
            Verdict::Accepted,
        ],
        "{ran:?}"
    );
    let judged = ran.outcome.judge.as_ref().unwrap();
    assert_eq!(judged.tests[2].usage.exit_code, Some(3), "SystemExit(3)");
    assert_eq!(
        judged.tests[3].usage.exit_code,
        Some(1),
        "uncaught exception"
    );
    assert!(
        judged.tests[4].usage.wall_ms >= 2000,
        "{:?}",
        judged.tests[4]
    );
    let stderr = ran.stderr_text();
    assert!(
        stderr.contains("Traceback (most recent call last):\n  File \"/work/main.py\", line 12")
            && stderr.contains("ZeroDivisionError"),
        "the program's own traceback: {stderr}"
    );
    assert!(
        !stderr.contains("onpyrunner"),
        "no frame of the server, no fallback: {stderr}"
    );
    assert_eq!(
        ran.stdout_text().matches(HEAD).count(),
        6,
        "{}",
        ran.stdout_text()
    );
}

#[tokio::test]
async fn python_tests_are_forks_with_every_verdict_as_fresh_processes_get() {
    every_verdict_through_the_fork_server("python").await;
}

#[tokio::test]
async fn pypy_tests_are_forks_with_every_verdict_as_fresh_processes_get() {
    every_verdict_through_the_fork_server("pypy").await;
}

#[tokio::test]
async fn a_forked_memory_bomb_is_memory_limit_and_the_next_test_still_forks() {
    let h = Harness::new("judge-fork-memory").await;
    let next = format!("{HEAD}3\n");
    let mut s = judged(
        "python",
        PROGRAM,
        &[("bomb\n", None), ("sum 1 2\n", Some(next.as_str()))],
    );
    s.limits.memory_mib = 128;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [Verdict::MemoryLimit, Verdict::Accepted],
        "{ran:?}"
    );
}

/// A program that leans on how the interpreter ends: a thread still printing when the module
/// ends, an atexit callback, a global's `__del__`, a file on fd 1 it never closes, and its exit
/// by `sys.exit` with a message or a number. Judged (a fork of the server), each test prints and
/// exits as the same program does run fresh, with the input as its stdin.
const ENDING: &str = r#"import atexit, os, sys, threading, time
class Last:
    def __del__(self):
        print("del of a global")
last = Last()
out = open(1, "w", closefd=False)
out.write("on fd 1, never closed\n")
def late():
    time.sleep(0.2)
    print("from a thread after the module ended")
threading.Thread(target=late).start()
atexit.register(lambda: print("atexit"))
what = input().strip()
print("main ends", what)
if what == "message":
    sys.exit("a message")
if what == "code":
    sys.exit(7)
if what == "big":
    sys.exit(256 + 5)
"#;

async fn ends_as_a_fresh_process_does(lang: &str) {
    let h = Harness::new(&format!("judge-fork-ending-{lang}")).await;
    let inputs = ["plain\n", "message\n", "code\n", "big\n"];
    let mut fresh = Vec::new();
    for input in inputs {
        let ran = h
            .run(&onpyrunner_e2e::spec(lang, ENDING), input.as_bytes())
            .await;
        assert!(ran.stdout_text().contains("atexit"), "{ran:?}");
        fresh.push((
            ran.stdout_text(),
            ran.outcome.usage.exit_code,
            ran.stderr_text(),
        ));
    }
    let tests: Vec<(&str, Option<&str>)> = inputs
        .iter()
        .zip(&fresh)
        .map(|(i, (out, _, _))| (*i, Some(out.as_str())))
        .collect();
    let ran = h.run(&judged(lang, ENDING, &tests), b"").await;
    let judged = ran.outcome.judge.as_ref().expect("judged");
    for (test, (out, code, _)) in judged.tests.iter().zip(&fresh) {
        assert_eq!(
            test.usage.exit_code, *code,
            "test {}: {ran:?}; fresh: {out}",
            test.index
        );
    }
    assert_eq!(judged.tests[0].verdict, Verdict::Accepted, "{ran:?}");
    // The others exit non-zero (runtime errors, not compared): their output, all together.
    let all: String = fresh.iter().map(|(out, _, _)| out.as_str()).collect();
    assert_eq!(ran.stdout_text(), all, "{ran:?}");
    assert_eq!(judged.tests.len(), inputs.len(), "{ran:?}");
    assert_eq!(fresh[1].1, Some(1), "{fresh:?}");
    assert!(fresh[1].2.contains("a message"), "{fresh:?}");
    assert!(ran.stderr_text().contains("a message"), "{ran:?}");
    assert_eq!((fresh[2].1, fresh[3].1), (Some(7), Some(5)), "{fresh:?}");
}

#[tokio::test]
async fn python_tests_end_as_fresh_processes_do() {
    ends_as_a_fresh_process_does("python").await;
}

#[tokio::test]
async fn pypy_tests_end_as_fresh_processes_do() {
    ends_as_a_fresh_process_does("pypy").await;
}

/// Says on stderr whether it runs in the warm JVM; on stdout what a fresh `java Main` would
/// show of itself and whether the last test's statics or files are seen; then does what its
/// input's first word says.
const JAVA_PROGRAM: &str = r#"import java.io.*;
import java.util.*;
public class Main {
    static int runs = 0;
    public static void main(String[] args) throws Exception {
        runs++;
        boolean warm = ProcessHandle.current().info().arguments()
                .map(a -> Arrays.asList(a).contains("OnpyrunnerWarm")).orElse(false);
        System.err.println(warm ? "in the warm JVM" : "cold");
        System.out.println(runs + " " + new File("made").exists() + " " + Thread.currentThread().getName());
        new FileWriter("made").close();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in));
        String[] what = in.readLine().split(" ");
        switch (what[0]) {
            case "exit3" -> {
                System.out.println("bye");
                try {
                    System.exit(3);
                } catch (Throwable swallowed) {
                    System.out.println("after exit");
                }
                System.out.println("after exit");
            }
            case "halt" -> Runtime.getRuntime().halt(4);
            case "hook" -> {
                Runtime.getRuntime().addShutdownHook(new Thread(() -> System.out.println("hook")));
                System.exit(0);
            }
            case "raise" -> throw new IllegalStateException("boom");
            case "sleep" -> Thread.sleep(60_000);
            case "thread" -> {
                Thread late = new Thread(() -> {
                    try {
                        Thread.sleep(300);
                    } catch (InterruptedException e) {
                        return;
                    }
                    System.out.println("late");
                });
                late.start();
            }
            case "all" -> {
                long sum = 0;
                for (String line; (line = in.readLine()) != null; ) {
                    sum += Long.parseLong(line.trim());
                }
                System.out.write('=');
                System.out.println(sum);
            }
            case "bomb" -> {
                List<long[]> hog = new ArrayList<>();
                while (true) {
                    hog.add(new long[1 << 20]);
                }
            }
            default -> System.out.println(Long.parseLong(what[1]) + Long.parseLong(what[2]));
        }
    }
}
"#;

const JAVA_HEAD: &str = "1 false main\n";

#[tokio::test]
async fn java_tests_run_in_the_warm_jvm_with_every_verdict_as_fresh_processes_get() {
    let h = Harness::new("judge-warm-java").await;
    let ok = |out: &str| format!("{JAVA_HEAD}{out}\n");
    let tests = [
        ("sum 1 2\n", Some(ok("3"))),
        ("exit3\n", Some(ok("bye"))),
        ("sum 2 2\n", Some(ok("4"))),
        ("thread\n", Some(ok("late"))),
        ("raise\n", Some(JAVA_HEAD.to_string())),
        ("halt\n", Some(JAVA_HEAD.to_string())),
        ("all\n1\n2\n3\n", Some(ok("=6"))),
        ("hook\n", Some(ok("hook"))),
        ("sleep\n", Some(JAVA_HEAD.to_string())),
        // After the clock killed the warm JVM: a fresh `java`, with the same verdicts.
        ("sum 40 2\n", Some(ok("42"))),
        ("exit3\n", Some(ok("bye"))),
    ];
    let refs: Vec<(&str, Option<&str>)> = tests.iter().map(|(i, e)| (*i, e.as_deref())).collect();
    let mut s = judged("java", JAVA_PROGRAM, &refs);
    s.limits.wall_ms = 3000;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [
            Verdict::Accepted,
            Verdict::RuntimeError,
            Verdict::Accepted,
            Verdict::Accepted,
            Verdict::RuntimeError,
            Verdict::RuntimeError,
            Verdict::Accepted,
            Verdict::Accepted,
            Verdict::TimeLimit,
            Verdict::Accepted,
            Verdict::RuntimeError,
        ],
        "{ran:?}"
    );
    let judged = ran.outcome.judge.as_ref().unwrap();
    let codes: Vec<Option<i32>> = judged.tests.iter().map(|t| t.usage.exit_code).collect();
    assert_eq!(
        codes,
        [
            Some(0),
            Some(3),
            Some(0),
            Some(0),
            Some(1),
            Some(4),
            Some(0),
            Some(0),
            None,
            Some(0),
            Some(3)
        ],
        "System.exit(3), an uncaught exception, Runtime.halt(4)"
    );
    assert!(
        judged.tests[8].usage.wall_ms >= 3000,
        "{:?}",
        judged.tests[8]
    );
    let stdout = ran.stdout_text();
    assert!(!stdout.contains("after exit"), "{stdout}");
    assert_eq!(stdout.matches("late").count(), 1, "{stdout}");
    let stderr = ran.stderr_text();
    assert!(
        stderr.contains(
            "Exception in thread \"main\" java.lang.IllegalStateException: boom\n\tat Main.main(Main.java:"
        ),
        "the program's own stack trace: {stderr}"
    );
    assert!(
        !stderr.contains("Onpyrunner") && !stderr.contains("onpyrunner"),
        "no frame of the server, no fallback before the clock: {stderr}"
    );
    assert_eq!(
        (
            stderr.matches("in the warm JVM").count(),
            stderr.matches("cold").count()
        ),
        (9, 2),
        "the tests up to the clock in the warm JVM, the rest fresh: {stderr}"
    );
}

#[tokio::test]
async fn a_java_memory_bomb_is_memory_limit_and_the_next_test_still_runs() {
    let h = Harness::new("judge-warm-java-memory").await;
    let next = format!("{JAVA_HEAD}3\n");
    let mut s = judged(
        "java",
        JAVA_PROGRAM,
        &[("bomb\n", None), ("sum 1 2\n", Some(next.as_str()))],
    );
    s.limits.memory_mib = 384;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [Verdict::MemoryLimit, Verdict::Accepted],
        "{ran:?}"
    );
}

/// Says on stderr whether it runs in the judge process; on stdout what a fresh `node main.js`
/// would show of itself and whether the last test's globals or files are seen; then does what
/// its input's first word says.
const NODE_PROGRAM: &str = r#"const fs = require('fs');
const judge = fs.readFileSync('/proc/self/cmdline', 'utf8').includes('onpyrunner_judge.js');
console.error(judge ? 'in the judge process' : 'fresh');
runs = (typeof runs === 'undefined' ? 0 : runs) + 1;
console.log(runs, fs.existsSync('made'), require.main === module, process.argv.length);
fs.writeFileSync('made', '');
const input = fs.readFileSync(0, 'utf8');
const what = input.trim().split(/\s+/);
switch (what[0]) {
  case 'exit3':
    console.log('bye');
    setTimeout(() => console.log('after exit'), 10);
    process.exit(3);
  case 'raise':
    throw new Error('boom');
  case 'sleep':
    setTimeout(() => {}, 60000);
    break;
  case 'later':
    setTimeout(() => console.log('late'), 50);
    break;
  case 'bomb': {
    const hog = [];
    for (;;) hog.push(new Float64Array(1 << 20).fill(1));
  }
  default:
    console.log(Number(what[1]) + Number(what[2]));
}
"#;

const NODE_HEAD: &str = "1 false true 2\n";

#[tokio::test]
async fn node_tests_run_in_the_judge_process_with_every_verdict_as_fresh_processes_get() {
    let h = Harness::new("judge-process-node").await;
    let ok = |out: &str| format!("{NODE_HEAD}{out}\n");
    let tests = [
        ("sum 1 2\n", Some(ok("3"))),
        ("exit3\n", Some(ok("bye"))),
        ("sum 2 2\n", Some(ok("5"))),
        ("later\n", Some(ok("late"))),
        ("raise\n", Some(NODE_HEAD.to_string())),
        ("sleep\n", Some(NODE_HEAD.to_string())),
        // After the clock killed the judge process: a fresh node, with the same verdicts.
        ("sum 40 2\n", Some(ok("42"))),
        ("exit3\n", Some(ok("bye"))),
    ];
    let refs: Vec<(&str, Option<&str>)> = tests.iter().map(|(i, e)| (*i, e.as_deref())).collect();
    let mut s = judged("node", NODE_PROGRAM, &refs);
    s.limits.wall_ms = 2000;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [
            Verdict::Accepted,
            Verdict::RuntimeError,
            Verdict::WrongAnswer,
            Verdict::Accepted,
            Verdict::RuntimeError,
            Verdict::TimeLimit,
            Verdict::Accepted,
            Verdict::RuntimeError,
        ],
        "{ran:?}"
    );
    let judged = ran.outcome.judge.as_ref().unwrap();
    let codes: Vec<Option<i32>> = judged.tests.iter().map(|t| t.usage.exit_code).collect();
    assert_eq!(
        codes,
        [
            Some(0),
            Some(3),
            Some(0),
            Some(0),
            Some(1),
            None,
            Some(0),
            Some(3)
        ],
        "process.exit(3), an uncaught exception"
    );
    let stdout = ran.stdout_text();
    assert!(!stdout.contains("after exit"), "{stdout}");
    let stderr = ran.stderr_text();
    assert!(
        stderr.contains("/work/main.js:15\n") && stderr.contains("Error: boom\n    at "),
        "the program's own error: {stderr}"
    );
    assert!(
        !stderr.contains("onpyrunner"),
        "no frame of the judge process, no fallback before the clock: {stderr}"
    );
    assert_eq!(
        (
            stderr.matches("in the judge process").count(),
            stderr.matches("fresh").count()
        ),
        (6, 2),
        "the tests up to the clock in the judge process, the rest fresh: {stderr}"
    );
}

#[tokio::test]
async fn a_node_memory_bomb_is_memory_limit_and_the_next_test_still_runs() {
    let h = Harness::new("judge-process-node-memory").await;
    let next = format!("{NODE_HEAD}3\n");
    let mut s = judged(
        "node",
        NODE_PROGRAM,
        &[("bomb\n", None), ("sum 1 2\n", Some(next.as_str()))],
    );
    s.limits.memory_mib = 256;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [Verdict::MemoryLimit, Verdict::Accepted],
        "{ran:?}"
    );
}

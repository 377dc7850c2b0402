//! Judge mode against the real daemon and images: a run carries tests, the program is compiled
//! once and run on each, and each test gets the judges' verdict.
use onpyrunner_e2e::{judged, verdicts, Harness};
use onpyrunner_protocol::judge::Verdict;
use onpyrunner_protocol::{Reason, Stage};

const PY_SUM: &str = "a, b = map(int, input().split())\nif a < 0: raise SystemExit(3)\nif a == 99: import time; time.sleep(60)\nprint(a + b)\n";

#[tokio::test]
async fn each_test_gets_its_verdict_and_the_run_says_how_many_passed() {
    let h = Harness::new("judge-verdicts").await;
    let mut s = judged(
        "python",
        PY_SUM,
        &[
            ("1 2\n", Some("3\n")),
            ("2 2\n", Some("5")),
            ("-1 0\n", Some("0\n")),
            ("99 0\n", Some("99\n")),
            ("40 2\n", Some("42  \n\n")),
            ("0 0\n", None),
        ],
    );
    s.limits.wall_ms = 1500;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [
            Verdict::Accepted,
            Verdict::WrongAnswer,
            Verdict::RuntimeError,
            Verdict::TimeLimit,
            Verdict::Accepted,
            Verdict::Accepted,
        ],
        "{ran:?}"
    );
    let judged = ran.outcome.judge.as_ref().unwrap();
    assert_eq!(
        (judged.verdict, judged.passed, judged.total),
        (Some(Verdict::WrongAnswer), 3, 6)
    );
    let wrong = &judged.tests[1];
    let difference = wrong.difference.as_ref().expect("where it differs");
    assert_eq!(
        (difference.line, difference.column),
        (1, 1),
        "{difference:?}"
    );
    assert_eq!(difference.actual.as_deref(), Some("4"));
    assert_eq!(judged.tests[2].usage.exit_code, Some(3));
    assert!(
        judged.tests[3].usage.wall_ms >= 1500,
        "{:?}",
        judged.tests[3]
    );
    assert!(!judged.tests[5].compared);
    // Each test's output reached the client, in order.
    assert_eq!(ran.stdout_text(), "3\n4\n42\n0\n");
    assert_eq!(ran.outcome.reason, Reason::Exited);
}

#[tokio::test]
async fn java_compiles_once_and_each_test_runs_fresh() {
    let h = Harness::new("judge-java").await;
    let code = "import java.util.*; public class Main { static int runs = 0; public static void main(String[] x) { Scanner in = new Scanner(System.in); long a = in.nextLong(), b = in.nextLong(); runs++; System.out.println((a + b) + \" \" + runs); } }";
    let s = judged(
        "java",
        code,
        &[
            ("1 2", Some("3 1")),
            ("5 5", Some("10 1")),
            ("7 0", Some("7 1")),
        ],
    );
    let ran = h.run(&s, b"").await;
    assert_eq!(verdicts(&ran), [Verdict::Accepted; 3], "{ran:?}");
    let compile = ran.outcome.compile.as_ref().expect("compiled once");
    assert_eq!(compile.stage, Stage::Compile);
}

#[tokio::test]
async fn a_compile_error_is_the_verdict_once_and_no_test_runs() {
    let h = Harness::new("judge-compile-error").await;
    let s = judged(
        "java",
        "public class Main { void f() { int x = \"no\"; } }",
        &[("1", Some("1")), ("2", Some("2"))],
    );
    let ran = h.run(&s, b"").await;
    let judged = ran.outcome.judge.as_ref().expect("judged");
    assert_eq!(
        (judged.verdict, judged.passed, judged.tests.len()),
        (Some(Verdict::CompileError), 0, 0),
        "{ran:?}"
    );
    assert_eq!(ran.outcome.reason, Reason::CompileError);
    assert!(ran.stderr_text().contains("incompatible types"), "{ran:?}");
}

#[tokio::test]
async fn a_test_that_floods_its_output_is_output_limit_and_ends_the_run() {
    let h = Harness::new("judge-output-limit").await;
    let mut s = judged(
        "python",
        "import sys\nn = int(input())\nsys.stdout.write('x' * n)\n",
        &[
            ("10", Some("xxxxxxxxxx")),
            ("100000000", Some("")),
            ("1", Some("x")),
        ],
    );
    s.limits.output_bytes = 100_000;
    let ran = h.run(&s, b"").await;
    let judged = ran.outcome.judge.as_ref().expect("judged");
    assert_eq!(
        (judged.verdict, judged.passed, judged.total),
        (Some(Verdict::OutputLimit), 1, 3),
        "{ran:?}"
    );
    assert_eq!(verdicts(&ran), [Verdict::Accepted, Verdict::OutputLimit]);
}

#[tokio::test]
async fn a_memory_bomb_in_one_test_is_memory_limit_and_the_next_test_runs() {
    let h = Harness::new("judge-memory").await;
    let mut s = judged(
        "python",
        "n = int(input())\nx = 'x' * (n * 1024 * 1024)\nprint(len(x) // 1048576)\n",
        &[("1000", None), ("1", Some("1"))],
    );
    s.limits.memory_mib = 128;
    let ran = h.run(&s, b"").await;
    assert_eq!(
        verdicts(&ran),
        [Verdict::MemoryLimit, Verdict::Accepted],
        "{ran:?}"
    );
}

/// An A+B solution per language (reading two integers, printing their sum).
fn a_plus_b(lang: &str) -> &'static str {
    match lang {
        "python" | "pypy" => "a, b = map(int, input().split())\nprint(a + b)\n",
        "node" => "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number);\nconsole.log(a + b);\n",
        "java" => "import java.util.*;\npublic class Main { public static void main(String[] x) { Scanner in = new Scanner(System.in); System.out.println(in.nextLong() + in.nextLong()); } }\n",
        "c" => "#include <stdio.h>\nint main(void) { long a, b; scanf(\"%ld %ld\", &a, &b); printf(\"%ld\\n\", a + b); }\n",
        "cpp" => "#include <bits/stdc++.h>\nint main() { long long a, b; std::cin >> a >> b; std::cout << a + b << '\\n'; }\n",
        "rust" => "use std::io::Read;\nfn main() { let mut s = String::new(); std::io::stdin().read_to_string(&mut s).unwrap(); let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect(); println!(\"{}\", v[0] + v[1]); }\n",
        "go" => "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar a, b int64\n\tfmt.Scan(&a, &b)\n\tfmt.Println(a + b)\n}\n",
        other => panic!("no A+B for {other}"),
    }
}

#[tokio::test]
async fn every_language_is_judged_accepted_and_wrong_answer_per_test() {
    let h = Harness::new("judge-languages").await;
    for lang in ["python", "pypy", "node", "java", "c", "cpp", "rust", "go"] {
        let s = judged(
            lang,
            a_plus_b(lang),
            &[("1 2\n", Some("3\n")), ("20 22", Some("41"))],
        );
        let ran = h.run(&s, b"").await;
        assert_eq!(
            verdicts(&ran),
            [Verdict::Accepted, Verdict::WrongAnswer],
            "{lang}: {ran:?}"
        );
        let wrong = &ran.outcome.judge.as_ref().unwrap().tests[1];
        let d = wrong.difference.as_ref().expect("a difference");
        assert_eq!(
            (d.expected.as_deref(), d.actual.as_deref()),
            (Some("41"), Some("42")),
            "{lang}"
        );
    }
}

#[tokio::test]
async fn a_test_that_kills_the_launcher_is_a_runtime_error_and_nothing_is_left() {
    let h = Harness::new("judge-kill-launcher").await;
    let s = judged(
        "python",
        // The launcher is the nearest ancestor named so (a judged Python test's parent is the
        // fork server).
        "import os\ndef parent(p):\n    return int(open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1])\nif input() == 'kill':\n    p = os.getppid()\n    while not open(f'/proc/{p}/comm').read().startswith('onpyrunner-laun'):\n        p = parent(p)\n    os.kill(p, 9)\nprint('ok')\n",
        &[
            ("fine", Some("ok")),
            ("kill", Some("ok")),
            ("fine", Some("ok")),
        ],
    );
    let ran = h.run(&s, b"").await;
    let judged = ran.outcome.judge.as_ref().expect("judged");
    assert_eq!(
        (judged.verdict, judged.passed, judged.total),
        (Some(Verdict::RuntimeError), 1, 3),
        "{ran:?}"
    );
}

/// Each test's stdout and stderr reach the client after the previous test's end and before
/// its own, whichever stream Docker copies first: what the IDE shows as a test's output is
/// that test's.
#[tokio::test]
async fn each_tests_stdout_and_stderr_come_between_its_boundaries() {
    let h = Harness::new("judge-boundaries").await;
    let program = "import sys\nn = input().strip()\nprint('err', n, file=sys.stderr)\nprint('out', n)\nprint('late err', n, file=sys.stderr)\n";
    let inputs: Vec<String> = (0..8).map(|i| format!("{i}\n")).collect();
    let expected: Vec<String> = (0..8).map(|i| format!("out {i}\n")).collect();
    let tests: Vec<(&str, Option<&str>)> = inputs
        .iter()
        .zip(&expected)
        .map(|(i, e)| (i.as_str(), Some(e.as_str())))
        .collect();
    for lang in ["python", "c"] {
        let code = match lang {
            "c" => "#include <stdio.h>\nint main(void) { int n; scanf(\"%d\", &n); fprintf(stderr, \"err %d\\n\", n); printf(\"out %d\\n\", n); fflush(stdout); fprintf(stderr, \"late err %d\\n\", n); }\n",
            _ => program,
        };
        let ran = h.run(&judged(lang, code, &tests), b"").await;
        assert_eq!(ran.test_ends.len(), inputs.len(), "{lang}: {ran:?}");
        // Held back or not, each test's stdout is what its verdict compared.
        assert_eq!(verdicts(&ran), [Verdict::Accepted; 8], "{lang}: {ran:?}");
        let start = ran.compiled.as_ref().map_or(0, |(_, at)| *at);
        let mut from = start;
        for (i, &to) in ran.test_ends.iter().enumerate() {
            assert_eq!(
                ran.text_between(from, to),
                (format!("out {i}\n"), format!("err {i}\nlate err {i}\n")),
                "{lang}: test {i}: {ran:?}"
            );
            from = to;
        }
        assert_eq!(
            from,
            ran.chunks.len(),
            "nothing after the last test: {ran:?}"
        );
    }
}

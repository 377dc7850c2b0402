//! End-to-end: the compiled languages (C, C++, Rust, Go) against the real daemon and their
//! images, a fresh container per run: hello world, A+B on stdin, a compile error with the
//! compiler's message, and a runtime error as the program's own exit.
use onpyrunner_e2e::{spec, Harness, Ran};
use onpyrunner_protocol::{Reason, Stage};

struct Lang {
    id: &'static str,
    hello: &'static str,
    a_plus_b: &'static str,
    /// Does not compile; the compiler's message says `said`.
    broken: &'static str,
    said: &'static str,
    /// Compiles, then fails while running: a crash, a panic or an uncaught exception.
    crash: &'static str,
}

const C: Lang = Lang {
    id: "c",
    hello: "#include <stdio.h>\nint main(void) {\n#ifdef ONLINE_JUDGE\n    puts(\"Hello, world!\");\n#endif\n    return 0;\n}\n",
    a_plus_b: "#include <stdio.h>\n#include <math.h>\nint main(void) { long long a, b; if (scanf(\"%lld %lld\", &a, &b) != 2) return 1; printf(\"%lld %.0f\\n\", a + b, sqrt(16.0)); return 0; }\n",
    broken: "int main(void) { return undeclared_thing; }\n",
    said: "error: ‘undeclared_thing’ undeclared",
    crash: "int main(void) { volatile int *p = 0; *p = 1; return 0; }\n",
};

const CPP: Lang = Lang {
    id: "cpp",
    hello: "#include <iostream>\nint main() {\n#ifdef ONLINE_JUDGE\n    std::cout << \"Hello, world!\\n\";\n#endif\n}\n",
    a_plus_b: "#include <bits/stdc++.h>\nusing namespace std;\nint main() { ios::sync_with_stdio(false); cin.tie(nullptr); long long a, b; cin >> a >> b; cout << a + b << ' ' << sqrt(16.0) << '\\n'; }\n",
    broken: "int main() { undeclared_thing(); }\n",
    said: "error: ‘undeclared_thing’ was not declared in this scope",
    crash: "#include <stdexcept>\nint main() { throw std::runtime_error(\"boom\"); }\n",
};

const RUST: Lang = Lang {
    id: "rust",
    hello: "fn main() {\n    #[cfg(ONLINE_JUDGE)]\n    println!(\"Hello, world!\");\n}\n",
    a_plus_b: "use std::io::Read;\nfn main() { let mut s = String::new(); std::io::stdin().read_to_string(&mut s).unwrap(); let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect(); println!(\"{} {}\", v[0] + v[1], 16f64.sqrt()); }\n",
    broken: "fn main() { let x: i32 = \"no\"; }\n",
    said: "error[E0308]: mismatched types",
    crash: "fn main() { let v: Vec<i32> = Vec::new(); let i = std::hint::black_box(3); println!(\"{}\", v[i]); }\n",
};

const GO: Lang = Lang {
    id: "go",
    hello: "package main\n\nimport (\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tif os.Getenv(\"ONLINE_JUDGE\") != \"\" {\n\t\tfmt.Println(\"Hello, world!\")\n\t}\n}\n",
    a_plus_b: "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"math\"\n\t\"os\"\n)\n\nfunc main() {\n\tin := bufio.NewReader(os.Stdin)\n\tvar a, b int64\n\tfmt.Fscan(in, &a, &b)\n\tfmt.Println(a+b, math.Sqrt(16))\n}\n",
    broken: "package main\n\nfunc main() {\n\tx := 1\n}\n",
    said: "declared and not used: x",
    crash: "package main\n\nfunc main() {\n\tvar m map[string]int\n\tm[\"x\"] = 1\n}\n",
};

fn said_nothing_else(ran: &Ran) {
    assert!(ran.outcome.error.is_none(), "{ran:?}");
}

async fn hello(lang: &Lang) {
    let h = Harness::new(&format!("lang-hello-{}", lang.id)).await;
    let ran = h.run(&spec(lang.id, lang.hello), b"").await;
    assert_eq!(
        (ran.outcome.reason, ran.outcome.usage.stage),
        (Reason::Exited, Stage::Run),
        "{ran:?}"
    );
    assert_eq!(ran.outcome.usage.exit_code, Some(0), "{ran:?}");
    // ONLINE_JUDGE is defined, as on the judges: without it the program prints nothing.
    assert_eq!(ran.stdout_text(), "Hello, world!\n", "{ran:?}");
    assert_eq!(ran.stderr_text(), "", "no compiler warnings: {ran:?}");
    // The compile's end is heard, before the program's output.
    let (usage, before) = ran.compiled.clone().expect("the compile's end was heard");
    assert_eq!((usage.stage, usage.exit_code), (Stage::Compile, Some(0)));
    assert_eq!(before, 0, "{ran:?}");
    said_nothing_else(&ran);
}

async fn a_plus_b(lang: &Lang) {
    let h = Harness::new(&format!("lang-apb-{}", lang.id)).await;
    let ran = h
        .run(&spec(lang.id, lang.a_plus_b), b"40000000000 2\n")
        .await;
    assert_eq!(ran.outcome.usage.exit_code, Some(0), "{ran:?}");
    assert_eq!(ran.stdout_text(), "40000000002 4\n", "{ran:?}");
    said_nothing_else(&ran);
}

async fn compile_error(lang: &Lang) {
    let h = Harness::new(&format!("lang-cerr-{}", lang.id)).await;
    let ran = h.run(&spec(lang.id, lang.broken), b"").await;
    assert_eq!(
        (ran.outcome.reason, ran.outcome.usage.stage),
        (Reason::CompileError, Stage::Compile),
        "{ran:?}"
    );
    assert!(
        ran.outcome.usage.exit_code.is_some_and(|c| c != 0),
        "{ran:?}"
    );
    assert!(ran.stderr_text().contains(lang.said), "{ran:?}");
    assert!(ran.stdout.is_empty(), "{ran:?}");
    assert!(ran.compiled.is_none(), "no compile end for a compile error");
    said_nothing_else(&ran);
}

/// The program's failure, as the program's: it exited (a non-zero code, or a signal), in the
/// run stage, with what the runtime says on stderr.
async fn runtime_error(lang: &Lang, exit: (Option<i32>, Option<i32>), stderr: &str) {
    let h = Harness::new(&format!("lang-rerr-{}", lang.id)).await;
    let ran = h.run(&spec(lang.id, lang.crash), b"").await;
    assert_eq!(
        (ran.outcome.reason, ran.outcome.usage.stage),
        (Reason::Exited, Stage::Run),
        "{ran:?}"
    );
    assert_eq!(
        (ran.outcome.usage.exit_code, ran.outcome.usage.signal),
        exit,
        "{ran:?}"
    );
    assert!(ran.stderr_text().contains(stderr), "{ran:?}");
    said_nothing_else(&ran);
}

#[tokio::test]
async fn c_hello_world() {
    hello(&C).await;
}

#[tokio::test]
async fn c_adds_a_and_b_from_stdin_with_libm() {
    a_plus_b(&C).await;
}

#[tokio::test]
async fn c_compile_error_is_gccs_message() {
    compile_error(&C).await;
}

#[tokio::test]
async fn c_null_pointer_write_is_a_segfault() {
    runtime_error(&C, (None, Some(11)), "").await;
}

#[tokio::test]
async fn cpp_hello_world() {
    hello(&CPP).await;
}

#[tokio::test]
async fn cpp_adds_a_and_b_from_stdin_with_bits_stdcpp() {
    a_plus_b(&CPP).await;
}

#[tokio::test]
async fn cpp_compile_error_is_gpps_message() {
    compile_error(&CPP).await;
}

#[tokio::test]
async fn cpp_uncaught_exception_aborts() {
    runtime_error(&CPP, (None, Some(6)), "what():  boom").await;
}

/// -H lists the headers read; a precompiled one is marked "!". The flags are the table's, or
/// GCC would refuse the .gch and read the header again.
async fn comes_precompiled(header: &str, code: &str, expected: &str) {
    let h = Harness::new("lang-pch").await;
    let mut s = spec("cpp", code);
    let mut with_h = onpyrunner_e2e::language("cpp").clone();
    with_h.compile.insert(1, "-H".into());
    s.language = Box::leak(Box::new(with_h));
    let ran = h.run(&s, b"").await;
    assert_eq!(ran.stdout_text(), expected, "{ran:?}");
    let gch = format!("{header}.gch");
    assert!(
        ran.stderr_text()
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("! ") && l.ends_with(&gch)),
        "the first header is the precompiled one: {ran:?}"
    );
}

#[tokio::test]
async fn cpp_bits_stdcpp_comes_precompiled() {
    comes_precompiled(
        "bits/stdc++.h",
        "#include <bits/stdc++.h>\nint main() { std::vector<int> v{3, 1, 2}; std::ranges::sort(v); std::cout << v[0] << '\\n'; }\n",
        "1\n",
    )
    .await;
}

#[tokio::test]
async fn cpp_iostream_comes_precompiled() {
    comes_precompiled(
        "/iostream",
        "#include <iostream>\n#include <vector>\nint main() { std::vector<int> v{7}; std::cout << v[0] << '\\n'; }\n",
        "7\n",
    )
    .await;
}

#[tokio::test]
async fn rust_hello_world() {
    hello(&RUST).await;
}

#[tokio::test]
async fn rust_adds_a_and_b_from_stdin() {
    a_plus_b(&RUST).await;
}

#[tokio::test]
async fn rust_compile_error_is_rustcs_message() {
    compile_error(&RUST).await;
}

#[tokio::test]
async fn rust_panic_exits_101() {
    runtime_error(&RUST, (Some(101), None), "index out of bounds").await;
}

#[tokio::test]
async fn go_hello_world() {
    hello(&GO).await;
}

#[tokio::test]
async fn go_adds_a_and_b_from_stdin() {
    a_plus_b(&GO).await;
}

#[tokio::test]
async fn go_compile_error_is_the_compilers_message() {
    compile_error(&GO).await;
}

#[tokio::test]
async fn go_panic_exits_2() {
    runtime_error(
        &GO,
        (Some(2), None),
        "panic: assignment to entry in nil map",
    )
    .await;
}

/// The compiler's warnings come before the compile's end, the program's output after it: a
/// client can tell them apart (the IDE shows them as the compiler's, not as the first test's).
#[tokio::test]
async fn compiler_warnings_come_before_the_compiles_end_and_the_output_after() {
    let h = Harness::new("lang-compiled-event").await;
    let code = "#include <stdio.h>\n#warning careful\nint main(void) { puts(\"out\"); fputs(\"err\\n\", stderr); return 0; }\n";
    for judged in [false, true] {
        let spec = if judged {
            onpyrunner_e2e::judged("c", code, &[("", Some("out\n"))])
        } else {
            spec("c", code)
        };
        let ran = h.run(&spec, b"").await;
        assert_eq!(ran.outcome.reason, Reason::Exited, "{ran:?}");
        let (usage, before) = ran.compiled.clone().expect("the compile's end was heard");
        assert_eq!(usage.exit_code, Some(0), "{ran:?}");
        let (compile_out, compile_err) = ran.text_between(0, before);
        assert_eq!(compile_out, "", "judged {judged}: {ran:?}");
        assert!(
            compile_err.contains("warning: #warning careful"),
            "judged {judged}: {ran:?}"
        );
        assert_eq!(
            ran.text_between(before, ran.chunks.len()),
            ("out\n".to_string(), "err\n".to_string()),
            "judged {judged}: {ran:?}"
        );
    }
}

//! Java through a warm JVM: pooled (started, warmed up, paused, then claimed) and fresh.
use bytes::Bytes;
use onpyrunner_e2e::{language, spec, Harness, TEST_TIMEOUT};
use onpyrunner_protocol::warm::READY_MARKER;
use onpyrunner_protocol::{Event, OutputChunk, OutputStream, Summary};
use onpyrunner_protocol::{SourceFile, Stage};
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::Caps;
use onpyrunner_supervisor::pool::Pool;
use onpyrunner_supervisor::run::{self, Controls, RunSpec};
use onpyrunner_supervisor::session::StopSignal;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a pooled run produced.
struct PoolRan {
    stdout: String,
    stderr: String,
    outcome: Summary,
    /// From the claim to the end of the run, as a user waits for it.
    elapsed: Duration,
}

/// A one-container Java pool, filled.
async fn java_pool(h: &Harness) -> (Pool, CancellationToken) {
    let cancel = CancellationToken::new();
    let lang = language("java");
    let pool = Pool::start(
        h.maker(),
        lang,
        onpyrunner_e2e::placement(lang),
        1,
        &Caps::default(),
        cancel.clone(),
    );
    until_ready(&pool).await;
    (pool, cancel)
}

/// Wait until the pool has a warm container.
async fn until_ready(pool: &Pool) {
    let started = Instant::now();
    while pool.ready() < 1 {
        assert!(
            started.elapsed() < TEST_TIMEOUT,
            "the Java pool did not fill"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Claim a warm container (once there is one) and run `spec` on it, feeding `stdin` then EOF.
async fn run_pooled(pool: &Pool, h: &Harness, spec: &RunSpec, stdin: &[u8]) -> PoolRan {
    until_ready(pool).await;
    let started = Instant::now();
    let sandbox = pool.claim().await.expect("a warm Java container");
    let (stdin_tx, stdin_rx) = mpsc::channel(4);
    let (out_tx, out_rx) = mpsc::channel(16);
    if !stdin.is_empty() {
        stdin_tx.send(Bytes::copy_from_slice(stdin)).await.unwrap();
    }
    drop(stdin_tx);
    let controls = Controls {
        stdin: stdin_rx,
        output: out_tx,
        stop: StopSignal::default(),
        signals: Default::default(),
    };
    let (outcome, chunks) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(
            run::run_in(&h.docker, sandbox, spec, controls),
            collect(out_rx)
        )
    })
    .await
    .expect("run within the test timeout");
    let elapsed = started.elapsed();
    let text = |s: OutputStream| -> String {
        let bytes: Vec<u8> = chunks
            .iter()
            .filter(|c| c.stream == s)
            .flat_map(|c| c.data.iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    PoolRan {
        stdout: text(OutputStream::Stdout),
        stderr: text(OutputStream::Stderr),
        outcome: outcome.expect("run ok"),
        elapsed,
    }
}

async fn collect(mut rx: mpsc::Receiver<Event>) -> Vec<OutputChunk> {
    let mut all = Vec::new();
    while let Some(event) = rx.recv().await {
        if let Event::Output(c) = event {
            all.push(c);
        }
    }
    all
}

async fn finish(h: &Harness, pool: Pool, cancel: CancellationToken) {
    cancel.cancel();
    pool.drain().await;
    let started = Instant::now();
    while !h.containers_left().await.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "left behind: {:?}",
            h.containers_left().await
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn marker_text() -> String {
    String::from_utf8_lossy(&READY_MARKER[1..READY_MARKER.len() - 1]).into_owned()
}

const HELLO: &str = "public class Main { public static void main(String[] a) { System.out.println(\"Hello, world! \" + (Runtime.version().feature() >= 25)); } }";

#[tokio::test]
async fn pooled_java_hello_world_runs_in_the_warm_jvm() {
    let h = Harness::new("java-warm-hello").await;
    let (pool, cancel) = java_pool(&h).await;
    let ran = run_pooled(&pool, &h, &spec("java", HELLO), b"").await;
    assert_eq!(ran.stdout, "Hello, world! true\n", "stderr: {}", ran.stderr);
    assert_eq!(ran.stderr, "");
    assert_eq!(ran.outcome.usage.exit_code, Some(0));
    assert_eq!(ran.outcome.usage.stage, Stage::Run);
    assert!(ran.outcome.error.is_none(), "{:?}", ran.outcome.error);
    let compile = ran
        .outcome
        .compile
        .clone()
        .expect("the compile stage's usage");
    assert_eq!(
        (compile.stage, compile.exit_code, compile.signal),
        (Stage::Compile, Some(0), None)
    );
    assert!(compile.wall_ms > 0 && compile.memory_kib > 0, "{compile:?}");
    eprintln!(
        "pooled Java hello world: {:?} (compile: wall {} ms, cpu {} ms; run: wall {} ms, cpu {} ms)",
        ran.elapsed,
        compile.wall_ms,
        compile.cpu_ms,
        ran.outcome.usage.wall_ms,
        ran.outcome.usage.cpu_ms
    );
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_answers_a_line_typed_after_its_prompt() {
    let h = Harness::new("java-warm-interactive").await;
    let (pool, cancel) = java_pool(&h).await;
    let s = spec(
        "java",
        "import java.util.Scanner; public class Main { public static void main(String[] a) { Scanner in = new Scanner(System.in); System.out.print(\"name? \"); System.out.flush(); String name = in.nextLine(); System.out.println(\"hello \" + name); } }",
    );
    let sandbox = pool.claim().await.expect("a warm Java container");
    let (stdin_tx, stdin_rx) = mpsc::channel(4);
    let (out_tx, mut out_rx) = mpsc::channel(16);
    let controls = Controls {
        stdin: stdin_rx,
        output: out_tx,
        stop: StopSignal::default(),
        signals: Default::default(),
    };
    let dialogue = async move {
        let mut seen = Vec::new();
        while !seen.ends_with(b"name? ") {
            let event = out_rx.recv().await.expect("the prompt comes first");
            if let Event::Output(chunk) = event {
                seen.extend_from_slice(&chunk.data);
            }
        }
        stdin_tx.send(Bytes::from_static(b"ada\n")).await.unwrap();
        while let Some(event) = out_rx.recv().await {
            if let Event::Output(c) = event {
                seen.extend_from_slice(&c.data);
            }
        }
        seen
    };
    let (outcome, seen) = tokio::time::timeout(TEST_TIMEOUT, async {
        tokio::join!(run::run_in(&h.docker, sandbox, &s, controls), dialogue)
    })
    .await
    .expect("within the test timeout");
    assert_eq!(String::from_utf8_lossy(&seen), "name? hello ada\n");
    assert_eq!(outcome.unwrap().usage.exit_code, Some(0));
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_compile_error_is_the_compile_stage_with_javacs_message() {
    let h = Harness::new("java-warm-javac-error").await;
    let (pool, cancel) = java_pool(&h).await;
    let code = "public class Main { public static void main(String[] a) { int x = \"no\"; } }";
    let ran = run_pooled(&pool, &h, &spec("java", code), b"").await;
    assert_eq!(ran.outcome.usage.stage, Stage::Compile, "{:?}", ran.outcome);
    assert_eq!(ran.outcome.usage.exit_code, Some(1));
    assert!(
        ran.stderr
            .contains("Main.java:1: error: incompatible types"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("1 error"), "{}", ran.stderr);
    assert_eq!(ran.stdout, "");
    assert!(ran.outcome.error.is_none());
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_system_exit_code_is_the_exit_code() {
    let h = Harness::new("java-warm-exit").await;
    let (pool, cancel) = java_pool(&h).await;
    let code = "public class Main { public static void main(String[] a) { System.out.println(\"bye\"); System.exit(3); } }";
    let ran = run_pooled(&pool, &h, &spec("java", code), b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(3));
    assert_eq!(ran.outcome.usage.stage, Stage::Run);
    assert_eq!(ran.stdout, "bye\n");
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_uncaught_exception_prints_the_stack_trace_and_exits_1() {
    let h = Harness::new("java-warm-exception").await;
    let (pool, cancel) = java_pool(&h).await;
    let code = "public class Main {\n  static void f() { throw new IllegalStateException(\"boom\"); }\n  public static void main(String[] a) { f(); }\n}\n";
    let ran = run_pooled(&pool, &h, &spec("java", code), b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(1));
    assert_eq!(ran.outcome.usage.stage, Stage::Run);
    assert_eq!(
        ran.stderr,
        "Exception in thread \"main\" java.lang.IllegalStateException: boom\n\tat Main.f(Main.java:2)\n\tat Main.main(Main.java:3)\n",
        "the trace `java` prints, without the warm runner's frames"
    );
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_run_cpu_time_is_the_programs_not_the_warm_ups() {
    let h = Harness::new("java-warm-cpu").await;
    let (pool, cancel) = java_pool(&h).await;
    let ran = run_pooled(&pool, &h, &spec("java", HELLO), b"").await;
    assert_eq!(ran.outcome.usage.exit_code, Some(0));
    // The warm-up alone takes seconds of CPU; a hello world takes a few ms.
    assert!(
        ran.outcome.usage.cpu_ms < 300,
        "cpu {} ms",
        ran.outcome.usage.cpu_ms
    );
    assert!(
        ran.outcome.usage.wall_ms < 1000,
        "wall {} ms",
        ran.outcome.usage.wall_ms
    );
    // ... and the program's own work is counted.
    // Spins until its own thread used 400 ms of CPU, however busy the machine is.
    let spin = "public class Main { public static void main(String[] a) { var t = java.lang.management.ManagementFactory.getThreadMXBean(); long end = t.getCurrentThreadCpuTime() + 400_000_000L; long n = 0; while (t.getCurrentThreadCpuTime() < end) n++; System.out.println(n > 0); } }";
    let ran = run_pooled(&pool, &h, &spec("java", spin), b"").await;
    assert_eq!(ran.stdout, "true\n", "{}", ran.stderr);
    assert!(
        (390..2000).contains(&ran.outcome.usage.cpu_ms),
        "cpu {} ms",
        ran.outcome.usage.cpu_ms
    );
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn pooled_java_multi_file_program_with_arguments() {
    let h = Harness::new("java-warm-multi").await;
    let (pool, cancel) = java_pool(&h).await;
    let mut s = spec(
        "java",
        "public class Main { public static void main(String[] a) { System.out.println(Util.join(a)); } }",
    );
    s.files.push(SourceFile {
        name: "Util.java".into(),
        content: b"class Util { static String join(String[] a) { return String.join(\"|\", a); } }"
            .to_vec(),
    });
    s.args = vec!["a b".into(), "$(x)".into()];
    let ran = run_pooled(&pool, &h, &s, b"").await;
    assert_eq!(ran.stdout, "a b|$(x)\n", "stderr: {}", ran.stderr);
    finish(&h, pool, cancel).await;
}

#[tokio::test]
async fn fresh_warm_java_run_works_and_never_shows_the_readiness_marker() {
    let h = Harness::new("java-warm-fresh").await;
    let ran = h.run(&spec("java", HELLO), b"").await;
    assert_eq!(ran.stdout_text(), "Hello, world! true\n");
    assert_eq!(ran.stderr_text(), "");
    assert_eq!(ran.outcome.usage.exit_code, Some(0));
    let marker = marker_text();
    for chunk in &ran.chunks {
        assert!(
            !String::from_utf8_lossy(&chunk.data).contains(&marker),
            "{chunk:?}"
        );
    }
    // The warm-up is not the run's: its wall time is the run stage alone.
    assert!(
        ran.outcome.usage.wall_ms < 1500,
        "wall {} ms",
        ran.outcome.usage.wall_ms
    );
}

#[tokio::test]
async fn the_run_stage_gets_its_whole_wall_clock_after_a_slow_compile() {
    // Nested conditionals of a generic call: javac's inference takes exponential time, about
    // two seconds at this depth. The program then sleeps for most of its wall clock.
    let mut e = String::from("1");
    for _ in 0..8 {
        e = format!("f(c ? {e} : f(1))");
    }
    let code = format!(
        "public class Main {{ static boolean c = true; static <T> T f(T t) {{ return t; }} public static void main(String[] a) throws Exception {{ Object o = {e}; Thread.sleep(1200); System.out.println(o); }} }}"
    );
    let h = Harness::new("java-stage-clock").await;
    let mut s = spec("java", &code);
    s.limits.wall_ms = 1600;
    let ran = h.run(&s, b"").await;
    let Some(compile) = ran.outcome.compile.clone() else {
        panic!("not compiled: {ran:?}");
    };
    assert!(
        compile.wall_ms >= 500,
        "the test needs a compile of at least 500 ms to mean anything: {compile:?}"
    );
    eprintln!("compile {compile:?}, run {:?}", ran.outcome.usage);
    assert_eq!(ran.stdout_text(), "1\n", "{ran:?}");
    assert_eq!(
        (ran.outcome.usage.stage, ran.outcome.usage.exit_code),
        (Stage::Run, Some(0)),
        "compile {} ms + run {} ms > the run's 1600 ms wall clock, and it still ran: {ran:?}",
        compile.wall_ms,
        ran.outcome.usage.wall_ms
    );
}

/// Not an assertion: prints p50 of Java hello world through the pool and through
/// `docker run --rm` (the CLI, for a baseline only). `cargo test -p onpyrunner-e2e --test
/// java_warm -- --ignored --nocapture`.
#[tokio::test]
#[ignore]
async fn measure_java_hello_world_pool_vs_docker_run() {
    const ROUNDS: usize = 20;
    let h = Harness::new("java-warm-measure").await;
    let lang = language("java");
    let cancel = CancellationToken::new();
    let pool = Pool::start(
        h.maker(),
        lang,
        onpyrunner_e2e::placement(lang),
        2,
        &Caps::default(),
        cancel.clone(),
    );
    let s = spec("java", HELLO);
    let mut pooled = Vec::new();
    for _ in 0..ROUNDS {
        let ran = run_pooled(&pool, &h, &s, b"").await;
        assert_eq!(ran.stdout, "Hello, world! true\n");
        pooled.push(ran.elapsed);
    }
    finish(&h, pool, cancel).await;

    // The same program, the cold way: a fresh container, javac's JVM, then java's JVM, with
    // the table's commands and limits.
    let limits = &s.limits;
    let script = format!(
        "cd /work && printf '%s' '{HELLO}' > Main.java && {} && {}",
        lang.compile.join(" ").replace("{files}", "Main.java"),
        lang.run.join(" ")
    );
    let mut cold = Vec::new();
    for _ in 0..ROUNDS {
        let started = Instant::now();
        let out = tokio::process::Command::new("docker")
            .args(["run", "--rm", "--network", "none", "--label"])
            .arg(format!("onpyrunner.owner={}", h.owner))
            .arg(format!("--memory={}m", limits.memory_mib))
            .arg(format!("--cpus={}", limits.cpus))
            .args([
                "--tmpfs",
                "/work:exec,uid=1000,gid=1000",
                "--user",
                "1000:1000",
            ])
            .arg(images::image_ref(lang))
            .args(["sh", "-c", &script])
            .output()
            .await
            .expect("the docker CLI runs");
        cold.push(started.elapsed());
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello, world! true\n",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let p50 = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let (pool_p50, cold_p50) = (p50(pooled.clone()), p50(cold.clone()));
    eprintln!("Java hello world over {ROUNDS} runs:");
    eprintln!("  pooled warm JVM   p50 {pool_p50:?}  (all: {pooled:?})");
    eprintln!("  docker run --rm   p50 {cold_p50:?}  (all: {cold:?})");
    eprintln!(
        "  ratio {:.2}",
        pool_p50.as_secs_f64() / cold_p50.as_secs_f64()
    );
}

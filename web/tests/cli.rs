//! The `onpyrunner` command as a user runs it: real binary, real daemon, real images.
use std::io::Write;
use std::process::{Command, Output, Stdio};

fn onpyrunner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onpyrunner"))
}

fn write_source(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onpyrunner-cli-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn run_with_stdin(mut cmd: Command, stdin: &[u8]) -> Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("onpyrunner starts");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn run_streams_stdout_and_stderr_passes_stdin_and_returns_the_exit_code() {
    let src = write_source(
        "prog.py",
        "import sys\nname = sys.stdin.readline().strip()\nprint('hello', name)\nprint('warn', file=sys.stderr)\nsys.exit(4)\n",
    );
    let mut cmd = onpyrunner();
    cmd.args(["run", "--lang", "python"]).arg(&src);
    let out = run_with_stdin(cmd, b"ada\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello ada\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "warn\n");
    assert_eq!(out.status.code(), Some(4));
}

#[test]
fn run_passes_program_arguments_after_the_double_dash() {
    let src = write_source(
        "args.js",
        "console.log(JSON.stringify(process.argv.slice(2)))",
    );
    let mut cmd = onpyrunner();
    cmd.args(["run", "-l", "node"])
        .arg(&src)
        .args(["--", "a b", "$(rm -rf /)"]);
    let out = run_with_stdin(cmd, b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "[\"a b\",\"$(rm -rf /)\"]\n"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn run_time_limit_flag_ends_an_infinite_loop_with_exit_124() {
    let src = write_source("spin.py", "while True: pass\n");
    let mut cmd = onpyrunner();
    cmd.args(["run", "--lang", "python", "--time-limit", "1"])
        .arg(&src);
    let out = run_with_stdin(cmd, b"");
    assert_eq!(out.status.code(), Some(124));
    assert!(String::from_utf8_lossy(&out.stderr).contains("time limit of 1000 ms exceeded"));
}

#[test]
fn run_memory_limit_flag_is_enforced_and_reported() {
    let src = write_source("bomb.py", "x = bytearray(200 << 20)\nprint(len(x))\n");
    let mut cmd = onpyrunner();
    cmd.args(["run", "--lang", "python", "--memory-limit", "64"])
        .arg(&src);
    let out = run_with_stdin(cmd, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory limit of 64 MiB exceeded") || stderr.contains("MemoryError"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn run_java_compile_error_is_reported_as_such() {
    let src = write_source(
        "Main.java",
        "public class Main { void f() { undefined(); } }\n",
    );
    let mut cmd = onpyrunner();
    cmd.args(["run", "--lang", "java"]).arg(&src);
    let out = run_with_stdin(cmd, b"");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot find symbol"), "{stderr}");
    assert!(
        stderr.contains("onpyrunner: compilation failed"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn bad_input_is_refused_with_the_field_and_the_limit() {
    let src = write_source("ok.py", "print(1)\n");
    let out = onpyrunner()
        .args(["run", "--lang", "cobol"])
        .arg(&src)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown language \"cobol\""));
    assert_ne!(out.status.code(), Some(0));
    let out = onpyrunner()
        .args(["run", "--lang", "python", "-m", "999999"])
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("memory_mib") && stderr.contains("2048"),
        "{stderr}"
    );
}

#[test]
fn unreachable_daemon_says_how_to_start_docker() {
    let src = write_source("x.py", "print(1)\n");
    let out = onpyrunner()
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .args(["run", "--lang", "python"])
        .arg(&src)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent/docker.sock"), "{stderr}");
    assert!(stderr.contains("scripts/setup.sh"), "{stderr}");
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn help_describes_every_command() {
    let out = onpyrunner().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["run", "images", "languages", "bench"] {
        assert!(help.contains(word), "{help}");
    }
    let out = onpyrunner().args(["run", "--help"]).output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in ["--lang", "--time-limit", "--memory-limit", "Standard input"] {
        assert!(help.contains(flag), "{help}");
    }
    let out = onpyrunner().args(["images", "--help"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("--check"));
}

#[test]
fn languages_lists_cpython_and_pypy_side_by_side() {
    let out = onpyrunner().arg("languages").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let ids: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(ids, ["python", "pypy", "node", "java"]);
}

/// The numbers of a Markdown table row that starts with `prefix`, one per cell ("-" is none).
fn row_numbers(report: &str, prefix: &str) -> Vec<Option<f64>> {
    let line = report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in:\n{report}"));
    line[prefix.len()..]
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let number = c.split_whitespace().next().unwrap_or("");
            number.trim_end_matches(['%']).parse().ok()
        })
        .collect()
}

#[test]
fn bench_quick_measures_every_path_and_reports_the_targets() {
    let started = std::time::Instant::now();
    let out = onpyrunner()
        .args([
            "bench",
            "--quick",
            "--langs",
            "python",
            "--runs",
            "3",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{report}");
    assert!(
        stderr.contains("bench: filling the pools"),
        "progress on stderr: {stderr}"
    );

    // Latency: three paths, three runs each, every figure a positive number of ms.
    for path in ["pool", "fresh container", "docker run"] {
        let cells = row_numbers(&report, &format!("| python | {path} |"));
        assert_eq!(cells.len(), 7, "runs + 6 figures: {cells:?}");
        assert_eq!(cells[0], Some(3.0), "3 runs, none failed: {cells:?}");
        let figures: Vec<f64> = cells[1..].iter().map(|c| c.expect("a number")).collect();
        assert!(
            figures.iter().all(|&ms| ms > 0.0 && ms < 60_000.0),
            "{figures:?}"
        );
        let (first_byte_p50, completion_p50) = (figures[0], figures[3]);
        assert!(first_byte_p50 <= completion_p50, "{figures:?}");
    }
    assert!(report.contains("python 3 hits / 0 misses"), "{report}");

    // Where the time goes: both rows with numbers.
    for variant in [
        "paused",
        "paused, refill alongside",
        "running, never paused",
    ] {
        let cells = row_numbers(&report, &format!("| python | {variant} |"));
        assert!(cells[..6].iter().all(Option::is_some), "{cells:?}");
    }

    // Throughput at 1, 4 and 8 callers, ours and raw, and the percentage.
    for callers in [1, 4, 8] {
        let cells = row_numbers(&report, &format!("| {callers} |"));
        let (ours, raw, percent) = (cells[0], cells[3], cells[5]);
        assert!(ours.is_some_and(|r| r > 0.0), "{cells:?}");
        assert!(raw.is_some_and(|r| r > 0.0), "{cells:?}");
        assert!(percent.is_some_and(|p| p > 0.0), "{cells:?}");
    }

    // Memory with the pools full, and the targets computed from the figures.
    let rss = row_numbers(&report, "| Every pool full (python 2) |");
    assert!(rss[0].is_some_and(|mb| mb > 1.0 && mb < 1000.0), "{rss:?}");
    let targets = report
        .split("## Targets")
        .nth(1)
        .expect("a Targets section");
    for target in ["CPython", "Sustained throughput", "resident memory"] {
        let line = targets
            .lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no {target} target in {targets}"));
        assert!(
            line.ends_with("| yes |") || line.ends_with("| **no** |"),
            "{line}"
        );
    }
    assert!(targets.contains("| Java hello world") && targets.contains("not measured"));
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
}

#[test]
fn load_runs_clients_and_idle_connections_against_its_own_server_and_writes_its_section() {
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("onpyrunner-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = dir.join("BENCHMARKS.md");
    std::fs::write(
        &doc,
        "<!-- bench:begin -->\n# Benchmarks\nkept\n<!-- bench:end -->\n",
    )
    .unwrap();
    let out = onpyrunner()
        .args([
            "load",
            "--clients",
            "6",
            "--idle",
            "20",
            "--hold-seconds",
            "3",
        ])
        .arg("--write")
        .arg(&doc)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = std::fs::read_to_string(&doc).unwrap();
    assert!(
        report.starts_with("<!-- bench:begin -->\n# Benchmarks\nkept\n"),
        "{report}"
    );
    assert!(
        report.contains("6 reached a final state (6 FINISHED), 0 lost, 0 with wrong output"),
        "{report}"
    );
    for row in ["| the first output byte |", "| the summary |"] {
        let cells = row_numbers(&report, row);
        assert!(
            cells.iter().all(|c| c.is_some_and(|ms| ms > 0.0)),
            "{row} {cells:?}"
        );
    }
    assert!(report.contains("20 opened, 0 dropped"), "{report}");
    let idle = row_numbers(&report, "| With 20 idle connections, after 3 s |");
    assert!(
        idle[0].is_some_and(|mb| mb > 1.0 && mb < 1000.0),
        "{idle:?}"
    );
    assert!(report.trim_end().ends_with("<!-- load:end -->"), "{report}");
    // The server it started stopped and took its containers with it.
    assert!(
        !stderr.contains("serve: "),
        "the server complained: {stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(90));
    std::fs::remove_dir_all(&dir).unwrap();
}

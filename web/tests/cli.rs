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
    assert_eq!(
        ids,
        ["python", "pypy", "node", "java", "c", "cpp", "rust", "go"]
    );
}

#[test]
fn serve_refuses_a_bad_tokens_file_or_proxy_list_naming_the_key_before_it_starts() {
    let bad = write_source(
        "tokens.toml",
        "[[token]]\nname = \"ci\"\nsecret = \"too-short\"\n",
    );
    let serve = |args: &[&str], env: Option<(&str, &std::path::Path)>| {
        let mut cmd = onpyrunner();
        // Were the flags accepted, the start would fail here instead, saying so.
        cmd.env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(args);
        if let Some((name, value)) = env {
            cmd.env(name, value);
        }
        let out = cmd.output().unwrap();
        assert_ne!(out.status.code(), Some(0));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let bad_arg = bad.to_str().unwrap();
    for stderr in [
        serve(&["--tokens", bad_arg], None),
        serve(&[], Some(("ONPYRUNNER_TOKENS", &bad))),
    ] {
        assert!(stderr.contains("--tokens"), "{stderr}");
        assert!(stderr.contains("token[0].secret"), "{stderr}");
    }
    let missing = serve(&["--tokens", "/nonexistent/tokens.toml"], None);
    assert!(missing.contains("/nonexistent/tokens.toml"), "{missing}");
    let proxies = serve(&["--trusted-proxies", "10.0.0.0/8,not-an-address"], None);
    assert!(
        proxies.contains("--trusted-proxies") && proxies.contains("not-an-address"),
        "{proxies}"
    );
}

//! One hello world on each of the paths a run is measured on: through an engine (with a pool or
//! without, to a fresh container) and through `docker run --rm -i` with the same container
//! shape (the `docker` CLI is used here as the baseline only, never on a run's path); and the
//! daemon's raw create+start+wait+remove cycle of that shape, the throughput's baseline.
use crate::hello::HELLO_OUTPUT;
use crate::plan::RUN_TIMEOUT;
use onpyrunner_languages::Language;
use onpyrunner_protocol::{Event, OutputStream, Reason};
use onpyrunner_supervisor::container::{self, Labels};
use onpyrunner_supervisor::docker::types::ContainerConfig;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::limits::Limits;
use onpyrunner_supervisor::run::{self, RunSpec};
use onpyrunner_supervisor::runner::Runner;
use onpyrunner_supervisor::session::Detach;
use onpyrunner_supervisor::uids::UidRange;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

/// One run's figures: from submit to the first output byte and to completion.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub first_byte: Duration,
    pub completion: Duration,
}

/// One hello world through an engine, or any [`Runner`] (an API node of a cluster): time to the
/// first output and to the summary.
///
/// The only code of this crate that reads a session's events.
pub async fn engine_run<R: Runner + ?Sized>(runner: &R, spec: RunSpec) -> Result<Sample, String> {
    let begin = Instant::now();
    let mut session = runner
        .submit_with(spec, Detach::Kill)
        .map_err(|e| e.to_string())?;
    session.close_stdin();
    let mut first_byte = None;
    let mut stdout = Vec::new();
    loop {
        let event = timeout(RUN_TIMEOUT, session.events.recv())
            .await
            .map_err(|_| format!("no summary within {RUN_TIMEOUT:?}"))?
            .ok_or("the events ended without a summary")?;
        match event {
            Event::Output(chunk) => {
                first_byte.get_or_insert(begin.elapsed());
                if chunk.stream == OutputStream::Stdout {
                    stdout.extend_from_slice(&chunk.data);
                }
            }
            Event::Summary(summary) => {
                let completion = begin.elapsed();
                if summary.reason != Reason::Exited || summary.usage.exit_code != Some(0) {
                    return Err(format!("the run ended badly: {summary:?}"));
                }
                if stdout != HELLO_OUTPUT.as_bytes() {
                    return Err(format!(
                        "unexpected output {:?}",
                        String::from_utf8_lossy(&stdout)
                    ));
                }
                return Ok(Sample {
                    first_byte: first_byte.ok_or("no output")?,
                    completion,
                });
            }
            _ => {}
        }
    }
}

/// The `docker run` arguments for a container shaped like `config` (the same limits and
/// lock-down), running `command` instead of the launcher.
pub fn docker_run_args(config: &ContainerConfig, command: &[String]) -> Vec<String> {
    let h = &config.host_config;
    let mut a: Vec<String> = ["run", "--rm", "-i", "--network", &h.network_mode]
        .map(String::from)
        .to_vec();
    let mut flag = |name: &str, value: String| {
        a.push(name.to_string());
        a.push(value);
    };
    let mut tmpfs: Vec<_> = h.tmpfs.iter().collect();
    tmpfs.sort();
    for (path, options) in tmpfs {
        flag("--tmpfs", format!("{path}:{options}"));
    }
    flag("--user", config.user.clone());
    flag("--workdir", config.working_dir.clone());
    if let Some(runtime) = &h.runtime {
        flag("--runtime", runtime.clone());
    }
    for cap in &h.cap_drop {
        flag("--cap-drop", cap.clone());
    }
    for opt in &h.security_opt {
        flag("--security-opt", opt.clone());
    }
    flag("--memory", format!("{}b", h.memory));
    flag("--memory-swap", format!("{}b", h.memory_swap));
    flag("--cpus", format!("{}", h.nano_cpus as f64 / 1e9));
    flag("--pids-limit", h.pids_limit.to_string());
    for u in &h.ulimits {
        flag("--ulimit", format!("{}={}:{}", u.name, u.soft, u.hard));
    }
    flag("--ipc", h.ipc_mode.clone());
    flag("--log-driver", h.log_config.kind.clone());
    for e in &config.env {
        flag("--env", e.clone());
    }
    let mut labels: Vec<_> = config.labels.iter().collect();
    labels.sort();
    for (k, v) in labels {
        flag("--label", format!("{k}={v}"));
    }
    if h.readonly_rootfs {
        a.push("--read-only".into());
    }
    if h.init {
        a.push("--init".into());
    }
    a.push(config.image.clone());
    a.extend(command.iter().cloned());
    a
}

/// The language's own compile and run commands on a file read from stdin, through `sh` (the
/// table's fixed commands and file name only; nothing here comes from a user).
pub fn shell_command(lang: &Language) -> Vec<String> {
    vec!["sh".into(), "-c".into(), shell_script(lang)]
}

/// The script of [`shell_command`]: `cat > FILE && COMPILE && exec RUN`, every word quoted.
pub fn shell_script(lang: &Language) -> String {
    let files = [onpyrunner_protocol::SourceFile {
        name: lang.source_file.clone(),
        content: vec![],
    }];
    let quote = |argv: Vec<String>| {
        argv.iter()
            .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut script = format!("cat > '{}'", lang.source_file);
    if !lang.compile.is_empty() {
        script += &format!(" && {}", quote(run::expand_command(&lang.compile, &files)));
    }
    script += &format!(" && exec {}", quote(run::expand_command(&lang.run, &files)));
    script
}

/// One hello world through `docker run`: time to the first byte on its stdout and to its exit.
pub async fn docker_run(args: &[String], program: &str) -> Result<Sample, String> {
    let begin = Instant::now();
    let mut child = tokio::process::Command::new("docker")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start docker: {e}"))?;
    let mut stdin = child.stdin.take().expect("piped");
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let program = program.as_bytes().to_vec();
    let ran = timeout(RUN_TIMEOUT, async move {
        let writing = async move {
            let _ = stdin.write_all(&program).await;
            // Dropping stdin closes it: EOF ends `cat`.
        };
        let reading = async {
            let mut out = Vec::new();
            let mut first_byte = None;
            let mut buf = [0u8; 4096];
            loop {
                match stdout.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first_byte.get_or_insert(begin.elapsed());
                        out.extend_from_slice(&buf[..n]);
                    }
                }
            }
            (out, first_byte)
        };
        let mut err = Vec::new();
        let (_, (out, first_byte), _) =
            tokio::join!(writing, reading, stderr.read_to_end(&mut err));
        let status = child.wait().await;
        (out, first_byte, err, status, begin.elapsed())
    })
    .await
    .map_err(|_| format!("docker run took longer than {RUN_TIMEOUT:?}"))?;
    let (out, first_byte, err, status, completion) = ran;
    let status = status.map_err(|e| e.to_string())?;
    if !status.success() || out != HELLO_OUTPUT.as_bytes() {
        return Err(format!(
            "docker run: {status}, stdout {:?}, stderr {:?}",
            String::from_utf8_lossy(&out),
            String::from_utf8_lossy(&err)
        ));
    }
    Ok(Sample {
        first_byte: first_byte.ok_or("no output")?,
        completion,
    })
}

/// What a raw cycle runs: the language's interpreter (the program of the table's run command)
/// on an empty program, `-c pass` (a Python's flag: the throughput language is CPython).
pub fn raw_command(lang: &Language) -> Vec<String> {
    let interpreter = lang.run.first().cloned().unwrap_or_default();
    vec![interpreter, "-c".into(), "pass".into()]
}

/// The uid of the baselines' containers (the raw cycle, `docker run`): the last of the default
/// range, the one an engine hands out last.
pub const BASELINE_UID: u32 = UidRange::DEFAULT.last();

/// One create+start+wait+remove cycle of a container shaped like ours, running
/// [`raw_command`], through the raw client.
pub async fn raw_cycle(
    docker: &Docker,
    lang: &Language,
    image: &str,
    runtime: Option<&str>,
    owner: &str,
    limits: &Limits,
) -> Result<(), String> {
    let labels = Labels {
        owner: owner.to_string(),
        language: lang.id.clone(),
        run: run::random_hex(8),
        created_unix: run::unix_now(),
    };
    let mut config = container::container_config(
        image,
        limits,
        &labels,
        &[],
        &lang.env,
        BASELINE_UID,
        runtime,
    );
    config.cmd = raw_command(lang);
    let id = docker
        .create_container(None, &config)
        .await
        .map_err(|e| e.to_string())?;
    let ran = async {
        docker.start_container(&id).await?;
        docker.wait_container(&id).await
    }
    .await;
    let removed = docker.remove_container(&id).await;
    match (ran, removed) {
        (Ok(0), Ok(())) => Ok(()),
        (Ok(code), Ok(())) => Err(format!("exit code {code}")),
        (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_supervisor::limits::Caps;

    #[test]
    fn docker_run_has_the_sandbox_shape() {
        let lang = onpyrunner_languages::find("java").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = Labels {
            owner: "bench-x-cli".into(),
            language: "java".into(),
            run: "r".into(),
            created_unix: 1,
        };
        let config =
            container::container_config("img:tag", &limits, &labels, &[], &[], 20_999, None);
        let args = docker_run_args(&config, &shell_command(lang));
        let text = args.join(" ");
        for want in [
            "run --rm -i --network none",
            "--read-only",
            "--user 20999:20999",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--memory 805306368b",
            "--memory-swap 805306368b",
            "--cpus 1",
            "--pids-limit 128",
            "--ulimit core=0:0",
            "--ulimit nofile=1024:1024",
            "--ipc private",
            "--init",
            "--log-driver none",
            "--label onpyrunner.owner=bench-x-cli",
            "--tmpfs /work:rw,exec,nosuid,nodev,size=128m,nr_inodes=4096,uid=20999,gid=20999,",
        ] {
            assert!(text.contains(want), "{want} missing from {text}");
        }
        let image = args.iter().position(|a| a == "img:tag").unwrap();
        assert_eq!(args[image + 1..image + 3], ["sh", "-c"]);
        let script = &args[image + 3];
        assert!(
            script.starts_with("cat > 'Main.java' && 'javac' "),
            "{script}"
        );
        assert!(script.contains("'Main.java' && exec 'java' "), "{script}");
    }

    #[test]
    fn the_shell_script_runs_the_table_commands() {
        let python = onpyrunner_languages::find("python").unwrap();
        let script = shell_script(python);
        assert!(script.starts_with(&format!("cat > '{}' && exec ", python.source_file)));
        for word in &python.run {
            assert!(script.contains(&format!("'{word}'")), "{script}");
        }
        let raw = raw_command(python);
        assert_eq!(raw, [python.run[0].as_str(), "-c", "pass"]);
    }
}

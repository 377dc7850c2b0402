//! The one place that shapes a run's container: locked down, labelled, limited. The live
//! handle on one such container is [`Sandbox`](crate::sandbox::Sandbox).
use crate::docker::types::{ContainerConfig, HostConfig, LogConfig, Ulimit};
use crate::limits::Limits;
use std::collections::HashMap;

/// Label every container of ours carries; the sweep finds them by it.
pub const LABEL_MANAGED: &str = "onpyrunner.managed";
/// The supervisor instance that created the container.
pub const LABEL_OWNER: &str = "onpyrunner.owner";
pub const LABEL_LANGUAGE: &str = "onpyrunner.language";
pub const LABEL_RUN: &str = "onpyrunner.run";
/// Unix seconds at creation, for the age sweep.
pub const LABEL_CREATED: &str = "onpyrunner.created";
/// The uid (and gid) the container runs as, one of its supervisor's range (see `uids`).
pub const LABEL_UID: &str = "onpyrunner.uid";
/// The launcher: the container's main process (under Docker's init).
pub const LAUNCHER_PATH: &str = "/usr/local/bin/onpyrunner-launcher";
/// The program's work directory, a tmpfs.
pub const WORK_DIR: &str = "/work";

const MIB: i64 = 1024 * 1024;

/// The command that sends a signal (`$1`, a number) to the program: every process in the
/// container but Docker's init (pid 1), the launcher and itself. It runs in the container
/// (an exec, as the container's user), since the daemon's own kill reaches only the init,
/// which would pass it to the launcher alone. The launcher is the init's only child that was
/// started first: the lowest pid whose parent is 1 (a program's orphans are re-parented to the
/// init too, but later). Only the shell's builtins run, so it forks nothing; what the program
/// forks while it runs may miss the signal.
pub const SIGNAL_SCRIPT: &str = r#"s=$1; l=0
for d in /proc/[0-9]*; do
  p=${d#/proc/}; pp=
  while read -r k v; do if [ "$k" = PPid: ]; then pp=$v; break; fi; done < "$d/status"
  if [ "$pp" = 1 ] && { [ "$l" = 0 ] || [ "$p" -lt "$l" ]; }; then l=$p; fi
done 2>/dev/null
set --
for d in /proc/[0-9]*; do
  p=${d#/proc/}
  [ "$p" = 1 ] || [ "$p" = "$l" ] || [ "$p" = $$ ] || set -- "$@" "$p"
done
[ $# = 0 ] || kill -s "$s" "$@" 2>/dev/null
exit 0"#;

/// The exec's argument vector for [`SIGNAL_SCRIPT`] with `signal`.
pub fn signal_command(signal: &str) -> [&str; 5] {
    ["/bin/sh", "-c", SIGNAL_SCRIPT, "sh", signal]
}

/// Host tasks of a gVisor sandbox before the program forks: the Sentry's threads and the gofer
/// (about 40 measured here, with CPython or Node.js blocked on stdin), with room.
const GVISOR_PIDS_BASE: i64 = 64;
/// Host tasks per program process under gVisor's ptrace platform: its stub process and the
/// Sentry threads that serve it (about 5 measured here: 188 forks in a limit of 1000).
const GVISOR_PIDS_PER_PROCESS: i64 = 5;

/// Whether a runtime name is gVisor's, as its docs name them (`runsc`, `runsc-kvm`, ...).
pub fn is_gvisor(runtime: &str) -> bool {
    runtime == "runsc" || runtime.starts_with("runsc-")
}

/// The container's PidsLimit for a run limited to `pids` processes. The cgroup counts host
/// tasks: under gVisor those are mostly the sandbox's own, so at the bare limit the sandbox
/// itself ran out (a Node.js hello world failed 2 runs in 30 at 64, Python could fork twice)
/// and died (google/gvisor#3942). A fork bomb is still bounded, by about `pids` processes.
pub fn host_pids_limit(pids: i64, runtime: Option<&str>) -> i64 {
    match runtime {
        Some(runtime) if is_gvisor(runtime) => GVISOR_PIDS_BASE + GVISOR_PIDS_PER_PROCESS * pids,
        _ => pids,
    }
}

/// What the launcher starts at container start, as its arguments (`onpyrunner_protocol::warm`):
/// a warm language's warm command (`--warm ARGV...`); in a pooled container of a language with a
/// judge process, that process (`--judge-early`: a judged run taken from the pool finds it
/// warm, any other run kills it first); otherwise nothing. With any of them the launcher says
/// when it is ready, and the container is paused (or the run sent) only then.
pub fn launcher_args(language: &onpyrunner_languages::Language, pooled: bool) -> Vec<String> {
    use onpyrunner_protocol::warm::{JUDGE_EARLY_FLAG, WARM_FLAG};
    if language.is_warm() {
        let mut args = vec![WARM_FLAG.to_string()];
        args.extend_from_slice(&language.warm);
        args
    } else if pooled && !language.judge_process.is_empty() {
        vec![JUDGE_EARLY_FLAG.to_string()]
    } else {
        Vec::new()
    }
}

/// The only environment a program sees: these, then the language's own (`env` in the table).
pub fn environment(language_env: &[String]) -> Vec<String> {
    let mut env: Vec<String> = [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        // The run's uid has no /etc/passwd entry: this is where CPython, PyPy, Node.js and the
        // JVM's user.home take the home directory from.
        "HOME=/work",
        "TMPDIR=/tmp",
        "LANG=C.UTF-8",
        "LC_ALL=C.UTF-8",
        // Defined for every program, as the big judges define it (Codeforces, Baekjoon and
        // DOMjudge pass -DONLINE_JUDGE to their compilers, and set it for interpreters).
        "ONLINE_JUDGE=1",
    ]
    .map(String::from)
    .to_vec();
    env.extend_from_slice(language_env);
    env
}

/// Who made a container and for what.
#[derive(Debug, Clone)]
pub struct Labels {
    pub owner: String,
    pub language: String,
    pub run: String,
    pub created_unix: u64,
}

impl Labels {
    pub fn to_map(&self) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_MANAGED.to_string(), "1".to_string()),
            (LABEL_OWNER.to_string(), self.owner.clone()),
            (LABEL_LANGUAGE.to_string(), self.language.clone()),
            (LABEL_RUN.to_string(), self.run.clone()),
            (LABEL_CREATED.to_string(), self.created_unix.to_string()),
        ])
    }
}

/// The container for one run: no network, read-only root, non-root, no capabilities,
/// no new privileges, capped memory (no swap), CPU, pids, open files, file size and tmpfs,
/// private IPC, an init as PID 1, no logs kept, no binds, no devices.
///
/// `uid` is the user and group the container runs as and owns its work directory: one of its
/// own, so that no per-user kernel counter is shared with another run (`uids`). `runtime` is
/// the OCI runtime (`runsc` for gVisor); `None` is the daemon's default.
///
/// `launcher_args` are the launcher's arguments ([`launcher_args`]). `env` is the language's own
/// environment (`env` in the table). Both come from the table only; the source still travels
/// on stdin.
///
/// The stack (RLIMIT_STACK) is as large as the memory limit, as judges give it: a recursive
/// DFS of 10^5 nodes works in C, C++ and Rust, in PyPy and CPython with a raised recursion
/// limit (their own stack checks follow RLIMIT_STACK), and a program that recurses without
/// end meets the memory limit rather than a segfault at 8 MiB.
pub fn container_config(
    image: &str,
    limits: &Limits,
    labels: &Labels,
    launcher_args: &[String],
    env: &[String],
    uid: u32,
    runtime: Option<&str>,
) -> ContainerConfig {
    let mut cmd = vec![LAUNCHER_PATH.to_string()];
    cmd.extend_from_slice(launcher_args);
    let memory = limits.memory_mib as i64 * MIB;
    let file_size = limits.file_size_mib as i64 * MIB;
    let tmpfs_work = format!(
        "rw,exec,nosuid,nodev,size={}m,nr_inodes=4096,uid={uid},gid={uid},mode=0700",
        limits.tmpfs_mib
    );
    let mut labels = labels.to_map();
    labels.insert(LABEL_UID.to_string(), uid.to_string());
    let tmpfs_tmp = format!(
        "rw,noexec,nosuid,nodev,size={}m,nr_inodes=4096,mode=1777",
        limits.tmpfs_mib
    );
    ContainerConfig {
        image: image.to_string(),
        cmd,
        entrypoint: Some(vec![]),
        env: environment(env),
        user: format!("{uid}:{uid}"),
        working_dir: WORK_DIR.to_string(),
        labels,
        attach_stdin: true,
        attach_stdout: true,
        attach_stderr: true,
        open_stdin: true,
        // Closing our side of the attach stream closes the program's stdin (EOF).
        stdin_once: true,
        tty: false,
        network_disabled: true,
        host_config: HostConfig {
            network_mode: "none".into(),
            readonly_rootfs: true,
            tmpfs: HashMap::from([(WORK_DIR.into(), tmpfs_work), ("/tmp".into(), tmpfs_tmp)]),
            cap_drop: vec!["ALL".into()],
            security_opt: vec!["no-new-privileges".into()],
            pids_limit: host_pids_limit(limits.pids, runtime),
            memory,
            memory_swap: memory,
            nano_cpus: (limits.cpus * 1e9) as i64,
            ulimits: vec![
                Ulimit {
                    name: "nofile".into(),
                    soft: 1024,
                    hard: 1024,
                },
                Ulimit {
                    name: "fsize".into(),
                    soft: file_size,
                    hard: file_size,
                },
                Ulimit {
                    name: "core".into(),
                    soft: 0,
                    hard: 0,
                },
                Ulimit {
                    name: "stack".into(),
                    soft: memory,
                    hard: memory,
                },
            ],
            ipc_mode: "private".into(),
            init: true,
            log_config: LogConfig {
                kind: "none".into(),
                config: HashMap::new(),
            },
            auto_remove: false,
            runtime: runtime.map(String::from),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Caps, Limits};

    fn labels(language: &str) -> Labels {
        Labels {
            owner: "o".into(),
            language: language.into(),
            run: "r".into(),
            created_unix: 1,
        }
    }

    #[test]
    fn container_is_locked_down() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = labels("python");
        let args = launcher_args(lang, true);
        let c = container_config("img", &limits, &labels, &args, &[], 20_123, None);
        assert_eq!(c.cmd, [LAUNCHER_PATH]);
        let h = &c.host_config;
        assert_eq!(h.network_mode, "none");
        assert!(c.network_disabled);
        assert!(h.readonly_rootfs);
        assert_eq!(h.cap_drop, ["ALL"]);
        assert_eq!(h.security_opt, ["no-new-privileges"]);
        assert_eq!(h.memory, h.memory_swap, "no swap beyond the memory limit");
        assert_eq!(h.memory, 256 * MIB);
        assert_eq!(h.nano_cpus, 1_000_000_000);
        assert!(h.pids_limit > 0);
        assert!(h.init);
        assert_eq!(h.ipc_mode, "private");
        assert_eq!(h.log_config.kind, "none");
        assert_eq!(c.user, "20123:20123");
        assert_eq!(c.labels[LABEL_UID], "20123");
        assert!(h.tmpfs["/work"].contains("size=64m"));
        assert!(
            h.tmpfs["/work"].contains(",uid=20123,gid=20123,"),
            "the work directory belongs to the run's uid: {}",
            h.tmpfs["/work"]
        );
        assert_eq!(h.runtime, None, "the daemon's default runtime");
        assert!(h.ulimits.iter().any(|u| u.name == "core" && u.hard == 0));
        assert!(
            h.ulimits
                .iter()
                .any(|u| u.name == "stack" && u.soft == h.memory && u.hard == h.memory),
            "the stack is bounded by the memory limit only: {:?}",
            h.ulimits
        );
        assert!(c.env.iter().any(|e| e == "ONLINE_JUDGE=1"));
        assert_eq!(c.labels[LABEL_MANAGED], "1");
        assert_eq!(c.labels[LABEL_OWNER], "o");
        assert!(c.env.iter().all(|e| !e.contains("DOCKER")));
    }

    #[test]
    fn a_warm_language_passes_its_warm_command_to_the_launcher() {
        let java = onpyrunner_languages::find("java").unwrap();
        let limits = Limits::defaults(java, &Caps::default());
        let labels = labels("java");
        let args = launcher_args(java, false);
        let c = container_config("img", &limits, &labels, &args, &[], 20_000, None);
        assert_eq!(c.cmd[..2], [LAUNCHER_PATH, "--warm"]);
        assert_eq!(c.cmd[2..], java.warm[..]);
        assert_eq!(launcher_args(java, true), args);
    }

    #[test]
    fn a_pooled_node_container_starts_its_judge_process_early_and_a_fresh_one_does_not() {
        let node = onpyrunner_languages::find("node").unwrap();
        assert_eq!(launcher_args(node, true), ["--judge-early"]);
        assert!(launcher_args(node, false).is_empty());
        let python = onpyrunner_languages::find("python").unwrap();
        assert!(
            launcher_args(python, true).is_empty(),
            "a fork server starts per run"
        );
    }

    #[test]
    fn a_languages_env_comes_after_the_common_one() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = labels("python");
        let env = ["GOCACHE=/x".to_string()];
        let c = container_config("img", &limits, &labels, &[], &env, 20_000, None);
        assert_eq!(c.env.last().map(String::as_str), Some("GOCACHE=/x"));
        assert!(c.env.iter().any(|e| e == "HOME=/work"));
    }

    #[test]
    fn under_gvisor_the_pids_limit_leaves_room_for_the_sandboxs_own_tasks() {
        assert_eq!(host_pids_limit(64, None), 64);
        assert_eq!(host_pids_limit(64, Some("runc")), 64);
        assert_eq!(host_pids_limit(64, Some("runsc")), 64 + 5 * 64);
        assert_eq!(host_pids_limit(128, Some("runsc-kvm")), 64 + 5 * 128);
        assert!(!is_gvisor("runscx") && !is_gvisor("kata"));
    }

    #[test]
    fn a_runtime_is_asked_for_by_name_and_left_out_otherwise() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = labels("python");
        let body = |runtime| {
            let c = container_config("img", &limits, &labels, &[], &[], 20_000, runtime);
            serde_json::to_value(&c).unwrap()["HostConfig"].clone()
        };
        assert_eq!(body(Some("runsc"))["Runtime"], "runsc");
        assert_eq!(
            body(Some("io.containerd.runc.v2"))["PidsLimit"],
            limits.pids
        );
        assert!(
            body(None).get("Runtime").is_none(),
            "absent, so the daemon uses its default"
        );
    }
}

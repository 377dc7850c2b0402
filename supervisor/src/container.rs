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

/// Unprivileged user and group the program runs as (an entry the image build adds).
pub const RUN_USER: &str = "1000:1000";
/// The launcher: the container's main process (under Docker's init).
pub const LAUNCHER_PATH: &str = "/usr/local/bin/onpyrunner-launcher";
/// The program's work directory, a tmpfs.
pub const WORK_DIR: &str = "/work";

const MIB: i64 = 1024 * 1024;

/// The only environment a program sees.
pub fn environment() -> Vec<String> {
    [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/work",
        "TMPDIR=/tmp",
        "LANG=C.UTF-8",
        "LC_ALL=C.UTF-8",
    ]
    .map(String::from)
    .to_vec()
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
/// `warm` is the language's warm command (empty for none): the launcher gets it as
/// `--warm ARGV...` and starts it at container start (`onpyrunner_protocol::warm`). It comes
/// from the table only; the source still travels on stdin.
pub fn container_config(
    image: &str,
    limits: &Limits,
    labels: &Labels,
    warm: &[String],
) -> ContainerConfig {
    let mut cmd = vec![LAUNCHER_PATH.to_string()];
    if !warm.is_empty() {
        cmd.push(onpyrunner_protocol::warm::WARM_FLAG.to_string());
        cmd.extend_from_slice(warm);
    }
    let memory = limits.memory_mib as i64 * MIB;
    let file_size = limits.file_size_mib as i64 * MIB;
    let tmpfs_work = format!(
        "rw,exec,nosuid,nodev,size={}m,nr_inodes=4096,uid=1000,gid=1000,mode=0700",
        limits.tmpfs_mib
    );
    let tmpfs_tmp = format!(
        "rw,noexec,nosuid,nodev,size={}m,nr_inodes=4096,mode=1777",
        limits.tmpfs_mib
    );
    ContainerConfig {
        image: image.to_string(),
        cmd,
        entrypoint: Some(vec![]),
        env: environment(),
        user: RUN_USER.to_string(),
        working_dir: WORK_DIR.to_string(),
        labels: labels.to_map(),
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
            pids_limit: limits.pids,
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
            ],
            ipc_mode: "private".into(),
            init: true,
            log_config: LogConfig {
                kind: "none".into(),
                config: HashMap::new(),
            },
            auto_remove: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::{Caps, Limits};

    #[test]
    fn container_is_locked_down() {
        let lang = onpyrunner_languages::find("python").unwrap();
        let limits = Limits::defaults(lang, &Caps::default());
        let labels = Labels {
            owner: "o".into(),
            language: "python".into(),
            run: "r".into(),
            created_unix: 1,
        };
        let c = container_config("img", &limits, &labels, &lang.warm);
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
        assert_ne!(c.user, "");
        assert!(!c.user.starts_with("0:") && c.user != "root");
        assert!(h.tmpfs["/work"].contains("size=64m"));
        assert!(h.ulimits.iter().any(|u| u.name == "core" && u.hard == 0));
        assert_eq!(c.labels[LABEL_MANAGED], "1");
        assert_eq!(c.labels[LABEL_OWNER], "o");
        assert!(c.env.iter().all(|e| !e.contains("DOCKER")));
    }

    #[test]
    fn a_warm_language_passes_its_warm_command_to_the_launcher() {
        let java = onpyrunner_languages::find("java").unwrap();
        let limits = Limits::defaults(java, &Caps::default());
        let labels = Labels {
            owner: "o".into(),
            language: "java".into(),
            run: "r".into(),
            created_unix: 1,
        };
        let c = container_config("img", &limits, &labels, &java.warm);
        assert_eq!(c.cmd[..2], [LAUNCHER_PATH, "--warm"]);
        assert_eq!(c.cmd[2..], java.warm[..]);
    }
}

//! Typed request and response bodies of the Docker Engine API (v1.41), only the fields we use.
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// `POST /containers/create` body.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    pub image: String,
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    pub env: Vec<String>,
    pub user: String,
    pub working_dir: String,
    pub labels: HashMap<String, String>,
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub open_stdin: bool,
    pub stdin_once: bool,
    pub tty: bool,
    pub network_disabled: bool,
    pub host_config: HostConfig,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct HostConfig {
    pub network_mode: String,
    pub readonly_rootfs: bool,
    pub tmpfs: HashMap<String, String>,
    pub cap_drop: Vec<String>,
    pub security_opt: Vec<String>,
    pub pids_limit: i64,
    pub memory: i64,
    pub memory_swap: i64,
    pub nano_cpus: i64,
    pub ulimits: Vec<Ulimit>,
    pub ipc_mode: String,
    pub init: bool,
    pub log_config: LogConfig,
    pub auto_remove: bool,
    /// The OCI runtime by its name in the daemon's configuration; absent: the default (runc).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Ulimit {
    pub name: String,
    pub soft: i64,
    pub hard: i64,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct LogConfig {
    #[serde(rename = "Type")]
    pub kind: String,
    pub config: HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateResponse {
    pub id: String,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitResponse {
    pub status_code: i64,
    #[serde(default)]
    pub error: Option<WaitError>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct WaitError {
    #[serde(default)]
    pub message: String,
}

/// `GET /containers/{id}/json`, the parts we read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerInspect {
    pub id: String,
    pub state: ContainerState,
    #[serde(default)]
    pub config: Option<InspectConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct InspectConfig {
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
    #[serde(default)]
    pub user: String,
    #[serde(default)]
    pub cmd: Option<Vec<String>>,
    #[serde(default)]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default)]
    pub env: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerState {
    pub status: String,
    pub running: bool,
    pub paused: bool,
    #[serde(rename = "OOMKilled")]
    pub oom_killed: bool,
    pub exit_code: i64,
    #[serde(default)]
    pub error: String,
}

/// `GET /containers/{id}/stats`, the parts we read (snake_case, unlike the rest of the API).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ContainerStats {
    #[serde(default)]
    pub cpu_stats: CpuStats,
    #[serde(default)]
    pub memory_stats: MemoryStats,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuStats {
    #[serde(default)]
    pub cpu_usage: CpuUsage,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CpuUsage {
    /// Nanoseconds of CPU used by every process of the container so far.
    #[serde(default)]
    pub total_usage: u64,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct MemoryStats {
    #[serde(default)]
    pub usage: Option<u64>,
    /// The cgroup's peak (cgroup v1 only; v2 has no peak in this API).
    #[serde(default)]
    pub max_usage: Option<u64>,
}

/// One row of `GET /containers/json`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerSummary {
    pub id: String,
    #[serde(default)]
    pub names: Vec<String>,
    pub image: String,
    #[serde(default)]
    pub labels: HashMap<String, String>,
    pub state: String,
    pub created: i64,
}

/// `GET /images/{name}/json`, the parts we read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageInspect {
    pub id: String,
    #[serde(default)]
    pub repo_tags: Vec<String>,
    pub size: i64,
    #[serde(default)]
    pub config: Option<ImageConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfig {
    #[serde(default)]
    pub labels: Option<HashMap<String, String>>,
}

/// `GET /info`, the parts that say whether the daemon enforces what a sandbox asks for.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DaemonInfo {
    #[serde(default)]
    pub security_options: Vec<String>,
    #[serde(default)]
    pub memory_limit: bool,
    #[serde(default)]
    pub swap_limit: bool,
    #[serde(default)]
    pub pids_limit: bool,
    #[serde(default)]
    pub cpu_cfs_quota: bool,
    #[serde(default)]
    pub cpu_cfs_period: bool,
    /// The OCI runtimes the daemon knows, by name: `runc`, and those of its daemon.json.
    #[serde(default)]
    pub runtimes: HashMap<String, RuntimeInfo>,
    #[serde(default)]
    pub default_runtime: String,
}

/// One runtime of `GET /info`'s `Runtimes` (its keys are lower case, unlike the rest).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeInfo {
    #[serde(default)]
    pub path: String,
}

impl DaemonInfo {
    /// What a sandbox needs that this daemon would not enforce, in the operator's words.
    pub fn missing(&self) -> Vec<&'static str> {
        let mut missing = Vec::new();
        if !self
            .security_options
            .iter()
            .any(|o| o.split(',').any(|part| part == "name=seccomp"))
        {
            missing.push("seccomp");
        }
        if !self.memory_limit {
            missing.push("memory limits");
        }
        if !self.swap_limit {
            missing.push("swap limits (a memory limit could be escaped into swap)");
        }
        if !self.pids_limit {
            missing.push("process count limits");
        }
        if !(self.cpu_cfs_quota && self.cpu_cfs_period) {
            missing.push("CPU quotas");
        }
        missing
    }
}

/// `GET /version`, the parts we read.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub version: String,
    pub api_version: String,
    pub os: String,
    pub arch: String,
    pub kernel_version: String,
}

/// A line of the JSON progress stream of `/build` and `/images/create`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProgressLine {
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub error: Option<String>,
}

/// Error body the daemon sends with 4xx/5xx.
#[derive(Debug, Clone, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_that_would_not_enforce_a_limit_says_which() {
        let full: DaemonInfo = serde_json::from_str(
            r#"{"SecurityOptions":["name=apparmor","name=seccomp,profile=default"],
                "MemoryLimit":true,"SwapLimit":true,"PidsLimit":true,
                "CpuCfsQuota":true,"CpuCfsPeriod":true,"Other":1}"#,
        )
        .unwrap();
        assert!(full.missing().is_empty(), "{:?}", full.missing());
        let weak: DaemonInfo = serde_json::from_str(
            r#"{"SecurityOptions":["name=seccomp-like"],"MemoryLimit":true,"SwapLimit":false}"#,
        )
        .unwrap();
        let missing = weak.missing();
        assert!(missing.contains(&"seccomp"), "{missing:?}");
        assert!(missing.iter().any(|m| m.starts_with("swap")), "{missing:?}");
        assert!(missing.contains(&"process count limits"));
        assert!(missing.contains(&"CPU quotas"));
        assert!(!missing.contains(&"memory limits"));
    }

    #[test]
    fn the_daemons_runtimes_are_read_by_name() {
        let info: DaemonInfo = serde_json::from_str(
            r#"{"Runtimes":{"runc":{"path":"runc"},"runsc":{"path":"/usr/bin/runsc","runtimeArgs":["--platform=ptrace"]}},
                "DefaultRuntime":"runc"}"#,
        )
        .unwrap();
        assert_eq!(info.runtimes["runsc"].path, "/usr/bin/runsc");
        assert!(info.runtimes.contains_key("runc"));
        assert_eq!(info.default_runtime, "runc");
        let old: DaemonInfo = serde_json::from_str("{}").unwrap();
        assert!(old.runtimes.is_empty());
    }
}

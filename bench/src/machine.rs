//! The machine the figures were measured on: CPU, memory, Docker, load, the date, and the
//! resident memory of a process.
use onpyrunner_supervisor::docker::Docker;

#[derive(Debug, Clone, Default)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_mib: u64,
    pub docker: String,
    pub kernel: String,
    pub date: String,
    pub load_start: String,
    pub load_end: String,
    /// Containers on the daemon at the start that are not this bench's.
    pub other_containers: usize,
}

impl Machine {
    /// This machine and its daemon as they are now; `load_end` is left for the end.
    pub async fn now(docker: &Docker) -> anyhow::Result<Machine> {
        let version = docker.version().await?;
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).trim().to_string())
            .unwrap_or_else(|| "?".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let others = docker
            .list_containers(&[])
            .await
            .map(|l| l.len())
            .unwrap_or(0);
        Ok(Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_mib: memory_kib / 1024,
            docker: format!(
                "{} (API {}, {}/{})",
                version.version, version.api_version, version.os, version.arch
            ),
            kernel: version.kernel_version,
            date: utc_now(),
            load_start: load_average(),
            load_end: String::new(),
            other_containers: others,
        })
    }
}

/// The 1, 5 and 15 minute load averages, as `/proc/loadavg` has them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// A process's resident memory (VmRSS) in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

/// This process's resident memory in KiB.
pub fn own_rss_kib() -> u64 {
    rss_kib(std::process::id())
}

/// KiB as (decimal) megabytes, as the reports show memory.
pub fn kib_to_mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// `YYYY-MM-DD HH:MM UTC` from the system clock.
pub fn utc_now() -> String {
    utc_date(jiff::Timestamp::now())
}

/// `YYYY-MM-DD HH:MM UTC` of an instant.
pub fn utc_date(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M UTC").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(unix: i64) -> String {
        utc_date(jiff::Timestamp::from_second(unix).unwrap())
    }

    #[test]
    fn dates_are_civil_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400 + 3_661), "2000-02-29 01:01 UTC");
        assert_eq!(utc(1_767_225_600), "2026-01-01 00:00 UTC");
    }

    #[test]
    fn own_memory_is_read_and_shown_in_megabytes() {
        assert!(own_rss_kib() > 0);
        assert_eq!(kib_to_mb(1000), 1.024);
    }
}

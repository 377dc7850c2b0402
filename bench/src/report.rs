//! What one bench run measured, and the targets those figures are held to.
use crate::machine::{kib_to_mb, Machine};
use crate::paths::Sample;
use crate::stats::Quantiles;
use std::collections::BTreeMap;
use std::time::Duration;

/// The three ways a run is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    Pool,
    Fresh,
    DockerRun,
}

impl Path {
    pub const ALL: [Path; 3] = [Path::Pool, Path::Fresh, Path::DockerRun];
    pub fn label(self) -> &'static str {
        match self {
            Path::Pool => "pool",
            Path::Fresh => "fresh container",
            Path::DockerRun => "docker run",
        }
    }
}

/// The samples of one language on one path.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    pub first_byte: Vec<Duration>,
    pub completion: Vec<Duration>,
    pub failures: Vec<String>,
}

impl Latency {
    pub fn add(&mut self, sample: Result<Sample, String>) {
        match sample {
            Ok(s) => {
                self.first_byte.push(s.first_byte);
                self.completion.push(s.completion);
            }
            Err(e) => self.failures.push(e),
        }
    }
}

/// How the pooled path is run by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// As the pool does it: paused, unpaused at the claim.
    Paused = 0,
    /// The same, with a container being made alongside, as the pool's refill does after
    /// every claim.
    PausedWithRefill = 1,
    /// Started and never paused: the launcher waits blocked on stdin, so no unpause.
    Running = 2,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Paused, Variant::PausedWithRefill, Variant::Running];
    pub fn label(self) -> &'static str {
        match self {
            Variant::Paused => "paused",
            Variant::PausedWithRefill => "paused, refill alongside",
            Variant::Running => "running, never paused",
        }
    }
}

/// The pooled path by hand, per run (all from just before unpause).
#[derive(Debug, Clone, Default)]
pub struct Breakdown {
    pub unpause: Vec<Duration>,
    pub first_byte: Vec<Duration>,
    /// The launcher's status trailer arrived (the program ended and was reaped).
    pub status: Vec<Duration>,
    /// The container is removed.
    pub removed: Vec<Duration>,
    /// The run stage's wall time as the launcher measured it (interpreter start to exit).
    pub program_wall: Vec<Duration>,
    pub failures: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct LanguageReport {
    pub id: String,
    pub name: String,
    pub paths: BTreeMap<Path, Latency>,
    pub pool_hits: u64,
    pub pool_misses: u64,
    /// The pooled path by hand, per [`Variant`] (indexed by `Variant as usize`).
    pub breakdown: [Breakdown; 3],
}

impl LanguageReport {
    pub fn quantiles(&self, path: Path) -> (Option<Quantiles>, Option<Quantiles>) {
        match self.paths.get(&path) {
            Some(l) => (Quantiles::of(&l.first_byte), Quantiles::of(&l.completion)),
            None => (None, None),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct ThroughputRow {
    pub callers: usize,
    pub engine_runs: u64,
    pub engine_failed: u64,
    pub engine_secs: f64,
    pub pool_hits: u64,
    pub pool_misses: u64,
    pub raw_cycles: u64,
    pub raw_failed: u64,
    pub raw_secs: f64,
}

impl ThroughputRow {
    pub fn engine_rate(&self) -> f64 {
        rate(self.engine_runs, self.engine_secs)
    }
    pub fn raw_rate(&self) -> f64 {
        rate(self.raw_cycles, self.raw_secs)
    }
    /// Ours as a percentage of the daemon's raw capacity.
    pub fn percent(&self) -> Option<f64> {
        let raw = self.raw_rate();
        (raw > 0.0).then(|| 100.0 * self.engine_rate() / raw)
    }
}

fn rate(n: u64, secs: f64) -> f64 {
    if secs > 0.0 {
        n as f64 / secs
    } else {
        0.0
    }
}

/// One burst of runs of one language through one engine.
#[derive(Debug, Clone, Default)]
pub struct BurstRow {
    pub language: String,
    /// "pinned" (the table's sizes, fixed) or "demand".
    pub pools: &'static str,
    /// 1 for the first burst, 2 for the next.
    pub burst: usize,
    pub hits: u64,
    pub misses: u64,
    /// Completion of each run that succeeded, from its submission.
    pub completion: Vec<Duration>,
    pub failures: Vec<String>,
    /// The pool's target when the burst began and when it ended.
    pub target_before: usize,
    pub target_after: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Memory {
    pub rss_before_kib: u64,
    pub rss_full_kib: u64,
    /// (language, pool size) of the pools that were full when measured.
    pub pools: Vec<(String, usize)>,
}

/// Everything one bench run measured.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub command: String,
    pub runs: usize,
    pub seconds: u64,
    pub machine: Machine,
    pub languages: Vec<LanguageReport>,
    pub throughput: Vec<ThroughputRow>,
    pub judged: Vec<crate::judged::JudgedRow>,
    pub output: Vec<crate::output::OutputRow>,
    pub compile: Vec<crate::compile::CompileRow>,
    pub memory: Memory,
    pub bursts: Vec<BurstRow>,
    /// Measurements skipped because the time bound was reached.
    pub cut: Vec<String>,
    pub total: Duration,
}

/// One target: what it asks, what was measured, whether it is met (`None`: not measured).
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub what: String,
    pub measured: String,
    pub met: Option<bool>,
}

/// The limits the targets set.
pub const CPYTHON_FIRST_BYTE_MS: f64 = 25.0;
pub const CPYTHON_COMPLETION_MS: f64 = 60.0;
pub const PYPY_NODE_FIRST_BYTE_MS: f64 = 60.0;
pub const JAVA_RATIO: f64 = 0.5;
pub const THROUGHPUT_PERCENT: f64 = 90.0;
pub const MEMORY_MB: f64 = 50.0;

impl Report {
    pub fn language(&self, id: &str) -> Option<&LanguageReport> {
        self.languages.iter().find(|l| l.id == id)
    }

    /// The targets, computed from the measured figures.
    pub fn targets(&self) -> Vec<Target> {
        let mut targets = Vec::new();
        let pool = |id: &str| self.language(id).map(|l| l.quantiles(Path::Pool));
        let (fb, done) = pool("python").unwrap_or((None, None));
        targets.push(limit_target(
            format!("CPython hello world through the pool: first byte p50 <= {CPYTHON_FIRST_BYTE_MS} ms"),
            fb.map(|q| q.p50),
            CPYTHON_FIRST_BYTE_MS,
        ));
        targets.push(limit_target(
            format!("CPython hello world through the pool: completion p50 <= {CPYTHON_COMPLETION_MS} ms"),
            done.map(|q| q.p50),
            CPYTHON_COMPLETION_MS,
        ));
        for (id, name) in [("pypy", "PyPy"), ("node", "Node.js")] {
            let (fb, _) = pool(id).unwrap_or((None, None));
            targets.push(limit_target(
                format!("{name} hello world through the pool: first byte p50 <= {PYPY_NODE_FIRST_BYTE_MS} ms"),
                fb.map(|q| q.p50),
                PYPY_NODE_FIRST_BYTE_MS,
            ));
        }
        let java = self.language("java").and_then(|l| {
            let ours = l.quantiles(Path::Pool).1?.p50;
            let docker = l.quantiles(Path::DockerRun).1?.p50;
            Some((ours, docker))
        });
        targets.push(Target {
            what: "Java hello world completion through the pool <= half of `docker run` (p50)"
                .into(),
            measured: match java {
                Some((ours, docker)) => format!(
                    "{ours:.0} ms vs {docker:.0} ms: {:.2} of `docker run`",
                    ours / docker
                ),
                None => "not measured".into(),
            },
            met: java.map(|(ours, docker)| ours <= JAVA_RATIO * docker),
        });
        let levels: Vec<(usize, f64)> = self
            .throughput
            .iter()
            .filter_map(|t| Some((t.callers, t.percent()?)))
            .collect();
        targets.push(Target {
            what: format!(
                "Sustained throughput >= {THROUGHPUT_PERCENT}% of the daemon's raw lifecycle capacity (at every concurrency)"
            ),
            measured: if levels.is_empty() {
                "not measured".into()
            } else {
                levels
                    .iter()
                    .map(|(c, p)| format!("{p:.0}% at {c}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            },
            met: (!levels.is_empty()).then(|| levels.iter().all(|(_, p)| *p >= THROUGHPUT_PERCENT)),
        });
        let mb = (self.memory.rss_full_kib > 0).then(|| kib_to_mb(self.memory.rss_full_kib));
        targets.push(Target {
            what: format!("Supervisor resident memory <= {MEMORY_MB} MB with the pools full"),
            measured: mb.map_or("not measured".into(), |mb| format!("{mb:.1} MB")),
            met: mb.map(|mb| mb <= MEMORY_MB),
        });
        targets
    }
}

fn limit_target(what: String, measured_ms: Option<f64>, limit_ms: f64) -> Target {
    Target {
        what,
        measured: measured_ms.map_or("not measured".into(), |ms| format!("{ms:.1} ms")),
        met: measured_ms.map(|ms| ms <= limit_ms),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    pub(crate) fn report(
        python_pool: (u64, u64),
        java: (u64, u64),
        raw: u64,
        rss_kib: u64,
    ) -> Report {
        let lang = |id: &str, pool: (u64, u64), docker: (u64, u64)| {
            let mut l = LanguageReport {
                id: id.into(),
                name: id.into(),
                ..LanguageReport::default()
            };
            for (path, (fb, done)) in [(Path::Pool, pool), (Path::DockerRun, docker)] {
                let lat = l.paths.entry(path).or_default();
                lat.first_byte = ms(&[fb]);
                lat.completion = ms(&[done]);
            }
            l
        };
        Report {
            languages: vec![
                lang("python", python_pool, (300, 400)),
                lang("java", java, (1000, 2000)),
            ],
            throughput: vec![ThroughputRow {
                callers: 4,
                engine_runs: 95,
                engine_secs: 10.0,
                raw_cycles: raw,
                raw_secs: 10.0,
                ..ThroughputRow::default()
            }],
            memory: Memory {
                rss_full_kib: rss_kib,
                ..Memory::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn targets_follow_the_figures() {
        let met: Vec<_> = report((20, 55), (500, 900), 100, 20_000)
            .targets()
            .into_iter()
            .map(|t| t.met)
            .collect();
        // python fb, python done, pypy, node, java, throughput, memory
        assert_eq!(
            met,
            [
                Some(true),
                Some(true),
                None,
                None,
                Some(true),
                Some(true),
                Some(true)
            ]
        );
        let met: Vec<_> = report((30, 61), (500, 1100), 200, 60_000)
            .targets()
            .into_iter()
            .map(|t| t.met)
            .collect();
        assert_eq!(
            met,
            [
                Some(false),
                Some(false),
                None,
                None,
                Some(false),
                Some(false),
                Some(false)
            ]
        );
    }
}

//! How much one bench run measures and for how long: run counts, time bounds, and the tag that
//! tells this run's engines and containers from everyone else's.
use onpyrunner_languages::Language;
use std::time::{Duration, Instant};

/// The language of the throughput measurement (CPython: the fastest start-up, so the daemon
/// rather than the interpreter bounds the rate).
pub const THROUGHPUT_LANGUAGE: &str = "python";
/// Callers of the throughput measurement.
pub const CONCURRENCY: [usize; 3] = [1, 4, 8];
/// Longest one run may take before it counts as failed.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest the pools may take to fill.
pub const FILL_TIMEOUT: Duration = Duration::from_secs(180);
/// Runs of the pooled path by hand (where the time goes) per variant, at most.
pub const BREAKDOWN_RUNS: usize = 20;

#[derive(Debug, Clone)]
pub struct Plan {
    /// Distinguishes this bench's engines and containers from everyone else's.
    pub tag: String,
    /// Timed runs per language and path.
    pub runs: usize,
    /// Seconds of each throughput measurement.
    pub seconds: u64,
    /// Untimed runs per language and path before the timed ones.
    pub warmups: usize,
    /// No new measurement starts after this.
    pub deadline: Instant,
    /// Longest the timed latency runs of one language may take.
    pub lang_budget: Duration,
    /// The OCI runtime of every path measured, as `serve --runtime` (`None`: the daemon's).
    pub runtime: Option<String>,
}

impl Plan {
    /// Whether the total time bound is reached.
    /// Why a language's rounds stopped: the total time bound, or its own budget.
    pub fn cut_reason(&self) -> String {
        if self.late() {
            "the total time bound, --max-minutes".to_string()
        } else {
            format!(
                "its time budget of {} s, --lang-seconds",
                self.lang_budget.as_secs()
            )
        }
    }

    pub fn late(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// Instance name of an engine, or owner label of the containers this bench makes without
    /// an engine, for `what`.
    pub fn owner(&self, what: &str) -> String {
        format!("bench-{}-{what}", self.tag)
    }

    /// The runtime a language's containers run under on every path, as an engine with
    /// `runtime` as its default picks it (the table's `runtime` first).
    pub fn runtime_for(&self, lang: &Language) -> Option<String> {
        lang.runtime.clone().or_else(|| self.runtime.clone())
    }
}

/// A line on stderr saying how far the bench is (the report goes to stdout or a file).
pub fn progress(message: &str) {
    eprintln!("bench: {message}");
}

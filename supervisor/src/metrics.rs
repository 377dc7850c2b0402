//! Counters and latency histograms of the engine, read by `/metrics` and the benchmark.
use onpyrunner_protocol::RunState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A latency histogram over [`LATENCY_BUCKETS`], in seconds: the Prometheus client's own,
/// observed with a `Duration`. Clones share the same counts.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(prometheus_client::metrics::histogram::Histogram::new(
            LATENCY_BUCKETS,
        ))
    }
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }

    /// The histogram as the exposition encodes it (`_bucket{le}`, `_sum`, `_count`).
    pub fn metric(&self) -> prometheus_client::metrics::histogram::Histogram {
        self.0.clone()
    }
}

/// What the engine counts.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Runs by final state: FINISHED, STOPPED, TIMEOUT.
    finished: AtomicU64,
    stopped: AtomicU64,
    timeout: AtomicU64,
    /// Runs that ended with an internal error (also counted as FINISHED).
    pub internal_errors: AtomicU64,
    /// Runs accepted, and refused because the queue was full.
    pub accepted: AtomicU64,
    pub refused_busy: AtomicU64,
    /// From acceptance to the first byte of output.
    pub first_byte: Histogram,
    /// From acceptance to the final state.
    pub completion: Histogram,
    /// Containers removed by the sweeps.
    pub swept: AtomicU64,
}

impl Metrics {
    pub fn count_final(&self, state: RunState) {
        let counter = match state {
            RunState::Finished => &self.finished,
            RunState::Stopped => &self.stopped,
            RunState::Timeout => &self.timeout,
            RunState::Ready | RunState::Running => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs that ended in `state` (0 for the non-final states).
    pub fn ended(&self, state: RunState) -> u64 {
        match state {
            RunState::Finished => self.finished.load(Ordering::Relaxed),
            RunState::Stopped => self.stopped.load(Ordering::Relaxed),
            RunState::Timeout => self.timeout.load(Ordering::Relaxed),
            RunState::Ready | RunState::Running => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_everything() {
        let h = Histogram::default();
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_millis(20));
        h.observe(Duration::from_secs(100));
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("h_seconds", "h", h.metric());
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let sample = |series: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(series));
            let line = line.unwrap_or_else(|| panic!("{series} not in {text}"));
            line.rsplit_once(' ').unwrap().1.parse().unwrap()
        };
        assert_eq!(sample("h_seconds_bucket{le=\"0.005\"}"), 1.0);
        assert_eq!(sample("h_seconds_bucket{le=\"0.025\"}"), 2.0);
        assert_eq!(
            sample("h_seconds_bucket{le=\"30\"}"),
            2.0,
            "100 s is only in +Inf"
        );
        assert_eq!(sample("h_seconds_bucket{le=\"+Inf\"}"), 3.0);
        assert_eq!(sample("h_seconds_count"), 3.0);
        assert!((sample("h_seconds_sum") - 100.023).abs() < 1e-6);
    }

    #[test]
    fn final_states_are_counted_apart() {
        let m = Metrics::default();
        m.count_final(RunState::Stopped);
        m.count_final(RunState::Stopped);
        m.count_final(RunState::Running);
        assert_eq!(m.ended(RunState::Stopped), 2);
        assert_eq!(m.ended(RunState::Finished), 0);
    }
}

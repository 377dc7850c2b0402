//! Counters and latency histograms of the engine, read by `/metrics` and the benchmark.
use onpyrunner_protocol::RunState;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets; the last bucket is +Inf.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// A Prometheus-style cumulative histogram with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations at most `LATENCY_BUCKETS[i]`, not cumulative (summed when read).
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&b| secs <= b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (upper bound, cumulative count) per bucket, then the total count and the sum in seconds.
    pub fn snapshot(&self) -> (Vec<(f64, u64)>, u64, f64) {
        let mut total = 0;
        let cumulative = LATENCY_BUCKETS
            .iter()
            .zip(&self.buckets)
            .map(|(&bound, n)| {
                total += n.load(Ordering::Relaxed);
                (bound, total)
            })
            .collect();
        let count = self.count.load(Ordering::Relaxed);
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (cumulative, count, sum)
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
        let (buckets, count, sum) = h.snapshot();
        assert_eq!(buckets[0], (0.005, 1));
        assert_eq!(buckets[2], (0.025, 2));
        assert_eq!(buckets.last().unwrap().1, 2, "100 s is only in +Inf");
        assert_eq!(count, 3);
        assert!((sum - 100.023).abs() < 1e-6);
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

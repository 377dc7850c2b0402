//! Percentiles of latency samples.
use std::time::Duration;

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// p50, p90, p99 in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
}

impl Quantiles {
    /// The quantiles of unsorted samples; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Quantiles> {
        let mut sorted = samples.to_vec();
        sorted.sort();
        let ms = |p| percentile(&sorted, p).map(|d| d.as_secs_f64() * 1000.0);
        Some(Quantiles {
            p50: ms(50.0)?,
            p90: ms(90.0)?,
            p99: ms(99.0)?,
        })
    }
}

/// The median of unsorted samples, in milliseconds.
pub fn p50_ms(samples: &[Duration]) -> Option<f64> {
    Quantiles::of(samples).map(|q| q.p50)
}

/// A table cell's note of failed runs: their count and the first one's message, on one line.
pub fn failures_note(failures: &[String]) -> String {
    match failures.first() {
        None => String::new(),
        Some(first) => format!(
            " ({} failed: {})",
            failures.len(),
            first.replace(['\n', '|'], " ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let s = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&s, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&ms(&[7]), 99.0), Some(Duration::from_millis(7)));
        assert_eq!(percentile(&[], 50.0), None);
        let q = Quantiles::of(&ms(&[30, 10, 20])).unwrap();
        assert_eq!((q.p50, q.p90, q.p99), (20.0, 30.0, 30.0));
    }
}

//! `GET /metrics`: the engine's counters in the Prometheus text exposition format, version
//! 0.0.4 (`# HELP` and `# TYPE` before each family, one family's samples together, a
//! histogram's `_bucket{le}` cumulative and ending with `+Inf`, then `_sum` and `_count`).
//!
//! Rendering works on a [`Snapshot`] so that it is tested without an engine.
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::metrics::Histogram;
use onpyrunner_supervisor::session::RunState;
use std::fmt::Write;
use std::sync::atomic::Ordering;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::Reply;

/// What Prometheus expects for this format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One pool's figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PoolSnapshot {
    pub language: String,
    pub ready: usize,
    pub target: usize,
    pub hits: u64,
    pub misses: u64,
    pub created: u64,
    pub failures: u64,
}

/// A histogram as read: cumulative buckets (upper bound, count), count, sum in seconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum: f64,
}

impl From<&Histogram> for HistogramSnapshot {
    fn from(h: &Histogram) -> Self {
        let (buckets, count, sum) = h.snapshot();
        HistogramSnapshot {
            buckets,
            count,
            sum,
        }
    }
}

/// Everything `/metrics` shows, read at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub pools: Vec<PoolSnapshot>,
    /// Runs by final state.
    pub ended: Vec<(RunState, u64)>,
    pub internal_errors: u64,
    pub accepted: u64,
    pub refused_busy: u64,
    pub queued: usize,
    pub running: usize,
    pub swept: u64,
    pub docker_up: bool,
    pub first_byte: HistogramSnapshot,
    pub completion: HistogramSnapshot,
}

impl Snapshot {
    pub fn of(engine: &Engine) -> Self {
        let m = engine.metrics();
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        Snapshot {
            pools: engine
                .pools()
                .iter()
                .map(|(id, pool)| {
                    let s = pool.stats();
                    PoolSnapshot {
                        language: id.clone(),
                        ready: pool.ready(),
                        target: pool.target(),
                        hits: load(&s.hits),
                        misses: load(&s.misses),
                        created: load(&s.created),
                        failures: load(&s.failures),
                    }
                })
                .collect(),
            ended: RunState::ALL
                .into_iter()
                .filter(|s| s.is_final())
                .map(|s| (s, m.ended(s)))
                .collect(),
            internal_errors: load(&m.internal_errors),
            accepted: load(&m.accepted),
            refused_busy: load(&m.refused_busy),
            queued: engine.queue().queued(),
            running: engine.queue().running(),
            swept: load(&m.swept),
            docker_up: engine.daemon_up(),
            first_byte: (&m.first_byte).into(),
            completion: (&m.completion).into(),
        }
    }
}

/// The answer to `GET /metrics`.
pub fn reply(engine: &Engine) -> Response {
    warp::reply::with_header(
        render(&Snapshot::of(engine)),
        CONTENT_TYPE,
        CONTENT_TYPE_TEXT,
    )
    .into_response()
}

/// The exposition text.
pub fn render(s: &Snapshot) -> String {
    let mut out = Exposition::default();
    let per_pool = |f: fn(&PoolSnapshot) -> u64| -> Vec<(Vec<(&str, String)>, f64)> {
        s.pools
            .iter()
            .map(|p| (vec![("language", p.language.clone())], f(p) as f64))
            .collect()
    };
    out.family(
        "onpyrunner_pool_ready",
        "gauge",
        "Paused containers ready in the language's pool.",
        per_pool(|p| p.ready as u64),
    );
    out.family(
        "onpyrunner_pool_target",
        "gauge",
        "Containers the language's pool keeps ready.",
        per_pool(|p| p.target as u64),
    );
    out.family(
        "onpyrunner_pool_hits_total",
        "counter",
        "Runs that got a container from the pool.",
        per_pool(|p| p.hits),
    );
    out.family(
        "onpyrunner_pool_misses_total",
        "counter",
        "Runs that found the pool empty and made a container at once.",
        per_pool(|p| p.misses),
    );
    out.family(
        "onpyrunner_pool_created_total",
        "counter",
        "Containers the pool made.",
        per_pool(|p| p.created),
    );
    out.family(
        "onpyrunner_pool_failures_total",
        "counter",
        "Containers the pool failed to make.",
        per_pool(|p| p.failures),
    );
    out.family(
        "onpyrunner_runs_total",
        "counter",
        "Runs that reached a final state, by state.",
        s.ended
            .iter()
            .map(|(state, n)| (vec![("state", state.as_str().to_string())], *n as f64))
            .collect(),
    );
    out.single(
        "onpyrunner_runs_internal_errors_total",
        "counter",
        "Runs that ended with an internal error (also counted as FINISHED).",
        s.internal_errors as f64,
    );
    out.single(
        "onpyrunner_runs_accepted_total",
        "counter",
        "Runs accepted (admitted or queued).",
        s.accepted as f64,
    );
    out.single(
        "onpyrunner_runs_refused_busy_total",
        "counter",
        "Runs refused because the queue was full (HTTP 429).",
        s.refused_busy as f64,
    );
    out.single(
        "onpyrunner_runs_queued",
        "gauge",
        "Runs waiting for a slot.",
        s.queued as f64,
    );
    out.single(
        "onpyrunner_runs_running",
        "gauge",
        "Run slots taken.",
        s.running as f64,
    );
    out.single(
        "onpyrunner_containers_swept_total",
        "counter",
        "Containers removed by the sweeps (left by a crash, or neither pooled nor running).",
        s.swept as f64,
    );
    out.single(
        "onpyrunner_docker_up",
        "gauge",
        "1 if the Docker daemon answered the last health check.",
        if s.docker_up { 1.0 } else { 0.0 },
    );
    out.histogram(
        "onpyrunner_run_first_byte_seconds",
        "From a run's acceptance to its first byte of output.",
        &s.first_byte,
    );
    out.histogram(
        "onpyrunner_run_completion_seconds",
        "From a run's acceptance to its final state.",
        &s.completion,
    );
    out.text
}

#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (label, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let value = value
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                let _ = write!(self.text, "{label}=\"{value}\"");
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.header(name, kind, help);
        self.sample(name, &[], value);
    }

    fn family(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        samples: Vec<(Vec<(&str, String)>, f64)>,
    ) {
        self.header(name, kind, help);
        for (labels, value) in samples {
            self.sample(name, &labels, value);
        }
    }

    fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) {
        self.header(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in &h.buckets {
            self.sample(&bucket, &[("le", number(*bound))], *count as f64);
        }
        // Observations above the last bound are in the count only.
        self.sample(&bucket, &[("le", "+Inf".into())], h.count as f64);
        self.sample(&format!("{name}_sum"), &[], h.sum);
        self.sample(&format!("{name}_count"), &[], h.count as f64);
    }
}

/// A sample value as Go's `strconv.FormatFloat(v, 'g', -1, 64)` would mostly write it:
/// integers without a fraction, `+Inf`, `-Inf`, `NaN`.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::time::Duration;

    fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// A sample line: name, labels, value. Panics with the line when it is malformed.
    fn parse_sample(line: &str) -> (String, BTreeMap<String, String>, f64) {
        let (series, value) = line.rsplit_once(' ').expect(line);
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse::<f64>().expect(line),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect(line);
                let mut labels = BTreeMap::new();
                let mut chars = body.chars().peekable();
                while chars.peek().is_some() {
                    let label: String = chars.by_ref().take_while(|&c| c != '=').collect();
                    assert!(valid_name(&label) && !label.contains(':'), "{line}");
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut value = String::new();
                    loop {
                        match chars.next().expect(line) {
                            '\\' => match chars.next().expect(line) {
                                'n' => value.push('\n'),
                                c @ ('\\' | '"') => value.push(c),
                                c => panic!("bad escape \\{c} in {line}"),
                            },
                            '"' => break,
                            c => value.push(c),
                        }
                    }
                    assert!(labels.insert(label, value).is_none(), "{line}");
                    match chars.next() {
                        None | Some(',') => {}
                        Some(c) => panic!("unexpected {c:?} in {line}"),
                    }
                }
                (name, labels)
            }
        };
        assert!(valid_name(name), "{line}");
        (name.to_string(), labels, value)
    }

    #[derive(Default)]
    struct SeenHistogram {
        buckets: Vec<(f64, f64)>,
        count: Option<f64>,
        has_inf: bool,
    }

    /// Parse an exposition line by line and check the rules a scraper relies on. Returns the
    /// samples by series (`name{a="b"}`).
    fn check(text: &str) -> BTreeMap<String, f64> {
        assert!(text.ends_with('\n'), "the last line ends with a line feed");
        let mut helps = BTreeSet::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut done: BTreeSet<String> = BTreeSet::new(); // families whose samples ended
        let mut current: Option<String> = None;
        let mut samples = BTreeMap::new();
        let mut histograms: BTreeMap<String, SeenHistogram> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect(line);
                assert!(valid_name(name), "{line}");
                assert!(!help.is_empty(), "{line}");
                assert!(
                    helps.insert(name.to_string()),
                    "one HELP per family: {line}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect(line);
                assert!(valid_name(name), "{line}");
                assert!(
                    ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                    "{line}"
                );
                assert!(helps.contains(name), "HELP comes with TYPE: {line}");
                assert!(
                    types.insert(name.into(), kind.into()).is_none(),
                    "one TYPE per family: {line}"
                );
                if kind == "counter" {
                    assert!(name.ends_with("_total"), "counters end in _total: {line}");
                }
                if let Some(previous) = current.replace(name.to_string()) {
                    done.insert(previous);
                }
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (name, labels, value) = parse_sample(line);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suffix| {
                    let base = name.strip_suffix(suffix)?;
                    (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
                })
                .unwrap_or(&name)
                .to_string();
            assert!(
                types.contains_key(&family),
                "sample before its TYPE: {line}"
            );
            assert_eq!(current.as_deref(), Some(family.as_str()), "grouped: {line}");
            assert!(!done.contains(&family), "{line}");
            if types[&family] == "counter" {
                assert!(value >= 0.0, "{line}");
            }
            if types[&family] == "histogram" {
                let h = histograms.entry(family.clone()).or_default();
                if name.ends_with("_bucket") {
                    let le = labels.get("le").expect(line);
                    let bound = if le == "+Inf" {
                        h.has_inf = true;
                        f64::INFINITY
                    } else {
                        assert!(!h.has_inf, "+Inf is the last bucket: {line}");
                        le.parse().expect(line)
                    };
                    if let Some(&(b, n)) = h.buckets.last() {
                        assert!(bound > b, "bounds increase: {line}");
                        assert!(value >= n, "buckets are cumulative: {line}");
                    }
                    h.buckets.push((bound, value));
                } else if name.ends_with("_count") {
                    h.count = Some(value);
                }
            }
            let key = if labels.is_empty() {
                name
            } else {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                format!("{name}{{{}}}", l.join(","))
            };
            assert!(samples.insert(key, value).is_none(), "duplicate: {line}");
        }
        assert_eq!(
            helps,
            types.keys().cloned().collect(),
            "every HELP has a TYPE"
        );
        for (name, h) in histograms {
            assert!(h.has_inf, "{name} has a +Inf bucket");
            assert_eq!(
                Some(h.buckets.last().unwrap().1),
                h.count,
                "{name}: +Inf == count"
            );
        }
        samples
    }

    fn snapshot() -> Snapshot {
        let h = Histogram::default();
        for ms in [3, 20, 20, 900, 100_000] {
            h.observe(Duration::from_millis(ms));
        }
        Snapshot {
            pools: vec![
                PoolSnapshot {
                    language: "python".into(),
                    ready: 2,
                    target: 4,
                    hits: 10,
                    misses: 1,
                    created: 12,
                    failures: 0,
                },
                PoolSnapshot {
                    language: "we\"ird\\lang\n".into(),
                    ..PoolSnapshot::default()
                },
            ],
            ended: vec![
                (RunState::Finished, 7),
                (RunState::Stopped, 2),
                (RunState::Timeout, 1),
            ],
            internal_errors: 1,
            accepted: 11,
            refused_busy: 3,
            queued: 4,
            running: 2,
            swept: 5,
            docker_up: true,
            first_byte: (&h).into(),
            completion: HistogramSnapshot::default(),
        }
    }

    #[test]
    fn exposition_parses_line_by_line_and_keeps_the_rules() {
        let samples = check(&render(&snapshot()));
        assert_eq!(
            samples[r#"onpyrunner_pool_hits_total{language="python"}"#],
            10.0
        );
        assert_eq!(samples[r#"onpyrunner_pool_ready{language="python"}"#], 2.0);
        assert_eq!(samples[r#"onpyrunner_pool_target{language="python"}"#], 4.0);
        assert_eq!(samples[r#"onpyrunner_runs_total{state="TIMEOUT"}"#], 1.0);
        assert_eq!(samples[r#"onpyrunner_runs_total{state="FINISHED"}"#], 7.0);
        assert_eq!(samples["onpyrunner_runs_refused_busy_total"], 3.0);
        assert_eq!(samples["onpyrunner_runs_queued"], 4.0);
        assert_eq!(samples["onpyrunner_containers_swept_total"], 5.0);
        assert_eq!(samples["onpyrunner_run_first_byte_seconds_count"], 5.0);
        assert_eq!(
            samples[r#"onpyrunner_run_first_byte_seconds_bucket{le="0.025"}"#],
            3.0
        );
        assert_eq!(
            samples[r#"onpyrunner_run_first_byte_seconds_bucket{le="+Inf"}"#], 5.0,
            "100 s is above the last bound but in +Inf"
        );
        assert!((samples["onpyrunner_run_first_byte_seconds_sum"] - 100.943).abs() < 1e-9);
        assert_eq!(samples["onpyrunner_run_completion_seconds_count"], 0.0);
        // Label values are escaped, and read back as they were.
        assert_eq!(
            samples["onpyrunner_pool_misses_total{language=\"we\"ird\\lang\n\"}"],
            0.0
        );
    }

    #[test]
    fn the_checker_catches_what_a_scraper_would_reject() {
        let good = render(&snapshot());
        for bad in [
            good.replace("# TYPE onpyrunner_runs_queued gauge\n", ""),
            good.replace("bucket{le=\"+Inf\"} 5", "bucket{le=\"+Inf\"} 4"),
            good.replace("bucket{le=\"0.025\"} 3", "bucket{le=\"0.025\"} 0"),
            good.replace("onpyrunner_runs_running 2", "onpyrunner-runs-running 2"),
            good.trim_end().to_string(),
        ] {
            assert!(std::panic::catch_unwind(|| check(&bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_are_written_as_prometheus_reads_them() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(0.005), "0.005");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(12.5), "12.5");
    }
}

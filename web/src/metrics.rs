//! `GET /metrics`: the engine's counters in the Prometheus text exposition format, version
//! 0.0.4, encoded by the Prometheus project's own client (`prometheus-client`).
//!
//! Rendering works on a [`Snapshot`] so that it is tested without an engine; the registry is
//! built per scrape from it, since the values live in the engine and its pools.
use onpyrunner_supervisor::runner::{PoolStatus as PoolSnapshot, Runner, Status as Snapshot};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use warp::http::header::CONTENT_TYPE;
use warp::reply::Response;
use warp::Reply;

/// What Prometheus expects for this format.
pub const CONTENT_TYPE_TEXT: &str = prometheus_text::CONTENT_TYPE;

/// The answer to `GET /metrics`.
pub fn reply(engine: &dyn Runner) -> Response {
    warp::reply::with_header(render(&engine.status()), CONTENT_TYPE, CONTENT_TYPE_TEXT)
        .into_response()
}

/// The exposition text.
pub fn render(s: &Snapshot) -> String {
    let mut registry = Registry::default();
    // `register` adds the full stop, and `_total` to counters.
    let mut per_pool = |name: &str, help: &str, counter: bool, f: fn(&PoolSnapshot) -> u64| {
        if counter {
            let family = Family::<Vec<(&'static str, String)>, Counter>::default();
            for p in &s.pools {
                family
                    .get_or_create(&vec![("language", p.language.clone())])
                    .inc_by(f(p));
            }
            registry.register(name, help, family);
        } else {
            let family = Family::<Vec<(&'static str, String)>, Gauge>::default();
            for p in &s.pools {
                family
                    .get_or_create(&vec![("language", p.language.clone())])
                    .set(f(p) as i64);
            }
            registry.register(name, help, family);
        }
    };
    per_pool(
        "onpyrunner_pool_ready",
        "Paused containers ready in the language's pool",
        false,
        |p| p.ready as u64,
    );
    per_pool(
        "onpyrunner_pool_size",
        "Containers the language's pool holds, ready or being made",
        false,
        |p| p.size as u64,
    );
    per_pool(
        "onpyrunner_pool_target",
        "Containers the language's pool should hold now (it follows demand)",
        false,
        |p| p.target as u64,
    );
    per_pool(
        "onpyrunner_pool_floor",
        "Fewest containers the language's pool shrinks to when idle",
        false,
        |p| p.floor as u64,
    );
    per_pool(
        "onpyrunner_pool_ceiling",
        "Most containers the language's pool grows to",
        false,
        |p| p.ceiling as u64,
    );
    per_pool(
        "onpyrunner_pool_shrunk",
        "Ready containers removed because the pool's target went down",
        true,
        |p| p.shrunk,
    );
    per_pool(
        "onpyrunner_pool_hits",
        "Runs that got a container from the pool",
        true,
        |p| p.hits,
    );
    per_pool(
        "onpyrunner_pool_misses",
        "Runs that found the pool empty and made a container at once",
        true,
        |p| p.misses,
    );
    per_pool(
        "onpyrunner_pool_created",
        "Containers the pool made",
        true,
        |p| p.created,
    );
    per_pool(
        "onpyrunner_pool_failures",
        "Containers the pool failed to make",
        true,
        |p| p.failures,
    );
    let (charged, budget) = s.pool_memory_mib;
    let mib = |n: u64| {
        let g = Gauge::<i64>::default();
        g.set(i64::try_from(n.saturating_mul(1024 * 1024)).unwrap_or(i64::MAX));
        g
    };
    registry.register(
        "onpyrunner_pool_memory_charged_bytes",
        "Memory the pools' targets are charged together (each container at its language's memory limit)",
        mib(charged),
    );
    registry.register(
        "onpyrunner_pool_memory_budget_bytes",
        "Memory the pools' targets may be charged together (--pool-memory-mib)",
        mib(budget),
    );
    let runs = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
    for (state, n) in &s.ended {
        runs.get_or_create(&vec![("state", state.as_str())])
            .inc_by(*n);
    }
    registry.register(
        "onpyrunner_runs",
        "Runs that reached a final state, by state",
        runs,
    );
    let counter = |n: u64| {
        let c = Counter::<u64>::default();
        c.inc_by(n);
        c
    };
    let gauge = |n: i64| {
        let g = Gauge::<i64>::default();
        g.set(n);
        g
    };
    registry.register(
        "onpyrunner_runs_internal_errors",
        "Runs that ended with an internal error (also counted as FINISHED)",
        counter(s.internal_errors),
    );
    registry.register(
        "onpyrunner_runs_accepted",
        "Runs accepted (admitted or queued)",
        counter(s.accepted),
    );
    registry.register(
        "onpyrunner_runs_refused_busy",
        "Runs refused because the queue was full (HTTP 429)",
        counter(s.refused_busy),
    );
    registry.register(
        "onpyrunner_runs_queued",
        "Runs waiting for a slot",
        gauge(s.queued as i64),
    );
    registry.register(
        "onpyrunner_runs_running",
        "Run slots taken",
        gauge(s.running as i64),
    );
    registry.register(
        "onpyrunner_containers_swept",
        "Containers removed by the sweeps (left by a crash, or neither pooled nor running)",
        counter(s.swept),
    );
    registry.register(
        "onpyrunner_docker_up",
        "1 if the Docker daemon answered the last health check",
        gauge(i64::from(s.docker_up)),
    );
    registry.register(
        "onpyrunner_run_first_byte_seconds",
        "From a run's acceptance to its first byte of output",
        s.first_byte.metric(),
    );
    registry.register(
        "onpyrunner_run_completion_seconds",
        "From a run's acceptance to its final state",
        s.completion.metric(),
    );
    let mut text = String::new();
    prometheus_text::encode(&mut text, &registry).expect("writing to a String cannot fail");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use onpyrunner_protocol::RunState;
    use onpyrunner_supervisor::metrics::Histogram;
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
                    size: 3,
                    target: 4,
                    floor: 1,
                    ceiling: 8,
                    shrunk: 6,
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
            pool_memory_mib: (1024, 6000),
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
            redis_up: None,
            shutting_down: false,
            first_byte: h,
            completion: Histogram::default(),
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
        assert_eq!(samples[r#"onpyrunner_pool_size{language="python"}"#], 3.0);
        assert_eq!(samples[r#"onpyrunner_pool_floor{language="python"}"#], 1.0);
        assert_eq!(
            samples[r#"onpyrunner_pool_ceiling{language="python"}"#],
            8.0
        );
        assert_eq!(
            samples[r#"onpyrunner_pool_shrunk_total{language="python"}"#],
            6.0
        );
        assert_eq!(
            samples["onpyrunner_pool_memory_budget_bytes"],
            6000.0 * 1024.0 * 1024.0
        );
        assert_eq!(
            samples["onpyrunner_pool_memory_charged_bytes"],
            1024.0 * 1024.0 * 1024.0
        );
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
}

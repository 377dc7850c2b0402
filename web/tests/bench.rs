//! `onpyrunner bench`, `cluster-bench`, `load` and `attack` as a user runs them: real binary, real daemon, real
//! images. The measuring code is the `onpyrunner-bench` crate (its unit tests are beside it);
//! these check the commands end to end.
use std::process::Command;

fn onpyrunner() -> Command {
    Command::new(env!("CARGO_BIN_EXE_onpyrunner"))
}

/// The numbers of a Markdown table row that starts with `prefix`, one per cell ("-" is none).
fn row_numbers(report: &str, prefix: &str) -> Vec<Option<f64>> {
    let line = report
        .lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no row starting with {prefix:?} in:\n{report}"));
    line[prefix.len()..]
        .split('|')
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(|c| {
            let number = c.split_whitespace().next().unwrap_or("");
            number.trim_end_matches(['%']).parse().ok()
        })
        .collect()
}

#[test]
fn bench_quick_measures_every_path_and_reports_the_targets() {
    let started = std::time::Instant::now();
    let out = onpyrunner()
        .args([
            "bench",
            "--quick",
            "--langs",
            "python",
            "--runs",
            "3",
            "--seconds",
            "1",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{report}");
    assert!(
        stderr.contains("bench: filling the pools"),
        "progress on stderr: {stderr}"
    );

    // Latency: three paths, three runs each, every figure a positive number of ms.
    for path in ["pool", "fresh container", "docker run"] {
        let cells = row_numbers(&report, &format!("| python | {path} |"));
        assert_eq!(cells.len(), 7, "runs + 6 figures: {cells:?}");
        assert_eq!(cells[0], Some(3.0), "3 runs, none failed: {cells:?}");
        let figures: Vec<f64> = cells[1..].iter().map(|c| c.expect("a number")).collect();
        assert!(
            figures.iter().all(|&ms| ms > 0.0 && ms < 60_000.0),
            "{figures:?}"
        );
        let (first_byte_p50, completion_p50) = (figures[0], figures[3]);
        assert!(first_byte_p50 <= completion_p50, "{figures:?}");
    }
    assert!(report.contains("python 3 hits / 0 misses"), "{report}");

    // Where the time goes: both rows with numbers.
    for variant in [
        "paused",
        "paused, refill alongside",
        "running, never paused",
    ] {
        let cells = row_numbers(&report, &format!("| python | {variant} |"));
        assert!(cells[..6].iter().all(Option::is_some), "{cells:?}");
    }

    // Throughput at 1, 4 and 8 callers, ours and raw, and the percentage.
    for callers in [1, 4, 8] {
        let cells = row_numbers(&report, &format!("| {callers} |"));
        let (ours, raw, percent) = (cells[0], cells[3], cells[5]);
        assert!(ours.is_some_and(|r| r > 0.0), "{cells:?}");
        assert!(raw.is_some_and(|r| r > 0.0), "{cells:?}");
        assert!(percent.is_some_and(|p| p > 0.0), "{cells:?}");
    }

    // Bursts of five through the pinned and the demand-following pool, twice each: every run
    // counted as a hit or a miss, none failed, a p50.
    for pools in ["pinned", "demand"] {
        for burst in [1, 2] {
            let cells = row_numbers(&report, &format!("| python | {pools} | {burst} |"));
            let (hits, misses) = (cells[1].expect("hits"), cells[2].expect("misses"));
            assert_eq!(hits + misses, 5.0, "{cells:?}");
            assert!(cells[3].is_some_and(|ms| ms > 0.0), "{cells:?}");
            assert_eq!(cells.last(), Some(&Some(0.0)), "none failed: {cells:?}");
        }
    }

    // Memory with the pools full, and the targets computed from the figures.
    let rss = row_numbers(&report, "| Every pool full (python 2) |");
    assert!(rss[0].is_some_and(|mb| mb > 1.0 && mb < 1000.0), "{rss:?}");
    let targets = report
        .split("## Targets")
        .nth(1)
        .expect("a Targets section");
    for target in ["CPython", "Sustained throughput", "resident memory"] {
        let line = targets
            .lines()
            .find(|l| l.contains(target))
            .unwrap_or_else(|| panic!("no {target} target in {targets}"));
        assert!(
            line.ends_with("| yes |") || line.ends_with("| **no** |"),
            "{line}"
        );
    }
    assert!(targets.contains("| Java hello world") && targets.contains("not measured"));
    // The bursts take about 20 s of it (four of five runs a second apart).
    assert!(started.elapsed() < std::time::Duration::from_secs(90));
}

#[test]
fn load_runs_clients_and_idle_connections_against_its_own_server_and_writes_its_section() {
    let started = std::time::Instant::now();
    let dir = std::env::temp_dir().join(format!("onpyrunner-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = dir.join("BENCHMARKS.md");
    std::fs::write(
        &doc,
        "<!-- bench:begin -->\n# Benchmarks\nkept\n<!-- bench:end -->\n",
    )
    .unwrap();
    let out = onpyrunner()
        .args([
            "load",
            "--clients",
            "6",
            "--idle",
            "20",
            "--hold-seconds",
            "3",
        ])
        .arg("--write")
        .arg(&doc)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let report = std::fs::read_to_string(&doc).unwrap();
    assert!(
        report.starts_with("<!-- bench:begin -->\n# Benchmarks\nkept\n"),
        "{report}"
    );
    assert!(
        report.contains("6 reached a final state (6 FINISHED), 0 lost, 0 with wrong output"),
        "{report}"
    );
    for row in ["| the first output byte |", "| the summary |"] {
        let cells = row_numbers(&report, row);
        assert!(
            cells.iter().all(|c| c.is_some_and(|ms| ms > 0.0)),
            "{row} {cells:?}"
        );
    }
    assert!(report.contains("20 opened, 0 dropped"), "{report}");
    let idle = row_numbers(&report, "| With 20 idle connections, after 3 s |");
    assert!(
        idle[0].is_some_and(|mb| mb > 1.0 && mb < 1000.0),
        "{idle:?}"
    );
    assert!(report.trim_end().ends_with("<!-- load:end -->"), "{report}");
    // The server it started stopped and took its containers with it.
    assert!(
        complaints(&stderr).is_empty(),
        "the server complained: {stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(90));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn attack_times_a_well_behaved_client_among_slow_connections_and_a_flood() {
    let started = std::time::Instant::now();
    let out = onpyrunner()
        .args([
            "attack",
            "--runs",
            "3",
            "--flood",
            "30",
            "--slow",
            "40",
            "--slow-addresses",
            "2",
            "--phase-seconds",
            "30",
            "--max-seconds",
            "150",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{report}");
    for phase in [
        "| no attack |",
        "| 40 slow connections |",
        "| 40 slow connections and a flood of 30 runs",
    ] {
        let cells = row_numbers(&report, phase);
        // Runs, succeeded, p50, p90, p99, and two ratios ("1.0x" is no number).
        assert!(cells[0].is_some_and(|n| n >= 1.0), "{phase} {cells:?}");
        assert_eq!(cells[0], cells[1], "every run succeeded: {phase} {cells:?}");
        assert!(
            cells[2..5].iter().all(|c| c.is_some_and(|ms| ms > 0.0)),
            "{phase} {cells:?}"
        );
    }
    assert!(
        report.contains("**Every well-behaved run succeeded: yes**"),
        "{report}"
    );
    assert!(
        report.contains("were refused with 429 naming `client`"),
        "{report}"
    );
    assert!(
        report.contains("| Before the attack (after the warm-up) |"),
        "{report}"
    );
    assert!(
        complaints(&stderr).is_empty(),
        "the server complained: {stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(150));
}

#[test]
fn cluster_bench_times_the_redis_hop_and_one_worker_against_two() {
    let started = std::time::Instant::now();
    let out = onpyrunner()
        .args([
            "cluster-bench",
            "--quick",
            "--runs",
            "3",
            "--seconds",
            "1",
            "--callers",
            "1,3",
        ])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}\n{report}");
    // Three runs on each path, none failed, every figure a positive number of ms.
    for path in ["| local |", "| through Redis |"] {
        let cells = row_numbers(&report, path);
        assert_eq!(cells[0], Some(3.0), "{path} {cells:?}");
        assert!(
            cells[1..].iter().all(|c| c.is_some_and(|ms| ms > 0.0)),
            "{path} {cells:?}"
        );
    }
    assert!(report.contains("The hop costs "), "{report}");
    // Each setup at each level completed runs and failed none; a ratio to local.
    for setup in [
        "local engine, no Redis",
        "Redis, 1 worker",
        "Redis, 2 workers",
    ] {
        for callers in [1, 3] {
            let cells = row_numbers(&report, &format!("| {setup} | {callers} |"));
            assert!(cells[0].is_some_and(|n| n >= 1.0), "{setup} {cells:?}");
            assert_eq!(cells[1], Some(0.0), "none failed: {setup} {cells:?}");
            assert!(cells[2].is_some_and(|r| r > 0.0), "{setup} {cells:?}");
        }
    }
    assert!(report.contains("same Docker daemon"), "{report}");
    assert!(
        stderr.contains("bench: shutting down the API node, the workers and the engines"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
}

/// What the server under test logged, but for the warning that another live supervisor uses
/// uids of its range: the other test of this file runs its own server, on the default range,
/// at the same time.
fn complaints(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|line| line.starts_with("serve: "))
        .filter(|line| !line.contains("run as uids of this one's range"))
        .collect()
}

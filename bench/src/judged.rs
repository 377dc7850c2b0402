//! Judged runs: an A+B solution judged on ten tests against the same run on one test, through
//! the pool, run by run, so that each figure is a ratio measured in the same minutes. All the
//! tests run in the run's container (the launcher's `judge.rs`): each a fresh process, a fork of
//! the fork server (CPython, PyPy), or in the warm JVM (Java) or the judge process (Node).
use crate::engines::wait_full;
use crate::plan::{progress, Plan, RUN_TIMEOUT};
use crate::stats::Quantiles;
use onpyrunner_languages::Language;
use onpyrunner_protocol::judge::{CompareMode, Verdict};
use onpyrunner_protocol::{Event, Summary};
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::judging::{JudgeSpec, TestCase};
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::RunSpec;
use std::fmt::Write;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Rounds per language at most (a round is one run of each kind).
pub const ROUNDS: usize = 20;
/// Tests of the many-test run.
pub const MANY: usize = 10;
/// What the issue asks: ten tests at most twice one test.
pub const TARGET_RATIO: f64 = 2.0;

/// One language's figures.
#[derive(Debug, Clone, Default)]
pub struct JudgedRow {
    pub id: String,
    pub one: Option<Quantiles>,
    pub many: Option<Quantiles>,
    pub rounds: usize,
    pub failures: Vec<String>,
}

impl JudgedRow {
    /// p50 of ten tests over p50 of one.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.many?.p50 / self.one?.p50)
    }
}

/// An A+B solution reading two integers from stdin; `None` for a language without one here.
pub fn a_plus_b(lang: &Language) -> Option<&'static str> {
    Some(match lang.id.as_str() {
        "python" | "pypy" => "a, b = map(int, input().split())\nprint(a + b)\n",
        "node" => {
            "const [a, b] = require('fs').readFileSync(0, 'utf8').trim().split(/\\s+/).map(Number);\nconsole.log(a + b);\n"
        }
        "java" => {
            "import java.util.*;\npublic class Main {\n    public static void main(String[] args) {\n        Scanner in = new Scanner(System.in);\n        System.out.println(in.nextLong() + in.nextLong());\n    }\n}\n"
        }
        "c" => "#include <stdio.h>\nint main(void) {\n    long a, b;\n    scanf(\"%ld %ld\", &a, &b);\n    printf(\"%ld\\n\", a + b);\n}\n",
        "cpp" => "#include <bits/stdc++.h>\nint main() {\n    long long a, b;\n    std::cin >> a >> b;\n    std::cout << a + b << '\\n';\n}\n",
        "rust" => "use std::io::Read;\nfn main() {\n    let mut s = String::new();\n    std::io::stdin().read_to_string(&mut s).unwrap();\n    let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();\n    println!(\"{}\", v[0] + v[1]);\n}\n",
        "go" => "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tvar a, b int64\n\tfmt.Scan(&a, &b)\n\tfmt.Println(a + b)\n}\n",
        _ => return None,
    })
}

/// The judged A+B run of `lang` on `tests` tests.
pub fn spec(lang: &'static Language, tests: usize) -> Option<RunSpec> {
    let mut spec = RunSpec::single(
        lang,
        a_plus_b(lang)?,
        Limits::defaults(lang, &Caps::default()),
    );
    spec.judge = Some(JudgeSpec {
        tests: (0..tests)
            .map(|i| TestCase {
                input: format!("{i} {}\n", i * 7).into_bytes(),
                expected: Some(format!("{}\n", i * 8).into_bytes()),
            })
            .collect(),
        compare: CompareMode::Lines,
    });
    Some(spec)
}

/// One judged run through `engine`: its completion time, if every test was accepted.
pub async fn judged_run(engine: &Engine, spec: RunSpec) -> Result<Duration, String> {
    accepted_run(engine, spec).await.map(|(elapsed, _)| elapsed)
}

/// One judged run through `engine`: its completion time and its summary, if every test was
/// accepted.
pub async fn accepted_run(engine: &Engine, spec: RunSpec) -> Result<(Duration, Summary), String> {
    let begin = Instant::now();
    let mut session = engine.submit(spec).map_err(|e| e.to_string())?;
    session.close_stdin();
    loop {
        let event = timeout(RUN_TIMEOUT, session.events.recv())
            .await
            .map_err(|_| format!("no summary within {RUN_TIMEOUT:?}"))?
            .ok_or("the events ended without a summary")?;
        if let Event::Summary(summary) = event {
            let elapsed = begin.elapsed();
            let judged = summary.judge.as_ref().ok_or("not judged")?;
            if judged.verdict != Some(Verdict::Accepted) {
                return Err(format!("not accepted: {}", brief(&summary)));
            }
            return Ok((elapsed, summary));
        }
    }
}

/// What a failed run's summary says, short enough for a table cell: the reason, the verdict
/// and the error (the summary whole holds every test's usage).
fn brief(s: &Summary) -> String {
    let verdict = s.judge.as_ref().and_then(|j| j.verdict);
    format!(
        "{:?}, verdict {verdict:?}, stage {:?}, exit {:?}, signal {:?}{}",
        s.reason,
        s.usage.stage,
        s.usage.exit_code,
        s.usage.signal,
        s.error
            .as_deref()
            .map_or(String::new(), |e| format!(", {e}"))
    )
}

/// Ten tests against one for `lang`, through the pool (full before each run).
pub async fn measure(plan: &Plan, pooled: &Engine, lang: &'static Language) -> Option<JudgedRow> {
    let one = spec(lang, 1)?;
    let many = spec(lang, MANY)?;
    let mut row = JudgedRow {
        id: lang.id.clone(),
        ..JudgedRow::default()
    };
    let rounds = plan.runs.min(ROUNDS);
    progress(&format!(
        "{}: {rounds} rounds of judged A+B, 1 test and {MANY} tests",
        lang.id
    ));
    let (mut ones, mut manys) = (Vec::new(), Vec::new());
    for _ in 0..plan.warmups.min(1) {
        let _ = wait_full(pooled, Some(&lang.id)).await;
        let _ = judged_run(pooled, one.clone()).await;
    }
    for _ in 0..rounds {
        if plan.late() {
            break;
        }
        for (spec, samples) in [(&one, &mut ones), (&many, &mut manys)] {
            let _ = wait_full(pooled, Some(&lang.id)).await;
            match judged_run(pooled, spec.clone()).await {
                Ok(d) => samples.push(d),
                Err(e) => row.failures.push(e),
            }
        }
        row.rounds += 1;
    }
    row.one = Quantiles::of(&ones);
    row.many = Quantiles::of(&manys);
    Some(row)
}

/// The section's Markdown.
pub fn render(rows: &[JudgedRow]) -> String {
    let mut o = String::new();
    if rows.is_empty() {
        return o;
    }
    let _ = writeln!(o, "## Judged runs: {MANY} tests against one\n");
    let _ = writeln!(
        o,
        "An A+B solution judged on one test and on {MANY} tests (each compared with its \
         expected output), through the pool, run by run; from submit to the summary. Every \
         test runs in the run's own container, in the work directory as the compile left it: \
         a fresh process each for the compiled languages, a fork of the fork server for \
         CPython and PyPy, in the warm JVM for Java and in the judge process for Node. \
         Target: {MANY} tests take at most {TARGET_RATIO}x one test (p50).\n"
    );
    let _ = writeln!(
        o,
        "| Language | 1 test p50 / p90 / p99 (ms) | {MANY} tests p50 / p90 / p99 (ms) | Ratio (p50) | Target | Rounds |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let q = |q: Option<Quantiles>| match q {
        Some(q) => format!("{:.0} / {:.0} / {:.0}", q.p50, q.p90, q.p99),
        None => "-".into(),
    };
    for r in rows {
        let (ratio, met) = match r.ratio() {
            Some(x) => (
                format!("{x:.2}"),
                if x <= TARGET_RATIO {
                    "met"
                } else {
                    "**not met**"
                },
            ),
            None => ("-".into(), "not measured"),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {ratio} | {met} | {}{} |",
            r.id,
            q(r.one),
            q(r.many),
            r.rounds,
            crate::stats::failures_note(&r.failures)
        );
    }
    let _ = writeln!(o);
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_of_the_medians_and_the_table_says_whether_the_target_is_met() {
        let row = |id: &str, one: f64, many: f64| JudgedRow {
            id: id.into(),
            one: Some(Quantiles {
                p50: one,
                p90: one,
                p99: one,
            }),
            many: Some(Quantiles {
                p50: many,
                p90: many,
                p99: many,
            }),
            rounds: 3,
            failures: vec![],
        };
        let rows = [row("python", 20.0, 30.0), row("java", 100.0, 1200.0)];
        assert_eq!(rows[0].ratio(), Some(1.5));
        let md = render(&rows);
        assert!(
            md.contains("| python | 20 / 20 / 20 | 30 / 30 / 30 | 1.50 | met | 3 |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| java | 100 / 100 / 100 | 1200 / 1200 / 1200 | 12.00 | **not met** | 3 |"
            ),
            "{md}"
        );
        assert!(render(&[]).is_empty());
    }
}

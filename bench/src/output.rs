//! 100,000 printed lines: a judged run through the engine against the same program run on the
//! image's root filesystem with `chroot` and no container ([`crate::rootfs`]), taking turns run
//! by run. Each language's program writes its output as competitive programmers write fast
//! output there, so the ratio is what the sandbox (the launcher's pipes, the attach stream,
//! the judge's capture and comparison) costs a program that prints a lot.
use crate::engines::wait_full;
use crate::judged::accepted_run;
use crate::plan::{progress, Plan, RUN_TIMEOUT};
use crate::rootfs::{Rootfs, Scratch};
use crate::stats::Quantiles;
use onpyrunner_languages::Language;
use onpyrunner_protocol::judge::CompareMode;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::judging::{JudgeSpec, TestCase};
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::RunSpec;
use std::fmt::Write;
use std::time::{Duration, Instant};

/// Lines printed: the numbers 0 to LINES - 1, one per line.
pub const LINES: usize = 100_000;
/// Rounds per language at most (a round is one run inside and one outside).
pub const ROUNDS: usize = 20;

/// What every program prints.
pub fn expected() -> String {
    let mut s = String::with_capacity(6 * LINES);
    for i in 0..LINES {
        let _ = writeln!(s, "{i}");
    }
    s
}

/// The program printing [`expected`], as fast output is written in the language; `None` for
/// a language without one here.
pub fn program(lang: &Language) -> Option<&'static str> {
    Some(match lang.id.as_str() {
        "python" | "pypy" => "for i in range(100000):\n    print(i)\n",
        "node" => {
            "const out = [];\nfor (let i = 0; i < 100000; i++) out.push(i);\nprocess.stdout.write(out.join('\\n') + '\\n');\n"
        }
        "java" => {
            "import java.io.*;\n\npublic class Main {\n    public static void main(String[] args) {\n        PrintWriter out = new PrintWriter(new BufferedWriter(new OutputStreamWriter(System.out)));\n        for (int i = 0; i < 100000; i++) out.println(i);\n        out.flush();\n    }\n}\n"
        }
        "c" => "#include <stdio.h>\nint main(void) {\n    for (int i = 0; i < 100000; i++) printf(\"%d\\n\", i);\n    return 0;\n}\n",
        "cpp" => {
            "#include <bits/stdc++.h>\nusing namespace std;\nint main() {\n    ios::sync_with_stdio(false);\n    cin.tie(nullptr);\n    for (int i = 0; i < 100000; i++) cout << i << '\\n';\n}\n"
        }
        "rust" => {
            "use std::io::{BufWriter, Write};\nfn main() {\n    let stdout = std::io::stdout();\n    let mut out = BufWriter::new(stdout.lock());\n    for i in 0..100000 {\n        writeln!(out, \"{}\", i).unwrap();\n    }\n}\n"
        }
        "go" => {
            "package main\n\nimport (\n\t\"bufio\"\n\t\"fmt\"\n\t\"os\"\n)\n\nfunc main() {\n\tw := bufio.NewWriter(os.Stdout)\n\tdefer w.Flush()\n\tfor i := 0; i < 100000; i++ {\n\t\tfmt.Fprintln(w, i)\n\t}\n}\n"
        }
        _ => return None,
    })
}

/// One language's figures.
#[derive(Debug, Clone, Default)]
pub struct OutputRow {
    pub id: String,
    /// The test's wall time as the launcher measured it (spawn to exit).
    pub test: Option<Quantiles>,
    /// The whole judged run, from submit to the summary (the compile included).
    pub completion: Option<Quantiles>,
    /// The same program in a chroot of the image, spawn to exit with stdout read whole.
    pub outside: Option<Quantiles>,
    /// Why the outside runs were not measured, when they were not.
    pub not_measured: Option<String>,
    pub rounds: usize,
    pub failures: Vec<String>,
}

impl OutputRow {
    /// p50 of the test's wall time inside over p50 of the run outside.
    pub fn ratio(&self) -> Option<f64> {
        Some(self.test?.p50 / self.outside?.p50)
    }
}

/// The judged run of [`program`] with one test expecting [`expected`].
pub fn spec(lang: &'static Language, expected: &str) -> Option<RunSpec> {
    let mut spec = RunSpec::single(
        lang,
        program(lang)?,
        Limits::defaults(lang, &Caps::default()),
    );
    spec.judge = Some(JudgeSpec {
        tests: vec![TestCase {
            input: Vec::new(),
            expected: Some(expected.as_bytes().to_vec()),
        }],
        compare: CompareMode::Lines,
    });
    Some(spec)
}

/// `lang`'s runs inside (through the pool, full before each run) and outside (a chroot of its
/// image, unpacked under `scratch`), taking turns; what the time bounds cut is noted in `cut`.
pub async fn measure(
    plan: &Plan,
    docker: &Docker,
    pooled: &Engine,
    scratch: &Scratch,
    lang: &'static Language,
    cut: &mut Vec<String>,
) -> Option<OutputRow> {
    let expected = expected();
    let spec = spec(lang, &expected)?;
    let mut row = OutputRow {
        id: lang.id.clone(),
        ..OutputRow::default()
    };
    if plan.late() {
        cut.push(format!(
            "{}: {LINES} lines not measured (the total time bound, --max-minutes)",
            lang.id
        ));
        return None;
    }
    progress(&format!(
        "{}: unpacking its image for the runs outside the sandbox",
        lang.id
    ));
    let tree = match outside_tree(docker, scratch, lang, &plan.owner("export")).await {
        Ok(tree) => Some(tree),
        Err(e) => {
            progress(&format!("{}: not measured outside: {e}", lang.id));
            row.not_measured = Some(e);
            None
        }
    };
    let rounds = plan.runs.min(ROUNDS);
    progress(&format!(
        "{}: {rounds} rounds of {LINES} lines, inside and outside",
        lang.id
    ));
    let (mut tests, mut completions, mut outsides) = (Vec::new(), Vec::new(), Vec::new());
    let check = |out: &[u8]| {
        if out == expected.as_bytes() {
            Ok(())
        } else {
            Err(format!(
                "outside: {} bytes of output, not the {} expected",
                out.len(),
                expected.len()
            ))
        }
    };
    for _ in 0..plan.warmups.min(1) {
        let _ = wait_full(pooled, Some(&lang.id)).await;
        let _ = accepted_run(pooled, spec.clone()).await;
        if let Some(tree) = &tree {
            let _ = tree.time_run(lang, RUN_TIMEOUT).await;
        }
    }
    let budget = Instant::now() + plan.lang_budget;
    for i in 0..rounds {
        if plan.late() || Instant::now() >= budget {
            cut.push(format!(
                "{}: {LINES} lines stopped after {i} of {rounds} rounds ({})",
                lang.id,
                plan.cut_reason()
            ));
            break;
        }
        let _ = wait_full(pooled, Some(&lang.id)).await;
        match accepted_run(pooled, spec.clone()).await {
            Ok((elapsed, summary)) => {
                completions.push(elapsed);
                match summary.judge.as_ref().and_then(|j| j.tests.first()) {
                    Some(t) => tests.push(Duration::from_millis(t.usage.wall_ms)),
                    None => row.failures.push("inside: no test in the summary".into()),
                }
            }
            Err(e) => row.failures.push(format!("inside: {e}")),
        }
        if let Some(tree) = &tree {
            match tree.time_run(lang, RUN_TIMEOUT).await {
                Ok((elapsed, out)) => match check(&out) {
                    Ok(()) => outsides.push(elapsed),
                    Err(e) => row.failures.push(e),
                },
                Err(e) => row.failures.push(format!("outside: {e}")),
            }
        }
        row.rounds += 1;
    }
    // Unmounts /proc and removes the tree now, not at the end: Java's is most of a GB.
    drop(tree);
    row.test = Quantiles::of(&tests);
    row.completion = Quantiles::of(&completions);
    row.outside = Quantiles::of(&outsides);
    Some(row)
}

/// `lang`'s image unpacked, [`program`] written into its `/work` and compiled there.
async fn outside_tree(
    docker: &Docker,
    scratch: &Scratch,
    lang: &'static Language,
    owner: &str,
) -> Result<Rootfs, String> {
    let tree = Rootfs::unpack(docker, lang, scratch.tree(lang), owner).await?;
    tree.write_source(&lang.source_file, program(lang).unwrap_or_default())?;
    tree.compile(lang).await?;
    Ok(tree)
}

/// The section's Markdown.
pub fn render(rows: &[OutputRow]) -> String {
    let mut o = String::new();
    if rows.is_empty() {
        return o;
    }
    let _ = writeln!(
        o,
        "## {LINES} printed lines: inside the sandbox and outside\n"
    );
    let _ = writeln!(
        o,
        "Per language, a program printing the numbers 0 to {} one per line as fast output is \
         written there (Python `print` in a loop, buffered as the table runs it; Node.js one \
         joined string written once; Java a `PrintWriter` over a `BufferedWriter`; C `printf`; \
         C++ `cout` with `sync_with_stdio(false)` and `'\\n'`; Rust a locked `BufWriter` with \
         `writeln!`; Go a `bufio.Writer`). **Inside**: a judged run through the pool with one \
         test whose expected output is exactly those lines (every counted run accepted); \
         **test** is the test's wall time as the launcher measured it (spawn to exit), \
         **completion** the whole run from submit to the summary (the compile included). \
         CPython's and PyPy's tests are forks of an interpreter the launcher started once \
         (their judge fork server), Java's run in the warm JVM and Node's in the judge process \
         started with the pooled container, so their test time has no interpreter start-up in \
         it, which the outside run has. **Outside**: the same program run by the table's run \
         command on the image's root filesystem with `chroot` (exported through the Engine \
         API, compiled there with the table's compile command; no container, no limits, \
         `/proc` mounted, the container's environment; the program sees the host's CPUs and \
         memory, by which a JVM sizes its threads and heap, where inside it sees the \
         container's), from spawn (`chroot` and `sh` \
         included, a few ms) to exit with its stdout read whole from a pipe by the bench and \
         checked. The two take turns run by run. Ratio: test p50 over outside p50.\n",
        LINES - 1
    );
    let _ = writeln!(
        o,
        "| Language | Test p50 / p90 / p99 (ms) | Completion p50 / p90 / p99 (ms) | Outside p50 / p90 / p99 (ms) | Ratio (p50) | Rounds |"
    );
    let _ = writeln!(o, "|---|---|---|---|---|---|");
    let q = |q: Option<Quantiles>| match q {
        Some(q) => format!("{:.0} / {:.0} / {:.0}", q.p50, q.p90, q.p99),
        None => "-".into(),
    };
    for r in rows {
        let outside = match (&r.not_measured, r.outside) {
            (Some(why), _) => format!("not measured: {}", why.replace(['\n', '|'], " ")),
            (None, outside) => q(outside),
        };
        let _ = writeln!(
            o,
            "| {} | {} | {} | {outside} | {} | {}{} |",
            r.id,
            q(r.test),
            q(r.completion),
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
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

    fn q(v: f64) -> Option<Quantiles> {
        Some(Quantiles {
            p50: v,
            p90: v + 1.0,
            p99: v + 2.0,
        })
    }

    #[test]
    fn the_expected_output_is_every_number_on_its_own_line() {
        let e = expected();
        assert_eq!(e.lines().count(), LINES);
        assert!(e.starts_with("0\n1\n2\n"));
        assert!(e.ends_with("\n99999\n"));
        assert_eq!(e.len(), 588_890);
    }

    #[test]
    fn every_language_of_the_table_has_a_program() {
        for lang in onpyrunner_languages::languages() {
            assert!(program(lang).is_some(), "{}", lang.id);
        }
    }

    #[test]
    fn the_ratio_is_test_over_outside_and_a_row_not_measured_says_why() {
        let rows = [
            OutputRow {
                id: "python".into(),
                test: q(60.0),
                completion: q(90.0),
                outside: q(40.0),
                rounds: 5,
                ..OutputRow::default()
            },
            OutputRow {
                id: "java".into(),
                test: q(300.0),
                completion: q(500.0),
                not_measured: Some("cannot mount /proc in the tree: permission denied".into()),
                rounds: 5,
                failures: vec!["inside: not accepted".into()],
                ..OutputRow::default()
            },
        ];
        assert_eq!(rows[0].ratio(), Some(1.5));
        assert_eq!(rows[1].ratio(), None);
        let md = render(&rows);
        assert!(
            md.contains("| python | 60 / 61 / 62 | 90 / 91 / 92 | 40 / 41 / 42 | 1.50 | 5 |"),
            "{md}"
        );
        assert!(
            md.contains("| java | 300 / 301 / 302 | 500 / 501 / 502 | not measured: cannot mount /proc in the tree: permission denied | - | 5 (1 failed: inside: not accepted) |"),
            "{md}"
        );
        assert!(render(&[]).is_empty());
    }
}

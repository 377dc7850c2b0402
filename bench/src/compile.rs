//! C++ compile time with the image's precompiled headers and without: an A+B program with
//! `<bits/stdc++.h>` and with `<iostream>`, each as written and with a declaration before the
//! include (GCC uses a `.gch` only before the first token of the program, so the header is then
//! read again). Through the engine, a judged run of one test each, taking turns; the figures
//! are the summary's compile usage (the launcher's wall time and peak memory of the compile).
use crate::judged::accepted_run;
use crate::plan::{progress, Plan};
use crate::stats::Quantiles;
use onpyrunner_languages::Language;
use onpyrunner_protocol::judge::CompareMode;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::judging::{JudgeSpec, TestCase};
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::RunSpec;
use std::fmt::Write;
use std::time::Duration;

/// The language measured.
pub const LANGUAGE: &str = "cpp";
/// Rounds at most (a round is one compile of each variant).
pub const ROUNDS: usize = 10;
/// The memory limit of every variant's run: read again, `<bits/stdc++.h>` needs more than
/// C++'s default 256 MiB to compile, and the compiler is killed there.
pub const MEMORY_MIB: u64 = 1024;
/// The first line that makes GCC skip the precompiled header.
pub const NO_PCH: &str = "int onpyrunner_no_pch;\n";

/// One program compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub header: &'static str,
    /// Whether the image's `.gch` is used (no declaration before the include).
    pub pch: bool,
}

pub const VARIANTS: [Variant; 4] = [
    Variant {
        header: "bits/stdc++.h",
        pch: true,
    },
    Variant {
        header: "bits/stdc++.h",
        pch: false,
    },
    Variant {
        header: "iostream",
        pch: true,
    },
    Variant {
        header: "iostream",
        pch: false,
    },
];

impl Variant {
    /// The A+B program of this variant.
    pub fn source(self) -> String {
        format!(
            "{}#include <{}>\nint main() {{\n    long long a, b;\n    std::cin >> a >> b;\n    std::cout << a + b << '\\n';\n}}\n",
            if self.pch { "" } else { NO_PCH },
            self.header
        )
    }
}

/// One variant's figures.
#[derive(Debug, Clone, Default)]
pub struct CompileRow {
    pub header: &'static str,
    pub pch: bool,
    /// The compile stage's wall time, as the launcher measured it.
    pub wall: Option<Quantiles>,
    /// Peak resident memory of the compile's largest process (cc1plus), p50, in KiB.
    pub memory_kib: Option<u64>,
    pub runs: usize,
    pub failures: Vec<String>,
}

/// p50 without the `.gch` over p50 with it, for `header`.
pub fn ratio(rows: &[CompileRow], header: &str) -> Option<f64> {
    let p50 = |pch: bool| {
        rows.iter()
            .find(|r| r.header == header && r.pch == pch)?
            .wall
            .map(|q| q.p50)
    };
    Some(p50(false)? / p50(true)?)
}

fn spec(lang: &'static Language, variant: Variant) -> RunSpec {
    let mut limits = Limits::defaults(lang, &Caps::default());
    limits.memory_mib = MEMORY_MIB;
    let mut spec = RunSpec::single(lang, variant.source(), limits);
    spec.judge = Some(JudgeSpec {
        tests: vec![TestCase {
            input: b"1 2\n".to_vec(),
            expected: Some(b"3\n".to_vec()),
        }],
        compare: CompareMode::Lines,
    });
    spec
}

/// The four variants through `engine`, round by round; what the time bound cut is noted in
/// `cut`.
pub async fn measure(
    plan: &Plan,
    engine: &Engine,
    lang: &'static Language,
    cut: &mut Vec<String>,
) -> Vec<CompileRow> {
    let rounds = plan.runs.min(ROUNDS);
    progress(&format!(
        "{}: {rounds} rounds of compiles with and without the precompiled headers",
        lang.id
    ));
    let mut samples: Vec<(Vec<Duration>, Vec<u64>, Vec<String>)> =
        VARIANTS.iter().map(|_| Default::default()).collect();
    for _ in 0..plan.warmups.min(1) {
        for v in VARIANTS {
            let _ = accepted_run(engine, spec(lang, v)).await;
        }
    }
    for i in 0..rounds {
        if plan.late() {
            cut.push(format!(
                "{}: compiles stopped after {i} of {rounds} rounds (the total time bound, --max-minutes)",
                lang.id
            ));
            break;
        }
        for (v, (walls, memory, failures)) in VARIANTS.iter().zip(&mut samples) {
            match accepted_run(engine, spec(lang, *v)).await {
                Ok((_, summary)) => match summary.compile {
                    Some(usage) => {
                        walls.push(Duration::from_millis(usage.wall_ms));
                        memory.push(usage.memory_kib);
                    }
                    None => failures.push("no compile usage in the summary".into()),
                },
                Err(e) => failures.push(e),
            }
        }
    }
    VARIANTS
        .iter()
        .zip(samples)
        .map(|(v, (walls, mut memory, failures))| {
            memory.sort_unstable();
            CompileRow {
                header: v.header,
                pch: v.pch,
                wall: Quantiles::of(&walls),
                memory_kib: memory.get(memory.len().saturating_sub(1) / 2).copied(),
                runs: walls.len(),
                failures,
            }
        })
        .collect()
}

/// The section's Markdown.
pub fn render(rows: &[CompileRow]) -> String {
    let mut o = String::new();
    if rows.is_empty() {
        return o;
    }
    let _ = writeln!(o, "## C++ compile time: the precompiled headers\n");
    let _ = writeln!(
        o,
        "An A+B program (`std::cin`, `std::cout`) with `#include <bits/stdc++.h>` or \
         `#include <iostream>`, compiled by the table's compile command in the C++ image; \
         **.gch used** is the program as written, **.gch skipped** the same with \
         `{}` as its first line (GCC uses a precompiled header only before the program's \
         first token, so the header is read again). Each is a judged run of one test through \
         the engine (memory limit {MEMORY_MIB} MiB for all four, since without its `.gch` \
         `<bits/stdc++.h>` needs more than C++'s default 256 MiB to compile; so each run makes \
         a fresh container, which is not in the figures), the four taking turns; the figures \
         are the summary's compile usage: the compile stage's wall time and the peak resident \
         memory of its largest process (cc1plus, into which the `.gch` is mapped: its pages \
         count), as the launcher measured them.\n",
        NO_PCH.trim_end()
    );
    let _ = writeln!(
        o,
        "| Header | .gch | Runs | Compile p50 (ms) | p90 | Peak memory p50 (MiB) |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            o,
            "| `<{}>` | {} | {}{} | {} | {} | {} |",
            r.header,
            if r.pch { "used" } else { "skipped" },
            r.runs,
            crate::stats::failures_note(&r.failures),
            r.wall.map_or("-".into(), |q| format!("{:.0}", q.p50)),
            r.wall.map_or("-".into(), |q| format!("{:.0}", q.p90)),
            r.memory_kib
                .map_or("-".into(), |k| format!("{:.0}", k as f64 / 1024.0)),
        );
    }
    let _ = writeln!(o);
    let ratios: Vec<String> = ["bits/stdc++.h", "iostream"]
        .iter()
        .filter_map(|h| Some(format!("`<{h}>` {:.1}x", ratio(rows, h)?)))
        .collect();
    if !ratios.is_empty() {
        let _ = writeln!(
            o,
            "Compile p50 with the `.gch` skipped over with it used: {}.\n",
            ratios.join(", ")
        );
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variant_without_the_pch_declares_something_before_the_include() {
        let with = VARIANTS[0].source();
        let without = VARIANTS[1].source();
        assert!(with.starts_with("#include <bits/stdc++.h>\n"), "{with}");
        assert!(without.starts_with(NO_PCH), "{without}");
        assert_eq!(&without[NO_PCH.len()..], with);
        assert!(VARIANTS[3].source().contains("#include <iostream>\n"));
    }

    #[test]
    fn the_ratio_is_without_over_with_and_the_table_shows_every_variant() {
        let row = |header, pch, p50: f64, mib: u64| CompileRow {
            header,
            pch,
            wall: Some(Quantiles {
                p50,
                p90: p50 + 10.0,
                p99: p50 + 20.0,
            }),
            memory_kib: Some(mib * 1024),
            runs: 4,
            failures: vec![],
        };
        let rows = [
            row("bits/stdc++.h", true, 700.0, 75),
            row("bits/stdc++.h", false, 2100.0, 258),
            row("iostream", true, 300.0, 40),
            CompileRow {
                failures: vec!["not accepted".into()],
                ..row("iostream", false, 600.0, 63)
            },
        ];
        assert_eq!(ratio(&rows, "bits/stdc++.h"), Some(3.0));
        assert_eq!(ratio(&rows, "iostream"), Some(2.0));
        assert_eq!(ratio(&rows[..1], "bits/stdc++.h"), None);
        let md = render(&rows);
        assert!(
            md.contains("| `<bits/stdc++.h>` | used | 4 | 700 | 710 | 75 |"),
            "{md}"
        );
        assert!(
            md.contains("| `<bits/stdc++.h>` | skipped | 4 | 2100 | 2110 | 258 |"),
            "{md}"
        );
        assert!(
            md.contains("| `<iostream>` | skipped | 4 (1 failed: not accepted) | 600 | 610 | 63 |"),
            "{md}"
        );
        assert!(
            md.contains("`<bits/stdc++.h>` 3.0x, `<iostream>` 2.0x"),
            "{md}"
        );
        assert!(render(&[]).is_empty());
    }
}

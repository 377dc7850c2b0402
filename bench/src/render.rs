//! The Markdown report of a bench run: the figures, the targets, and why a missed target is
//! missed, from the same run's breakdown.
use crate::machine::kib_to_mb;
use crate::paths::{raw_command, shell_script};
use crate::plan::{CONCURRENCY, THROUGHPUT_LANGUAGE};
use crate::report::{
    Breakdown, LanguageReport, Path, Report, Target, Variant, JAVA_RATIO, THROUGHPUT_PERCENT,
};
use crate::stats::{p50_ms, Quantiles};
use std::fmt::Write as _;
use std::time::Duration;

fn ms(q: Option<Quantiles>, pick: fn(&Quantiles) -> f64) -> String {
    q.map_or("-".into(), |q| format!("{:.1}", pick(&q)))
}

fn cell(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

/// The Markdown report.
pub fn render(r: &Report) -> String {
    let mut o = String::new();
    let m = &r.machine;
    let _ = writeln!(o, "# Benchmarks\n");
    let _ = writeln!(
        o,
        "Made by `{}` on {}, in {:.0} s. Re-run it to refresh this file; every figure below \
         comes from that one run.\n",
        r.command,
        m.date,
        r.total.as_secs_f64()
    );
    let _ = writeln!(o, "## Machine\n");
    let _ = writeln!(o, "| | |\n|---|---|");
    let _ = writeln!(o, "| CPU | {} ({} cores) |", m.cpu, m.cores);
    let _ = writeln!(o, "| Memory | {} MiB |", m.memory_mib);
    let _ = writeln!(o, "| Docker | {} |", m.docker);
    let _ = writeln!(o, "| Kernel | {} |", m.kernel);
    let _ = writeln!(
        o,
        "| Load average (1, 5, 15 min) at start | {} |",
        m.load_start
    );
    let _ = writeln!(o, "| Load average at end | {} |", m.load_end);
    let _ = writeln!(
        o,
        "| Other containers on the daemon at start | {} |\n",
        m.other_containers
    );
    let busy = m
        .load_start
        .split_whitespace()
        .next()
        .and_then(|l| l.parse::<f64>().ok())
        .is_some_and(|l| l >= 0.5)
        || m.other_containers > 0;
    if busy {
        let _ = writeln!(
            o,
            "Measured on a shared, busy machine (see the load and the other containers above): \
             other people's tests and benchmarks ran on the same cores and the same daemon, so \
             the tails (p90, p99) in particular are noisy.\n"
        );
    }

    // The language whose commands illustrate the `docker run` baseline.
    let example = r
        .languages
        .first()
        .and_then(|l| onpyrunner_languages::find(&l.id));
    let throughput = onpyrunner_languages::find(THROUGHPUT_LANGUAGE);
    let _ = writeln!(o, "## Latency: hello world, one run at a time\n");
    let _ = writeln!(
        o,
        "From submit to the first output byte and to completion (the engine's `Summary`; for \
         `docker run`, the client's exit), in ms, {} runs per row. The three paths take turns \
         run by run. **pool**: the engine with the language's pool, full before each run (every \
         run a pool hit). **fresh container**: the same engine code with no pool (every run \
         creates, attaches, starts and removes its container). **docker run**: `docker run --rm \
         -i` with the same limits and lock-down (`container::container_config` turned into CLI \
         flags), the table's commands on a file fed through stdin (`sh -c '{}'`).\n",
        r.runs,
        example.map_or("cat > FILE && exec RUN".into(), |l| shell_script(l)
            .replace('\'', "")),
    );
    let _ = writeln!(
        o,
        "| Language | Path | Runs | First byte p50 | p90 | p99 | Completion p50 | p90 | p99 |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.languages {
        for path in Path::ALL {
            let Some(lat) = l.paths.get(&path) else {
                continue;
            };
            let (fb, done) = l.quantiles(path);
            let failed = if lat.failures.is_empty() {
                String::new()
            } else {
                format!(" ({} failed)", lat.failures.len())
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} |",
                l.id,
                path.label(),
                lat.completion.len(),
                failed,
                ms(fb, |q| q.p50),
                ms(fb, |q| q.p90),
                ms(fb, |q| q.p99),
                ms(done, |q| q.p50),
                ms(done, |q| q.p90),
                ms(done, |q| q.p99),
            );
        }
    }
    let _ = writeln!(o);
    let hits: Vec<String> = r
        .languages
        .iter()
        .map(|l| format!("{} {} hits / {} misses", l.id, l.pool_hits, l.pool_misses))
        .collect();
    let _ = writeln!(
        o,
        "Pool counters over the timed runs: {}.\n",
        hits.join(", ")
    );

    let _ = writeln!(o, "## Where the time goes on the pooled path\n");
    let _ = writeln!(
        o,
        "The pooled path by hand on the supervisor's sandbox API (`run::Sandbox`, \
         `run::run_in_keep`), without the engine: a container made as the pool makes it \
         (create, attach, start, ready, pause, 50 ms paused), then, from just before \
         unpause: the unpause call, the first output byte, the launcher's status trailer (the \
         program has exited and was reaped), the container removed (force). \"Program\" is the \
         run stage's wall time as the launcher measured it (interpreter start to exit). p50 in \
         ms. The engine starts the pool's refill when the run ends (or 300 ms after the claim), \
         so a short run has the machine to itself; the second row of each language makes a \
         container alongside (create, attach, start, pause) to show what overlapping with a \
         refill costs. The third row never pauses its container: the launcher waits blocked \
         on stdin, costing no CPU, and the run starts without an unpause. The last two \
         columns are the engine's pooled p50 minus this path's p50 (first byte, and \
         completion minus the status: the engine sends the `Summary` at the status and \
         removes the container after it): what the engine adds (admission, the claim, tasks \
         and channels).\n"
    );
    let _ = writeln!(
        o,
        "| Language | Container | Runs | Unpause | First byte | Status | Removed | Program | Engine first byte minus this | Engine completion minus this |"
    );
    let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for l in &r.languages {
        let (fb, done) = l.quantiles(Path::Pool);
        for (variant, b) in Variant::ALL.iter().zip(&l.breakdown) {
            let over = |engine: Option<Quantiles>, raw: &[Duration]| {
                cell(engine.zip(p50_ms(raw)).map(|(e, r)| e.p50 - r))
            };
            let _ = writeln!(
                o,
                "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} |",
                l.id,
                variant.label(),
                b.removed.len(),
                if b.failures.is_empty() {
                    String::new()
                } else {
                    format!(" ({} failed)", b.failures.len())
                },
                cell(p50_ms(&b.unpause)),
                cell(p50_ms(&b.first_byte)),
                cell(p50_ms(&b.status)),
                cell(p50_ms(&b.removed)),
                cell(p50_ms(&b.program_wall)),
                over(fb, &b.first_byte),
                over(done, &b.status),
            );
        }
    }
    let _ = writeln!(o);

    o.push_str(&crate::judged::render(&r.judged));
    o.push_str(&crate::output::render(&r.output));
    o.push_str(&crate::compile::render(&r.compile));
    let _ = writeln!(o, "## Throughput\n");
    let _ = writeln!(
        o,
        "Completed {} hello worlds per second through the engine (pool of {} on, at most \
         {} running, queue 1024), each caller submitting its next run when the last one ends, \
         {} s per level; next to it, the daemon's raw lifecycle capacity measured right after \
         with the same number of callers: create+start+wait+remove cycles per second of a \
         container of the same shape (`container::container_config`, the {} image, \
         `{}`) through our raw client.\n",
        throughput.map_or("?", |l| l.name.as_str()),
        throughput.map_or(0, |l| l.pool_size),
        CONCURRENCY.iter().max().unwrap_or(&0),
        r.seconds,
        THROUGHPUT_LANGUAGE,
        throughput.map_or("?".into(), |l| raw_command(l).join(" ")),
    );
    let _ = writeln!(
        o,
        "| Callers | Engine runs/s | Runs (failed) | Pool hits / misses | Raw cycles/s | Cycles (failed) | Engine % of raw |"
    );
    let _ = writeln!(o, "|---:|---:|---:|---:|---:|---:|---:|");
    for t in &r.throughput {
        let _ = writeln!(
            o,
            "| {} | {:.1} | {} ({}) | {} / {} | {:.1} | {} ({}) | {} |",
            t.callers,
            t.engine_rate(),
            t.engine_runs,
            t.engine_failed,
            t.pool_hits,
            t.pool_misses,
            t.raw_rate(),
            t.raw_cycles,
            t.raw_failed,
            t.percent().map_or("-".into(), |p| format!("{p:.0}%"))
        );
    }
    let _ = writeln!(o);

    if !r.bursts.is_empty() {
        let _ = writeln!(o, "## Bursts: five runs a second apart\n");
        let _ = writeln!(
            o,
            "{} hello worlds of one language submitted {} s apart (each run goes on without \
             waiting for the last), {} bursts per pool, each once the pool is full again. \
             **pinned**: the pools at the table's sizes, fixed (the engine above). **demand**: \
             an engine of its own per language with the default policy (`serve` without \
             `--pool`): a pool starts at the table's size, \
             a claim that finds it empty grows it to the claims of the last 10 s, and it shrinks \
             by one per minute without a miss, down to 1. Completion from each run's submission, \
             in ms.\n",
            crate::burst::BURST_RUNS,
            crate::burst::BURST_SPACING.as_secs(),
            crate::burst::BURSTS,
        );
        let _ = writeln!(
            o,
            "| Language | Pools | Burst | Target before | Hits | Misses | Completion p50 | max | Target after | Failed |"
        );
        let _ = writeln!(o, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for b in &r.bursts {
            let max = b.completion.iter().max().map(|d| d.as_secs_f64() * 1000.0);
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                b.language,
                b.pools,
                b.burst,
                b.target_before,
                b.hits,
                b.misses,
                cell(p50_ms(&b.completion)),
                cell(max),
                b.target_after,
                b.failures.len()
            );
        }
        let _ = writeln!(o);
    }

    let _ = writeln!(o, "## Supervisor memory\n");
    let pools: Vec<String> = r
        .memory
        .pools
        .iter()
        .map(|(id, n)| format!("{id} {n}"))
        .collect();
    let _ = writeln!(
        o,
        "VmRSS of the bench process, which is the supervisor (engine, pools, Docker client, \
         tokio runtime), from `/proc/self/status`.\n"
    );
    let _ = writeln!(o, "| When | VmRSS |\n|---|---:|");
    let _ = writeln!(
        o,
        "| Before the engine started | {:.1} MB |",
        kib_to_mb(r.memory.rss_before_kib)
    );
    let _ = writeln!(
        o,
        "| Every pool full ({}) | {:.1} MB |\n",
        pools.join(", "),
        kib_to_mb(r.memory.rss_full_kib)
    );

    let _ = writeln!(o, "## Targets\n");
    let _ = writeln!(o, "| Target | Measured | Met |\n|---|---|---|");
    let targets = r.targets();
    for t in &targets {
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "not measured",
        };
        let _ = writeln!(o, "| {} | {} | {} |", t.what, t.measured, met);
    }
    let _ = writeln!(o);
    let missed: Vec<&Target> = targets.iter().filter(|t| t.met == Some(false)).collect();
    if missed.is_empty() {
        let _ = writeln!(o, "Every measured target is met.\n");
    } else {
        let _ = writeln!(o, "### Why the missed targets are missed\n");
        for line in explain(r, &missed) {
            let _ = writeln!(o, "- {line}");
        }
        let _ = writeln!(o);
    }
    let failures: Vec<String> = r
        .languages
        .iter()
        .flat_map(|l| {
            let latency = l
                .paths
                .iter()
                .map(|(path, lat)| (path.label(), &lat.failures));
            let by_hand = Variant::ALL
                .iter()
                .zip(&l.breakdown)
                .map(|(v, b)| (v.label(), &b.failures));
            latency
                .chain(by_hand)
                .filter(|(_, f)| !f.is_empty())
                .map(move |(what, f)| {
                    format!("{} {what}: {} failed; the first: {}", l.id, f.len(), f[0])
                })
        })
        .collect();
    if !failures.is_empty() {
        let _ = writeln!(o, "## Failed runs\n");
        let _ = writeln!(
            o,
            "Failed runs are left out of the figures above (the daemon restarting or \
             refusing under load shows up here).\n"
        );
        for f in failures {
            let _ = writeln!(o, "- {}", f.replace('\n', " "));
        }
        let _ = writeln!(o);
    }
    if !r.cut.is_empty() {
        let _ = writeln!(o, "## Cut short\n");
        for c in &r.cut {
            let _ = writeln!(o, "- {c}");
        }
        let _ = writeln!(o);
    }
    o
}

/// Why each missed target is missed, from this run's breakdown figures.
fn explain(r: &Report, missed: &[&Target]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut explained: Vec<&str> = Vec::new();
    for t in missed {
        let id = [
            ("CPython", "python"),
            ("PyPy", "pypy"),
            ("Node", "node"),
            ("Java", "java"),
        ]
        .iter()
        .find(|(prefix, _)| t.what.starts_with(prefix))
        .map(|(_, id)| *id);
        if let Some(id) = id {
            if !explained.contains(&id) {
                explained.push(id);
                let whats: Vec<&str> = missed
                    .iter()
                    .filter(|m| {
                        r.language(id)
                            .is_some_and(|l| m.what.starts_with(name_prefix(l)))
                    })
                    .map(|m| m.what.as_str())
                    .collect();
                lines.push(explain_language(r, id, &whats));
            }
        } else if t.what.starts_with("Sustained") {
            for row in &r.throughput {
                let Some(p) = row.percent().filter(|p| *p < THROUGHPUT_PERCENT) else {
                    continue;
                };
                lines.push(format!(
                    "Throughput at {} callers is {p:.0}% of the raw cycle rate ({:.1} vs {:.1} \
                     per second; {} pool hits, {} misses). An engine run costs the daemon more \
                     than a raw cycle: attach, pause and unpause on top of create, start, wait \
                     and remove, plus the output through the attach stream; with more callers \
                     than pooled containers most runs miss and make their container on the \
                     run's path, and the pool refills one container at a time. On 2 cores the \
                     daemon, containerd, the shims and the interpreters all share the same CPUs, \
                     so the extra API calls come straight out of the cycle rate.",
                    row.callers,
                    row.engine_rate(),
                    row.raw_rate(),
                    row.pool_hits,
                    row.pool_misses
                ));
            }
        } else if t.what.starts_with("Supervisor") {
            lines.push(format!(
                "Memory: {:.1} MB before the engine started and {:.1} MB with the pools full.",
                kib_to_mb(r.memory.rss_before_kib),
                kib_to_mb(r.memory.rss_full_kib)
            ));
        }
    }
    lines
}

/// How a language's targets begin ("CPython", "PyPy", "Node.js", "Java").
fn name_prefix(l: &LanguageReport) -> &'static str {
    match l.id.as_str() {
        "python" => "CPython",
        "pypy" => "PyPy",
        "node" => "Node",
        "java" => "Java",
        _ => "\0",
    }
}

fn explain_language(r: &Report, id: &str, whats: &[&str]) -> String {
    let Some(l) = r.language(id) else {
        return format!("{id}: not measured.");
    };
    let (fb, done) = l.quantiles(Path::Pool);
    let (fb, done) = (fb.map_or(0.0, |q| q.p50), done.map_or(0.0, |q| q.p50));
    let p = |b: &Breakdown| {
        Some((
            p50_ms(&b.unpause)?,
            p50_ms(&b.first_byte)?,
            p50_ms(&b.status)?,
            p50_ms(&b.removed)?,
            p50_ms(&b.program_wall)?,
        ))
    };
    let running = p(&l.breakdown[Variant::Running as usize]);
    let (Some(alone), Some(with)) = (
        p(&l.breakdown[Variant::Paused as usize]),
        p(&l.breakdown[Variant::PausedWithRefill as usize]),
    ) else {
        return format!(
            "{} ({}): no breakdown was measured.",
            l.name,
            whats.join("; ")
        );
    };
    let (unpause, first, status, removed, program) = alone;
    let mut text = format!(
        "**{}** ({}). The engine's pooled p50 is {fb:.0} ms to the first byte and {done:.0} ms \
         to completion (the `Summary`, sent at the launcher's status; the container is removed \
         after it). The same path by hand: unpause {unpause:.0} ms; first byte at {first:.0} \
         ms, so {:.0} ms pass inside the container between unpause and the first byte (the \
         launcher reads the frame, writes the file{}, starts the program, which prints); the \
         launcher's status at {status:.0} ms (the run stage took {program:.0} ms by the \
         launcher's clock); the forced removal after it takes {:.0} ms more. With a refill \
         alongside: first byte {:.0} ms and status {:.0} ms, so a refill competing for the 2 \
         cores would cost {:.0} ms and {:.0} ms. The engine itself adds {:.0} ms to the first \
         byte and {:.0} ms to completion.",
        l.name,
        whats.join("; "),
        first - unpause,
        if id == "java" { ", compiles it" } else { "" },
        removed - status,
        with.1,
        with.2,
        with.1 - first,
        with.2 - status,
        fb - first,
        done - status,
    );
    if let Some((_, first_running, _, _, _)) = running {
        let _ = write!(
            text,
            " A container kept running instead of paused (the launcher blocked on stdin) gives \
             the first byte at {first_running:.0} ms instead of {:.0} ms: the unpause is most \
             of the difference.",
            alone.1
        );
    }
    if id == "java" {
        if let Some(docker) = l.quantiles(Path::DockerRun).1 {
            let compile = first - unpause - program;
            let _ = write!(
                text,
                " Half of `docker run`'s {:.0} ms is {:.0} ms; on the pooled path the compile \
                 stage in the warm JVM still takes about {compile:.0} ms before the run stage \
                 begins, and the pool saves {:.0} ms here against `docker run`.",
                docker.p50,
                docker.p50 * JAVA_RATIO,
                docker.p50 - done
            );
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::report;

    #[test]
    fn missed_targets_are_marked_in_the_report() {
        let text = render(&report((30, 61), (500, 1100), 200, 60_000));
        assert!(text.contains("## Targets"), "{text}");
        assert!(text.contains("| **no** |"), "{text}");
        assert!(text.contains("48% at 4"), "{text}");
    }
}

//! `onpyrunner bench`: latency, throughput and memory of the engine in one run, next to the
//! baselines that give the figures a meaning (`docker run`, the daemon's raw lifecycle rate).
//!
//! In order: the pools fill and this process's memory is read with them full (the bench
//! process is the supervisor); then per language the latency on three paths and where the
//! pooled path's time goes ([`crate::latency`], [`crate::breakdown`]); then judged runs (ten
//! tests against one, [`crate::judged`]), 100,000 printed lines inside the sandbox and outside
//! ([`crate::output`]) and C++ compiles with and without the precompiled headers
//! ([`crate::compile`]); then the throughput ([`crate::throughput`]); then bursts of five runs per language through pools pinned and
//! following demand ([`crate::burst`]); then the report ([`crate::render`]).
use crate::engines::{wait_full, Engines};
use crate::machine::{load_average, own_rss_kib, Machine};
use crate::plan::{progress, Plan, CONCURRENCY};
use crate::render::render;
use crate::report::Report;
use crate::rootfs::Scratch;
use crate::section::write_section;
use crate::{burst, compile, judged, latency, output, throughput};
use anyhow::{bail, Context};
use clap::Args;
use onpyrunner_languages::{languages, Language};
use onpyrunner_supervisor::container::LABEL_OWNER;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::EngineConfig;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::run;
use onpyrunner_supervisor::scheduler::Cost;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Measure latency, throughput and memory of the engine against the real daemon and images.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Languages to measure, comma-separated [default: all]
    #[arg(long, value_delimiter = ',', value_name = "IDS")]
    pub langs: Vec<String>,
    /// Timed runs per language and path [default: 100; 5 with --quick]
    #[arg(long, value_name = "N")]
    pub runs: Option<usize>,
    /// Seconds of each throughput measurement [default: 20; 2 with --quick]
    #[arg(long, value_name = "S")]
    pub seconds: Option<u64>,
    /// Write the Markdown report into this file's `bench` section (between `<!-- bench:begin -->`
    /// and `<!-- bench:end -->`; other sections are kept) instead of stdout
    #[arg(long, value_name = "PATH")]
    pub write: Option<PathBuf>,
    /// Few runs and short throughput windows, for smoke tests
    #[arg(long)]
    pub quick: bool,
    /// Stop the timed latency runs of a language after this many seconds, whatever is left
    /// (Java takes about 6 s per round of three paths) [default: 240]
    #[arg(long, value_name = "S", default_value_t = 240)]
    pub lang_seconds: u64,
    /// Stop starting new measurements after this many minutes; what is left is reported as cut
    #[arg(long, value_name = "MINUTES", default_value_t = 25)]
    pub max_minutes: u64,
    /// OCI runtime of every path measured (e.g. runsc, for gVisor), as `serve --runtime`; it
    /// must be registered with the daemon [default: the daemon's default]
    #[arg(long, value_name = "NAME")]
    pub runtime: Option<String>,
}

/// Run the whole bench; `command` is the command line the report says it was made by. The
/// exit code is 0 when every measurement ran (targets met or not).
pub async fn run(docker: &Docker, args: BenchArgs, command: String) -> anyhow::Result<i32> {
    let runs = args.runs.unwrap_or(if args.quick { 5 } else { 100 });
    let seconds = args.seconds.unwrap_or(if args.quick { 2 } else { 20 });
    if runs == 0 || seconds == 0 {
        bail!("--runs and --seconds must be at least 1");
    }
    let selected: Vec<&'static Language> = if args.langs.is_empty() {
        languages().iter().collect()
    } else {
        args.langs
            .iter()
            .map(|id| find_language(id.trim()))
            .collect::<anyhow::Result<_>>()?
    };
    for lang in &selected {
        if docker
            .inspect_image(&images::image_ref(lang))
            .await?
            .is_none()
        {
            bail!(
                "the {} image {} is missing; build it with `onpyrunner images`",
                lang.id,
                images::image_ref(lang)
            );
        }
    }
    let tag = run::random_hex(3);
    let bench = Bench {
        docker: docker.clone(),
        scratch: Scratch::new(&tag),
        plan: Plan {
            tag,
            runs,
            seconds,
            warmups: if args.quick { 1 } else { 3 },
            deadline: Instant::now() + Duration::from_secs(args.max_minutes.max(1) * 60),
            lang_budget: Duration::from_secs(args.lang_seconds.max(1)),
            runtime: args.runtime.clone(),
        },
        selected,
    };
    let mut report = Report {
        command,
        runs,
        seconds,
        ..Report::default()
    };
    let started = Instant::now();
    let engines = Engines::default();
    let measured = tokio::select! {
        r = bench.measure(&mut report, &engines) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    progress("shutting down the engines and removing the bench's containers");
    engines.shutdown().await;
    bench.remove_leftovers().await;
    if let Err(e) = bench.scratch.remove() {
        progress(&format!("left behind: {e}"));
    }
    measured?;
    report.total = started.elapsed();
    report.machine.load_end = load_average();
    let markdown = render(&report);
    match &args.write {
        Some(path) => {
            write_section(path, "bench", &markdown)?;
            progress(&format!("wrote the bench section of {}", path.display()));
        }
        None => print!("{markdown}"),
    }
    Ok(0)
}

/// The language with this id; the error lists the known ones.
fn find_language(id: &str) -> anyhow::Result<&'static Language> {
    onpyrunner_languages::find(id).with_context(|| {
        let ids: Vec<&str> = languages().iter().map(|l| l.id.as_str()).collect();
        format!("unknown language {id:?}; known: {}", ids.join(", "))
    })
}

struct Bench {
    docker: Docker,
    /// Where the image trees of the runs outside the sandbox are unpacked.
    scratch: Scratch,
    plan: Plan,
    selected: Vec<&'static Language>,
}

impl Bench {
    fn config(&self, what: &str, pools: impl Fn(&Language) -> usize) -> EngineConfig {
        EngineConfig {
            instance: self.plan.owner(what),
            pool_sizes: languages()
                .iter()
                .map(|l| (l.id.clone(), pools(l)))
                .collect(),
            max_running: *CONCURRENCY.iter().max().expect("levels"),
            max_queued: 1024,
            // Each level measures the daemon at that many runs at once, not the admission
            // budget, which on a small machine would hold them to its CPUs.
            budget: Cost::UNLIMITED,
            runtime: self.plan.runtime.clone(),
            ..EngineConfig::default()
        }
    }

    async fn measure(&self, report: &mut Report, engines: &Engines) -> anyhow::Result<()> {
        report.machine = Machine::now(&self.docker).await?;
        report.memory.rss_before_kib = own_rss_kib();

        // The pooled engine: the selected languages' pools at their table sizes.
        let selected = |l: &Language| self.selected.iter().any(|s| s.id == l.id);
        let pooled = engines
            .start(
                &self.docker,
                self.config("pool", |l| if selected(l) { l.pool_size } else { 0 }),
            )
            .await?;
        progress("filling the pools");
        wait_full(&pooled, None).await?;
        report.memory.rss_full_kib = own_rss_kib();
        report.memory.pools = pooled
            .pools()
            .values()
            .map(|p| (p.language().id.clone(), p.target()))
            .collect();
        let fresh = engines
            .start(&self.docker, self.config("fresh", |_| 0))
            .await?;

        for lang in &self.selected {
            let measured = latency::measure(
                &self.plan,
                &self.docker,
                lang,
                &pooled,
                &fresh,
                &mut report.cut,
            )
            .await?;
            report.languages.push(measured);
        }
        for lang in &self.selected {
            if let Some(row) = judged::measure(&self.plan, &pooled, lang).await {
                report.judged.push(row);
            }
        }
        for lang in &self.selected {
            let row = output::measure(
                &self.plan,
                &self.docker,
                &pooled,
                &self.scratch,
                lang,
                &mut report.cut,
            )
            .await;
            report.output.extend(row);
        }
        if let Some(cpp) = self.selected.iter().find(|l| l.id == compile::LANGUAGE) {
            report.compile = compile::measure(&self.plan, &fresh, cpp, &mut report.cut).await;
        }
        report.throughput =
            throughput::measure(&self.plan, &self.docker, &pooled, &mut report.cut).await?;

        // Per language, an engine whose only pool follows demand (the default policy), started
        // only now so that its filling does not run into the figures above, and on its own so
        // that its pool starts at the table's size (not shrunk while other languages' bursts
        // ran).
        for lang in &self.selected {
            let demand = engines
                .start(
                    &self.docker,
                    EngineConfig {
                        pool_sizes: languages()
                            .iter()
                            .filter(|l| l.id != lang.id)
                            .map(|l| (l.id.clone(), 0))
                            .collect(),
                        ..self.config(&format!("demand-{}", lang.id), |_| 0)
                    },
                )
                .await?;
            let rows = burst::measure(&self.plan, lang, &pooled, &demand, &mut report.cut).await;
            demand.shutdown().await;
            report.bursts.extend(rows?);
        }
        Ok(())
    }

    /// Remove what the bench made outside its engines (a run cut short by Ctrl-C or an error).
    async fn remove_leftovers(&self) {
        for what in ["raw", "probe", "cli", "export"] {
            let label = format!("{LABEL_OWNER}={}", self.plan.owner(what));
            if let Ok(list) = self.docker.list_containers(&[label]).await {
                for c in list {
                    let _ = self.docker.remove_container(&c.id).await;
                }
            }
        }
    }
}

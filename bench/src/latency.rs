//! Latency of one language: a hello world, one run at a time, through the pool (full before
//! each run, so each is a hit), through a fresh container (an engine without pools) and through
//! `docker run`, interleaved run by run so that a busy moment of the machine hits all three
//! alike; then where the pooled path's time goes.
use crate::breakdown;
use crate::engines::wait_full;
use crate::hello::hello_world;
use crate::paths::{docker_run, docker_run_args, engine_run, shell_command};
use crate::plan::{progress, Plan, BREAKDOWN_RUNS};
use crate::report::{LanguageReport, Path};
use onpyrunner_languages::Language;
use onpyrunner_supervisor::container::{self, Labels, LABEL_OWNER};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::{self, RunSpec};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Latency of `lang` on the three paths, then its breakdown; what the time bounds cut is noted
/// in `cut`.
pub async fn measure(
    plan: &Plan,
    docker: &Docker,
    lang: &'static Language,
    pooled: &Engine,
    fresh: &Engine,
    cut: &mut Vec<String>,
) -> anyhow::Result<LanguageReport> {
    let spec = RunSpec::single(
        lang,
        hello_world(lang),
        Limits::defaults(lang, &Caps::default()),
    );
    let cli_owner = plan.owner("cli");
    let docker_args = docker_run_args(
        &container::container_config(
            &images::image_ref(lang),
            &spec.limits,
            &Labels {
                owner: cli_owner.clone(),
                language: lang.id.clone(),
                run: "docker-run".into(),
                created_unix: run::unix_now(),
            },
            // The baseline runs the table's commands cold, as `docker run` users do.
            &[],
            &lang.env,
            crate::paths::BASELINE_UID,
            plan.runtime_for(lang).as_deref(),
        ),
        &shell_command(lang),
    );
    let pool = pooled.pools()[&lang.id].clone();
    let mut report = LanguageReport {
        id: lang.id.clone(),
        name: format!("{} {}", lang.name, lang.version),
        ..LanguageReport::default()
    };
    progress(&format!(
        "{}: {} warm-up runs per path",
        lang.id, plan.warmups
    ));
    for _ in 0..plan.warmups {
        wait_full(pooled, Some(&lang.id)).await?;
        let _ = engine_run(pooled, spec.clone()).await;
        let _ = engine_run(fresh, spec.clone()).await;
        let _ = docker_run(&docker_args, hello_world(lang)).await;
        wait_removed(docker, &cli_owner).await;
    }
    let hits = pool.stats().hits.load(Ordering::Relaxed);
    let misses = pool.stats().misses.load(Ordering::Relaxed);
    let budget = Instant::now() + plan.lang_budget;
    for i in 0..plan.runs {
        if plan.late() || Instant::now() >= budget {
            cut.push(format!(
                "{}: latency stopped after {i} of {} rounds ({})",
                lang.id,
                plan.runs,
                plan.cut_reason()
            ));
            break;
        }
        if i % 10 == 0 {
            progress(&format!("{}: run {}/{}", lang.id, i + 1, plan.runs));
        }
        wait_full(pooled, Some(&lang.id)).await?;
        let sample = engine_run(pooled, spec.clone()).await;
        report.paths.entry(Path::Pool).or_default().add(sample);
        let sample = engine_run(fresh, spec.clone()).await;
        report.paths.entry(Path::Fresh).or_default().add(sample);
        let sample = docker_run(&docker_args, hello_world(lang)).await;
        report.paths.entry(Path::DockerRun).or_default().add(sample);
        wait_removed(docker, &cli_owner).await;
    }
    report.pool_hits = pool.stats().hits.load(Ordering::Relaxed) - hits;
    report.pool_misses = pool.stats().misses.load(Ordering::Relaxed) - misses;

    let probes = plan.runs.min(BREAKDOWN_RUNS);
    progress(&format!(
        "{}: 3 x {probes} runs by hand on the sandbox API",
        lang.id
    ));
    report.breakdown = breakdown::measure(plan, docker, &spec, probes, cut).await;
    for (path, l) in &report.paths {
        if !l.failures.is_empty() {
            progress(&format!(
                "{} {}: {} failed runs, first: {}",
                lang.id,
                path.label(),
                l.failures.len(),
                l.failures[0]
            ));
        }
    }
    Ok(report)
}

/// `docker run --rm` may return before the daemon has removed the container: wait for it, so
/// that the removal does not run into the next measured run.
async fn wait_removed(docker: &Docker, owner: &str) {
    let label = format!("{LABEL_OWNER}={owner}");
    let _ = timeout(Duration::from_secs(10), async {
        while docker
            .list_containers(std::slice::from_ref(&label))
            .await
            .is_ok_and(|l| !l.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

//! Throughput: completed runs per second through the engine at 1, 4 and 8 callers, next to the
//! daemon's create+start+wait+remove cycles per second of the same container at the same
//! concurrency (the pool hides latency, not throughput: the daemon's cycle rate bounds it).
use crate::engines::wait_full;
use crate::hello::hello_world;
use crate::paths::{engine_run, raw_cycle};
use crate::plan::{progress, Plan, CONCURRENCY, RUN_TIMEOUT, THROUGHPUT_LANGUAGE};
use crate::report::ThroughputRow;
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::RunSpec;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// Runs per second through `pooled` and raw daemon cycles per second, level by level; a level
/// not measured for lack of time is noted in `cut`.
pub async fn measure(
    plan: &Plan,
    docker: &Docker,
    pooled: &Engine,
    cut: &mut Vec<String>,
) -> anyhow::Result<Vec<ThroughputRow>> {
    let Some(lang) = onpyrunner_languages::find(THROUGHPUT_LANGUAGE) else {
        return Ok(vec![]);
    };
    let Some(pool) = pooled.pools().get(&lang.id).cloned() else {
        cut.push(format!(
            "throughput: needs {THROUGHPUT_LANGUAGE} among --langs"
        ));
        return Ok(vec![]);
    };
    let limits = Limits::defaults(lang, &Caps::default());
    let spec = RunSpec::single(lang, hello_world(lang), limits.clone());
    let window = Duration::from_secs(plan.seconds);
    let mut rows = Vec::new();
    for callers in CONCURRENCY {
        if plan.late() {
            cut.push(format!(
                "throughput: {callers} callers and up skipped (time bound)"
            ));
            break;
        }
        wait_full(pooled, Some(&lang.id)).await?;
        let mut row = ThroughputRow {
            callers,
            ..ThroughputRow::default()
        };
        progress(&format!(
            "throughput: engine, {callers} callers, {window:?}"
        ));
        let hits = pool.stats().hits.load(Ordering::Relaxed);
        let misses = pool.stats().misses.load(Ordering::Relaxed);
        let (ok, failed, secs) = concurrently(callers, window, || {
            let (engine, spec) = (pooled.clone(), spec.clone());
            async move { engine_run(&engine, spec).await.map(drop) }
        })
        .await;
        (row.engine_runs, row.engine_failed, row.engine_secs) = (ok, failed, secs);
        row.pool_hits = pool.stats().hits.load(Ordering::Relaxed) - hits;
        row.pool_misses = pool.stats().misses.load(Ordering::Relaxed) - misses;
        // Let the pool refill so its making does not run into the raw measurement.
        wait_full(pooled, Some(&lang.id)).await?;

        progress(&format!(
            "throughput: raw daemon cycles, {callers} callers, {window:?}"
        ));
        let image = images::image_ref(lang);
        let runtime = plan.runtime_for(lang);
        let owner = plan.owner("raw");
        let (ok, failed, secs) =
            concurrently(callers, window, || {
                let (docker, image, runtime, owner, limits) = (
                    docker.clone(),
                    image.clone(),
                    runtime.clone(),
                    owner.clone(),
                    limits.clone(),
                );
                async move {
                    raw_cycle(&docker, lang, &image, runtime.as_deref(), &owner, &limits).await
                }
            })
            .await;
        (row.raw_cycles, row.raw_failed, row.raw_secs) = (ok, failed, secs);
        rows.push(row);
    }
    Ok(rows)
}

/// `callers` loops of `one` for `window`; returns (succeeded, failed, seconds until the last
/// caller finished its last run).
pub async fn concurrently<F, Fut>(callers: usize, window: Duration, one: F) -> (u64, u64, f64)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let ok = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let begin = Instant::now();
    let end = begin + window;
    let caller = || async {
        while Instant::now() < end {
            match timeout(RUN_TIMEOUT, one()).await {
                Ok(Ok(())) => ok.fetch_add(1, Ordering::Relaxed),
                _ => failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    };
    // The callers take turns on this task; the work they wait for runs in the engine's tasks
    // and in the daemon.
    futures_util::future::join_all((0..callers).map(|_| caller())).await;
    (
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        begin.elapsed().as_secs_f64(),
    )
}

//! Bursts: five hello worlds of one language a second apart (the "five Java runs in five
//! seconds" of issue 12), through an engine whose pools are pinned at the table's sizes and
//! through one whose pools follow demand, twice each: the first burst finds the pool at its
//! table size, the second comes once the pool has refilled to whatever target the first left.
use crate::engines::wait_full;
use crate::hello::hello_world;
use crate::paths::engine_run;
use crate::plan::{progress, Plan};
use crate::report::BurstRow;
use onpyrunner_languages::Language;
use onpyrunner_supervisor::engine::Engine;
use onpyrunner_supervisor::limits::{Caps, Limits};
use onpyrunner_supervisor::run::RunSpec;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Runs in one burst.
pub const BURST_RUNS: usize = 5;
/// Between two submissions of a burst (each run goes on without waiting for the last).
pub const BURST_SPACING: Duration = Duration::from_secs(1);
/// Bursts per language and engine.
pub const BURSTS: usize = 2;

/// `lang`'s bursts through `fixed` (pools pinned) and `demand` (pools following demand); the
/// rows of an engine without a pool for `lang` are left out.
pub async fn measure(
    plan: &Plan,
    lang: &'static Language,
    fixed: &Engine,
    demand: &Engine,
    cut: &mut Vec<String>,
) -> anyhow::Result<Vec<BurstRow>> {
    let spec = RunSpec::single(
        lang,
        hello_world(lang),
        Limits::defaults(lang, &Caps::default()),
    );
    let mut rows = Vec::new();
    for (pools, engine) in [("pinned", fixed), ("demand", demand)] {
        let Some(pool) = engine.pools().get(&lang.id).cloned() else {
            continue;
        };
        for burst in 1..=BURSTS {
            if plan.late() {
                cut.push(format!(
                    "{}: burst {burst} of the {pools} pool (the total time bound, --max-minutes)",
                    lang.id
                ));
                return Ok(rows);
            }
            wait_full(engine, Some(&lang.id)).await?;
            progress(&format!(
                "{}: burst {burst} of {BURST_RUNS} runs, {pools} pool of {}",
                lang.id,
                pool.target()
            ));
            let target_before = pool.target();
            let hits = pool.stats().hits.load(Ordering::Relaxed);
            let misses = pool.stats().misses.load(Ordering::Relaxed);
            let mut runs = Vec::new();
            for i in 0..BURST_RUNS {
                if i > 0 {
                    tokio::time::sleep(BURST_SPACING).await;
                }
                let (engine, spec) = (engine.clone(), spec.clone());
                runs.push(tokio::spawn(async move { engine_run(&engine, spec).await }));
            }
            let mut row = BurstRow {
                language: lang.id.clone(),
                pools,
                burst,
                target_before,
                ..BurstRow::default()
            };
            for run in runs {
                match run.await {
                    Ok(Ok(sample)) => row.completion.push(sample.completion),
                    Ok(Err(e)) => row.failures.push(e),
                    Err(e) => row.failures.push(e.to_string()),
                }
            }
            row.hits = pool.stats().hits.load(Ordering::Relaxed) - hits;
            row.misses = pool.stats().misses.load(Ordering::Relaxed) - misses;
            row.target_after = pool.target();
            rows.push(row);
        }
    }
    Ok(rows)
}

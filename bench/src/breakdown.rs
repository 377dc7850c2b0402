//! Where the time goes on the pooled path, to explain the engine's figures: a container made as
//! the pool makes it, on the supervisor's own sandbox API (`run::Sandbox`, `run::run_in_keep`),
//! then, from just before unpause: the unpause, the first output byte, the launcher's status,
//! and the removal, timed apart, which the engine does not show.
use crate::hello::HELLO_OUTPUT;
use crate::plan::{Plan, RUN_TIMEOUT};
use crate::report::{Breakdown, Variant};
use anyhow::{bail, Context};
use onpyrunner_protocol::{Event, OutputStream, Reason};
use onpyrunner_supervisor::docker::Docker;
use onpyrunner_supervisor::images;
use onpyrunner_supervisor::run::{self, Controls, Maker, Placement, RunSpec, Sandbox};
use onpyrunner_supervisor::session::StopSignal;
use onpyrunner_supervisor::uids::{UidRange, Uids};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio::time::timeout;

/// One probe's figures, all from just before unpause.
struct Probe {
    unpause: Duration,
    first_byte: Duration,
    status: Duration,
    removed: Duration,
    program_wall: Duration,
}

/// `runs` probes of every [`Variant`], taking turns; the figures per variant, indexed by
/// `Variant as usize`. A probe not made for lack of time is noted in `cut`.
pub async fn measure(
    plan: &Plan,
    docker: &Docker,
    spec: &RunSpec,
    runs: usize,
    cut: &mut Vec<String>,
) -> [Breakdown; 3] {
    let mut breakdown: [Breakdown; 3] = Default::default();
    let maker = Maker {
        docker: docker.clone(),
        owner: plan.owner("probe"),
        uids: Uids::new(UidRange::DEFAULT),
    };
    let placement = Placement {
        image: images::image_ref(spec.language),
        runtime: plan.runtime_for(spec.language),
    };
    for i in 0..3 * runs {
        if plan.late() {
            cut.push(format!("{}: breakdown cut (time bound)", spec.language.id));
            break;
        }
        let variant = Variant::ALL[i % 3];
        let b = &mut breakdown[variant as usize];
        match timeout(RUN_TIMEOUT, probe(&maker, &placement, spec, variant)).await {
            Ok(Ok(p)) => {
                b.unpause.push(p.unpause);
                b.first_byte.push(p.first_byte);
                b.status.push(p.status);
                b.removed.push(p.removed);
                b.program_wall.push(p.program_wall);
            }
            Ok(Err(e)) => b.failures.push(format!("{e:#}")),
            Err(_) => b.failures.push("timed out".into()),
        }
    }
    breakdown
}

/// A container made as the pool makes it (created and attached, started, ready, paused unless
/// `Running`), left paused for a while, then run and timed. With `PausedWithRefill` another
/// container is made the same way at the same time as the run, as the pool's refill does after
/// a claim.
async fn probe(
    maker: &Maker,
    placement: &Placement,
    spec: &RunSpec,
    variant: Variant,
) -> anyhow::Result<Probe> {
    let paused = variant != Variant::Running;
    let sandbox = make(maker, placement, spec, paused).await?;
    // A pooled container waits paused for a while; let this one settle too.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let begin = Instant::now();
    let refill = async {
        if variant == Variant::PausedWithRefill {
            make(maker, placement, spec, true).await?.remove().await?;
        }
        anyhow::Ok(())
    };
    let (measured, refilled) = tokio::join!(
        timed_run(&maker.docker, sandbox, spec, begin, paused),
        refill
    );
    refilled?;
    measured
}

/// Create, attach, start and (if `paused`) pause a container as the pool does; removed again
/// if that fails.
async fn make(
    maker: &Maker,
    placement: &Placement,
    spec: &RunSpec,
    paused: bool,
) -> anyhow::Result<Sandbox> {
    let docker = &maker.docker;
    let mut sandbox = Sandbox::create(maker, spec.language, &spec.limits, placement, false).await?;
    let made = async {
        sandbox.start(docker).await?;
        // A warm language is paused only once its warm process is ready, as in the pool.
        sandbox.wait_ready(docker, run::WARM_READY_TIMEOUT).await?;
        if paused {
            docker.pause_container(sandbox.id()).await?;
        }
        anyhow::Ok(())
    }
    .await;
    match made {
        Ok(()) => Ok(sandbox),
        Err(e) => {
            let _ = sandbox.remove().await;
            Err(e)
        }
    }
}

/// The timed part of a probe: unpause, run to the launcher's status, remove.
async fn timed_run(
    docker: &Docker,
    sandbox: Sandbox,
    spec: &RunSpec,
    begin: Instant,
    paused: bool,
) -> anyhow::Result<Probe> {
    if paused {
        if let Err(e) = docker.unpause_container(sandbox.id()).await {
            let _ = sandbox.remove().await;
            return Err(e.into());
        }
    }
    let unpause = begin.elapsed();
    let (output_tx, mut output) = mpsc::channel(64);
    // No stdin: the closed channel is EOF right after the frame.
    let (_, stdin) = mpsc::channel(1);
    let controls = Controls {
        stdin,
        output: output_tx,
        stop: StopSignal::default(),
        signals: Default::default(),
    };
    let running = async {
        let ran = run::run_in_keep(docker, sandbox, spec, controls).await;
        (ran, begin.elapsed())
    };
    let reading = async {
        let (mut first_byte, mut stdout) = (None, Vec::new());
        while let Some(event) = output.recv().await {
            first_byte.get_or_insert(begin.elapsed());
            if let Event::Output(chunk) = event {
                if chunk.stream == OutputStream::Stdout {
                    stdout.extend_from_slice(&chunk.data);
                }
            }
        }
        (first_byte, stdout)
    };
    let (((outcome, leftover), at_status), (first_byte, stdout)) = tokio::join!(running, reading);
    let removal = leftover.remove().await;
    let removed = begin.elapsed();
    let outcome = outcome?;
    removal?;
    if outcome.reason != Reason::Exited || outcome.usage.exit_code != Some(0) {
        bail!("the program failed: {outcome:?}");
    }
    if stdout != HELLO_OUTPUT.as_bytes() {
        bail!("unexpected output {:?}", String::from_utf8_lossy(&stdout));
    }
    Ok(Probe {
        unpause,
        first_byte: first_byte.context("no output")?,
        status: at_status,
        removed,
        program_wall: Duration::from_millis(outcome.usage.wall_ms),
    })
}

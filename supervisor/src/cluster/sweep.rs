//! What every node does every [`SWEEP_EVERY`](super::SWEEP_EVERY): find the jobs of workers
//! that are gone and settle each exactly once.
use super::wire::{self, Job, GROUP, JOB_FIELD};
use super::{entry_field, Failed, Redis};
use onpyrunner_protocol::{Event, Stage, Summary};

/// A pending entry must have been idle this long to be claimed: the claim resets its idle
/// time, so of two nodes sweeping at once only the first gets it.
const CLAIM_MIN_IDLE_MS: u64 = 1000;
/// Pending entries looked at per sweep.
const SWEEP_COUNT: usize = 100;

/// Settle the jobs of lost workers; `me` is the consumer name claims are made under. Returns
/// how many were settled.
pub(crate) async fn sweep_once(redis: &Redis, me: &str) -> Result<usize, Failed> {
    if !redis.steady() {
        // Redis failed a moment ago: heartbeats may have lapsed while it did.
        return Ok(0);
    }
    let keys = &redis.keys;
    let mut cmd = redis::cmd("XPENDING");
    cmd.arg(keys.jobs())
        .arg(GROUP)
        .arg("IDLE")
        .arg(CLAIM_MIN_IDLE_MS)
        .arg("-")
        .arg("+")
        .arg(SWEEP_COUNT);
    let pending: Vec<(String, String, u64, u64)> = redis.query(&cmd).await?;
    let mut settled = 0;
    for (entry, consumer, _idle, _deliveries) in pending {
        let alive: bool = redis
            .query(redis::cmd("EXISTS").arg(keys.worker(&consumer)))
            .await?;
        if alive {
            continue;
        }
        let mut claim = redis::cmd("XCLAIM");
        claim
            .arg(keys.jobs())
            .arg(GROUP)
            .arg(me)
            .arg(CLAIM_MIN_IDLE_MS)
            .arg(&entry);
        let claimed: redis::streams::StreamClaimReply = redis.query(&claim).await?;
        let Some(claimed) = claimed.ids.into_iter().next() else {
            continue; // another node was first
        };
        settle(redis, &claimed, &consumer).await?;
        settled += 1;
    }
    Ok(settled)
}

/// Settle a job `consumer` had taken and will not finish (the entry is ours now: claimed, or
/// pending with us): a run it had started ends as `internal_error`, unless its summary is
/// already in its events stream; a job it had not started is queued again.
pub(crate) async fn settle(
    redis: &Redis,
    claimed: &redis::streams::StreamId,
    consumer: &str,
) -> Result<(), Failed> {
    let keys = &redis.keys;
    let entry = &claimed.id;
    let job = entry_field(claimed)
        .filter(|(field, _)| *field == JOB_FIELD)
        .and_then(|(_, value)| Job::decode(&value).ok());
    let Some(job) = job else {
        // Nothing anyone can run: drop it.
        redis
            .query::<()>(redis::cmd("XACK").arg(keys.jobs()).arg(GROUP).arg(entry))
            .await?;
        redis
            .query::<()>(redis::cmd("XDEL").arg(keys.jobs()).arg(entry))
            .await?;
        return Ok(());
    };
    let started: bool = redis
        .query(redis::cmd("EXISTS").arg(keys.owner(&job.id)))
        .await?;
    if started {
        tracing::warn!(run = %job.id, worker = %consumer, "worker lost mid-run: ending its run");
        if !ended(redis, &job.id).await? {
            let summary =
                Summary::internal(Stage::Run, format!("worker {consumer} was lost mid-run"));
            for event in wire::final_events(summary) {
                append_event(redis, &job.id, "*", &event).await?;
            }
        }
        redis.finish(&job.id, entry).await?;
    } else {
        tracing::warn!(run = %job.id, worker = %consumer, "worker lost before starting a job: queueing it again");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("XADD")
            .arg(keys.jobs())
            .arg("*")
            .arg(JOB_FIELD)
            .arg(job.encode())
            .ignore()
            .cmd("XACK")
            .arg(keys.jobs())
            .arg(GROUP)
            .arg(entry)
            .ignore()
            .cmd("XDEL")
            .arg(keys.jobs())
            .arg(entry)
            .ignore();
        redis.pipe::<()>(&pipe).await?;
    }
    Ok(())
}

/// Whether a run's events stream already ends in its summary (its worker wrote it, then died
/// before acknowledging the job).
async fn ended(redis: &Redis, run: &str) -> Result<bool, Failed> {
    let mut cmd = redis::cmd("XREVRANGE");
    cmd.arg(redis.keys.events(run))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1);
    let last: redis::streams::StreamRangeReply = redis.query(&cmd).await?;
    Ok(last
        .ids
        .first()
        .and_then(entry_field)
        .is_some_and(|(f, v)| matches!(wire::decode_event(f, &v), Some(Event::Summary(_)))))
}

/// Append one event to a run's events stream as entry `id` (`*`: the next from the clock).
pub(crate) async fn append_event(
    redis: &Redis,
    run: &str,
    id: &str,
    event: &Event,
) -> Result<(), Failed> {
    let (field, value) = wire::encode_event(event);
    let mut cmd = redis::cmd("XADD");
    cmd.arg(redis.keys.events(run))
        .arg("MAXLEN")
        .arg("~")
        .arg(super::MAX_EVENTS * 2)
        .arg(id)
        .arg(field)
        .arg(value.as_ref());
    redis.query::<String>(&cmd).await.map(|_| ())
}

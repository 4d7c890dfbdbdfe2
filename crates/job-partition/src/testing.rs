//! Lease operations for tests of crash and fencing behaviour (feature `test-util`).
//!
//! Each call does one step of what a [`Worker`](crate::Worker) does with a job, without the
//! rules the worker keeps around it: no lease thread renews what [`claim`] takes, nothing
//! stops a job at its lease deadline, and [`complete`] and [`fail`] need no task to have
//! run. A test uses them to play a worker that crashed or froze while holding a job (claim
//! and never renew), or one that comes back after losing its lease (complete with a stale
//! token), and to check what Redis then allows. Never call them next to real workers in
//! production: a job claimed here stays leased until its lease expires.

use std::time::Duration;

use crate::client::{Beat, Finished};
use crate::{Jobs, Result};

/// Claims up to `want` jobs as worker `worker` (which announces heartbeats every
/// `lease / 10`); answers (id, fencing token) pairs.
pub async fn claim(
    jobs: &Jobs,
    partition: &str,
    queue: &str,
    want: usize,
    lease: Duration,
    worker: &str,
) -> Result<Vec<(String, String)>> {
    let (c, _) = jobs
        .claim_or_wait(partition, queue, want, lease, lease / 10, worker)
        .await?;
    Ok(c.into_iter().map(|c| (c.id, c.token)).collect())
}

/// Completes a job under a lease token; false when fenced off.
pub async fn complete(jobs: &Jobs, partition: &str, id: &str, token: &str) -> Result<bool> {
    Ok(jobs
        .complete(partition, id, token, "completed", None)
        .await?
        >= 1)
}

/// Completes several jobs in one call, as a worker records the jobs of a queue that finish
/// together: each (id, token, result JSON or None) fenced by its own token. Answers per job,
/// in order, whether it was recorded (false: fenced off; the others are recorded anyway).
pub async fn complete_many(
    jobs: &Jobs,
    partition: &str,
    done: &[(&str, &str, Option<&str>)],
) -> Result<Vec<bool>> {
    let done: Vec<Finished> = done
        .iter()
        .map(|(id, token, result)| Finished {
            id: (*id).to_owned(),
            token: (*token).to_owned(),
            outcome: "completed",
            result: result.map(str::to_owned),
        })
        .collect();
    Ok(jobs
        .complete_many(partition, &done)
        .await?
        .into_iter()
        .map(|c| c >= 1)
        .collect())
}

/// Set in a worker process's environment, it makes the worker stop for an hour between
/// the two steps of a flow or batch member's end (after the script that finishes it, before
/// counting it into its flow or batch), so a test can kill it there.
pub const STALL_BEFORE_FORWARD: &str = "WHARF_TEST_STALL_BEFORE_FORWARD";

/// Forwards the outbox's entries of `partition` (what every worker's lease check does);
/// answers how many.
pub async fn drain_outbox(jobs: &Jobs, partition: &str) -> Result<usize> {
    jobs.drain_outbox(partition, Duration::ZERO).await
}

/// Fails a job under a lease token (to the dead set); 0 when fenced off, 2 dead, 3 dead and
/// a member of a flow or a batch.
pub async fn fail(jobs: &Jobs, partition: &str, id: &str, token: &str) -> Result<i64> {
    jobs.fail(partition, id, token, "test failure", None, false)
        .await
}

/// Renews a lease; true if still held.
pub async fn heartbeat(
    jobs: &Jobs,
    partition: &str,
    id: &str,
    token: &str,
    lease: Duration,
) -> Result<bool> {
    let b = jobs
        .heartbeat(partition, lease, &[(id.to_owned(), token.to_owned())])
        .await?;
    Ok(b.first() != Some(&Beat::Lost))
}

/// Requeues jobs whose lease expired; answers how many.
pub async fn reap(jobs: &Jobs, partition: &str, queue: &str) -> Result<u64> {
    jobs.reap(partition, queue).await
}

/// Completes a job under a lease token with a result (JSON); false when fenced off.
pub async fn complete_with_result(
    jobs: &Jobs,
    partition: &str,
    id: &str,
    token: &str,
    result: &str,
) -> Result<bool> {
    Ok(jobs
        .complete(partition, id, token, "completed", Some(result))
        .await?
        >= 1)
}

/// Stores a running job's progress (JSON) under a lease token; false when fenced off.
pub async fn set_progress(
    jobs: &Jobs,
    partition: &str,
    id: &str,
    token: &str,
    progress: &str,
) -> Result<bool> {
    jobs.set_progress(partition, id, token, progress.to_owned())
        .await
}

//! Administering jobs and queues: cancel, pause, resume, limits, retention, purge, and
//! re-enqueueing dead jobs.

use std::time::Duration;

use super::Jobs;
use super::enqueue::Enqueued;
use crate::error::{Error, Result};
use crate::keys::{self, check_name};
use crate::scripts::scripts;

/// The answer to [`Jobs::cancel`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting (queued, scheduled, retrying or waiting for its execution key)
    /// and is now removed, its queue key released.
    Cancelled,
    /// The job is running: the worker running it aborts its task within about a second and
    /// calls the `on_cancel` hook (or, if that worker died, the next lease check finishes it).
    Cancelling,
    /// The job had already finished in this state (`completed`, `cancelled` or `dead`).
    AlreadyFinished(String),
    /// No such job (never existed, or finished and trimmed by retention).
    Unknown,
}

/// How many finished jobs a partition keeps, so Redis memory stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed and cancelled jobs kept per queue (0: delete at once). Default 1,000.
    pub keep_finished: u64,
    /// And for at most this long. Default one day.
    pub keep_finished_for: Duration,
    /// Dead jobs kept per queue (the oldest are dropped beyond). Default 10,000.
    pub keep_dead: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_finished: 1_000,
            keep_finished_for: Duration::from_secs(86_400),
            keep_dead: 10_000,
        }
    }
}

impl Jobs {
    /// Cancels a job: a waiting one is removed at once; a running one is aborted by its
    /// worker (any process) within about a second.
    pub async fn cancel(&self, partition: &str, id: &str) -> Result<CancelOutcome> {
        check_name("partition", partition)?;
        let a: String = self
            .script("cancel", &scripts().cancel, partition, vec![id.to_owned()])
            .await?;
        if a == "cancelled" {
            // A member of a flow or a batch: count it now rather than at the next lease check
            // (that one runs only where a worker serves the partition). A failure here is
            // left to it.
            if let Err(e) = self.forward(partition, id).await {
                tracing::debug!(error = %e, id, "cancelled; its flow or batch counts it at the next lease check");
            }
        }
        Ok(match a.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "cancelling" => CancelOutcome::Cancelling,
            "unknown" => CancelOutcome::Unknown,
            other => CancelOutcome::AlreadyFinished(
                other.strip_prefix("finished:").unwrap_or(other).to_owned(),
            ),
        })
    }

    /// Pauses a queue for every worker: running jobs finish, no new one starts.
    pub async fn pause(&self, partition: &str, queue: &str) -> Result<()> {
        self.set_meta(partition, queue, "paused", Some(1)).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, partition: &str, queue: &str) -> Result<()> {
        self.set_meta(partition, queue, "paused", None).await
    }

    /// Sets how many jobs of the queue may run at once across every worker process
    /// (None: no limit beyond each worker's own concurrency). Takes effect at once for new
    /// starts; running jobs are never stopped by it.
    ///
    /// `Some(0)` means zero: no job of the queue starts until the limit is raised (like
    /// [`pause`](Self::pause), but kept apart from it). The queue need not exist yet: a
    /// limit may be set before the first enqueue.
    pub async fn set_limit(&self, partition: &str, queue: &str, limit: Option<u32>) -> Result<()> {
        self.set_meta(partition, queue, "limit", limit).await
    }

    async fn set_meta(
        &self,
        partition: &str,
        queue: &str,
        field: &str,
        v: Option<u32>,
    ) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let key = keys::queue(partition, queue, "meta");
        let mut pipe = redis::pipe();
        pipe.atomic();
        match v {
            Some(v) => pipe.cmd("HSET").arg(&key).arg(field).arg(v).ignore(),
            None => pipe.cmd("HDEL").arg(&key).arg(field).ignore(),
        };
        pipe.cmd("SADD")
            .arg(keys::route(partition))
            .arg(queue)
            .ignore();
        let mut conn = self.conn.clone();
        let fut = pipe.query_async::<()>(&mut conn);
        self.bounded("set queue setting", fut).await
    }

    /// Sets the partition's retention of finished and dead jobs.
    pub async fn set_retention(&self, partition: &str, r: Retention) -> Result<()> {
        check_name("partition", partition)?;
        let ms = u64::try_from(r.keep_finished_for.as_millis()).unwrap_or(u64::MAX);
        self.call::<()>(
            "set retention",
            redis::cmd("HSET")
                .arg(format!("{}config", keys::prefix(partition)))
                .arg("keep_done")
                .arg(r.keep_finished)
                .arg("keep_done_ms")
                .arg(ms)
                .arg("keep_dead")
                .arg(r.keep_dead),
        )
        .await
    }

    /// Deletes the jobs of a queue that are waiting (queued, scheduled, retrying, parked),
    /// releasing their keys; running jobs are left alone. Answers how many were deleted.
    pub async fn purge(&self, partition: &str, queue: &str) -> Result<u64> {
        let mut n = 0;
        for which in ["wait", "delayed", "parked", "limited"] {
            n += self.purge_part(partition, queue, which).await?;
        }
        Ok(n)
    }

    /// Empties the dead set of a queue. Answers how many were deleted.
    pub async fn purge_dead(&self, partition: &str, queue: &str) -> Result<u64> {
        self.purge_part(partition, queue, "dead").await
    }

    async fn purge_part(&self, partition: &str, queue: &str, which: &str) -> Result<u64> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let mut total = 0u64;
        // Bounded chunks, so one script never blocks Redis for long.
        loop {
            let args = vec![queue.to_owned(), which.to_owned(), "500".to_owned()];
            let n: u64 = self
                .script("purge", &scripts().purge, partition, args)
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// Puts a dead job back in its queue with fresh attempts.
    pub async fn retry_dead(&self, partition: &str, id: &str) -> Result<Enqueued> {
        check_name("partition", partition)?;
        let a: String = self
            .script(
                "retry dead",
                &scripts().retry_dead,
                partition,
                vec![id.to_owned()],
            )
            .await?;
        match a.as_str() {
            "ok" => Ok(Enqueued::Queued(id.to_owned())),
            "not_dead" => Err(Error::Config(format!(
                "job {id} is not in the dead set of partition {partition}; check its state with Jobs::job"
            ))),
            other => match other.strip_prefix("dup:") {
                Some(h) => Ok(Enqueued::Duplicate(h.to_owned())),
                None => Err(Error::Protocol {
                    op: "retry dead",
                    detail: other.to_owned(),
                }),
            },
        }
    }
}

//! Looking at jobs and queues: one job, the partitions, a partition's queues, a queue's
//! counts, its dead set.

use std::collections::HashMap;

use super::Jobs;
use crate::error::Result;
use crate::keys::{self, check_name};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its time (enqueued with a time or a delay).
    Scheduled,
    /// Ready, waiting for a worker.
    Queued,
    /// Waiting for another job with the same execution key to finish.
    Parked,
    /// Running on a worker (under a lease).
    Running,
    /// Still running, although its worker told it to stop (its `max_execution_time` passed,
    /// it was cancelled, or the worker is shutting down) a while ago: its code blocks its
    /// thread or ignores cancellation. It keeps its lease, execution key, queue key and queue
    /// slot until its task really ends; [`JobInfo::stopping`] says why it was told to stop.
    Stopping,
    /// Failed, waiting for its next attempt.
    Retrying,
    /// Ready, but its rate group has used its queue's rate limit: it starts, in its place,
    /// once the window allows ([`Jobs::set_rate_limit`]).
    RateLimited,
    /// Held until its flow's children, or its batch's jobs, have settled: a flow's parent
    /// ([`Jobs::enqueue_flow`]) or a batch's callback ([`Jobs::enqueue_batch`]).
    Waiting,
    /// Finished successfully.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Failed for good (last attempt, not retryable, unknown name, undecodable arguments).
    Dead,
}

impl JobState {
    pub(crate) fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "parked" => Self::Parked,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "retrying" => Self::Retrying,
            "ratelimited" => Self::RateLimited,
            "waiting" => Self::Waiting,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "dead" => Self::Dead,
            _ => return None,
        })
    }

    /// The name stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Parked => "parked",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Retrying => "retrying",
            Self::RateLimited => "ratelimited",
            Self::Waiting => "waiting",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Dead => "dead",
        }
    }
}

/// A stored job, as [`Jobs::job`] and [`Jobs::dead`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// Its id.
    pub id: String,
    /// Its registered name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Where it stands.
    pub state: JobState,
    /// Its arguments (JSON).
    pub args: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last error (or the reason it is dead).
    pub error: Option<String>,
    /// Its queue key.
    pub queue_key: Option<String>,
    /// Its execution key.
    pub execution_key: Option<String>,
    /// Times a worker lost its lease while running it (crash or stall).
    pub lease_expiries: u32,
    /// Whether a cancel was asked while it ran.
    pub cancel_requested: bool,
    /// For a [`JobState::Stopping`] job: why its worker told it to stop, and when.
    pub stopping: Option<String>,
    /// The last progress it reported with
    /// [`JobContext::set_progress`](crate::JobContext::set_progress) (JSON), if any.
    pub progress: Option<String>,
    /// A completed job's result, set with
    /// [`JobContext::set_result`](crate::JobContext::set_result) (JSON), if any.
    pub result: Option<String>,
    /// Its [`priority`](crate::Job::priority) (0 first).
    pub priority: u8,
    /// For a job [`Jobs::enqueue_debounced`] replaced before it started: the id of the job
    /// that replaced it.
    pub replaced_by: Option<String>,
    /// For a child of a flow: its parent's partition and id ([`Jobs::flow`] shows the flow).
    pub flow_parent: Option<(String, String)>,
    /// For a job or a callback of a batch: the batch's partition and id ([`Jobs::batch`]).
    /// (A flow's parent is shown by [`Jobs::flow`], which answers `None` for other jobs.)
    pub batch: Option<(String, String)>,
}

impl JobInfo {
    pub(super) fn from_hash(id: &str, h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).cloned().unwrap_or_default();
        let opt = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        // Redis keeps `running` (every script relies on it); the flag (`<token> <reason>`)
        // refines it while the job runs under the token it was set for.
        let state = JobState::parse(h.get("state")?)?;
        let stopping = opt("stopping").and_then(|s| {
            let (token, reason) = s.split_once(' ')?;
            (state == JobState::Running && h.get("token").is_some_and(|t| t == token))
                .then(|| reason.to_owned())
        });
        let state = match state {
            JobState::Running if stopping.is_some() => JobState::Stopping,
            s => s,
        };
        Some(Self {
            id: id.to_owned(),
            name: get("name"),
            queue: get("queue"),
            state,
            args: get("args"),
            attempts: num("attempts"),
            error: opt("error"),
            queue_key: opt("qkey"),
            execution_key: opt("xkey"),
            lease_expiries: num("lease_expiries"),
            cancel_requested: h.get("cancel").is_some_and(|v| v == "1"),
            stopping,
            progress: opt("progress"),
            result: opt("result"),
            priority: num("prio") as u8,
            replaced_by: opt("replaced_by"),
            flow_parent: member_of(h, "f"),
            batch: member_of(h, "b").or_else(|| {
                let b = opt("batch")?;
                let (p, id) = b.split_once('\t')?;
                Some((p.to_owned(), id.to_owned()))
            }),
        })
    }
}

/// A member's flow or batch (`kind` f or b) from its `link` field.
fn member_of(h: &HashMap<String, String>, kind: &str) -> Option<(String, String)> {
    let mut l = h.get("link")?.split('\t');
    let (p, k, id) = (l.next()?, l.next()?, l.next()?);
    (k == kind).then(|| (p.to_owned(), id.to_owned()))
}

/// How many jobs of a queue are in each state, and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Ready, waiting for a worker.
    pub queued: u64,
    /// Waiting for a time: scheduled, or retrying after a backoff.
    pub scheduled: u64,
    /// Waiting for their execution key.
    pub parked: u64,
    /// Running now (across every worker process).
    pub running: u64,
    /// Finished jobs still kept (completed or cancelled), within retention.
    pub finished_kept: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// Completed since the queue was created.
    pub completed_total: u64,
    /// Cancelled since the queue was created.
    pub cancelled_total: u64,
    /// Sent to the dead set since the queue was created.
    pub dead_total: u64,
    /// Retries scheduled since the queue was created.
    pub retried_total: u64,
    /// Leases that expired (worker crash or stall) since the queue was created.
    pub lease_expired_total: u64,
    /// Whether the queue is paused (for every worker).
    pub paused: bool,
    /// The global limit of jobs running at once (None: no limit; `Some(0)`: no job starts).
    pub limit: Option<u32>,
    /// Ready jobs waiting for their rate group's window ([`JobState::RateLimited`]).
    pub rate_limited: u64,
    /// The queue's rate limit ([`Jobs::set_rate_limit`]).
    pub rate_limit: Option<crate::RateLimit>,
}

impl Jobs {
    /// A job as stored (None: unknown, or finished and trimmed by retention).
    pub async fn job(&self, partition: &str, id: &str) -> Result<Option<JobInfo>> {
        check_name("partition", partition)?;
        let h: HashMap<String, String> = self
            .call("job", redis::cmd("HGETALL").arg(keys::job(partition, id)))
            .await?;
        Ok(JobInfo::from_hash(id, &h))
    }

    /// Every partition that ever had a job enqueued.
    pub async fn partitions(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .call("partitions", redis::cmd("SMEMBERS").arg(keys::PARTITIONS))
            .await?;
        v.sort();
        Ok(v)
    }

    /// The queues of a partition.
    pub async fn queues(&self, partition: &str) -> Result<Vec<String>> {
        check_name("partition", partition)?;
        let mut v: Vec<String> = self
            .call("queues", redis::cmd("SMEMBERS").arg(keys::route(partition)))
            .await?;
        v.sort();
        Ok(v)
    }

    /// Counts of a queue's jobs per state, and its settings.
    pub async fn counts(&self, partition: &str, queue: &str) -> Result<QueueCounts> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let k = |part: &str| keys::queue(partition, queue, part);
        let mut pipe = redis::pipe();
        for part in ["wait", "delayed", "parked", "active", "done", "dead"] {
            pipe.cmd("ZCARD").arg(k(part));
        }
        pipe.cmd("HGETALL").arg(k("meta"));
        pipe.cmd("ZCARD").arg(k("limited"));
        let mut conn = self.conn.clone();
        let fut = pipe
            .query_async::<(u64, u64, u64, u64, u64, u64, HashMap<String, String>, u64)>(&mut conn);
        let (queued, scheduled, parked, running, finished_kept, dead, meta, rate_limited) =
            self.bounded("counts", fut).await?;
        let n = |f: &str| meta.get(f).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        Ok(QueueCounts {
            queued,
            scheduled,
            parked,
            running,
            finished_kept,
            dead,
            completed_total: n("completed"),
            cancelled_total: n("cancelled"),
            dead_total: n("dead"),
            retried_total: n("retried"),
            lease_expired_total: n("lease_expired"),
            paused: meta.get("paused").is_some_and(|v| v == "1"),
            limit: meta.get("limit").and_then(|v| v.parse().ok()),
            rate_limited,
            rate_limit: crate::RateLimit::from_stored(meta.get("rate_max"), meta.get("rate_ms")),
        })
    }

    /// The newest dead jobs of a queue, at most `limit`.
    pub async fn dead(&self, partition: &str, queue: &str, limit: usize) -> Result<Vec<JobInfo>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let ids: Vec<String> = self
            .call(
                "list dead",
                redis::cmd("ZRANGE")
                    .arg(keys::queue(partition, queue, "dead"))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("REV"),
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(j) = self.job(partition, &id).await? {
                out.push(j);
            }
        }
        Ok(out)
    }
}

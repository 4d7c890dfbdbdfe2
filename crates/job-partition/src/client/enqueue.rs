//! Enqueueing: a job now, after a delay, at a time, or many at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Jobs;
use crate::error::{Error, Result};
use crate::job::{Job, MAX_PRIORITY};
use crate::keys::{check_key, check_name};
use crate::metrics as metric;
use crate::scripts::scripts;

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was stored; this is its id.
    Queued(String),
    /// Another job with the same queue key is queued, running or waiting to retry; this is
    /// its id. Nothing was stored.
    Duplicate(String),
}

impl Enqueued {
    /// The id of the new job, or of the job that holds the queue key.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::Queued(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// The answer to [`Jobs::enqueue_debounced`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Debounced {
    /// No job held the queue key: the job was stored; this is its id.
    Queued(String),
    /// The job holding the key had not started: it was replaced (it ends `cancelled`, its
    /// `replaced_by` naming the new job) and the new job stored.
    Replaced {
        /// The new job's id.
        id: String,
        /// The id of the job it replaced.
        replaced: String,
    },
    /// The job holding the key has started (running, or waiting to retry), or completed
    /// within its [`unique_for`](crate::Job::unique_for): nothing was stored; this is its id.
    Duplicate(String),
}

impl Debounced {
    /// The id of the new job, or of the job that holds the queue key.
    pub fn id(&self) -> &str {
        match self {
            Debounced::Queued(id) | Debounced::Replaced { id, .. } | Debounced::Duplicate(id) => id,
        }
    }
}

/// A job ready to store: name, JSON arguments and keys.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) name: String,
    pub(crate) args: String,
    pub(crate) qkey: String,
    pub(crate) xkey: String,
    pub(crate) rgroup: String,
    pub(crate) at_ms: u64,
    pub(crate) delay_ms: u64,
    /// `unique_for` in ms (0: none).
    pub(crate) qttl_ms: u64,
    /// 0..=MAX_PRIORITY.
    pub(crate) priority: u8,
}

impl Pending {
    /// The script's arguments for this job (`enqueue.lua`'s per-job layout), with a new id.
    pub(crate) fn script_args(&self, queue: &str, trace: &str) -> [String; 12] {
        [
            new_id(),
            queue.to_owned(),
            self.name.clone(),
            self.args.clone(),
            self.qkey.clone(),
            self.xkey.clone(),
            self.at_ms.to_string(),
            self.delay_ms.to_string(),
            trace.to_owned(),
            self.qttl_ms.to_string(),
            self.priority.to_string(),
            self.rgroup.clone(),
        ]
    }
}

pub(crate) fn pending<J: Job<S>, S>(job: &J, at_ms: u64, delay_ms: u64) -> Result<Pending> {
    let args = serde_json::to_string(job).map_err(|source| Error::Encode {
        name: J::NAME.to_owned(),
        source,
    })?;
    if args.len() > MAX_ARGS_BYTES {
        return Err(Error::Config(format!(
            "the arguments of job `{}` are {} bytes as JSON; the limit is {MAX_ARGS_BYTES}: store large data elsewhere and pass a reference",
            J::NAME,
            args.len()
        )));
    }
    let qkey = job.queue_key().unwrap_or_default();
    let xkey = job.execution_key().unwrap_or_default();
    if !qkey.is_empty() {
        check_key("queue_key", &qkey)?;
    }
    if !xkey.is_empty() {
        check_key("execution_key", &xkey)?;
    }
    let qttl_ms = match job.unique_for() {
        None => 0,
        Some(d) if d.is_zero() => {
            return Err(Error::Config(format!(
                "unique_for of job `{}` is zero: return None for no period, or a period of at least 1 ms",
                J::NAME
            )));
        }
        Some(_) if qkey.is_empty() => {
            return Err(Error::Config(format!(
                "job `{}` has a unique_for period but no queue_key: the period keeps the queue key taken, so return a queue_key too",
                J::NAME
            )));
        }
        Some(d) => u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1),
    };
    let priority = job.priority();
    if priority > MAX_PRIORITY {
        return Err(Error::Config(format!(
            "priority {priority} of job `{}` is out of range: use 0 (first) to {MAX_PRIORITY} (last)",
            J::NAME
        )));
    }
    let rgroup = job.rate_group().unwrap_or_default();
    if !rgroup.is_empty() {
        check_key("rate_group", &rgroup)?;
    }
    Ok(Pending {
        name: J::NAME.to_owned(),
        args,
        qkey,
        xkey,
        rgroup,
        at_ms,
        delay_ms,
        qttl_ms,
        priority,
    })
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// The largest arguments a job may have (JSON bytes), so Redis memory stays bounded.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

/// Most jobs sent in one enqueue script call (bounds the script's run time).
const BULK_CHUNK: usize = 500;

impl Jobs {
    /// Enqueues `job` to run now.
    pub async fn enqueue<J: Job<S>, S>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
    ) -> Result<Enqueued> {
        self.store_one(partition, queue, pending(job, 0, 0)?).await
    }

    /// Enqueues `job` to run after `delay` (measured on the Redis server's clock).
    pub async fn enqueue_in<J: Job<S>, S>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
        delay: Duration,
    ) -> Result<Enqueued> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.store_one(partition, queue, pending(job, 0, delay_ms)?)
            .await
    }

    /// Enqueues `job` to run at `at` (a time in the past runs now).
    pub async fn enqueue_at<J: Job<S>, S>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
        at: SystemTime,
    ) -> Result<Enqueued> {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(1)
            .max(1);
        self.store_one(partition, queue, pending(job, at_ms, 0)?)
            .await
    }

    /// Enqueues many jobs at once (atomically per chunk of 500), in order. Answers one
    /// [`Enqueued`] per job, in the same order.
    pub async fn enqueue_bulk<J: Job<S>, S>(
        &self,
        partition: &str,
        queue: &str,
        jobs: &[J],
    ) -> Result<Vec<Enqueued>> {
        let pending: Vec<Pending> = jobs
            .iter()
            .map(|j| pending(j, 0, 0))
            .collect::<Result<_>>()?;
        self.store(partition, queue, pending).await
    }

    /// Enqueues `job` to run after `delay`, **replacing** the job holding its queue key if
    /// that one has not started yet (debounce): of a burst of calls, only the last one's
    /// job runs, `delay` after that last call. The replaced job ends `cancelled` (a caller
    /// of [`Jobs::wait_for`] on it learns so), with `replaced_by` naming its successor. The
    /// check and the replacement are one atomic script, so concurrent calls from any number
    /// of processes leave exactly one pending job.
    ///
    /// "Not started" means scheduled, queued or waiting for its execution key with no
    /// attempt counted (a job handed back at a worker's shutdown counts as not started).
    /// A job that runs, waits to retry, or completed within its
    /// [`unique_for`](Job::unique_for) is not replaced: the answer is
    /// [`Debounced::Duplicate`] and nothing is stored.
    ///
    /// The job must have a [`queue_key`](Job::queue_key) ([`Error::Config`] otherwise,
    /// nothing written).
    pub async fn enqueue_debounced<J: Job<S>, S>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
        delay: Duration,
    ) -> Result<Debounced> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        let p = pending(job, 0, delay_ms)?;
        if p.qkey.is_empty() {
            return Err(Error::Config(format!(
                "enqueue_debounced replaces the pending job with the same queue key, and job `{}` has none: return a queue_key",
                J::NAME
            )));
        }
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let id = new_id();
        let args = vec![
            id.clone(),
            queue.to_owned(),
            p.name,
            p.args,
            p.qkey,
            p.xkey,
            p.delay_ms.to_string(),
            crate::trace::to_store(),
            p.qttl_ms.to_string(),
            p.priority.to_string(),
            p.rgroup,
        ];
        let answer: Vec<String> = self
            .script("enqueue debounced", &scripts().debounce, partition, args)
            .await?;
        let out = match (answer.first().map(String::as_str), answer.get(1)) {
            (Some("dup"), Some(holder)) => Debounced::Duplicate(holder.clone()),
            (Some("ok"), Some(r)) if !r.is_empty() => Debounced::Replaced {
                id,
                replaced: r.clone(),
            },
            (Some("ok"), _) => Debounced::Queued(id),
            _ => {
                return Err(Error::Protocol {
                    op: "enqueue debounced",
                    detail: format!("unexpected answer {answer:?}"),
                });
            }
        };
        let state = match out {
            Debounced::Queued(_) => "enqueued",
            Debounced::Replaced { .. } => "debounced",
            Debounced::Duplicate(_) => "duplicate",
        };
        metrics::counter!(metric::JOBS, "partition" => partition.to_owned(),
            "queue" => queue.to_owned(), "state" => state)
        .increment(1);
        Ok(out)
    }

    async fn store_one(&self, partition: &str, queue: &str, p: Pending) -> Result<Enqueued> {
        let mut out = self.store(partition, queue, vec![p]).await?;
        out.pop().ok_or(Error::Protocol {
            op: "enqueue",
            detail: "no answer for the job".into(),
        })
    }

    async fn store(
        &self,
        partition: &str,
        queue: &str,
        jobs: Vec<Pending>,
    ) -> Result<Vec<Enqueued>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let mut out = Vec::with_capacity(jobs.len());
        // The caller's span is current here (this future runs in it): every job of the call
        // continues its trace.
        let trace = crate::trace::to_store();
        for chunk in jobs.chunks(BULK_CHUNK) {
            let mut args = Vec::with_capacity(1 + chunk.len() * 12);
            args.push(chunk.len().to_string());
            for p in chunk {
                args.extend(p.script_args(queue, &trace));
            }
            let answers: Vec<String> = self
                .script("enqueue", &scripts().enqueue, partition, args)
                .await?;
            for (a, p) in answers.into_iter().zip(chunk) {
                let e = match a.strip_prefix("dup:") {
                    Some(holder) => Enqueued::Duplicate(holder.to_owned()),
                    None => Enqueued::Queued(a),
                };
                let state = if matches!(e, Enqueued::Queued(_)) {
                    "enqueued"
                } else {
                    "duplicate"
                };
                metrics::counter!(metric::JOBS, "partition" => partition.to_owned(),
                    "queue" => queue.to_owned(), "state" => state)
                .increment(1);
                tracing::trace!(
                    partition,
                    queue,
                    job = p.name.as_str(),
                    id = e.id(),
                    state,
                    "enqueue"
                );
                out.push(e);
            }
        }
        Ok(out)
    }
}

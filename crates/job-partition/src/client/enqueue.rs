//! Enqueueing: a job now, after a delay, at a time, or many at once.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Jobs;
use crate::error::{Error, Result};
use crate::job::Job;
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
}

impl Pending {
    /// The script's arguments for this job (`enqueue.lua`'s per-job layout), with a new id.
    pub(crate) fn script_args(&self, queue: &str, trace: &str) -> [String; 10] {
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
            self.rgroup.clone(),
        ]
    }
}

pub(crate) fn pending<J: Job>(job: &J, at_ms: u64, delay_ms: u64) -> Result<Pending> {
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
    pub async fn enqueue<J: Job>(&self, partition: &str, queue: &str, job: &J) -> Result<Enqueued> {
        self.store_one(partition, queue, pending(job, 0, 0)?).await
    }

    /// Enqueues `job` to run after `delay` (measured on the Redis server's clock).
    pub async fn enqueue_in<J: Job>(
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
    pub async fn enqueue_at<J: Job>(
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
    pub async fn enqueue_bulk<J: Job>(
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
            let mut args = Vec::with_capacity(1 + chunk.len() * 10);
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

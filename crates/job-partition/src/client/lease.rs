//! Leases: what a worker does with the jobs it runs (claim, heartbeat, complete, fail,
//! release, reap) and what an operator sees of them ([`Jobs::leases`]).

use std::time::Duration;

use super::Jobs;
use crate::error::{Error, Result};
use crate::keys::check_name;
use crate::scripts::scripts;

/// Finished and dead jobs trimmed per queue per lease check (once a second per worker).
const TRIM_PER_CALL: u32 = 500;

/// A running job's lease, as [`Jobs::leases`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The job's id.
    pub id: String,
    /// Its registered name.
    pub name: String,
    /// The worker holding it (`<pid>-<random>`; empty if unknown).
    pub worker: String,
    /// How long until the lease expires (Redis' clock), in milliseconds; negative when it
    /// expired and the next lease check has not requeued the job yet.
    pub expires_in_ms: i64,
    /// How long ago the lease was last taken or renewed, in milliseconds.
    pub renewed_ms_ago: i64,
    /// The heartbeat interval its worker announced, in milliseconds (0 if unknown).
    pub heartbeat_ms: i64,
    /// Whether its worker stopped renewing it: not renewed for five heartbeat intervals.
    /// The job's queue slot and keys stay held until the lease expires.
    pub stalled: bool,
}

impl Lease {
    fn new(
        now: i64,
        id: &str,
        name: &str,
        worker: &str,
        expiry: i64,
        lease_ms: i64,
        beat_ms: i64,
    ) -> Self {
        let renewed_ms_ago = if lease_ms > 0 {
            now - (expiry - lease_ms)
        } else {
            0
        };
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            worker: worker.to_owned(),
            expires_in_ms: expiry - now,
            renewed_ms_ago,
            heartbeat_ms: beat_ms,
            stalled: beat_ms > 0 && renewed_ms_ago > beat_ms.saturating_mul(5),
        }
    }
}

/// A job claimed by a worker: its lease is identified by (id, token).
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) attempt: u32,
    pub(crate) name: String,
    pub(crate) args: String,
    /// The enqueuing span's stored trace context (see `crate::trace`), or empty.
    pub(crate) trace: String,
}

/// A finished job's outcome, as the worker records it (see [`Jobs::complete_many`]).
#[derive(Debug, Clone)]
pub(crate) struct Finished {
    pub(crate) id: String,
    /// The lease token it ran under.
    pub(crate) token: String,
    /// `completed` or `cancelled`.
    pub(crate) outcome: &'static str,
    /// The result a completed job set (JSON), if any.
    pub(crate) result: Option<String>,
}

/// What a heartbeat learned about a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    Ok,
    CancelAsked,
    Lost,
}

impl Jobs {
    /// Claims up to `want` jobs; when none started but rate-limited jobs wait, also how long
    /// until the first of them may start (the worker sleeps no longer than that).
    pub(crate) async fn claim_or_wait(
        &self,
        partition: &str,
        queue: &str,
        want: usize,
        lease: Duration,
        beat: Duration,
        worker: &str,
    ) -> Result<(Vec<Claimed>, Option<Duration>)> {
        let args = vec![
            queue.to_owned(),
            want.to_string(),
            lease.as_millis().to_string(),
            worker.to_owned(),
            beat.as_millis().to_string(),
        ];
        let flat: Vec<String> = self
            .script("claim", &scripts().claim, partition, args)
            .await?;
        if let [empty, ms] = flat.as_slice()
            && empty.is_empty()
        {
            // See rate.lua's rate_wait.
            let wait = Duration::from_millis(ms.parse().unwrap_or(1));
            return Ok((Vec::new(), Some(wait)));
        }
        let mut out = Vec::with_capacity(flat.len() / 7);
        for c in flat.chunks_exact(7) {
            out.push(Claimed {
                id: c[0].clone(),
                token: c[1].clone(),
                attempt: c[2].parse().unwrap_or(1),
                name: c[3].clone(),
                args: c[4].clone(),
                trace: c[6].clone(),
            });
        }
        Ok((out, None))
    }

    pub(crate) async fn heartbeat(
        &self,
        partition: &str,
        lease: Duration,
        running: &[(String, String)],
    ) -> Result<Vec<Beat>> {
        let mut args = Vec::with_capacity(1 + running.len() * 2);
        args.push(lease.as_millis().to_string());
        for (id, token) in running {
            args.push(id.clone());
            args.push(token.clone());
        }
        let v: Vec<i64> = self
            .script("heartbeat", &scripts().heartbeat, partition, args)
            .await?;
        Ok(v.into_iter()
            .map(|b| match b {
                0 => Beat::Ok,
                1 => Beat::CancelAsked,
                _ => Beat::Lost,
            })
            .collect())
    }

    /// Marks a running job finished (`completed` or `cancelled`), storing `result` (JSON)
    /// with a completed one. Answers 1, 2 (finished and a member of a flow or a batch: its
    /// outcome waits in the outbox, see [`Jobs::forward`]) or 0 (the lease was lost).
    pub(crate) async fn complete(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        outcome: &'static str,
        result: Option<&str>,
    ) -> Result<i64> {
        let done = [Finished {
            id: id.to_owned(),
            token: token.to_owned(),
            outcome,
            result: result.map(str::to_owned),
        }];
        let v = self.complete_many(partition, &done).await?;
        Ok(v.first().copied().unwrap_or(0))
    }

    /// [`Jobs::complete`] for any number of jobs in one script call, each fenced by its own
    /// token: answers one code per job, in order (a lost lease answers 0 for that job
    /// alone; the others are recorded).
    pub(crate) async fn complete_many(
        &self,
        partition: &str,
        done: &[Finished],
    ) -> Result<Vec<i64>> {
        let mut args = Vec::with_capacity(done.len() * 4);
        for d in done {
            args.push(d.id.clone());
            args.push(d.token.clone());
            args.push(d.outcome.to_owned());
            args.push(d.result.clone().unwrap_or_default());
        }
        let v: Vec<i64> = self
            .script("complete", &scripts().complete, partition, args)
            .await?;
        if v.len() != done.len() {
            return Err(Error::Protocol {
                op: "complete",
                detail: format!("{} answers for {} jobs", v.len(), done.len()),
            });
        }
        Ok(v)
    }

    /// Records a failure: retry after `retry` or, with None, to the dead set. With
    /// `keep_xkey`, a job that will retry keeps its execution key through its backoff.
    /// Answers 1 (retry), 2 (dead), 3 (dead, and a member of a flow or a batch) or 0 (lease
    /// lost: nothing changed).
    pub(crate) async fn fail(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        reason: &str,
        retry: Option<Duration>,
        keep_xkey: bool,
    ) -> Result<i64> {
        let delay = retry.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut reason = reason.to_owned();
        if reason.len() > 4096 {
            let mut cut = 4096;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let keep = if keep_xkey { "1" } else { "0" };
        let args = vec![
            id.to_owned(),
            token.to_owned(),
            reason,
            delay.to_string(),
            keep.to_owned(),
        ];
        self.script("fail", &scripts().fail, partition, args).await
    }

    /// Stores a running job's progress (JSON) under its lease; false if the lease was lost.
    pub(crate) async fn set_progress(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        progress: String,
    ) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned(), progress];
        let v: i64 = self
            .script("progress", &scripts().progress, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// Hands a running job back to its queue (shutdown); false if the lease was lost.
    pub(crate) async fn release(&self, partition: &str, id: &str, token: &str) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned()];
        let v: i64 = self
            .script("release", &scripts().release, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// Requeues jobs whose lease expired and trims finished and dead jobs beyond retention
    /// (by count and by age), a bounded number per call. Answers how many were requeued.
    pub(crate) async fn reap(&self, partition: &str, queue: &str) -> Result<u64> {
        let args = vec![
            queue.to_owned(),
            "100".to_owned(),
            TRIM_PER_CALL.to_string(),
        ];
        self.script("reap", &scripts().reap, partition, args).await
    }

    /// Flags a running job as told to stop but not ended (see [`JobState::Stopping`]);
    /// false when the lease was lost.
    pub(crate) async fn mark_stopping(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        reason: &str,
    ) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned(), reason.to_owned()];
        let v: i64 = self
            .script("mark stopping", &scripts().mark_stopping, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// The leases of a queue's running jobs, the soonest to expire first (at most `limit`).
    ///
    /// A lease whose worker stopped renewing it (a crashed or frozen process) is
    /// [`stalled`](Lease::stalled): its job still counts against the queue's limit and holds
    /// its keys until the lease expires, then the next lease check (every second, by any
    /// worker of the queue) puts it back in its queue. This is where an operator sees why a
    /// queue waits: `wharf-jobs leases PARTITION QUEUE` prints it.
    pub async fn leases(&self, partition: &str, queue: &str, limit: usize) -> Result<Vec<Lease>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let args = vec![queue.to_owned(), limit.max(1).to_string()];
        let flat: Vec<String> = self
            .script("leases", &scripts().leases, partition, args)
            .await?;
        let Some((now, rows)) = flat.split_first() else {
            return Err(Error::Protocol {
                op: "leases",
                detail: "empty answer".into(),
            });
        };
        // Scores come back as Redis formats doubles; integers in practice.
        let num = |v: &str| {
            v.parse::<i64>()
                .or_else(|_| v.parse::<f64>().map(|f| f as i64))
                .unwrap_or(0)
        };
        let now = num(now);
        Ok(rows
            .chunks_exact(6)
            .map(|r| Lease::new(now, &r[0], &r[1], &r[2], num(&r[3]), num(&r[4]), num(&r[5])))
            .collect())
    }
}

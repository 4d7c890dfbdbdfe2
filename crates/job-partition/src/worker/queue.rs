//! One queue's loop: claims jobs into free slots and hands each to its own task.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::Backoff;

use super::Inner;
use super::complete::Completer;
use super::keeper::{Keeper, Stop};
use super::run::JobRun;
use crate::client::Claimed;

/// How long shutdown waits for aborted jobs' tasks to end before it returns anyway.
const ABORT_WAIT: Duration = Duration::from_secs(2);

pub(super) struct QueueRunner {
    pub(super) inner: Arc<Inner>,
    pub(super) keeper: Arc<Keeper>,
    pub(super) partition: Arc<str>,
    pub(super) queue: Arc<str>,
    pub(super) sem: Arc<Semaphore>,
    /// Records this queue's finished jobs in batches.
    pub(super) completer: Completer,
    pub(super) concurrency: usize,
    pub(super) token: CancellationToken,
}

impl QueueRunner {
    pub(super) async fn run(self) {
        self.keeper.add_queue(&self.partition, &self.queue);
        self.claim_loop().await;
        self.drain().await;
        self.keeper.remove_queue(&self.partition, &self.queue);
    }

    /// Shutdown: waits for running jobs up to the grace period, then aborts them. A slot is
    /// free only once its job's task has ended and its outcome is recorded.
    async fn drain(&self) {
        let all = u32::try_from(self.concurrency).unwrap_or(u32::MAX);
        let grace = self.inner.settings.shutdown_grace;
        if tokio::time::timeout(grace, self.sem.acquire_many(all))
            .await
            .is_ok()
        {
            return;
        }
        let (p, q) = (&self.partition, &self.queue);
        tracing::warn!(
            jobs = self.keeper.held_in(p, q),
            "shutdown grace passed: aborting running jobs and putting them back in their queue"
        );
        self.keeper.stop_queue(p, q, Stop::Shutdown);
        if tokio::time::timeout(ABORT_WAIT, self.sem.acquire_many(all))
            .await
            .is_err()
        {
            tracing::error!(
                jobs = self.keeper.held_in(p, q),
                "jobs did not end when aborted at shutdown: their code blocks a thread. They keep their leases and keys until they end (or this process exits, and then until their leases expire)"
            );
        }
    }

    async fn claim_loop(&self) {
        let s = &self.inner.settings;
        let errors = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0u32;
        let mut idle = Duration::from_millis(2);
        loop {
            // No claim before the lease thread can renew what it claims.
            if !self.keeper.is_connected() {
                if self.sleep(s.poll_interval).await {
                    return;
                }
                continue;
            }
            // Wait for a free slot (or shutdown).
            let first = tokio::select! {
                _ = self.token.cancelled() => return,
                p = Arc::clone(&self.sem).acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let mut permits = vec![first];
            while permits.len() < s.batch {
                match Arc::clone(&self.sem).try_acquire_owned() {
                    Ok(p) => permits.push(p),
                    Err(_) => break,
                }
            }
            // The lease is counted from before the request is sent (see the keeper).
            let sent = Instant::now();
            let claimed = self
                .inner
                .jobs
                .claim_or_wait(
                    &self.partition,
                    &self.queue,
                    permits.len(),
                    s.lease,
                    s.heartbeat_every,
                    &self.inner.id,
                )
                .await;
            let (claimed, rate_wait) = match claimed {
                Ok(c) => {
                    failures = 0;
                    c
                }
                Err(e) => {
                    let d = errors.delay(failures);
                    failures = failures.saturating_add(1);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "claim failed");
                    drop(permits);
                    if self.sleep(d).await {
                        return;
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                // Rate-limited jobs: wake when the first may start, if that is sooner.
                let nap = rate_wait.map_or(idle, |w| w.min(idle));
                if self.sleep(nap).await {
                    return;
                }
                idle = (idle * 2).min(s.poll_interval);
                continue;
            }
            idle = Duration::from_millis(2);
            for job in claimed {
                let Some(permit) = permits.pop() else { break };
                self.spawn_job(job, sent, permit);
            }
        }
    }

    /// Sleeps; true if shutdown fired meanwhile.
    async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = self.token.cancelled() => true,
            _ = tokio::time::sleep(d) => false,
        }
    }

    fn spawn_job(&self, job: Claimed, sent: Instant, permit: OwnedSemaphorePermit) {
        let (lease, stop) = self.keeper.hold(&self.partition, &self.queue, &job, sent);
        let run = JobRun {
            inner: Arc::clone(&self.inner),
            keeper: Arc::clone(&self.keeper),
            partition: Arc::clone(&self.partition),
            queue: Arc::clone(&self.queue),
            completer: self.completer.clone(),
            lease,
        };
        let span =
            tracing::info_span!("wharf_job", id = %job.id, job = %job.name, attempt = job.attempt);
        // Before the span is first entered: a parent can be set only until then.
        crate::trace::continue_stored(&span, &job.trace);
        tokio::spawn(
            async move {
                run.execute(job, stop).await;
                // The slot frees only now: the task ended and its outcome is recorded.
                drop(permit);
            }
            .instrument(span),
        );
    }
}

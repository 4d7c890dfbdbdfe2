//! One job's run: decode, start its task, wait until the task has really ended, record the
//! outcome (fenced by the lease token), release the lease.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;

use super::Inner;
use super::keeper::{JobKey, Keeper, Stop};
use crate::client::Claimed;
use crate::error::Result;
use crate::hooks::JobEvent;
use crate::job::{Decoded, JobContext};
use crate::metric_names::{METRIC_DURATION, METRIC_JOBS};

type RunFn = Box<
    dyn FnOnce(JobContext) -> futures::future::BoxFuture<'static, Result<(), crate::JobError>>
        + Send,
>;

/// What one job's run came to.
enum Outcome {
    Done,
    Failed(String),
    Stopped(Stop),
}

/// Stops the lease thread renewing a job's lease when dropped.
struct Release<'a>(&'a Keeper, &'a JobKey);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

pub(super) struct JobRun {
    pub(super) inner: Arc<Inner>,
    pub(super) keeper: Arc<Keeper>,
    pub(super) partition: String,
    pub(super) queue: String,
    pub(super) key: JobKey,
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the job's task was aborted".into();
    }
    let p = e.into_panic();
    let msg = p
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".into());
    format!("the job panicked: {msg}")
}

impl JobRun {
    fn count(&self, state: &'static str) {
        metrics::counter!(METRIC_JOBS, "partition" => self.partition.clone(),
            "queue" => self.queue.clone(), "state" => state)
        .increment(1);
    }

    pub(super) async fn execute(&self, job: Claimed, stop: CancellationToken) {
        // Only once the task has ended and the outcome is recorded does the lease thread stop
        // renewing the lease; on every path, a panicking hook included, so a job nobody runs
        // any more is not kept leased.
        let _release = Release(&self.keeper, &self.key);
        self.run(&job, stop).await;
    }

    async fn run(&self, job: &Claimed, stop: CancellationToken) {
        let ev = JobEvent {
            partition: &self.partition,
            queue: &self.queue,
            id: &job.id,
            name: &job.name,
            attempt: job.attempt,
        };
        let hooks = &self.inner.hooks;
        let Decoded {
            policy,
            retry_delay,
            run,
        } = match self
            .inner
            .registry
            .decode(&job.name, &job.args, job.attempt)
        {
            Ok(d) => d,
            Err(reason) => {
                tracing::error!(%reason, "job cannot run: sent to the dead set");
                self.record_failure(job, &reason, None, false).await;
                hooks.on_dead(&ev, &reason);
                return;
            }
        };
        let max = policy.max_attempts;
        if job.attempt > max {
            let reason = format!(
                "its last allowed attempt ({max} of max_attempts = {max}) was interrupted (its worker crashed or lost the lease); not started again"
            );
            tracing::error!(%reason, "job sent to the dead set");
            self.record_failure(job, &reason, None, false).await;
            hooks.on_dead(&ev, &reason);
            return;
        }
        if stop.is_cancelled() {
            // Stopped between the claim and now: the job never started.
            let why = self.keeper.why(&self.key).unwrap_or(Stop::Shutdown);
            return self.stopped(job, why, &ev).await;
        }
        hooks.before(&ev);
        let started = Instant::now();
        let outcome = self.perform(job, run, policy.timeout, stop).await;
        let elapsed = started.elapsed();
        metrics::histogram!(METRIC_DURATION, "partition" => self.partition.clone(),
            "queue" => self.queue.clone())
        .record(elapsed.as_secs_f64());
        match outcome {
            Outcome::Done => {
                if self.finish(job, "completed").await {
                    self.count("completed");
                    hooks.after(&ev, elapsed);
                }
            }
            Outcome::Failed(msg) => {
                let p = policy;
                let retry = (p.retryable && job.attempt < p.max_attempts).then_some(retry_delay);
                tracing::warn!(error = %msg, will_retry = retry.is_some(), "job failed");
                match self
                    .record_failure(job, &msg, retry, p.keep_xkey_on_retry)
                    .await
                {
                    Some(true) => hooks.on_error(&ev, &msg, true),
                    Some(false) => {
                        hooks.on_error(&ev, &msg, false);
                        hooks.on_dead(&ev, &msg);
                    }
                    None => {}
                }
            }
            Outcome::Stopped(why) => self.stopped(job, why, &ev).await,
        }
    }

    /// Runs the job's task to its real end and says what it came to. The lease thread stops
    /// it (cancel, timeout, lost lease, shutdown) by aborting the task; the outcome is read
    /// only once the task is gone, so nothing is recorded and no key or slot is released
    /// while job code may still run.
    async fn perform(
        &self,
        job: &Claimed,
        run: RunFn,
        timeout: Option<Duration>,
        stop: CancellationToken,
    ) -> Outcome {
        let ctx = JobContext {
            id: job.id.clone(),
            partition: self.partition.clone(),
            queue: self.queue.clone(),
            attempt: job.attempt,
            cancel: stop.child_token(),
        };
        let task = tokio::spawn(run(ctx));
        self.keeper.started(&self.key, task.abort_handle(), timeout);
        let result = task.await;
        match (self.keeper.why(&self.key), result) {
            (Some(Stop::TimedOut), _) => Outcome::Failed(format!(
                "max_execution_time of {:?} passed: the job's task was aborted",
                timeout.unwrap_or_default()
            )),
            // It finished by itself (a stop came too late to matter): record it as it is,
            // under the lease token (a worker that lost the lease is fenced off).
            (_, Ok(Ok(()))) => Outcome::Done,
            (Some(why), _) => Outcome::Stopped(why),
            (None, Ok(Err(e))) => Outcome::Failed(e.to_string()),
            (None, Err(e)) => Outcome::Failed(panic_message(e)),
        }
    }

    async fn stopped(&self, job: &Claimed, why: Stop, ev: &JobEvent<'_>) {
        match why {
            Stop::Cancel => {
                self.inner.hooks.on_cancel(ev);
                if self.finish(job, "cancelled").await {
                    self.count("cancelled");
                }
            }
            Stop::Lost => {
                tracing::warn!(
                    "stopped the job: its lease could not be proved; it runs again once the lease expires"
                );
            }
            Stop::Shutdown => {
                let released = self
                    .inner
                    .jobs
                    .release(&self.partition, &job.id, &job.token)
                    .await;
                match released {
                    Ok(true) => tracing::info!("aborted at shutdown and put back in its queue"),
                    Ok(false) => tracing::info!("aborted at shutdown; its lease was already lost"),
                    Err(e) => {
                        tracing::warn!(error = %e, "aborted at shutdown; it runs again when its lease expires")
                    }
                }
            }
            Stop::TimedOut => {}
        }
    }

    /// Marks a job finished; false when the lease was lost (fenced off) or Redis failed.
    async fn finish(&self, job: &Claimed, outcome: &'static str) -> bool {
        let r = self
            .with_retries("complete", || {
                self.inner
                    .jobs
                    .complete(&self.partition, &job.id, &job.token, outcome)
            })
            .await;
        match r {
            Some(true) => true,
            Some(false) => {
                self.count("lost_lease");
                tracing::warn!(
                    "the job's lease was lost before it finished: its result was not recorded (another worker runs it)"
                );
                false
            }
            None => false,
        }
    }

    /// Records a failure; Some(true) retry scheduled, Some(false) dead, None lost or error.
    async fn record_failure(
        &self,
        job: &Claimed,
        msg: &str,
        retry: Option<Duration>,
        keep_xkey: bool,
    ) -> Option<bool> {
        let r = self
            .with_retries("fail", || {
                self.inner
                    .jobs
                    .fail(&self.partition, &job.id, &job.token, msg, retry, keep_xkey)
            })
            .await?;
        match r {
            1 => {
                self.count("retried");
                Some(true)
            }
            2 => {
                self.count("dead");
                Some(false)
            }
            _ => {
                self.count("lost_lease");
                None
            }
        }
    }

    /// Retries a finishing call while Redis is unreachable, for at most one lease (after
    /// that another worker owns the job anyway; the lease thread keeps renewing it
    /// meanwhile, so the job is not run twice while its result is being recorded).
    async fn with_retries<T, F, Fut>(&self, op: &str, mut f: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let until = Instant::now() + self.inner.settings.lease;
        let backoff = Backoff::exponential(Duration::from_millis(50), Duration::from_secs(2));
        let mut n = 0;
        loop {
            match f().await {
                Ok(v) => return Some(v),
                Err(e) if Instant::now() < until => {
                    tracing::warn!(error = %e, op, "could not record the job's result; retrying");
                    tokio::time::sleep(backoff.delay(n)).await;
                    n += 1;
                }
                Err(e) => {
                    tracing::error!(error = %e, op, "gave up recording the job's result; it runs again after its lease expires");
                    return None;
                }
            }
        }
    }
}

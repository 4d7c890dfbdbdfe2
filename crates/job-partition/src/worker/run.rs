//! One job's run: decode, start its task, wait until the task has really ended, record the
//! outcome (fenced by the lease token), release the lease.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use wharf_core::Backoff;
use wharf_core::supervisor::panic_message;

use super::Inner;
use super::complete::Completer;
use super::keeper::{Keeper, LeaseId, Stop};
use crate::client::{Claimed, Finished};
use crate::hooks::JobEvent;
use crate::job::{Decoded, JobContext, RunFn, Undecodable};
use crate::metrics as metric;

/// What one job's run came to.
enum Outcome {
    /// Completed, with the result the job set (JSON), if any.
    Done(Option<String>),
    Failed(String),
    Stopped(Stop),
}

/// Stops the lease thread renewing a job's lease when dropped.
struct Release<'a>(&'a Keeper, LeaseId);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

pub(super) struct JobRun {
    pub(super) inner: Arc<Inner>,
    pub(super) keeper: Arc<Keeper>,
    pub(super) partition: Arc<str>,
    pub(super) queue: Arc<str>,
    pub(super) completer: Completer,
    pub(super) lease: LeaseId,
}

fn join_error_message(e: tokio::task::JoinError) -> String {
    if e.is_cancelled() {
        return "the job's task was aborted".into();
    }
    format!(
        "the job panicked: {}",
        panic_message(e.into_panic().as_ref())
    )
}

impl JobRun {
    fn count(&self, state: &'static str) {
        metrics::counter!(metric::JOBS, "partition" => self.partition.clone(),
            "queue" => self.queue.clone(), "state" => state)
        .increment(1);
    }

    /// Calls the application's code outside the job's task (a hook, or a method of the
    /// job): a panic in it is caught, logged with the job's id and counted, and the run goes
    /// on as if it had returned (None).
    fn call<T>(&self, callback: &'static str, id: &str, f: impl FnOnce() -> T) -> Option<T> {
        match std::panic::catch_unwind(AssertUnwindSafe(f)) {
            Ok(v) => Some(v),
            Err(p) => {
                self.callback_panicked(callback, id, &panic_message(p.as_ref()));
                None
            }
        }
    }

    fn callback_panicked(&self, callback: &'static str, id: &str, message: &str) {
        metrics::counter!(metric::CALLBACK_PANICS, "partition" => self.partition.clone(),
            "queue" => self.queue.clone(), "callback" => callback)
        .increment(1);
        tracing::error!(
            id,
            callback,
            panic = message,
            "the application's code panicked where the worker called it; the panic was caught and counted, the job's outcome stands"
        );
    }

    /// An error's text, for the job's record; its `Display` is the application's code.
    fn error_text(&self, id: &str, e: crate::JobError) -> String {
        self.call("JobError::fmt", id, move || e.to_string())
            .unwrap_or_else(|| "the job failed with an error whose Display panicked (its panic is in the worker's log)".into())
    }

    pub(super) async fn execute(&self, job: Claimed, stop: CancellationToken) {
        // Only once the task has ended and the outcome is recorded does the lease thread stop
        // renewing the lease; on every path, an unexpected panic of this run included (the
        // application's code is called under `call`, so its panics never get here), so a job
        // nobody runs any more is not kept leased.
        let _release = Release(&self.keeper, self.lease);
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
        let (reg, id) = (&self.inner.registry, job.id.as_str());
        // Decoding reads the job's own methods; a panic in one is caught inside, and one in
        // its destructor (on the way out of a failed decode) here.
        let decoded = self
            .call("Job::drop", id, || {
                reg.decode(&job.name, &job.args, job.attempt)
            })
            .unwrap_or_else(|| {
                Err(Undecodable {
                    reason:
                        "the job type's destructor panicked while the job was decoded; not started"
                            .into(),
                    panicked: None,
                })
            });
        let Decoded {
            policy,
            retry_delay,
            backoff_panic,
            run,
        } = match decoded {
            Ok(d) => d,
            Err(Undecodable { reason, panicked }) => {
                if let Some(method) = panicked {
                    self.callback_panicked(method, id, &reason);
                }
                tracing::error!(%reason, "job cannot run: sent to the dead set");
                self.record_failure(job, &reason, None, false).await;
                self.call("on_dead", id, || hooks.on_dead(&ev, &reason));
                return;
            }
        };
        if let Some(reason) = backoff_panic {
            // The default backoff stands in: a delay breaks no rule.
            self.callback_panicked("Job::backoff", id, &reason);
        }
        let max = policy.max_attempts;
        if job.attempt > max {
            self.call("Job::drop", id, move || drop(run));
            let reason = format!(
                "its last allowed attempt ({max} of max_attempts = {max}) was interrupted (its worker crashed or lost the lease); not started again"
            );
            tracing::error!(%reason, "job sent to the dead set");
            self.record_failure(job, &reason, None, false).await;
            self.call("on_dead", id, || hooks.on_dead(&ev, &reason));
            return;
        }
        if stop.is_cancelled() {
            // Stopped between the claim and now: the job never started.
            self.call("Job::drop", id, move || drop(run));
            let why = self.keeper.why(self.lease).unwrap_or(Stop::Shutdown);
            return self.stopped(job, why, &ev).await;
        }
        self.call("before", id, || hooks.before(&ev));
        let started = Instant::now();
        let outcome = self.perform(job, run, policy.timeout, stop).await;
        let elapsed = started.elapsed();
        metrics::histogram!(metric::DURATION, "partition" => self.partition.clone(),
            "queue" => self.queue.clone())
        .record(elapsed.as_secs_f64());
        match outcome {
            Outcome::Done(result) => {
                if self.finish(job, "completed", result.as_deref()).await {
                    self.count("completed");
                    self.call("after", id, || hooks.after(&ev, elapsed));
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
                    Some(true) => {
                        self.call("on_error", id, || hooks.on_error(&ev, &msg, true));
                    }
                    Some(false) => {
                        self.call("on_error", id, || hooks.on_error(&ev, &msg, false));
                        self.call("on_dead", id, || hooks.on_dead(&ev, &msg));
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
        let slot = Arc::new(Mutex::new(None));
        let ctx = JobContext {
            id: job.id.clone(),
            partition: Arc::clone(&self.partition),
            queue: Arc::clone(&self.queue),
            attempt: job.attempt,
            cancel: stop.child_token(),
            token: job.token.clone(),
            jobs: self.inner.jobs.clone(),
            result: Arc::clone(&slot),
            state: Arc::new(()),
        };
        // `perform` is called inside the task: code it runs before returning its future is
        // the job's too, and a panic there a failed attempt. The task runs in the run's span
        // (`wharf_job`), so the job's own spans, and the trace context of what it sends on,
        // continue the job's trace.
        let task = tokio::spawn(async move { run(ctx).await }.instrument(tracing::Span::current()));
        self.keeper
            .started(self.lease, task.abort_handle(), timeout);
        let result = task.await;
        match (self.keeper.why(self.lease), result) {
            (Some(Stop::TimedOut), _) => Outcome::Failed(format!(
                "max_execution_time of {:?} passed: the job's task was aborted",
                timeout.unwrap_or_default()
            )),
            // It finished by itself (a stop came too late to matter): record it as it is,
            // under the lease token (a worker that lost the lease is fenced off).
            (_, Ok(Ok(()))) => Outcome::Done(slot.lock().ok().and_then(|mut r| r.take())),
            (Some(why), _) => Outcome::Stopped(why),
            (None, Ok(Err(e))) => Outcome::Failed(self.error_text(&job.id, e)),
            (None, Err(e)) => Outcome::Failed(join_error_message(e)),
        }
    }

    async fn stopped(&self, job: &Claimed, why: Stop, ev: &JobEvent<'_>) {
        match why {
            Stop::Cancel => {
                let hooks = &self.inner.hooks;
                self.call("on_cancel", ev.id, || hooks.on_cancel(ev));
                if self.finish(job, "cancelled", None).await {
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

    /// Marks a job finished (with the queue's other jobs that finish meanwhile, in one call:
    /// see `complete`); false when the lease was lost (fenced off) or Redis failed.
    async fn finish(&self, job: &Claimed, outcome: &'static str, result: Option<&str>) -> bool {
        let r = self
            .with_retries("complete", || {
                self.completer.complete(Finished {
                    id: job.id.clone(),
                    token: job.token.clone(),
                    outcome,
                    result: result.map(str::to_owned),
                })
            })
            .await;
        match r {
            Some(2) => {
                self.forward(job).await;
                true
            }
            Some(1) => true,
            Some(_) => {
                self.count("lost_lease");
                tracing::warn!(
                    "the job's lease was lost before it finished: its result was not recorded (another worker runs it)"
                );
                false
            }
            None => false,
        }
    }

    /// Counts a finished member of a flow or a batch into it (the second step; see
    /// `client::flow`). A failure is only logged: the outcome waits in the outbox, and the
    /// lease check of any worker of this partition forwards it within about a second.
    async fn forward(&self, job: &Claimed) {
        // The job is finished in Redis: stop renewing its lease now (a renewal would be
        // answered "lost" and counted as such).
        self.keeper.release(self.lease);
        #[cfg(feature = "test-util")]
        if std::env::var_os(crate::testing::STALL_BEFORE_FORWARD).is_some() {
            // Tests kill the process here, between the two steps.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let call = self.inner.jobs.forward(&self.partition, &job.id);
        match tokio::time::timeout(self.inner.jobs.response_timeout().saturating_mul(4), call).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "could not count the job into its flow or batch; the lease check will")
            }
            Err(_) => tracing::warn!(
                "counting the job into its flow or batch timed out; the lease check will"
            ),
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
            2 | 3 => {
                if r == 3 {
                    self.forward(job).await;
                }
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
    ///
    /// Bounded by time, not by a count of attempts: what matters is whether this worker
    /// still owns the job, so an attempts-and-backoff retry policy does not fit; the
    /// delays are wharf-core's `Backoff`.
    async fn with_retries<T, E, F, Fut>(&self, op: &str, mut f: F) -> Option<T>
    where
        E: std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = std::result::Result<T, E>>,
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

//! `Scheduler`: fires the due ticks of the schedules of some partitions.

use std::fmt;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;

use super::spec::{NEVER, Schedule};
use crate::client::{Jobs, Pending};
use crate::error::{Error, Result};
use crate::keys::check_name;
use crate::scripts::scripts;

/// Most due schedules of one partition handled in one pass.
const DUE_MAX: usize = 100;

/// Fires the due ticks of the schedules of some partitions.
///
/// Run as many as you like, in any processes on any machines: each schedule's next tick
/// lives in Redis, and one script enqueues a tick's jobs and advances the next tick
/// together, only if no other scheduler did it first. So a tick fires exactly once while
/// at least one scheduler runs, and no leader is needed. A scheduler that loses Redis
/// keeps trying (every call has the connection's timeout, retries back off up to 5 s).
///
/// Standalone with [`Scheduler::run`], or inside a worker with
/// [`WorkerBuilder::schedules`](crate::WorkerBuilder::schedules).
#[derive(Clone)]
pub struct Scheduler {
    jobs: Jobs,
    partitions: Vec<String>,
    poll: Duration,
}

impl fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scheduler")
            .field("partitions", &self.partitions)
            .field("poll", &self.poll)
            .finish_non_exhaustive()
    }
}

impl Scheduler {
    /// A scheduler for the schedules of `partitions`; fails with [`Error::Config`] on a bad
    /// partition name or none at all.
    pub fn new<S: Into<String>>(
        jobs: Jobs,
        partitions: impl IntoIterator<Item = S>,
    ) -> Result<Self> {
        let partitions: Vec<String> = partitions.into_iter().map(Into::into).collect();
        if partitions.is_empty() {
            return Err(Error::Config(
                "a scheduler needs at least one partition".into(),
            ));
        }
        for p in &partitions {
            check_name("partition", p)?;
        }
        Ok(Self {
            jobs,
            partitions,
            poll: Duration::from_millis(500),
        })
    }

    /// How often it looks for new or changed schedules when no tick is due sooner
    /// (default 500 ms, at least 10 ms). A due tick is fired within this interval.
    pub fn poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Fires due ticks until `shutdown` fires. Redis errors are logged and retried with
    /// backoff; they never end the loop.
    pub async fn run(self, shutdown: CancellationToken) {
        let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5));
        let mut failures = 0u32;
        loop {
            let wait = match self.tick().await {
                Ok(wait) => {
                    failures = 0;
                    wait
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff.delay(failures);
                    tracing::warn!(error = %e, retry_in = ?wait, "scheduler pass failed");
                    wait
                }
            };
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass: fires every due tick of every partition. Answers how long until the next
    /// tick (at most the poll interval).
    pub async fn tick(&self) -> Result<Duration> {
        let mut wait = self.poll;
        for p in &self.partitions {
            wait = wait.min(self.tick_partition(p).await?);
        }
        Ok(wait)
    }

    async fn tick_partition(&self, partition: &str) -> Result<Duration> {
        let answer: Vec<redis::Value> = self
            .jobs
            .script(
                "due schedules",
                &scripts().sched_due,
                partition,
                vec![DUE_MAX.to_string()],
            )
            .await?;
        let mut it = answer.into_iter();
        let now: i64 = text(it.next()).parse().unwrap_or(0);
        let later: Option<i64> = text(it.next()).parse::<f64>().ok().map(|f| f as i64);
        let mut due = 0;
        for row in it {
            due += 1;
            let row: Vec<String> = redis::from_redis_value(row).map_err(|e| Error::Protocol {
                op: "due schedules",
                detail: e.to_string(),
            })?;
            self.fire(partition, now, row).await?;
        }
        if due == DUE_MAX {
            return Ok(Duration::ZERO);
        }
        Ok(match later {
            Some(l) if l > now => Duration::from_millis((l - now) as u64),
            _ => self.poll,
        })
    }

    /// Fires one due schedule's ticks (or learns that another scheduler did).
    async fn fire(&self, partition: &str, now: i64, row: Vec<String>) -> Result<()> {
        let Ok::<[String; 14], _>(
            [
                name,
                ver,
                next,
                when,
                missed,
                grace,
                job,
                args,
                queue,
                qkey,
                xkey,
                rgroup,
                qttl,
                prio,
            ],
        ) = row.try_into()
        else {
            return Err(Error::Protocol {
                op: "due schedules",
                detail: "a row of the wrong length".into(),
            });
        };
        let Some(schedule) = Schedule::from_stored(&when, &missed, &grace) else {
            tracing::error!(partition, schedule = %name, when, "a schedule this version cannot read; remove or set it again");
            return Ok(());
        };
        let Ok(next_ms) = next.parse::<i64>() else {
            return Ok(());
        };
        let plan = schedule.plan(next_ms, now);
        let pending = Pending {
            name: job,
            args,
            qkey,
            xkey,
            rgroup,
            at_ms: 0,
            delay_ms: 0,
            // Stored by `Jobs::schedule` from the job (empty from a schedule set before
            // these fields existed: none, and priority 0).
            qttl_ms: qttl.parse().unwrap_or(0),
            priority: prio.parse().unwrap_or(0),
        };
        let trace = String::new();
        let mut argv = vec![plan.fires.len().to_string()];
        for _ in &plan.fires {
            argv.extend(pending.script_args(&queue, &trace));
        }
        let last = plan.fires.last().map(i64::to_string).unwrap_or_default();
        argv.extend([name.clone(), ver, next, plan.next.to_string(), last]);
        let answer: Vec<String> = self
            .jobs
            .script("tick", &scripts().tick, partition, argv)
            .await?;
        if answer.is_empty() {
            tracing::debug!(partition, schedule = %name, "another scheduler fired this tick");
            return Ok(());
        }
        let skipped = plan.fires.is_empty();
        tracing::debug!(partition, schedule = %name, fired = plan.fires.len(), skipped,
            next = (plan.next != NEVER).then_some(plan.next), "schedule ticked");
        metrics::counter!(crate::metrics::SCHEDULE_TICKS, "partition" => partition.to_owned(),
            "schedule" => name)
        .increment(plan.fires.len() as u64);
        Ok(())
    }
}

fn text(v: Option<redis::Value>) -> String {
    v.and_then(|v| redis::from_redis_value::<String>(v).ok())
        .unwrap_or_default()
}

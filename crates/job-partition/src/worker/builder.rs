//! `WorkerBuilder`: a worker's queues, lease timing, hooks, and the checks `build` makes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Worker};
use crate::client::Jobs;
use crate::error::{Error, Result};
use crate::hooks::{Hooks, NoHooks};
use crate::job::Registry;
use crate::keys::check_name;

/// Settings of a worker process (shared by all its queues).
#[derive(Clone)]
pub(super) struct Settings {
    pub(super) lease: Duration,
    pub(super) margin: Option<Duration>,
    pub(super) heartbeat_every: Duration,
    pub(super) poll_interval: Duration,
    pub(super) reap_every: Duration,
    pub(super) shutdown_grace: Duration,
    pub(super) batch: usize,
}

impl Settings {
    /// The margin by which a worker stops a job before its lease can expire in Redis.
    pub(super) fn margin(&self) -> Duration {
        self.margin.unwrap_or(self.lease / 5)
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    jobs: Jobs,
    registry: Registry,
    hooks: Arc<dyn Hooks>,
    queues: Vec<(String, String, usize)>,
    schedules: Vec<String>,
    settings: Settings,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("registry", &self.registry)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl WorkerBuilder {
    /// A builder with the defaults.
    pub(super) fn new(jobs: Jobs, registry: Registry) -> Self {
        Self {
            jobs,
            registry,
            hooks: Arc::new(NoHooks),
            queues: Vec::new(),
            schedules: Vec::new(),
            settings: Settings {
                lease: Duration::from_secs(15),
                margin: None,
                heartbeat_every: Duration::from_millis(250),
                poll_interval: Duration::from_millis(100),
                reap_every: Duration::from_secs(1),
                shutdown_grace: Duration::from_secs(10),
                batch: 50,
            },
        }
    }

    /// Also fire the due ticks of `partition`'s schedules (a [`Scheduler`](crate::Scheduler)
    /// inside this worker, stopped with it). Any number of workers may do so: each tick
    /// still fires once.
    pub fn schedules(mut self, partition: &str) -> Self {
        self.schedules.push(partition.to_owned());
        self
    }

    /// Work on `queue` of `partition`, running at most `concurrency` of its jobs at once in
    /// this process (the queue's global limit, [`Jobs::set_limit`], holds across processes).
    pub fn queue(mut self, partition: &str, queue: &str, concurrency: usize) -> Self {
        self.queues
            .push((partition.to_owned(), queue.to_owned(), concurrency));
        self
    }

    /// How long a claimed job stays leased without a heartbeat (default 15 s). A crashed
    /// worker's jobs run again on another worker after this long; a worker cut off from
    /// Redis stops its jobs after `lease - lease_margin` from the start of its last
    /// successful heartbeat.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.settings.lease = lease;
        self
    }

    /// How long before its lease can expire in Redis a worker that cannot renew it stops a
    /// job (default: a fifth of the lease). It covers the time an abort takes to land and
    /// the lease thread's own scheduling delays; see the guide, "Leases under a partition".
    pub fn lease_margin(mut self, margin: Duration) -> Self {
        self.settings.margin = Some(margin);
        self
    }

    /// How often leases are renewed and cancel requests are checked (default 250 ms, so a
    /// running job is cancelled well within a second).
    pub fn heartbeat_every(mut self, every: Duration) -> Self {
        self.settings.heartbeat_every = every;
        self
    }

    /// The longest wait between polls of an idle queue (default 100 ms).
    pub fn poll_interval(mut self, every: Duration) -> Self {
        self.settings.poll_interval = every;
        self
    }

    /// How long shutdown waits for running jobs before aborting them (default 10 s).
    /// Aborted jobs are put back at their place in their queue (the interrupted attempt is
    /// not counted); if Redis cannot be reached then, they run again once their leases expire.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.settings.shutdown_grace = grace;
        self
    }

    /// Most jobs claimed in one call (default 50).
    pub fn batch(mut self, batch: usize) -> Self {
        self.settings.batch = batch.max(1);
        self
    }

    /// Hooks called around each job.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Arc::new(hooks);
        self
    }

    /// Checks the settings.
    ///
    /// The lease must leave room for the margin, one heartbeat call that fails only at the
    /// Redis response timeout, and the next two heartbeat intervals:
    /// `lease >= lease_margin + response_timeout + 2 × heartbeat_every`. With less, a
    /// worker whose Redis answers slowly but within its timeout would stop its own jobs.
    pub fn build(self) -> Result<Worker> {
        check_timing(&self.settings, self.jobs.response_timeout())?;
        for (p, q, c) in &self.queues {
            check_name("partition", p)?;
            check_name("queue", q)?;
            if *c == 0 {
                return Err(Error::Config(format!(
                    "concurrency of queue {p}/{q} must be at least 1"
                )));
            }
        }
        let scheduler = match self.schedules.is_empty() {
            true => None,
            false => Some(crate::Scheduler::new(self.jobs.clone(), self.schedules)?),
        };
        let id = format!("{}-{:08x}", std::process::id(), rand::random::<u32>());
        Ok(Worker {
            inner: Arc::new(Inner {
                jobs: self.jobs,
                registry: self.registry,
                hooks: self.hooks,
                settings: self.settings,
                id,
            }),
            queues: self.queues,
            scheduler,
        })
    }
}

fn check_timing(s: &Settings, response_timeout: Duration) -> Result<()> {
    let margin = s.margin();
    if s.heartbeat_every.is_zero() || margin.is_zero() || margin >= s.lease {
        return Err(Error::Config(format!(
            "heartbeat_every ({:?}) and lease_margin ({margin:?}) must be above zero, and the margin below the lease ({:?})",
            s.heartbeat_every, s.lease
        )));
    }
    let needed = margin + response_timeout + s.heartbeat_every * 2;
    if s.lease < needed {
        return Err(Error::Config(format!(
            "lease ({:?}) is too short: a worker stops its jobs lease_margin ({margin:?}) before their lease can expire, counted from the start of its last successful heartbeat, so the lease must cover the margin, one heartbeat that fails only at the Redis response timeout ({response_timeout:?}) and two heartbeat intervals ({:?} each): at least {needed:?}. Raise WorkerBuilder::lease, or lower Config::response_timeout, heartbeat_every or lease_margin",
            s.lease, s.heartbeat_every
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn settings(lease_ms: u64, beat_ms: u64) -> Settings {
        Settings {
            lease: Duration::from_millis(lease_ms),
            margin: None,
            heartbeat_every: Duration::from_millis(beat_ms),
            poll_interval: Duration::from_millis(100),
            reap_every: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(1),
            batch: 1,
        }
    }

    #[test]
    fn the_defaults_leave_room_for_a_timed_out_heartbeat() {
        assert!(check_timing(&settings(15_000, 250), Duration::from_secs(5)).is_ok());
    }

    #[test]
    fn a_lease_shorter_than_the_response_timeout_is_refused_naming_the_values() {
        let err = check_timing(&settings(3_000, 250), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease (3s) is too short"), "{err}");
        assert!(err.contains("response timeout (5s)"), "{err}");
        assert!(err.contains("at least 6.1s"), "{err}");
        assert!(err.contains("Config::response_timeout"), "{err}");
    }

    #[test]
    fn a_margin_as_long_as_the_lease_is_refused() {
        let mut s = settings(3_000, 250);
        s.margin = Some(Duration::from_secs(3));
        assert!(check_timing(&s, Duration::from_millis(100)).is_err());
    }
}

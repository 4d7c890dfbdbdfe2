//! The worker: claims jobs under leases, runs them, keeps their leases from a thread of its
//! own, reaps expired leases.
//!
//! - `keeper`: the lease thread (heartbeats, local lease deadlines, stopping jobs, lease
//!   checks and trimming).
//! - `queue`: one loop per queue, claiming jobs into free slots.
//! - `run`: one job's run, from decode to its recorded outcome.

mod keeper;
mod queue;
mod run;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use wharf_core::supervisor::{ChildContext, ChildSpec, Shutdown, Started};

use crate::client::Jobs;
use crate::error::{Error, Result};
use crate::hooks::{Hooks, NoHooks};
use crate::job::Registry;
use crate::keys::check_name;

use keeper::{Keeper, Timing};
use queue::QueueRunner;

/// Settings of a worker process (shared by all its queues).
#[derive(Clone)]
struct Settings {
    lease: Duration,
    margin: Option<Duration>,
    heartbeat_every: Duration,
    poll_interval: Duration,
    reap_every: Duration,
    shutdown_grace: Duration,
    batch: usize,
}

impl Settings {
    /// The margin by which a worker stops a job before its lease can expire in Redis.
    fn margin(&self) -> Duration {
        self.margin.unwrap_or(self.lease / 5)
    }
}

/// Builds a [`Worker`].
pub struct WorkerBuilder {
    jobs: Jobs,
    registry: Registry,
    hooks: Arc<dyn Hooks>,
    queues: Vec<(String, String, usize)>,
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

struct Inner {
    jobs: Jobs,
    registry: Registry,
    hooks: Arc<dyn Hooks>,
    settings: Settings,
    id: String,
}

impl Inner {
    fn timing(&self) -> Timing {
        let s = &self.settings;
        Timing {
            lease: s.lease,
            margin: s.margin(),
            beat: s.heartbeat_every,
            response_timeout: self.jobs.response_timeout(),
            reap_every: s.reap_every,
        }
    }
}

/// A worker process's job runner: any number of them, in any number of processes on any
/// number of machines, can work the same queues.
///
/// Run it with [`Worker::run`] (until a cancellation token fires), as a wharf-core
/// supervised child with [`Worker::child_spec`], or with [`Worker::start`] (spawned, with a
/// handle to add and remove queues at run time).
///
/// Each started worker has a thread of its own (`wharf-jobs-leases`, with its own Redis
/// connection) that renews its jobs' leases, notices cancel requests, stops jobs past
/// their `max_execution_time`, and stops every job whose lease it cannot prove it still
/// holds before that lease can expire in Redis. Job code that blocks the worker's runtime
/// cannot delay it.
#[derive(Clone)]
pub struct Worker {
    inner: Arc<Inner>,
    queues: Vec<(String, String, usize)>,
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("id", &self.inner.id)
            .field("queues", &self.queues)
            .finish_non_exhaustive()
    }
}

impl Worker {
    /// A builder for a worker that runs the job types of `registry`.
    pub fn builder(jobs: Jobs, registry: Registry) -> WorkerBuilder {
        WorkerBuilder {
            jobs,
            registry,
            hooks: Arc::new(NoHooks),
            queues: Vec::new(),
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

    /// This worker's id (stored with the jobs it runs).
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Runs until `shutdown` fires, then lets running jobs finish within the grace period.
    /// Fails at once if the lease thread cannot be started.
    pub async fn run(self, shutdown: CancellationToken) -> Result<()> {
        let handle = self.start_with(shutdown.child_token())?;
        shutdown.cancelled().await;
        handle.shutdown().await;
        Ok(())
    }

    /// A wharf-core supervisor child that runs this worker. Its setup phase checks that
    /// Redis answers (so later children can rely on it); its shutdown grace is the worker's
    /// plus 3 s. A restart starts the same queues again; jobs the old incarnation held run
    /// again once their leases expire.
    pub fn child_spec(self, id: impl Into<String>) -> ChildSpec {
        let grace = self.inner.settings.shutdown_grace + Duration::from_secs(3);
        ChildSpec::new(id, move |ctx: ChildContext| {
            let worker = self.clone();
            async move {
                worker.inner.jobs.ping().await?;
                Ok::<_, Error>(Started::task(async move { worker.run(ctx.token()).await }))
            }
        })
        .shutdown(Shutdown::Timeout(grace))
    }

    /// Starts the worker's queues on the current runtime (and its lease thread).
    ///
    /// If the lease thread cannot be started (the system is out of threads), no job is
    /// claimed: the error is logged and the handle's queues stay empty. [`Worker::run`]
    /// reports that error instead.
    pub fn start(self) -> WorkerHandle {
        let inner = Arc::clone(&self.inner);
        match self.start_with(CancellationToken::new()) {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "the worker did not start");
                WorkerHandle {
                    inner,
                    keeper: None,
                    token: CancellationToken::new(),
                    loops: Arc::default(),
                }
            }
        }
    }

    fn start_with(self, token: CancellationToken) -> Result<WorkerHandle> {
        let keeper = Keeper::spawn(&self.inner.jobs, self.inner.timing(), &self.inner.id).map_err(
            |source| Error::Thread {
                what: "the lease thread",
                source,
            },
        )?;
        let handle = WorkerHandle {
            inner: self.inner,
            keeper: Some(Arc::new(keeper)),
            token,
            loops: Arc::default(),
        };
        for (p, q, c) in self.queues {
            handle.spawn_queue(p, q, c);
        }
        Ok(handle)
    }
}

/// A started worker: add or remove queues at run time, shut it down.
pub struct WorkerHandle {
    inner: Arc<Inner>,
    keeper: Option<Arc<Keeper>>,
    token: CancellationToken,
    loops: Arc<Mutex<HashMap<(String, String), QueueLoop>>>,
}

impl fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

struct QueueLoop {
    token: CancellationToken,
    join: JoinHandle<()>,
}

impl WorkerHandle {
    /// Starts working on another queue (replacing the loop of the same queue, if any).
    pub fn add_queue(&self, partition: &str, queue: &str, concurrency: usize) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        if concurrency == 0 {
            return Err(Error::Config("concurrency must be at least 1".into()));
        }
        if self.keeper.is_none() {
            return Err(Error::Config(
                "this worker did not start (its lease thread could not be started; see the log)"
                    .into(),
            ));
        }
        self.spawn_queue(partition.to_owned(), queue.to_owned(), concurrency);
        Ok(())
    }

    /// Stops working on a queue: claims stop, running jobs finish within the grace period.
    pub async fn remove_queue(&self, partition: &str, queue: &str) {
        let l = self
            .loops
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&(partition.to_owned(), queue.to_owned())));
        if let Some(l) = l {
            l.token.cancel();
            let _ = l.join.await;
        }
    }

    fn spawn_queue(&self, partition: String, queue: String, concurrency: usize) {
        let Some(keeper) = &self.keeper else { return };
        let token = self.token.child_token();
        let run = QueueRunner {
            inner: Arc::clone(&self.inner),
            keeper: Arc::clone(keeper),
            partition: Arc::from(partition.as_str()),
            queue: Arc::from(queue.as_str()),
            sem: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            token: token.clone(),
        };
        let span = tracing::info_span!("wharf_jobs_queue", partition = %partition, queue = %queue);
        let join = tokio::spawn(run.run().instrument(span));
        let old = self
            .loops
            .lock()
            .ok()
            .and_then(|mut m| m.insert((partition, queue), QueueLoop { token, join }));
        if let Some(old) = old {
            old.token.cancel();
        }
    }

    /// Stops claiming, lets running jobs finish within the grace period, then aborts the
    /// rest and puts them back in their queues. A job whose task does not end when aborted
    /// (it blocks its thread) is logged; this call returns 2 s after the abort regardless,
    /// and that job keeps its lease and keys until its task ends or the process exits.
    pub async fn shutdown(self) {
        self.token.cancel();
        let loops: Vec<QueueLoop> = self
            .loops
            .lock()
            .map(|mut m| m.drain().map(|(_, l)| l).collect())
            .unwrap_or_default();
        for l in loops {
            let _ = l.join.await;
        }
    }
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

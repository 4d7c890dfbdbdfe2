//! The worker: claims jobs under leases, runs them, keeps their leases from a thread of its
//! own, reaps expired leases.
//!
//! - `keeper`: the lease thread (heartbeats, local lease deadlines, stopping jobs, lease
//!   checks and trimming).
//! - `queue`: one loop per queue, claiming jobs into free slots.
//! - `run`: one job's run, from decode to its recorded outcome.
//! - `complete`: records the outcomes of a queue's finished jobs in batches.
//! - `builder`: `WorkerBuilder` (settings and their checks).
//! - `handle`: `WorkerHandle` (queues at run time, shutdown).

mod builder;
mod complete;
mod handle;
mod keeper;
mod queue;
mod run;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wharf_core::supervisor::{ChildContext, ChildSpec, Shutdown, Started};

use crate::client::Jobs;
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::job::Registry;

use builder::Settings;
pub use builder::WorkerBuilder;
pub use handle::WorkerHandle;
use keeper::{Keeper, Timing};

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
    scheduler: Option<crate::Scheduler>,
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
    /// A builder for a worker that runs the job types of `registry`, giving them its state
    /// ([`Registry::with_state`]).
    pub fn builder<S: Send + Sync + 'static>(jobs: Jobs, registry: Registry<S>) -> WorkerBuilder {
        WorkerBuilder::new(jobs, registry.erase())
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
                WorkerHandle::new(inner, None, CancellationToken::new())
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
        if let Some(s) = self.scheduler {
            tokio::spawn(s.run(token.child_token()));
        }
        let handle = WorkerHandle::new(self.inner, Some(Arc::new(keeper)), token);
        for (p, q, c) in self.queues {
            handle.spawn_queue(p, q, c);
        }
        Ok(handle)
    }
}

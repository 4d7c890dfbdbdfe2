//! `WorkerHandle`: a started worker; queues added and removed at run time, shutdown.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use super::complete::Completer;
use super::keeper::Keeper;
use super::queue::QueueRunner;
use crate::error::{Error, Result};
use crate::keys::check_name;

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
    /// A handle with no queue yet; `keeper` is None when the lease thread could not start.
    pub(super) fn new(
        inner: Arc<Inner>,
        keeper: Option<Arc<Keeper>>,
        token: CancellationToken,
    ) -> Self {
        Self {
            inner,
            keeper,
            token,
            loops: Arc::default(),
        }
    }

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

    pub(super) fn spawn_queue(&self, partition: String, queue: String, concurrency: usize) {
        let Some(keeper) = &self.keeper else { return };
        let token = self.token.child_token();
        let run = QueueRunner {
            inner: Arc::clone(&self.inner),
            keeper: Arc::clone(keeper),
            partition: Arc::from(partition.as_str()),
            queue: Arc::from(queue.as_str()),
            sem: Arc::new(Semaphore::new(concurrency)),
            completer: Completer::start(self.inner.jobs.clone(), Arc::from(partition.as_str())),
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

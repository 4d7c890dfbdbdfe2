//! Records finished jobs' outcomes in batches: the jobs of a queue that finish while one
//! `complete` call is on its way to Redis are recorded together by the next one, in one
//! script call (each still fenced by its own lease token: a stale one is refused alone).
//!
//! Nothing waits for a batch to fill, and no timer is involved: a call goes out as soon as
//! the previous one has answered, with every job that finished meanwhile (at most
//! `MAX_PER_CALL`). A job that finishes alone is recorded at once, as before; under load
//! each call records many (about 15 a call in the jobs-throughput bench), which is what
//! takes most of the Redis commands per job away. (Yielding to the runtime before a call to
//! gather more made no measurable difference, and a yielded task waits behind any task
//! that blocks its thread, so it is not done.)

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

use crate::client::{Finished, Jobs};
use crate::error::Error;

/// Most jobs one call records.
pub(super) const MAX_PER_CALL: usize = 200;

/// A job's recorded outcome (see `Jobs::complete`), or the error of the call that carried
/// it (shared by every job of that call).
pub(super) type Reply = std::result::Result<i64, Arc<Error>>;

struct Request {
    done: Finished,
    reply: oneshot::Sender<Reply>,
}

/// One queue's batching recorder of finished jobs; clones share it.
#[derive(Clone)]
pub(super) struct Completer {
    tx: mpsc::UnboundedSender<Request>,
    jobs: Jobs,
    partition: Arc<str>,
}

impl Completer {
    /// Starts the recorder's task on the current runtime. It ends once every clone is
    /// dropped and what they sent is recorded.
    pub(super) fn start(jobs: Jobs, partition: Arc<str>) -> Self {
        // Unbounded in type only: each running job sends one request and waits for its
        // answer before it sends another, so the channel never holds more than the queue's
        // concurrency.
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flush_loop(jobs.clone(), Arc::clone(&partition), rx).in_current_span());
        Self {
            tx,
            jobs,
            partition,
        }
    }

    /// Records one finished job with the next call; answers as `Jobs::complete` does.
    pub(super) async fn complete(&self, done: Finished) -> Reply {
        let (reply, rx) = oneshot::channel();
        let req = Request { done, reply };
        let done = match self.tx.send(req) {
            Ok(()) => match rx.await {
                Ok(r) => return r,
                // The recorder's task was dropped (the runtime is shutting down) before it
                // answered: an error, so the caller's retry sends the job again (alone,
                // below, the task being gone; fenced, so a job already recorded is not
                // recorded twice).
                Err(_) => {
                    return Err(Arc::new(Error::Protocol {
                        op: "complete",
                        detail: "the worker's recorder of finished jobs stopped before it answered"
                            .into(),
                    }));
                }
            },
            Err(mpsc::error::SendError(req)) => req.done,
        };
        // The task is gone and never saw this job: record it alone.
        self.jobs
            .complete(
                &self.partition,
                &done.id,
                &done.token,
                done.outcome,
                done.result.as_deref(),
            )
            .await
            .map_err(Arc::new)
    }
}

/// Takes the finished jobs that wait, records them in one call, hands each its answer;
/// again until every sender is gone.
async fn flush_loop(jobs: Jobs, partition: Arc<str>, mut rx: mpsc::UnboundedReceiver<Request>) {
    let mut batch: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        take_ready(&mut rx, &mut batch);
        let (done, replies): (Vec<Finished>, Vec<oneshot::Sender<Reply>>) =
            batch.drain(..).map(|r| (r.done, r.reply)).unzip();
        match jobs.complete_many(&partition, &done).await {
            Ok(codes) => {
                for (reply, code) in replies.into_iter().zip(codes) {
                    // A job whose run went away no longer needs its answer.
                    let _ = reply.send(Ok(code));
                }
            }
            Err(e) => {
                let e = Arc::new(e);
                for reply in replies {
                    let _ = reply.send(Err(Arc::clone(&e)));
                }
            }
        }
    }
}

/// Moves what waits in the channel into the batch, up to `MAX_PER_CALL`.
fn take_ready(rx: &mut mpsc::UnboundedReceiver<Request>, batch: &mut Vec<Request>) {
    while batch.len() < MAX_PER_CALL {
        match rx.try_recv() {
            Ok(r) => batch.push(r),
            Err(_) => break,
        }
    }
}

//! The `Job` trait, the context a job runs with, and the registry of job types by name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::supervisor::panic_message;

/// A job's failure: a message kept with the job (and in the dead set when it is the last).
pub type JobError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A kind of job: its arguments (the struct itself, stored as JSON) and what it does.
///
/// A job type is registered under [`Job::NAME`] in a [`Registry`]; a worker decodes the
/// stored arguments back into the struct and calls [`Job::perform`]. The contract:
///
/// - `perform` may run more than once for one enqueue: after a failure (when
///   [`retryable`](Job::retryable)) and after a worker crash (its lease expires and another
///   worker runs it). Make it idempotent, or key its side effects by [`JobContext::id`].
/// - `perform` runs in its own task. It is aborted at its next `.await` when the job is
///   cancelled, when [`max_execution_time`](Job::max_execution_time) passes, when the
///   worker can no longer prove it holds the job's lease, or at the end of a shutdown's
///   grace. [`JobContext::cancelled`] lets it stop cleanly first.
/// - Code between two `.await`s cannot be interrupted: a `std::thread::sleep`, a CPU loop or
///   blocking I/O runs to its end. Until the task really ends the job stays running: it
///   keeps its lease (renewed from a thread of the worker's own, so job code cannot starve
///   it), its execution key, queue key and queue slot, and shows as
///   [`JobState::Stopping`](crate::JobState) once it overstays a stop. Run blocking work
///   with `tokio::task::spawn_blocking` and check [`JobContext::is_cancelled`] in it (see
///   the guide, "What can be interrupted").
/// - An `Err` or a panic is a failure: retried with [`backoff`](Job::backoff) while attempts
///   remain, then the job goes to the dead set with the error's message.
/// - A job never starts more than [`max_attempts`](Job::max_attempts) times: an attempt cut
///   short by a crash or a lost lease counts (it may have done part of its work); one handed
///   back at a graceful shutdown does not.
/// - [`queue_key`](Job::queue_key) and [`execution_key`](Job::execution_key) are computed
///   once, at enqueue, and stored with the job.
/// - The worker decodes the job and reads [`retryable`](Job::retryable),
///   [`max_attempts`](Job::max_attempts), [`max_execution_time`](Job::max_execution_time),
///   [`execution_key_waits_for_retry`](Job::execution_key_waits_for_retry) and
///   [`backoff`](Job::backoff) before each attempt, outside the job's task. A panic in
///   decoding or in one of the first four sends the job to the dead set with the panic's
///   message, without running it (its limits cannot be known); a panic in `backoff` makes
///   that retry use the default backoff. Each such panic is logged with the job's id and
///   counted in [`metrics::CALLBACK_PANICS`](crate::metrics::CALLBACK_PANICS) (label
///   `callback`, e.g. `Job::max_attempts`).
///   The same holds for the `Display` of an error `perform` returns (`JobError::fmt`). A
///   panic in `perform`, also before it returns its future, is a failed attempt. (All of
///   this needs `panic = "unwind"`, Rust's default.)
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the job is stored and registered under. Keep it stable across releases.
    const NAME: &'static str;

    /// Does the work.
    fn perform(self, ctx: JobContext) -> impl Future<Output = Result<(), JobError>> + Send;

    /// Only one job with this key may be queued, running or waiting to retry at a time in
    /// the partition; a second enqueue answers [`Enqueued::Duplicate`](crate::Enqueued).
    fn queue_key(&self) -> Option<String> {
        None
    }

    /// Jobs with the same key never run at the same time in the partition, on any machine;
    /// they start in the order they were enqueued.
    fn execution_key(&self) -> Option<String> {
        None
    }

    /// The group this job's starts count in when its queue has a rate limit
    /// ([`Jobs::set_rate_limit`](crate::Jobs::set_rate_limit)), for example a customer or
    /// tenant id: the limit holds for each group apart. `None`: the queue's shared group.
    fn rate_group(&self) -> Option<String> {
        None
    }

    /// Whether a failure is retried (up to [`max_attempts`](Job::max_attempts)).
    fn retryable(&self) -> bool {
        true
    }

    /// How many attempts in all (first run included) before the job goes to the dead set.
    /// An attempt interrupted by a worker crash or a lost lease counts: a job whose last
    /// allowed attempt was interrupted goes to the dead set instead of starting again.
    fn max_attempts(&self) -> u32 {
        5
    }

    /// Abort the job's task after this long, and count the attempt as a failure (also when
    /// the task, unable to be interrupted, ends by itself later). A task blocked between
    /// two `.await`s cannot be aborted: the job keeps its keys until it really ends.
    fn max_execution_time(&self) -> Option<Duration> {
        None
    }

    /// Whether the later jobs of this job's [`execution_key`](Job::execution_key) wait while
    /// it waits out a retry's backoff (default `true`): the key's jobs then run in enqueue
    /// order across retries (A, A's retry, B, C), and the key stays held meanwhile. Return
    /// `false` to let later jobs of the key run during the backoff; the retry then takes
    /// the key after them (A, B, C, A's retry).
    fn execution_key_waits_for_retry(&self) -> bool {
        true
    }

    /// The delay before attempt `attempt + 1`, after `attempt` (1-based) failed.
    /// Default: exponential from 1 s doubling up to 5 min, with jitter.
    fn backoff(&self, attempt: u32) -> Duration {
        default_backoff(attempt)
    }
}

/// The default [`Job::backoff`]: exponential from 1 s doubling up to 5 min, with jitter.
fn default_backoff(attempt: u32) -> Duration {
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(300))
        .delay(attempt.saturating_sub(1))
}

/// What a running job knows about itself.
#[derive(Debug, Clone)]
pub struct JobContext {
    pub(crate) id: String,
    pub(crate) partition: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
}

impl JobContext {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }
    /// The partition it runs in.
    pub fn partition(&self) -> &str {
        &self.partition
    }
    /// Its queue.
    pub fn queue(&self) -> &str {
        &self.queue
    }
    /// Which attempt this is, from 1 (a re-run after a worker crash counts as one).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
    /// Resolves when the job is being stopped (cancelled, timed out, lease lost, shutdown);
    /// the task is aborted at the same moment, so this is useful in code the abort cannot
    /// reach: a `select!` whose other branch is `spawn_blocking`, or a clone of the context
    /// moved into the blocking closure (see [`is_cancelled`](Self::is_cancelled)).
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }
    /// Whether the job is being stopped. Blocking code (run with `spawn_blocking`, holding
    /// a clone of this context) should check it between steps and return early: nothing
    /// else can stop it.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}

/// The policy of one decoded job, read before it runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub(crate) retryable: bool,
    pub(crate) max_attempts: u32,
    pub(crate) timeout: Option<Duration>,
    pub(crate) keep_xkey_on_retry: bool,
}

/// Starts a decoded job's `perform`: call it inside the job's own task, where a panic (also
/// one before `perform` returns its future) is a failed attempt.
pub(crate) type RunFn =
    Box<dyn FnOnce(JobContext) -> BoxFuture<'static, Result<(), JobError>> + Send>;

/// A job decoded from its stored arguments, ready to run.
pub(crate) struct Decoded {
    pub(crate) policy: Policy,
    /// The delay before the next attempt if this one fails.
    pub(crate) retry_delay: Duration,
    /// The message of a panic in [`Job::backoff`] (`retry_delay` is then the default).
    pub(crate) backoff_panic: Option<String>,
    pub(crate) run: RunFn,
}

impl fmt::Debug for Decoded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decoded")
            .field("policy", &self.policy)
            .field("retry_delay", &self.retry_delay)
            .finish_non_exhaustive()
    }
}

/// Why a stored job cannot run.
#[derive(Debug)]
pub(crate) struct Undecodable {
    /// For the dead set and the log.
    pub(crate) reason: String,
    /// The job's method that panicked (`Job::deserialize`, `Job::max_attempts`, ...), if one
    /// did.
    pub(crate) panicked: Option<&'static str>,
}

/// Calls the job type's own code; its panic becomes an [`Undecodable`] naming `method`.
fn guarded<T>(method: &'static str, f: impl FnOnce() -> T) -> Result<T, Undecodable> {
    std::panic::catch_unwind(AssertUnwindSafe(f)).map_err(|p| Undecodable {
        reason: format!("{method} panicked: {}", panic_message(p.as_ref())),
        panicked: Some(method),
    })
}

type DecodeFn = dyn Fn(&str, u32) -> Result<Decoded, Undecodable> + Send + Sync;

/// The job types a worker can run, by name.
///
/// A job whose name is not registered, or whose arguments do not decode, goes to the dead
/// set with the reason; it never crashes the worker.
#[derive(Clone, Default)]
pub struct Registry {
    types: HashMap<&'static str, Arc<DecodeFn>>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.types.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("jobs", &names).finish()
    }
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers job type `J` under [`Job::NAME`] (a later registration of a name wins).
    pub fn register<J: Job>(mut self) -> Self {
        self.types.insert(J::NAME, Arc::new(decode::<J>));
        self
    }

    /// The registered names.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names: Vec<_> = self.types.keys().copied().collect();
        names.sort_unstable();
        names
    }

    pub(crate) fn decode(
        &self,
        name: &str,
        args: &str,
        attempt: u32,
    ) -> Result<Decoded, Undecodable> {
        let Some(decode) = self.types.get(name) else {
            return Err(Undecodable {
                reason: format!(
                    "no job type named `{name}` is registered in this worker; register it with Registry::register"
                ),
                panicked: None,
            });
        };
        decode(args, attempt).map_err(|e| Undecodable {
            reason: match e.panicked {
                Some(_) => format!(
                    "the code of job type `{name}` panicked before the job could start ({}); not started",
                    e.reason
                ),
                None => format!("the arguments of job `{name}` do not decode: {}", e.reason),
            },
            ..e
        })
    }
}

/// Decodes a job of type `J` and reads its policy; a panic in the type's code is caught.
fn decode<J: Job>(args: &str, attempt: u32) -> Result<Decoded, Undecodable> {
    let job: J =
        guarded("Job::deserialize", || serde_json::from_str(args))?.map_err(|e| Undecodable {
            reason: e.to_string(),
            panicked: None,
        })?;
    let policy = Policy {
        retryable: guarded("Job::retryable", || job.retryable())?,
        max_attempts: guarded("Job::max_attempts", || job.max_attempts())?.max(1),
        timeout: guarded("Job::max_execution_time", || job.max_execution_time())?,
        keep_xkey_on_retry: guarded("Job::execution_key_waits_for_retry", || {
            job.execution_key_waits_for_retry()
        })?,
    };
    // A wrong delay breaks no rule (attempts, keys), so the default stands in for a panic.
    let (retry_delay, backoff_panic) = match guarded("Job::backoff", || job.backoff(attempt)) {
        Ok(d) => (d, None),
        Err(e) => (default_backoff(attempt), Some(e.reason)),
    };
    Ok(Decoded {
        policy,
        retry_delay,
        backoff_panic,
        run: Box::new(move |ctx| Box::pin(job.perform(ctx))),
    })
}

//! The `Job` trait, the context a job runs with, and the registry of job types by name.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::supervisor::panic_message;

use crate::client::Jobs;
use crate::error::{Error, Result};

/// A job's failure: a message kept with the job (and in the dead set when it is the last).
pub type JobError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A kind of job: its arguments (the struct itself, stored as JSON) and what it does.
///
/// A job type is registered under [`Job::NAME`] in a [`Registry`]; a worker decodes the
/// stored arguments back into the struct and calls [`Job::perform`].
///
/// `S` is the application's **state** the job needs (a database pool, an HTTP client,
/// settings): given once to the worker with [`Registry::with_state`] and reached in
/// `perform` through [`JobContext::state`], so no global static is needed. It defaults to
/// `()`: a job that needs none implements plain `Job`. The compiler checks that a
/// registry's state is the one its jobs need. Enqueueing needs only the arguments, never
/// the state; a job type that implements `Job<S>` for several states (or for any `S`)
/// names the one meant when it is enqueued: `jobs.enqueue::<_, App>(p, q, &job)`.
///
/// The contract:
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
pub trait Job<S = ()>: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The name the job is stored and registered under. Keep it stable across releases.
    const NAME: &'static str;

    /// Does the work. `ctx` gives the application's state ([`JobContext::state`]), reports
    /// progress ([`JobContext::set_progress`]) and sets the job's result
    /// ([`JobContext::set_result`]).
    fn perform(
        self,
        ctx: JobContext<S>,
    ) -> impl Future<Output = std::result::Result<(), JobError>> + Send;

    /// Only one job with this key may be queued, running or waiting to retry at a time in
    /// the partition; a second enqueue answers [`Enqueued::Duplicate`](crate::Enqueued).
    fn queue_key(&self) -> Option<String> {
        None
    }

    /// The job's priority in its queue, from 0 (first, the default) to [`MAX_PRIORITY`]
    /// (last): a worker claims the queue's ready jobs of priority 0 before those of 1, and
    /// so on; within one priority, in enqueue order. Computed once, at enqueue; a value
    /// above [`MAX_PRIORITY`] is refused there ([`Error::Config`](crate::Error::Config)).
    ///
    /// Priorities are strict: while jobs of a smaller number are ready, no job of a larger
    /// one starts in that queue, so a steady stream of urgent jobs **starves** the others
    /// (nothing ages them). Where background work must progress, give it a queue of its own
    /// (its own worker slots) instead. Jobs of one [`execution_key`](Job::execution_key)
    /// also start by priority, then in enqueue order. A delayed or retrying job takes its
    /// place when it becomes due (behind the jobs of its priority already ready).
    fn priority(&self) -> u8 {
        0
    }

    /// How long the [`queue_key`](Job::queue_key) stays taken after the job **completes**
    /// (default `None`: it is free at once). Within that period an enqueue with the same key
    /// answers [`Enqueued::Duplicate`](crate::Enqueued) with the completed job's id; after
    /// it, the key is free again (Redis expires it, no worker needed). A job that is
    /// cancelled or dies frees its key at once, so a failed operation can be tried again.
    /// Measured on the Redis server's clock. `Some(Duration::ZERO)`, or a period on a job
    /// without a queue key, is refused at enqueue ([`Error::Config`](crate::Error::Config)).
    fn unique_for(&self) -> Option<Duration> {
        None
    }

    /// Jobs with the same key never run at the same time in the partition, on any machine;
    /// they start in the order they were enqueued (by [`priority`](Job::priority) first).
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

/// The largest [`Job::priority`]: priorities run from 0 (first) to 3 (last).
pub const MAX_PRIORITY: u8 = 3;

/// The largest progress value [`JobContext::set_progress`] stores (JSON bytes).
pub const MAX_PROGRESS_BYTES: usize = 4 * 1024;

/// The largest result [`JobContext::set_result`] stores (JSON bytes): a result is for a
/// summary or a reference (a row id, an object's URL), not for bulk data.
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// What a running job knows about itself, the application's state `S`, and how it reports
/// progress and its result.
///
/// Cheap to clone (a clone shares the state and the result slot): move a clone into
/// `spawn_blocking` to check [`is_cancelled`](Self::is_cancelled) there.
pub struct JobContext<S = ()> {
    pub(crate) id: String,
    pub(crate) partition: Arc<str>,
    pub(crate) queue: Arc<str>,
    pub(crate) attempt: u32,
    pub(crate) cancel: CancellationToken,
    /// The lease's fencing token: progress is written only under it.
    pub(crate) token: String,
    pub(crate) jobs: Jobs,
    /// The encoded result, stored with the job when it completes (under its lease).
    pub(crate) result: Arc<Mutex<Option<String>>>,
    pub(crate) state: Arc<S>,
}

impl<S> Clone for JobContext<S> {
    fn clone(&self) -> Self {
        Self {
            id: self.id.clone(),
            partition: Arc::clone(&self.partition),
            queue: Arc::clone(&self.queue),
            attempt: self.attempt,
            cancel: self.cancel.clone(),
            token: self.token.clone(),
            jobs: self.jobs.clone(),
            result: Arc::clone(&self.result),
            state: Arc::clone(&self.state),
        }
    }
}

impl<S> fmt::Debug for JobContext<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JobContext")
            .field("id", &self.id)
            .field("partition", &self.partition)
            .field("queue", &self.queue)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// The same context for a job that needs state `S`.
    pub(crate) fn with_state<S>(self, state: Arc<S>) -> JobContext<S> {
        JobContext {
            id: self.id,
            partition: self.partition,
            queue: self.queue,
            attempt: self.attempt,
            cancel: self.cancel,
            token: self.token,
            jobs: self.jobs,
            result: self.result,
            state,
        }
    }
}

impl<S> JobContext<S> {
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
    /// The application's state, as given to [`Registry::with_state`]. One value is shared by
    /// every job the worker runs: put what a job changes behind its own lock.
    pub fn state(&self) -> &S {
        &self.state
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

    /// Stores the job's progress (any JSON value up to [`MAX_PROGRESS_BYTES`], e.g. a
    /// percentage or `{"done": 40, "total": 100}`) in its record, where
    /// [`Jobs::job`](crate::Jobs::job) ([`JobInfo::progress`](crate::JobInfo::progress)) and
    /// `wharf-jobs show` read it, from any process.
    ///
    /// Written under the job's lease: a worker that lost it (another worker runs the job
    /// now) gets [`Error::LeaseLost`] and writes nothing. Each call is one Redis round trip,
    /// bounded by the response timeout: report at a human pace (a few times a second at
    /// most), not per item. The value is kept until the next report, also across attempts
    /// (a retry starts with the last attempt's progress until it reports its own).
    pub async fn set_progress<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let json = encode_bounded("progress", value, MAX_PROGRESS_BYTES)?;
        let stored = self
            .jobs
            .set_progress(&self.partition, &self.id, &self.token, json)
            .await?;
        if stored {
            Ok(())
        } else {
            Err(Error::LeaseLost {
                id: self.id.clone(),
            })
        }
    }

    /// Sets the job's result (any JSON value up to [`MAX_RESULT_BYTES`]): stored with the
    /// job when this attempt completes, in the same atomic step as the completion (so under
    /// the lease; a result of an attempt that fails, or whose lease was lost, is never
    /// stored). Read it with [`Jobs::wait_for`](crate::Jobs::wait_for) or
    /// [`JobInfo::result`](crate::JobInfo::result). A later call replaces an earlier one.
    /// Kept as long as the finished job is (its queue's retention).
    pub fn set_result<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        let json = encode_bounded("result", value, MAX_RESULT_BYTES)?;
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(json);
        }
        Ok(())
    }
}

impl<S> JobContext<S> {
    /// The outcomes of this job's children, when it is a flow's parent
    /// ([`Jobs::enqueue_flow`](crate::Jobs::enqueue_flow)): every completed child's result
    /// by child id, decoded as `T` (children of several result types: ask for
    /// `serde_json::Value`), and, with [`ChildFailure::Report`](crate::ChildFailure), the
    /// children that did not complete. Read from the parent's own partition (the outcomes
    /// were copied there as the children settled), so children in other partitions, or
    /// trimmed by their queue's retention, are still there. Empty for a job that is not a
    /// parent. A result that does not decode as `T` is [`Error::Decode`].
    pub async fn children<T: DeserializeOwned>(&self) -> Result<crate::Children<T>> {
        self.jobs.children(&self.partition, &self.id).await
    }

    /// The counts of this job's batch, when it is a batch's callback
    /// ([`Jobs::enqueue_batch`](crate::Jobs::enqueue_batch)); None otherwise.
    pub async fn batch(&self) -> Result<Option<crate::BatchCounts>> {
        self.jobs.batch_counts(&self.partition, &self.id).await
    }
}

/// `value` as JSON, refused (with nothing stored) when larger than `max` bytes.
fn encode_bounded<T: Serialize + ?Sized>(
    what: &'static str,
    value: &T,
    max: usize,
) -> Result<String> {
    let json = serde_json::to_string(value).map_err(|source| Error::Encode {
        name: format!("the job's {what}"),
        source,
    })?;
    if json.len() > max {
        return Err(Error::TooLarge {
            what,
            bytes: json.len(),
            limit: max,
        });
    }
    Ok(json)
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
    Box<dyn FnOnce(JobContext) -> BoxFuture<'static, std::result::Result<(), JobError>> + Send>;

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

/// The job types a worker can run, by name, and the application's state `S` they get.
///
/// A job whose name is not registered, or whose arguments do not decode, goes to the dead
/// set with the reason; it never crashes the worker.
///
/// [`Registry::new`] is for jobs that need no state; [`Registry::with_state`] gives every
/// job the worker runs the same value (a pool, a client, settings), reached in
/// [`Job::perform`] through [`JobContext::state`]:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use wharf_job_partition::{Job, JobContext, JobError, Registry};
///
/// struct App {
///     greeting: String,
/// }
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet {
///     name: String,
/// }
///
/// impl Job<App> for Greet {
///     const NAME: &'static str = "greet";
///     async fn perform(self, ctx: JobContext<App>) -> Result<(), JobError> {
///         println!("{}, {}", ctx.state().greeting, self.name);
///         Ok(())
///     }
/// }
///
/// let registry = Registry::with_state(App { greeting: "hello".into() }).register::<Greet>();
/// assert_eq!(registry.names(), ["greet"]);
/// ```
pub struct Registry<S = ()> {
    types: HashMap<&'static str, Arc<DecodeFn>>,
    state: Arc<S>,
}

impl<S> Clone for Registry<S> {
    fn clone(&self) -> Self {
        Self {
            types: self.types.clone(),
            state: Arc::clone(&self.state),
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> fmt::Debug for Registry<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<_> = self.types.keys().collect();
        names.sort();
        f.debug_struct("Registry").field("jobs", &names).finish()
    }
}

impl Registry {
    /// An empty registry, for jobs that need no state.
    pub fn new() -> Self {
        Self {
            types: HashMap::new(),
            state: Arc::new(()),
        }
    }
}

impl<S: Send + Sync + 'static> Registry<S> {
    /// An empty registry whose jobs get `state` (shared by all: one value, not a copy per
    /// job).
    pub fn with_state(state: S) -> Self {
        Self::with_shared_state(Arc::new(state))
    }

    /// Like [`with_state`](Self::with_state), for a state the application also keeps.
    pub fn with_shared_state(state: Arc<S>) -> Self {
        Self {
            types: HashMap::new(),
            state,
        }
    }

    /// Registers job type `J` under [`Job::NAME`] (a later registration of a name wins).
    pub fn register<J: Job<S>>(mut self) -> Self {
        let state = Arc::clone(&self.state);
        self.types.insert(
            J::NAME,
            Arc::new(move |args: &str, attempt: u32| {
                decode::<J, S>(args, attempt, Arc::clone(&state))
            }),
        );
        self
    }

    /// The state the registry's jobs get.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The same registry, its state held by the registered jobs only (a worker needs no
    /// more).
    pub(crate) fn erase(self) -> Registry {
        Registry {
            types: self.types,
            state: Arc::new(()),
        }
    }
}

impl<S> Registry<S> {
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
fn decode<J: Job<S>, S: Send + Sync + 'static>(
    args: &str,
    attempt: u32,
    state: Arc<S>,
) -> Result<Decoded, Undecodable> {
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
        run: Box::new(move |ctx: JobContext| Box::pin(job.perform(ctx.with_state(state)))),
    })
}

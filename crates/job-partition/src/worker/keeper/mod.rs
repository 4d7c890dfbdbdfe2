//! The lease keeper: a thread of its own, with its own runtime and Redis connection, that
//! renews the leases of a worker's running jobs and stops every job whose lease it can no
//! longer prove, whatever the job code and the worker's other Redis calls are doing.
//!
//! The rule it keeps: a job runs only while `lease_until` (on this machine's monotonic
//! clock) is in the future, where `lease_until = start of the last call that renewed the
//! lease + lease - margin`. The start of the call (taken before the request is written) is
//! never later than the moment Redis ran it, and Redis set the lease to its own time then
//! plus `lease`, so `lease_until` is reached at least `margin` before the lease can expire
//! in Redis, however long the answer took or whether it ever came.
//!
//! - this file: the held leases and the handle the worker uses to hold, start, stop and
//!   release jobs;
//! - `thread`: what the lease thread does with them.

mod thread;

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
// std's clock, not tokio's: the worker's runtime may run on paused time in tests; the
// keeper's deadlines are real.
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

use crate::client::{Claimed, Jobs};
use crate::metrics as metric;

/// What stopped a running job before it finished by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// A cancel was asked (`Jobs::cancel`).
    Cancel,
    /// The worker could not prove it still holds the lease (or Redis said it does not).
    Lost,
    /// Shutdown's grace passed.
    Shutdown,
    /// `max_execution_time` passed.
    TimedOut,
}

impl Stop {
    fn reason(self) -> &'static str {
        match self {
            Stop::Cancel => "cancelled",
            Stop::Lost => "lease could not be renewed",
            Stop::Shutdown => "worker shutting down",
            Stop::TimedOut => "max_execution_time passed",
        }
    }
}

/// The timing a keeper works with (checked by `WorkerBuilder::build`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) lease: Duration,
    pub(crate) margin: Duration,
    pub(crate) beat: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) reap_every: Duration,
}

impl Timing {
    /// How long a job may overstay a stop before it is reported as not ending.
    fn report_after(&self) -> Duration {
        self.beat.max(Duration::from_millis(500))
    }
}

/// Identifies one held lease of this worker: one claim of one job. Never reused, so it also
/// tells apart two runs of one job on one worker (an old task that could not be stopped,
/// and a new claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct LeaseId(u64);

/// Hashes a [`LeaseId`] with one multiply: every job touches the map of held leases a few
/// times, and a keyed hash of its strings cost more than the rest of its bookkeeping.
#[derive(Default)]
struct LeaseHasher(u64);

impl Hasher for LeaseHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(*b));
        }
    }
    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: sequential ids spread over the high bits the table probes by.
        self.0 = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

type HeldMap = HashMap<LeaseId, Held, BuildHasherDefault<LeaseHasher>>;

struct Held {
    partition: Arc<str>,
    queue: Arc<str>,
    /// The job's id and fencing token, as the heartbeat sends them.
    id: String,
    token: String,
    name: String,
    /// The local lease deadline: past it the job is stopped.
    lease_until: Instant,
    /// `max_execution_time`, from the task's start.
    run_until: Option<Instant>,
    stop: CancellationToken,
    why: Option<Stop>,
    stopped_at: Option<Instant>,
    abort: Option<AbortHandle>,
    reported: bool,
}

impl Held {
    fn stop(&mut self, why: Stop, now: Instant) -> bool {
        let first = self.why.is_none();
        if first {
            self.why = Some(why);
            self.stopped_at = Some(now);
        }
        self.stop.cancel();
        if let Some(a) = &self.abort {
            a.abort();
        }
        first
    }
}

struct Shared {
    held: Mutex<HeldMap>,
    next_id: AtomicU64,
    /// Queues served, with how many loops serve each (for lease checks and trimming).
    queues: Mutex<HashMap<(String, String), usize>>,
    wake: Notify,
    /// When the keeper's loop will look next (it is woken earlier only when needed), in
    /// nanoseconds from `epoch`.
    planned: AtomicU64,
    epoch: Instant,
    connected: AtomicBool,
    timing: Timing,
}

impl Shared {
    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Wakes the keeper's loop if it would otherwise look later than `t`.
    fn wake_by(&self, t: Instant) {
        if self.nanos(t) < self.planned.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps stay consistent under a panic (every change is one insert or field write).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The handle to a keeper thread; dropping the last one stops the thread.
pub(crate) struct Keeper {
    shared: Arc<Shared>,
    stop: CancellationToken,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Keeper {
    /// Starts the keeper's thread; it connects to Redis with `jobs`' configuration.
    pub(crate) fn spawn(jobs: &Jobs, timing: Timing, worker: &str) -> std::io::Result<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let shared = Arc::new(Shared {
            held: Mutex::default(),
            next_id: AtomicU64::new(0),
            queues: Mutex::default(),
            wake: Notify::new(),
            planned: AtomicU64::new(0),
            epoch: Instant::now(),
            connected: AtomicBool::new(false),
            timing,
        });
        let stop = CancellationToken::new();
        let config = jobs.config().clone();
        let (s, t) = (Arc::clone(&shared), stop.clone());
        let span = tracing::info_span!("wharf_jobs_leases", worker = %worker);
        std::thread::Builder::new()
            .name("wharf-jobs-leases".into())
            .spawn(move || {
                let _enter = span.enter();
                rt.block_on(thread::run(s, config, t));
            })?;
        Ok(Self { shared, stop })
    }

    /// Whether the keeper's own connection is up (no job is claimed before it is).
    pub(crate) fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Acquire)
    }

    /// Holds a claimed job: its lease is renewed from now on, and it is stopped at
    /// `sent + lease - margin` unless a renewal moves that on. `sent` is when the claim
    /// call started. Answers the lease's id and the token that stops the job.
    pub(crate) fn hold(
        &self,
        partition: &Arc<str>,
        queue: &Arc<str>,
        job: &Claimed,
        sent: Instant,
    ) -> (LeaseId, CancellationToken) {
        let t = self.shared.timing;
        let stop = CancellationToken::new();
        let lease_until = sent + t.lease - t.margin;
        let id = LeaseId(self.shared.next_id.fetch_add(1, Ordering::Relaxed));
        let held = Held {
            partition: Arc::clone(partition),
            queue: Arc::clone(queue),
            id: job.id.clone(),
            token: job.token.clone(),
            name: job.name.clone(),
            lease_until,
            run_until: None,
            stop: stop.clone(),
            why: None,
            stopped_at: None,
            abort: None,
            reported: false,
        };
        lock(&self.shared.held).insert(id, held);
        self.shared.wake_by(lease_until);
        (id, stop)
    }

    /// The job's task started: `abort` stops it, `run_for` is its `max_execution_time`.
    pub(crate) fn started(&self, id: LeaseId, abort: AbortHandle, run_for: Option<Duration>) {
        let mut held = lock(&self.shared.held);
        let Some(h) = held.get_mut(&id) else {
            abort.abort();
            return;
        };
        let run_until = run_for.map(|d| Instant::now() + d);
        h.run_until = run_until;
        let stopped_at = h.stopped_at;
        if h.why.is_some() {
            abort.abort();
        }
        h.abort = Some(abort);
        drop(held);
        let report_after = self.shared.timing.report_after();
        for t in run_until
            .into_iter()
            .chain(stopped_at.map(|t| t + report_after))
        {
            self.shared.wake_by(t);
        }
    }

    /// Why the job was told to stop, if it was.
    pub(crate) fn why(&self, id: LeaseId) -> Option<Stop> {
        lock(&self.shared.held).get(&id).and_then(|h| h.why)
    }

    /// Stops every held job of a queue (shutdown).
    pub(crate) fn stop_queue(&self, partition: &str, queue: &str, why: Stop) {
        let now = Instant::now();
        for h in lock(&self.shared.held).values_mut() {
            if &*h.partition == partition && &*h.queue == queue {
                h.stop(why, now);
            }
        }
        self.shared.wake_by(now + self.shared.timing.report_after());
    }

    /// How many jobs of a queue are held (their tasks have not ended or not been recorded).
    pub(crate) fn held_in(&self, partition: &str, queue: &str) -> usize {
        lock(&self.shared.held)
            .values()
            .filter(|h| &*h.partition == partition && &*h.queue == queue)
            .count()
    }

    /// The job's task ended and its outcome was recorded: stop renewing its lease.
    pub(crate) fn release(&self, id: LeaseId) {
        let Some(h) = lock(&self.shared.held).remove(&id) else {
            return;
        };
        if h.reported {
            metrics::gauge!(metric::STOPPING, "partition" => h.partition.clone(), "queue" => h.queue.clone())
                .decrement(1.0);
            let late = h.stopped_at.map(|t| t.elapsed()).unwrap_or_default();
            tracing::warn!(id = %h.id, job = %h.name, late_ms = late.as_millis() as u64,
                "the job's task ended at last, after it was told to stop; its keys are released");
        }
    }

    /// Starts lease checks and trimming for a queue.
    pub(crate) fn add_queue(&self, partition: &str, queue: &str) {
        *lock(&self.shared.queues)
            .entry((partition.to_owned(), queue.to_owned()))
            .or_default() += 1;
    }

    /// Ends them (when the last loop of the queue stops).
    pub(crate) fn remove_queue(&self, partition: &str, queue: &str) {
        let mut q = lock(&self.shared.queues);
        let k = (partition.to_owned(), queue.to_owned());
        if let Some(n) = q.get_mut(&k) {
            *n -= 1;
            if *n == 0 {
                q.remove(&k);
            }
        }
    }
}

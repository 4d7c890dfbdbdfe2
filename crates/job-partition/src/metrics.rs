//! The names of the metrics this crate records, through the
//! [`metrics`](https://docs.rs/metrics) facade (install any `metrics` recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost next to nothing).
//!
//! Every metric carries the labels `partition` and `queue` (the names given to
//! [`Jobs`](crate::Jobs) and [`WorkerBuilder::queue`](crate::WorkerBuilder::queue); never a
//! URL or a credential). [`JOBS`] and [`QUEUE_DEPTH`] have `state` too, [`CALLBACK_PANICS`]
//! has `callback`; [`SCHEDULE_TICKS`] has `schedule` instead of `queue`. Each constant's doc
//! opens with the metric's type and unit and ends with its labels; the guide
//! (`docs/job-partition.md`, "Metrics") has them in one table, which a test checks against
//! these docs.

/// Counter, in jobs: job events, by label `state`. Recorded by [`Jobs`](crate::Jobs) for
/// `enqueued`, `duplicate` (a queue key was taken) and `debounced` (a debounced enqueue
/// replaced a job that had not started); by a worker for `completed`,
/// `retried`, `dead`, `cancelled`, `timed_out` (its `max_execution_time` passed),
/// `lost_lease` (the worker could not prove it still held the lease, or Redis said it
/// lost it) and `stop_overdue` (the job was told to stop and its task did not end: its
/// code blocks its thread or ignores cancellation).
///
/// Labels: `partition`, `queue`, `state`.
pub const JOBS: &str = "wharf_jobs_total";

/// Histogram, in seconds: how long `perform` ran, from its start to its task's end
/// (whatever the outcome).
///
/// Labels: `partition`, `queue`.
pub const DURATION: &str = "wharf_job_duration_seconds";

/// Gauge, in jobs: this worker's jobs that were told to stop and whose task has not ended
/// (each keeps its lease, keys and queue slot until it does).
///
/// Labels: `partition`, `queue`.
pub const STOPPING: &str = "wharf_jobs_stopping";

/// Gauge, in leases: leases of the queue whose worker stopped renewing them (not renewed
/// for five of its heartbeat intervals: crashed or frozen). Their jobs hold queue slots and
/// keys until the leases expire. Set once a second by every worker serving the queue.
///
/// Labels: `partition`, `queue`.
pub const STALLED_LEASES: &str = "wharf_jobs_stalled_leases";

/// Gauge, in seconds: how long until the first stalled lease of the queue expires (0: none
/// is stalled).
///
/// Labels: `partition`, `queue`.
pub const STALLED_LEASE_EXPIRES_IN: &str = "wharf_jobs_stalled_lease_expires_in_seconds";

/// Counter, in panics: panics caught in the application's code a worker calls outside a
/// job's task (the job's outcome stands; see [`Hooks`](crate::Hooks)), by label `callback`:
/// a hook (`before`, `after`, `on_error`, `on_cancel`, `on_dead`) or a method of the job
/// (`Job::deserialize`, `Job::retryable`, `Job::max_attempts`, `Job::max_execution_time`,
/// `Job::execution_key_waits_for_retry`, `Job::backoff`, `Job::drop`, `JobError::fmt`). The
/// name matches webhooks-emitter's `wharf_webhooks_callback_panics_total` pattern.
///
/// Labels: `partition`, `queue`, `callback`.
pub const CALLBACK_PANICS: &str = "wharf_jobs_callback_panics_total";

/// Gauge, in jobs: how many jobs of the queue are in each state, by label `state`:
/// `queued` (ready, waiting for a worker), `scheduled` (waiting for a time: scheduled, or
/// retrying after a backoff), `parked` (waiting for their execution key), `running` (across
/// every worker process) and `dead` (in the dead set); the figures of
/// [`Jobs::counts`](crate::Jobs::counts). Set once a second by every worker serving the
/// queue, from its lease thread, with one pipelined Redis round trip per queue (never on a
/// job's path); a failed or late answer leaves the figures as they were until the next.
///
/// Labels: `partition`, `queue`, `state`.
pub const QUEUE_DEPTH: &str = "wharf_jobs_queue_depth";

/// Counter, in jobs: jobs enqueued by schedule ticks (counted by the scheduler whose
/// script fired them, so the sum over all schedulers is the number of ticks fired).
///
/// Labels: `partition`, `schedule` (no queue label: a schedule names its queue itself).
pub const SCHEDULE_TICKS: &str = "wharf_jobs_schedule_ticks_total";

//! Metric names, in one place (labels: `partition`, `queue`, and `state` or `callback` for
//! the counters).

/// Counter of job events by `state`: `enqueued`, `duplicate`, `completed`, `retried`,
/// `dead`, `cancelled`, `timed_out`, `lost_lease`, `stop_overdue`.
pub(crate) const METRIC_JOBS: &str = "wharf_jobs_total";
/// Histogram of `perform` run time, in seconds.
pub(crate) const METRIC_DURATION: &str = "wharf_job_duration_seconds";
/// Gauge: jobs of this worker told to stop whose task has not ended (they keep their keys).
pub(crate) const METRIC_STOPPING: &str = "wharf_jobs_stopping";
/// Gauge: leases of the queue whose worker stopped renewing them (crashed or frozen); their
/// jobs hold queue slots and keys until the leases expire.
pub(crate) const METRIC_STALLED: &str = "wharf_jobs_stalled_leases";
/// Gauge: seconds until the first stalled lease of the queue expires (0: none).
pub(crate) const METRIC_STALLED_EXPIRY: &str = "wharf_jobs_stalled_lease_expires_in_seconds";
/// Counter: panics caught in the application's code a worker calls outside a job's task;
/// label `callback`: a hook (`before`, `after`, `on_error`, `on_cancel`, `on_dead`) or a
/// method of the job (`Job::deserialize`, `Job::retryable`, `Job::max_attempts`,
/// `Job::max_execution_time`, `Job::execution_key_waits_for_retry`, `Job::backoff`,
/// `Job::drop`, `JobError::fmt`).
pub(crate) const METRIC_CALLBACK_PANICS: &str = "wharf_jobs_callback_panics_total";

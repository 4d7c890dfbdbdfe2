//! Metric names, in one place (labels: `partition`, `queue`, and `state` for the counter).

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

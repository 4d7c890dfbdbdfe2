//! Hooks: user code called around each job's life.

use std::time::Duration;

/// Which job a hook is about.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JobEvent<'a> {
    /// The partition.
    pub partition: &'a str,
    /// The queue.
    pub queue: &'a str,
    /// The job's id.
    pub id: &'a str,
    /// The job's registered name.
    pub name: &'a str,
    /// The attempt, from 1.
    pub attempt: u32,
}

/// Called by a worker around each job. Every method has an empty default.
///
/// Hooks run on the worker's task: keep them short and never block (send to a channel or
/// spawn for slow work).
///
/// A panic in a hook is caught: it is logged (an error naming the hook and the job's id)
/// and counted in [`metrics::CALLBACK_PANICS`](crate::metrics::CALLBACK_PANICS) (label
/// `callback` = the hook's name), and the run goes on as if the hook had returned. It never
/// changes the job's outcome and never runs the job again: a job whose `before` panicked
/// still runs, `on_dead` is still called after an `on_error` that panicked, a cancel is
/// still recorded after an `on_cancel` that panicked.
/// (This needs `panic = "unwind"`, Rust's default; with `panic = "abort"` the process ends.)
pub trait Hooks: Send + Sync + 'static {
    /// Before `perform` starts.
    fn before(&self, _job: &JobEvent<'_>) {}
    /// After `perform` succeeded and the completion was recorded.
    fn after(&self, _job: &JobEvent<'_>, _elapsed: Duration) {}
    /// After a failure (error, panic or `max_execution_time`); `will_retry` says whether
    /// another attempt is scheduled.
    fn on_error(&self, _job: &JobEvent<'_>, _error: &str, _will_retry: bool) {}
    /// After a running job was cancelled and its task aborted.
    fn on_cancel(&self, _job: &JobEvent<'_>) {}
    /// After a job went to the dead set.
    fn on_dead(&self, _job: &JobEvent<'_>, _reason: &str) {}
}

/// Hooks that do nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoHooks;

impl Hooks for NoHooks {}

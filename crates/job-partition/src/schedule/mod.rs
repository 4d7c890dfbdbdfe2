//! Recurring jobs: schedules by cron expression (with seconds, in a time zone) or by fixed
//! interval, fired exactly once per tick however many schedulers run.
//!
//! - `spec`: [`Schedule`] (when it ticks) and [`Missed`] (ticks missed while no scheduler
//!   ran).
//! - `admin`: `Jobs::schedule`, `schedules`, `pause_schedule`, `resume_schedule`,
//!   `remove_schedule`.
//! - `scheduler`: [`Scheduler`], the loop that fires due ticks.
//!
//! Each schedule is a hash in its partition (`sched:<name>`: definition, version, next
//! tick) and a member of the partition's `scheds` sorted set (by next tick). A scheduler
//! reads the due ones, computes each one's ticks (cron needs Rust: croner and chrono-tz)
//! and calls `tick.lua`, which enqueues the ticks' jobs with `enqueue.lua`'s body and
//! advances the next tick only if the schedule is still at the version and tick it read.

mod admin;
mod scheduler;
mod spec;

pub use admin::ScheduleInfo;
pub use scheduler::Scheduler;
pub use spec::{MAX_CATCH_UP, Missed, Schedule};

#[cfg(test)]
mod tests;

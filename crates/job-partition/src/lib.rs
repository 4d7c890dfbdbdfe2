#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod hooks;
mod job;
mod keys;
pub mod metrics;
mod rate;
mod schedule;
mod scripts;
mod trace;
mod worker;

#[doc(inline)]
pub use client::{
    Batch, BatchCounts, BatchEnqueued, BatchInfo, ChildFailure, Children, FailedChild, Flow,
    FlowEnqueued, FlowInfo, MAX_BATCH_JOBS, MAX_FLOW_CHILDREN, MISSING_GRACE, Member,
};
#[doc(inline)]
pub use client::{
    CancelOutcome, Config, Debounced, Enqueued, JobInfo, JobOutcome, JobState, Jobs, Lease,
    MAX_ARGS_BYTES, QueueCounts, Retention,
};
#[doc(inline)]
pub use client::{
    Deleted, ExecutionKey, Filter, Found, JobList, JobRecord, MAX_PAGE, MAX_SCAN, Page,
    RetriedDead, RunNow, WorkerInfo,
};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use hooks::{Hooks, JobEvent, NoHooks};
#[doc(inline)]
pub use job::{
    Job, JobContext, JobError, MAX_PRIORITY, MAX_PROGRESS_BYTES, MAX_RESULT_BYTES, Registry,
};
#[doc(inline)]
pub use rate::{MAX_RATE, MAX_RATE_WINDOW, RateLimit};
#[doc(inline)]
pub use schedule::{MAX_CATCH_UP, Missed, Schedule, ScheduleInfo, Scheduler};
#[doc(inline)]
pub use worker::{Worker, WorkerBuilder, WorkerHandle};

/// The token that stops [`Worker::run`] (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

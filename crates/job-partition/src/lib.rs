//! # wharf-job-partition
//!
//! Background jobs on Redis whose guarantees hold across processes and machines. This
//! crate provides:
//!
//! - [`Job`]: a job type (serde arguments, `perform`), with optional **queue key** (only one
//!   such job queued, running or waiting to retry), **execution key** (never two running at
//!   once anywhere; waiters start in enqueue order), retries with backoff and jitter, and a
//!   maximum execution time.
//! - [`Jobs`]: enqueue (now, at a time, after a delay, in bulk), cancel (queued or running,
//!   on any worker), inspect, count, pause, resume, purge, set global worker limits and
//!   retention, list and re-enqueue dead jobs.
//! - [`Worker`]: runs jobs of a [`Registry`] from any partitions and queues. Jobs are held
//!   under **leases** renewed by heartbeats from a thread of the worker's own (job code
//!   cannot starve it); a worker that dies (even `kill -9`) has its jobs run again once
//!   their leases expire; a worker cut off from Redis stops its jobs *before* their leases
//!   can expire, so an execution key never runs on two workers at once; and a **fencing
//!   token** keeps a worker that lost a lease from completing or failing the job another
//!   worker took.
//! - [`Hooks`]: before, after, on error, on cancel, on dead. A panic in a hook (or in a
//!   job's own methods the worker calls outside its task) is caught, logged and counted; it
//!   never changes a job's outcome nor runs it again.
//!
//! Use it when jobs must survive crashes and limits must hold globally (a queue limited to
//! 5 runs 5 jobs at once across all your machines). Every multi-key change is one Lua
//! script; all keys of a partition share the hash tag `{wharf:<partition>}`, so Redis
//! Cluster ([`Config::cluster`]) can spread partitions over shards; Sentinel
//! ([`Config::sentinel`]) is supported too. Delivery is
//! at-least-once: a job may run again after a crash, so make `perform` idempotent.
//! Feature `tls`: `rediss://` URLs. The `wharf-jobs` binary inspects and administers jobs
//! from a shell. The guide is `docs/job-partition.md` in the repository.
//!
//! | to... | use |
//! | --- | --- |
//! | run a job once, now / later / at a time | [`Jobs::enqueue`], [`Jobs::enqueue_in`], [`Jobs::enqueue_at`] |
//! | enqueue many quickly | [`Jobs::enqueue_bulk`] (one atomic script per 500 jobs) |
//! | refuse a second identical job while one is pending | [`Job::queue_key`] |
//! | serialize jobs touching one resource | [`Job::execution_key`] |
//! | cap a queue across every machine | [`Jobs::set_limit`] |
//! | stop a job | [`Jobs::cancel`] (waiting: removed; running: aborted within ~1 s) |
//! | see why a queue waits (dead worker's leases) | [`Jobs::leases`], `wharf-jobs leases P Q` |
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use tokio_util::sync::CancellationToken;
//! use wharf_job_partition::{Config, Job, JobContext, JobError, Jobs, Registry, Worker};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendInvoice { customer: u64 }
//!
//! impl Job for SendInvoice {
//!     const NAME: &'static str = "send_invoice";
//!     async fn perform(self, ctx: JobContext) -> Result<(), JobError> {
//!         println!("invoice for {} (attempt {})", self.customer, ctx.attempt());
//!         Ok(())
//!     }
//!     // One invoice run per customer at a time, across all workers.
//!     fn execution_key(&self) -> Option<String> { Some(format!("customer:{}", self.customer)) }
//! }
//!
//! # async fn demo() -> Result<(), wharf_job_partition::Error> {
//! let jobs = Jobs::connect(Config::from_env()).await?;
//! jobs.set_limit("tenant-a", "billing", Some(5)).await?; // 5 at once, globally
//! jobs.enqueue("tenant-a", "billing", &SendInvoice { customer: 42 }).await?;
//!
//! let worker = Worker::builder(jobs.clone(), Registry::new().register::<SendInvoice>())
//!     .queue("tenant-a", "billing", 10)
//!     .build()?;
//! let stop = CancellationToken::new();
//! worker.run(stop).await?;
//! # Ok(()) }
//! ```
//!
//! ## Redis keys
//!
//! With `P` = `{wharf:<partition>}:` and `Q` = `P q:<queue>:`:
//!
//! | key | type | holds |
//! | --- | --- | --- |
//! | `wharf:partitions` | set | partition names (for listing) |
//! | `P queues` | set | the partition's queue names |
//! | `P config` | hash | retention: `keep_done`, `keep_done_ms`, `keep_dead` |
//! | `P seq` | string | enqueue sequence (FIFO order) |
//! | `P job:<id>` | hash | name, args, queue, state, attempts, token, keys, error, `worker` (`<worker id> <lease_ms> <beat_ms>` while it runs), `stopping` (`<token> <reason>`) |
//! | `Q wait` | zset | ready jobs by sequence |
//! | `Q delayed` | zset | scheduled and retrying jobs by due time (ms) |
//! | `Q active` | zset | running jobs by lease deadline (ms); its size is the global running count |
//! | `Q parked` | zset | jobs waiting for their execution key |
//! | `Q done` / `Q dead` | zset | finished / dead jobs by time, trimmed by retention |
//! | `Q meta` | hash | `paused`, `limit`, and lifetime counters |
//! | `P qkey:<key>` | string | id of the job holding a queue key |
//! | `P xlock:<key>` | string | id of the job holding an execution key |
//! | `P xwait:<key>` | zset | jobs waiting for an execution key, by sequence |
//!
//! ## Metrics
//!
//! Their names, with type, unit and labels, are in [`metrics`].

#![cfg_attr(docsrs, feature(doc_cfg))]

mod client;
mod error;
mod hooks;
mod job;
mod keys;
pub mod metrics;
mod scripts;
mod worker;

#[doc(inline)]
pub use client::{
    CancelOutcome, Config, Enqueued, JobInfo, JobState, Jobs, Lease, MAX_ARGS_BYTES, QueueCounts,
    Retention,
};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use hooks::{Hooks, JobEvent, NoHooks};
#[doc(inline)]
pub use job::{Job, JobContext, JobError, Registry};
#[doc(inline)]
pub use worker::{Worker, WorkerBuilder, WorkerHandle};

/// The token that stops [`Worker::run`] (re-exported from `tokio-util`).
pub use tokio_util::sync::CancellationToken;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

//! `Jobs`: the handle to enqueue, inspect, cancel and administer jobs.
//!
//! - `config`: how to reach Redis.
//! - `connection`: the connection (one Redis, a Cluster, or a Sentinel's master).
//! - `enqueue`: enqueueing jobs.
//! - `inspect`: reading jobs, queues and counts.
//! - `browse`: paging, searching and the console's actions (delete, run now, retry all dead).
//! - `admin`: cancel, pause, limits, retention, purge, dead jobs.
//! - `flow`: flows and batches (members in any partition, counted through an outbox).
//! - `outcome`: waiting for a job's outcome (`Jobs::wait_for`).
//! - `lease`: the worker's side (claim, heartbeat, complete, fail, reap) and `Jobs::leases`.

mod admin;
mod browse;
mod config;
mod connection;
mod enqueue;
mod flow;
mod inspect;
mod lease;
mod outcome;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::FromRedisValue;

use crate::error::{Error, Result};
use crate::keys;

pub use admin::{CancelOutcome, Retention};
pub use browse::{
    Deleted, ExecutionKey, Filter, Found, JobList, JobRecord, MAX_PAGE, MAX_SCAN, Page,
    RetriedDead, RunNow, WorkerInfo,
};
pub use config::Config;
use connection::Conn;
pub use enqueue::{Debounced, Enqueued, MAX_ARGS_BYTES};
pub(crate) use enqueue::{Pending, pending};
pub use flow::{
    Batch, BatchCounts, BatchEnqueued, BatchInfo, ChildFailure, Children, FailedChild, Flow,
    FlowEnqueued, FlowInfo, MAX_BATCH_JOBS, MAX_FLOW_CHILDREN, MISSING_GRACE, Member,
};
pub use inspect::{JobInfo, JobState, QueueCounts};
pub use lease::Lease;
pub(crate) use lease::{Beat, Claimed, Finished};
pub use outcome::JobOutcome;

/// The handle to jobs in Redis: enqueue, inspect, cancel, pause, purge.
///
/// Cheap to clone (one multiplexed connection that reconnects by itself). Every call has a
/// timeout ([`Config::response_timeout`]).
#[derive(Clone)]
pub struct Jobs {
    conn: Conn,
    timeout: Duration,
    config: Arc<Config>,
    known_partitions: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Jobs {
    /// Connects to Redis (fails after the connect timeout if it cannot).
    pub async fn connect(config: Config) -> Result<Self> {
        // redis' rustls needs a process-wide crypto provider; install ring's unless the
        // application installed one already (then this does nothing).
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let limit = config.connect_timeout.saturating_mul(2);
        let conn = match tokio::time::timeout(limit, Conn::open(&config)).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    op: "connect",
                    timeout_ms: limit.as_millis() as u64,
                });
            }
        };
        Ok(Self {
            conn,
            timeout: config.response_timeout,
            config: Arc::new(config),
            known_partitions: Arc::default(),
        })
    }

    /// The configuration this handle connected with (a worker's lease thread opens its own
    /// connection with it).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// How long one Redis call may take ([`Config::response_timeout`]).
    pub(crate) fn response_timeout(&self) -> Duration {
        self.timeout
    }

    pub(crate) async fn call<T: FromRedisValue>(
        &self,
        op: &'static str,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        let fut = cmd.query_async::<T>(&mut conn);
        self.bounded(op, fut).await
    }

    /// Runs a pipeline with the timeout of every call.
    pub(crate) async fn pipeline<T: FromRedisValue>(
        &self,
        op: &'static str,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let mut conn = self.conn.clone();
        let fut = pipe.query_async::<T>(&mut conn);
        self.bounded(op, fut).await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        // The connection manager has its own response timeout; this outer bound also
        // covers a reconnection in progress.
        let limit = self.timeout.saturating_mul(2);
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Redis { op, source }),
            Err(_) => Err(Error::Timeout {
                op,
                timeout_ms: limit.as_millis() as u64,
            }),
        }
    }

    pub(crate) async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        partition: &str,
        args: Vec<String>,
    ) -> Result<T> {
        let mut inv = script.prepare_invoke();
        inv.key(keys::route(partition)).arg(keys::prefix(partition));
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let fut = inv.invoke_async::<T>(&mut conn);
        self.bounded(op, fut).await
    }

    pub(crate) async fn note_partition(&self, partition: &str) -> Result<()> {
        let known = self
            .known_partitions
            .lock()
            .map(|k| k.contains(partition))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let _: i64 = self
            .call(
                "register partition",
                redis::cmd("SADD").arg(keys::PARTITIONS).arg(partition),
            )
            .await?;
        if let Ok(mut k) = self.known_partitions.lock() {
            k.insert(partition.to_owned());
        }
        Ok(())
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.call("ping", &redis::cmd("PING")).await?;
        Ok(())
    }

    /// Sends any Redis command on this handle's connection, with its timeout (feature
    /// `test-util`): for tests that read or change what this crate keeps in Redis. It
    /// bypasses every rule the scripts keep (a write to a job's keys can break a lease,
    /// a limit or an execution key): never use it on keys of a live system.
    #[cfg(feature = "test-util")]
    #[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
    pub async fn raw(&self, cmd: &redis::Cmd) -> Result<redis::Value> {
        self.call("raw", cmd).await
    }
}

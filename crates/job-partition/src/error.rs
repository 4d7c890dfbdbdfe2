//! The crate's error type.

/// Everything that can go wrong in wharf-job-partition.
///
/// Each variant says what happened and carries what is needed to act on it. Redis URLs
/// (which may hold a password) never appear in these messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A call to Redis failed or timed out.
    #[error(
        "redis {op} failed: {source}; check that Redis is reachable and healthy (the call is safe to retry)"
    )]
    Redis {
        /// The operation that failed (for example `enqueue`, `claim`).
        op: &'static str,
        /// The client's error.
        #[source]
        source: redis::RedisError,
    },
    /// A call to Redis did not answer within the configured timeout.
    #[error(
        "redis {op} timed out after {timeout_ms} ms; check Redis latency or raise Config::response_timeout"
    )]
    Timeout {
        /// The operation that timed out.
        op: &'static str,
        /// The timeout, in milliseconds.
        timeout_ms: u64,
    },
    /// The configuration or a name is not valid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// No partition of this name has had a job (see [`Jobs::partitions`](crate::Jobs::partitions)).
    #[error(
        "unknown partition `{partition}`; Jobs::partitions lists the partitions that have jobs"
    )]
    UnknownPartition {
        /// The name asked for.
        partition: String,
    },
    /// The partition has no queue of this name (see [`Jobs::queues`](crate::Jobs::queues)).
    #[error("unknown queue `{queue}` in partition `{partition}`; Jobs::queues lists its queues")]
    UnknownQueue {
        /// The partition.
        partition: String,
        /// The name asked for.
        queue: String,
    },
    /// No job of this id in the partition (never enqueued, deleted, or finished and trimmed
    /// by retention).
    #[error(
        "unknown job `{id}` in partition `{partition}`: never enqueued, deleted, or finished and trimmed by retention"
    )]
    UnknownJob {
        /// The partition.
        partition: String,
        /// The id asked for.
        id: String,
    },
    /// A Redis URL, or the list of a Cluster's nodes or of the sentinels, could not be used.
    #[error("invalid configuration: {what} is not valid: {source}")]
    InvalidUrl {
        /// Which URL or list, with any password replaced by `***`.
        what: String,
        /// The client's error (it never holds the URL).
        #[source]
        source: redis::RedisError,
    },
    /// A job's arguments could not be encoded as JSON.
    #[error(
        "could not encode the arguments of job `{name}` as JSON: {source}; check its Serialize impl"
    )]
    Encode {
        /// The job's registered name.
        name: String,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A value was larger than this crate stores; nothing was stored.
    #[error(
        "the {what} is {bytes} bytes as JSON; the limit is {limit}: store large data elsewhere and keep a reference"
    )]
    TooLarge {
        /// What was refused (`progress`, `result`).
        what: &'static str,
        /// Its size as JSON.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A running job's worker no longer holds its lease (another worker may run it now), so
    /// it may not write to the job: stop the work, its outcome will not be recorded.
    #[error(
        "job {id}: this worker no longer holds the job's lease, nothing was written; another worker runs it once the lease expires"
    )]
    LeaseLost {
        /// The job's id.
        id: String,
    },
    /// A stored value could not be decoded into the type asked for.
    #[error("could not decode the {what} as the type asked for: {source}; check the type")]
    Decode {
        /// What was decoded (for example `job's result`).
        what: &'static str,
        /// The deserializer's error.
        #[source]
        source: serde_json::Error,
    },
    /// A thread the worker needs could not be started.
    #[error("could not start {what}: {source}; the system is out of threads or memory")]
    Thread {
        /// Which thread.
        what: &'static str,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Redis answered something this crate did not expect (another writer on our keys?).
    #[error(
        "unexpected answer from redis to {op}: {detail}; are other programs writing wharf's keys?"
    )]
    Protocol {
        /// The operation.
        op: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A schedule's definition is not valid (a cron expression that does not parse, an
    /// unknown time zone, a zero interval, a missed-tick bound out of range). Nothing was
    /// written to Redis.
    #[error("{what} is not valid: {reason}")]
    InvalidSchedule {
        /// What was given (for example "cron expression `61 * * * * *`").
        what: String,
        /// What is wrong and what to write instead.
        reason: String,
        /// The parser's error, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A rate limit is not valid (no start allowed, a zero or too long window). Nothing
    /// was written to Redis.
    #[error("invalid rate limit: {reason}")]
    InvalidRateLimit {
        /// What is wrong and what to give instead.
        reason: String,
    },
    /// No schedule of this name exists in the partition. Nothing was written to Redis.
    #[error(
        "no schedule `{name}` in partition `{partition}`; list them with Jobs::schedules (or `wharf-jobs schedules {partition}`), or create it with Jobs::schedule"
    )]
    UnknownSchedule {
        /// The partition.
        partition: String,
        /// The name asked for.
        name: String,
    },
    /// A flow or a batch is not valid (no member, too many, a name that is not valid, a
    /// member with a queue key). Nothing was written to Redis.
    #[error("invalid flow or batch: {reason}; nothing was written")]
    InvalidFlow {
        /// What is wrong and what to do instead.
        reason: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

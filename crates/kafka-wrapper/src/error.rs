//! The crate's one error enum.

use std::time::Duration;

use rdkafka::error::KafkaError;

/// Everything that can go wrong in `wharf-kafka-wrapper`.
///
/// Each variant says what went wrong and what to do about it. librdkafka's own error is kept
/// as the source where there is one.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// librdkafka refused the configuration (unknown property, bad value).
    #[error(
        "invalid Kafka client configuration: {0}; check the librdkafka property names and values"
    )]
    Config(#[source] KafkaError),
    /// A setting of the wrapper itself (not a librdkafka property) is out of range: the
    /// reason says which bound it breaks and what to change.
    #[error("invalid wrapper setting `{setting}`: {reason}")]
    Setting {
        /// The [`KafkaConfig`](crate::KafkaConfig) setting at fault.
        setting: &'static str,
        /// What is wrong with it, and what to do.
        reason: String,
    },
    /// A message could not be queued for sending (queue full past the wait, message too
    /// large, unknown topic or partition).
    #[error(
        "could not queue the message for topic `{topic}`: {source}; check the topic and message size, or raise queue.buffering.max.messages"
    )]
    Enqueue {
        /// The target topic.
        topic: String,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
    /// The broker did not acknowledge the message (timeout, broker error, purged at a rebuild).
    #[error(
        "message to topic `{topic}` was not delivered: {source}; it may be retried safely (the producer is idempotent)"
    )]
    Delivery {
        /// The target topic.
        topic: String,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
    /// The producer or consumer was removed, or the wrapper shut down.
    #[error("`{0}` is stopped (removed or shut down); register it again or restart the wrapper")]
    Stopped(String),
    /// No producer/consumer instance became available in time (the wrapper is rebuilding the
    /// client and Kafka is still unreachable).
    #[error(
        "`{what}` was not available within {after:?}: the Kafka client is being rebuilt; retry later"
    )]
    Unavailable {
        /// What was waited for.
        what: String,
        /// How long it was waited for.
        after: Duration,
    },
    /// A consumer was started outside a tokio runtime: its workers and handlers run on the
    /// runtime it was started in.
    #[error(
        "{what} needs a tokio runtime: start the wrapper and add consumers from async code (or inside `Runtime::enter`)"
    )]
    NoRuntime {
        /// What could not be started.
        what: String,
    },
    /// The operating system refused a thread (each consumer polls Kafka on a thread of its
    /// own).
    #[error(
        "could not start the polling thread of {what}: {source}; the process is out of threads or memory (check `ulimit -u` and the memory limit)"
    )]
    Thread {
        /// What could not be started.
        what: String,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// A producer or consumer with this name is already registered.
    #[error("a producer or consumer named `{0}` is already registered; names must be unique")]
    Duplicate(String),
    /// A topic administration request failed.
    #[error(
        "topic administration failed for `{topic}`: {reason}{}",
        source.as_ref().map(|e| format!(" ({e})")).unwrap_or_default()
    )]
    Admin {
        /// The topic concerned (or `*` for the whole request).
        topic: String,
        /// What failed.
        reason: String,
        /// librdkafka's or the broker's error, when there is one.
        #[source]
        source: Option<Box<KafkaError>>,
    },
    /// A request to the brokers failed (metadata, watermarks, fetch).
    #[error("Kafka request `{what}` failed: {source}; check that the brokers are reachable")]
    Kafka {
        /// The request that failed.
        what: String,
        /// librdkafka's reason.
        #[source]
        source: KafkaError,
    },
    /// A wait ran out of time.
    #[error("`{what}` did not complete within {after:?}")]
    Timeout {
        /// What was waited for.
        what: String,
        /// The limit that passed.
        after: Duration,
    },
    /// The wrapper gave up rebuilding after the configured number of attempts.
    #[error("gave up after {attempts} rebuilds of the Kafka client; last failure: {last_failure}")]
    RebuildsExhausted {
        /// How many rebuilds were tried.
        attempts: u32,
        /// Why the last generation failed.
        last_failure: String,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

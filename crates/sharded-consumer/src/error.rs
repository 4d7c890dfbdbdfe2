//! The crate's one error enum.

use std::time::Duration;

use wharf_core::BoxError;

/// Everything that can go wrong in `wharf-sharded-consumer`.
///
/// Each variant names the cause and says what to do about it.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The builder was given a setting that cannot work.
    #[error("invalid sharded consumer configuration: {0}")]
    InvalidConfig(String),
    /// The builder was not told what to do with messages that cannot be handled.
    #[error(
        "sharded consumer `{consumer}` has no dead-letter policy; call `.dead_letter(publisher)` to \
         publish unhandleable messages somewhere, or `.discard_dead_letters()` to log and drop them"
    )]
    NoDeadLetterPolicy {
        /// The consumer's name.
        consumer: String,
    },
    /// `run` was called while another `run` of the same consumer is still going.
    #[error(
        "sharded consumer `{consumer}` is already running; one consumer runs one source at a time \
         (build a second consumer to consume a second source)"
    )]
    AlreadyRunning {
        /// The consumer's name.
        consumer: String,
    },
    /// The consumer is not running and nothing will run it again (it was never started and
    /// has no child spec, its run ended without a child spec, or its supervisor shut down or
    /// gave up), so the request was not served. Answered at once, also to a request that
    /// was waiting when that became true: a request never waits for a run that will not
    /// come. (Under a supervisor that may restart it, requests wait for the next run
    /// instead.)
    #[error(
        "sharded consumer `{consumer}` is not running and nothing will run it again (its run \
         ended or its supervisor stopped); the request was not served: run or supervise the \
         consumer again, then retry"
    )]
    Stopped {
        /// The consumer's name.
        consumer: String,
    },
    /// The run serving this request ended before answering: it was aborted (its future
    /// dropped, or its supervisor's shutdown grace ran out) or an executor failed, while the
    /// request's handler call was in progress. The request may or may not have taken
    /// effect; only the caller can tell whether to send it again. Requests not started yet
    /// are not affected: they wait for the next run, or fail with [`Error::Stopped`].
    #[error(
        "sharded consumer `{consumer}`: the run serving the request to key `{key}` ended \
         before answering ({reason}); it may or may not have taken effect"
    )]
    Interrupted {
        /// The consumer's name.
        consumer: String,
        /// The key.
        key: String,
        /// How the run ended, as its mailbox saw it.
        reason: String,
    },
    /// A key given to `signal` or `get_or_start` is not a valid sharding key.
    #[error("invalid sharding key: {reason}")]
    InvalidKey {
        /// Why it was rejected.
        reason: String,
    },
    /// A request to a key's actor got no answer in time. A signal that had not started when
    /// its caller gave up is skipped; one that had started runs to its end (at most the
    /// handler timeout).
    #[error(
        "no answer from the actor of key `{key}` within {after:?}; the consumer or the key may be \
         overloaded (a signal not started yet is skipped; retry later)"
    )]
    Timeout {
        /// The key.
        key: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// A key already has as many signals waiting as it may hold.
    #[error(
        "the actor of key `{key}` already has {capacity} signals waiting; retry later or raise \
         `max_signals_per_key`"
    )]
    SignalQueueFull {
        /// The key.
        key: String,
        /// The per-key bound.
        capacity: usize,
    },
    /// The key's actor failed (its `init` or `handle_signal` returned an error, panicked, or
    /// exceeded the handler timeout) while serving this request; the actor was restarted and
    /// its state rebuilt.
    #[error(
        "the actor of key `{key}` failed while serving the request ({reason}); its state was \
         dropped and will be rebuilt by `init`"
    )]
    ActorFailed {
        /// The key.
        key: String,
        /// What failed: the error's text or the panic message.
        reason: String,
    },
    /// A message could not be handed to the dead-letter publisher, after every attempt. The
    /// consumer stops with this error (its supervisor restarts it); the message was not
    /// acknowledged, so the source delivers it again.
    #[error(
        "could not dead-letter message {message} after {attempts} attempts: {cause}; the consumer \
         stops so that the message is delivered again instead of being lost (check the dead-letter \
         target)"
    )]
    DeadLetterFailed {
        /// The message's id at its source, or a description.
        message: String,
        /// Publish attempts made.
        attempts: u32,
        /// The last publish error.
        #[source]
        cause: BoxError,
    },
    /// An internal task of the consumer ended unexpectedly (a bug: please report it).
    #[error("sharded consumer `{consumer}`: internal task failed: {reason}")]
    Internal {
        /// The consumer's name.
        consumer: String,
        /// What happened.
        reason: String,
    },
}

/// Shorthand for results whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

//! The crate's one error enum.

use std::time::Duration;

// The error behind a failure that `Error` keeps: wharf-core's, the one shape for it.
pub use wharf_core::Cause;

use crate::{Event, EventId};

/// Everything that can go wrong when emitting a webhook event.
///
/// Errors before anything is sent (bad input, bad configuration, a full buffer, a disabled,
/// never started, dead or stopped emitter) are returned by `emit` and `emit_sync` themselves. Errors after the event
/// was accepted (rejected by SQS, retries exhausted, timeout, shutdown) go to the
/// `emit_sync` caller, or, for `emit`, to the failure hook, an error log line and the
/// [`metrics::FAILED`](crate::metrics::FAILED) counter.
///
/// Where another error caused the failure (the AWS SDK's, serde_json's, a compressor's), it
/// is kept as a [`Cause`] (wharf-core's, shared so that `Error` stays `Clone`): in the
/// variant's `source` field, and as [`std::error::Error::source`], which hands out that
/// error itself, so it downcasts to its type:
///
/// ```
/// # fn check(error: &wharf_webhooks_emitter::Error) {
/// use std::error::Error as _;
/// use wharf_webhooks_emitter::aws_sdk_sqs::error::SdkError;
/// use wharf_webhooks_emitter::aws_sdk_sqs::operation::send_message_batch::SendMessageBatchError;
///
/// type SendError = SdkError<SendMessageBatchError, wharf_webhooks_emitter::aws_sdk_sqs::config::http::HttpResponse>;
/// if let Some(sdk) = error.source().and_then(|e| e.downcast_ref::<SendError>()) {
///     eprintln!("the AWS SDK said: {sdk}");
/// }
/// # }
/// ```
///
/// [`Error::BufferFull`] hands the refused event back ([`Error::into_event`]).
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    // ----- the emitter's state -----
    /// No queue is configured (`SQS_QUEUE_URL` unset or empty and no `queue_url` given), so the
    /// emitter is disabled and sends nothing.
    #[error(
        "the webhooks emitter is disabled: no SQS queue is configured; set SQS_QUEUE_URL or call \
         EmitterBuilder::queue_url to enable it"
    )]
    Disabled,
    /// The emitter is enabled but its worker was never started, so nothing would ever send
    /// the event: it is refused at once instead of waiting in the buffer.
    #[error(
        "the webhooks emitter for queue `{queue}` was never started, so it cannot send events; \
         add `Emitter::child_spec` to a supervisor (or call `Emitter::start`) before emitting"
    )]
    NotStarted {
        /// Name of the queue.
        queue: String,
    },
    /// The emitter's worker died (it panicked, or its task was dropped or aborted) and nothing
    /// will restart it: it was started with `Emitter::start`, or its supervisor gave up on it.
    /// The events it held were failed (caller's error or failure hook, and the failed
    /// counter); new events are refused at once.
    #[error(
        "the webhooks emitter for queue `{queue}` cannot send events: its worker died \
         ({reason}) and nothing restarts it; start it again with `Emitter::start`, or run it \
         under a supervisor with `Emitter::child_spec` so that it is restarted"
    )]
    WorkerDied {
        /// Name of the queue.
        queue: String,
        /// What happened to the worker (a panic's message, an abort, a supervisor that gave up).
        reason: String,
    },
    /// The emitter was shut down (by `Emitter::shutdown` or by its supervisor) and takes no
    /// more events.
    #[error("the webhooks emitter for queue `{queue}` is stopped and takes no more events")]
    Stopped {
        /// Name of the queue.
        queue: String,
    },
    /// The bounded buffer is full (the endpoint is slow or unreachable) and the full policy
    /// said not to wait, or the wait allowed by the policy passed. The event was not taken:
    /// it comes back in `event` ([`Error::into_event`]), to retry without a clone.
    #[error(
        "the webhooks emitter's buffer is full (at most {capacity} events or {bytes} bytes wait \
         to be sent; waited {waited:?}); slow down, raise `buffer_capacity` or `buffer_bytes`, \
         or use FullPolicy::Wait. The event was not taken: `Error::into_event` hands it back \
         to retry"
    )]
    BufferFull {
        /// The event that was refused, unchanged.
        event: Box<Event>,
        /// The configured buffer capacity, in events.
        capacity: usize,
        /// The configured buffer budget, in bytes.
        bytes: usize,
        /// How long the call waited for room before giving up.
        waited: Duration,
    },

    // ----- configuration -----
    /// The queue URL is not an SQS queue URL.
    #[error(
        "malformed SQS queue URL `{url}`: {reason}; expected \
         http(s)://HOST/ACCOUNT_ID/QUEUE_NAME, as returned by CreateQueue or GetQueueUrl"
    )]
    InvalidQueueUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("invalid webhooks emitter configuration: `{field}` {reason}")]
    InvalidConfig {
        /// The builder method or environment variable at fault.
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },

    // ----- bad input, detected before anything is sent -----
    /// A field of the event is empty, too long, or otherwise unusable.
    #[error("invalid webhook event: `{field}` {reason}")]
    InvalidEvent {
        /// The field at fault (`event`, `providerId`, `url`, `groupKey`, `delay`).
        field: &'static str,
        /// What is wrong and what is allowed.
        reason: String,
    },
    /// The event's data could not be encoded as JSON (a map with non-string keys, a
    /// `Serialize` implementation that fails, ...).
    #[error("the data of webhook event `{event}` cannot be encoded as JSON: {reason}")]
    Unencodable {
        /// The event type.
        event: String,
        /// What serde_json (or the compressor) reported, or the `Serialize` panic's message.
        reason: String,
        /// serde_json's or the compressor's error (`None` for a panic).
        #[source]
        source: Option<Cause>,
    },
    /// The event contains a character that SQS rejects in a message body or attribute.
    #[error(
        "webhook event `{event}`: `{field}` contains the character U+{code_point:04X} (at byte \
         {offset}), which SQS rejects; SQS accepts only #x9 #xA #xD #x20-#xD7FF #xE000-#xFFFD \
         #x10000-#x10FFFF; remove or replace it before emitting"
    )]
    InvalidCharacter {
        /// The event type.
        event: String,
        /// Where the character is (`data`, `event`, `providerId`, `url`, `groupKey`).
        field: &'static str,
        /// The offending code point.
        code_point: u32,
        /// Byte offset of the character in the encoded field.
        offset: usize,
    },
    /// The encoded message (body plus attributes) exceeds the queue's size limit.
    #[error(
        "webhook event `{event}` encodes to {size} bytes, over the queue's limit of {limit} \
         bytes; send less data, enable compression, or raise `max_message_bytes` if the queue \
         allows more"
    )]
    TooLarge {
        /// The event type.
        event: String,
        /// Encoded size in bytes (body plus message attributes).
        size: usize,
        /// The configured limit.
        limit: usize,
    },

    // ----- failures after the event was accepted -----
    /// SQS rejected the event permanently (a sender fault such as an invalid parameter, a
    /// missing queue, denied access). Retrying the same event will not help.
    #[error("SQS rejected webhook event {event_id}: {code}: {message}")]
    Rejected {
        /// The event's id.
        event_id: EventId,
        /// The SQS error code (`InvalidParameterValue`, `AWS.SimpleQueueService.NonExistentQueue`, ...).
        code: String,
        /// The message SQS gave.
        message: String,
        /// The AWS SDK's error when SQS refused the whole request (an
        /// `aws_sdk_sqs::error::SdkError`), or its builder's when the entry could not be
        /// built; `None` when SQS listed this entry as failed in an answered batch.
        #[source]
        source: Option<Cause>,
    },
    /// Transient failures (throttling, 5xx, network) went on for longer than the retry
    /// policy allows.
    #[error(
        "webhook event {event_id} was not sent after {attempts} attempts over {elapsed:?} \
         (maybe sent: {maybe_sent}); last error: {last_error}"
    )]
    RetriesExhausted {
        /// The event's id.
        event_id: EventId,
        /// Attempts made.
        attempts: u32,
        /// Whether a request carrying the event may have reached SQS (see
        /// [`Error::Timeout`]'s `maybe_sent`).
        maybe_sent: bool,
        /// Time since the event was accepted.
        elapsed: Duration,
        /// The last transient error.
        last_error: String,
        /// The error behind the last transient failure, when there was one (the AWS SDK's
        /// for a request that failed as a whole).
        #[source]
        source: Option<Cause>,
    },
    /// `emit_sync` did not get a confirmation within its timeout.
    ///
    /// `maybe_sent: false` is a promise: no request carrying the event can have reached SQS
    /// (none was attempted, or every attempt failed in a way that proves it never left: a
    /// refused or failed connection, a request SQS answered with a client error, an entry
    /// SQS reported as failed). `maybe_sent: true` means it may be in the queue, or arrive
    /// there later: emitting it again gives a duplicate (consumers dedupe on the event id).
    #[error(
        "webhook event {event_id} was not confirmed within {after:?} ({attempts} attempts; \
         maybe sent: {maybe_sent}; last error: {last_error})"
    )]
    Timeout {
        /// The event's id.
        event_id: EventId,
        /// The timeout that passed.
        after: Duration,
        /// Attempts made so far.
        attempts: u32,
        /// Whether a request carrying the event may have reached SQS; `false` is a promise
        /// that it did not.
        maybe_sent: bool,
        /// The last transient error, or `none`.
        last_error: String,
        /// The error behind the last transient failure, when there was one (the AWS SDK's
        /// for a request that failed as a whole).
        #[source]
        source: Option<Cause>,
    },
    /// The emitter stopped (shutdown deadline passed, or it was dropped) before the event
    /// could be sent.
    #[error(
        "webhook event {event_id} was not sent: {reason} (maybe sent: {maybe_sent}); it was \
         counted in the shutdown report and the failed counter"
    )]
    NotSent {
        /// The event's id.
        event_id: EventId,
        /// Why.
        reason: String,
        /// Whether a request carrying the event may have reached SQS (one was in flight when it
        /// was abandoned, or an earlier attempt may have arrived); `false` is a promise that
        /// none did.
        maybe_sent: bool,
    },
}

impl Error {
    /// The event a [`BufferFull`](Error::BufferFull) error refused, to emit again without a
    /// clone; `None` for every other error.
    pub fn into_event(self) -> Option<Event> {
        match self {
            Error::BufferFull { event, .. } => Some(*event),
            _ => None,
        }
    }

    /// The event a [`BufferFull`](Error::BufferFull) error refused, if this is one.
    pub fn event(&self) -> Option<&Event> {
        match self {
            Error::BufferFull { event, .. } => Some(event),
            _ => None,
        }
    }

    /// A short, stable label for metrics and logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::Disabled => "disabled",
            Error::NotStarted { .. } => "not_started",
            Error::WorkerDied { .. } => "worker_died",
            Error::Stopped { .. } => "stopped",
            Error::BufferFull { .. } => "buffer_full",
            Error::InvalidQueueUrl { .. } => "invalid_queue_url",
            Error::InvalidConfig { .. } => "invalid_config",
            Error::InvalidEvent { .. } => "invalid_event",
            Error::Unencodable { .. } => "unencodable",
            Error::InvalidCharacter { .. } => "invalid_character",
            Error::TooLarge { .. } => "too_large",
            Error::Rejected { .. } => "rejected",
            Error::RetriesExhausted { .. } => "retries_exhausted",
            Error::Timeout { .. } => "timeout",
            Error::NotSent { .. } => "not_sent",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_source_of_an_error_is_the_error_its_cause_holds() {
        let io = std::io::Error::other("disk on fire");
        let error = Error::Unencodable {
            event: "e".to_string(),
            reason: io.to_string(),
            source: Some(Cause::new(io)),
        };
        let source = std::error::Error::source(&error).expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the io::Error itself");
        assert_eq!(io.to_string(), "disk on fire");
    }

    #[test]
    fn a_buffer_full_error_hands_the_event_back_unchanged() {
        let event = Event::from_json("p", "e", serde_json::json!({ "n": 1 }));
        let error = Error::BufferFull {
            event: Box::new(event),
            capacity: 1,
            bytes: 1024,
            waited: Duration::ZERO,
        };
        let back = error.into_event().expect("the event");
        assert_eq!(back.data(), &serde_json::json!({ "n": 1 }));
        assert!(Error::Disabled.into_event().is_none());
    }
}

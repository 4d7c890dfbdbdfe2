//! What the emitter reports: a confirmation, a failed event, its counts, a shutdown's result.

use std::time::Duration;

use crate::{Error, EventId};

/// What `emit_sync` resolves to: the event's id and what SQS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sent {
    /// The event's id (the envelope's `id`).
    pub event_id: EventId,
    /// The `MessageId` SQS assigned.
    pub message_id: String,
    /// The `SequenceNumber` on FIFO queues.
    pub sequence_number: Option<String>,
}

/// An event given to `emit` that failed permanently, as passed to the failure hook.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FailedEvent {
    /// The event's id.
    pub event_id: EventId,
    /// The event type.
    pub event: String,
    /// The provider id.
    pub provider_id: String,
    /// The message body that was (to be) sent, so it can be stored and replayed.
    pub body: String,
    /// Why it failed.
    pub error: Error,
}

/// Counts since the emitter was built (also exported as `metrics` counters, see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Stats {
    /// Events accepted by `emit`/`emit_sync`.
    pub emitted: u64,
    /// Events SQS confirmed.
    pub sent: u64,
    /// Retries of single events (an event retried three times counts three).
    pub retried: u64,
    /// Events that failed permanently after being accepted.
    pub failed: u64,
    /// SendMessageBatch requests made.
    pub requests: u64,
    /// Events accepted and not yet resolved (sent or failed).
    pub buffered: u64,
    /// Panics caught in code the application handed to the emitter (the failure hook, and an
    /// SQS client's interceptors, credentials provider or HTTP client). Each was logged; none
    /// stopped the emitter or lost a count.
    pub callback_panics: u64,
}

/// What a graceful shutdown achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ShutdownReport {
    /// Events confirmed by SQS during the drain.
    pub sent: u64,
    /// Events that could not be sent before the deadline; each went to its `emit_sync`
    /// caller or to the failure hook, and to the failed counter.
    pub unsent: u64,
    /// How long the drain took.
    pub elapsed: Duration,
}

//! The names of the metrics an [`Emitter`](crate::Emitter) records through the `metrics`
//! facade (install any `metrics` recorder to export them).
//!
//! Every metric has the label `queue`: the queue's name (never its URL or a credential); two
//! have one more label, named below. [`Emitter::stats`](crate::Emitter::stats) gives the same
//! counts live, without a recorder. Each constant's doc opens with the metric's type and
//! unit and ends with its labels; the guide (`docs/webhooks-emitter.md`, "Metrics") has
//! them in one table, which a test checks against these docs.

/// Counter, in events: events accepted by `emit`, `try_emit` and `emit_sync` (refused ones
/// are not counted).
///
/// Labels: `queue`.
pub const EMITTED: &str = "wharf_webhooks_emitted_total";

/// Counter, in events: events SQS confirmed.
///
/// Labels: `queue`.
pub const SENT: &str = "wharf_webhooks_sent_total";

/// Counter, in retries: single-event retries after a transient failure (an event retried
/// three times counts three).
///
/// Labels: `queue`.
pub const RETRIED: &str = "wharf_webhooks_retried_total";

/// Counter, in events: events that failed permanently after being accepted, by label
/// `reason`: `rejected`, `retries_exhausted`, `timeout`, `not_sent`.
///
/// Labels: `queue`, `reason`.
pub const FAILED: &str = "wharf_webhooks_failed_total";

/// Gauge, in events: the emitter's buffer: events accepted and not yet resolved (sent or
/// failed), at most the buffer's capacity. Updated as events enter and leave it.
///
/// Labels: `queue`.
pub const BUFFERED: &str = "wharf_webhooks_buffered";

/// Histogram, in entries: the entries of each SendMessageBatch request (1 to 10).
///
/// Labels: `queue`.
pub const BATCH_SIZE: &str = "wharf_webhooks_batch_size";

/// Counter, in requests: SendMessageBatch requests made.
///
/// Labels: `queue`.
pub const REQUESTS: &str = "wharf_webhooks_requests_total";

/// Counter, in panics: panics caught in the application's code the emitter calls, by label
/// `callback`: `failure_hook`, or `sqs_client` for an interceptor, credentials provider or
/// HTTP client passed in through `client` or `sdk_config`.
///
/// Labels: `queue`, `callback`.
pub const CALLBACK_PANICS: &str = "wharf_webhooks_callback_panics_total";

//! Metric names, exported through the `metrics` facade with the label `queue` (the queue's
//! name; never a URL or a credential).

/// Counter: events accepted by `emit`, `try_emit` and `emit_sync`.
pub const EMITTED: &str = "wharf_webhooks_emitted_total";
/// Counter: events SQS confirmed.
pub const SENT: &str = "wharf_webhooks_sent_total";
/// Counter: single-event retries after a transient failure.
pub const RETRIED: &str = "wharf_webhooks_retried_total";
/// Counter: events that failed permanently after being accepted; label `reason`
/// (`rejected`, `retries_exhausted`, `timeout`, `not_sent`).
pub const FAILED: &str = "wharf_webhooks_failed_total";
/// Gauge: events accepted and not yet resolved.
pub const BUFFERED: &str = "wharf_webhooks_buffered";
/// Histogram: entries per SendMessageBatch request.
pub const BATCH_SIZE: &str = "wharf_webhooks_batch_size";
/// Counter: SendMessageBatch requests.
pub const REQUESTS: &str = "wharf_webhooks_requests_total";
/// Counter: panics caught in the application's code the emitter calls; label `callback`
/// (`failure_hook`, or `sqs_client` for an interceptor, credentials provider or HTTP client
/// passed in through `client` or `sdk_config`).
pub const CALLBACK_PANICS: &str = "wharf_webhooks_callback_panics_total";

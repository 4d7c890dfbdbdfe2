//! The names of the metrics a [`Producer`](crate::Producer) records through the `metrics`
//! facade (install any `metrics` recorder to export them).
//!
//! Every metric has one label, `topic`: the topic as given to the builder (never the service
//! URL or the auth token). [`Producer::is_connected`](crate::Producer::is_connected),
//! [`pending`](crate::Producer::pending) and [`reconnects`](crate::Producer::reconnects)
//! give the same figures live, without a recorder.

/// Counter, in messages: messages that entered the window (each `produce`, `produce_with` and
/// message of a `produce_batch` that got a place in it). Label `topic`.
pub const PRODUCED: &str = "wharf_producer_ack_produced_total";
/// Counter, in messages: messages the broker stored (acknowledged with a receipt). Label
/// `topic`.
pub const ACKNOWLEDGED: &str = "wharf_producer_ack_acknowledged_total";
/// Counter, in messages: messages that entered the window and ended with `Error::Timeout`,
/// `Error::Rejected` or `Error::ConnectionLost`. Label `topic`.
pub const FAILED: &str = "wharf_producer_ack_failed_total";
/// Gauge, in messages: messages in the window now (queued or awaiting their receipt). Label
/// `topic`.
pub const PENDING: &str = "wharf_producer_ack_pending";
/// Counter, in connections: connections that were up, were lost, and are re-created by wharf
/// (a failed first connection attempt is not counted). Label `topic`.
pub const RECONNECTS: &str = "wharf_producer_ack_reconnects_total";

//! The names of the metrics a [`Producer`](crate::Producer) records through the `metrics`
//! facade (install any `metrics` recorder to export them).
//!
//! Every metric has one label, `topic`: the topic as given to the builder (never the service
//! URL or the auth token). [`Producer::is_connected`](crate::Producer::is_connected),
//! [`pending`](crate::Producer::pending) and [`reconnects`](crate::Producer::reconnects)
//! give the same figures live, without a recorder. Each constant's doc opens with the
//! metric's type and unit and ends with its labels; the guide (`docs/producer-ack.md`,
//! "Metrics") has them in one table, which a test checks against these docs.

/// Counter, in messages: messages that entered the window (each `produce`, `produce_with` and
/// message of a `produce_batch` that got a place in it).
///
/// Labels: `topic`.
pub const PRODUCED: &str = "wharf_producer_ack_produced_total";

/// Counter, in messages: messages the broker stored (acknowledged with a receipt).
///
/// Labels: `topic`.
pub const ACKNOWLEDGED: &str = "wharf_producer_ack_acknowledged_total";

/// Counter, in messages: messages that entered the window and ended with `Error::Timeout`,
/// `Error::Rejected` or `Error::ConnectionLost`.
///
/// Labels: `topic`.
pub const FAILED: &str = "wharf_producer_ack_failed_total";

/// Gauge, in messages: the window's places in use: the messages the producer's background
/// task holds, queued or awaiting their receipt, set each time it has handled what woke it.
/// At most [`WINDOW`]; [`Producer::pending`](crate::Producer::pending) also counts the
/// messages still on their way to the task.
///
/// Labels: `topic`.
pub const PENDING: &str = "wharf_producer_ack_pending";

/// Gauge, in messages: the window's size, the most messages that may await their receipt
/// at once ([`ProducerBuilder::window`](crate::ProducerBuilder::window)); [`PENDING`]
/// divided by it is how full the window is. Set when the producer's background task
/// starts.
///
/// Labels: `topic`.
pub const WINDOW: &str = "wharf_producer_ack_window";

/// Counter, in connections: connections that were up, were lost, and are re-created by wharf
/// (a failed first connection attempt is not counted).
///
/// Labels: `topic`.
pub const RECONNECTS: &str = "wharf_producer_ack_reconnects_total";

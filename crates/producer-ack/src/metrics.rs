//! Metric names (all labelled with `topic`).

pub(crate) const PRODUCED: &str = "wharf_producer_ack_produced_total";
pub(crate) const ACKNOWLEDGED: &str = "wharf_producer_ack_acknowledged_total";
pub(crate) const FAILED: &str = "wharf_producer_ack_failed_total";
pub(crate) const PENDING: &str = "wharf_producer_ack_pending";
pub(crate) const RECONNECTS: &str = "wharf_producer_ack_reconnects_total";

//! The span of a message turn, `sharded_message`, and (feature `otel`) the trace it
//! continues: the W3C context the delivery's message carries in its headers
//! (`traceparent`, `tracestate`), read with wharf-core's `trace`.
//!
//! **A child, not a link.** A turn handles exactly one delivery, and is that message's
//! handling: the causal next step after the publish. As a child of the producing span, the
//! handler's work (and what it sends on, stamped from this span) shows in the producer's
//! trace, one tree from the order to its effects. Every attempt is a child of the same
//! producing span, so retries show as siblings. Without a context in the headers the span
//! stays where it was, under the executor's span. (A link suits a span that handles many
//! messages at once, whose parent cannot be all of them; no span here does.)
//!
//! A missing header means no parent; a malformed or oversized one is ignored with a debug
//! event (wharf-core's rules) and the message is handled as usual. Nothing is read when the
//! span is disabled (it is at `trace` level). Without the feature nothing is read.

use wharf_core::transport::Delivery;

use crate::ShardKey;

/// The span one try of one message runs in, continuing the message's trace (feature `otel`).
pub(crate) fn message_span(key: &ShardKey, attempt: u32, delivery: &Delivery) -> tracing::Span {
    let span = tracing::trace_span!("sharded_message", %key, attempt);
    #[cfg(feature = "otel")]
    if !span.is_disabled() {
        wharf_core::trace::continue_trace(
            &span,
            delivery.message().headers(),
            wharf_core::trace::Relation::Child,
        );
    }
    #[cfg(not(feature = "otel"))]
    let _ = delivery;
    span
}

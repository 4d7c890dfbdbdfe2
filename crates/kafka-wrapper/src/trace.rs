//! W3C trace context in Kafka record headers (feature `otel`).
//!
//! - **On send** ([`Producer::send`](crate::Producer::send), `send_with`, `send_batch`, and
//!   so [`TopicPublisher`](crate::TopicPublisher)): the current span's context is written
//!   as the headers `traceparent` and `tracestate`, unless the record already has either
//!   (the user's own context wins). Outside a span exported by OpenTelemetry nothing is
//!   written.
//! - **On receive**: a per-message handler call runs in a `kafka_message` span that is a
//!   *child* of the producing span: one record, one parent, one tree (what Kafka tracing
//!   tools and OpenTelemetry's messaging conventions show for a single-message process
//!   span). A per-batch call runs in a `kafka_batch` span with a *link* to each record's
//!   context: a batch has many parents, and a span has one. A [`KafkaSource`]
//!   delivery is covered by a `kafka_delivery` span, a child of the producing span, from
//!   hand-out until it is acked, nacked or dropped; the delivery's headers carry the
//!   context too, for the user's own span
//!   (`wharf_core::trace::continue_trace(&span, delivery.message().headers(), Relation::Child)`).
//! - A missing, malformed or oversized header never fails anything: the message is handled
//!   as if it carried no context (wharf-core's `trace` logs a debug event).
//!
//! [`KafkaSource`]: crate::KafkaSource

use bytes::Bytes;

#[cfg(feature = "otel")]
use crate::message::ConsumedMessage;

/// Writes the current span's context into `headers`, unless they already hold one.
#[cfg(feature = "otel")]
pub(crate) fn inject(headers: &mut Vec<(String, Bytes)>) {
    use wharf_core::trace::{TRACEPARENT, TRACESTATE, TraceContext};
    if headers
        .iter()
        .any(|(k, _)| k == TRACEPARENT || k == TRACESTATE)
    {
        return;
    }
    let Some(cx) = TraceContext::current() else {
        return;
    };
    headers.push((
        TRACEPARENT.to_owned(),
        Bytes::from(cx.traceparent().to_owned()),
    ));
    if let Some(state) = cx.tracestate() {
        headers.push((TRACESTATE.to_owned(), Bytes::from(state.to_owned())));
    }
}

#[cfg(not(feature = "otel"))]
#[inline]
pub(crate) fn inject(_headers: &mut Vec<(String, Bytes)>) {}

/// The context a consumed message carries, if any (checked; see wharf-core's `trace`).
#[cfg(feature = "otel")]
fn received(m: &ConsumedMessage) -> Option<wharf_core::trace::TraceContext> {
    use wharf_core::trace::{TRACEPARENT, TRACESTATE, TraceContext};
    let text = |name| m.header(name).and_then(|v| std::str::from_utf8(v).ok());
    TraceContext::parse(text(TRACEPARENT), text(TRACESTATE))
}

/// `span`, made a child of the span that produced `m` (when `m` carries its context).
#[cfg(feature = "otel")]
fn child_of_sender(span: tracing::Span, m: &ConsumedMessage) -> tracing::Span {
    // A span no subscriber wants has nothing to continue: skip reading the headers.
    if span.is_disabled() {
        return span;
    }
    if let Some(cx) = received(m) {
        cx.apply(&span, wharf_core::trace::Relation::Child);
    }
    span
}

/// The span of one handler call for `m`: a child of the producing span.
#[cfg(feature = "otel")]
pub(crate) fn message_span(m: &ConsumedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka_message",
        topic = %m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        attempt = m.attempt()
    );
    child_of_sender(span, m)
}

/// The span of one batch handler call: linked to each record's producing span.
#[cfg(feature = "otel")]
pub(crate) fn batch_span(batch: &[ConsumedMessage]) -> tracing::Span {
    let first = batch.first();
    let span = tracing::info_span!(
        "kafka_batch",
        topic = first.map(ConsumedMessage::topic),
        partition = first.map(ConsumedMessage::partition),
        first_offset = first.map(ConsumedMessage::offset),
        messages = batch.len()
    );
    if span.is_disabled() {
        return span;
    }
    for m in batch {
        if let Some(cx) = received(m) {
            cx.apply(&span, wharf_core::trace::Relation::Link);
        }
    }
    span
}

/// The span of a source's delivery of `m`, held until the delivery is settled.
#[cfg(feature = "otel")]
pub(crate) fn delivery_span(m: &ConsumedMessage) -> tracing::Span {
    let span = tracing::info_span!(
        "kafka_delivery",
        topic = %m.topic(),
        partition = m.partition(),
        offset = m.offset(),
        attempt = m.attempt()
    );
    child_of_sender(span, m)
}

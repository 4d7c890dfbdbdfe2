//! A job's trace context in Redis (feature `otel`): the enqueuing span's W3C context is
//! stored in the job's hash as one field, `trace` = `<traceparent>` or
//! `<traceparent> <tracestate>` (a `traceparent` holds no space, so the first space splits
//! them even when the `tracestate` has spaces of its own). Each run's `wharf_job` span is a
//! child of the enqueuing span: every attempt of the job, retries included, sits in the
//! producer's trace.
//!
//! Without the feature nothing is stored (an empty argument per job in the enqueue script)
//! and a stored context is left unread.

/// The current span's context as stored, or empty when there is none.
#[cfg(feature = "otel")]
pub(crate) fn to_store() -> String {
    use wharf_core::trace::TraceContext;
    match TraceContext::current() {
        Some(cx) => match cx.tracestate() {
            Some(state) => format!("{} {state}", cx.traceparent()),
            None => cx.traceparent().to_owned(),
        },
        None => String::new(),
    }
}

/// Makes `span` (not yet entered) a child of the stored context. Missing: nothing happens;
/// malformed or oversized: a debug event, and the job runs in a trace of its own.
#[cfg(feature = "otel")]
pub(crate) fn continue_stored(span: &tracing::Span, stored: &str) {
    use wharf_core::trace::{Relation, TraceContext};
    if stored.is_empty() {
        return;
    }
    let (parent, state) = match stored.split_once(' ') {
        Some((p, s)) => (p, Some(s)),
        None => (stored, None),
    };
    if let Some(cx) = TraceContext::parse(Some(parent), state) {
        cx.apply(span, Relation::Child);
    }
}

#[cfg(not(feature = "otel"))]
pub(crate) fn to_store() -> String {
    String::new()
}

#[cfg(not(feature = "otel"))]
pub(crate) fn continue_stored(_span: &tracing::Span, _stored: &str) {}

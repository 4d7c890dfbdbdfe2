//! A message's trace context in its Pulsar properties (feature `otel`): the producing span's
//! W3C context as the properties `traceparent` and `tracestate`, taken when the message is
//! accepted (the first thing `produce`, `produce_batch` and `produce_with` do, in the
//! caller's span), not when the background task sends it. A message that already has a
//! `traceparent` property keeps its own (a message forwarded with its headers, or one the
//! caller stamped). Outside a span exported by OpenTelemetry nothing is written.
//!
//! Without the feature nothing is written and nothing is compiled but an empty function.

use crate::PulsarMessage;

/// Writes the current span's context into `message`'s properties, unless it has a
/// `traceparent` already.
#[cfg(feature = "otel")]
pub(crate) fn stamp(message: &mut PulsarMessage) {
    use wharf_core::trace::{TRACEPARENT, TraceContext};
    if message.properties.contains_key(TRACEPARENT) {
        return;
    }
    if let Some(cx) = TraceContext::current() {
        cx.write(&mut Properties(&mut message.properties));
    }
}

#[cfg(not(feature = "otel"))]
pub(crate) fn stamp(_message: &mut PulsarMessage) {}

/// Pulsar's string properties as a trace carrier.
#[cfg(feature = "otel")]
struct Properties<'a>(&'a mut std::collections::BTreeMap<String, String>);

#[cfg(feature = "otel")]
impl wharf_core::trace::Carrier for Properties<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.0.insert(name.to_owned(), value);
    }

    fn remove(&mut self, name: &'static str) {
        self.0.remove(name);
    }
}

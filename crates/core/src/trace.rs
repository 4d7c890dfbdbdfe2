//! W3C trace context across brokers (feature `otel`).
//!
//! A `tracing` span has no W3C ids of its own; an application that exports its spans with
//! OpenTelemetry, through `tracing-opentelemetry`'s layer, gives each span a trace id and a
//! span id. This module carries them through a broker: the sending side writes the current
//! span's context as [`TRACEPARENT`] and [`TRACESTATE`] into what it sends ([`inject`],
//! [`TraceContext::current`]); the receiving side reads them back ([`extract`],
//! [`TraceContext::parse`]) and makes its span continue the sender's trace
//! ([`TraceContext::apply`], [`continue_trace`]), as a child or with a link ([`Relation`]).
//!
//! - **W3C only.** The format is W3C Trace Context, written and read with
//!   `opentelemetry_sdk`'s `TraceContextPropagator`. The global propagator is not consulted:
//!   each transport reserves exactly these two names and bounds them (SQS allows ten
//!   message attributes), and a different propagator would write other names.
//! - **Nothing to send, nothing sent.** Without a span exported by OpenTelemetry (no layer
//!   installed, or the span was filtered out), [`TraceContext::current`] is `None` and no
//!   header is written. Without the feature, none of this is compiled.
//! - **Never an error on receive.** A missing header means no parent. A malformed one (not
//!   `version-traceid-spanid-flags` in lower-case hex, or all-zero ids) or an oversized one
//!   (`traceparent` over [`MAX_TRACEPARENT_LEN`] bytes, `tracestate` over
//!   [`MAX_TRACESTATE_LEN`]) is ignored with a `debug` event: the message is processed
//!   as if it carried no context (an oversized or malformed `tracestate` alone only drops
//!   the `tracestate`).
//! - **Same versions.** Spans are read and parented through `tracing-opentelemetry` 0.34
//!   (`opentelemetry` 0.33). The application's layer must come from the same versions, or
//!   wharf does not find it and nothing propagates.
//!
//! ```
//! use wharf_core::trace::{self, Relation};
//! use std::collections::HashMap;
//!
//! // Sending: the current span's context, if it has one, into the message's headers.
//! let mut headers: HashMap<String, String> = HashMap::new();
//! trace::inject(&mut headers);
//!
//! // Receiving: the span that processes the message continues the sender's trace.
//! let span = tracing::info_span!("process");
//! trace::continue_trace(&span, &headers, Relation::Child);
//! let _entered = span.enter();
//! ```

use std::collections::HashMap;

use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::{OpenTelemetrySpanExt, SetParentError};

/// The name of the W3C header holding the trace id, the parent span id and the flags.
pub const TRACEPARENT: &str = "traceparent";
/// The name of the W3C header holding vendors' trace state.
pub const TRACESTATE: &str = "tracestate";
/// The longest `traceparent` accepted: version `00`'s exact length. (A later version's
/// longer form is ignored as oversized.)
pub const MAX_TRACEPARENT_LEN: usize = 55;
/// The longest `tracestate` accepted or sent, in bytes: W3C's 512, the size every
/// participant must propagate.
pub const MAX_TRACESTATE_LEN: usize = 512;

/// How much of a rejected header's value a debug event shows.
const SHOWN: usize = 80;

/// Where a transport keeps the two headers: Kafka record headers, Pulsar properties, SQS
/// message attributes, a job's stored fields.
pub trait Carrier {
    /// The value of `name`, if present and text.
    fn get(&self, name: &str) -> Option<&str>;
    /// Sets `name` (one of [`TRACEPARENT`], [`TRACESTATE`]) to `value`.
    fn set(&mut self, name: &'static str, value: String);
    /// Removes `name`, so a context written over an earlier one leaves no stale
    /// `tracestate`. The default does nothing: for carriers that start empty.
    fn remove(&mut self, name: &'static str) {
        let _ = name;
    }
}

impl Carrier for HashMap<String, String> {
    fn get(&self, name: &str) -> Option<&str> {
        HashMap::get(self, name).map(String::as_str)
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name.to_owned(), value);
    }

    fn remove(&mut self, name: &'static str) {
        HashMap::remove(self, name);
    }
}

/// A message's headers ([`crate::transport::Headers`], the Kafka and Pulsar transports'):
/// `set` replaces any earlier value (a message sent again carries one context, the latest);
/// a value that is not UTF-8 reads as absent.
impl Carrier for crate::transport::Headers {
    fn get(&self, name: &str) -> Option<&str> {
        crate::transport::Headers::get(self, name).and_then(|v| std::str::from_utf8(v).ok())
    }

    fn set(&mut self, name: &'static str, value: String) {
        self.insert(name, value);
    }

    fn remove(&mut self, name: &'static str) {
        crate::transport::Headers::remove(self, name);
    }
}

/// What a receiving span is to the sender's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    /// The receiving span is a child of the sender's: one trace, one tree.
    Child,
    /// The receiving span starts (or stays in) its own trace and links to the sender's.
    Link,
}

/// A W3C trace context: a valid `traceparent` and an optional `tracestate`, both within
/// bounds. Built from the current span ([`current`](Self::current)) or from received
/// headers ([`parse`](Self::parse)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    traceparent: String,
    tracestate: Option<String>,
}

impl TraceContext {
    /// The current span's context: the current `tracing` span's OpenTelemetry context, or
    /// else OpenTelemetry's current context. `None` when neither has a valid span context
    /// (no OpenTelemetry layer, no span, or a span the layer does not record). A
    /// `tracestate` over [`MAX_TRACESTATE_LEN`] is left out, with a debug event.
    pub fn current() -> Option<TraceContext> {
        let mut cx = tracing::Span::current().context();
        if !cx.span().span_context().is_valid() {
            cx = Context::current();
            if !cx.span().span_context().is_valid() {
                return None;
            }
        }
        let mut out = Pair::default();
        TraceContextPropagator::new().inject_context(&cx, &mut out);
        let traceparent = out.traceparent?;
        let tracestate = out.tracestate.filter(|s| !s.is_empty()).and_then(|s| {
            if s.len() > MAX_TRACESTATE_LEN {
                tracing::debug!(
                    len = s.len(),
                    max = MAX_TRACESTATE_LEN,
                    "trace context: the current span's tracestate is too long to send; sending traceparent alone"
                );
                return None;
            }
            Some(s)
        });
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// A received context, checked: `None` when `traceparent` is absent, and, with a debug
    /// event, when it is oversized or malformed. A `tracestate` that is oversized or
    /// malformed is dropped, with a debug event; the `traceparent` still counts.
    pub fn parse(traceparent: Option<&str>, tracestate: Option<&str>) -> Option<TraceContext> {
        let traceparent = traceparent?;
        if traceparent.len() > MAX_TRACEPARENT_LEN {
            tracing::debug!(
                header = TRACEPARENT,
                len = traceparent.len(),
                max = MAX_TRACEPARENT_LEN,
                value = shown(traceparent),
                "trace context: received traceparent is too long; ignored"
            );
            return None;
        }
        let bare = Pair {
            traceparent: Some(traceparent.to_owned()),
            tracestate: None,
        };
        if !bare.remote().span().span_context().is_valid() {
            tracing::debug!(
                header = TRACEPARENT,
                value = shown(traceparent),
                "trace context: received traceparent is malformed; ignored"
            );
            return None;
        }
        let tracestate = tracestate.filter(|s| !s.is_empty()).and_then(|s| {
            if s.len() > MAX_TRACESTATE_LEN {
                tracing::debug!(
                    header = TRACESTATE,
                    len = s.len(),
                    max = MAX_TRACESTATE_LEN,
                    value = shown(s),
                    "trace context: received tracestate is too long; ignored (traceparent kept)"
                );
                return None;
            }
            if s.parse::<opentelemetry::trace::TraceState>().is_err() {
                tracing::debug!(
                    header = TRACESTATE,
                    value = shown(s),
                    "trace context: received tracestate is malformed; ignored (traceparent kept)"
                );
                return None;
            }
            Some(s.to_owned())
        });
        Some(TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate,
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &str {
        &self.traceparent
    }

    /// The `tracestate` value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// Writes both headers into `carrier`: `tracestate` only when there is one, and a
    /// `tracestate` already there is removed when there is none.
    pub fn write(&self, carrier: &mut impl Carrier) {
        carrier.set(TRACEPARENT, self.traceparent.clone());
        match &self.tracestate {
            Some(s) => carrier.set(TRACESTATE, s.clone()),
            None => carrier.remove(TRACESTATE),
        }
    }

    /// Makes `span` continue this context's trace: its parent ([`Relation::Child`]), which
    /// must be set before the span is first entered, or a link ([`Relation::Link`]). Does
    /// nothing when `span` is disabled or no OpenTelemetry layer records it.
    pub fn apply(&self, span: &tracing::Span, relation: Relation) {
        let parent = Pair {
            traceparent: Some(self.traceparent.clone()),
            tracestate: self.tracestate.clone(),
        }
        .remote();
        match relation {
            Relation::Child => match span.set_parent(parent) {
                Ok(()) | Err(SetParentError::LayerNotFound | SetParentError::SpanDisabled) => {}
                Err(e) => tracing::debug!(
                    error = %e,
                    "trace context: could not set the span's parent; it starts a trace of its own"
                ),
            },
            Relation::Link => span.add_link(parent.span().span_context().clone()),
        }
    }
}

/// Writes the current span's context into `carrier` ([`TraceContext::current`]); writes
/// nothing when there is none. Returns whether it wrote.
pub fn inject(carrier: &mut impl Carrier) -> bool {
    match TraceContext::current() {
        Some(cx) => {
            cx.write(carrier);
            true
        }
        None => false,
    }
}

/// Reads a context from `carrier` ([`TraceContext::parse`]).
pub fn extract(carrier: &impl Carrier) -> Option<TraceContext> {
    TraceContext::parse(carrier.get(TRACEPARENT), carrier.get(TRACESTATE))
}

/// Makes `span` continue the trace whose context `carrier` holds ([`extract`], then
/// [`TraceContext::apply`]). Returns whether a context was found and applied.
pub fn continue_trace(span: &tracing::Span, carrier: &impl Carrier, relation: Relation) -> bool {
    match extract(carrier) {
        Some(cx) => {
            cx.apply(span, relation);
            true
        }
        None => false,
    }
}

/// The start of a rejected value, for a debug event (never a whole oversized header).
fn shown(value: &str) -> String {
    value
        .chars()
        .take(SHOWN)
        .collect::<String>()
        .escape_debug()
        .to_string()
}

/// The two headers, as the propagator writes and reads them.
#[derive(Default)]
struct Pair {
    traceparent: Option<String>,
    tracestate: Option<String>,
}

impl Pair {
    /// The remote context the propagator reads from the pair (invalid if malformed).
    fn remote(&self) -> Context {
        TraceContextPropagator::new().extract_with_context(&Context::new(), self)
    }
}

impl Injector for Pair {
    fn set(&mut self, key: &str, value: String) {
        match key {
            TRACEPARENT => self.traceparent = Some(value),
            TRACESTATE => self.tracestate = Some(value),
            _ => {}
        }
    }
}

impl Extractor for Pair {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => self.traceparent.as_deref(),
            TRACESTATE => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        [
            self.traceparent.as_ref().map(|_| TRACEPARENT),
            self.tracestate.as_ref().map(|_| TRACESTATE),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use std::sync::{Arc, Mutex};
    use tracing_subscriber::layer::SubscriberExt;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    /// Debug events' messages, recorded by a layer.
    #[derive(Clone, Default)]
    struct Messages(Arc<Mutex<Vec<String>>>);

    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Messages {
        fn on_event(
            &self,
            event: &tracing::Event<'_>,
            _: tracing_subscriber::layer::Context<'_, S>,
        ) {
            struct V<'a>(&'a mut String);
            impl tracing::field::Visit for V<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push_str(&format!("{}={v:?} ", f.name()));
                }
            }
            let mut s = String::new();
            event.record(&mut V(&mut s));
            self.0.lock().unwrap().push(s);
        }
    }

    /// Runs `f` under a subscriber with an OpenTelemetry layer (in-memory exporter) and an
    /// event recorder, on this thread.
    fn traced<T>(f: impl FnOnce() -> T) -> (T, Vec<SpanData>, Vec<String>) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let messages = Messages::default();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")))
            .with(messages.clone());
        let out = tracing::subscriber::with_default(subscriber, f);
        let seen = messages.0.lock().unwrap().clone();
        // Before the provider drops: its shutdown empties the exporter.
        let spans = exporter.get_finished_spans().unwrap();
        drop(provider);
        (out, spans, seen)
    }

    #[test]
    fn a_context_written_in_a_span_continues_as_the_parent_of_the_receiving_span() {
        let ((trace_id, sender_id), spans, _) = traced(|| {
            let sender = tracing::info_span!("send");
            let mut carrier = HashMap::new();
            let sc = sender.context().span().span_context().clone();
            sender.in_scope(|| assert!(inject(&mut carrier)));
            let receiver = tracing::info_span!("receive");
            assert!(continue_trace(&receiver, &carrier, Relation::Child));
            receiver.in_scope(|| {});
            (sc.trace_id(), sc.span_id())
        });
        let receive = spans.iter().find(|s| s.name == "receive").unwrap();
        assert_eq!(receive.span_context.trace_id(), trace_id);
        assert_eq!(receive.parent_span_id, sender_id);
    }

    #[test]
    fn a_link_keeps_the_receiving_span_in_its_own_trace() {
        let (trace_id, spans, _) = traced(|| {
            let sender = tracing::info_span!("send");
            let mut carrier = HashMap::new();
            sender.in_scope(|| inject(&mut carrier));
            let receiver = tracing::info_span!("receive");
            continue_trace(&receiver, &carrier, Relation::Link);
            receiver.in_scope(|| {});
            sender.context().span().span_context().trace_id()
        });
        let receive = spans.iter().find(|s| s.name == "receive").unwrap();
        assert_ne!(receive.span_context.trace_id(), trace_id);
        assert_eq!(receive.links.links[0].span_context.trace_id(), trace_id);
    }

    #[test]
    fn nothing_is_written_outside_a_span() {
        let (written, _, _) = traced(|| inject(&mut HashMap::new()));
        assert!(!written);
    }

    #[test]
    fn nothing_is_written_without_an_opentelemetry_layer() {
        let subscriber = tracing_subscriber::registry();
        let written = tracing::subscriber::with_default(subscriber, || {
            tracing::info_span!("plain").in_scope(|| inject(&mut HashMap::new()))
        });
        assert!(!written);
    }

    #[test]
    fn a_valid_context_round_trips_with_its_tracestate() {
        let cx = TraceContext::parse(Some(VALID), Some("vendor=value")).unwrap();
        let mut carrier = HashMap::new();
        cx.write(&mut carrier);
        assert_eq!(extract(&carrier), Some(cx));
    }

    #[test]
    fn malformed_traceparents_are_ignored_with_a_debug_event() {
        for bad in [
            "",
            "garbage",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            let (cx, _, events) = traced(|| TraceContext::parse(Some(bad), None));
            assert_eq!(cx, None, "{bad:?}");
            assert!(
                events.iter().any(|e| e.contains("malformed")),
                "{bad:?}: {events:?}"
            );
        }
    }

    #[test]
    fn an_oversized_traceparent_is_ignored_with_a_debug_event() {
        let long = format!("{VALID}-{}", "a".repeat(10_000));
        let (cx, _, events) = traced(|| TraceContext::parse(Some(&long), None));
        assert_eq!(cx, None);
        assert!(events.iter().any(|e| e.contains("too long")), "{events:?}");
        assert!(
            events.iter().all(|e| e.len() < 1_000),
            "a debug event must not copy an oversized header: {events:?}"
        );
    }

    #[test]
    fn an_oversized_or_malformed_tracestate_is_dropped_and_the_traceparent_kept() {
        let long = format!("v={}", "x".repeat(MAX_TRACESTATE_LEN));
        for bad in [long.as_str(), "no equals sign"] {
            let (cx, _, events) = traced(|| TraceContext::parse(Some(VALID), Some(bad)));
            let cx = cx.unwrap();
            assert_eq!(cx.traceparent(), VALID);
            assert_eq!(cx.tracestate(), None);
            assert!(
                events.iter().any(|e| e.contains("tracestate")),
                "{events:?}"
            );
        }
    }

    #[test]
    fn message_headers_carry_one_context_and_the_latest_wins() {
        let first = TraceContext::parse(Some(VALID), Some("a=1")).unwrap();
        let second = TraceContext::parse(
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
            None,
        )
        .unwrap();
        let mut headers = crate::transport::Headers::new();
        first.write(&mut headers);
        second.write(&mut headers);
        assert_eq!(headers.get_all(TRACEPARENT).count(), 1);
        assert_eq!(extract(&headers), Some(second), "no stale tracestate");
    }

    #[test]
    fn a_header_that_is_not_utf8_reads_as_absent() {
        let mut headers = crate::transport::Headers::new();
        headers.insert(TRACEPARENT, vec![0xff, 0xfe]);
        assert_eq!(extract(&headers), None);
    }

    #[test]
    fn a_missing_traceparent_is_no_context_and_no_event() {
        let (cx, _, events) = traced(|| extract(&HashMap::new()));
        assert_eq!(cx, None);
        assert!(events.is_empty(), "{events:?}");
    }
}

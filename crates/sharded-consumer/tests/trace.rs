//! Trace context from message headers (feature `otel`), over wharf-core's in-memory queue:
//! a message published inside a span, its context in its headers, is handled in a child
//! span of the same trace; a message whose `traceparent` is malformed or oversized is
//! handled as usual, in a trace of its own, with a debug event; one with no context too.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceId};
use opentelemetry_sdk::trace::SpanData;
use tokio_util::sync::CancellationToken;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wharf_core::transport::{MemoryQueue, Message, Publisher};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, ShardKey, ShardedConsumer};
use wharf_testkit::trace::recorder;
use wharf_testkit::{eventually, eventually_some};

/// Bounds every wait on observable state; reached only by a bug.
const WAIT: Duration = Duration::from_secs(20);

/// One handled message: its payload, its attempt and the context of the span it ran in.
type Seen = (String, u32, TraceId, SpanId);

/// Records, per message, the span the handler runs in.
#[derive(Clone, Default)]
struct Spans(Arc<Mutex<Vec<Seen>>>);

impl Handler for Spans {
    type State = ();
    type Signal = Infallible;
    type Reply = ();
    type Error = Infallible;

    async fn init(&self, _key: &ShardKey) -> Result<(), Infallible> {
        Ok(())
    }

    async fn handle_message(&self, _: &mut (), msg: &Incoming<'_>) -> Result<Outcome, Infallible> {
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        let payload = String::from_utf8(msg.payload().to_vec()).unwrap();
        self.0
            .lock()
            .unwrap()
            .push((payload, msg.attempt(), sc.trace_id(), sc.span_id()));
        Ok(Outcome::Ack)
    }

    async fn handle_signal(&self, _: &mut (), signal: Infallible) -> Result<(), Infallible> {
        match signal {}
    }
}

/// Publishes `messages` to a fresh queue, runs a consumer over it until each was handled,
/// and returns what the handler saw, one entry per message (a retry would show as a second).
async fn handle(name: &str, messages: Vec<Message>) -> Vec<Seen> {
    recorder();
    let queue = MemoryQueue::new(64);
    let n = messages.len();
    for m in messages {
        queue.publisher().publish(m).await.unwrap();
    }
    let spans = Spans::default();
    let consumer = ShardedConsumer::builder(name, spans.clone())
        .discard_dead_letters()
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = consumer.spawn(queue.source(), stop.clone()).unwrap();
    eventually(&format!("{n} messages handled"), WAIT, || {
        let spans = spans.clone();
        async move { spans.0.lock().unwrap().len() >= n }
    })
    .await
    .unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    spans.0.lock().unwrap().clone()
}

/// The exported `sharded_message` span whose id is `id`.
async fn exported(id: SpanId) -> SpanData {
    eventually_some("the sharded_message span exported", WAIT, || async move {
        recorder()
            .spans()
            .into_iter()
            .find(|s| s.name == "sharded_message" && s.span_context.span_id() == id)
    })
    .await
    .unwrap()
}

/// A message published inside a span, with its context injected into the headers.
fn published_in_span(payload: &str, key: &str) -> (Message, SpanContext) {
    let span = tracing::info_span!("place_order");
    let sc = span.context().span().span_context().clone();
    let mut message = Message::new(payload.to_owned()).with_key(key.to_owned());
    assert!(span.in_scope(|| wharf_core::trace::inject(message.headers_mut())));
    (message, sc)
}

#[tokio::test]
async fn a_message_published_inside_a_span_is_handled_in_a_child_span_of_the_same_trace() {
    recorder();
    let (traced, sc) = published_in_span("traced", "k1");
    let seen = handle(
        "trace-child",
        vec![traced, Message::new("plain").with_key("k2")],
    )
    .await;
    assert_eq!(seen.len(), 2, "each handled once: {seen:?}");
    let traced = seen.iter().find(|s| s.0 == "traced").unwrap();
    let plain = seen.iter().find(|s| s.0 == "plain").unwrap();
    assert_eq!(
        traced.2,
        sc.trace_id(),
        "the handler runs in the producer's trace"
    );
    assert_ne!(plain.2, sc.trace_id());

    let span = exported(traced.3).await;
    assert_eq!(
        span.parent_span_id,
        sc.span_id(),
        "a child of the publishing span"
    );
    assert!(span.parent_span_is_remote);
    let span = exported(plain.3).await;
    assert!(
        !span.parent_span_is_remote,
        "without a context the span stays under the executor's span"
    );
}

/// A message whose `traceparent` is `bad` is handled once, as usual, in a trace of its own,
/// and a debug event names the problem.
async fn handled_despite(name: &str, bad: String, problem: &str) {
    let message = Message::new("bad")
        .with_key("k")
        .with_header("traceparent", bad.clone());
    let seen = handle(name, vec![message]).await;
    assert_eq!(seen.len(), 1, "handled once, no retry: {seen:?}");
    assert_eq!(seen[0].1, 1);
    let span = exported(seen[0].3).await;
    assert!(!span.parent_span_is_remote);
    let marker: String = bad.chars().take(20).collect();
    let events = recorder().events();
    assert!(
        events.iter().any(|e| e.level == tracing::Level::DEBUG
            && e.target == "wharf_core::trace"
            && e.fields.contains(problem)
            && e.fields.contains(&marker)),
        "no debug event about {marker}: {events:?}"
    );
}

#[tokio::test]
async fn a_malformed_traceparent_is_ignored_and_the_message_handled() {
    let bad = format!("garbage{:08x}", rand_u32());
    handled_despite("trace-bad", bad, "malformed").await;
}

#[tokio::test]
async fn an_oversized_traceparent_is_ignored_and_the_message_handled() {
    let bad = format!("huge{:08x}{}", rand_u32(), "a".repeat(10_000));
    handled_despite("trace-huge", bad, "too long").await;
}

/// A value no other test of this binary uses (the recorder is shared by all of them).
fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

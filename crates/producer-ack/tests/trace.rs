//! Trace context in Pulsar properties (feature `otel`), against pulsar-lite: a message
//! produced inside a span carries the span's context as its `traceparent` property, whichever
//! way it was produced; one produced outside any span carries none; a `traceparent` the
//! message already has is kept.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wharf_core::transport::{Message, Publisher};
use wharf_producer_ack::{Error, MessageId, Producer, PulsarMessage};
use wharf_testkit::trace::recorder;

fn producer(url: &str, topic: &str) -> Producer {
    Producer::builder(url, topic)
        .send_timeout(Duration::from_secs(10))
        .start()
        .expect("valid settings")
}

/// A span the recorder exports, and its context.
fn span(name: &'static str) -> (tracing::Span, SpanContext) {
    let span = tracing::info_span!("produce_in", name);
    let sc = span.context().span().span_context().clone();
    assert!(sc.is_valid(), "the recorder gives {name}'s span a context");
    (span, sc)
}

fn traceparent_of(sc: &SpanContext) -> String {
    format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
}

#[tokio::test]
async fn a_message_produced_inside_a_span_carries_its_traceparent_every_way_it_is_produced() {
    recorder();
    let url = common::shared_url();
    let topic = common::topic("trace");
    let producer = producer(&url, &topic);

    let (one, one_cx) = span("produce");
    producer
        .produce(PulsarMessage::new("produce"))
        .instrument(one)
        .await
        .expect("stored");

    let (batch, batch_cx) = span("produce_batch");
    for r in producer
        .produce_batch([PulsarMessage::new("batch-0"), PulsarMessage::new("batch-1")])
        .instrument(batch)
        .await
    {
        r.expect("stored");
    }

    // Fire-and-forget: the context is the caller's when the message is accepted, not the
    // background task's when it sends it.
    let (with, with_cx) = span("produce_with");
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .produce_with(
            PulsarMessage::new("produce_with"),
            move |result: Result<MessageId, Error>| {
                let _ = tx.send(result);
            },
        )
        .instrument(with)
        .await;
    tokio::time::timeout(Duration::from_secs(20), rx)
        .await
        .expect("acked within the send timeout")
        .unwrap()
        .expect("stored");

    let (publish, publish_cx) = span("publish");
    producer
        .publish(Message::new("publish"))
        .instrument(publish)
        .await
        .expect("stored");

    let read = common::read_back(&url, &topic, 5, Duration::from_secs(5)).await;
    let got: Vec<(String, Option<&str>)> = read
        .iter()
        .map(|m| {
            (
                String::from_utf8(m.payload.clone()).unwrap(),
                m.properties.get("traceparent").map(String::as_str),
            )
        })
        .collect();
    let want = [
        ("produce", traceparent_of(&one_cx)),
        ("batch-0", traceparent_of(&batch_cx)),
        ("batch-1", traceparent_of(&batch_cx)),
        ("produce_with", traceparent_of(&with_cx)),
        ("publish", traceparent_of(&publish_cx)),
    ];
    let want: Vec<(String, Option<&str>)> = want
        .iter()
        .map(|(p, t)| ((*p).to_owned(), Some(t.as_str())))
        .collect();
    assert_eq!(got, want);
    assert!(
        read.iter()
            .all(|m| !m.properties.contains_key("tracestate")),
        "no empty tracestate"
    );
    producer.close().await;
}

#[tokio::test]
async fn a_message_produced_outside_any_span_carries_no_trace_property() {
    recorder();
    let url = common::shared_url();
    let topic = common::topic("notrace");
    let producer = producer(&url, &topic);
    producer
        .produce(PulsarMessage::new("untraced").with_property("kind", "plain"))
        .await
        .expect("stored");
    let read = common::read_back(&url, &topic, 1, Duration::from_secs(5)).await;
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].properties,
        [("kind".to_owned(), "plain".to_owned())].into(),
        "no traceparent, no tracestate"
    );
    producer.close().await;
}

#[tokio::test]
async fn a_traceparent_the_message_already_has_is_kept() {
    recorder();
    let url = common::shared_url();
    let topic = common::topic("ownparent");
    let producer = producer(&url, &topic);
    let own = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (span, _) = span("forward");
    producer
        .produce(
            PulsarMessage::new("forwarded")
                .with_property("traceparent", own)
                .with_property("tracestate", "vendor=x"),
        )
        .instrument(span)
        .await
        .expect("stored");
    let read = common::read_back(&url, &topic, 1, Duration::from_secs(5)).await;
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].properties.get("traceparent").map(String::as_str),
        Some(own)
    );
    assert_eq!(
        read[0].properties.get("tracestate").map(String::as_str),
        Some("vendor=x")
    );
    producer.close().await;
}

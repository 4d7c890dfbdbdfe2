//! Trace context in SQS (feature `otel`), against moto: an event emitted inside a span
//! carries the span's context as message attributes; one emitted outside any span carries
//! none.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use opentelemetry::trace::TraceContextExt;
use serde_json::json;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wharf_testkit::trace::recorder;
use wharf_webhooks_emitter::{ATTR_TRACEPARENT, ATTR_TRACESTATE, Event};

fn endpoint() -> String {
    wharf_testkit::sqs().unwrap().address().to_string()
}

#[tokio::test]
async fn an_event_emitted_inside_a_span_carries_its_traceparent() {
    recorder();
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "trace", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();

    let span = tracing::info_span!("place_order");
    let sc = span.context().span().span_context().clone();
    let event = Event::from_json("p", "order.placed", json!({"n": 1}));
    // Fire-and-forget: the context is taken when the event is accepted, not when the
    // background worker sends it.
    emitter.emit(event).instrument(span).await.unwrap();

    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(msgs.len(), 1);
    let traceparent = string_attr(&msgs[0], ATTR_TRACEPARENT).expect("a traceparent attribute");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", sc.trace_id(), sc.span_id())
    );
    assert_eq!(
        string_attr(&msgs[0], ATTR_TRACESTATE),
        None,
        "no empty tracestate"
    );
    emitter.shutdown().await;
}

#[tokio::test]
async fn an_event_emitted_outside_any_span_carries_no_trace_attribute() {
    recorder();
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "notrace", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();

    emitter
        .emit_sync(Event::from_json("p", "order.placed", json!({})))
        .await
        .unwrap();

    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(msgs.len(), 1);
    let attrs = msgs[0].message_attributes().unwrap();
    let mut names: Vec<&str> = attrs.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(names, ["event", "id"]);
    emitter.shutdown().await;
}

#[tokio::test]
async fn a_tracestate_travels_as_its_own_attribute() {
    recorder();
    let endpoint = endpoint();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "tracestate", false, &[]).await;
    let emitter = builder(&endpoint, &url).build().unwrap();
    emitter.start().await.unwrap();

    // A span continuing a remote trace that carries vendor state.
    let remote = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let span = tracing::info_span!("handle_request");
    wharf_core::trace::TraceContext::parse(Some(remote), Some("vendor=abc"))
        .unwrap()
        .apply(&span, wharf_core::trace::Relation::Child);
    emitter
        .emit(Event::from_json("p", "order.placed", json!({})))
        .instrument(span)
        .await
        .unwrap();

    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    let traceparent = string_attr(&msgs[0], ATTR_TRACEPARENT).unwrap();
    assert!(
        traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{traceparent}"
    );
    assert_eq!(
        string_attr(&msgs[0], ATTR_TRACESTATE).as_deref(),
        Some("vendor=abc")
    );
    emitter.shutdown().await;
}

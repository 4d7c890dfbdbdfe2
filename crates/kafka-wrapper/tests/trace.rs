//! Trace context through Kafka record headers (feature `otel`), against Tansu: a record
//! sent inside a span is handled in a child span of the same trace; a record with a
//! malformed or oversized `traceparent` is handled all the same, in a trace of its own;
//! outside a span no header is written.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, TraceContextExt, TraceId};
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use wharf_core::transport::{Message, Publisher, Source};
use wharf_kafka_wrapper::{ConsumerSpec, Handler, Outcome, ProducerSpec, Record};
use wharf_testkit::eventually_some;
use wharf_testkit::trace::recorder;

/// What the handler saw of one record: its payload, its `traceparent` header, and the
/// trace id of the span it ran in.
#[derive(Debug, Clone)]
struct Seen {
    payload: String,
    traceparent: Option<String>,
    trace_id: TraceId,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_sent_in_a_span_is_handled_in_a_child_span_and_bad_headers_are_ignored() {
    recorder();
    let brokers = common::brokers();
    let topic = common::topic("trace");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();

    let span = tracing::info_span!("place_order");
    let sent: SpanContext = span.context().span().span_context().clone();
    assert!(sent.is_valid(), "the recorder exports the test's spans");
    p.send(Record::new(&topic, "traced"))
        .instrument(span.clone())
        .await
        .unwrap();
    drop(span);
    let malformed = format!("garbage{:08x}", rand_u32());
    p.send(Record::new(&topic, "malformed").header("traceparent", malformed.clone()))
        .await
        .unwrap();
    let oversized = format!("huge{:08x}{}", rand_u32(), "a".repeat(10_000));
    p.send(Record::new(&topic, "oversized").header("traceparent", oversized.clone()))
        .await
        .unwrap();
    p.send(Record::new(&topic, "untraced")).await.unwrap();

    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let spec = ConsumerSpec::group(
        "c",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(move |m| {
            let cx = tracing::Span::current().context();
            let sc = cx.span().span_context().clone();
            log.lock().unwrap().push(Seen {
                payload: String::from_utf8_lossy(m.payload()).into_owned(),
                traceparent: m
                    .header("traceparent")
                    .map(|v| String::from_utf8_lossy(v).into_owned()),
                trace_id: sc.trace_id(),
            });
            async { Outcome::Ack }
        }),
    );
    w.add_consumer(spec).unwrap();
    let seen = eventually_some("all four records handled", Duration::from_secs(30), || {
        let seen = seen.clone();
        async move {
            let s = seen.lock().unwrap().clone();
            (s.len() >= 4).then_some(s)
        }
    })
    .await
    .unwrap();
    let by = |p: &str| seen.iter().find(|s| s.payload == p).unwrap().clone();

    let traced = by("traced");
    let header = traced.traceparent.clone().unwrap();
    assert!(
        header.starts_with(&format!("00-{}-{}-", sent.trace_id(), sent.span_id())),
        "{header}"
    );
    assert_eq!(
        traced.trace_id,
        sent.trace_id(),
        "handled in the sender's trace"
    );
    let handled = eventually_some(
        "the kafka_message span",
        Duration::from_secs(10),
        || async {
            recorder()
                .spans()
                .into_iter()
                .find(|s| s.name == "kafka_message" && s.span_context.trace_id() == sent.trace_id())
        },
    )
    .await
    .unwrap();
    assert_eq!(
        handled.parent_span_id,
        sent.span_id(),
        "a child of the sending span"
    );
    assert!(handled.parent_span_is_remote);

    for (payload, value) in [("malformed", &malformed), ("oversized", &oversized)] {
        let s = by(payload);
        assert_eq!(
            s.traceparent.as_deref(),
            Some(value.as_str()),
            "the user's header is kept"
        );
        assert_ne!(s.trace_id, sent.trace_id());
        let own = recorder()
            .spans()
            .into_iter()
            .find(|x| x.name == "kafka_message" && x.span_context.trace_id() == s.trace_id)
            .expect("handled in a kafka_message span");
        assert!(!own.parent_span_is_remote, "{payload}: a trace of its own");
    }
    let events = recorder().events();
    for (problem, marker) in [
        ("malformed", &malformed[..15]),
        ("too long", &oversized[..12]),
    ] {
        assert!(
            events.iter().any(|e| e.level == tracing::Level::DEBUG
                && e.target == "wharf_core::trace"
                && e.fields.contains(problem)
                && e.fields.contains(marker)),
            "no debug event about {marker}"
        );
    }

    assert_eq!(
        by("untraced").traceparent,
        None,
        "outside a span no header is written"
    );
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_message_reaches_a_source_with_its_context_and_a_child_delivery_span() {
    recorder();
    let brokers = common::brokers();
    let topic = common::topic("trace-src");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let publisher = w
        .add_producer(ProducerSpec::new("p"))
        .unwrap()
        .publisher(&topic);
    let span = tracing::info_span!("publish");
    let sent = span.context().span().span_context().clone();
    publisher
        .publish(Message::new("traced"))
        .instrument(span.clone())
        .await
        .unwrap();
    drop(span);

    let spec = ConsumerSpec::group(
        "src",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(|_| async { Outcome::Ack }),
    );
    let mut source = w.add_source(spec, 8).unwrap();
    let d = tokio::time::timeout(Duration::from_secs(30), source.recv())
        .await
        .expect("a delivery within 30 s")
        .expect("source open")
        .expect("no receive error");
    let cx = wharf_core::trace::extract(d.message().headers()).expect("the context arrives");
    assert!(
        cx.traceparent()
            .starts_with(&format!("00-{}-{}-", sent.trace_id(), sent.span_id())),
        "{}",
        cx.traceparent()
    );
    d.ack().await.unwrap();
    let delivery = eventually_some(
        "the kafka_delivery span",
        Duration::from_secs(10),
        || async {
            recorder().spans().into_iter().find(|s| {
                s.name == "kafka_delivery" && s.span_context.trace_id() == sent.trace_id()
            })
        },
    )
    .await
    .unwrap();
    assert_eq!(delivery.parent_span_id, sent.span_id());
    drop(source);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_handler_call_links_to_each_records_producing_span() {
    recorder();
    let brokers = common::brokers();
    let topic = common::topic("trace-batch");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let mut sent = Vec::new();
    for name in ["first", "second"] {
        let span = tracing::info_span!("send", name);
        let sc = span.context().span().span_context().clone();
        sent.push((sc.trace_id(), sc.span_id()));
        p.send(Record::new(&topic, name))
            .instrument(span)
            .await
            .unwrap();
    }

    let spec = ConsumerSpec::group(
        "c",
        common::topic("g"),
        [topic.clone()],
        Handler::per_batch(10, |_| async { Outcome::Ack }),
    );
    w.add_consumer(spec).unwrap();
    let links = eventually_some(
        "kafka_batch spans linking to both records",
        Duration::from_secs(30),
        || async {
            let linked: Vec<_> = recorder()
                .spans()
                .into_iter()
                .filter(|s| s.name == "kafka_batch")
                .flat_map(|s| s.links.links.clone())
                .map(|l| (l.span_context.trace_id(), l.span_context.span_id()))
                .filter(|l| sent.contains(l))
                .collect();
            (linked.len() >= 2).then_some(linked)
        },
    )
    .await
    .unwrap();
    for sc in &sent {
        assert!(links.contains(sc), "a link to {sc:?}");
    }
    let batches = recorder().spans();
    assert!(
        batches
            .iter()
            .filter(|s| s.name == "kafka_batch")
            .all(|s| sent.iter().all(|(t, _)| s.span_context.trace_id() != *t)),
        "a batch span stays in its own trace"
    );
    w.shutdown().await.unwrap();
}

fn rand_u32() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(std::time::SystemTime::now()) as u32
}

//! `produce`, `produce_batch` and `produce_with` against a real broker (pulsar-lite).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use wharf_producer_ack::{Error, MessageId, Producer, PulsarMessage, ack_channel};

fn producer(url: &str, topic: &str) -> Producer {
    Producer::builder(url, topic)
        .send_timeout(Duration::from_secs(10))
        .start()
        .expect("valid settings")
}

#[tokio::test]
async fn messages_read_back_match_payload_key_properties_event_time_and_order() {
    let url = common::shared_url();
    let topic = common::topic("readback");
    let producer = producer(&url, &topic);
    let event_time = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
    let mut sent = Vec::new();
    for i in 0..50u32 {
        let message = PulsarMessage::new(format!("payload-{i}"))
            .with_key(format!("key-{}", i % 5))
            .with_ordering_key(format!("ok-{i}").into_bytes())
            .with_property("index", i.to_string())
            .with_property("kind", "test")
            .with_event_time(event_time);
        producer.produce(message).await.expect("stored");
        sent.push(i);
    }
    let read = common::read_back(&url, &topic, 50, Duration::from_secs(5)).await;
    assert_eq!(read.len(), 50, "every produced message is read back");
    for (i, message) in sent.iter().zip(&read) {
        assert_eq!(message.payload, format!("payload-{i}").into_bytes());
        assert_eq!(
            message.key.as_deref(),
            Some(format!("key-{}", i % 5).as_str())
        );
        let expected: BTreeMap<String, String> = [
            ("index".to_owned(), i.to_string()),
            ("kind".to_owned(), "test".to_owned()),
        ]
        .into();
        assert_eq!(message.properties, expected);
        assert_eq!(message.event_time, Some(1_700_000_000_123));
    }
}

#[tokio::test]
async fn produce_batch_returns_one_result_per_message_in_order() {
    let url = common::shared_url();
    let topic = common::topic("batch");
    let producer = producer(&url, &topic);
    let results = producer
        .produce_batch((0..200u32).map(|i| PulsarMessage::new(i.to_be_bytes().to_vec())))
        .await;
    assert_eq!(results.len(), 200);
    let ids: Vec<MessageId> = results.into_iter().map(|r| r.expect("stored")).collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids follow input order: {ids:?}"
    );
    let read = common::read_back(&url, &topic, 200, Duration::from_secs(5)).await;
    let payloads: Vec<u32> = read
        .iter()
        .map(|m| u32::from_be_bytes(m.payload[..4].try_into().unwrap()))
        .collect();
    assert_eq!(payloads, (0..200).collect::<Vec<_>>());
    let read_ids: Vec<MessageId> = read.iter().map(|m| m.message_id).collect();
    assert_eq!(
        read_ids, ids,
        "each result is the id its message was stored under"
    );
}

#[tokio::test]
async fn every_closure_ack_fires_exactly_once() {
    let url = common::shared_url();
    let topic = common::topic("acks");
    let producer = Producer::builder(&url, &topic)
        .window(64)
        .send_timeout(Duration::from_secs(10))
        .start()
        .unwrap();
    let calls: Arc<Mutex<Vec<u32>>> = Arc::default();
    for i in 0..2_000u32 {
        let calls = calls.clone();
        producer
            .produce_with(
                PulsarMessage::new(i.to_be_bytes().to_vec()),
                move |result: Result<MessageId, Error>| {
                    result.expect("stored");
                    calls.lock().unwrap().push(i);
                },
            )
            .await;
    }
    producer.close().await;
    let mut calls = calls.lock().unwrap().clone();
    calls.sort_unstable();
    assert_eq!(
        calls,
        (0..2_000).collect::<Vec<_>>(),
        "each message acked exactly once"
    );
}

#[tokio::test]
async fn channel_acks_bring_back_the_callers_context() {
    let url = common::shared_url();
    let topic = common::topic("context");
    let producer = producer(&url, &topic);
    let (acks, mut received) = ack_channel::<String>();
    for i in 0..100u32 {
        producer
            .produce_with(format!("m{i}"), acks.with(format!("request-{i}")))
            .await;
    }
    drop(acks);
    let mut contexts = Vec::new();
    while let Some(acked) = tokio::time::timeout(Duration::from_secs(15), received.recv())
        .await
        .expect("acks arrive")
    {
        acked.result.expect("stored");
        contexts.push(acked.context);
    }
    let expected: Vec<String> = (0..100).map(|i| format!("request-{i}")).collect();
    assert_eq!(
        contexts, expected,
        "one ack per message, with its context, in order"
    );
}

#[tokio::test]
async fn a_panicking_ack_is_logged_and_the_producer_carries_on() {
    let url = common::shared_url();
    let topic = common::topic("panic");
    let producer = producer(&url, &topic);
    producer
        .produce_with("first", |_: Result<MessageId, Error>| {
            panic!("a careless ack")
        })
        .await;
    let second = producer.produce("second").await;
    assert!(second.is_ok(), "the producer still works: {second:?}");
}

#[tokio::test]
async fn a_dropped_ack_receiver_is_logged_not_a_crash() {
    let url = common::shared_url();
    let topic = common::topic("noreceiver");
    let producer = producer(&url, &topic);
    let (acks, received) = ack_channel::<u32>();
    drop(received);
    producer.produce_with("orphan", acks.with(7)).await;
    assert!(producer.produce("next").await.is_ok());
}

#[tokio::test]
async fn the_producer_is_a_wharf_core_publisher() {
    use wharf_core::transport::{Message, Publisher, Receipt};
    async fn publish<P: Publisher>(publisher: &P, text: &str) -> Result<Receipt, P::Error> {
        publisher
            .publish(
                Message::new(text.to_owned())
                    .with_key("k")
                    .with_header("h", "v"),
            )
            .await
    }
    let url = common::shared_url();
    let topic = common::topic("publisher");
    let producer = producer(&url, &topic);
    let receipt = publish(&producer, "hello").await.expect("stored");
    assert!(matches!(receipt, Receipt::Pulsar { .. }), "{receipt:?}");
    let batch = producer
        .publish_batch(vec![Message::new("a"), Message::new("b")])
        .await;
    assert_eq!(batch.len(), 2);
    let read = common::read_back(&url, &topic, 3, Duration::from_secs(5)).await;
    assert_eq!(read[0].key.as_deref(), Some("k"));
    assert_eq!(read[0].properties.get("h").map(String::as_str), Some("v"));
}

#[tokio::test]
async fn a_batching_producer_reports_each_message_with_its_own_id_and_result() {
    const TOTAL: usize = 35;
    const PER_BATCH: usize = 10;
    let url = common::shared_url();
    let topic = common::topic("batching");
    let producer = Producer::builder(&url, &topic)
        .batching(wharf_producer_ack::Batching {
            max_messages: PER_BATCH as u32,
            max_bytes: 64 * 1024,
            max_delay: Duration::from_millis(5),
        })
        .send_timeout(Duration::from_secs(10))
        .start()
        .unwrap();
    let results = producer
        .produce_batch((0..TOTAL).map(|i| format!("b{i}")))
        .await;

    // One result per message, each a success with an id of its own, in input order.
    assert_eq!(results.len(), TOTAL);
    let ids: Vec<MessageId> = results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|e| panic!("message {i} failed: {e}")))
        .collect();
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "distinct ids, in input order: {ids:?}"
    );
    // Batched: messages share broker entries, each with its index inside the entry.
    let mut entries: BTreeMap<(u64, u64), Vec<Option<i32>>> = BTreeMap::new();
    for id in &ids {
        entries
            .entry((id.ledger_id, id.entry_id))
            .or_default()
            .push(id.batch_index);
    }
    assert!(
        entries.len() < TOTAL,
        "no two messages share an entry: not batched: {ids:?}"
    );
    for (entry, indexes) in &entries {
        let expected: Vec<Option<i32>> = (0..indexes.len() as i32).map(Some).collect();
        assert_eq!(indexes, &expected, "batch indexes of entry {entry:?}");
        assert!(
            indexes.len() <= PER_BATCH,
            "entry {entry:?} holds {indexes:?}"
        );
    }

    // What a consumer reads back: the same payloads, in order, under the same ids.
    let read = common::read_back(&url, &topic, TOTAL, Duration::from_secs(5)).await;
    let payloads: Vec<String> = read
        .iter()
        .map(|m| String::from_utf8(m.payload.clone()).unwrap())
        .collect();
    assert_eq!(
        payloads,
        (0..TOTAL).map(|i| format!("b{i}")).collect::<Vec<_>>()
    );
    let read_ids: Vec<MessageId> = read.iter().map(|m| m.message_id).collect();
    assert_eq!(
        read_ids, ids,
        "the ids the producer reported are where the messages are"
    );
}

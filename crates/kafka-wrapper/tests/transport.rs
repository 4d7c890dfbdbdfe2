//! wharf-core's Publisher and Source over Kafka (Tansu).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use wharf_core::transport::{Message, Publisher, Receipt, Source};
use wharf_kafka_wrapper::{ConsumerSpec, Handler, Outcome, ProducerSpec};

async fn next(s: &mut wharf_kafka_wrapper::KafkaSource) -> wharf_core::transport::Delivery {
    tokio::time::timeout(Duration::from_secs(30), s.recv())
        .await
        .expect("a delivery within 30 s")
        .expect("source open")
        .expect("no receive error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_returns_a_kafka_receipt_and_the_source_redelivers_nacked_and_dropped_messages() {
    let brokers = common::brokers();
    let topic = common::topic("transport");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let publisher = w
        .add_producer(ProducerSpec::new("p"))
        .unwrap()
        .publisher(&topic);
    let receipts = publisher
        .publish_batch(vec![
            Message::new("a").with_key("k").with_header("h", "1"),
            Message::new("b"),
        ])
        .await;
    let receipts: Vec<Receipt> = receipts.into_iter().map(Result::unwrap).collect();
    assert_eq!(
        receipts[0],
        Receipt::Kafka {
            partition: 0,
            offset: 0
        }
    );
    assert_eq!(
        receipts[1],
        Receipt::Kafka {
            partition: 0,
            offset: 1
        }
    );

    let spec = ConsumerSpec::group(
        "src",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(|_| async { Outcome::Ack }),
    );
    let mut source = w.add_source(spec, 8).unwrap();
    let d = next(&mut source).await;
    assert_eq!(d.message().payload().as_ref(), b"a");
    assert_eq!(d.message().key().unwrap().as_ref(), b"k");
    assert_eq!(d.message().headers().get("h").unwrap().as_ref(), b"1");
    assert_eq!(
        (d.info().partition, d.info().offset, d.attempt()),
        (Some(0), Some(0), 1)
    );
    d.nack(Duration::from_millis(100)).await.unwrap();
    let d = next(&mut source).await;
    assert_eq!(
        (d.message().payload().as_ref(), d.attempt()),
        (&b"a"[..], 2),
        "nacked: same message again"
    );
    d.ack().await.unwrap();
    let d = next(&mut source).await;
    assert_eq!(d.message().payload().as_ref(), b"b");
    drop(d);
    let d = next(&mut source).await;
    assert_eq!(
        (d.message().payload().as_ref(), d.attempt()),
        (&b"b"[..], 2),
        "dropped: delivered again"
    );
    d.ack().await.unwrap();
    drop(source);
    w.shutdown().await.unwrap();
}

/// A supervisor restarting the owner of a source registers the same spec again right after
/// the old source was dropped: the name must be free at once, and nothing acked is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_source_can_be_registered_again_at_once() {
    common::trace();
    let brokers = common::brokers();
    let topic = common::topic("resource");
    let group = common::topic("g");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let publisher = w
        .add_producer(ProducerSpec::new("p"))
        .unwrap()
        .publisher(&topic);
    for m in ["a", "b"] {
        publisher.publish(Message::new(m)).await.unwrap();
    }
    let spec = || {
        ConsumerSpec::group(
            "src",
            &group,
            [topic.clone()],
            Handler::per_message(|_| async { Outcome::Ack }),
        )
    };
    let mut source = w.add_source(spec(), 8).unwrap();
    let d = next(&mut source).await;
    assert_eq!(d.message().payload().as_ref(), b"a");
    d.ack().await.unwrap();
    drop(source);
    let mut source = w
        .add_source(spec(), 8)
        .expect("the name is free as soon as the source is dropped");
    let d = next(&mut source).await;
    assert_eq!(
        d.message().payload().as_ref(),
        b"b",
        "a was acked and committed; b comes next"
    );
    d.ack().await.unwrap();
    drop(source);
    w.shutdown().await.unwrap();
}

/// A backlog of a thousand messages on one partition and 256 deliveries in flight: they
/// are handed out in offset order. (They used to come out partly reversed: tokio wakes the
/// sends that ran out of its cooperative budget together, in reverse order.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_many_in_flight_deliveries_of_a_backlog_come_out_in_offset_order() {
    let brokers = common::brokers();
    let topic = common::topic("backlog");
    let w = common::wrapper_with_topic(&brokers, &topic, 1).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let sent = p
        .send_batch(
            (0..1_000)
                .map(|i| wharf_kafka_wrapper::Record::new(&topic, format!("{i}")).partition(0))
                .collect(),
        )
        .await;
    assert!(sent.iter().all(Result::is_ok));
    let spec = ConsumerSpec::group(
        "src",
        common::topic("g"),
        [topic.clone()],
        Handler::per_message(|_| async { Outcome::Ack }),
    )
    .in_flight_per_partition(256);
    let mut source = w.add_source(spec, 1024).unwrap();
    let mut offsets = Vec::new();
    let mut held = Vec::new();
    while offsets.len() < 1_000 {
        let d = next(&mut source).await;
        offsets.push(d.info().offset.unwrap());
        // Settled in bursts, so that hundreds are out at once.
        held.push(d);
        if held.len() == 256 {
            for d in held.drain(..) {
                d.ack().await.unwrap();
            }
        }
    }
    let out_of_order: Vec<(usize, u64)> = offsets
        .iter()
        .enumerate()
        .filter(|(i, o)| **o != *i as u64)
        .map(|(i, o)| (i, *o))
        .collect();
    assert!(
        out_of_order.is_empty(),
        "{} deliveries out of offset order (position, offset): {:?}",
        out_of_order.len(),
        &out_of_order[..out_of_order.len().min(10)]
    );
    drop(held);
    drop(source);
    w.shutdown().await.unwrap();
}

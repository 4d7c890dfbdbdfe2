//! Producing through the wrapper against a real broker (Tansu).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use wharf_kafka_wrapper::partitioner::java_partition;
use wharf_kafka_wrapper::{ConsumerSpec, Handler, Outcome, ProducerSpec, Record};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_resolves_with_the_partition_and_offset_the_broker_assigned() {
    let brokers = common::brokers();
    let topic = common::topic("receipt");
    let w = common::wrapper_with_topic(&brokers, &topic, 3).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let first = p.send(Record::new(&topic, "a").partition(2)).await.unwrap();
    let second = p.send(Record::new(&topic, "b").partition(2)).await.unwrap();
    assert_eq!((first.partition, second.partition), (2, 2));
    assert_eq!(second.offset, first.offset + 1);
    w.shutdown().await.unwrap();
}

/// Keys chosen so that they spread over all 6 partitions; expected partitions are the Java
/// client's `toPositive(murmur2(key)) % 6`, from the hash verified bit-exact against
/// Kafka's own test vectors in the unit tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_messages_land_where_the_java_client_puts_them() {
    let brokers = common::brokers();
    let topic = common::topic("keyed");
    let w = common::wrapper_with_topic(&brokers, &topic, 6).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let keys: Vec<String> = (0..40)
        .map(|i| format!("customer-{i}"))
        .chain(["21".into(), "foobar".into(), "abc".into()])
        .collect();
    let mut seen = std::collections::HashSet::new();
    for k in &keys {
        let d = p
            .send(Record::new(&topic, "x").key(k.clone()))
            .await
            .unwrap();
        let want = java_partition(k.as_bytes(), 6).unwrap();
        assert_eq!(d.partition, want, "key {k}");
        seen.insert(d.partition);
    }
    assert_eq!(seen.len(), 6, "the keys should cover every partition");
    // Fixed known values: murmur2("21") & 0x7fffffff = 1173551340 -> % 6 = 0.
    assert_eq!(java_partition(b"21", 6), Some(1_173_551_340 % 6));
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_headers_and_partitions_survive_a_round_trip() {
    let brokers = common::brokers();
    let topic = common::topic("roundtrip");
    let w = common::wrapper_with_topic(&brokers, &topic, 4).await;
    let p = w
        .add_producer(ProducerSpec::new("p").set("compression.type", "gzip"))
        .unwrap();
    let mut sent = HashMap::new();
    for i in 0..20 {
        let r = Record::new(&topic, format!("payload-{i}"))
            .key(format!("k{i}"))
            .header("n", i.to_string())
            .header("kind", "test");
        let d = p.send(r).await.unwrap();
        sent.insert(
            format!("k{i}"),
            (d.partition, d.offset, format!("payload-{i}"), i.to_string()),
        );
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(100);
    let handler = Handler::per_message(move |m| {
        let tx = tx.clone();
        async move {
            tx.send(m).await.unwrap();
            Outcome::Ack
        }
    });
    w.add_consumer(ConsumerSpec::group(
        "c",
        common::topic("g"),
        [topic.clone()],
        handler,
    ))
    .unwrap();
    for _ in 0..20 {
        let m = tokio::time::timeout(Duration::from_secs(30), rx.recv())
            .await
            .unwrap()
            .unwrap();
        let key = String::from_utf8(m.key().unwrap().to_vec()).unwrap();
        let (partition, offset, payload, n) = sent.remove(&key).expect("each key once");
        assert_eq!((m.partition(), m.offset()), (partition, offset));
        assert_eq!(m.payload(), payload.as_bytes());
        assert_eq!(m.header("n").unwrap(), n.as_bytes());
        assert_eq!(m.header("kind").unwrap(), b"test");
    }
    assert!(sent.is_empty());
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_gets_one_result_per_message_and_callbacks_fire_once() {
    let brokers = common::brokers();
    let topic = common::topic("batch");
    let w = common::wrapper_with_topic(&brokers, &topic, 2).await;
    let p = w.add_producer(ProducerSpec::new("p")).unwrap();
    let mut batch: Vec<Record> = (0..50)
        .map(|i| Record::new(&topic, format!("m{i}")))
        .collect();
    batch.push(Record::new(&topic, "to a partition that does not exist").partition(99));
    let results = p.send_batch(batch).await;
    assert_eq!(results.len(), 51);
    assert!(results[..50].iter().all(Result::is_ok));
    assert!(
        results[50].is_err(),
        "partition 99 does not exist: {:?}",
        results[50]
    );

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..10 {
        let tx = tx.clone();
        p.send_with(Record::new(&topic, format!("f{i}")), move |r| {
            let _ = tx.send(r);
        })
        .await
        .unwrap();
    }
    drop(tx);
    let mut n = 0;
    while let Some(r) = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
    {
        r.unwrap();
        n += 1;
    }
    assert_eq!(n, 10);
    w.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_are_created_listed_described_and_deleted() {
    use wharf_kafka_wrapper::TopicSpec;
    let brokers = common::brokers();
    let w = wharf_kafka_wrapper::KafkaWrapper::start(common::config(&brokers))
        .await
        .unwrap();
    let admin = w.admin();
    let name = common::topic("admin");
    admin
        .create_topics(&[TopicSpec::new(&name, 5)
            .replication(1)
            .config("retention.ms", "3600000")])
        .await
        .unwrap();
    assert!(
        admin
            .create_topics(&[TopicSpec::new(&name, 5)])
            .await
            .is_err(),
        "already exists"
    );
    admin
        .ensure_topics(&[TopicSpec::new(&name, 5)])
        .await
        .unwrap();
    assert!(admin.list_topics().await.unwrap().contains(&name));
    let info = admin.describe_topic(&name).await.unwrap();
    assert_eq!(info.partitions.len(), 5);
    assert!(info.partitions.iter().all(|p| p.replicas.len() == 1));
    admin.delete_topics(&[&name]).await.unwrap();
    wharf_testkit::eventually(
        "the deleted topic gone from the list",
        Duration::from_secs(10),
        || async { !admin.list_topics().await.unwrap().contains(&name) },
    )
    .await
    .unwrap();
    w.shutdown().await.unwrap();
}

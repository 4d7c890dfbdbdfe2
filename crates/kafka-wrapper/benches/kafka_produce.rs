//! `kafka-produce`: messages per second, 200,000 x 100 B with acks=all, through the wrapper's
//! `Producer` versus a raw rdkafka `FutureProducer` with the same settings, same broker, same
//! run. Rounds alternate; medians are reported. Writes JSON to `$WHARF_BENCH_OUT` if set.
//!
//! Broker: `WHARF_TEST_KAFKA_BROKERS`, else a Tansu started by wharf-testkit.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use wharf_kafka_wrapper::{KafkaConfig, KafkaWrapper, ProducerSpec, Record, TopicSpec};
use wharf_testkit::bench::{Entry, median, write_report};

const MESSAGES: usize = 200_000;
const SIZE: usize = 100;
const ROUNDS: usize = 9;
const PARTITIONS: i32 = 3;

/// Settings shared by both sides: acks=all with idempotence (the wrapper's defaults), and a
/// queue large enough that neither side waits for room.
const SETTINGS: &[(&str, &str)] = &[
    ("acks", "all"),
    ("enable.idempotence", "true"),
    ("queue.buffering.max.messages", "1000000"),
    ("queue.buffering.max.kbytes", "1048576"),
];

/// `$WHARF_TEST_KAFKA_BROKERS`, else a Tansu started by wharf-testkit.
fn brokers() -> String {
    wharf_testkit::kafka()
        .expect("start Tansu (run scripts/install)")
        .address()
        .to_owned()
}

async fn wrapper_round(w: &KafkaWrapper, name: &str, topic: &str) -> f64 {
    let mut spec = ProducerSpec::new(name).queue_timeout(Duration::from_secs(60));
    for (k, v) in SETTINGS {
        spec = spec.set(*k, *v);
    }
    let p = w.add_producer(spec).unwrap();
    // Warm up the connection and metadata outside the timed part.
    p.send(Record::new(topic, vec![0u8; SIZE])).await.unwrap();
    let payload = bytes::Bytes::from(vec![7u8; SIZE]);
    let records: Vec<Record> = (0..MESSAGES)
        .map(|_| Record::new(topic, payload.clone()))
        .collect();
    let start = Instant::now();
    let results = p.send_batch(records).await;
    let elapsed = start.elapsed();
    assert!(results.iter().all(Result::is_ok), "every message delivered");
    w.remove_producer(name).await.unwrap();
    MESSAGES as f64 / elapsed.as_secs_f64()
}

async fn raw_round(brokers: &str, topic: &str) -> f64 {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers);
    for (k, v) in SETTINGS {
        cc.set(*k, *v);
    }
    let p: FutureProducer = cc.create().unwrap();
    let warm: &[u8] = &[0u8; SIZE];
    p.send(
        FutureRecord::<(), [u8]>::to(topic).payload(warm),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    let payload = [7u8; SIZE];
    let start = Instant::now();
    let mut futures = Vec::with_capacity(MESSAGES);
    for _ in 0..MESSAGES {
        let f = p
            .send_result(FutureRecord::<(), [u8]>::to(topic).payload(&payload[..]))
            .map_err(|(e, _)| e)
            .unwrap();
        futures.push(f);
    }
    for f in futures {
        f.await.unwrap().unwrap();
    }
    let elapsed = start.elapsed();
    MESSAGES as f64 / elapsed.as_secs_f64()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let brokers = brokers();
        let w = KafkaWrapper::start(KafkaConfig::new(&brokers)).await.unwrap();
        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let topic = format!("bench-produce-{}-{round}", std::process::id());
            w.admin().ensure_topics(&[TopicSpec::new(&topic, PARTITIONS)]).await.unwrap();
            // Alternate which side goes first, so neither always gets the warmer broker.
            let (o, r) = if round % 2 == 0 {
                let o = wrapper_round(&w, &format!("bench-{round}"), &topic).await;
                (o, raw_round(&brokers, &topic).await)
            } else {
                let r = raw_round(&brokers, &topic).await;
                (wrapper_round(&w, &format!("bench-{round}"), &topic).await, r)
            };
            println!("round {round}: wrapper {o:>10.0} msg/s   raw FutureProducer {r:>10.0} msg/s");
            ours.push(o);
            raw.push(r);
            let _ = w.admin().delete_topics(&[&topic]).await;
        }
        // Rounds are paired in time, so the median of per-round ratios is also reported:
        // on a loaded 2-core machine it is steadier than the ratio of the medians.
        let paired = median(&ours.iter().zip(&raw).map(|(o, r)| o / r).collect::<Vec<_>>());
        let (o, r) = (median(&ours), median(&raw));
        let ratio = o / r;
        println!();
        println!("kafka-produce ({MESSAGES} x {SIZE} B, acks=all, {ROUNDS} rounds, medians)");
        println!("{:<28} {:>14}", "", "messages/s");
        println!("{:<28} {:>14.0}", "wharf-kafka-wrapper", o);
        println!("{:<28} {:>14.0}", "rdkafka FutureProducer", r);
        println!("{:<28} {:>14.3}", "ratio (target >= 0.95)", ratio);
        println!("{:<28} {:>14.3}", "median of per-round ratios", paired);
        let entry = Entry {
            name: "kafka-produce".to_owned(),
            metric: "messages_per_second".to_owned(),
            unit: "messages/s".to_owned(),
            higher_is_better: true,
            ours: o,
            baseline: r,
            baseline_label: "rdkafka FutureProducer".to_owned(),
            params: serde_json::json!({"messages": MESSAGES, "message_bytes": SIZE, "acks": "all", "partitions": PARTITIONS, "rounds": ROUNDS, "paired_ratio_median": paired}),
        };
        if let Ok(Some(path)) = write_report(&[entry.to_json()]) {
            println!("wrote {}", path.display());
        }
        w.shutdown().await.unwrap();
    });
}

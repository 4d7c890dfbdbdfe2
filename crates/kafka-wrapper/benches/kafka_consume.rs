//! `kafka-consume`: messages per second through a group consumer with an empty handler
//! versus a raw rdkafka `StreamConsumer` that stores each message's offset after it, same
//! broker, same run, same pre-filled topic (200,000 x 100 B, 3 partitions). The clock runs
//! from the 10,000th message to the last, so the group join and first fetches are not
//! measured. Rounds rotate which side goes first; medians are reported. Writes JSON to
//! `$WHARF_BENCH_OUT` if set.
//!
//! A second raw baseline also reads each message into owned values (payload, key and
//! headers copied out, as the wrapper does for its handler): the raw consumer above never
//! looks at a message, and reading one is most of what separates the two.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
};
use wharf_testkit::bench::{Entry, median, write_report};

const MESSAGES: u64 = 200_000;
const SIZE: usize = 100;
const ROUNDS: usize = 9;
const PARTITIONS: i32 = 3;
/// Messages consumed before the clock starts (group join, first fetches), on both sides.
const WARMUP: u64 = 10_000;

/// Settings shared by both sides. `fetch.queue.backoff.ms` (librdkafka's default is 1 s, the
/// wrapper's 20 ms) is set for both: with the default, either side at times stalls about a
/// second near the end of a run, waiting to fetch a partition again, which swamps the
/// comparison.
const SETTINGS: &[(&str, &str)] = &[
    ("fetch.queue.backoff.ms", "20"),
    ("session.timeout.ms", "6000"),
    ("enable.auto.commit", "true"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
];

/// `$WHARF_TEST_KAFKA_BROKERS`, else a Tansu started by wharf-testkit.
fn brokers() -> String {
    wharf_testkit::kafka()
        .expect("start Tansu (run scripts/install)")
        .address()
        .to_owned()
}

async fn wrapper_round(w: &KafkaWrapper, round: usize, topic: &str) -> f64 {
    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (c, f) = (count.clone(), first.clone());
    let handler = Handler::per_message(move |_| {
        if c.fetch_add(1, Ordering::Relaxed) + 1 == WARMUP {
            *f.lock().unwrap() = Some(Instant::now());
        }
        async { Outcome::Ack }
    });
    let name = format!("bench-consumer-{round}");
    let mut spec = ConsumerSpec::group(
        &name,
        format!("bench-wrapper-{}-{round}", std::process::id()),
        [topic],
        handler,
    );
    for (k, v) in SETTINGS {
        spec = spec.set(*k, *v);
    }
    w.add_consumer(spec).unwrap();
    while count.load(Ordering::Relaxed) < MESSAGES {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = first.lock().unwrap().unwrap().elapsed();
    w.remove_consumer(&name).await.unwrap();
    (MESSAGES - WARMUP) as f64 / elapsed.as_secs_f64()
}

/// What a handler gets from a message, read out of librdkafka's buffer.
fn read_owned(m: &rdkafka::message::BorrowedMessage<'_>) -> usize {
    use rdkafka::message::{Headers as _, Message as _};
    let payload = m.payload().map(bytes::Bytes::copy_from_slice);
    let key = m.key().map(bytes::Bytes::copy_from_slice);
    let headers: Vec<(String, bytes::Bytes)> = m
        .headers()
        .map(|h| {
            h.iter()
                .map(|h| {
                    (
                        h.key.to_owned(),
                        h.value
                            .map(bytes::Bytes::copy_from_slice)
                            .unwrap_or_default(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    std::hint::black_box((payload, key, headers, m.timestamp()))
        .0
        .map_or(0, |p| p.len())
}

async fn raw_round(brokers: &str, round: usize, topic: &str, read: bool) -> f64 {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set(
        "group.id",
        format!(
            "bench-raw{}-{}-{round}",
            if read { "-read" } else { "" },
            std::process::id()
        ),
    );
    for (k, v) in SETTINGS {
        cc.set(*k, *v);
    }
    let c: StreamConsumer = cc.create().unwrap();
    c.subscribe(&[topic]).unwrap();
    for _ in 0..WARMUP {
        let m = c.recv().await.unwrap();
        if read {
            read_owned(&m);
        }
        c.store_offset_from_message(&m).unwrap();
    }
    let start = Instant::now();
    for _ in WARMUP..MESSAGES {
        let m = c.recv().await.unwrap();
        if read {
            read_owned(&m);
        }
        c.store_offset_from_message(&m).unwrap();
    }
    let elapsed = start.elapsed();
    (MESSAGES - WARMUP) as f64 / elapsed.as_secs_f64()
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
        let topic = format!("bench-consume-{}", std::process::id());
        w.admin().ensure_topics(&[TopicSpec::new(&topic, PARTITIONS)]).await.unwrap();
        let p = w
            .add_producer(ProducerSpec::new("fill").set("queue.buffering.max.messages", "1000000"))
            .unwrap();
        let payload = bytes::Bytes::from(vec![7u8; SIZE]);
        let results = p.send_batch((0..MESSAGES).map(|_| Record::new(&topic, payload.clone())).collect()).await;
        assert!(results.iter().all(Result::is_ok));
        w.remove_producer("fill").await.unwrap();

        let (mut ours, mut raw, mut read) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            // Rotate which side goes first, so none always gets the warmer broker.
            let (mut o, mut r, mut rr) = (0.0, 0.0, 0.0);
            for side in 0..3 {
                match (round + side) % 3 {
                    0 => o = wrapper_round(&w, round, &topic).await,
                    1 => r = raw_round(&brokers, round, &topic, false).await,
                    _ => rr = raw_round(&brokers, round, &topic, true).await,
                }
            }
            println!("round {round}: wrapper {o:>10.0} msg/s   raw {r:>10.0} msg/s   raw reading each message {rr:>10.0} msg/s");
            ours.push(o);
            raw.push(r);
            read.push(rr);
        }
        // Rounds are paired in time, so the median of per-round ratios is also reported:
        // on a loaded 2-core machine it is steadier than the ratio of the medians.
        let paired = |base: &[f64]| median(&ours.iter().zip(base).map(|(o, r)| o / r).collect::<Vec<_>>());
        let (paired_raw, paired_read) = (paired(&raw), paired(&read));
        let (o, r, rr) = (median(&ours), median(&raw), median(&read));
        println!();
        println!("kafka-consume ({MESSAGES} x {SIZE} B, {PARTITIONS} partitions, {ROUNDS} rounds, medians)");
        println!("{:<44} {:>14}", "", "messages/s");
        println!("{:<44} {:>14.0}", "wharf-kafka-wrapper (empty handler)", o);
        println!("{:<44} {:>14.0}", "rdkafka StreamConsumer + store", r);
        println!("{:<44} {:>14.0}", "rdkafka StreamConsumer + store + read", rr);
        println!("{:<44} {:>14.3}", "ratio vs raw (target >= 0.95)", o / r);
        println!("{:<44} {:>14.3}", "  median of per-round ratios", paired_raw);
        println!("{:<44} {:>14.3}", "ratio vs raw reading each message", o / rr);
        println!("{:<44} {:>14.3}", "  median of per-round ratios", paired_read);
        let params = |paired: f64| serde_json::json!({"warmup_messages": WARMUP, "messages": MESSAGES, "message_bytes": SIZE, "partitions": PARTITIONS, "rounds": ROUNDS, "paired_ratio_median": paired});
        let entry = |baseline: f64, label: &str, paired: f64| Entry {
            name: "kafka-consume".to_owned(),
            metric: "messages_per_second".to_owned(),
            unit: "messages/s".to_owned(),
            higher_is_better: true,
            ours: o,
            baseline,
            baseline_label: label.to_owned(),
            params: params(paired),
        }
        .to_json();
        let report = [
            entry(r, "rdkafka StreamConsumer storing offsets per message", paired_raw),
            entry(rr, "rdkafka StreamConsumer storing offsets per message, reading each into owned payload, key and headers", paired_read),
        ];
        if let Ok(Some(path)) = write_report(&report) {
            println!("wrote {}", path.display());
        }
        w.shutdown().await.unwrap();
    });
}

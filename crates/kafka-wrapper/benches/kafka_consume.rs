//! `kafka-consume`: messages per second through a group consumer with an empty handler
//! versus a raw rdkafka `StreamConsumer` that stores each message's offset after it, same
//! broker, same run, same pre-filled topic (200,000 x 100 B, 3 partitions). The clock runs
//! from the 10,000th message to the last, so the group join and first fetches are not
//! measured. Rounds alternate;
//! medians are reported. Writes JSON to `$WHARF_BENCH_OUT` if set.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
};

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

fn brokers() -> String {
    std::env::var("WHARF_KAFKA_BROKERS").unwrap_or_else(|_| {
        wharf_testkit::kafka()
            .expect("start Tansu")
            .address()
            .to_owned()
    })
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

async fn raw_round(brokers: &str, round: usize, topic: &str) -> f64 {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers).set(
        "group.id",
        format!("bench-raw-{}-{round}", std::process::id()),
    );
    for (k, v) in SETTINGS {
        cc.set(*k, *v);
    }
    let c: StreamConsumer = cc.create().unwrap();
    c.subscribe(&[topic]).unwrap();
    for _ in 0..WARMUP {
        let m = c.recv().await.unwrap();
        c.store_offset_from_message(&m).unwrap();
    }
    let start = Instant::now();
    for _ in WARMUP..MESSAGES {
        let m = c.recv().await.unwrap();
        c.store_offset_from_message(&m).unwrap();
    }
    let elapsed = start.elapsed();
    (MESSAGES - WARMUP) as f64 / elapsed.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
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

        let (mut ours, mut raw) = (Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let (o, r) = if round % 2 == 0 {
                let o = wrapper_round(&w, round, &topic).await;
                (o, raw_round(&brokers, round, &topic).await)
            } else {
                let r = raw_round(&brokers, round, &topic).await;
                (wrapper_round(&w, round, &topic).await, r)
            };
            println!("round {round}: wrapper {o:>10.0} msg/s   raw StreamConsumer {r:>10.0} msg/s");
            ours.push(o);
            raw.push(r);
        }
        // Rounds are paired in time, so the median of per-round ratios is also reported:
        // on a loaded 2-core machine it is steadier than the ratio of the medians.
        let paired = median(ours.iter().zip(&raw).map(|(o, r)| o / r).collect());
        let (o, r) = (median(ours), median(raw));
        let ratio = o / r;
        println!();
        println!("kafka-consume ({MESSAGES} x {SIZE} B, {PARTITIONS} partitions, {ROUNDS} rounds, medians)");
        println!("{:<36} {:>14}", "", "messages/s");
        println!("{:<36} {:>14.0}", "wharf-kafka-wrapper (empty handler)", o);
        println!("{:<36} {:>14.0}", "rdkafka StreamConsumer + store", r);
        println!("{:<36} {:>14.3}", "ratio (target >= 0.95)", ratio);
        println!("{:<36} {:>14.3}", "median of per-round ratios", paired);
        let json = serde_json::json!([{
            "name": "kafka-consume",
            "metric": "messages_per_second",
            "unit": "messages/s",
            "higher_is_better": true,
            "ours": o,
            "baseline": r,
            "baseline_label": "rdkafka StreamConsumer storing offsets per message",
            "ratio": ratio,
            "params": {"warmup_messages": WARMUP, "messages": MESSAGES, "message_bytes": SIZE, "partitions": PARTITIONS, "rounds": ROUNDS, "paired_ratio_median": paired},
        }]);
        if let Ok(path) = std::env::var("WHARF_BENCH_OUT") {
            if let Some(dir) = std::path::Path::new(&path).parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        }
        w.shutdown().await.unwrap();
    });
}

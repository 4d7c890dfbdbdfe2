//! `kafka-growth`: how a group consumer's throughput and memory grow with the partitions of
//! its topic (1, 12 and 48; `WHARF_BENCH_PARTITIONS`, comma-separated), the wrapper with an
//! empty handler next to a raw rdkafka `StreamConsumer` storing each message's offset (the
//! `kafka-consume` baseline), same Tansu, same pre-filled topic per partition count
//! (200,000 x 100 B), the settings of `kafka-consume`.
//!
//! Each measurement runs in a fresh process of this binary, so that its resident memory
//! (`/proc/self/statm`, sampled every millisecond) is not hidden by memory an earlier
//! measurement freed: memory is the peak RSS while consuming minus the RSS before the
//! consumer was added. Throughput is timed from the 10,000th message to the last.
//! Rounds: `WHARF_BENCH_ROUNDS` (default 3), sides alternating; medians reported. Writes
//! JSON to `$WHARF_BENCH_OUT` if set.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
};
use wharf_testkit::bench::{Entry, median, rss_bytes, write_report};

const MESSAGES: u64 = 200_000;
const SIZE: usize = 100;
const WARMUP: u64 = 10_000;
const SETTINGS: &[(&str, &str)] = &[
    ("fetch.queue.backoff.ms", "20"),
    ("session.timeout.ms", "6000"),
    ("enable.auto.commit", "true"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
];
const CHILD_VAR: &str = "WHARF_KAFKA_GROWTH_CHILD";

/// Samples RSS every millisecond until `done`; answers the peak.
fn sample_peak(done: Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak = rss_bytes();
        while !done.load(Ordering::Relaxed) {
            peak = peak.max(rss_bytes());
            std::thread::sleep(Duration::from_millis(1));
        }
        peak.max(rss_bytes())
    })
}

async fn wrapper_side(brokers: &str, topic: &str) -> (f64, f64) {
    let w = KafkaWrapper::start(KafkaConfig::new(brokers))
        .await
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let first = Arc::new(std::sync::Mutex::new(None::<Instant>));
    let (c, f) = (count.clone(), first.clone());
    let handler = Handler::per_message(move |_| {
        if c.fetch_add(1, Ordering::Relaxed) + 1 == WARMUP {
            *f.lock().unwrap() = Some(Instant::now());
        }
        async { Outcome::Ack }
    });
    let mut spec = ConsumerSpec::group(
        "growth",
        format!("growth-wrapper-{}", std::process::id()),
        [topic],
        handler,
    );
    for (k, v) in SETTINGS {
        spec = spec.set(*k, *v);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_bytes();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(done.clone());
    w.add_consumer(spec).unwrap();
    while count.load(Ordering::Relaxed) < MESSAGES {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = first.lock().unwrap().unwrap().elapsed();
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    w.remove_consumer("growth").await.unwrap();
    w.shutdown().await.unwrap();
    (
        (MESSAGES - WARMUP) as f64 / elapsed.as_secs_f64(),
        peak - before,
    )
}

async fn raw_side(brokers: &str, topic: &str) -> (f64, f64) {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", brokers)
        .set("group.id", format!("growth-raw-{}", std::process::id()));
    for (k, v) in SETTINGS {
        cc.set(*k, *v);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss_bytes();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = sample_peak(done.clone());
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
    done.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap();
    (
        (MESSAGES - WARMUP) as f64 / elapsed.as_secs_f64(),
        peak - before,
    )
}

/// One measurement in a fresh process: (messages/s, peak RSS added in bytes).
fn measure(brokers: &str, topic: &str, side: &str) -> (f64, f64) {
    let out = Command::new(std::env::current_exe().unwrap())
        .env(CHILD_VAR, format!("{side}:{topic}"))
        .env("WHARF_TEST_KAFKA_BROKERS", brokers)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut f = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(f64::NAN));
    (f.next().unwrap_or(f64::NAN), f.next().unwrap_or(f64::NAN))
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    if let Ok(child) = std::env::var(CHILD_VAR) {
        let (side, topic) = child.split_once(':').unwrap();
        let brokers = std::env::var("WHARF_TEST_KAFKA_BROKERS").unwrap();
        let (rate, rss) = rt.block_on(async {
            if side == "ours" {
                wrapper_side(&brokers, topic).await
            } else {
                raw_side(&brokers, topic).await
            }
        });
        println!("{rate} {rss}");
        return;
    }
    let sizes: Vec<i32> = std::env::var("WHARF_BENCH_PARTITIONS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 12, 48]);
    let rounds: usize = std::env::var("WHARF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let kafka = wharf_testkit::kafka().expect("start Tansu (run scripts/install)");
    let brokers = kafka.address().to_owned();
    let mut report = Vec::new();
    rt.block_on(async {
        let w = KafkaWrapper::start(KafkaConfig::new(&brokers)).await.unwrap();
        let p = w
            .add_producer(ProducerSpec::new("fill").set("queue.buffering.max.messages", "1000000"))
            .unwrap();
        let payload = bytes::Bytes::from(vec![7u8; SIZE]);
        for &partitions in &sizes {
            let topic = format!("bench-growth-{partitions}-{}", std::process::id());
            w.admin().ensure_topics(&[TopicSpec::new(&topic, partitions)]).await.unwrap();
            let results = p
                .send_batch((0..MESSAGES).map(|_| Record::new(&topic, payload.clone())).collect())
                .await;
            assert!(results.iter().all(Result::is_ok));
            let (mut or, mut om, mut rr, mut rm) = (vec![], vec![], vec![], vec![]);
            for round in 0..rounds {
                let (o, r) = if round % 2 == 0 {
                    let o = measure(&brokers, &topic, "ours");
                    (o, measure(&brokers, &topic, "raw"))
                } else {
                    let r = measure(&brokers, &topic, "raw");
                    (measure(&brokers, &topic, "ours"), r)
                };
                println!(
                    "{partitions:>3} partitions, round {round}: wrapper {:>10.0} msg/s, +{:>6.1} MiB RSS   raw {:>10.0} msg/s, +{:>6.1} MiB RSS",
                    o.0, o.1 / 1048576.0, r.0, r.1 / 1048576.0
                );
                or.push(o.0);
                om.push(o.1);
                rr.push(r.0);
                rm.push(r.1);
            }
            let params = serde_json::json!({"partitions": partitions, "messages": MESSAGES, "message_bytes": SIZE, "warmup_messages": WARMUP, "rounds": rounds});
            let entry = |metric: &str, unit: &str, higher: bool, ours: f64, base: f64| Entry {
                name: "kafka-growth".to_owned(),
                metric: metric.to_owned(),
                unit: unit.to_owned(),
                higher_is_better: higher,
                ours,
                baseline: base,
                baseline_label: "rdkafka StreamConsumer storing offsets per message".to_owned(),
                params: params.clone(),
            }
            .to_json();
            report.push(entry("messages_per_second", "messages/s", true, median(&or), median(&rr)));
            report.push(entry("peak_rss_added_bytes", "bytes", false, median(&om), median(&rm)));
        }
        w.remove_producer("fill").await.unwrap();
        w.shutdown().await.unwrap();
    });
    if let Ok(Some(path)) = write_report(&report) {
        println!("wrote {}", path.display());
    }
}

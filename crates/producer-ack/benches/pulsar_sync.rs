//! `pulsar-sync`: latency of `produce` (block for the receipt) vs the raw `pulsar` crate's
//! send-and-await, one message at a time, same broker, same run, rounds interleaved; the
//! medians over rounds of each round's p50 and p99 are reported.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use pulsar::{Pulsar, TokioExecutor};
use wharf_producer_ack::Producer;
use wharf_testkit::bench::{Entry, median};

const COUNT: usize = 2_000;
const SIZE: usize = 100;
const ROUNDS: usize = 5;

fn percentiles(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (
        support::percentile(&samples, 50.0),
        support::percentile(&samples, 99.0),
    )
}

async fn ours(url: &str) -> (f64, f64) {
    let producer = Producer::builder(url, support::topic("sync-ours"))
        .send_timeout(Duration::from_secs(30))
        .start()
        .unwrap();
    producer.produce("warm-up").await.unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let mut samples = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let started = Instant::now();
        producer.produce(payload.clone()).await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    producer.close().await;
    percentiles(samples)
}

async fn raw(url: &str) -> (f64, f64) {
    let client: Pulsar<TokioExecutor> = Pulsar::builder(url, TokioExecutor).build().await.unwrap();
    let mut producer = client
        .producer()
        .with_topic(support::topic("sync-raw"))
        .build()
        .await
        .unwrap();
    let message = |payload: Vec<u8>| pulsar::producer::Message {
        payload,
        ..Default::default()
    };
    producer
        .send_non_blocking(message(b"warm-up".to_vec()))
        .await
        .unwrap()
        .await
        .unwrap();
    let mut samples = Vec::with_capacity(COUNT);
    for _ in 0..COUNT {
        let started = Instant::now();
        producer
            .send_non_blocking(message(vec![b'x'; SIZE]))
            .await
            .unwrap()
            .await
            .unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e6);
    }
    percentiles(samples)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (url, _broker) = support::broker();
    let (mut o50, mut o99, mut r50, mut r99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // every run inside a task on the runtime's two workers, like a service's code (the
    // thread that calls block_on would otherwise lend a third thread to whichever runs on it)
    let run = |ours_first: bool| {
        let url = url.clone();
        runtime.block_on(async move {
            tokio::spawn(async move {
                if ours_first {
                    let o = ours(&url).await;
                    (o, raw(&url).await)
                } else {
                    let r = raw(&url).await;
                    (ours(&url).await, r)
                }
            })
            .await
            .unwrap()
        })
    };
    run(true); // warm-up, not counted
    for round in 0..ROUNDS {
        let (o, r) = run(round % 2 == 0);
        println!(
            "round {round}: ours p50 {:.0} us p99 {:.0} us; raw p50 {:.0} us p99 {:.0} us",
            o.0, o.1, r.0, r.1
        );
        o50.push(o.0);
        o99.push(o.1);
        r50.push(r.0);
        r99.push(r.1);
    }
    let params =
        serde_json::json!({"messages_per_round": COUNT, "payload_bytes": SIZE, "rounds": ROUNDS});
    let label = "raw pulsar crate 6.9: send_non_blocking then await the receipt".to_owned();
    support::report(&[
        Entry {
            name: "pulsar-sync".into(),
            metric: "p50_latency_us".into(),
            unit: "us".into(),
            higher_is_better: false,
            ours: median(&o50),
            baseline: median(&r50),
            baseline_label: label.clone(),
            params: params.clone(),
        },
        Entry {
            name: "pulsar-sync".into(),
            metric: "p99_latency_us".into(),
            unit: "us".into(),
            higher_is_better: false,
            ours: median(&o99),
            baseline: median(&r99),
            baseline_label: label,
            params,
        },
    ]);
}

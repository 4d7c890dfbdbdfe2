//! `pulsar-async`: messages per second with acknowledge-later (`produce_with`, 20,000 x 100 B)
//! vs the raw `pulsar` crate pipelining `send_non_blocking` as far as it allows, same broker,
//! same run, rounds interleaved, medians reported. The official C++-based Python client
//! (`pulsar-client`) on the same broker gives a peer figure.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pulsar::{Pulsar, TokioExecutor};
use tokio::sync::Notify;
use wharf_producer_ack::{Error, MessageId, Producer};
use wharf_testkit::bench::{Entry, median};

const COUNT: usize = 20_000;
const SIZE: usize = 100;
const WINDOW: usize = 5_000;
const ROUNDS: usize = 7;

async fn ours(url: &str) -> f64 {
    let producer = Producer::builder(url, support::topic("bench-ours"))
        .window(WINDOW)
        .send_timeout(Duration::from_secs(60))
        .start()
        .unwrap();
    producer.produce("warm-up").await.unwrap();
    let acked = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(Notify::new());
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let started = Instant::now();
    for _ in 0..COUNT {
        let (acked, failed, done) = (acked.clone(), failed.clone(), done.clone());
        producer
            .produce_with(payload.clone(), move |r: Result<MessageId, Error>| {
                if r.is_err() {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                if acked.fetch_add(1, Ordering::AcqRel) + 1 == COUNT {
                    done.notify_one();
                }
            })
            .await;
    }
    done.notified().await;
    let elapsed = started.elapsed();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no failures in a benchmark run"
    );
    if producer.reconnects() > 0 {
        println!(
            "  (ours reconnected {} time(s) during this round)",
            producer.reconnects()
        );
    }
    producer.close().await;
    COUNT as f64 / elapsed.as_secs_f64()
}

async fn raw(url: &str) -> f64 {
    // as far as the crate allows: a deep outbound queue, and waiting when it is full rather
    // than SlowDown errors
    let client: Pulsar<TokioExecutor> = Pulsar::builder(url, TokioExecutor)
        .with_outbound_channel_size(WINDOW + 16)
        .build()
        .await
        .unwrap();
    let mut producer = client
        .producer()
        .with_topic(support::topic("bench-raw"))
        .with_options(pulsar::ProducerOptions {
            block_queue_if_full: true,
            ..Default::default()
        })
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
    let started = Instant::now();
    // the same number of messages in flight as wharf's window: past it, wait for the oldest
    let mut receipts = std::collections::VecDeque::with_capacity(WINDOW);
    for _ in 0..COUNT {
        if receipts.len() == WINDOW {
            let oldest: pulsar::producer::SendFuture = receipts.pop_front().unwrap();
            oldest.await.unwrap();
        }
        let receipt = producer.send_non_blocking(message(vec![b'x'; SIZE]));
        receipts.push_back(receipt.await.unwrap());
    }
    for receipt in receipts {
        receipt.await.unwrap();
    }
    let elapsed = started.elapsed();
    COUNT as f64 / elapsed.as_secs_f64()
}

fn peer(url: &str) -> Option<f64> {
    let python = support::python()?;
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/pulsar_client_peer.py");
    let output = std::process::Command::new(python)
        .arg(script)
        .arg(url)
        .arg(support::topic("bench-peer"))
        .arg(COUNT.to_string())
        .arg(SIZE.to_string())
        .arg(WINDOW.to_string())
        .output()
        .ok()?;
    if !output.status.success() {
        eprintln!(
            "peer run failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    v["messages_per_second"].as_f64()
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (url, _broker) = support::broker();
    let (mut ours_rounds, mut raw_rounds, mut peer_rounds) = (Vec::new(), Vec::new(), Vec::new());
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
        // alternate which goes first, so neither always gets the fresher broker
        let (o, r) = run(round % 2 == 0);
        println!("round {round}: ours {o:.0} msg/s, raw {r:.0} msg/s");
        ours_rounds.push(o);
        raw_rounds.push(r);
    }
    for round in 0..3 {
        if let Some(p) = peer(&url) {
            println!("peer round {round}: pulsar-client {p:.0} msg/s");
            peer_rounds.push(p);
        }
    }
    let ours = median(&ours_rounds);
    let raw = median(&raw_rounds);
    let params = serde_json::json!({"messages": COUNT, "payload_bytes": SIZE, "window": WINDOW, "rounds": ROUNDS, "batching": false});
    let mut figures = vec![Entry {
        name: "pulsar-async".into(),
        metric: "messages_per_second".into(),
        unit: "msg/s".into(),
        higher_is_better: true,
        ours,
        baseline: raw,
        baseline_label: "raw pulsar crate 6.9 send_non_blocking, pipelined with the same window (block_queue_if_full, outbound queue = window)".to_owned(),
        params: params.clone(),
    }];
    if !peer_rounds.is_empty() {
        figures.push(Entry {
            name: "pulsar-async".into(),
            metric: "messages_per_second".into(),
            unit: "msg/s".into(),
            higher_is_better: true,
            ours,
            baseline: median(&peer_rounds),
            baseline_label: "peer: pulsar-client 3.13 (Python, C++ core) send_async, batching off"
                .to_owned(),
            params,
        });
    }
    support::report(&figures);
}

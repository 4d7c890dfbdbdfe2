//! `pulsar-window`: the producer's resident memory with its window full (every message
//! sent and waiting for its receipt), at windows of 1,000, 10,000 and 100,000 messages of
//! 100 B (`WHARF_BENCH_WINDOWS`, comma-separated).
//!
//! Each measurement runs in a fresh process of this binary with its own pulsar-lite behind
//! wharf-testkit's `FaultProxy`: the producer connects and has one message acknowledged,
//! then the proxy goes down (connections closed and refused: the broker unreachable) and
//! `produce_with` is called until the window is full (`pending() == window`). (Holding the
//! traffic instead would count the proxy's own buffers, which live in this process.) Memory is the
//! RSS (`/proc/self/statm`) added from after the proxy went down to 200 ms after the
//! window filled, divided by the window. The baseline is the payload bytes, so the ratio is
//! the producer's overhead. Rounds: `WHARF_BENCH_ROUNDS` (default 3), medians. Writes JSON to
//! `$WHARF_BENCH_OUT`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use wharf_producer_ack::{Error, MessageId, Producer};
use wharf_testkit::bench::{Entry, median, rss_bytes, write_report};

const CHILD_VAR: &str = "WHARF_PULSAR_WINDOW_CHILD";
const SIZE: usize = 100;

/// In a fresh process: RSS added (bytes) with `window` messages awaiting their receipt.
async fn child(window: usize) -> f64 {
    let broker = wharf_testkit::PulsarLite::start_behind_proxy()
        .expect("pulsar-lite behind a proxy (run scripts/install)");
    let producer = Producer::builder(broker.url(), support::topic("window"))
        .window(window)
        .send_timeout(Duration::from_secs(600))
        .start()
        .unwrap();
    producer.produce("warm-up").await.unwrap();
    // The baseline is taken once the connection is gone: what the connection and the
    // proxy (in this process) held is not the window's.
    broker.proxy().unwrap().down().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let payload = bytes::Bytes::from(vec![b'x'; SIZE]);
    let started = Instant::now();
    for _ in 0..window {
        // Each message its own allocation, as an application's would be.
        let message = payload.to_vec();
        producer
            .produce_with(message, |_: Result<MessageId, Error>| {})
            .await;
    }
    while producer.pending() < window {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the window never filled"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let added = rss_bytes() - before;
    assert_eq!(producer.pending(), window);
    std::mem::forget(producer);
    added
}

fn main() {
    if let Ok(window) = std::env::var(CHILD_VAR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let added = rt.block_on(child(window.parse().unwrap()));
        println!("{added}");
        std::process::exit(0);
    }
    let sizes: Vec<usize> = std::env::var("WHARF_BENCH_WINDOWS")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let rounds: usize = std::env::var("WHARF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut report = Vec::new();
    for window in sizes {
        let mut per_message = vec![];
        for round in 0..rounds {
            let out = Command::new(std::env::current_exe().unwrap())
                .env(CHILD_VAR, window.to_string())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let added: f64 = text
                .lines()
                .last()
                .and_then(|l| l.trim().parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "child failed: {text} {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
            println!(
                "window {window:>7}, round {round}: +{:.1} MiB RSS, {:.0} B per message of {SIZE} B",
                added / 1048576.0,
                added / window as f64
            );
            per_message.push(added / window as f64);
        }
        report.push(
            Entry {
                name: "pulsar-window".to_owned(),
                metric: "rss_bytes_per_message_in_window".to_owned(),
                unit: "bytes".to_owned(),
                higher_is_better: false,
                ours: median(&per_message),
                baseline: SIZE as f64,
                baseline_label: "the payload (100 B)".to_owned(),
                params: serde_json::json!({"window": window, "message_bytes": SIZE, "rounds": rounds, "broker": "pulsar-lite behind FaultProxy, down (connections refused)"}),
            }
            .to_json(),
        );
    }
    if let Ok(Some(path)) = write_report(&report) {
        println!("wrote {}", path.display());
    }
}

//! `webhooks-buffer`: the emitter's resident memory with its buffer full, at buffer
//! capacities of 1,000, 10,000 (the default) and 100,000 events
//! (`WHARF_BENCH_CAPACITIES`, comma-separated).
//!
//! Each measurement runs in a fresh process of this binary with its own moto behind
//! wharf-testkit's `FaultProxy`: the emitter starts and sends one event (so its client and
//! connection exist), then the proxy goes down (connections closed and refused: SQS
//! unreachable, every request fails and is retried later) and `try_emit` accepts events
//! until the buffer refuses one. (Holding the traffic instead would count the proxy's own
//! buffers, which live in this process.) Memory is the RSS
//! (`/proc/self/statm`) added from after the proxy went down to 200 ms after the buffer
//! filled, divided by the events held. The baseline is the bytes of the events themselves
//! (their JSON body as the original sends it), so the ratio is the emitter's overhead.
//! Rounds: `WHARF_BENCH_ROUNDS` (default 3), medians. Writes JSON to `$WHARF_BENCH_OUT`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use wharf_testkit::bench::{Entry, median, rss_bytes, write_report};
use wharf_webhooks_emitter::{Emitter, Event};

const CHILD_VAR: &str = "WHARF_WEBHOOKS_BUFFER_CHILD";

/// The event body of `webhooks-throughput`.
fn data(i: usize) -> serde_json::Value {
    json!({
        "transactionId": format!("tx-{i:08}"),
        "amount": 12_345 + i,
        "currency": "CAD",
        "items": [{"sku": "SEAT-14C", "qty": 1}, {"sku": "BAG-1", "qty": 2}],
        "customer": {"id": format!("cust-{}", i % 977), "tier": "gold"},
    })
}

/// In a fresh process: (events held, RSS added in bytes, JSON bytes of the events held).
async fn child(capacity: usize) -> (f64, f64, f64) {
    let moto = wharf_testkit::Moto::start_behind_proxy()
        .expect("moto behind a proxy (run scripts/install)");
    let endpoint = moto.endpoint();
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(&endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .build();
    let client = aws_sdk_sqs::Client::from_conf(conf);
    let queue_url = client
        .create_queue()
        .queue_name(wharf_testkit::unique_name("buffer"))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string();
    let emitter = Emitter::builder()
        .queue_url(&queue_url)
        .endpoint_url(&endpoint)
        .region("us-east-1")
        .credentials("bench", "bench")
        .buffer_capacity(capacity)
        .buffer_bytes(1 << 30)
        .request_timeout(Duration::from_secs(600))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    emitter
        .emit_sync(Event::from_json(
            "provider-1",
            "transaction.created",
            data(0),
        ))
        .await
        .unwrap();
    // The baseline is taken once the connection is gone: what the connection and the
    // proxy (in this process) held is not the buffer's.
    moto.proxy().unwrap().down().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_bytes();
    let (mut held, mut json_bytes) = (0usize, 0usize);
    let started = Instant::now();
    loop {
        let body = data(held + 1);
        let size = body.to_string().len();
        match emitter.try_emit(Event::from_json("provider-1", "transaction.created", body)) {
            Ok(_) => {
                held += 1;
                json_bytes += size;
            }
            Err(_) => break,
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "the buffer never filled"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let added = rss_bytes() - before;
    assert_eq!(emitter.stats().buffered, held as u64);
    // Leave without draining: the process ends, moto with it.
    std::mem::forget(emitter);
    (held as f64, added, json_bytes as f64)
}

fn main() {
    if let Ok(capacity) = std::env::var(CHILD_VAR) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        let (held, added, json_bytes) = rt.block_on(child(capacity.parse().unwrap()));
        println!("{held} {added} {json_bytes}");
        std::process::exit(0);
    }
    let sizes: Vec<usize> = std::env::var("WHARF_BENCH_CAPACITIES")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000, 10_000, 100_000]);
    let rounds: usize = std::env::var("WHARF_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let mut report = Vec::new();
    for capacity in sizes {
        let (mut per_event, mut json_per_event, mut total) = (vec![], vec![], vec![]);
        for round in 0..rounds {
            let out = Command::new(std::env::current_exe().unwrap())
                .env(CHILD_VAR, capacity.to_string())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            let f: Vec<f64> = text
                .lines()
                .last()
                .unwrap_or("")
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(f64::NAN))
                .collect();
            let [held, added, json_bytes] = f[..] else {
                panic!(
                    "child failed: {text} {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            println!(
                "capacity {capacity:>7}, round {round}: {held:.0} events held, +{:.1} MiB RSS, {:.0} B per event (event JSON {:.0} B)",
                added / 1048576.0,
                added / held,
                json_bytes / held
            );
            per_event.push(added / held);
            json_per_event.push(json_bytes / held);
            total.push(added);
        }
        report.push(
            Entry {
                name: "webhooks-buffer".to_owned(),
                metric: "rss_bytes_per_buffered_event".to_owned(),
                unit: "bytes".to_owned(),
                higher_is_better: false,
                ours: median(&per_event),
                baseline: median(&json_per_event),
                baseline_label: "the event's JSON data (what the caller handed over)".to_owned(),
                params: json!({"buffer_capacity": capacity, "rounds": rounds, "rss_added_bytes": median(&total), "sqs": "moto behind FaultProxy, down (connections refused)"}),
            }
            .to_json(),
        );
    }
    if let Ok(Some(path)) = write_report(&report) {
        println!("wrote {}", path.display());
    }
}

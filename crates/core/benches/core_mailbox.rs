//! `core-mailbox`: request/response round trips per second through a supervised service
//! handle (`wharf_core::service`), against a bare tokio mpsc + oneshot pair, in one run.
//!
//! Run with `scripts/bench core-mailbox`; writes `$WHARF_BENCH_OUT` (default
//! `target/wharf-bench/core-mailbox.json`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::{mpsc, oneshot};
use wharf_core::service::{ServiceHandle, mailbox};
use wharf_core::supervisor::{ChildSpec, Started, Supervisor, SupervisorHandle};
use wharf_testkit::bench::{self, median};

const CAPACITY: usize = 1024;
const ROUNDS: usize = 7;

async fn supervised_counter() -> (ServiceHandle<u64, u64>, SupervisorHandle) {
    let (handle, mailbox) = mailbox::<u64, u64>("counter", CAPACITY);
    let spec = ChildSpec::new("counter", move |ctx| {
        let mailbox = mailbox.clone();
        async move {
            let mut inbox = mailbox.attach().await;
            let mut total = 0_u64;
            Ok::<_, wharf_core::Error>(Started::task(async move {
                while let Some(request) = inbox.recv_until(&ctx).await {
                    let (n, reply) = request.into_parts();
                    total = total.wrapping_add(n);
                    reply.send(total);
                }
                Ok::<_, wharf_core::Error>(())
            }))
        }
    });
    let sup = Supervisor::builder("bench")
        .child(spec)
        .start()
        .await
        .unwrap();
    (handle, sup)
}

type Bare = mpsc::Sender<(u64, oneshot::Sender<u64>)>;

fn bare_counter() -> Bare {
    let (tx, mut rx) = mpsc::channel::<(u64, oneshot::Sender<u64>)>(CAPACITY);
    tokio::spawn(async move {
        let mut total = 0_u64;
        while let Some((n, reply)) = rx.recv().await {
            total = total.wrapping_add(n);
            let _ = reply.send(total);
        }
    });
    tx
}

async fn bare_call(tx: &Bare, n: u64) -> u64 {
    let (reply_tx, reply_rx) = oneshot::channel();
    tx.send((n, reply_tx)).await.unwrap();
    reply_rx.await.unwrap()
}

/// Round trips per second for `callers` concurrent callers making `per_caller` calls each.
async fn run_wharf(handle: &ServiceHandle<u64, u64>, callers: usize, per_caller: usize) -> f64 {
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let handle = handle.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                std::hint::black_box(handle.call(1).await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (callers * per_caller) as f64 / began.elapsed().as_secs_f64()
}

async fn run_bare(tx: &Bare, callers: usize, per_caller: usize) -> f64 {
    let began = Instant::now();
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let tx = tx.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..per_caller {
                std::hint::black_box(bare_call(&tx, 1).await);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    (callers * per_caller) as f64 / began.elapsed().as_secs_f64()
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let results = runtime.block_on(async {
        let (handle, sup) = supervised_counter().await;
        let bare = bare_counter();
        let mut out = Vec::new();
        for (callers, per_caller) in [(1_usize, 100_000_usize), (16, 10_000)] {
            // Warm up both paths, then alternate rounds so drift hits both alike.
            run_wharf(&handle, callers, per_caller / 10).await;
            run_bare(&bare, callers, per_caller / 10).await;
            let (mut ours, mut base) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                ours.push(run_wharf(&handle, callers, per_caller).await);
                base.push(run_bare(&bare, callers, per_caller).await);
            }
            out.push((callers, per_caller, median(&ours), median(&base)));
        }
        sup.shutdown().await.unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        out
    });

    let entries: Vec<_> = results
        .iter()
        .map(|&(callers, per_caller, ours, base)| {
            json!({
                "name": format!("core-mailbox/{callers}-caller{}", if callers == 1 { "" } else { "s" }),
                "metric": "round_trips_per_second",
                "unit": "round trips/s",
                "higher_is_better": true,
                "ours": ours.round(),
                "baseline": base.round(),
                "baseline_label": "bare tokio mpsc + oneshot",
                "ratio": ours / base,
                "params": {
                    "callers": callers,
                    "round_trips_per_round": callers * per_caller,
                    "rounds": ROUNDS,
                    "statistic": "median of rounds",
                    "mailbox_capacity": CAPACITY,
                    "runtime": "tokio multi_thread, 2 workers",
                },
            })
        })
        .collect();

    println!(
        "{:<28} {:>16} {:>16} {:>7}",
        "benchmark", "wharf (rt/s)", "bare (rt/s)", "ratio"
    );
    for e in &entries {
        println!(
            "{:<28} {:>16} {:>16} {:>7.3}",
            e["name"].as_str().unwrap_or(""),
            e["ours"],
            e["baseline"],
            e["ratio"].as_f64().unwrap_or(0.0)
        );
    }
    let out = std::env::var(bench::OUT_VAR)
        .unwrap_or_else(|_| "target/wharf-bench/core-mailbox.json".to_owned());
    bench::write_report_to(std::path::Path::new(&out), &entries).unwrap();
    println!("wrote {out}");
}

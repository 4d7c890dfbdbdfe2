//! Benchmark `webhooks-throughput`: 20,000 webhook events into one SQS queue (moto, started by
//! wharf-testkit, or `WHARF_TEST_SQS_ENDPOINT`), the emitter against the original's approach (one
//! SendMessage per event from one worker, on raw aws-sdk-sqs), same server, same run.
//!
//! Metrics (medians over the rounds): `events_per_second` (from the first emit until SQS
//! confirmed the last event) and `events_per_request` (events per SQS request).
//!
//! moto recounts every message of a queue on each SendMessage (its `Queue.attributes`
//! computes the approximate counts), so its cost per event grows with the queue's depth,
//! which real SQS does not do: 20,000 events in one queue would measure moto's quadratic
//! scan, not the clients. So, for both sides alike, a purger empties the queue every 10 ms
//! (PurgeQueue; the bench starts moto with MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR=false
//! to allow it). Events are counted only when SQS confirmed them; that they arrive intact is
//! what the integration tests check.
//! Environment: `WHARF_BENCH_OUT` (JSON output path), `WHARF_BENCH_ROUNDS` (default 3),
//! `WHARF_BENCH_EVENTS` (default 20,000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_sqs::types::MessageAttributeValue;
use serde_json::json;
use wharf_testkit::bench::{self, median};
use wharf_webhooks_emitter::{Emitter, Event, FullPolicy};

const REGION: &str = "us-east-1";

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn raw_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .endpoint_url(endpoint)
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "bench", "bench", None, None, "bench",
        ))
        .timeout_config(
            aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(30))
                .build(),
        )
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

async fn new_queue(client: &aws_sdk_sqs::Client, prefix: &str) -> String {
    client
        .create_queue()
        .queue_name(wharf_testkit::unique_name(prefix))
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

fn data(i: usize) -> serde_json::Value {
    json!({
        "transactionId": format!("tx-{i:08}"),
        "amount": 12_345 + i,
        "currency": "CAD",
        "items": [{"sku": "SEAT-14C", "qty": 1}, {"sku": "BAG-1", "qty": 2}],
        "customer": {"id": format!("cust-{}", i % 977), "tier": "gold"},
    })
}

/// The original's approach: build the same envelope, one SendMessage per event, awaited in
/// turn by one worker.
async fn baseline(client: &aws_sdk_sqs::Client, queue_url: &str, events: usize) -> (f64, f64) {
    let start = Instant::now();
    for i in 0..events {
        let id = uuid::Uuid::new_v4().to_string();
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let body = json!({
            "id": id, "ts": ts, "providerId": "provider-1",
            "event": "transaction.created", "data": data(i),
        })
        .to_string();
        let attr = |v: &str| {
            MessageAttributeValue::builder()
                .data_type("String")
                .string_value(v)
                .build()
                .unwrap()
        };
        client
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .message_attributes("event", attr("transaction.created"))
            .message_attributes("id", attr(&id))
            .send()
            .await
            .unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    (events as f64 / secs, 1.0)
}

async fn ours(endpoint: &str, queue_url: &str, events: usize) -> (f64, f64) {
    let emitter = Emitter::builder()
        .queue_url(queue_url)
        .endpoint_url(endpoint)
        .region(REGION)
        .credentials("bench", "bench")
        .full_policy(FullPolicy::Wait(Duration::from_secs(60)))
        .max_in_flight(env_usize("WHARF_BENCH_IN_FLIGHT", 4))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    let start = Instant::now();
    for i in 0..events {
        let e = Event::from_json("provider-1", "transaction.created", data(i));
        emitter.emit(e).await.unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(300);
    while emitter.stats().sent + emitter.stats().failed < events as u64 && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let stats = emitter.stats();
    assert_eq!(
        stats.sent, events as u64,
        "not every event was sent: {stats:?}"
    );
    emitter.shutdown().await;
    (
        events as f64 / secs,
        stats.sent as f64 / stats.requests.max(1) as f64,
    )
}

/// Empties the queue every 10 ms until stopped (see the module docs).
fn purger(
    client: aws_sdk_sqs::Client,
    queue_url: String,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<u64>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut failures = 0u64;
        loop {
            if client
                .purge_queue()
                .queue_url(&queue_url)
                .send()
                .await
                .is_err()
            {
                failures += 1;
            }
            tokio::select! {
                _ = &mut stopped => return failures,
                _ = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
    });
    (stop, task)
}

async fn with_purger<F: std::future::Future<Output = (f64, f64)>>(
    client: &aws_sdk_sqs::Client,
    queue_url: &str,
    run: F,
) -> (f64, f64) {
    let (stop, task) = purger(client.clone(), queue_url.to_string());
    let result = run.await;
    let _ = stop.send(());
    let failures = task.await.unwrap_or(0);
    if failures > 0 {
        println!("  note: {failures} PurgeQueue calls failed (external moto with strict purge?)");
    }
    result
}

struct Figures {
    ours_eps: Vec<f64>,
    ours_epr: Vec<f64>,
    base_eps: Vec<f64>,
}

/// Runs `rounds` rounds of both sides against `endpoint`, each on fresh queues.
async fn scenario(label: &str, endpoint: &str, events: usize, rounds: usize) -> Figures {
    let client = raw_client(endpoint);
    let mut f = Figures {
        ours_eps: vec![],
        ours_epr: vec![],
        base_eps: vec![],
    };
    for round in 1..=rounds {
        let q = new_queue(&client, "bench-ours").await;
        let (eps, epr) = with_purger(&client, &q, ours(endpoint, &q, events)).await;
        let q = new_queue(&client, "bench-base").await;
        let (beps, _) = with_purger(&client, &q, baseline(&client, &q, events)).await;
        println!(
            "{label} round {round}/{rounds}: emitter {eps:.0} events/s ({epr:.2} events/request); \
             one SendMessage per event {beps:.0} events/s ({:.1}x)",
            eps / beps
        );
        f.ours_eps.push(eps);
        f.ours_epr.push(epr);
        f.base_eps.push(beps);
    }
    f
}

fn main() {
    let events = env_usize("WHARF_BENCH_EVENTS", 20_000);
    let rounds = env_usize("WHARF_BENCH_ROUNDS", 3).max(1);
    let rtt_events = env_usize("WHARF_BENCH_RTT_EVENTS", 2_000);
    // SAFETY: single-threaded here (no runtime, no other thread started yet); the variable is
    // read by the moto child processes only.
    unsafe { std::env::set_var("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false") };
    let (_owned, endpoint) = match std::env::var(wharf_testkit::BrokerKind::Sqs.override_var()) {
        Ok(e) if !e.is_empty() => (None, e),
        _ => {
            let moto = wharf_testkit::Moto::start().expect("moto (run scripts/install)");
            let e = moto.endpoint();
            (Some(moto), e)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = rt.block_on(scenario("loopback", &endpoint, events, rounds));

    // The same comparison with a network round trip like a real SQS endpoint's: moto behind
    // the testkit's FaultProxy adding 5 ms per chunk each way (about 10 ms per request).
    let rtt = if rtt_events > 0 {
        let moto = wharf_testkit::Moto::start_behind_proxy().expect("moto behind a proxy");
        moto.proxy()
            .expect("a proxy")
            .set_latency(Duration::from_millis(5));
        Some(rt.block_on(scenario("10 ms RTT", &moto.endpoint(), rtt_events, rounds)))
    } else {
        None
    };

    let label = "original's approach: one SendMessage per event, one worker, raw aws-sdk-sqs";
    let emitter_cfg = "defaults: linger 5 ms, 4 requests in flight; FullPolicy::Wait";
    let server = "moto 5.2.5 (wharf-testkit) on loopback; queue purged every 10 ms on both sides";
    let (eps, beps, epr) = (
        median(&direct.ours_eps),
        median(&direct.base_eps),
        median(&direct.ours_epr),
    );
    let params =
        json!({"events": events, "rounds": rounds, "server": server, "emitter": emitter_cfg});
    let mut results = vec![
        json!({"name": "webhooks-throughput", "metric": "events_per_second", "unit": "events/s",
         "higher_is_better": true, "ours": eps, "baseline": beps, "baseline_label": label,
         "ratio": eps / beps, "params": params}),
        json!({"name": "webhooks-throughput", "metric": "events_per_request", "unit": "events/request",
         "higher_is_better": true, "ours": epr, "baseline": 1.0, "baseline_label": label,
         "ratio": epr, "params": params}),
    ];
    println!();
    println!(
        "{:<28} {:>12} {:>12} {:>8}",
        "metric (median)", "emitter", "baseline", "ratio"
    );
    println!(
        "{:<28} {:>12.0} {:>12.0} {:>7.1}x",
        "events_per_second",
        eps,
        beps,
        eps / beps
    );
    println!(
        "{:<28} {:>12.2} {:>12.2} {:>7.1}x",
        "events_per_request", epr, 1.0, epr
    );
    if let Some(rtt) = rtt {
        let (eps, beps) = (median(&rtt.ours_eps), median(&rtt.base_eps));
        let params = json!({"events": rtt_events, "rounds": rounds, "emitter": emitter_cfg,
            "server": "moto 5.2.5 behind wharf-testkit's FaultProxy with 5 ms latency per chunk each way; queue purged every 10 ms"});
        results.push(
            json!({"name": "webhooks-throughput", "metric": "events_per_second_10ms_rtt",
            "unit": "events/s", "higher_is_better": true, "ours": eps, "baseline": beps,
            "baseline_label": label, "ratio": eps / beps, "params": params}),
        );
        println!(
            "{:<28} {:>12.0} {:>12.0} {:>7.1}x",
            "events_per_second_10ms_rtt",
            eps,
            beps,
            eps / beps
        );
    }
    if let Some(path) = bench::write_report(&results).unwrap() {
        println!("wrote {}", path.display());
    }
}

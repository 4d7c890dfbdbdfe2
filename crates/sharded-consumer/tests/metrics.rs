//! The consumer's counts reach the `metrics` facade (a recorder installed for this binary).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use tokio_util::sync::CancellationToken;
use wharf_core::Backoff;
use wharf_core::transport::{MemoryQueue, Message, Publisher};
use wharf_sharded_consumer::{Handler, Incoming, Outcome, RetryPolicy, ShardKey, ShardedConsumer};

/// Fails every message of key "bad"; acks the others.
struct Picky;

impl Handler for Picky {
    type State = ();
    type Signal = std::convert::Infallible;
    type Reply = ();
    type Error = String;

    async fn init(&self, _key: &ShardKey) -> Result<(), String> {
        Ok(())
    }
    async fn handle_message(&self, _: &mut (), msg: &Incoming<'_>) -> Result<Outcome, String> {
        match msg.key().as_str() {
            Some("bad") => Err("bad key".into()),
            _ => Ok(Outcome::Ack),
        }
    }
    async fn handle_signal(&self, _: &mut (), signal: Self::Signal) -> Result<(), String> {
        match signal {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_and_gauges_reach_the_metrics_facade_labelled_with_the_consumer() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let queue = MemoryQueue::new(64);
    let consumer = ShardedConsumer::builder("metered", Picky)
        .discard_dead_letters()
        .retry(RetryPolicy::new(2, Backoff::none()))
        .idle_timeout(Some(Duration::from_millis(20)))
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let (c, s, stop) = (consumer.clone(), queue.source(), stop.clone());
        async move { c.run(s, stop).await }
    });
    let publisher = queue.publisher();
    for key in ["a", "b", "a", "bad"] {
        publisher
            .publish(Message::new("m").with_key(key))
            .await
            .unwrap();
    }
    publisher.publish(Message::new("no key")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while queue.stats().acked < 5 || consumer.stats().evicted < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("handled and evicted");
    stop.cancel();
    run.await.unwrap().unwrap();

    let values: HashMap<String, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(key, ..)| {
            key.key()
                .labels()
                .any(|l| l.key() == "consumer" && l.value() == "metered")
        })
        .map(|(key, _, _, value)| (key.key().name().to_owned(), value))
        .collect();
    let counter = |name: &str| match values.get(name) {
        Some(DebugValue::Counter(n)) => *n,
        other => panic!("{name}: {other:?} in {:?}", values.keys()),
    };
    assert_eq!(counter("wharf_sharded_acked_total"), 3);
    assert_eq!(
        counter("wharf_sharded_keys_started_total"),
        3 + 1,
        "a, b, bad twice"
    );
    assert_eq!(counter("wharf_sharded_key_restarts_total"), 2);
    assert_eq!(counter("wharf_sharded_retries_total"), 1);
    assert_eq!(
        counter("wharf_sharded_dead_lettered_total"),
        2,
        "bad, and the keyless one"
    );
    assert_eq!(counter("wharf_sharded_rejected_keys_total"), 1);
    assert!(counter("wharf_sharded_keys_evicted_total") >= 2);
    match values.get("wharf_sharded_keys_active") {
        Some(DebugValue::Gauge(g)) => assert_eq!(g.into_inner(), 0.0, "every actor stopped"),
        other => panic!("keys_active: {other:?}"),
    }
    assert!(values.contains_key("wharf_sharded_in_flight"));
    assert!(values.contains_key("wharf_sharded_key_queue_depth_max"));
}

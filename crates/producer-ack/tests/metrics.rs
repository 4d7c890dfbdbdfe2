//! The producer's metrics through the `metrics` facade, against a real broker (pulsar-lite):
//! the window's size and how much of it is in use, and the messages counted through it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use wharf_producer_ack::{Producer, PulsarMessage, metrics as m};
use wharf_testkit::eventually;

/// Gauges (their last value) and counters (added since the last look) of topic `topic`.
fn values(snapshotter: &Snapshotter, topic: &str) -> HashMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            k.key()
                .labels()
                .any(|l| l.key() == "topic" && l.value() == topic)
        })
        .filter_map(|(k, _, _, v)| {
            let value = match v {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => c as f64,
                DebugValue::Histogram(_) => return None,
            };
            Some((k.key().name().to_owned(), value))
        })
        .collect()
}

#[tokio::test]
async fn the_window_its_use_and_the_messages_through_it_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let topic = common::topic("metrics");
    let producer = Producer::builder(common::shared_url(), &topic)
        .window(16)
        .send_timeout(Duration::from_secs(10))
        .start()
        .expect("valid settings");
    for i in 0..5u32 {
        producer
            .produce(PulsarMessage::new(i.to_be_bytes().to_vec()))
            .await
            .expect("stored");
    }
    let seen = values(&snapshotter, &topic);
    assert_eq!(seen.get(m::WINDOW), Some(&16.0), "{seen:?}");
    assert_eq!(seen.get(m::PRODUCED), Some(&5.0), "{seen:?}");
    assert_eq!(seen.get(m::ACKNOWLEDGED), Some(&5.0), "{seen:?}");
    // Every receipt is in: the window empties (the gauge is set as the task resolves them).
    eventually(
        "the pending gauge to read 0",
        Duration::from_secs(5),
        || async { values(&snapshotter, &topic).get(m::PENDING) == Some(&0.0) },
    )
    .await
    .unwrap();
    assert_eq!(producer.pending(), 0);
}

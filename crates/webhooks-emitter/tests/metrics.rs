//! The documented metrics, read through a recorder installed for this test binary only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use serde_json::json;
use wharf_webhooks_emitter::{Event, metrics as m};

#[tokio::test]
async fn counters_gauge_and_batch_size_histogram_are_exported_with_the_queue_label() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let endpoint = wharf_testkit::sqs().unwrap().address().to_string();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "metrics", false, &[]).await;
    let emitter = builder(&endpoint, &url)
        .linger(Duration::from_millis(200))
        .build()
        .unwrap();
    emitter.start().await.unwrap();
    for i in 0..12 {
        emitter
            .emit(Event::new("p", "e", json!({"i": i})).unwrap())
            .await
            .unwrap();
    }
    let bad = Event::new("p", "e", json!({}))
        .unwrap()
        .rejected_by_sqs_for_tests();
    assert!(emitter.emit_sync(bad).await.is_err());
    emitter.shutdown().await;

    let mut seen = std::collections::HashMap::new();
    for (key, _, _, value) in snapshotter.snapshot().into_vec() {
        let labels: Vec<(String, String)> = key
            .key()
            .labels()
            .map(|l| (l.key().to_string(), l.value().to_string()))
            .collect();
        assert!(labels.contains(&("queue".to_string(), emitter.queue_name().to_string())));
        seen.insert(key.key().name().to_string(), value);
    }
    assert_eq!(seen.get(m::EMITTED), Some(&DebugValue::Counter(13)));
    assert_eq!(seen.get(m::SENT), Some(&DebugValue::Counter(12)));
    assert_eq!(seen.get(m::FAILED), Some(&DebugValue::Counter(1)));
    assert_eq!(seen.get(m::REQUESTS), Some(&DebugValue::Counter(2)));
    match seen.get(m::BATCH_SIZE) {
        Some(DebugValue::Histogram(sizes)) => {
            let mut sizes: Vec<f64> = sizes.iter().map(|s| s.into_inner()).collect();
            sizes.sort_by(f64::total_cmp);
            assert_eq!(sizes, vec![3.0, 10.0]);
        }
        other => panic!("no batch size histogram: {other:?}"),
    }
    assert!(matches!(seen.get(m::BUFFERED), Some(DebugValue::Gauge(g)) if g.into_inner() == 0.0));
}

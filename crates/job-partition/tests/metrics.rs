//! Counters and histograms through the `metrics` facade, per partition, queue and state
//! (the queue depth gauges are in `queue_depth.rs`: a snapshot drains the counters, so
//! each binary holds one test that reads them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use wharf_job_partition::{Registry, Worker, metrics as m};

#[tokio::test]
async fn jobs_are_counted_per_partition_queue_and_state() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();

    let jobs = jobs().await;
    let p = partition("metrics");
    register_client(&p, &jobs);
    let ok = Record::default();
    let failing = Record {
        fail_times: 9,
        attempts: Some(2),
        ..Default::default()
    };
    let dup = Record {
        qkey: Some("k".into()),
        sleep_ms: 200,
        ..Default::default()
    };
    jobs.enqueue_bulk(&p, "q", &[ok, failing, dup.clone(), dup])
        .await
        .unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();
    eventually(
        "2 completed and 1 dead",
        Duration::from_secs(10),
        || async {
            let c = jobs.counts(&p, "q").await.unwrap();
            c.completed_total == 2 && c.dead_total == 1
        },
    )
    .await
    .unwrap();
    w.shutdown().await;

    // One snapshot: taking one drains the recorder's counters.
    let snapshot = snapshotter.snapshot().into_vec();
    let count = |state: &str| -> u64 {
        snapshot
            .iter()
            .filter(|(k, _, _, _)| {
                let key = k.key();
                key.name() == m::JOBS
                    && key
                        .labels()
                        .any(|l| l.key() == "partition" && l.value() == p)
                    && key
                        .labels()
                        .any(|l| l.key() == "state" && l.value() == state)
            })
            .map(|(_, _, _, v)| match v {
                DebugValue::Counter(c) => *c,
                _ => 0,
            })
            .sum()
    };
    assert_eq!(count("enqueued"), 3);
    assert_eq!(count("duplicate"), 1);
    assert_eq!(count("completed"), 2);
    assert_eq!(count("retried"), 1);
    assert_eq!(count("dead"), 1);
}

//! The queue depth gauges (`wharf_jobs_queue_depth`, per partition, queue and state), as a
//! worker's lease thread publishes them, against Redis. In a binary of its own: a snapshot
//! of the debugging recorder drains its counters, which `metrics.rs` reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use wharf_job_partition::{Registry, Worker, metrics as m, testing};

/// The queue's depth gauges of partition `p`, by state, as last set (gauges keep their value
/// across snapshots).
fn depths(snapshotter: &Snapshotter, p: &str) -> std::collections::BTreeMap<String, f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, _, _, _)| {
            let key = k.key();
            key.name() == m::QUEUE_DEPTH
                && key
                    .labels()
                    .any(|l| l.key() == "partition" && l.value() == p)
                && key.labels().any(|l| l.key() == "queue" && l.value() == "q")
        })
        .filter_map(|(k, _, _, v)| {
            let state = k.key().labels().find(|l| l.key() == "state")?;
            match v {
                DebugValue::Gauge(g) => Some((state.value().to_owned(), g.into_inner())),
                _ => None,
            }
        })
        .collect()
}

#[tokio::test]
async fn a_worker_publishes_its_queues_depth_per_state_and_keeps_it_current() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let jobs = jobs().await;
    let p = partition("depth");
    register_client(&p, &jobs);
    let record = |n| Record {
        n,
        ..Default::default()
    };
    jobs.enqueue_bulk(&p, "q", &[record(0), record(1), record(2), record(3)])
        .await
        .unwrap();
    // Another worker holds two jobs (a long lease, never renewed) and sends one to the dead
    // set (2: dead); no job of the queue starts here (limit 0), so the figures stay put.
    let held = testing::claim(&jobs, &p, "q", 2, Duration::from_secs(60), "4242-holder")
        .await
        .unwrap();
    assert_eq!(held.len(), 2);
    assert_eq!(
        testing::fail(&jobs, &p, &held[0].0, &held[0].1)
            .await
            .unwrap(),
        2
    );
    jobs.set_limit(&p, "q", Some(0)).await.unwrap();
    jobs.enqueue_in(&p, "q", &record(4), Duration::from_secs(3600))
        .await
        .unwrap();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!(
        (c.queued, c.scheduled, c.parked, c.running, c.dead),
        (2, 1, 0, 1, 1),
        "{c:?}"
    );
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();

    let expected = |running: f64| {
        [
            ("dead", 1.0),
            ("parked", 0.0),
            ("queued", 2.0),
            ("running", running),
            ("scheduled", 1.0),
        ]
        .map(|(s, n)| (s.to_owned(), n))
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>()
    };
    // Set once a second by the worker's lease checks.
    eventually(
        "the depth gauges of every state",
        Duration::from_secs(5),
        || async { depths(&snapshotter, &p) == expected(1.0) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", depths(&snapshotter, &p)));

    // The held job finishes elsewhere: the next check publishes it.
    assert!(
        testing::complete(&jobs, &p, &held[1].0, &held[1].1)
            .await
            .unwrap()
    );
    eventually(
        "the running gauge to drop to 0",
        Duration::from_secs(5),
        || async { depths(&snapshotter, &p) == expected(0.0) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", depths(&snapshotter, &p)));
    w.shutdown().await;
}

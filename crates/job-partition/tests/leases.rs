//! A worker killed while it held every slot of a queue: its leases are kept (nothing else
//! starts until they expire, at most one lease), and the wait is visible: `Jobs::leases`,
//! and the `wharf_jobs_stalled_leases` gauges say which leases a dead worker holds and when
//! they free (the `wharf-jobs` crate's tests check its `leases` / `queues` print it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use wharf_job_partition::{Registry, Worker, metrics, testing};

/// The latest value of gauge `name` for partition `p`, if it was set since the last look.
fn gauge(snapshotter: &metrics_util::debugging::Snapshotter, name: &str, p: &str) -> Option<f64> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .find(|(k, _, _, _)| {
            k.key().name() == name
                && k.key()
                    .labels()
                    .any(|l| l.key() == "partition" && l.value() == p)
        })
        .and_then(|(_, _, _, v)| match v {
            DebugValue::Gauge(g) => Some(g.into_inner()),
            _ => None,
        })
}

#[tokio::test]
async fn leases_a_dead_worker_holds_are_shown_with_their_expiry_until_they_free_the_queue() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder.install().unwrap();
    let jobs = jobs().await;
    let p = partition("stalled");
    register_client(&p, &jobs);
    jobs.set_limit(&p, "q", Some(2)).await.unwrap();
    jobs.enqueue_bulk(
        &p,
        "q",
        &(0..4)
            .map(|n| Record {
                n,
                ..Default::default()
            })
            .collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    // A worker takes both slots and dies (it never renews: as after kill -9).
    let lease = Duration::from_secs(6);
    let dead = testing::claim(&jobs, &p, "q", 2, lease, "4242-deadbeef")
        .await
        .unwrap();
    assert_eq!(dead.len(), 2);
    // Due at once: a claim moves it to the ready jobs before it checks the limit, so seeing
    // it moved proves the live worker's claims ran while the dead worker's leases held.
    jobs.enqueue_in(
        &p,
        "q",
        &Record {
            n: 4,
            ..Default::default()
        },
        Duration::from_millis(1),
    )
    .await
    .unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 4)
        .build()
        .unwrap()
        .start();

    // The dead worker beat every lease / 10 (600 ms): stalled after five missed beats.
    let leases =
        wharf_testkit::eventually_some("both leases to show as stalled", lease, || async {
            let l = jobs.leases(&p, "q", 10).await.unwrap();
            (l.len() == 2 && l.iter().all(|l| l.stalled)).then_some(l)
        })
        .await
        .unwrap();
    for l in &leases {
        assert_eq!(l.worker, "4242-deadbeef");
        assert!(l.expires_in_ms > 0 && l.expires_in_ms <= 6_000, "{l:?}");
        assert!(l.renewed_ms_ago >= 3_000, "{l:?}");
    }
    // The documented bound: nothing else starts while the dead worker's leases hold, although
    // the live worker claims (it moved the due job to the ready ones).
    eventually(
        "a claim by the live worker (the due job moved to ready)",
        Duration::from_secs(3),
        || async { jobs.counts(&p, "q").await.unwrap().scheduled == 0 },
    )
    .await
    .unwrap();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert_eq!((c.running, c.completed_total, c.queued), (2, 0, 3), "{c:?}");

    // The live worker publishes it (gauges are set once a second by its lease checks).
    eventually(
        "the stalled-lease gauges",
        Duration::from_secs(3),
        || async { gauge(&snapshotter, metrics::STALLED_LEASES, &p) == Some(2.0) },
    )
    .await
    .unwrap();
    // At expiry the lease check puts the jobs back and they run: the queue moves on.
    eventually(
        "all five jobs to complete",
        lease + Duration::from_secs(10),
        || async { jobs.counts(&p, "q").await.unwrap().completed_total == 5 },
    )
    .await
    .unwrap();
    w.shutdown().await;
    assert!(jobs.leases(&p, "q", 10).await.unwrap().is_empty());
    assert_eq!(jobs.counts(&p, "q").await.unwrap().lease_expired_total, 2);
}

//! Connection faults between workers and Redis (wharf-testkit's FaultProxy): work resumes
//! by itself, nothing is lost, no key is left locked. Bounded in time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use wharf_job_partition::{Config, Jobs, Registry, Worker};

#[tokio::test]
async fn workers_ride_out_a_redis_outage_without_losing_or_locking_anything() {
    let redis = wharf_testkit::RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let config = Config::new(redis.url()).response_timeout(Duration::from_millis(500));
    let jobs = Jobs::connect(config).await.unwrap();
    let p = partition("outage");
    register_client(&p, &jobs);
    let total = 2_000u64;
    let batch: Vec<Record> = (0..total)
        .map(|n| Record {
            n,
            sleep_ms: 1,
            attempts: Some(50),
            xkey: (n % 4 == 0).then(|| format!("x{}", n % 10)),
            ..Default::default()
        })
        .collect();
    jobs.enqueue_bulk(&p, "q", &batch).await.unwrap();
    let w = Worker::builder(jobs.clone(), Registry::new().register::<Record>())
        .queue(&p, "q", 16)
        .lease(Duration::from_secs(3))
        .build()
        .unwrap()
        .start();
    eventually(
        "a quarter of the jobs to complete",
        Duration::from_secs(30),
        || async {
            jobs.counts(&p, "q")
                .await
                .is_ok_and(|c| c.completed_total >= total / 4)
        },
    )
    .await
    .unwrap();
    // Cut every connection and refuse new ones for a second and a half.
    proxy.down().unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proxy.restore().unwrap();

    let done = eventually("every job to complete", Duration::from_secs(60), || async {
        jobs.counts(&p, "q")
            .await
            .is_ok_and(|c| c.completed_total == total)
    })
    .await
    .is_ok();
    let c = jobs.counts(&p, "q").await.unwrap();
    assert!(done, "work did not resume after the outage: {c:?}");
    w.shutdown().await;
    assert_eq!(
        (c.running, c.queued, c.parked, c.dead),
        (0, 0, 0, 0),
        "{c:?}"
    );
    let runs: HashMap<u64, u64> =
        cmd(&jobs, redis::cmd("HGETALL").arg(format!("{{{p}}}:runs"))).await;
    assert_eq!(runs.len() as u64, total, "jobs lost");
    let locks: Vec<String> = cmd(&jobs, redis::cmd("KEYS").arg(format!("{{wharf:{p}}}:x*"))).await;
    assert!(locks.is_empty(), "execution keys left locked: {locks:?}");
}

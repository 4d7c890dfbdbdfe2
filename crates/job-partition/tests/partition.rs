//! A worker cut off from Redis by a silent partition (bytes held: no reset, no refusal)
//! stops its jobs before their leases can expire in Redis, so the worker that takes a job
//! over never runs it at the same time. The overlap is measured, not assumed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use wharf_job_partition::{Config, Jobs, Registry, Worker, testing};
use wharf_testkit::{RedisServer, eventually_some};

const LEASE: Duration = Duration::from_secs(3);
const BEAT: Duration = Duration::from_millis(250);
/// The longest response timeout `build()` accepts with this lease and heartbeat (margin
/// 600 ms + 1.9 s + 2 × 250 ms = 3 s): the cut-off worker's calls hang this long.
const CUT_OFF_TIMEOUT: Duration = Duration::from_millis(1900);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_behind_a_silent_partition_stops_its_job_before_another_worker_can_start_it() {
    let redis = RedisServer::start_behind_proxy().unwrap();
    let proxy = redis.proxy().unwrap();
    let cut_off = Jobs::connect(Config::new(redis.url()).response_timeout(CUT_OFF_TIMEOUT))
        .await
        .unwrap();
    let direct_url = format!("redis://{}/", redis.direct_addr());
    let direct = Jobs::connect(Config::new(direct_url).response_timeout(RESPONSE_TIMEOUT))
        .await
        .unwrap();
    let p = partition("silent");
    let job = Hold {
        key: "account-7".into(),
        first_ms: 60_000,
        again_ms: 200,
    };
    direct.enqueue(&p, "q", &job).await.unwrap();
    let worker = |jobs: &Jobs| {
        Worker::builder(jobs.clone(), Registry::new().register::<Hold>())
            .queue(&p, "q", 1)
            .lease(LEASE)
            .heartbeat_every(BEAT)
            .shutdown_grace(Duration::from_millis(100))
            .build()
            .unwrap()
            .start()
    };
    let a = worker(&cut_off);
    eventually(
        "worker A to start the job",
        Duration::from_secs(10),
        || async { runs(&p).len() == 1 },
    )
    .await
    .unwrap();
    // Let A renew the lease a few times, then the link goes silent.
    tokio::time::sleep(BEAT * 4).await;
    let held_at = Instant::now();
    proxy.hold();

    // Worker B, on a direct link, takes the job the moment its lease expires in Redis: the
    // test checks expired leases every 10 ms instead of B's once a second.
    let b = worker(&direct);
    let reaper = {
        let (direct, p) = (direct.clone(), p.clone());
        tokio::spawn(async move {
            loop {
                let _ = testing::reap(&direct, &p, "q").await;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    let second = eventually_some(
        "worker B to start the job after its lease expired",
        LEASE * 3,
        || async { runs(&p).into_iter().find(|r| r.attempt == 2) },
    )
    .await
    .unwrap();
    reaper.abort();
    // When did A's run really end? (If it still runs, that is the overlap growing.)
    let first = eventually_some("A's run to end", LEASE * 2, || async {
        runs(&p)
            .into_iter()
            .find(|r| r.attempt == 1 && r.ended.is_some())
    })
    .await
    .unwrap();
    let a_stopped = first.ended.unwrap();
    let overlap = a_stopped.saturating_duration_since(second.started);
    eprintln!(
        "A stopped {:?} after the link went silent; B started {:?} after it; overlap {overlap:?}",
        a_stopped - held_at,
        second.started - held_at,
    );
    assert_eq!(
        overlap,
        Duration::ZERO,
        "both workers ran the job of execution key account-7 at once for {overlap:?}"
    );
    assert!(first.aborted, "A's run was not aborted: {first:?}");
    // A stopped before the lease could expire: at most lease - margin after the last
    // heartbeat that reached Redis, which was before the hold.
    assert!(a_stopped - held_at < LEASE, "A stopped late");

    eventually("B to complete the job", Duration::from_secs(10), || async {
        direct.counts(&p, "q").await.unwrap().completed_total == 1
    })
    .await
    .unwrap();
    b.shutdown().await;
    proxy.release();
    tokio::time::timeout(Duration::from_secs(20), a.shutdown())
        .await
        .expect("A did not shut down");
    let c = direct.counts(&p, "q").await.unwrap();
    assert_eq!((c.completed_total, c.lease_expired_total), (1, 1), "{c:?}");
}

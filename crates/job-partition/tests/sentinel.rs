//! Redis Sentinel: the master is found through a sentinel, and after the master is killed
//! and the sentinel fails over to the replica, calls go on against the new master. The set
//! (a master, its replica, one sentinel) is wharf-testkit's `RedisSentinel`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::eventually;
use wharf_job_partition::{Config, Enqueued, Jobs};
use wharf_testkit::RedisSentinel;

#[tokio::test]
async fn the_master_is_found_through_sentinel_and_found_again_after_a_failover() {
    // Returns once the replica is linked and the sentinel knows it.
    let set = RedisSentinel::start(1).expect("a Redis Sentinel set (run scripts/install)");
    let config = Config::sentinel(set.sentinel_urls(), set.master_name())
        .response_timeout(Duration::from_millis(500))
        .connect_timeout(Duration::from_millis(500));
    let jobs = Jobs::connect(config).await.unwrap();
    let first = jobs
        .enqueue("sent", "q", &common::Record::default())
        .await
        .unwrap();
    assert!(matches!(first, Enqueued::Queued(_)));

    // Replication is asynchronous: wait until the replica really holds what the master has
    // (a `WAIT` from another connection proves nothing, it has no writes of its own to wait
    // for), then kill the master.
    assert!(
        eventually("the replica to sync", Duration::from_secs(20), || async {
            matches!(set.replica_caught_up(), Ok(true))
        })
        .await
        .is_ok(),
        "the replica did not sync"
    );
    set.current_master().unwrap().kill().unwrap();

    let recovered = eventually(
        "an enqueue to reach the new master",
        Duration::from_secs(40),
        || async {
            jobs.enqueue("sent", "q", &common::Record::default())
                .await
                .is_ok()
        },
    )
    .await
    .is_ok();
    assert!(
        recovered,
        "calls did not reach the new master after the failover"
    );
    let c = jobs.counts("sent", "q").await.unwrap();
    // (a retried enqueue may have been applied before its answer was lost: at least 2)
    assert!(c.queued >= 2, "{c:?}");
    assert!(
        jobs.job("sent", first.id()).await.unwrap().is_some(),
        "the job enqueued before the failover is gone"
    );
}

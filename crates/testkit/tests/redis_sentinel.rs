//! A Redis Sentinel set started by the kit: ready when it returns, a replica that catches
//! up, a failover on request and one after the master crashes, and nothing outlives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis::AsyncCommands;
use wharf_testkit::{RedisSentinel, eventually, unique_name};

const STEP: Duration = Duration::from_secs(10);
/// The sentinels deem a master down after 1 s, then elect a leader and promote the replica:
/// a few seconds; generous for a loaded machine.
const FAILOVER: Duration = Duration::from_secs(30);

#[tokio::test]
async fn the_sentinels_name_the_master_and_a_requested_failover_promotes_the_replica() {
    let set = RedisSentinel::start(3).unwrap();
    let [first, second] = set.servers();
    assert_eq!(set.sentinel_urls().len(), 3);
    assert_eq!(set.master_addr().unwrap(), first.direct_addr());
    let key = unique_name("sentinel");
    set_key(&first.url(), &key).await;
    eventually("the replica to catch up", STEP, || async {
        matches!(set.replica_caught_up(), Ok(true))
    })
    .await
    .unwrap();

    let promoted = set.failover(FAILOVER).unwrap();

    assert_eq!(promoted, second.direct_addr());
    assert_eq!(set.current_master().unwrap().port(), second.port());
    assert_eq!(get_key(&second.url(), &key).await, Some("written".into()));
}

#[tokio::test]
async fn a_crashed_master_is_replaced_by_its_replica() {
    let set = RedisSentinel::start(1).unwrap();
    let [first, second] = set.servers();

    set.current_master().unwrap().kill().unwrap();

    eventually("the sentinel to promote the replica", FAILOVER, || async {
        set.master_addr().ok() == Some(second.direct_addr())
    })
    .await
    .unwrap();
    assert!(!first.is_running());
    let key = unique_name("after-crash");
    set_key(&second.url(), &key).await;
}

#[test]
fn dropping_a_sentinel_set_kills_every_process() {
    let set = RedisSentinel::start(1).unwrap();
    let mut pids: Vec<u32> = set.servers().iter().map(|s| s.pid().unwrap()).collect();
    pids.extend(set.sentinels().iter().map(|s| s.pid().unwrap()));
    assert_eq!(pids.len(), 3);
    drop(set);
    for pid in pids {
        assert!(!process_exists(pid), "{pid} still running after drop");
    }
}

async fn connect(url: &str) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(url).unwrap();
    tokio::time::timeout(STEP, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap()
}

async fn set_key(url: &str, key: &str) {
    let mut con = connect(url).await;
    let () = tokio::time::timeout(STEP, con.set(key, "written"))
        .await
        .unwrap()
        .unwrap();
}

async fn get_key(url: &str, key: &str) -> Option<String> {
    let mut con = connect(url).await;
    tokio::time::timeout(STEP, con.get(key))
        .await
        .unwrap()
        .unwrap()
}

/// A live process that is not a zombie.
fn process_exists(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

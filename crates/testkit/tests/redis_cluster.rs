//! A Redis Cluster started by the kit: ready when it returns, its slots spread over every
//! node, a node that is killed and restarted rejoins, and nothing outlives it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use redis::AsyncCommands;
use wharf_testkit::{Error, RedisCluster, eventually, unique_name};

const STEP: Duration = Duration::from_secs(10);
/// A restarted node is back once the others see it again: within a few node timeouts (2 s).
const REJOIN: Duration = Duration::from_secs(30);

#[tokio::test]
async fn a_cluster_serves_keys_of_every_slot_spread_over_all_its_nodes() {
    let cluster = RedisCluster::start(3).unwrap();
    assert_eq!(cluster.urls().len(), 3);
    let client = redis::cluster::ClusterClient::new(cluster.urls()).unwrap();
    let mut con = tokio::time::timeout(STEP, client.get_async_connection())
        .await
        .unwrap()
        .unwrap();

    let prefix = unique_name("cluster");
    for n in 0..60 {
        let () = tokio::time::timeout(STEP, con.set(format!("{prefix}-{n}"), n))
            .await
            .unwrap()
            .unwrap();
    }
    for n in 0..60 {
        let got: i64 = tokio::time::timeout(STEP, con.get(format!("{prefix}-{n}")))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, n);
    }

    for node in cluster.nodes() {
        let keys = dbsize(&node.url()).await;
        assert!(keys > 0, "node {} holds none of the 60 keys", node.url());
    }
}

#[tokio::test]
async fn a_killed_node_is_missed_and_rejoins_when_restarted() {
    let cluster = RedisCluster::start(3).unwrap();
    assert!(cluster.is_ok());

    cluster.nodes()[2].kill().unwrap();
    assert!(!cluster.is_ok(), "a cluster with a dead node reports ok");

    cluster.nodes()[2].restart().unwrap();
    eventually("the restarted node to rejoin", REJOIN, || async {
        cluster.is_ok()
    })
    .await
    .unwrap();
}

#[test]
fn fewer_than_three_masters_are_refused_before_anything_starts() {
    let err = RedisCluster::start(2).unwrap_err();
    assert!(matches!(err, Error::Unsupported(_)), "{err:?}");
    assert!(err.to_string().contains("at least 3"), "{err}");
}

#[test]
fn dropping_a_cluster_kills_every_node() {
    let cluster = RedisCluster::start(3).unwrap();
    let pids: Vec<u32> = cluster.nodes().iter().map(|n| n.pid().unwrap()).collect();
    drop(cluster);
    for pid in pids {
        assert!(!process_exists(pid), "node {pid} still running after drop");
    }
}

async fn dbsize(url: &str) -> i64 {
    let client = redis::Client::open(url).unwrap();
    let mut con = tokio::time::timeout(STEP, client.get_multiplexed_async_connection())
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(STEP, redis::cmd("DBSIZE").query_async(&mut con))
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

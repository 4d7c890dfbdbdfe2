//! The same guarantees on a real 3-shard Redis Cluster (wharf-testkit's `RedisCluster`:
//! `redis-server --cluster-enabled yes` nodes joined with `redis-cli --cluster create`): each
//! partition's keys share a hash tag, so every script runs on one shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Record, eventually, partition, register_client};
use wharf_job_partition::{CancelOutcome, Config, Enqueued, Jobs, Registry, Worker};
use wharf_testkit::RedisCluster;

#[tokio::test]
async fn partitions_on_a_redis_cluster_keep_queue_keys_execution_keys_and_cancellation() {
    let cluster = RedisCluster::start(3).expect("a Redis Cluster (run scripts/install)");
    let jobs = Jobs::connect(Config::cluster(cluster.urls()))
        .await
        .unwrap();
    let parts: Vec<String> = (0..4).map(|_| partition("cluster")).collect();
    for p in &parts {
        register_client(p, &jobs);
        let batch: Vec<Record> = (0..50)
            .map(|n| Record {
                n,
                xkey: Some(format!("x{}", n % 3)),
                ..Default::default()
            })
            .collect();
        jobs.enqueue_bulk(p, "q", &batch).await.unwrap();
        let dup = Record {
            qkey: Some("once".into()),
            ..Default::default()
        };
        let first = jobs.enqueue(p, "held", &dup).await.unwrap();
        assert_eq!(
            jobs.enqueue(p, "held", &dup).await.unwrap(),
            Enqueued::Duplicate(first.id().to_owned())
        );
        assert_eq!(
            jobs.cancel(p, first.id()).await.unwrap(),
            CancelOutcome::Cancelled
        );
    }
    let mut builder = Worker::builder(jobs.clone(), Registry::new().register::<Record>());
    for p in &parts {
        builder = builder.queue(p, "q", 8);
    }
    let w = builder.build().unwrap().start();
    for p in &parts {
        let done = eventually("completed_total == 50", Duration::from_secs(30), || async {
            jobs.counts(p, "q").await.unwrap().completed_total == 50
        })
        .await
        .is_ok();
        assert!(
            done,
            "partition {p}: {:?}",
            jobs.counts(p, "q").await.unwrap()
        );
    }
    w.shutdown().await;
    let listed = jobs.partitions().await.unwrap();
    assert!(parts.iter().all(|p| listed.contains(p)));
}

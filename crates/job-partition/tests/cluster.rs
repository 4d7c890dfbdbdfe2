//! The same guarantees on a real 3-shard Redis Cluster (started here with `redis-server
//! --cluster-enabled yes` and `redis-cli --cluster create`): each partition's keys share a
//! hash tag, so every script runs on one shard.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{Record, eventually, partition, register_client};
use wharf_job_partition::{CancelOutcome, Config, Enqueued, Jobs, Registry, Worker};

struct Cluster {
    nodes: Vec<Child>,
    urls: Vec<String>,
    _dir: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            let _ = n.kill();
            let _ = n.wait();
        }
    }
}

fn redis_bin(name: &str) -> String {
    let local = format!("{}/../../.wharf/bin/{name}", env!("CARGO_MANIFEST_DIR"));
    if std::path::Path::new(&local).exists() {
        local
    } else {
        name.to_owned()
    }
}

fn start_cluster() -> Cluster {
    let ports: Vec<u16> = (0..3)
        .map(|_| {
            TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("wharf-jobs-cluster-{}", std::process::id()));
    let mut nodes = Vec::new();
    for p in &ports {
        let d = dir.join(p.to_string());
        std::fs::create_dir_all(&d).unwrap();
        nodes.push(
            Command::new(redis_bin("redis-server"))
                .args([
                    "--port",
                    &p.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--cluster-enabled",
                    "yes",
                ])
                .args([
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-node-timeout",
                    "2000",
                ])
                .arg("--dir")
                .arg(&d)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start redis-server"),
        );
    }
    let t = Instant::now();
    for p in &ports {
        while std::net::TcpStream::connect(("127.0.0.1", *p)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let status = Command::new(redis_bin("redis-cli"))
        .args(["--cluster", "create"])
        .args(&addrs)
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "redis-cli --cluster create failed");
    let urls = ports
        .iter()
        .map(|p| format!("redis://127.0.0.1:{p}/"))
        .collect();
    // Wait until every node agrees the cluster is up.
    for p in &ports {
        loop {
            let out = Command::new(redis_bin("redis-cli"))
                .args(["-p", &p.to_string(), "cluster", "info"])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).contains("cluster_state:ok") {
                break;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "cluster did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Cluster {
        nodes,
        urls,
        _dir: dir,
    }
}

#[tokio::test]
async fn partitions_on_a_redis_cluster_keep_queue_keys_execution_keys_and_cancellation() {
    let cluster = start_cluster();
    let jobs = Jobs::connect(Config::cluster(cluster.urls.clone()))
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

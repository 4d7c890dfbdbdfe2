//! A partitioned topic: messages are routed by key, every message reports its partition, and
//! the order per key holds. pulsar-lite is started here with `default_partitions = 3` (the
//! testkit's brokers create unpartitioned topics).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use wharf_producer_ack::{Producer, PulsarMessage};

struct PartitionedBroker {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl PartitionedBroker {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("pulsar-lite.toml");
        std::fs::write(
            &config,
            "default_partitions = 3\n[metrics]\nenabled = false\n",
        )
        .unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let binary =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.wharf/bin/pulsar-lite");
        let child = Command::new(binary)
            .arg("--config")
            .arg(&config)
            .arg("--addr")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--db-path")
            .arg(dir.path().join("data"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pulsar-lite is installed by scripts/install");
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "pulsar-lite did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        PartitionedBroker {
            child,
            url: format!("pulsar://127.0.0.1:{port}"),
            _dir: dir,
        }
    }
}

impl Drop for PartitionedBroker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_topic_routes_by_key_and_keeps_each_keys_order() {
    let broker = PartitionedBroker::start();
    let topic = common::topic("partitioned");
    let producer = Producer::builder(&broker.url, &topic)
        .send_timeout(Duration::from_secs(10))
        .start()
        .unwrap();
    let mut partition_of_key: BTreeMap<String, i32> = BTreeMap::new();
    // Five keys over three partitions: a key's messages are never a multiple of the
    // partition count apart, so routing that ignores the key (round robin) cannot pass.
    for i in 0..60u32 {
        let key = format!("k{}", i % 5);
        let id = producer
            .produce(PulsarMessage::new(format!("{key}:{i}")).with_key(key.clone()))
            .await
            .expect("stored");
        let partition = id
            .partition
            .expect("a partitioned topic reports the partition");
        assert!((0..3).contains(&partition), "{id}");
        let first = *partition_of_key.entry(key.clone()).or_insert(partition);
        assert_eq!(first, partition, "one key, one partition");
    }
    let read = common::read_back(&broker.url, &topic, 60, Duration::from_secs(5)).await;
    assert_eq!(read.len(), 60);
    let mut per_key: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for message in read {
        let text = String::from_utf8(message.payload).unwrap();
        let (key, i) = text.split_once(':').unwrap();
        per_key
            .entry(key.to_owned())
            .or_default()
            .push(i.parse().unwrap());
    }
    for (key, indexes) in per_key {
        assert!(
            indexes.windows(2).all(|w| w[0] < w[1]),
            "{key}: {indexes:?}"
        );
        assert_eq!(indexes.len(), 12);
    }
}

/// On a partitioned topic the connection check once pinged every partition's producer at once
/// over their one connection; the `pulsar` crate keeps a single ping waiting per connection,
/// so all but one failed as `Disconnected` and every check (4 a second) broke a healthy
/// connection: found by the nemesis run (`tests/nemesis.rs`), where producers reconnected
/// about 3 times a second without any fault. Over 3 s of checks, nothing may reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_producer_keeps_a_healthy_connection_through_its_checks() {
    let broker = PartitionedBroker::start();
    let topic = common::topic("partitioned-healthy");
    // Checks every 250 ms (send timeout / 8, at most 250 ms), each allowed 2 s (send timeout
    // / 4): only a failed check, not a slow answer on a loaded machine, gives the connection up.
    let producer = Producer::builder(&broker.url, &topic)
        .send_timeout(Duration::from_secs(8))
        .start()
        .unwrap();
    producer.produce("first").await.expect("stored");
    // A dozen checks.
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    let mut i = 0u32;
    while tokio::time::Instant::now() < until {
        i += 1;
        producer
            .produce(PulsarMessage::new(format!("m{i}")).with_key(format!("k{}", i % 5)))
            .await
            .expect("stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        producer.reconnects(),
        0,
        "a healthy connection to a partitioned topic was given up"
    );
    assert!(producer.is_connected());
}

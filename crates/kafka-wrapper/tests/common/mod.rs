//! Helpers shared by the integration tests (Tansu from wharf-testkit).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::Duration;

use wharf_kafka_wrapper::{KafkaConfig, KafkaWrapper, TopicSpec};

/// Bootstrap servers of the test binary's shared Tansu (or `WHARF_TEST_KAFKA_BROKERS`).
pub fn brokers() -> String {
    wharf_testkit::kafka()
        .expect("start Tansu (run scripts/install)")
        .address()
        .to_owned()
}

/// The consumers' `session.timeout.ms` in [`config`]: a group's first join waits about half
/// of it on Tansu, and a member that does not leave is evicted after it.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

/// Logs to the test's output as `RUST_LOG` says (nothing by default); once per test binary.
pub fn trace() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "off".into()))
        .with_test_writer()
        .try_init();
}

/// A config tuned for tests: quick group joins and quick health checks.
pub fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .set(
            "session.timeout.ms",
            SESSION_TIMEOUT.as_millis().to_string(),
        )
        .set("heartbeat.interval.ms", "500")
        .health_interval(Duration::from_millis(500))
        .rebuild_backoff(Duration::from_millis(200), Duration::from_secs(2))
}

pub fn topic(prefix: &str) -> String {
    wharf_testkit::unique_name(prefix)
}

/// Starts a wrapper and creates `topic` with `partitions` partitions.
pub async fn wrapper_with_topic(brokers: &str, topic: &str, partitions: i32) -> KafkaWrapper {
    let w = KafkaWrapper::start(config(brokers))
        .await
        .expect("start wrapper");
    w.admin()
        .ensure_topics(&[TopicSpec::new(topic, partitions)])
        .await
        .expect("create topic");
    w
}

/// Reads a consumer group's committed offset of one partition, the way another process
/// would (a client of its own that does not join the group).
pub struct Committed {
    consumer: rdkafka::consumer::BaseConsumer,
    topic: String,
    partition: i32,
}

impl Committed {
    pub fn new(brokers: &str, group: &str, topic: &str, partition: i32) -> Self {
        let consumer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .expect("a consumer to read committed offsets");
        Self {
            consumer,
            topic: topic.to_owned(),
            partition,
        }
    }

    /// The committed offset (`None` before the first commit). Blocks up to 10 s.
    pub fn get(&self) -> Option<i64> {
        use rdkafka::consumer::Consumer as _;
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition(&self.topic, self.partition);
        let got = self
            .consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        match got
            .find_partition(&self.topic, self.partition)
            .map(|e| e.offset())
        {
            Some(rdkafka::Offset::Offset(o)) => Some(o),
            _ => None,
        }
    }
}

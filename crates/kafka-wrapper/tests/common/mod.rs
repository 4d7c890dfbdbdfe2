//! Helpers shared by the integration tests (Tansu from wharf-testkit).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::Duration;

use wharf_kafka_wrapper::{KafkaConfig, KafkaWrapper, TopicSpec};

/// Bootstrap servers of the test binary's shared Tansu (or `WHARF_KAFKA_BROKERS`).
pub fn brokers() -> String {
    wharf_testkit::kafka()
        .expect("start Tansu (run scripts/install)")
        .address()
        .to_owned()
}

/// A config tuned for tests: quick group joins and quick health checks.
pub fn config(brokers: &str) -> KafkaConfig {
    KafkaConfig::new(brokers)
        .set("session.timeout.ms", "6000")
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

/// Polls `check` every 50 ms until it is true or `within` passes.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    check()
}

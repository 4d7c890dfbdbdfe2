//! Helpers shared by the integration tests: brokers from wharf-testkit and a Pulsar consumer
//! that reads a topic back.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use wharf_producer_ack::MessageId;

/// A message as read back by a consumer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadBack {
    /// Where the broker stored it, as the consumer saw it.
    pub message_id: MessageId,
    pub payload: Vec<u8>,
    pub key: Option<String>,
    pub properties: BTreeMap<String, String>,
    pub event_time: Option<u64>,
    pub ordering_key: Option<Vec<u8>>,
}

pub fn topic(prefix: &str) -> String {
    format!(
        "persistent://public/default/{}",
        wharf_testkit::unique_name(prefix)
    )
}

/// The shared broker's URL.
pub fn shared_url() -> String {
    wharf_testkit::pulsar()
        .expect("pulsar-lite starts")
        .address()
        .to_owned()
}

/// The official Python client, installed by `benches/install_pulsar_client.sh` (run here on
/// first use when missing).
pub fn python() -> std::path::PathBuf {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let python = root.join("../../.wharf/venv-pulsar-client/bin/python");
    if !python.exists() {
        let status = std::process::Command::new("bash")
            .arg(root.join("benches/install_pulsar_client.sh"))
            .status()
            .expect("run install_pulsar_client.sh");
        assert!(status.success(), "installing pulsar-client failed");
    }
    python
}

/// Reads the topic from the earliest message with the official client (the `pulsar` crate's
/// consumer cannot decode pulsar-lite's message frames) until `expected` messages arrived or
/// `quiet` passes with nothing new.
pub async fn read_back(url: &str, topic: &str, expected: usize, quiet: Duration) -> Vec<ReadBack> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/read_topic.py");
    let args = (
        python(),
        script,
        url.to_owned(),
        topic.to_owned(),
        expected,
        quiet.as_secs_f64(),
    );
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(args.0)
            .arg(args.1)
            .arg(args.2)
            .arg(args.3)
            .arg(args.4.to_string())
            .arg(args.5.to_string())
            .output()
            .expect("run read_topic.py")
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "read_topic.py failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            let hex = |v: &serde_json::Value| v.as_str().map(decode_hex);
            let id = &v["message_id"];
            let non_negative = |v: &serde_json::Value| v.as_i64().filter(|v| *v >= 0);
            ReadBack {
                message_id: MessageId {
                    ledger_id: id["ledger_id"].as_u64().unwrap(),
                    entry_id: id["entry_id"].as_u64().unwrap(),
                    partition: non_negative(&id["partition"]).map(|p| p as i32),
                    batch_index: non_negative(&id["batch_index"]).map(|b| b as i32),
                },
                payload: hex(&v["payload"]).unwrap_or_default(),
                key: v["key"].as_str().map(str::to_owned),
                properties: v["properties"]
                    .as_object()
                    .map(|o| {
                        o.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                event_time: v["event_time"].as_u64(),
                ordering_key: hex(&v["ordering_key"]),
            }
        })
        .collect()
}

fn decode_hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Logs to the test's output as `RUST_LOG` says (nothing without it), the `pulsar` crate's
/// `log` records included: the evidence when a fault test fails.
pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

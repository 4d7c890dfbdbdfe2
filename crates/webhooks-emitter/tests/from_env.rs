//! `Emitter::from_env`: the queue from SQS_QUEUE_URL, region, endpoint and credentials from
//! the standard AWS chain. One test in its own binary, because it sets process variables.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use wharf_webhooks_emitter::{Emitter, Event};

#[tokio::test]
async fn from_env_reads_the_queue_url_and_the_standard_aws_chain() {
    let endpoint = wharf_testkit::sqs().unwrap().address().to_string();
    let sqs = raw_client(&endpoint).await;
    let url = create_queue(&sqs, "fromenv", false, &[]).await;
    // SAFETY: the only test of this binary; no other thread reads or writes the
    // environment while these are set (the testkit's spawner is idle once moto runs).
    unsafe {
        std::env::set_var("SQS_QUEUE_URL", &url);
        std::env::set_var("AWS_ENDPOINT_URL_SQS", &endpoint);
        std::env::set_var("AWS_REGION", REGION);
        std::env::set_var("AWS_ACCESS_KEY_ID", "from-env");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "from-env-secret");
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let emitter = Emitter::from_env().unwrap();
    assert!(emitter.is_enabled());
    emitter.start().await.unwrap();
    let sent = emitter
        .emit_sync_timeout(
            Event::new("p", "env.checked", json!({})).unwrap(),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let msgs = receive(&sqs, &url, 1, Duration::from_secs(10)).await;
    assert_eq!(msgs[0].message_id(), Some(sent.message_id.as_str()));
    emitter.shutdown().await;
}

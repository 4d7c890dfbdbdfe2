//! SQS (moto): the shared endpoint and an owned server answer `aws-sdk-sqs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use aws_config::BehaviorVersion;
use aws_sdk_sqs::config::{Credentials, Region};
use wharf_testkit::{Moto, unique_name};

const STEP: Duration = Duration::from_secs(15);

async fn client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(
            "test",
            "test",
            None,
            None,
            "wharf-testkit",
        ))
        .load()
        .await;
    aws_sdk_sqs::Client::new(&config)
}

/// Creates a queue, sends one message, receives it back; returns the body.
async fn round_trip(client: &aws_sdk_sqs::Client) -> String {
    let created = tokio::time::timeout(
        STEP,
        client
            .create_queue()
            .queue_name(unique_name("smoke"))
            .send(),
    )
    .await
    .expect("CreateQueue timed out")
    .unwrap();
    let queue_url = created.queue_url().unwrap().to_owned();

    let sent = tokio::time::timeout(
        STEP,
        client
            .send_message()
            .queue_url(&queue_url)
            .message_body("hello from wharf")
            .send(),
    )
    .await
    .expect("SendMessage timed out")
    .unwrap();
    assert!(sent.message_id().is_some());

    let received = tokio::time::timeout(
        STEP,
        client
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(1)
            .wait_time_seconds(1)
            .send(),
    )
    .await
    .expect("ReceiveMessage timed out")
    .unwrap();
    received.messages()[0].body().unwrap().to_owned()
}

#[tokio::test]
async fn the_shared_sqs_endpoint_creates_queues_and_round_trips_a_message() {
    let sqs = wharf_testkit::sqs().unwrap();
    let client = client(sqs.address()).await;

    assert_eq!(round_trip(&client).await, "hello from wharf");
}

#[tokio::test]
async fn an_sqs_behind_the_proxy_is_reached_through_it_with_added_latency() {
    let sqs = Moto::start_behind_proxy().unwrap();
    let proxy = sqs.proxy().unwrap();
    let client = client(&sqs.endpoint()).await;
    assert_eq!(round_trip(&client).await, "hello from wharf");
    assert!(proxy.connections_accepted() >= 1);

    proxy.set_latency(Duration::from_millis(300));
    let started = Instant::now();
    tokio::time::timeout(STEP, client.list_queues().send())
        .await
        .unwrap()
        .unwrap();

    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn an_owned_moto_answers_again_on_the_same_endpoint_after_a_restart() {
    let sqs = Moto::start().unwrap();
    let endpoint = sqs.endpoint();
    let client = client(&endpoint).await;
    assert_eq!(round_trip(&client).await, "hello from wharf");

    sqs.kill().unwrap();
    assert!(
        tokio::time::timeout(STEP, client.list_queues().send())
            .await
            .unwrap()
            .is_err(),
        "moto answered while killed"
    );
    sqs.restart().unwrap();

    assert_eq!(sqs.endpoint(), endpoint);
    assert_eq!(round_trip(&client).await, "hello from wharf");
}

//! Pulsar (pulsar-lite): the shared broker and owned brokers answer the `pulsar` crate.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::TryStreamExt;
use pulsar::consumer::InitialPosition;
use pulsar::{Consumer, ConsumerOptions, Pulsar, SubType, TokioExecutor};
use wharf_testkit::{PulsarLite, unique_name};

const MESSAGES: usize = 20;
const STEP: Duration = Duration::from_secs(15);

async fn client(url: &str) -> Pulsar<TokioExecutor> {
    tokio::time::timeout(STEP, Pulsar::builder(url, TokioExecutor).build())
        .await
        .expect("connecting timed out")
        .unwrap()
}

fn topic_name() -> String {
    format!("persistent://public/default/{}", unique_name("smoke"))
}

/// Sends MESSAGES messages, each acknowledged by the broker before the next.
async fn produce(client: &Pulsar<TokioExecutor>, topic: &str) {
    let mut producer = tokio::time::timeout(STEP, client.producer().with_topic(topic).build())
        .await
        .expect("creating the producer timed out")
        .unwrap();
    for i in 0..MESSAGES {
        let receipt = producer
            .send_non_blocking(format!("message-{i}"))
            .await
            .unwrap();
        tokio::time::timeout(STEP, receipt)
            .await
            .expect("no receipt")
            .unwrap();
    }
}

/// Reads MESSAGES messages from the start of the topic, acknowledging each.
async fn consume(client: &Pulsar<TokioExecutor>, topic: &str) -> Vec<String> {
    let mut consumer: Consumer<String, TokioExecutor> = tokio::time::timeout(
        STEP,
        client
            .consumer()
            .with_topic(topic)
            .with_subscription(unique_name("sub"))
            .with_subscription_type(SubType::Exclusive)
            .with_options(
                ConsumerOptions::default().with_initial_position(InitialPosition::Earliest),
            )
            .build(),
    )
    .await
    .expect("subscribing timed out")
    .unwrap();
    let mut received = Vec::new();
    while received.len() < MESSAGES {
        let message = tokio::time::timeout(STEP, consumer.try_next())
            .await
            .unwrap_or_else(|_| panic!("received only {} of {MESSAGES}", received.len()))
            .unwrap()
            .expect("the consumer stream ended");
        received.push(message.deserialize().unwrap());
        consumer.ack(&message).await.unwrap();
    }
    received
}

fn expected() -> Vec<String> {
    (0..MESSAGES).map(|i| format!("message-{i}")).collect()
}

#[tokio::test]
async fn the_shared_pulsar_round_trips_messages_through_a_subscription() {
    let pulsar = wharf_testkit::pulsar().unwrap();
    let client = client(pulsar.address()).await;
    let topic = topic_name();

    produce(&client, &topic).await;

    assert_eq!(consume(&client, &topic).await, expected());
}

#[tokio::test]
async fn an_owned_pulsar_keeps_acknowledged_messages_across_a_kill_and_restart() {
    let pulsar = PulsarLite::start().unwrap();
    let topic = topic_name();
    produce(&client(&pulsar.url()).await, &topic).await;

    pulsar.kill().unwrap();
    pulsar.restart().unwrap();

    assert_eq!(
        consume(&client(&pulsar.url()).await, &topic).await,
        expected()
    );
    assert!(
        pulsar.data_dir().is_dir(),
        "{} missing",
        pulsar.data_dir().display()
    );
}

#[tokio::test]
async fn two_owned_pulsars_run_side_by_side() {
    let first = PulsarLite::start().unwrap();
    let second = PulsarLite::start().unwrap();
    let topic = topic_name();

    produce(&client(&first.url()).await, &topic).await;
    produce(&client(&second.url()).await, &topic).await;

    assert!(first.is_running() && second.is_running());
}

#[tokio::test]
async fn pulsar_clients_only_reach_an_owned_pulsar_through_its_proxy() {
    let pulsar = PulsarLite::start().unwrap();
    let proxy = pulsar.proxy().unwrap();
    let client = client(&pulsar.url()).await;
    let topic = topic_name();
    let mut producer = client.producer().with_topic(&topic).build().await.unwrap();
    let receipt = producer
        .send_non_blocking("through the proxy")
        .await
        .unwrap();
    tokio::time::timeout(STEP, receipt).await.unwrap().unwrap();

    // Were any connection going around the proxy, this send would still succeed.
    proxy.down().unwrap();
    let cut_off = tokio::time::timeout(Duration::from_secs(3), async {
        producer.send_non_blocking("while down").await?.await
    })
    .await;

    assert!(
        !matches!(cut_off, Ok(Ok(_))),
        "a send succeeded while the proxy was down"
    );
    assert!(proxy.connections_accepted() >= 1);
}

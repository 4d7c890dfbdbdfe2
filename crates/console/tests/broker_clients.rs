//! The clients page over the real brokers: a webhooks emitter on SQS (moto), a Pulsar producer
//! (pulsar-lite) and a Kafka wrapper with a producer and a consumer (Tansu). The panels show
//! the traffic that went through, and an outage as it happens: the Pulsar producer
//! disconnected, then reconnected; events buffered and retried while SQS is down, then sent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use axum::http::StatusCode;
use common::*;
use wharf_console::Console;
use wharf_core::supervisor::Supervisor;
use wharf_kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
};
use wharf_producer_ack::{OnReconnect, Producer, PulsarMessage};
use wharf_webhooks_emitter::serde_json::json;
use wharf_webhooks_emitter::{Emitter, Event, aws_sdk_sqs};

/// The number in the `<td>` after the row header `label` on a rendered clients page.
fn row(body: &str, label: &str) -> Option<String> {
    let at = body.find(&format!("<th>{label}</th><td>"))? + label.len() + 13;
    let rest = &body[at..];
    Some(rest[..rest.find("</td>")?].to_owned())
}

async fn page(app: &axum::Router) -> String {
    let a = get(app, "/service/clients").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body
}

/// Waits until the clients page shows `want` in the row `label` of the panel titled `panel`.
async fn shows(app: &axum::Router, panel: &str, label: &str, want: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = page(app).await;
        let v = body
            .find(panel)
            .and_then(|i| body[i..].split("</section>").next())
            .and_then(|section| row(section, label));
        if v.as_deref().is_some_and(&want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{panel}: {label} was {v:?} at the 60 s deadline"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::new()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "test",
            ))
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panels_show_sqs_and_pulsar_traffic_and_outages_as_they_happen() {
    // SQS through a proxy the test can take down.
    let moto = tokio::task::spawn_blocking(wharf_testkit::Moto::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let endpoint = moto.endpoint();
    let queue_url = sqs_client(&format!("http://{}", moto.proxy().unwrap().upstream()))
        .create_queue()
        .queue_name("console-clients")
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_owned();
    let emitter = Emitter::builder()
        .queue_url(&queue_url)
        .endpoint_url(&endpoint)
        .region("us-east-1")
        .credentials("test", "test")
        .build()
        .unwrap();
    let tree = Supervisor::builder("service")
        .child(emitter.child_spec("webhooks"))
        .start()
        .await
        .unwrap();

    // Pulsar through a proxy too.
    let pulsar = tokio::task::spawn_blocking(wharf_testkit::PulsarLite::start_behind_proxy)
        .await
        .unwrap()
        .unwrap();
    let producer = Producer::builder(pulsar.url(), "persistent://public/default/console-clients")
        .send_timeout(Duration::from_secs(30))
        .on_reconnect(OnReconnect::Resend)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
        .start()
        .unwrap();

    let app = Console::builder()
        .emitter("webhooks", emitter.clone())
        .producer("audit", producer.clone())
        .build();

    for n in 0..3 {
        let event = Event::new("provider-1", "order.created", json!({ "n": n })).unwrap();
        emitter.emit_sync(event).await.unwrap();
        producer
            .produce(PulsarMessage::new(format!("audit {n}")))
            .await
            .unwrap();
    }
    let body = page(&app).await;
    for text in [
        "Webhooks emitter: webhooks",
        "<th>Sent (confirmed by SQS)</th><td>3</td>",
        "<th>Emitted</th><td>3</td>",
        "<th>Failed</th><td>0</td>",
        "Pulsar producer: audit",
        "<th>Connected</th><td>true</td>",
    ] {
        assert!(body.contains(text), "no {text:?} in {body}");
    }

    // The window slot of the last receipt is given back just after its caller is told.
    shows(
        &app,
        "Pulsar producer",
        "Ack window (sent, receipt pending)",
        |v| v == "0",
    )
    .await;

    // Outages: SQS refuses, Pulsar's connections are cut and refused.
    moto.proxy().unwrap().down().unwrap();
    pulsar.proxy().unwrap().down().unwrap();
    let event = Event::new("provider-1", "order.created", json!({ "n": 3 })).unwrap();
    emitter.emit(event).await.unwrap();
    shows(
        &app,
        "Webhooks emitter",
        "Buffered (accepted, not yet sent or failed)",
        |v| v == "1",
    )
    .await;
    shows(&app, "Webhooks emitter", "Retried", |v| v != "0").await;
    shows(&app, "Pulsar producer", "Connected", |v| v == "false").await;

    // Healed: the buffered event goes out, the producer reconnects and sends again.
    moto.proxy().unwrap().restore().unwrap();
    pulsar.proxy().unwrap().restore().unwrap();
    shows(&app, "Webhooks emitter", "Sent (confirmed by SQS)", |v| {
        v == "4"
    })
    .await;
    shows(&app, "Webhooks emitter", "Failed", |v| v == "0").await;
    tokio::time::timeout(
        Duration::from_secs(60),
        producer.produce(PulsarMessage::new("after the outage")),
    )
    .await
    .expect("no receipt within 60 s of the link healing")
    .unwrap();
    shows(&app, "Pulsar producer", "Connected", |v| v == "true").await;
    shows(&app, "Pulsar producer", "Reconnects", |v| v != "0").await;

    producer.close().await;
    tree.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panels_show_a_kafka_consumers_handled_messages_lag_and_partitions() {
    let tansu = tokio::task::spawn_blocking(wharf_testkit::Tansu::start)
        .await
        .unwrap()
        .unwrap();
    let kafka = KafkaWrapper::start(
        KafkaConfig::new(tansu.bootstrap_servers()).set("session.timeout.ms", "6000"),
    )
    .await
    .unwrap();
    kafka
        .admin()
        .ensure_topics(&[TopicSpec::new("console-orders", 2)])
        .await
        .unwrap();
    let producer = kafka.add_producer(ProducerSpec::new("shop")).unwrap();
    let consumer = kafka
        .add_consumer(ConsumerSpec::group(
            "billing",
            "console-billing",
            ["console-orders".to_owned()],
            Handler::per_message(|_| async { Outcome::Ack }),
        ))
        .unwrap();
    for n in 0..20 {
        producer
            .send(Record::new("console-orders", format!("order {n}")).key(format!("c{}", n % 4)))
            .await
            .unwrap();
    }
    let app = Console::builder()
        .kafka("kafka", kafka.clone())
        .kafka_consumer(consumer.clone())
        .build();

    shows(&app, "Kafka consumer", "Handled", |v| v == "20").await;
    shows(&app, "Kafka consumer", "Total lag", |v| v == "0").await;
    shows(&app, "Kafka consumer", "Assigned partitions", |v| v == "2").await;
    let body = page(&app).await;
    assert!(body.contains("Kafka clients: kafka"), "{body}");
    assert!(
        row(&body, "State").is_some_and(|s| s.starts_with("running (generation")),
        "{body}"
    );
    // The lag table comes from the wrapper's periodic health check: one row per partition,
    // everything consumed.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let body = page(&app).await;
        let rows = body.matches("<tr><td>console-orders</td>").count();
        if rows == 2 {
            for r in body.split("<tr><td>console-orders</td>").skip(1) {
                let cells: Vec<&str> = r
                    .split("</tr>")
                    .next()
                    .unwrap()
                    .split("<td>")
                    .filter_map(|c| c.strip_suffix("</td>"))
                    .collect();
                // partition, high watermark, position, lag
                assert_eq!(cells.len(), 4, "{cells:?}");
                assert_eq!(
                    cells[1], cells[2],
                    "position behind the watermark: {cells:?}"
                );
                assert_eq!(cells[3], "0", "lag shown: {cells:?}");
            }
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lag rows for both partitions within 60 s: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    kafka.shutdown().await.unwrap();
}

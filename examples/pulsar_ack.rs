//! A Pulsar producer that always tells you what happened: block for the receipt, or get an
//! acknowledgement later, through a broker restart.
//!
//! The program produces three orders and waits for each receipt, then streams 2,000 events
//! with acknowledge-later (each ack brings back the event's number). When it owns the broker
//! it kills and restarts it in the middle of the stream: the producer reconnects, re-sends
//! what was not acknowledged, in order, and every event still gets exactly one ack.
//!
//! Run it: `cargo run --example pulsar_ack --features producer-ack`. It uses
//! `WHARF_PULSAR_URL` when set (then without the restart), otherwise starts a pulsar-lite of
//! its own through wharf-testkit. `RUST_LOG=info` shows the producer's reconnects.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wharf::producer_ack::{OnReconnect, Producer, PulsarMessage, ack_channel};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const EVENTS: u64 = 2_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,pulsar=off".into()))
        .init();

    let (url, broker) = match std::env::var("WHARF_PULSAR_URL") {
        Ok(url) => (url, None),
        Err(_) => {
            let broker = Arc::new(wharf_testkit::PulsarLite::start()?);
            (broker.url(), Some(broker))
        }
    };
    let topic = format!(
        "persistent://public/default/pulsar-ack-example-{}",
        std::process::id()
    );

    let producer = Producer::builder(&url, &topic)
        .producer_name(format!("example-{}", std::process::id()))
        .send_timeout(Duration::from_secs(20))
        .window(200)
        .on_reconnect(OnReconnect::Resend)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .start()?;

    // 1. Block for the receipt: the answer is the broker's message id, or a typed error.
    for order in 1..=3 {
        let message = PulsarMessage::new(format!("order {order} created"))
            .with_key(format!("order-{order}"))
            .with_property("schema", "order.v1");
        let id = producer.produce(message).await?;
        println!("order {order} stored as {id}");
    }

    // 2. Acknowledge later: produce_with returns once queued; the ack comes exactly once.
    let (acks, mut outcomes) = ack_channel::<u64>();
    let counter = tokio::spawn(async move {
        let (mut stored, mut failed) = (0u64, 0u64);
        while let Some(acked) = outcomes.recv().await {
            match acked.result {
                Ok(_) => stored += 1,
                Err(error) => {
                    failed += 1;
                    eprintln!("event {} not stored: {error}", acked.context);
                }
            }
        }
        (stored, failed)
    });

    let restart = broker.clone().map(|broker| {
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            println!("killing the broker mid-stream...");
            broker.kill().ok();
            tokio::time::sleep(Duration::from_millis(500)).await;
            let restarted = tokio::task::spawn_blocking(move || broker.restart()).await;
            println!("broker restarted: {:?}", restarted.map(|r| r.is_ok()));
        })
    });

    let started = Instant::now();
    for event in 0..EVENTS {
        producer
            .produce_with(format!("event {event}"), acks.with(event))
            .await;
        if event % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await; // a stream, not a burst
        }
    }
    drop(acks);
    if let Some(restart) = restart {
        restart.await?;
    }
    producer.close().await;
    let (stored, failed) = counter.await?;
    println!(
        "{EVENTS} events: {stored} stored, {failed} failed, {} reconnect(s), in {:.1?}",
        producer.reconnects(),
        started.elapsed()
    );
    Ok(())
}

//! A Kafka pipeline with wharf-kafka-wrapper: consume orders, turn each into an invoice,
//! produce the invoices, and dead-letter the orders that cannot be billed.
//!
//! ```text
//! KafkaWrapper (rebuilds every client from its spec when Kafka fails)
//! ├── producer "shop"      writes 1,000 orders keyed by customer (+ one unreadable order)
//! ├── consumer "billing"   group "billing": order -> invoice (same key, so same partition
//! │                        as the Java client would pick), unreadable -> orders.dead
//! ├── producer "invoices"  used by the billing handler; Ack only after the broker has it
//! └── consumer "audit"     group "audit": counts invoices
//! ```
//!
//! When the program owns the broker it also cuts every connection for three seconds in the
//! middle of the stream: producers and consumers resume on their own, no invoice is lost
//! (the offsets of unbilled orders were never committed).
//!
//! Run it: `cargo run --example kafka_pipeline --features kafka-wrapper`. It uses
//! `WHARF_KAFKA_BROKERS` when set (then without the cut), otherwise starts a Tansu of its
//! own behind a fault proxy through wharf-testkit. `RUST_LOG=info` shows rebalances.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wharf::kafka_wrapper::{
    ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const ORDERS: usize = 1_000;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,librdkafka=off".into()))
        .init();

    // Our own broker behind a fault proxy, unless one is given.
    let (brokers, own) = match std::env::var("WHARF_KAFKA_BROKERS") {
        Ok(b) => (b, None),
        Err(_) => {
            let tansu =
                tokio::task::spawn_blocking(wharf_testkit::Tansu::start_behind_proxy).await??;
            (tansu.bootstrap_servers(), Some(tansu))
        }
    };
    println!("Kafka at {brokers}");

    // librdkafka settings pass straight through; a short session timeout makes groups quick.
    let config = KafkaConfig::new(&brokers).set("session.timeout.ms", "6000");
    let kafka = KafkaWrapper::start(config).await?;
    let run = std::process::id();
    let (orders, invoices, dead) = (
        format!("orders-{run}"),
        format!("invoices-{run}"),
        format!("orders-dead-{run}"),
    );
    kafka
        .admin()
        .ensure_topics(&[
            TopicSpec::new(&orders, 3),
            TopicSpec::new(&invoices, 3),
            TopicSpec::new(&dead, 1),
        ])
        .await?;

    // Billing: order -> invoice. Ack only once the invoice is stored, so a crash or a cut
    // before that leaves the order's offset uncommitted and it is billed again later.
    let out = kafka.add_producer(ProducerSpec::new("invoices"))?;
    let invoices_topic = invoices.clone();
    let billing = Handler::per_message(move |order| {
        let (out, topic) = (out.clone(), invoices_topic.clone());
        async move {
            let Ok(text) = std::str::from_utf8(order.payload()) else {
                return Outcome::DeadLetter("order is not UTF-8".into());
            };
            let mut invoice = Record::new(topic, format!("invoice for {text}"));
            if let Some(customer) = order.key() {
                invoice = invoice.key(customer.to_vec());
            }
            match out.send(invoice).await {
                Ok(_) => Outcome::Ack,
                Err(_) => Outcome::Retry(Duration::from_millis(500)),
            }
        }
    });
    kafka.add_consumer(
        ConsumerSpec::group(
            "billing",
            format!("billing-{run}"),
            [orders.clone()],
            billing,
        )
        .dead_letter_topic(&dead),
    )?;

    // Audit: collects the invoices it sees (duplicates possible: at least once).
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let s = seen.clone();
    let audit = kafka.add_consumer(ConsumerSpec::group(
        "audit",
        format!("audit-{run}"),
        [invoices.clone()],
        Handler::per_message(move |invoice| {
            let s = s.clone();
            async move {
                if let Ok(mut s) = s.lock() {
                    s.insert(invoice.payload().to_vec());
                }
                Outcome::Ack
            }
        }),
    ))?;

    // The shop: 1,000 orders from 50 customers, fire-and-forget with a delivery callback,
    // plus one unreadable order.
    let shop = kafka.add_producer(ProducerSpec::new("shop"))?;
    let started = Instant::now();
    for i in 0..ORDERS {
        if i == ORDERS / 2
            && let Some(proxy) = own.as_ref().and_then(|t| t.proxy())
        {
            println!("cutting every Kafka connection for 3 s");
            proxy.down()?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            proxy.restore()?;
        }
        let record = Record::new(&orders, format!("order {i}")).key(format!("customer-{}", i % 50));
        shop.send_with(record, |r| {
            if let Err(e) = r {
                eprintln!("order not stored: {e}");
            }
        })
        .await?;
    }
    shop.send(Record::new(&orders, vec![0xff, 0xfe]).key("customer-x"))
        .await?;

    // Wait until every invoice is seen (bounded).
    while seen.lock().map(|s| s.len()).unwrap_or(0) < ORDERS
        && started.elapsed() < Duration::from_secs(90)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let billed = seen.lock().map(|s| s.len()).unwrap_or(0);
    let dead_letters = kafka
        .admin()
        .fetch_range(&dead, 0, 0, 10, Duration::from_secs(10))
        .await?;
    println!(
        "invoices seen: {billed} of {ORDERS} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "dead letters:  {} (reason: {:?})",
        dead_letters.len(),
        dead_letters
            .first()
            .and_then(|d| d.header("wharf.dlq.reason"))
    );
    println!("audit lag:     {}", audit.total_lag());
    println!("rebuilds:      {}", kafka.rebuilds());

    kafka.shutdown().await?; // drains handlers, commits offsets, flushes producers
    if billed < ORDERS {
        return Err(format!("only {billed} of {ORDERS} invoices arrived").into());
    }
    Ok(())
}

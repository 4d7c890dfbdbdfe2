//! # wharf-kafka-wrapper
//!
//! Supervised Kafka producers and consumers, built on rdkafka (librdkafka), that rebuild
//! themselves when the client fails and never commit an offset past an unhandled message.
//!
//! This crate provides:
//!
//! - [`KafkaWrapper`]: one client configuration ([`KafkaConfig`], librdkafka settings
//!   passed straight through), a registry of producer and consumer specs, and a supervision
//!   loop. When the client fails (a fatal librdkafka error, no broker reachable for
//!   [`KafkaConfig::unreachable_after`], judged on the wrapper's own clock so that a silent
//!   partition counts as soon as a refused connection, a consumer that receives nothing
//!   while the broker holds messages for it) it rebuilds
//!   the client and every
//!   registered producer and consumer from its spec, with exponential backoff and no limit
//!   on attempts unless you set one. It starts even when Kafka is down. Producers and
//!   consumers can be added and removed at run time and stay registered across rebuilds.
//!   [`KafkaWrapper::child_spec`] puts it under a wharf-core supervisor.
//! - [`Producer`]: await the broker's receipt ([`Producer::send`]), fire and forget with a
//!   delivery callback ([`Producer::send_with`]), or send a batch with one result per message
//!   ([`Producer::send_batch`]). Keyed messages land on the partition the Java client picks
//!   ([`partitioner::java_partition`]). Headers and compression are supported; idempotence
//!   (acks=all) is on by default.
//! - Group consumers ([`ConsumerSpec::group`]) with a [`Handler`] per message or per batch
//!   that answers [`Outcome::Ack`], [`Outcome::Retry`] after a delay, or
//!   [`Outcome::DeadLetter`] (to a topic). A call that panics or overruns its deadline
//!   ([`ConsumerSpec::handler_timeout`], 60 s) is a failed attempt under a [`RetryPolicy`],
//!   then dead-lettered, so a handler that never returns cannot hold its partition. At
//!   least once: an offset is committed only after
//!   every earlier message of its partition was handled; commits happen on revoke and on
//!   shutdown after in-flight work drains, each waiting for its answer at most
//!   [`KafkaConfig::request_timeout`]. Per-partition order, pause and resume, and lag
//!   ([`ConsumerHandle::lag`]); or several messages of one partition at once
//!   ([`ConsumerSpec::in_flight_per_partition`]) for handlers that keep order per key.
//!   Handlers get [`ConsumedMessage`]s read in place from librdkafka's fetch buffer (no
//!   copy, headers parsed only when asked; [`ConsumedMessage::detach`] for one to keep).
//! - Plain consumers of given partitions and offsets ([`ConsumerSpec::partitions`]),
//!   supervised the same way.
//! - [`Admin`]: create, delete, list and describe topics; read a range of messages from a
//!   partition ([`Admin::fetch_range`]).
//! - wharf-core's transport traits: [`TopicPublisher`] (a `Publisher`) and [`KafkaSource`]
//!   (a `Source`), so code written against them runs on Kafka.
//!
//! Use it when a service produces to or consumes from Kafka and must keep doing so through
//! broker restarts and network trouble without losing messages. If you only need a raw
//! client, use rdkafka directly.
//!
//! ## Which producer call
//!
//! | call | resolves when | cost | use it for |
//! |---|---|---|---|
//! | [`Producer::send`] | the broker acknowledged (acks=all) | one await per message | messages whose fate the caller must know before going on |
//! | [`Producer::send_with`] | the message is queued; the callback gets the receipt later | no await on the broker | high throughput, outcome handled asynchronously |
//! | [`Producer::send_batch`] | every message has an outcome | one await for many | bulk sends, one result per message |
//!
//! ## Example
//!
//! A consumer that transforms orders and produces them to another topic (requires a broker
//! at `WHARF_KAFKA_BROKERS`, for example the Tansu that `scripts/install` puts in `.wharf/bin`):
//!
//! ```no_run
//! use std::time::Duration;
//! use wharf_kafka_wrapper::{
//!     ConsumerSpec, Handler, KafkaConfig, KafkaWrapper, Outcome, ProducerSpec, Record, TopicSpec,
//! };
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), wharf_kafka_wrapper::Error> {
//! let kafka = KafkaWrapper::start(KafkaConfig::from_env()).await?; // Kafka may still be down
//! kafka.admin().ensure_topics(&[TopicSpec::new("orders", 6), TopicSpec::new("invoices", 6)]).await?;
//! let out = kafka.add_producer(ProducerSpec::new("invoices"))?;
//!
//! let handler = Handler::per_message(move |order| {
//!     let out = out.clone();
//!     async move {
//!         let invoice = format!("invoice for {}", String::from_utf8_lossy(order.payload()));
//!         let mut record = Record::new("invoices", invoice);
//!         if let Some(key) = order.key() {
//!             record = record.key(key.to_vec()); // same key, same partition as the Java client
//!         }
//!         match out.send(record).await {
//!             Ok(_) => Outcome::Ack,                             // the offset may now be committed
//!             Err(_) => Outcome::Retry(Duration::from_secs(1)), // not committed; tried again
//!         }
//!     }
//! });
//! kafka.add_consumer(
//!     ConsumerSpec::group("billing", "billing-service", ["orders"], handler)
//!         .dead_letter_topic("orders.dead"),
//! )?;
//! tokio::time::sleep(Duration::from_secs(60)).await; // or until a shutdown signal
//! kafka.shutdown().await // drains in-flight handlers, commits, flushes producers
//! # }
//! ```
//!
//! ## Metrics (through the `metrics` facade)
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `wharf_kafka_rebuilds_total` | counter | |
//! | `wharf_kafka_generation` | gauge | |
//! | `wharf_kafka_produced_total`, `wharf_kafka_produce_failed_total` | counter | `producer` |
//! | `wharf_kafka_resent_after_rebuild_total` | counter | `producer` |
//! | `wharf_kafka_consumer_lag` | gauge | `consumer`, `topic`, `partition` |
//! | `wharf_kafka_handler_retries_total`, `wharf_kafka_dead_lettered_total` | counter | `consumer` |
//! | `wharf_kafka_handler_failures_total` | counter | `consumer`, `reason` (`deadline`, `panic`) |
//! | `wharf_kafka_all_brokers_down_total` | counter | `client` |
//!
//! Tracing: the supervision loop runs in span `kafka_wrapper`, each consumer's polling
//! thread in span `kafka_consumer{consumer}`; librdkafka's own log lines are forwarded under
//! target `librdkafka`. Each client logs at most one warning or error per 10 s (librdkafka's
//! lines and error callbacks, and the wrapper's warnings about that client, together, field
//! `client`); the rest go to `debug`, and a later line or a summary carries their count
//! (field `suppressed`). Secret settings (passwords, tokens, keys) never appear in `Debug`
//! output or logs.

mod admin;
mod config;
mod consumer;
mod error;
mod health;
mod log_gate;
mod message;
pub mod partitioner;
mod producer;
mod reachability;
mod transport;
mod wrapper;

#[doc(inline)]
pub use admin::{Admin, PartitionInfo, TopicInfo, TopicSpec};
#[doc(inline)]
pub use config::{BROKERS_ENV, KafkaConfig};
#[doc(inline)]
pub use consumer::{
    ConsumerHandle, ConsumerSpec, DEFAULT_HANDLER_TIMEOUT, DEFAULT_RETRY_POLICY, Handler, Outcome,
    PartitionLag, RetryPolicy, StartAt,
};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use message::{ConsumedMessage, Delivered, Record};
#[doc(inline)]
pub use producer::{Producer, ProducerSpec};
#[doc(inline)]
pub use transport::{KafkaSource, TopicPublisher};
#[doc(inline)]
pub use wrapper::{KafkaWrapper, WrapperState};

//! # wharf-producer-ack
//!
//! A Pulsar producer that always tells you what happened to each message.
//!
//! This crate provides:
//! - [`Producer`]: a supervised, cloneable producer for one topic (partitioned topics too),
//!   built with [`ProducerBuilder`] (service URL, auth token, TLS, producer name, batching,
//!   compression, send timeout, window). It starts even when the broker is down and connects
//!   in the background with backoff. [`start`](ProducerBuilder::start) runs it on its own;
//!   [`supervised`](ProducerBuilder::supervised) returns the handle and a wharf-core
//!   `ChildSpec` to put it under a supervisor.
//! - Two ways to produce, with the same guarantee: every message ends **exactly once**, within
//!   the send timeout, with the broker's [`MessageId`] or a typed [`Error`]:
//!   - **block for the receipt**: [`Producer::produce`] (and [`Producer::produce_batch`], one
//!     result per message, in order);
//!   - **acknowledge later**: [`Producer::produce_with`] returns once the message is queued
//!     and calls an [`Ack`] later: a closure, or an [`ack_channel`] that carries a context
//!     of yours back with the outcome.
//! - A bounded **window** of unacknowledged messages: when it is full, producing waits
//!   (backpressure) instead of failing with the `pulsar` crate's `SlowDown`.
//! - **Reconnection**: when the connection drops, the broker restarts or stops answering,
//!   the producer re-creates its client and producer with backoff and re-sends every
//!   unacknowledged message in order ([`OnReconnect::Resend`]), or fails them
//!   ([`OnReconnect::Fail`]). The handle stays valid throughout.
//! - wharf-core's [`Publisher`](wharf_core::transport::Publisher) for [`Producer`].
//! - `tracing` spans (`pulsar_producer`, `pulsar_connection`) and `metrics` counters.
//!
//! ## Which one to use
//!
//! | | [`produce`](Producer::produce) (block for the receipt) | [`produce_with`](Producer::produce_with) (ack later) |
//! |---|---|---|
//! | returns | when the broker stored the message (or failed) | when the message is queued |
//! | throughput from one task | one round trip per message | the whole window in flight |
//! | where the outcome arrives | the `await` | the ack (closure or channel), exactly once |
//! | natural for | request/response handlers that must answer "stored" | streams, pipelines, bulk loads |
//! | cost of forgetting the outcome | none: it is the return value | none: the ack is always called |
//!
//! Many concurrent `produce` calls pipeline too; `produce_with` gets the same from a single
//! task.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use wharf_producer_ack::{Message, MessageId, Error, Producer, ack_channel};
//!
//! # async fn run() -> Result<(), Error> {
//! let producer = Producer::builder("pulsar://127.0.0.1:6650", "persistent://public/default/orders")
//!     .producer_name("orders-api")
//!     .send_timeout(Duration::from_secs(10))
//!     .window(1000)
//!     .start()?;
//!
//! // block for the receipt
//! let id: MessageId = producer
//!     .produce(Message::new("order 42 created").with_key("order-42").with_property("v", "1"))
//!     .await?;
//! println!("stored as {id}");
//!
//! // acknowledge later, with a context that comes back with the outcome
//! let (acks, mut outcomes) = ack_channel::<u64>();
//! for order in 0..100u64 {
//!     producer.produce_with(format!("order {order} shipped"), acks.with(order)).await;
//! }
//! drop(acks);
//! while let Some(acked) = outcomes.recv().await {
//!     match acked.result {
//!         Ok(id) => println!("order {} stored as {id}", acked.context),
//!         Err(e) => eprintln!("order {} not stored: {e}", acked.context),
//!     }
//! }
//! producer.close().await;
//! # Ok(()) }
//! ```
//!
//! ## Guarantees and their limits
//!
//! - Delivery is **at least once**: a message stored just before a connection drop, whose
//!   receipt was lost, is re-sent and stored twice. The `pulsar` crate numbers messages from 0
//!   for each producer it creates and cannot resume from the broker's last sequence id, so
//!   broker-side deduplication (producer name + sequence id) only catches re-sends made by the
//!   crate within one connection, not those after wharf re-creates the producer.
//! - [`Error::may_have_been_stored`] tells "not stored" from "outcome unknown".
//! - Order: messages are sent, and re-sent after a reconnect, in the order they entered the
//!   window; on a partitioned topic, per partition.
//!
//! ## Metrics (all labelled `topic`)
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `wharf_producer_ack_produced_total` | counter | messages that entered the window |
//! | `wharf_producer_ack_acknowledged_total` | counter | messages the broker stored |
//! | `wharf_producer_ack_failed_total` | counter | messages that ended with an error |
//! | `wharf_producer_ack_pending` | gauge | messages in the window |
//! | `wharf_producer_ack_reconnects_total` | counter | connections lost and re-created |
//!
//! The auth token never appears in `Debug` output, logs, errors or metric labels.
//!
//! ## Features
//!
//! - `compression`: LZ4, zlib, zstd and Snappy ([`Compression`]); off by default because it
//!   builds C libraries.

mod ack;
mod config;
mod driver;
mod error;
mod message;
mod metrics;
mod producer;
mod publisher;

#[doc(inline)]
pub use ack::{Ack, AckReceiver, AckSender, Acked, ContextAck, NotifyHandle, ack_channel};
#[doc(inline)]
pub use config::{Batching, Compression, OnReconnect, ProducerBuilder, Tls};
#[doc(inline)]
pub use error::Error;
#[doc(inline)]
pub use message::{Message, MessageId};
#[doc(inline)]
pub use producer::Producer;

//! Broker-neutral transport: messages, publishers, sources, acknowledgements, and an
//! in-memory queue.
//!
//! Which wharf crates implement the two traits here: `wharf-kafka-wrapper` (both: a
//! `TopicPublisher` per topic and a `KafkaSource` per consumer group) and `wharf-producer-ack`
//! (its Pulsar `Producer` is a [`Publisher`]). `wharf-sharded-consumer` runs over any
//! [`Source`]. Code written against the traits runs on those brokers, and on the in-memory
//! [`MemoryQueue`] in examples and tests. `wharf-webhooks-emitter` (SQS) and
//! `wharf-job-partition` (Redis) do not implement them: their APIs follow what they do
//! (confirmed webhook events; jobs with leases), not a stream of acknowledged messages.
//!
//! # Which type for which job
//!
//! | Job | Use |
//! |---|---|
//! | Describe a message: key, payload, headers, event time | [`Message`] (with [`Headers`]) |
//! | Send one message and know the broker has it | [`Publisher::publish`], which resolves with a [`Receipt`] |
//! | Send many, with one answer each | [`Publisher::publish_batch`] |
//! | Hold a publisher chosen at run time (a dead-letter target, say) | `Arc<dyn` [`DynPublisher`]`>` |
//! | Receive messages | [`Source::recv`], or [`Source::into_stream`] |
//! | Say a message was handled | [`Delivery::ack`] |
//! | Retry a message later | [`Delivery::nack`] with a delay |
//! | Give up without deciding (a crash, a cancelled task) | drop the [`Delivery`]: it is delivered again |
//! | Route by partition, commit offsets, count retries | [`DeliveryInfo`] (`partition`, `offset`, `attempt`) |
//! | Write a transport | implement [`Publisher`], [`Source`], and [`Acknowledger`] behind each [`Delivery`] |
//! | Test or demo without a broker | [`MemoryQueue`]: bounded, with acks, redelivery and competing consumers |
//!
//! # Guarantees
//!
//! wharf promises what brokers actually deliver, and says so on each trait:
//!
//! - **Publishing** resolves only when the broker has *durably accepted* the message, is
//!   bounded in time, and tells "not accepted" apart from "outcome unknown"
//!   ([`Publisher`]).
//! - **Consuming** is *at least once*: a delivery that is not acked (nacked, dropped, or lost
//!   with a crashed consumer) is delivered again, so handlers must be idempotent
//!   ([`Delivery`]).
//! - **Everything is bounded**: publishers wait for room rather than buffer without limit,
//!   sources prefetch a bounded number of messages, and the in-memory queue's capacity
//!   counts every message it holds, including those in flight.
//!
//! # Example
//!
//! A worker that retries failed messages with a delay, run against the in-memory queue:
//!
//! ```
//! use std::time::Duration;
//! use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), wharf_core::Error> {
//! let queue = MemoryQueue::new(64);
//!
//! // Producer: `publish` resolves once the queue has the message (waiting if it is full).
//! let publisher = queue.publisher();
//! for order in 1..=3 {
//!     let receipt = publisher
//!         .publish(Message::new(format!("order {order}")).with_key(order.to_string()))
//!         .await?;
//!     println!("published as {receipt}");
//! }
//! queue.close(); // no more messages: the source ends once everything is settled
//!
//! // Consumer: order 2 fails on its first attempt and is retried after a second.
//! let mut source = queue.source();
//! let mut handled = Vec::new();
//! while let Some(delivery) = source.recv().await {
//!     let delivery = delivery?;
//!     let payload = String::from_utf8_lossy(delivery.message().payload()).into_owned();
//!     if payload == "order 2" && delivery.attempt() == 1 {
//!         delivery.nack(Duration::from_secs(1)).await?;
//!         continue;
//!     }
//!     handled.push(payload);
//!     delivery.ack().await?;
//! }
//!
//! assert_eq!(handled, ["order 1", "order 3", "order 2"]);
//! let stats = queue.stats();
//! assert_eq!((stats.acked, stats.nacked, stats.held()), (3, 1, 0));
//! # Ok(())
//! # }
//! ```
//!
//! The same worker, written against `impl Source`, runs unchanged on Kafka, Pulsar, SQS or
//! Redis through their wharf crates.

mod delivery;
mod memory;
mod message;
mod publisher;
mod receipt;
mod source;

pub use delivery::{Acknowledger, Delivery, DeliveryInfo};
pub use memory::{MemoryPublisher, MemoryQueue, MemoryQueueStats, MemorySource};
pub use message::{Headers, Message};
pub use publisher::{DynPublisher, Publisher};
pub use receipt::Receipt;
pub use source::Source;

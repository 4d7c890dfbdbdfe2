//! # wharf-sharded-consumer
//!
//! One stateful, ordered actor per sharding key, over any wharf
//! [`Source`](wharf_core::transport::Source): the in-memory queue, Kafka (through
//! `wharf-kafka-wrapper`), or any other transport.
//!
//! This crate provides:
//! - [`Handler`]: the trait a key's actor runs: `init(key)` builds its state,
//!   `handle_message` answers an [`Outcome`] (ack, retry after a delay, dead-letter, stop),
//!   `handle_signal` answers calls from outside, `terminate` sees it stop.
//! - [`ShardedConsumer`]: runs a source through those actors: one per key, started on the
//!   key's first message or signal, found through a registry
//!   ([`get_or_start`](ShardedConsumer::get_or_start)), stopped after an idle timeout; each
//!   key strictly in order with one message in flight; keys in parallel up to a global
//!   limit; bounded memory with backpressure on the source; failures (an `Err`, a panic, a
//!   call past the handler timeout) contained to one key, retried by a [`RetryPolicy`],
//!   then dead-lettered to any wharf `Publisher`.
//! - [`KeyDecoder`] and [`ShardKey`]: where the key comes from (the message key, a header, a
//!   function), decoded without panics; messages with undecodable keys are dead-lettered
//!   with the reason.
//!
//! ## When to use it
//! When messages about one entity (an account, a device, an order) must be handled in order
//! and with that entity's state in memory, while entities are handled in parallel: the
//! original was Elixir's Mississippi `DataUpdater`, a process per key. Broadway's
//! `partition_by` and ractor's factories route keys to a *fixed* pool of workers, so one slow
//! key holds up every key of its worker and there is no per-key state or lifecycle; here each
//! key has its own actor, so a slow or failing key delays only itself.
//!
//! If order per key does not matter, consume with plain workers (wharf-core's example); if
//! order per Kafka partition is enough, `wharf-kafka-wrapper`'s group consumer does it.
//!
//! ## Example
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use tokio_util::sync::CancellationToken;
//! use wharf_core::transport::{MemoryQueue, Message, Publisher};
//! use wharf_sharded_consumer::{Handler, Incoming, Outcome, ShardKey, ShardedConsumer};
//!
//! /// Counts the messages of each key; a signal reads the count.
//! struct Counter;
//!
//! impl Handler for Counter {
//!     type State = u64;
//!     type Signal = ();
//!     type Reply = u64;
//!     type Error = Infallible;
//!
//!     async fn init(&self, _key: &ShardKey) -> Result<u64, Infallible> {
//!         Ok(0)
//!     }
//!     async fn handle_message(&self, count: &mut u64, _msg: &Incoming<'_>) -> Result<Outcome, Infallible> {
//!         *count += 1;
//!         Ok(Outcome::Ack)
//!     }
//!     async fn handle_signal(&self, count: &mut u64, _: ()) -> Result<u64, Infallible> {
//!         Ok(*count)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let queue = MemoryQueue::new(1024);
//! let dead_letters = MemoryQueue::new(64);
//! let consumer = ShardedConsumer::builder("counter", Counter)
//!     .dead_letter(dead_letters.publisher())
//!     .idle_timeout(Some(Duration::from_secs(30)))
//!     .build()?;
//!
//! let stop = CancellationToken::new();
//! // Running when `spawn` returns (`run(source, stop).await` runs it in place).
//! let running = consumer.spawn(queue.source(), stop.clone())?;
//!
//! let publisher = queue.publisher();
//! for n in 0..10 {
//!     publisher.publish(Message::new("tick").with_key(format!("device-{}", n % 2))).await?;
//! }
//! while queue.stats().acked < 10 {
//!     tokio::time::sleep(Duration::from_millis(1)).await;
//! }
//! assert_eq!(consumer.signal("device-0", ()).await?, 5);
//! assert_eq!(consumer.stats().active_keys, 2);
//!
//! stop.cancel();
//! running.await??;
//! # Ok(())
//! # }
//! ```
//!
//! ## Design
//! An actor here is **an entry in a registry, not a task**. Keys are spread by hash over a
//! few *executor* tasks (one per CPU by default); each executor owns the registry entries of
//! its keys: the key's state, its queue, and whether a call is running. An idle actor is
//! that entry alone (about 200 bytes with a small state), so millions of keys fit in memory,
//! and eviction just drops the entry after `terminate`.
//!
//! When a key has work, its executor starts a *turn*, a future owning the key's state and
//! one message, and polls it at once. A handler that does not wait finishes in that poll:
//! its outcome is applied and the delivery acknowledged on the spot, with no task spawned,
//! no channel crossed and no wake-up. A handler that waits (I/O) keeps its turn in the
//! executor's running set while the executor serves other keys. A key never has two turns
//! at once; that is what makes it serial, and why its state needs no lock.
//!
//! A single reading task takes deliveries from the source, decodes their keys, and hands
//! them to executors in batches (a batch never waits to fill). The number of deliveries
//! received and not settled is bounded (`max_in_flight`); when it is reached, or when an
//! executor's inbox is full because one key's queue (`max_queue_per_key`) is full, the
//! reader stops reading and the source keeps the rest.
//!
//! ## Guarantees
//! | Promise | How |
//! |---|---|
//! | Per key: in order, one at a time | one turn per key at a time; retries happen in the actor, not by requeueing |
//! | Ack only after the handler answered | the executor acks when the turn returns `Ack`/`Stop`, or after a dead letter was accepted |
//! | No message lost on restart | unsettled deliveries are released (not acked); Kafka commits only below the lowest unhandled offset of each partition |
//! | Never requeued forever | every retry counts against [`RetryPolicy::max_attempts`], then dead-letter |
//! | A failing key does not stop the others | failures restart only that key's actor; retry delays are timers, not sleeps |
//! | A handler that never answers does not block its key | every handler call has [`handler_timeout`](ShardedConsumerBuilder::handler_timeout) (30 s by default); past it the call is dropped and counts as a failed attempt |
//! | Requests outlive restarts | under a supervisor ([`child_spec`](ShardedConsumer::child_spec)), [`signal`](ShardedConsumer::signal) and friends sent between two runs, or left waiting by a run that stopped, are served by the next run, in order (bounded mailboxes, each request within its timeout) |
//! | No request waits for a run that will not come | a consumer that is not running and cannot run again (no run, no child spec; its supervisor shut down or gave up) answers [`Error::Stopped`] at once, also to requests waiting when that becomes true |
//! | Bounded memory | `max_in_flight`, `max_queue_per_key`, `max_signals_per_key`, bounded mailboxes |
//!
//! Delivery is at least once: after a crash the source delivers again what was not
//! acknowledged, so handlers must be idempotent.
//!
//! Limits: a handler that blocks its thread cannot be interrupted; it holds its executor
//! (every key hashed to it, and that executor's retry timers and idle sweeps) until it
//! returns, and only then is failed for its lateness. Run blocking work with
//! `tokio::task::spawn_blocking` (see `docs/sharded-consumer.md`).
//!
//! ## Across machines
//! Run one consumer per machine on a Kafka group consumer of the same group: Kafka gives
//! each partition to one member, the producer's keyed partitioning puts all messages of a
//! key in one partition, so each key is handled by exactly one machine at a time. When
//! partitions move (a member joins or leaves), a key's next messages go to its new owner,
//! whose actor starts with `init`: keep what must survive in a store `init` reads. The Kafka
//! consumer spec's `in_flight_per_partition(n)` lets the keys of one partition run in
//! parallel too: the source hands deliveries out in offset order and this consumer keeps
//! each key's order (see `docs/sharded-consumer.md`).
//!
//! ## Dead letters
//! A dead-lettered message is published with its payload, key and headers unchanged, plus:
//! `wharf-dead-letter-reason`, `wharf-dead-letter-consumer`, `wharf-dead-letter-attempts`,
//! `wharf-dead-letter-key` (when it had a key) and `wharf-dead-letter-origin` (its id at the
//! source, such as `3@1042` for Kafka partition 3, offset 1042).
//!
//! ## Metrics
//! Through the `metrics` facade, labelled `consumer`: gauges `wharf_sharded_keys_active`,
//! `wharf_sharded_in_flight` (deliveries received and not settled: 0 when the consumer is
//! idle), `wharf_sharded_queued_messages`,
//! `wharf_sharded_key_queue_depth_max` (deepest key queue, sampled at each registry sweep);
//! counters `wharf_sharded_keys_started_total`, `wharf_sharded_keys_evicted_total`,
//! `wharf_sharded_keys_stopped_total`, `wharf_sharded_key_restarts_total`,
//! `wharf_sharded_retries_total`, `wharf_sharded_dead_lettered_total`,
//! `wharf_sharded_acked_total`, `wharf_sharded_rejected_keys_total`,
//! `wharf_sharded_source_errors_total`. The same figures are in [`ShardedConsumer::stats`].
//! Tracing: a span per consumer and per executor; `debug` spans per signal, `trace` spans
//! per message turn; events for failures, dead letters, actor starts and stops.

mod budget;
mod config;
mod consumer;
mod deadline;
mod dispatch;
mod error;
mod handler;
mod key;
mod mailbox;
mod shard;
mod stats;
mod turn;

#[doc(inline)]
pub use config::{RetryPolicy, ShardedConsumerBuilder};
#[doc(inline)]
pub use consumer::{KeyActor, KeyInfo, ShardedConsumer};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use handler::{Handler, Incoming, Outcome, StopReason};
#[doc(inline)]
pub use key::{KeyDecoder, KeyRejected, ShardKey};
#[doc(inline)]
pub use stats::Stats;

/// The text of a caught panic.
pub(crate) fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

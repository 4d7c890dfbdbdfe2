//! # wharf-core
//!
//! The small, stable centre of wharf: Erlang/OTP-grade supervision for async Rust, and the
//! broker-neutral transport traits that wharf's Kafka and Pulsar crates implement.
//!
//! This crate provides:
//! - [`supervisor`]: supervisors with OTP semantics (two-phase start, one_for_one /
//!   one_for_all / rest_for_one, permanent / transient / temporary children, restart
//!   intensity with escalation, ordered shutdown with grace periods, `Ignore`), dynamic
//!   supervisors, and what OTP lacks: restart backoff with jitter, panics caught as exits,
//!   tracing and metrics, introspection of a running tree.
//! - [`service`]: bounded mailboxes whose handles outlive restarts: requests queued while a
//!   service restarts are served by its next incarnation; only the request in flight at a
//!   crash fails, with [`Error::ServiceCrashed`]; every call ends by its deadline, enforced
//!   without a timer per call.
//! - [`transport`]: [`Message`], [`Receipt`], the [`Publisher`] and [`Source`] traits with their
//!   delivery contracts, and a bounded in-memory queue with acks and redelivery.
//! - [`Backoff`]: exponential backoff with jitter, for restarts and reconnect loops, and
//!   [`RetryPolicy`]: at most so many tries with a backoff between them, the one retry shape
//!   of the crates that retry.
//!
//! ## When to use it
//! Use `wharf-core` directly to supervise your own tasks, or to write code against
//! `Publisher`/`Source` that runs on any broker (and on the in-memory queue in tests).
//! For a specific broker, depend on its crate (`wharf-kafka-wrapper`,
//! `wharf-producer-ack`, `wharf-webhooks-emitter`, `wharf-job-partition`), which builds on
//! this one. `wharf-core` depends on no broker client.
//!
//! ## Example
//! A supervised worker that consumes an in-memory queue, crashes on a poisoned message, and
//! is restarted; the message it did not acknowledge is delivered again.
//!
//! ```
//! use std::time::Duration;
//! use wharf_core::Backoff;
//! use wharf_core::supervisor::{ChildSpec, Started, Supervisor};
//! use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), wharf_core::Error> {
//! let queue = MemoryQueue::new(16);
//! let consumer_queue = queue.clone();
//! let worker = ChildSpec::new("worker", move |ctx| {
//!     let queue = consumer_queue.clone();
//!     async move {
//!         let mut source = queue.source();
//!         Ok::<_, wharf_core::Error>(Started::task(async move {
//!             loop {
//!                 let delivery = tokio::select! {
//!                     _ = ctx.cancelled() => return Ok::<(), wharf_core::Error>(()),
//!                     next = source.recv() => match next {
//!                         Some(delivery) => delivery?,
//!                         None => return Ok(()),
//!                     },
//!                 };
//!                 if delivery.message().payload() == "poison" && delivery.attempt() == 1 {
//!                     panic!("poisoned message"); // un-acked: it will be delivered again
//!                 }
//!                 delivery.ack().await?;
//!             }
//!         }))
//!     }
//! });
//! let root = Supervisor::builder("app")
//!     .backoff(Backoff::exponential(Duration::from_millis(10), Duration::from_secs(1)))
//!     .child(worker)
//!     .start()
//!     .await?;
//!
//! let publisher = queue.publisher();
//! publisher.publish(Message::new("poison")).await?;
//! publisher.publish(Message::new("fine")).await?;
//! while queue.stats().acked < 2 {
//!     tokio::time::sleep(Duration::from_millis(5)).await;
//! }
//! assert_eq!(root.which_children().await?[0].restarts, 1);
//! root.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Errors
//! One error enum, [`Error`], `#[non_exhaustive]`; each variant names what went wrong and
//! carries what a caller needs to act on it.
//!
//! ## Metrics
//! Through the [`metrics`](https://docs.rs/metrics) facade, so any recorder works:
//! `wharf_supervisor_child_starts_total`, `wharf_supervisor_child_exits_total`,
//! `wharf_supervisor_restarts_total`, `wharf_supervisor_escalations_total` (see
//! [`supervisor`]).

mod backoff;
mod cause;
mod error;
mod retry;
pub mod service;
pub mod supervisor;
pub mod transport;

#[doc(inline)]
pub use backoff::Backoff;
#[doc(inline)]
pub use cause::Cause;
#[doc(inline)]
pub use error::{BoxError, Error, Result};
#[doc(inline)]
pub use retry::RetryPolicy;
#[doc(inline)]
pub use transport::{
    Delivery, DeliveryInfo, DynPublisher, MemoryQueue, Message, Publisher, Receipt, Source,
};

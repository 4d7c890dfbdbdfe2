//! # wharf-webhooks-emitter
//!
//! Webhook events into an AWS SQS queue, where a delivery service picks them up and calls
//! customers' endpoints. This crate provides:
//!
//! - [`Emitter`]: a cloneable handle with [`Emitter::emit`] (buffer and return at once) and
//!   [`Emitter::emit_sync`] (resolve to the SQS `MessageId` or a typed [`Error`] within a
//!   timeout that covers every retry), started as a supervised child with
//!   [`Emitter::child_spec`] (answers `Ignore` when no queue is configured);
//! - [`EmitterBuilder`]: configuration with defaults, or [`Emitter::from_env`]
//!   (`SQS_QUEUE_URL`, then the standard AWS chain);
//! - [`Event`]: provider id, event type, JSON data, optional URL, sent in the original's
//!   envelope `{"id","ts","providerId","event","data","url"}`, with the event type and id
//!   also as the message attributes `event` and `id`;
//! - batching through SendMessageBatch (10 entries, at most the queue's size limit, after a
//!   short linger), per-entry retries with exponential backoff and jitter, a bounded buffer
//!   ([`FullPolicy`]), FIFO parameters, compression ([`Compression`]), denied fields
//!   ([`DeniedFields`]), a graceful drain on shutdown ([`ShutdownReport`]);
//! - metrics (see [`metrics`]) and tracing spans.
//!
//! ## emit or emit_sync?
//!
//! | | `emit` | `emit_sync` |
//! |---|---|---|
//! | returns | at once, with the event id | when SQS confirmed, with the `MessageId` |
//! | waits on the network | never | yes, at most its timeout |
//! | failure after acceptance | failure hook + error log + counter | the caller's `Err` |
//! | throughput | batches of 10, several requests in flight | same batching, but one caller waits per event |
//! | use for | most events, request paths that must stay fast | events that must be confirmed before answering |
//!
//! Both validate the event first and fail with a clear error before anything is sent.
//! Neither loses an event silently: every accepted event ends sent or counted as failed.
//!
//! ## Example
//!
//! ```no_run
//! use std::time::Duration;
//! use wharf_core::supervisor::Supervisor;
//! use wharf_webhooks_emitter::{Emitter, Event};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
//! let emitter = Emitter::builder()
//!     .queue_url("http://127.0.0.1:5000/123456789012/webhooks")
//!     .endpoint_url("http://127.0.0.1:5000")
//!     .region("us-east-1")
//!     .credentials("test", "test")
//!     .build()?;
//! let tree = Supervisor::builder("app")
//!     .child(emitter.child_spec("webhooks"))
//!     .start()
//!     .await?;
//!
//! let event = Event::new("provider-1", "transaction.created", serde_json::json!({"amount": 42}))?;
//! emitter.emit(event.clone()).await?;                 // buffered, sent in the background
//! let sent = emitter.emit_sync(event).await?;         // confirmed by SQS
//! println!("MessageId {}", sent.message_id);
//!
//! tree.shutdown().await; // drains the buffer within drain_timeout
//! # Ok(())
//! # }
//! ```
//!
//! ## Delivery guarantees
//!
//! At least once: an event whose request timed out may have arrived and is sent again with
//! the same `id` (on FIFO queues the same `MessageDeduplicationId`), so consumers dedupe on
//! `id`. Events are lost only if the process dies abruptly; a graceful shutdown sends what
//! it can within `drain_timeout` and reports (and counts) the rest.
//!
//! A failure that carries `maybe_sent` ([`Error::Timeout`], [`Error::NotSent`],
//! [`Error::RetriesExhausted`]) says `false` only when no request carrying the event can have
//! reached SQS (none was attempted, or each attempt provably never left or was refused);
//! otherwise `true`. `emit` refuses events no worker would send ([`Error::NotStarted`],
//! [`Error::WorkerDied`]) instead of buffering them forever. Panics in the application's code
//! (the failure hook, a `Serialize`, an SQS client's interceptors) are caught and counted,
//! never propagated into the worker. See the guide (docs/webhooks-emitter.md) for the limits.

mod accounting;
mod config;
mod emitter;
mod envelope;
mod error;
mod event;
pub mod metrics;
mod pending;
mod report;
mod shared;
mod sqs;
mod worker;

/// The AWS configuration loader this crate uses.
pub use aws_config;
/// The AWS SDK for SQS this crate is built on (to pass a `Client` or `SdkConfig` through).
pub use aws_sdk_sqs;
/// The JSON crate of [`Event::from_json`].
pub use serde_json;

#[doc(inline)]
pub use config::{
    Compression, DeniedFields, EmitterBuilder, FailureHook, FullPolicy, GroupKey,
    LEGACY_MAX_MESSAGE_BYTES, MAX_MESSAGE_BYTES, QUEUE_URL_ENV, RetryPolicy,
};
#[doc(inline)]
pub use emitter::Emitter;
#[doc(inline)]
pub use envelope::{ATTR_EVENT, ATTR_ID};
#[doc(inline)]
pub use error::Error;
#[doc(inline)]
pub use event::{Event, EventId};
#[doc(inline)]
pub use report::{FailedEvent, Sent, ShutdownReport, Stats};

//! [`Publisher`]: send messages and learn when the broker has them; [`DynPublisher`] for
//! publishers chosen at run time.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;

use super::{Message, Receipt};
use crate::BoxError;

/// Sends messages to a broker and reports, for each one, whether the broker durably
/// accepted it.
///
/// A `Publisher` is the sending half of a transport: a Kafka producer bound to a topic, a
/// Pulsar producer, an SQS queue, a Redis stream, or the in-memory
/// [`MemoryPublisher`](super::MemoryPublisher). It is shared by many tasks (`&self`, `Send +
/// Sync`), typically behind an [`Arc`]; `Arc<P>` is itself a `Publisher`.
///
/// # The contract
///
/// What a caller may assume of every implementation, and what every implementation must
/// guarantee:
///
/// - **When the future resolves.** [`publish`](Self::publish) resolves with `Ok(receipt)`
///   only once the broker has *durably accepted* the message, in the broker's strongest sense
///   the publisher is configured for (Kafka: acknowledged by the in-sync replicas
///   `acks=all` asks for; Pulsar: the broker's send receipt; SQS: `SendMessage` answered with
///   a MessageId; in-memory: enqueued). The [`Receipt`] is the broker's id for it. A publisher
///   that buffers or batches internally still resolves each message's future only when that
///   message is accepted.
/// - **What an error means.** `Err` means the publisher does **not** know the message to be
///   accepted. Implementations distinguish, in their error type, "*not* accepted" (rejected,
///   never sent, queue full, closed: safe to retry without duplicates) from "*outcome
///   unknown*" (timed out or the connection dropped after sending: a retry may duplicate).
///   Callers that retry must assume duplicates are possible unless the error says otherwise.
/// - **Timeouts.** Every publish is bounded in time: the implementation owns the timeout
///   (configurable, with a sane default) and resolves with an error when it passes, so a
///   caller never waits forever on a dead connection. Callers need not wrap each call in
///   their own timeout, though they may.
/// - **Dropping the future.** Dropping a `publish` future before it resolves abandons the
///   *answer*, not necessarily the message: it may already be on the wire and may still be
///   accepted. Treat a dropped publish like an "outcome unknown" error. (The in-memory
///   publisher is the exception that proves the rule: it enqueues atomically, so a dropped
///   future there means not published.)
/// - **Backpressure.** A publisher with bounded buffers makes `publish` wait for room rather
///   than grow without bound; it documents its bound and what happens when the wait exceeds
///   its timeout.
/// - **Batches.** [`publish_batch`](Self::publish_batch) returns exactly one result per input
///   message, in input order, and each result has the meaning above, independently of the
///   others: one failed entry never hides behind a successful batch, nor fails the entries
///   the broker accepted. Implementations split a batch into broker-sized requests as needed
///   (SQS takes at most 10 entries per request).
/// - **Order.** Messages published one after another (each awaited before the next) with the
///   same key are accepted in that order where the broker orders by key. Concurrent
///   publishes and the entries of a batch carry no ordering promise beyond what the
///   implementation documents.
///
/// # Errors
///
/// Each transport has its own error enum ([`Self::Error`]); the in-memory publisher uses
/// [`crate::Error`]. Code that handles publishers of several kinds at once uses
/// [`DynPublisher`], whose errors are boxed.
///
/// # Example
///
/// Code written against the trait runs on any transport, including the in-memory one in
/// tests:
///
/// ```
/// use wharf_core::transport::{MemoryQueue, Message, Publisher, Receipt};
///
/// async fn announce<P: Publisher>(publisher: &P, order: u64) -> Result<Receipt, P::Error> {
///     let message = Message::new(format!("order {order} shipped")).with_key(order.to_string());
///     publisher.publish(message).await
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wharf_core::Error> {
/// let queue = MemoryQueue::new(16);
/// let receipt = announce(&queue.publisher(), 42).await?;
/// assert_eq!(receipt, Receipt::Memory { sequence: 0 });
/// # Ok(())
/// # }
/// ```
pub trait Publisher: Send + Sync {
    /// Why a message was not (or not known to be) accepted. See "What an error means" above.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Sends one message; resolves with the broker's [`Receipt`] once the broker has durably
    /// accepted it, or with an error (bounded in time by the implementation).
    fn publish(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<Receipt, Self::Error>> + Send;

    /// Sends several messages; resolves with one result per message, in input order.
    ///
    /// The default publishes them one after another, awaiting each (so it keeps their order
    /// and stops at nothing: a failed message does not prevent the next from being tried).
    /// Transports with a batch request override it.
    fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> impl Future<Output = Vec<Result<Receipt, Self::Error>>> + Send {
        async move {
            let mut results = Vec::with_capacity(messages.len());
            for message in messages {
                results.push(self.publish(message).await);
            }
            results
        }
    }
}

impl<P: Publisher> Publisher for Arc<P> {
    type Error = P::Error;

    fn publish(
        &self,
        message: Message,
    ) -> impl Future<Output = Result<Receipt, Self::Error>> + Send {
        (**self).publish(message)
    }

    fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> impl Future<Output = Vec<Result<Receipt, Self::Error>>> + Send {
        (**self).publish_batch(messages)
    }
}

/// The object-safe form of [`Publisher`], for publishers chosen at run time (a dead-letter
/// target read from configuration, a list of outputs of different kinds).
///
/// Every `Publisher` is a `DynPublisher` (a blanket implementation adapts it), so
/// `Arc<dyn DynPublisher>` holds any of them. Futures are boxed and errors are
/// [`BoxError`]s; the contract is [`Publisher`]'s, unchanged. To see the transport's own
/// error, downcast: `error.downcast_ref::<wharf_core::Error>()` for the in-memory queue.
///
/// The methods have their own names (`publish_boxed`) so that calling
/// [`Publisher::publish`] on a concrete type never becomes ambiguous.
///
/// ```
/// use std::sync::Arc;
/// use wharf_core::transport::{DynPublisher, MemoryQueue, Message};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wharf_core::BoxError> {
/// let dead_letters = MemoryQueue::new(8);
/// let target: Arc<dyn DynPublisher> = Arc::new(dead_letters.publisher());
///
/// let receipt = target.publish_boxed(Message::new("poison")).await?;
/// assert_eq!(receipt.to_string(), "memory:0");
/// # Ok(())
/// # }
/// ```
pub trait DynPublisher: Send + Sync {
    /// [`Publisher::publish`], boxed.
    fn publish_boxed(&self, message: Message) -> BoxFuture<'_, Result<Receipt, BoxError>>;

    /// [`Publisher::publish_batch`], boxed: one result per message, in input order.
    fn publish_batch_boxed(
        &self,
        messages: Vec<Message>,
    ) -> BoxFuture<'_, Vec<Result<Receipt, BoxError>>>;
}

impl<P: Publisher> DynPublisher for P {
    fn publish_boxed(&self, message: Message) -> BoxFuture<'_, Result<Receipt, BoxError>> {
        Box::pin(async move { self.publish(message).await.map_err(BoxError::from) })
    }

    fn publish_batch_boxed(
        &self,
        messages: Vec<Message>,
    ) -> BoxFuture<'_, Vec<Result<Receipt, BoxError>>> {
        Box::pin(async move {
            self.publish_batch(messages)
                .await
                .into_iter()
                .map(|result| result.map_err(BoxError::from))
                .collect()
        })
    }
}

//! [`Source`]: a stream of [`Delivery`] values from a broker.

use std::future::Future;

use futures::Stream;

use super::Delivery;

/// Receives messages from a broker, one [`Delivery`] at a time, each to be acked, nacked or
/// dropped (see [`Delivery`] for what each means).
///
/// A `Source` is the receiving half of a transport: a Kafka consumer, a Pulsar
/// subscription, an SQS queue poller, a Redis job worker, or the in-memory
/// [`MemorySource`](super::MemorySource). It is owned by one consuming task (`&mut self`);
/// to consume in parallel, create several sources (they compete for messages, as consumers
/// of one queue or one consumer group do) or hand deliveries to workers, since deliveries
/// are `Send` and are settled independently.
///
/// # The contract
///
/// - **`Some(Ok(delivery))`**: a message. It stays reserved for this consumer (in flight)
///   until it is settled; other consumers of the same queue do not get it meanwhile (for
///   brokers with leases, until the lease expires).
/// - **`Some(Err(error))`**: receiving failed this time (a dropped connection, a rejected
///   poll). The source keeps its state and may be called again; an implementation that
///   reconnects does so within later calls, with backoff. Errors are about receiving, never
///   about a particular message, so no message is lost by one.
/// - **`None`**: the source has ended (its queue was closed and drained, the consumer was
///   shut down, or it failed for good after reporting the error). Every later call returns
///   `None` again, at once.
/// - **Waiting.** `recv` waits while there is nothing to deliver: idle queues are normal. A
///   caller that needs to stop waiting uses cancellation (below), not an error.
/// - **Cancellation safety.** `recv` must be cancel safe: dropping its future before it
///   resolves loses no message (a message the transport had already taken for it is
///   released for redelivery, or kept for the next call). So `recv` can be a branch of
///   `tokio::select!`, for example next to a shutdown signal.
/// - **Bounded.** A source prefetches a bounded number of messages, documented, so that a
///   slow consumer holds bounded memory and the broker keeps the rest.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wharf_core::Error> {
/// let queue = MemoryQueue::new(16);
/// queue.publisher().publish(Message::new("hello")).await?;
/// queue.close(); // the source ends once it has handed out and settled everything
///
/// let mut source = queue.source();
/// while let Some(delivery) = source.recv().await {
///     let delivery = delivery?;
///     if delivery.attempt() == 1 {
///         // Pretend the first attempt failed: try again in a moment.
///         delivery.nack(Duration::from_millis(10)).await?;
///     } else {
///         delivery.ack().await?;
///     }
/// }
/// assert_eq!(queue.stats().acked, 1);
/// # Ok(())
/// # }
/// ```
pub trait Source: Send {
    /// Why a receive failed. See "The contract" above.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Waits for the next delivery; `None` once the source has ended.
    fn recv(&mut self) -> impl Future<Output = Option<Result<Delivery, Self::Error>>> + Send;

    /// This source as a [`Stream`], to use the combinators of
    /// [`StreamExt`](futures::StreamExt). The stream ends when [`recv`](Self::recv) returns
    /// `None`.
    fn into_stream(self) -> impl Stream<Item = Result<Delivery, Self::Error>> + Send
    where
        Self: Sized,
    {
        futures::stream::unfold(self, |mut source| async move {
            let item = source.recv().await?;
            Some((item, source))
        })
    }
}

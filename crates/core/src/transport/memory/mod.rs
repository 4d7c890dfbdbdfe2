//! The in-memory transport: [`MemoryQueue`], its [`MemoryPublisher`] and [`MemorySource`].

mod publisher;
mod source;
mod state;

use std::sync::Arc;

pub use publisher::MemoryPublisher;
pub use source::MemorySource;

use state::Shared;

/// A bounded, in-memory message queue with acknowledgement and redelivery, implementing
/// [`Publisher`](super::Publisher) and [`Source`](super::Source) for examples and tests.
///
/// It behaves like a broker queue (SQS, a RabbitMQ queue, a Pulsar shared subscription), so
/// code tested against it meets the same situations in production: backpressure,
/// redelivery after a failure, competing consumers, at-least-once delivery.
///
/// - **Clone** shares the queue: every clone, publisher and source talks to the same messages.
/// - **Competing consumers**: each message goes to one [`source`](Self::source) at a time;
///   several sources share the work.
/// - **Bounded**: `capacity` bounds every message the queue holds: queued, waiting out a nack
///   delay, or in flight (delivered and not yet settled). A slot frees up only when a
///   delivery is acked. When the queue is full, [`publish`](super::Publisher::publish) waits (up to its
///   timeout) and [`MemoryPublisher::try_publish`] fails at once with
///   [`Error::QueueFull`](crate::Error::QueueFull). Waiting publishers get room in the order
///   they started waiting.
/// - **Settling** a [`Delivery`](super::Delivery): see the table below. A nacked message
///   goes to the back so that a message that keeps failing cannot block the others; a
///   dropped one goes to the front because it was never judged. Redelivery therefore keeps
///   publication order only when deliveries are acked or dropped, not nacked.
/// - **Closing**: [`close`](Self::close) stops publishing (publishers get
///   [`Error::QueueClosed`](crate::Error::QueueClosed), including those waiting for room);
///   sources keep delivering what remains, including redeliveries, and return `None` once
///   nothing is queued, delayed or in flight.
/// - **Receipts** are [`Receipt::Memory`](super::Receipt::Memory) with the sequence number
///   of publication (0, 1, 2, ...); deliveries carry it as their `id` and `offset`.
///
/// | Consumer | Queue | Attempt |
/// |---|---|---|
/// | `ack()` | removes the message and frees its slot | - |
/// | `nack(delay)` | after `delay` (clamped to [`MAX_NACK_DELAY`](Self::MAX_NACK_DELAY)), queues it at the back | +1 |
/// | drops it | queues it at the front, at once | +1 |
///
/// Timers (publish timeout, nack delay) use tokio's clock, so the queue needs a tokio runtime
/// with time enabled, and tests can run it with paused time
/// (`#[tokio::test(start_paused = true)]`).
///
/// ```
/// use wharf_core::transport::{MemoryQueue, Message, Publisher, Source};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), wharf_core::Error> {
/// let queue = MemoryQueue::new(2);
/// let publisher = queue.publisher();
/// publisher.publish(Message::new("a")).await?;
/// publisher.publish(Message::new("b")).await?;
/// assert!(publisher.try_publish(Message::new("c")).is_err(), "full");
///
/// let mut source = queue.source();
/// let first = source.recv().await.expect("queue open")?;
/// assert_eq!(first.message().payload().as_ref(), b"a");
/// first.ack().await?;
/// publisher.try_publish(Message::new("c"))?; // the ack freed a slot
///
/// let stats = queue.stats();
/// assert_eq!((stats.queued, stats.in_flight, stats.acked), (2, 0, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

impl MemoryQueue {
    /// The longest delay [`Delivery::nack`](super::Delivery::nack) waits on this queue: 12
    /// hours, like SQS. Longer delays are clamped to it.
    pub const MAX_NACK_DELAY: std::time::Duration = std::time::Duration::from_secs(12 * 60 * 60);

    /// A queue that holds at most `capacity` messages (queued, delayed and in flight).
    ///
    /// # Panics
    ///
    /// If `capacity` is 0 (nothing could ever be published) or larger than
    /// [`tokio::sync::Semaphore::MAX_PERMITS`].
    pub fn new(capacity: usize) -> Self {
        assert!(
            capacity > 0 && capacity <= tokio::sync::Semaphore::MAX_PERMITS,
            "MemoryQueue capacity must be between 1 and {}, got {capacity}",
            tokio::sync::Semaphore::MAX_PERMITS
        );
        Self {
            shared: Arc::new(Shared::new(capacity)),
        }
    }

    /// A publisher for this queue, with the default publish timeout
    /// ([`MemoryPublisher::DEFAULT_TIMEOUT`]).
    pub fn publisher(&self) -> MemoryPublisher {
        MemoryPublisher::new(self.shared.clone())
    }

    /// A new consumer of this queue, competing with the others for messages.
    pub fn source(&self) -> MemorySource {
        MemorySource::new(self.shared.clone())
    }

    /// Stops accepting messages; sources end after delivering and settling what remains.
    /// Closing twice is harmless.
    pub fn close(&self) {
        self.shared.close();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// The bound given to [`new`](Self::new).
    pub fn capacity(&self) -> usize {
        self.shared.capacity()
    }

    /// A consistent snapshot of the queue's counts, for tests and metrics.
    pub fn stats(&self) -> MemoryQueueStats {
        self.shared.stats()
    }
}

/// A snapshot of a [`MemoryQueue`]'s counts, taken at one instant.
///
/// At every instant `published == acked + queued + delayed + in_flight` and
/// `queued + delayed + in_flight <= capacity`.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryQueueStats {
    /// The queue's capacity.
    pub capacity: usize,
    /// Messages ready to be delivered now.
    pub queued: usize,
    /// Nacked messages waiting out their delay.
    pub delayed: usize,
    /// Messages delivered and not yet settled.
    pub in_flight: usize,
    /// Messages accepted by `publish` since the queue was created.
    pub published: u64,
    /// Deliveries handed to sources, first deliveries and redeliveries alike.
    pub delivered: u64,
    /// Deliveries acked (each message is acked at most once).
    pub acked: u64,
    /// Deliveries nacked.
    pub nacked: u64,
    /// Deliveries dropped without being settled.
    pub released: u64,
}

impl MemoryQueueStats {
    /// Messages the queue holds: queued, delayed and in flight. Never above `capacity`.
    pub fn held(&self) -> usize {
        self.queued + self.delayed + self.in_flight
    }
}

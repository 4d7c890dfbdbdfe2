//! [`MemoryPublisher`]: the publishing half of a [`MemoryQueue`](super::MemoryQueue).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::TryAcquireError;

use super::state::Shared;
use crate::Error;
use crate::transport::{Message, Publisher, Receipt};

/// Publishes to a [`MemoryQueue`](super::MemoryQueue); from
/// [`MemoryQueue::publisher`](super::MemoryQueue::publisher). Cheap to clone.
///
/// A message is "durably accepted" once it is in the queue, so [`publish`](Publisher::publish)
/// resolves as soon as there is room. When the queue is full it waits, first come first
/// served, until an ack frees a slot, for at most its [timeout](Self::with_timeout). Dropping
/// the future before it resolves means the message was **not** published: enqueueing is
/// atomic.
///
/// | Method | Queue full | Queue closed |
/// |---|---|---|
/// | [`publish`](Publisher::publish) | waits; [`Error::PublishTimedOut`] after the timeout | [`Error::QueueClosed`] |
/// | [`try_publish`](Self::try_publish) | [`Error::QueueFull`] at once | [`Error::QueueClosed`] |
///
/// Every error here means "not published": retrying never duplicates.
#[derive(Clone, Debug)]
pub struct MemoryPublisher {
    shared: Arc<Shared>,
    timeout: Duration,
}

impl MemoryPublisher {
    /// How long [`publish`](Publisher::publish) waits for room by default: 30 seconds.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            timeout: Self::DEFAULT_TIMEOUT,
        }
    }

    /// Sets how long [`publish`](Publisher::publish) waits for room in a full queue before
    /// failing with [`Error::PublishTimedOut`].
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Publishes without waiting.
    ///
    /// # Errors
    ///
    /// [`Error::QueueFull`] if the queue holds `capacity` messages, [`Error::QueueClosed`] if
    /// it was closed. Either way the message was not published.
    pub fn try_publish(&self, message: Message) -> Result<Receipt, Error> {
        match self.shared.room().try_acquire() {
            Ok(permit) => self.shared.enqueue(permit, message),
            Err(TryAcquireError::NoPermits) => Err(Error::QueueFull {
                capacity: self.shared.capacity(),
            }),
            Err(TryAcquireError::Closed) => Err(Error::QueueClosed),
        }
    }
}

impl Publisher for MemoryPublisher {
    type Error = Error;

    /// Waits for room (at most the timeout), then enqueues.
    async fn publish(&self, message: Message) -> Result<Receipt, Error> {
        let acquired = tokio::time::timeout(self.timeout, self.shared.room().acquire()).await;
        match acquired {
            Ok(Ok(permit)) => self.shared.enqueue(permit, message),
            Ok(Err(_closed)) => Err(Error::QueueClosed),
            Err(_elapsed) => Err(Error::PublishTimedOut {
                capacity: self.shared.capacity(),
                after: self.timeout,
            }),
        }
    }
}

//! [`MemorySource`]: a consumer of a [`MemoryQueue`](super::MemoryQueue), and the
//! acknowledger behind its deliveries.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use super::state::{Entry, Next, Shared};
use crate::transport::{Acknowledger, Delivery, DeliveryInfo, Receipt, Source};
use crate::{BoxError, Error};

/// One consumer of a [`MemoryQueue`](super::MemoryQueue); from
/// [`MemoryQueue::source`](super::MemoryQueue::source).
///
/// Sources of one queue compete: each message goes to one of them at a time. A source holds
/// no messages of its own (no prefetch): what it has not received stays in the queue for the
/// others. [`recv`](Source::recv) is cancel safe, never returns `Some(Err(_))`, and returns
/// `None` once the queue is closed and holds nothing (queued, delayed or in flight).
///
/// Deliveries carry `attempt`, `offset` (the publication sequence number) and `id`
/// ([`Receipt::Memory`]); there are no partitions. Their `ack` and `nack` take effect when
/// called and always succeed.
#[derive(Debug)]
pub struct MemorySource {
    shared: Arc<Shared>,
}

impl MemorySource {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    fn delivery(&self, entry: Entry) -> Delivery {
        let info = DeliveryInfo::new(entry.deliveries)
            .with_offset(entry.sequence)
            .with_id(Receipt::Memory {
                sequence: entry.sequence,
            });
        let message = entry.message.clone();
        let acknowledger = MemoryAcknowledger {
            shared: self.shared.clone(),
            entry,
        };
        Delivery::new(message, info, acknowledger)
    }
}

impl Source for MemorySource {
    type Error = Error;

    async fn recv(&mut self) -> Option<Result<Delivery, Error>> {
        loop {
            // Register interest before looking, so a change made between the look and the
            // wait still wakes us.
            let mut changed = pin!(self.shared.changed().notified());
            changed.as_mut().enable();
            match self.shared.next() {
                // Taking the entry and returning it happen with no `.await` between:
                // dropping this future can never lose a message.
                Next::Deliver(entry) => return Some(Ok(self.delivery(entry))),
                Next::Ended => return None,
                Next::Wait(None) => changed.await,
                Next::Wait(Some(due)) => {
                    tokio::select! {
                        () = changed => {}
                        () = tokio::time::sleep_until(due) => {}
                    }
                }
            }
        }
    }
}

/// Settles one in-flight entry of the queue; taking `Box<Self>` makes that happen once.
#[derive(Debug)]
struct MemoryAcknowledger {
    shared: Arc<Shared>,
    entry: Entry,
}

impl Acknowledger for MemoryAcknowledger {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BoxError>> {
        self.shared.ack();
        Box::pin(std::future::ready(Ok(())))
    }

    fn nack(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), BoxError>> {
        let Self { shared, entry } = *self;
        shared.nack(entry, delay);
        Box::pin(std::future::ready(Ok(())))
    }

    fn release(self: Box<Self>) {
        let Self { shared, entry } = *self;
        shared.release(entry);
    }
}

//! [`Delivery`]: a received message with its metadata and its acknowledgement handle.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::future::BoxFuture;

use super::{Message, Receipt};
use crate::{BoxError, Error};

/// One message received from a [`Source`](super::Source), to be settled exactly once: with
/// [`ack`](Self::ack), with [`nack`](Self::nack), or by being dropped.
///
/// | You call | The transport | Use it when |
/// |---|---|---|
/// | [`ack()`](Self::ack) | forgets the message for good | it was handled (or deliberately discarded) |
/// | [`nack(delay)`](Self::nack) | delivers it again, not before `delay` | handling failed and may succeed later |
/// | neither: drop it | delivers it again (see below) | the handler crashed, or was cancelled |
///
/// `ack` and `nack` take the delivery by value, so the compiler makes sure it is settled at
/// most once; dropping it is the third way, so it is settled exactly once.
///
/// # Dropping without settling
///
/// A delivery dropped without `ack` or `nack` (a handler that panicked or returned early, a
/// task that was aborted) is **never lost and never counted as handled**: the transport
/// delivers it again, with [`DeliveryInfo::attempt`] one higher. *When* depends on what the
/// broker can do, and each transport documents it:
///
/// - at once, where the broker can be told (the in-memory queue; Pulsar's negative
///   acknowledgement; SQS `ChangeMessageVisibility` to 0; a Redis job put back);
/// - otherwise when the broker's lease on it expires (the SQS visibility timeout) or when the
///   consumer restarts or rebalances (Kafka, where an offset is never committed past a
///   message that was not acked).
///
/// # Awaiting the acknowledgement
///
/// [`ack`](Self::ack) and [`nack`](Self::nack) hand the decision to the transport **when they
/// are called**; the future they return tells whether the broker recorded it. Awaiting it is
/// how a consumer learns that an acknowledgement was lost (an SQS `DeleteMessage` that failed,
/// a Pulsar connection that dropped), which the originals only logged. Dropping the future
/// without awaiting it is allowed: the decision stays handed over, only the answer is lost.
///
/// Acknowledgement is asynchronous because for SQS, Pulsar and Redis it is a network request
/// whose failure the caller must be able to see; a transport that records acks locally
/// (Kafka stores the offset for its next commit; the in-memory queue) returns a future that is
/// already complete, at the cost of one small allocation.
///
/// `Ok` from `ack` means "recorded by the transport": for brokers that commit in batches
/// (Kafka) a crash before the next commit still redelivers the message. Delivery is at least
/// once everywhere; handlers must be idempotent.
pub struct Delivery {
    message: Message,
    info: DeliveryInfo,
    // `Some` until the delivery is settled; `Drop` releases it if it is still here.
    acknowledger: Option<Box<dyn Acknowledger>>,
}

impl Delivery {
    /// Builds a delivery; for implementors of [`Source`](super::Source).
    pub fn new(
        message: Message,
        info: DeliveryInfo,
        acknowledger: impl Acknowledger + 'static,
    ) -> Self {
        Self {
            message,
            info,
            acknowledger: Some(Box::new(acknowledger)),
        }
    }

    /// The message.
    pub fn message(&self) -> &Message {
        &self.message
    }

    /// What the transport knows about this delivery: attempt, partition, offset, id.
    pub fn info(&self) -> &DeliveryInfo {
        &self.info
    }

    /// Which delivery of this message this is: 1 for the first, 2 for the first redelivery, ...
    pub fn attempt(&self) -> u32 {
        self.info.attempt
    }

    /// Settles the delivery as handled: the transport will not deliver it again.
    ///
    /// The acknowledgement is handed over when this is called; await the future to learn
    /// whether the broker recorded it.
    ///
    /// # Errors
    ///
    /// [`Error::AckFailed`] if the transport could not record it; the message may then be
    /// delivered again.
    pub fn ack(mut self) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let info = std::mem::take(&mut self.info);
        let pending = self.acknowledger.take().map(|a| a.ack());
        async move {
            let Some(pending) = pending else {
                return Ok(());
            };
            pending.await.map_err(|cause| Error::AckFailed {
                delivery: info.describe(),
                cause,
            })
        }
    }

    /// Settles the delivery as not handled: the transport delivers it again, not before
    /// `delay` has passed (`Duration::ZERO`: as soon as it can).
    ///
    /// A transport may round `delay` up to its granularity and clamp it to its maximum (SQS
    /// counts whole seconds up to 12 hours); it documents both. Use a retry policy such as
    /// [`Backoff`](crate::Backoff) with [`attempt`](Self::attempt) to choose the delay, and
    /// stop retrying (dead-letter, then `ack`) after a bound of your choice: `nack` alone
    /// retries forever.
    ///
    /// # Errors
    ///
    /// [`Error::NackFailed`] if the transport could not record it; the message is then
    /// delivered again when the broker's lease on it expires, possibly sooner than `delay`.
    pub fn nack(
        mut self,
        delay: Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send + 'static {
        let info = std::mem::take(&mut self.info);
        let pending = self.acknowledger.take().map(|a| a.nack(delay));
        async move {
            let Some(pending) = pending else {
                return Ok(());
            };
            pending.await.map_err(|cause| Error::NackFailed {
                delivery: info.describe(),
                cause,
            })
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if let Some(acknowledger) = self.acknowledger.take() {
            acknowledger.release();
        }
    }
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("info", &self.info)
            .field("settled", &self.acknowledger.is_none())
            .finish()
    }
}

/// What a transport knows about one delivery, beyond the message itself.
///
/// Fields a broker does not provide are `None`. Marked `#[non_exhaustive]`: read the fields
/// directly, build it with [`new`](Self::new) and the `with_` methods.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryInfo {
    /// Which delivery of this message this is, counting from 1 (so `attempt - 1` is the number
    /// of redeliveries, what a retry policy counts). Brokers that count redeliveries report
    /// theirs (Pulsar's redelivery count + 1, SQS's `ApproximateReceiveCount`); brokers that
    /// do not (Kafka) report what the consumer has seen itself since it started.
    pub attempt: u32,
    /// The partition the message came from, for brokers that have partitions (Kafka, a
    /// partitioned Pulsar topic). Order and offsets are per partition.
    pub partition: Option<u32>,
    /// The message's position within its partition, increasing in the order the broker
    /// stored the messages (the Kafka offset; the in-memory sequence). A consumer that handles
    /// messages concurrently commits below the lowest offset not yet handled.
    pub offset: Option<u64>,
    /// The broker's id for the message, the same [`Receipt`] its publisher got.
    pub id: Option<Receipt>,
}

impl DeliveryInfo {
    /// Metadata for the `attempt`-th delivery (1 for the first), with nothing else known.
    pub fn new(attempt: u32) -> Self {
        Self {
            attempt,
            partition: None,
            offset: None,
            id: None,
        }
    }

    /// Sets the partition.
    #[must_use]
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the offset within the partition.
    #[must_use]
    pub fn with_offset(mut self, offset: u64) -> Self {
        self.offset = Some(offset);
        self
    }

    /// Sets the broker's id for the message.
    #[must_use]
    pub fn with_id(mut self, id: Receipt) -> Self {
        self.id = Some(id);
        self
    }

    /// How many times this message was delivered before this delivery.
    pub fn redeliveries(&self) -> u32 {
        self.attempt.saturating_sub(1)
    }

    fn describe(&self) -> String {
        match &self.id {
            Some(id) => format!("{id} (attempt {})", self.attempt),
            None => format!("without an id (attempt {})", self.attempt),
        }
    }
}

impl Default for DeliveryInfo {
    /// A first delivery with nothing else known.
    fn default() -> Self {
        Self::new(1)
    }
}

/// The transport's side of a [`Delivery`]: how to ack it, nack it, or release it.
///
/// Implemented by each transport (Kafka: store or commit the offset; Pulsar: ack or
/// negative-ack the message id; SQS: `DeleteMessage` or `ChangeMessageVisibility`; Redis:
/// complete or requeue the job; the in-memory queue). Users of a transport never call it;
/// they call [`Delivery::ack`] and [`Delivery::nack`].
///
/// Each method takes `self: Box<Self>`, so exactly one of them runs, once, for each
/// delivery. `ack` and `nack` do their work (or start it) *when called*, and return a future
/// that reports the broker's answer; it must be bounded in time, like any network wait in
/// wharf. Dropping that future must not cancel the decision.
///
/// `Send + Sync` so that a `Delivery` can be borrowed across `.await` points in spawned tasks.
pub trait Acknowledger: Send + Sync {
    /// The message was handled: never deliver it again.
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BoxError>>;

    /// The message was not handled: deliver it again, not before `delay` (round up to the
    /// broker's granularity, clamp to its maximum, and document both).
    fn nack(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), BoxError>>;

    /// The delivery was dropped without `ack` or `nack`. Called from `Drop`, so it must not
    /// block: fire a request (on a task or into the consumer's channel, bounded) or do
    /// nothing and let the broker's lease expire. The default does nothing.
    fn release(self: Box<Self>) {}
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Debug, Default, Clone)]
    struct Recorder(Arc<Mutex<Vec<String>>>);

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.0.lock().map(|calls| calls.clone()).unwrap_or_default()
        }
        fn record(&self, call: String) {
            if let Ok(mut calls) = self.0.lock() {
                calls.push(call);
            }
        }
    }

    impl Acknowledger for Recorder {
        fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BoxError>> {
            self.record("ack".into());
            Box::pin(async { Ok(()) })
        }
        fn nack(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), BoxError>> {
            self.record(format!("nack {delay:?}"));
            Box::pin(async { Err("broker gone".into()) })
        }
        fn release(self: Box<Self>) {
            self.record("release".into());
        }
    }

    fn delivery(recorder: &Recorder) -> Delivery {
        let info = DeliveryInfo::new(2).with_id(Receipt::Memory { sequence: 9 });
        Delivery::new(Message::new("m"), info, recorder.clone())
    }

    #[test]
    fn ack_is_handed_over_when_called_even_if_never_awaited() {
        let recorder = Recorder::default();
        drop(delivery(&recorder).ack());
        assert_eq!(recorder.calls(), ["ack"]);
    }

    #[test]
    fn dropping_an_unsettled_delivery_releases_it_once() {
        let recorder = Recorder::default();
        drop(delivery(&recorder));
        assert_eq!(recorder.calls(), ["release"]);
    }

    #[tokio::test]
    async fn a_failed_nack_names_the_delivery_and_keeps_the_cause() {
        let recorder = Recorder::default();
        let error = delivery(&recorder)
            .nack(Duration::from_secs(1))
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("memory:9 (attempt 2)"), "{error}");
        assert!(error.contains("broker gone"), "{error}");
        assert_eq!(recorder.calls(), ["nack 1s"], "nack must not also release");
    }

    #[test]
    fn deliveries_are_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Delivery>();
    }
}

//! wharf-core's [`Publisher`] and [`Source`] over the wrapper's producers and consumers.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use wharf_core::BoxError;
use wharf_core::transport::{
    Acknowledger, Delivery, DeliveryInfo, Headers, Message, Publisher, Receipt, Source,
};

use crate::consumer::{ConsumerSpec, Handler, HandlerKind, Outcome};
use crate::error::{Error, Result};
use crate::message::{ConsumedMessage, Delivered, Record};
use crate::producer::Producer;
use crate::wrapper::KafkaWrapper;

/// A [`Producer`] bound to one topic: wharf-core's [`Publisher`] for Kafka.
///
/// `publish` resolves when the broker acknowledged the record (acks=all) with
/// [`Receipt::Kafka`]; the message key picks the partition as the Java client does.
#[derive(Clone, Debug)]
pub struct TopicPublisher {
    producer: Producer,
    topic: String,
}

impl Producer {
    /// This producer as a wharf-core [`Publisher`] to `topic`.
    pub fn publisher(&self, topic: impl Into<String>) -> TopicPublisher {
        TopicPublisher {
            producer: self.clone(),
            topic: topic.into(),
        }
    }
}

impl TopicPublisher {
    fn record(&self, m: Message) -> Record {
        let mut r = Record::new(self.topic.clone(), m.payload().clone());
        if let Some(k) = m.key() {
            r = r.key(k.clone());
        }
        for (name, value) in m.headers().iter() {
            r = r.header(name, value.clone());
        }
        if let Some(ms) = m
            .event_time()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        {
            r = r.timestamp_ms(i64::try_from(ms.as_millis()).unwrap_or(i64::MAX));
        }
        r
    }
}

fn receipt(d: Delivered) -> Receipt {
    Receipt::Kafka {
        partition: d.partition,
        offset: d.offset,
    }
}

impl Publisher for TopicPublisher {
    type Error = Error;

    async fn publish(&self, message: Message) -> Result<Receipt> {
        self.producer.send(self.record(message)).await.map(receipt)
    }

    async fn publish_batch(&self, messages: Vec<Message>) -> Vec<Result<Receipt>> {
        let records = messages.into_iter().map(|m| self.record(m)).collect();
        self.producer
            .send_batch(records)
            .await
            .into_iter()
            .map(|r| r.map(receipt))
            .collect()
    }
}

/// A group consumer as wharf-core's [`Source`]: a stream of [`Delivery`] values.
///
/// How many deliveries of one partition are out at once is the spec's
/// [`in_flight_per_partition`](ConsumerSpec::in_flight_per_partition) (default 1):
///
/// - With 1, per-partition order holds: a partition hands out its next message only once
///   the current one is settled (spawn the handling of each delivery to work on partitions
///   in parallel).
/// - With `n` > 1, up to `n` deliveries per partition are out at once, handed out in
///   offset order (also after a rebalance or a rebuild, from the committed offset on), for
///   a consumer that keeps the order it needs itself (per key, as `wharf-sharded-consumer`
///   does). A nacked or dropped delivery comes back after newer ones.
///
/// `ack` marks the offset handled (committed once every earlier one is); `nack(delay)`
/// delivers the same message again after `delay`; dropping a delivery unsettled delivers it
/// again at once. Offsets are never committed past an unsettled delivery. Dropping the source removes its consumer from
/// the wrapper at once (so the same spec can be added again right away, as a supervisor
/// restarting the owner does); the old consumer drains and commits in the background.
pub struct KafkaSource {
    rx: mpsc::Receiver<Delivery>,
    name: String,
    wrapper: KafkaWrapper,
    shared: std::sync::Arc<crate::consumer::ConsumerShared>,
}

impl fmt::Debug for KafkaSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSource")
            .field("name", &self.name)
            .finish()
    }
}

/// Answers a delivery. With `otel`, it also holds the delivery's `kafka_delivery` span, so
/// that the span lasts until the delivery is settled.
struct KafkaAck(
    oneshot::Sender<Outcome>,
    // Held, never read: the span closes when the acknowledger is consumed or dropped.
    #[cfg(feature = "otel")]
    #[allow(dead_code)]
    tracing::Span,
);

impl Acknowledger for KafkaAck {
    fn ack(self: Box<Self>) -> BoxFuture<'static, Result<(), BoxError>> {
        let _ = self.0.send(Outcome::Ack);
        Box::pin(async { Ok(()) })
    }
    fn nack(self: Box<Self>, delay: Duration) -> BoxFuture<'static, Result<(), BoxError>> {
        let _ = self.0.send(Outcome::Retry(delay));
        Box::pin(async { Ok(()) })
    }
    fn release(self: Box<Self>) {
        let _ = self.0.send(Outcome::Retry(Duration::ZERO));
    }
}

fn to_delivery(m: ConsumedMessage, ack: KafkaAck) -> Delivery {
    let headers: Headers = m
        .headers()
        .iter()
        .map(|(k, v)| (k.into_owned(), Bytes::copy_from_slice(v)))
        .collect();
    let mut msg = Message::new(Bytes::copy_from_slice(m.payload())).with_headers(headers);
    if let Some(k) = m.key() {
        msg = msg.with_key(Bytes::copy_from_slice(k));
    }
    if let Some(ts) = m.timestamp_ms().and_then(|t| u64::try_from(t).ok()) {
        msg = msg.with_event_time(SystemTime::UNIX_EPOCH + Duration::from_millis(ts));
    }
    let mut info = DeliveryInfo::new(m.attempt()).with_id(Receipt::Kafka {
        partition: m.partition(),
        offset: m.offset(),
    });
    if let Ok(p) = u32::try_from(m.partition()) {
        info = info.with_partition(p);
    }
    if let Ok(o) = u64::try_from(m.offset()) {
        info = info.with_offset(o);
    }
    Delivery::new(msg, info, ack)
}

/// Where a `KafkaSource`'s consumer hands its messages out: the source's bounded channel.
/// A worker reserves room before it takes the next message, so that a partition's messages
/// go out in offset order however many are in flight.
#[derive(Clone)]
pub(crate) struct SourceSink {
    tx: mpsc::Sender<Delivery>,
}

/// Room reserved in a source's channel for one delivery.
pub(crate) struct Room(mpsc::OwnedPermit<Delivery>);

impl Room {
    /// Hands `m` out; the future resolves to what the source's user answered (a delivery
    /// dropped unsettled counts as `Retry` at once).
    pub(crate) fn hand_out(self, m: ConsumedMessage) -> BoxFuture<'static, Outcome> {
        let (otx, orx) = oneshot::channel();
        #[cfg(feature = "otel")]
        let ack = KafkaAck(otx, crate::trace::delivery_span(&m));
        #[cfg(not(feature = "otel"))]
        let ack = KafkaAck(otx);
        self.0.send(to_delivery(m, ack));
        Box::pin(async move { orx.await.unwrap_or(Outcome::Retry(Duration::ZERO)) })
    }
}

impl SourceSink {
    /// Room for one delivery if there is some now; `None` when the channel is full (or the
    /// source is gone: [`reserve`](Self::reserve) then says so).
    pub(crate) fn try_reserve(&self) -> Option<Room> {
        self.tx.clone().try_reserve_owned().ok().map(Room)
    }

    /// Waits for room (cancel safe); `None` when the source was dropped.
    pub(crate) async fn reserve(&self) -> Option<Room> {
        self.tx.clone().reserve_owned().await.ok().map(Room)
    }

    /// Hands `m` out once there is room and resolves to the answer. A source that is gone
    /// (its consumer is being removed) keeps the offset: `Retry` after a second.
    pub(crate) fn deliver(&self, m: ConsumedMessage) -> BoxFuture<'static, Outcome> {
        let sink = self.clone();
        Box::pin(async move {
            match sink.reserve().await {
                Some(room) => room.hand_out(m).await,
                None => Outcome::Retry(Duration::from_secs(1)),
            }
        })
    }
}

impl KafkaWrapper {
    /// Registers a group consumer whose messages come out of the returned [`KafkaSource`]
    /// instead of a handler. `spec`'s handler is replaced; `buffer` bounds the deliveries
    /// waiting in the source.
    pub fn add_source(&self, spec: ConsumerSpec, buffer: usize) -> Result<KafkaSource> {
        let (tx, rx) = mpsc::channel(buffer.max(1));
        let mut spec = spec;
        spec.handler = Handler {
            kind: HandlerKind::Source(SourceSink { tx }),
        };
        let name = spec.name.clone();
        let handle = self.add_consumer(spec)?;
        Ok(KafkaSource {
            rx,
            name,
            wrapper: self.clone(),
            shared: handle.shared,
        })
    }
}

impl Source for KafkaSource {
    type Error = Error;

    async fn recv(&mut self) -> Option<Result<Delivery>> {
        self.rx.recv().await.map(Ok)
    }
}

impl Drop for KafkaSource {
    fn drop(&mut self) {
        // The name is free at once (a registration under it retires this consumer first),
        // so a restarted owner can register the source again right away; the old consumer
        // drains and commits in the background, and the new one starts once it left the
        // group. The registry itself is touched from a task, not from inside `drop`.
        //
        // The channel is closed and drained rather than dropped: a worker that reserved room
        // before the close can still send into it, and a delivery sent after the receiver is
        // gone would sit there (its worker waiting for an answer until the grace period ends
        // and then aborted, losing the acks it had not recorded yet). Draining until every
        // reservation is used or dropped answers each such delivery: it is delivered again.
        self.shared
            .released
            .store(true, std::sync::atomic::Ordering::Release);
        self.rx.close();
        let (w, name, shared) = (self.wrapper.clone(), self.name.clone(), self.shared.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (_, empty) = mpsc::channel(1);
            let rx = std::mem::replace(&mut self.rx, empty);
            rt.spawn(async move {
                w.retire_consumer_if(&name, Some(&shared));
                drain(rx).await;
            });
        }
    }
}

/// Closes a dropped source's channel and drops what comes out of it until no reservation
/// is left, so that each delivery in it, or sent into it after the close, is answered
/// (dropped unsettled: delivered again).
async fn drain(mut rx: mpsc::Receiver<Delivery>) {
    rx.close();
    while rx.recv().await.is_some() {}
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    fn message(offset: i64) -> ConsumedMessage {
        ConsumedMessage::for_test("t", 0, offset, b"m")
    }

    /// Room reserved before the source went away, used after: the delivery sent into it is
    /// still answered. (With the receiver simply dropped, it sat in the channel and its
    /// worker waited until the grace period and was aborted.)
    #[tokio::test]
    async fn a_delivery_sent_on_room_reserved_before_the_source_went_away_is_answered() {
        let (tx, rx) = mpsc::channel(4);
        let sink = SourceSink { tx };
        let before = sink.deliver(message(0));
        let room = sink.try_reserve().expect("room in an empty channel");
        let drained = tokio::spawn(drain(rx));
        tokio::task::yield_now().await;
        assert!(
            sink.try_reserve().is_none(),
            "no room once the source is gone"
        );
        let answer = tokio::time::timeout(Duration::from_secs(5), room.hand_out(message(1)))
            .await
            .expect("the delivery sent after the close is answered");
        assert_eq!(answer, Outcome::Retry(Duration::ZERO), "delivered again");
        let before = tokio::time::timeout(Duration::from_secs(5), before)
            .await
            .expect("the delivery sent before the close is answered");
        assert!(matches!(before, Outcome::Retry(_)));
        tokio::time::timeout(Duration::from_secs(5), drained)
            .await
            .expect("the drain ends once no room is reserved")
            .expect("drain task");
    }
}

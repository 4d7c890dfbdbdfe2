//! What goes out (`Record`), what comes back (`Delivered`), and what comes in (`ConsumedMessage`).

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::Message as _;
use rdkafka::message::{BorrowedMessage, Header, Headers, OwnedHeaders};

/// A message to produce.
///
/// ```
/// use wharf_kafka_wrapper::Record;
/// let r = Record::new("orders", "payload").key("customer-7").header("trace-id", "abc");
/// assert_eq!(r.topic(), "orders");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Record {
    pub(crate) topic: String,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: Bytes,
    pub(crate) headers: Vec<(String, Bytes)>,
    pub(crate) partition: Option<i32>,
    pub(crate) timestamp_ms: Option<i64>,
}

impl Record {
    /// A record for `topic` with `payload`, no key: librdkafka picks a partition at random.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            topic: topic.into(),
            key: None,
            payload: payload.into(),
            headers: Vec::new(),
            partition: None,
            timestamp_ms: None,
        }
    }

    /// Sets the key: the partition is then the Java client's `murmur2(key) % partitions`.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a header (headers may repeat).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Sends to this partition instead of the partitioner's choice.
    pub fn partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the message timestamp (milliseconds since the Unix epoch).
    pub fn timestamp_ms(mut self, ms: i64) -> Self {
        self.timestamp_ms = Some(ms);
        self
    }

    /// The target topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The key, if any.
    pub fn key_bytes(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }

    pub(crate) fn owned_headers(&self) -> Option<OwnedHeaders> {
        if self.headers.is_empty() {
            return None;
        }
        let mut h = OwnedHeaders::new_with_capacity(self.headers.len());
        for (k, v) in &self.headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            });
        }
        Some(h)
    }
}

impl fmt::Debug for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Record")
            .field("topic", &self.topic)
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("payload_len", &self.payload.len())
            .field(
                "headers",
                &self.headers.iter().map(|(k, _)| k).collect::<Vec<_>>(),
            )
            .field("partition", &self.partition)
            .finish()
    }
}

/// Where the broker stored a message: its receipt.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivered {
    /// The topic (shared among the receipts of one batch).
    pub topic: Arc<str>,
    /// The partition the message landed on.
    pub partition: i32,
    /// Its offset in that partition.
    pub offset: i64,
}

impl fmt::Display for Delivered {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A message read from Kafka. Cheap to clone (payloads are shared `Bytes`).
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumedMessage {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) key: Option<Bytes>,
    pub(crate) payload: Bytes,
    /// `None` when the message has no headers (most do not): no allocation.
    pub(crate) headers: Option<Arc<[(String, Bytes)]>>,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) attempt: u32,
}

impl ConsumedMessage {
    pub(crate) fn from_borrowed(m: &BorrowedMessage<'_>, topic: Arc<str>) -> Self {
        let headers: Option<Arc<[(String, Bytes)]>> = m.headers().map(|h| {
            h.iter()
                .map(|h| {
                    let value = h.value.map(Bytes::copy_from_slice).unwrap_or_default();
                    (h.key.to_owned(), value)
                })
                .collect::<Vec<_>>()
                .into()
        });
        Self {
            topic,
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(Bytes::copy_from_slice),
            payload: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            headers,
            timestamp_ms: m.timestamp().to_millis(),
            attempt: 1,
        }
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }
    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }
    /// The offset in the partition.
    pub fn offset(&self) -> i64 {
        self.offset
    }
    /// The key, if any.
    pub fn key(&self) -> Option<&Bytes> {
        self.key.as_ref()
    }
    /// The payload (empty for a tombstone).
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }
    /// All headers in order.
    pub fn headers(&self) -> &[(String, Bytes)] {
        self.headers.as_deref().unwrap_or_default()
    }
    /// The first header with this name.
    pub fn header(&self, name: &str) -> Option<&Bytes> {
        self.headers()
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
    }
    /// The message timestamp in milliseconds since the Unix epoch, if the broker gave one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp_ms
    }
    /// Which attempt at handling this is: 1 the first time, 2 after one retry, ...
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Debug for ConsumedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumedMessage")
            .field("topic", &self.topic)
            .field("partition", &self.partition)
            .field("offset", &self.offset)
            .field("key_len", &self.key.as_ref().map(Bytes::len))
            .field("payload_len", &self.payload.len())
            .field("attempt", &self.attempt)
            .finish()
    }
}

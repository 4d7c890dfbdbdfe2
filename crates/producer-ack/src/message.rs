//! [`PulsarMessage`]: what a caller produces, and [`MessageId`]: what the broker answers.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// One message to produce: a payload and Pulsar's optional metadata.
///
/// Named apart from wharf-core's broker-neutral `Message`, which converts into it (see
/// [`Producer`](crate::Producer)'s `Publisher` impl): the key becomes the partition key,
/// headers become properties.
///
/// - `key` is Pulsar's partition key: it picks the partition of a partitioned topic and is
///   what `Key_Shared` subscriptions group by unless an ordering key is set.
/// - `ordering_key` overrides the key for ordering in `Key_Shared` subscriptions only.
/// - `properties` are Pulsar's string properties.
/// - `event_time` is when the event happened (milliseconds since the Unix epoch on the wire).
///
/// ```
/// use wharf_producer_ack::PulsarMessage;
///
/// let message = PulsarMessage::new("order 42 shipped")
///     .with_key("order-42")
///     .with_property("content-type", "text/plain");
/// assert_eq!(message.key(), Some("order-42"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PulsarMessage {
    pub(crate) payload: Bytes,
    pub(crate) key: Option<String>,
    pub(crate) ordering_key: Option<Vec<u8>>,
    pub(crate) properties: BTreeMap<String, String>,
    pub(crate) event_time: Option<SystemTime>,
}

impl PulsarMessage {
    /// A message with this payload and no metadata.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: payload.into(),
            ..Self::default()
        }
    }

    /// Sets the partition key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the ordering key (used by `Key_Shared` subscriptions instead of the key).
    #[must_use]
    pub fn with_ordering_key(mut self, ordering_key: impl Into<Vec<u8>>) -> Self {
        self.ordering_key = Some(ordering_key.into());
        self
    }

    /// Sets property `name` to `value`.
    #[must_use]
    pub fn with_property(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.properties.insert(name.into(), value.into());
        self
    }

    /// Sets the time the event happened.
    #[must_use]
    pub fn with_event_time(mut self, event_time: SystemTime) -> Self {
        self.event_time = Some(event_time);
        self
    }

    /// The payload.
    pub fn payload(&self) -> &Bytes {
        &self.payload
    }

    /// The partition key.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The ordering key.
    pub fn ordering_key(&self) -> Option<&[u8]> {
        self.ordering_key.as_deref()
    }

    /// The properties.
    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// The event time.
    pub fn event_time(&self) -> Option<SystemTime> {
        self.event_time
    }

    /// Converts to the `pulsar` crate's message (copies the payload once).
    pub(crate) fn to_pulsar(&self) -> pulsar::producer::Message {
        pulsar::producer::Message {
            payload: self.payload.to_vec(),
            properties: self
                .properties
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            partition_key: self.key.clone(),
            ordering_key: self.ordering_key.clone(),
            event_time: self.event_time.map(millis_since_epoch),
            ..Default::default()
        }
    }
}

impl From<Bytes> for PulsarMessage {
    fn from(payload: Bytes) -> Self {
        PulsarMessage::new(payload)
    }
}

impl From<Vec<u8>> for PulsarMessage {
    fn from(payload: Vec<u8>) -> Self {
        PulsarMessage::new(payload)
    }
}

impl From<&'static str> for PulsarMessage {
    fn from(payload: &'static str) -> Self {
        PulsarMessage::new(payload)
    }
}

impl From<String> for PulsarMessage {
    fn from(payload: String) -> Self {
        PulsarMessage::new(payload)
    }
}

fn millis_since_epoch(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Where the broker stored a message: Pulsar's message id.
///
/// Displays as `ledger:entry:partition[:batch_index]` (the Java client's form, `-1` for
/// "not partitioned").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId {
    /// The ledger.
    pub ledger_id: u64,
    /// The entry within the ledger.
    pub entry_id: u64,
    /// The partition of a partitioned topic, `None` otherwise.
    pub partition: Option<i32>,
    /// The index inside a batch, `None` when the message was not batched.
    pub batch_index: Option<i32>,
}

impl MessageId {
    pub(crate) fn from_proto(id: &pulsar::message::proto::MessageIdData) -> Self {
        let non_negative = |v: Option<i32>| v.filter(|v| *v >= 0);
        MessageId {
            ledger_id: id.ledger_id,
            entry_id: id.entry_id,
            partition: non_negative(id.partition),
            batch_index: non_negative(id.batch_index),
        }
    }
}

impl fmt::Display for MessageId {
    /// The Java client's form: `ledger:entry:partition[:batch_index]`, `-1` for "not
    /// partitioned".
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let partition = self.partition.unwrap_or(-1);
        write!(f, "{}:{}:{partition}", self.ledger_id, self.entry_id)?;
        match self.batch_index {
            Some(batch) => write!(f, ":{batch}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_print_like_the_java_client() {
        let plain = MessageId {
            ledger_id: 112,
            entry_id: 4,
            partition: None,
            batch_index: None,
        };
        assert_eq!(plain.to_string(), "112:4:-1");
        let batched = MessageId {
            ledger_id: 112,
            entry_id: 4,
            partition: Some(2),
            batch_index: Some(0),
        };
        assert_eq!(batched.to_string(), "112:4:2:0");
    }

    #[test]
    fn metadata_maps_onto_the_pulsar_message() {
        let time = UNIX_EPOCH + std::time::Duration::from_millis(1_234);
        let message = PulsarMessage::new("p")
            .with_key("k")
            .with_ordering_key(b"o".to_vec())
            .with_property("a", "1")
            .with_event_time(time)
            .to_pulsar();
        assert_eq!(message.payload, b"p");
        assert_eq!(message.partition_key.as_deref(), Some("k"));
        assert_eq!(message.ordering_key.as_deref(), Some(&b"o"[..]));
        assert_eq!(message.properties.get("a").map(String::as_str), Some("1"));
        assert_eq!(message.event_time, Some(1_234));
    }
}

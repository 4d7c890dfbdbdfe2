//! [`Producer`] as wharf-core's broker-neutral [`Publisher`]: its [`Message`] becomes a
//! [`PulsarMessage`].

use wharf_core::transport::{Message, Publisher, Receipt};

use crate::{Error, MessageId, Producer, PulsarMessage};

impl From<Message> for PulsarMessage {
    /// Maps the broker-neutral message onto Pulsar's: key to partition key, headers to
    /// properties (a repeated name keeps its last value), event time to event time. Pulsar
    /// keys and properties are strings: bytes that are not UTF-8 are converted lossily.
    fn from(message: Message) -> Self {
        let mut out = PulsarMessage::new(message.payload().clone());
        if let Some(key) = message.key() {
            out = out.with_key(String::from_utf8_lossy(key));
        }
        for (name, value) in message.headers().iter() {
            out = out.with_property(name, String::from_utf8_lossy(value));
        }
        if let Some(time) = message.event_time() {
            out = out.with_event_time(time);
        }
        out
    }
}

impl From<MessageId> for Receipt {
    fn from(id: MessageId) -> Self {
        Receipt::Pulsar {
            ledger_id: id.ledger_id,
            entry_id: id.entry_id,
            partition: id.partition.and_then(|p| u32::try_from(p).ok()),
            batch_index: id.batch_index.and_then(|b| u32::try_from(b).ok()),
        }
    }
}

/// `publish` is [`Producer::produce`]: it resolves with [`Receipt::Pulsar`] once the broker
/// stored the message, or with an [`Error`] within the send timeout.
/// [`Error::may_have_been_stored`] tells "not accepted" from "outcome unknown". Batches are
/// pipelined ([`Producer::produce_batch`]), one result per message, in order.
impl Publisher for Producer {
    type Error = Error;

    async fn publish(&self, message: Message) -> Result<Receipt, Error> {
        self.produce(PulsarMessage::from(message))
            .await
            .map(Receipt::from)
    }

    async fn publish_batch(&self, messages: Vec<Message>) -> Vec<Result<Receipt, Error>> {
        self.produce_batch(messages.into_iter().map(PulsarMessage::from))
            .await
            .into_iter()
            .map(|r| r.map(Receipt::from))
            .collect()
    }
}

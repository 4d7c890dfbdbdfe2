//! [`Receipt`]: the broker's own id for a message it durably accepted.

use std::fmt;

/// The broker's id for a message it has durably accepted, as returned by
/// [`Publisher::publish`](super::Publisher::publish) and carried by
/// [`DeliveryInfo::id`](super::DeliveryInfo::id).
///
/// Each variant holds the broker's natural id in plain types (no broker client types), so
/// broker crates construct it and callers log it. [`Display`](fmt::Display) prints the form
/// the broker's own tools print, so a logged receipt can be pasted into them:
///
/// | Variant | Printed as | Example |
/// |---|---|---|
/// | [`Memory`](Self::Memory) | `memory:SEQUENCE` | `memory:7` |
/// | [`Kafka`](Self::Kafka) | `PARTITION@OFFSET` | `3@1042` |
/// | [`Pulsar`](Self::Pulsar) | `LEDGER:ENTRY:PARTITION[:BATCH]` (the Java client's form, `-1` for "not partitioned") | `112:4:-1`, `112:4:2:0` |
/// | [`Sqs`](Self::Sqs) | the MessageId | `5fea7756-0ea4-451a-a703-a558b933e274` |
/// | [`Redis`](Self::Redis) | the entry or job id | `1526919030474-55` |
/// | [`Other`](Self::Other) | `TRANSPORT:ID` | `nats:17` |
///
/// ```
/// use wharf_core::transport::Receipt;
///
/// let receipt = Receipt::Kafka { partition: 3, offset: 1042 };
/// assert_eq!(receipt.to_string(), "3@1042");
///
/// let receipt = Receipt::Pulsar { ledger_id: 112, entry_id: 4, partition: None, batch_index: None };
/// assert_eq!(receipt.to_string(), "112:4:-1");
/// ```
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Receipt {
    /// The in-memory queue's sequence number: 0 for the first message published to a queue,
    /// then one more for each.
    Memory {
        /// Position in the order of publication.
        sequence: u64,
    },
    /// A Kafka record's partition and offset.
    Kafka {
        /// The partition the record went to.
        partition: i32,
        /// The record's offset within that partition.
        offset: i64,
    },
    /// A Pulsar message id.
    Pulsar {
        /// The ledger that holds the message.
        ledger_id: u64,
        /// The entry within the ledger.
        entry_id: u64,
        /// The partition of a partitioned topic; `None` for a topic without partitions.
        partition: Option<u32>,
        /// The position within a batch entry; `None` when the message was not batched.
        batch_index: Option<u32>,
    },
    /// An SQS message id.
    Sqs {
        /// The `MessageId` SQS returned.
        message_id: String,
        /// The `SequenceNumber` of a FIFO queue; `None` for standard queues.
        sequence_number: Option<String>,
    },
    /// A Redis stream entry id or job id.
    Redis {
        /// The id as Redis returned it.
        id: String,
    },
    /// Any other transport: a name for it and its id in its natural printed form.
    Other {
        /// Short name of the transport, printed before the id.
        transport: &'static str,
        /// The id.
        id: String,
    },
}

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Memory { sequence } => write!(f, "memory:{sequence}"),
            Self::Kafka { partition, offset } => write!(f, "{partition}@{offset}"),
            Self::Pulsar {
                ledger_id,
                entry_id,
                partition,
                batch_index,
            } => {
                write!(f, "{ledger_id}:{entry_id}:")?;
                match partition {
                    Some(p) => write!(f, "{p}")?,
                    None => f.write_str("-1")?,
                }
                match batch_index {
                    Some(b) => write!(f, ":{b}"),
                    None => Ok(()),
                }
            }
            Self::Sqs { message_id, .. } => f.write_str(message_id),
            Self::Redis { id } => f.write_str(id),
            Self::Other { transport, id } => write!(f, "{transport}:{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_receipt_prints_its_brokers_natural_form() {
        let cases = [
            (Receipt::Memory { sequence: 7 }, "memory:7"),
            (
                Receipt::Kafka {
                    partition: 0,
                    offset: 5,
                },
                "0@5",
            ),
            (
                Receipt::Pulsar {
                    ledger_id: 1,
                    entry_id: 2,
                    partition: Some(3),
                    batch_index: Some(4),
                },
                "1:2:3:4",
            ),
            (
                Receipt::Pulsar {
                    ledger_id: 1,
                    entry_id: 2,
                    partition: None,
                    batch_index: Some(0),
                },
                "1:2:-1:0",
            ),
            (
                Receipt::Sqs {
                    message_id: "m-1".into(),
                    sequence_number: Some("18".into()),
                },
                "m-1",
            ),
            (
                Receipt::Redis {
                    id: "1526919030474-55".into(),
                },
                "1526919030474-55",
            ),
            (
                Receipt::Other {
                    transport: "nats",
                    id: "17".into(),
                },
                "nats:17",
            ),
        ];
        for (receipt, printed) in cases {
            assert_eq!(receipt.to_string(), printed, "{receipt:?}");
        }
    }
}

//! The crate's one error enum.

use std::time::Duration;

/// Everything that can go wrong when producing to Pulsar through wharf.
///
/// Every message handed to a [`Producer`](crate::Producer) ends with exactly one outcome: its
/// [`MessageId`](crate::MessageId) or one of these errors. Each variant says whether the
/// message may still have been stored by the broker, so a caller knows whether a retry can
/// duplicate it.
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No receipt came within the send timeout. If the message had been sent, the broker may
    /// or may not have stored it: a retry can duplicate it.
    #[error(
        "no receipt from Pulsar for topic `{topic}` within the send timeout of {after:?} \
         (connected: {connected}); the broker may or may not have stored the message. \
         Check that the broker is reachable, or raise `send_timeout`"
    )]
    Timeout {
        /// The topic.
        topic: String,
        /// The send timeout that passed.
        after: Duration,
        /// Whether a connection to the broker was up when the timeout passed.
        connected: bool,
    },
    /// The connection dropped while the message waited for its receipt, and the producer was
    /// configured with [`OnReconnect::Fail`](crate::OnReconnect::Fail). The broker may or may
    /// not have stored the message.
    #[error(
        "the connection to Pulsar for topic `{topic}` was lost before the message was \
         acknowledged ({reason}); it was not re-sent because the producer is configured with \
         OnReconnect::Fail. The broker may or may not have stored it"
    )]
    ConnectionLost {
        /// The topic.
        topic: String,
        /// What broke the connection.
        reason: String,
    },
    /// The broker refused the message or the producer for a reason retrying cannot fix
    /// (topic not found or terminated, not authorised, producer fenced, schema mismatch...).
    #[error(
        "Pulsar rejected the message for topic `{topic}`: {reason}. Fix the cause before retrying"
    )]
    Rejected {
        /// The topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
    },
    /// The producer was shut down (or its task stopped) before the message got a receipt.
    /// If the message had been sent, the broker may or may not have stored it.
    #[error(
        "the producer for topic `{topic}` stopped before the message got a receipt ({reason}); \
         the broker may or may not have stored it"
    )]
    Closed {
        /// The topic.
        topic: String,
        /// Why the producer stopped.
        reason: String,
    },
    /// The builder's settings cannot work.
    #[error("invalid producer configuration: {0}")]
    InvalidConfig(String),
}

impl Error {
    /// Whether the broker may have stored the message although this error was reported
    /// (a retry may then duplicate it).
    pub fn may_have_been_stored(&self) -> bool {
        !matches!(self, Error::InvalidConfig(_) | Error::Rejected { .. })
    }
}

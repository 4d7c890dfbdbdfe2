//! The crate's one error enum.

use std::time::Duration;

use wharf_core::Cause;

/// Everything that can go wrong when producing to Pulsar through wharf.
///
/// Every message handed to a [`Producer`](crate::Producer) ends with exactly one outcome: its
/// [`MessageId`](crate::MessageId) or one of these errors. Each variant says whether the
/// message may still have been stored by the broker, so a caller knows whether a retry can
/// duplicate it.
///
/// Where the `pulsar` crate reported the failure, its error is kept: in the variant's
/// `source` field, as a [`Cause`] (wharf-core's shared box: one connection's error can end
/// every message it held, and `Error` stays `Clone`), and as
/// [`std::error::Error::source`], which hands out the `pulsar::Error` itself:
///
/// ```
/// # fn check(error: &wharf_producer_ack::Error) {
/// use std::error::Error as _;
/// use wharf_producer_ack::pulsar;
///
/// if let Some(pulsar) = error.source().and_then(|e| e.downcast_ref::<pulsar::Error>()) {
///     eprintln!("the pulsar crate said: {pulsar}");
/// }
/// # }
/// ```
#[non_exhaustive]
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// No receipt came within the send timeout. If the message had been sent, the broker may
    /// or may not have stored it: a retry can duplicate it.
    #[error(
        "no receipt from Pulsar for topic `{topic}` within the send timeout of {after:?} \
         (connected: {connected}); the broker may or may not have stored the message. Check \
         that the broker is reachable, or raise `send_timeout`"
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
         OnReconnect::Fail. The broker may or may not have stored it: send it again if a \
         duplicate is acceptable, or use OnReconnect::Resend"
    )]
    ConnectionLost {
        /// The topic.
        topic: String,
        /// What broke the connection.
        reason: String,
        /// The `pulsar` crate's error (a `pulsar::Error`), when it reported the breakage;
        /// `None` when wharf judged the connection lost itself (a ping or a hand-over that
        /// took too long, which is how a frozen or silently partitioned broker shows).
        #[source]
        source: Option<Cause>,
    },
    /// The broker refused the message or the producer for a reason retrying cannot fix
    /// (topic not found or terminated, not authorised, producer fenced, schema mismatch...).
    #[error(
        "Pulsar rejected the message for topic `{topic}`: {reason}. Retrying will not help: \
         fix the cause (topic, permissions, schema) first"
    )]
    Rejected {
        /// The topic.
        topic: String,
        /// The broker's or client's reason.
        reason: String,
        /// The `pulsar` crate's error that carried the refusal (a `pulsar::Error`).
        #[source]
        source: Cause,
    },
    /// The producer was shut down (or its task stopped) before the message got a receipt.
    /// If the message had been sent, the broker may or may not have stored it.
    #[error(
        "the producer for topic `{topic}` stopped before the message got a receipt ({reason}); \
         the broker may or may not have stored it. Produce it again through a running producer"
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

#[cfg(test)]
mod tests {
    use super::*;
    use pulsar::error::ConnectionError;

    #[test]
    fn the_source_is_the_pulsar_error_itself_not_its_arc() {
        let error = Error::ConnectionLost {
            topic: "t".to_owned(),
            reason: "the connection closed".to_owned(),
            source: Some(Cause::new(pulsar::Error::Connection(
                ConnectionError::Disconnected,
            ))),
        };
        let source = std::error::Error::source(&error).and_then(|e| e.downcast_ref());
        assert!(
            matches!(
                source,
                Some(pulsar::Error::Connection(ConnectionError::Disconnected))
            ),
            "{source:?}"
        );
    }

    #[test]
    fn errors_without_a_pulsar_error_have_no_source() {
        let closed = Error::Closed {
            topic: "t".to_owned(),
            reason: "closed".to_owned(),
        };
        assert!(std::error::Error::source(&closed).is_none());
    }
}

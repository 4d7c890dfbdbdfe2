//! One message on its way through the driver, and what handles send to the driver.

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::ack::{Notify, WindowPermit};
use crate::{Error, MessageId, PulsarMessage};

/// What handles send to the driver.
#[derive(Debug)]
// Produce is the hot path and Close is rare: boxing the envelope would cost an allocation
// per message to save a few bytes per channel slot.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Command {
    Produce(Envelope),
    Close(oneshot::Sender<()>),
}

/// One message on its way, with whom to tell and its place in the window.
///
/// Dropped without an outcome (task stopped or crashed), it tells its caller
/// [`Error::Closed`]: that is what makes "exactly once" hold even on a panic.
#[derive(Debug)]
pub(crate) struct Envelope {
    pub(super) topic: Arc<str>,
    pub(super) message: PulsarMessage,
    pub(super) deadline: Instant,
    notify: Option<Notify>,
    slot: Option<WindowPermit>,
    /// The incarnation it was last handed to, if any.
    pub(super) sent_in: Option<u64>,
}

impl Envelope {
    pub(crate) fn new(
        topic: Arc<str>,
        message: PulsarMessage,
        deadline: Instant,
        notify: Notify,
        slot: WindowPermit,
    ) -> Self {
        Envelope {
            topic,
            message,
            deadline,
            notify: Some(notify),
            slot: Some(slot),
            sent_in: None,
        }
    }

    pub(super) fn resolve(mut self, result: Result<MessageId, Error>) {
        if let (Some(notify), Some(slot)) = (self.notify.take(), self.slot.take()) {
            notify.deliver(result, slot);
        }
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        if let (Some(notify), Some(slot)) = (self.notify.take(), self.slot.take()) {
            let error = Error::Closed {
                topic: self.topic.to_string(),
                reason: "the producer's task stopped".to_owned(),
            };
            notify.deliver(Err(error), slot);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_dropped_without_an_outcome_tells_its_caller_closed() {
        let (tx, mut rx) = oneshot::channel();
        let envelope = Envelope::new(
            Arc::from("t"),
            PulsarMessage::new("m"),
            Instant::now(),
            Notify::Reply(tx),
            WindowPermit(None),
        );
        drop(envelope);
        assert!(matches!(rx.try_recv(), Ok(Err(Error::Closed { .. }))));
    }
}

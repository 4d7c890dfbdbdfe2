//! Acknowledge later: the [`Ack`] given to [`Producer::produce_with`](crate::Producer::produce_with).
//!
//! An ack is either a **closure** `FnOnce(Result<MessageId, Error>)`, or a **channel**
//! ([`ack_channel`]) that delivers [`Acked`] values carrying a caller context. Either way it
//! is called exactly once per message: with the message's id once the broker stored it, or
//! with the error that ended it (timeout, rejection, shutdown, even a crash of the producer's
//! task).
//!
//! Closures run on the producer's task: keep them short and non-blocking (push to a channel,
//! bump a counter). A closure that panics is logged and the producer carries on. The channel
//! form suits callers that want to handle acks in their own task, with a context (a request
//! id, a row to update) travelling with each message.

use std::fmt;

use tokio::sync::{OwnedSemaphorePermit, mpsc, oneshot};
use wharf_core::supervisor::panic_message;

use crate::{Error, MessageId};

/// One place in the producer's window, released when dropped.
#[derive(Debug)]
pub(crate) struct WindowPermit(#[allow(dead_code)] pub(crate) Option<OwnedSemaphorePermit>);

pub(crate) type Callback = Box<dyn FnOnce(Result<MessageId, Error>, WindowPermit) + Send>;

/// How a message's outcome reaches its caller.
pub(crate) enum Notify {
    Reply(oneshot::Sender<Result<MessageId, Error>>),
    Call(Callback),
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notify::Reply(_) => f.write_str("Notify::Reply"),
            Notify::Call(_) => f.write_str("Notify::Call"),
        }
    }
}

impl Notify {
    /// Delivers the outcome. A panicking ack closure is logged, never propagated.
    pub(crate) fn deliver(self, result: Result<MessageId, Error>, slot: WindowPermit) {
        match self {
            Notify::Reply(tx) => {
                // the caller may have given up (timeout, dropped future): nothing to tell
                let _ = tx.send(result);
                drop(slot);
            }
            Notify::Call(callback) => {
                let call = std::panic::AssertUnwindSafe(move || callback(result, slot));
                if let Err(panic) = std::panic::catch_unwind(call) {
                    let message = panic_message(panic.as_ref());
                    tracing::error!(panic = %message, "an ack closure panicked; the producer carries on");
                }
            }
        }
    }
}

mod sealed {
    pub trait Sealed {}
}

/// What [`Producer::produce_with`](crate::Producer::produce_with) calls, exactly once per
/// message, with the broker's [`MessageId`] or the [`Error`] that ended the message.
///
/// Implemented for closures `FnOnce(Result<MessageId, Error>) + Send + 'static` and for
/// [`ContextAck`] (from [`AckSender::with`]). Sealed: those two forms cover what a caller
/// needs, and keep the exactly-once guarantee in this crate's hands.
pub trait Ack: sealed::Sealed + Send + 'static {
    #[doc(hidden)]
    fn into_notify(self) -> NotifyHandle;
}

/// Opaque carrier of an ack inside the producer (not for users).
#[doc(hidden)]
#[derive(Debug)]
pub struct NotifyHandle(pub(crate) Notify);

impl<F> sealed::Sealed for F where F: FnOnce(Result<MessageId, Error>) + Send + 'static {}

impl<F> Ack for F
where
    F: FnOnce(Result<MessageId, Error>) + Send + 'static,
{
    fn into_notify(self) -> NotifyHandle {
        NotifyHandle(Notify::Call(Box::new(move |result, slot| {
            self(result);
            drop(slot);
        })))
    }
}

/// A channel for acks that carry a caller context; see [`ack_channel`].
pub fn ack_channel<C: Send + 'static>() -> (AckSender<C>, AckReceiver<C>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (AckSender { tx }, AckReceiver { rx })
}

/// The sending half of an [`ack_channel`]: make one [`ContextAck`] per message with
/// [`with`](Self::with). Cloneable; share it between producers if you like.
pub struct AckSender<C> {
    tx: mpsc::UnboundedSender<Acked<C>>,
}

impl<C> Clone for AckSender<C> {
    fn clone(&self) -> Self {
        AckSender {
            tx: self.tx.clone(),
        }
    }
}

impl<C> fmt::Debug for AckSender<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckSender").finish_non_exhaustive()
    }
}

impl<C: Send + 'static> AckSender<C> {
    /// An ack that delivers `context` back, with the message's outcome, on the channel.
    pub fn with(&self, context: C) -> ContextAck<C> {
        ContextAck {
            tx: self.tx.clone(),
            context,
        }
    }
}

/// An [`Ack`] that sends an [`Acked`] with its context on an [`ack_channel`].
pub struct ContextAck<C> {
    tx: mpsc::UnboundedSender<Acked<C>>,
    context: C,
}

impl<C> fmt::Debug for ContextAck<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextAck").finish_non_exhaustive()
    }
}

impl<C> sealed::Sealed for ContextAck<C> {}

impl<C: Send + 'static> Ack for ContextAck<C> {
    fn into_notify(self) -> NotifyHandle {
        NotifyHandle(Notify::Call(Box::new(move |result, slot| {
            let acked = Acked {
                context: self.context,
                result,
                _slot: slot,
            };
            if self.tx.send(acked).is_err() {
                // the receiver is gone: the context has no one left to hear about it
                tracing::warn!(
                    "ack for a message whose AckReceiver was dropped; outcome logged here only"
                );
            }
        })))
    }
}

/// The receiving half of an [`ack_channel`].
///
/// Bounded by the producers' windows: an [`Acked`] keeps its message's place in the window
/// until it is dropped, so acks that nobody reads slow producers down instead of piling up.
pub struct AckReceiver<C> {
    rx: mpsc::UnboundedReceiver<Acked<C>>,
}

impl<C> fmt::Debug for AckReceiver<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AckReceiver").finish_non_exhaustive()
    }
}

impl<C> AckReceiver<C> {
    /// The next ack, or `None` once every [`AckSender`] and pending ack is gone.
    pub async fn recv(&mut self) -> Option<Acked<C>> {
        self.rx.recv().await
    }

    /// The next ack if one is ready.
    pub fn try_recv(&mut self) -> Option<Acked<C>> {
        self.rx.try_recv().ok()
    }
}

/// The outcome of one message, with the context given to [`AckSender::with`].
pub struct Acked<C> {
    /// The caller's context.
    pub context: C,
    /// The broker's id for the message, or what ended it.
    pub result: Result<MessageId, Error>,
    _slot: WindowPermit,
}

impl<C: fmt::Debug> fmt::Debug for Acked<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acked")
            .field("context", &self.context)
            .field("result", &self.result)
            .finish()
    }
}

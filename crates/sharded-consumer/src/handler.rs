//! The [`Handler`] trait: what a key's actor does, and what it answers.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use wharf_core::transport::{Delivery, DeliveryInfo, Message};

use crate::ShardKey;

/// The code of one key's actor: how its state is built, how it handles a message, how it
/// answers a signal, and how it stops.
///
/// One value of the handler serves every key (it is shared, `&self`); each key has its own
/// [`State`](Self::State), built by [`init`](Self::init) the first time the key is seen and
/// owned by that key's actor alone.
///
/// # What the consumer promises
///
/// - **One actor per key.** A key's state exists at most once in a consumer. All calls for a
///   key (`init`, `handle_message`, `handle_signal`, `terminate`) run **one at a time**,
///   never concurrently, so the state needs no lock. Different keys run in parallel, up to
///   the consumer's concurrency limit.
/// - **Order.** A key's messages reach `handle_message` in the order the source delivered
///   them, one at a time: the next one is not handed over before the previous one was
///   answered (and, on `Retry`, before it finally succeeded or was dead-lettered).
/// - **Acknowledgement after the answer.** A message is acknowledged to the source only after
///   `handle_message` answered [`Outcome::Ack`] or [`Outcome::Stop`], or after it was
///   dead-lettered. Delivery is at least once: after a crash of the process the source
///   delivers unacknowledged messages again, so handlers must be idempotent.
/// - **Failures are contained.** An `Err` from, a panic in, or a timeout of `init`,
///   `handle_message` or `handle_signal` restarts **that key's actor alone**: its state is
///   dropped (after `terminate` with [`StopReason::Failed`] for an `Err`; a panic or a
///   timeout loses the state) and the next call builds it again with `init`. The message is
///   retried by the consumer's [`RetryPolicy`](crate::RetryPolicy), then dead-lettered.
///   Other keys carry on.
/// - **Bounded calls.** Each call has the consumer's
///   [`handler_timeout`](crate::ShardedConsumerBuilder::handler_timeout) (30 s by default)
///   to answer; a call past it is a failure as above, so a handler that never answers
///   cannot hold its key (or, over Kafka, its partition) forever. A call that waits is
///   dropped at its await point when the deadline passes. A call that **blocks its thread**
///   cannot be interrupted: it holds its executor (the keys hashed to it) until it returns,
///   and is then failed if it held the thread past the deadline, even if it answered. Run
///   blocking work with `tokio::task::spawn_blocking` and await it.
/// - **Signals** ([`handle_signal`](Self::handle_signal)) run between two messages of the
///   key, with no ordering promise against messages: a signal may be served before messages
///   that arrived earlier and are still queued.
/// - **Stopping.** [`terminate`](Self::terminate) is called with the state when the actor
///   stops while its state is intact: idle eviction, [`Outcome::Stop`], an `Err`, the
///   consumer's shutdown. It is not called after a panic or a timeout (the state may be
///   half-changed). It is bounded by the handler timeout too.
///
/// # Example
///
/// ```
/// use std::convert::Infallible;
/// use wharf_sharded_consumer::{Handler, Incoming, Outcome, ShardKey};
///
/// /// Keeps a running balance per account.
/// struct Balances;
///
/// impl Handler for Balances {
///     type State = i64;
///     type Signal = ();   // "what is your balance?"
///     type Reply = i64;
///     type Error = Infallible;
///
///     async fn init(&self, _key: &ShardKey) -> Result<i64, Infallible> {
///         Ok(0) // a real handler loads the balance from its store
///     }
///
///     async fn handle_message(&self, balance: &mut i64, msg: &Incoming<'_>) -> Result<Outcome, Infallible> {
///         let Some(amount) = std::str::from_utf8(msg.payload()).ok().and_then(|s| s.parse::<i64>().ok()) else {
///             return Ok(Outcome::DeadLetter("the payload is not an amount".into()));
///         };
///         *balance += amount;
///         Ok(Outcome::Ack)
///     }
///
///     async fn handle_signal(&self, balance: &mut i64, _: ()) -> Result<i64, Infallible> {
///         Ok(*balance)
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// One key's state, owned by its actor.
    type State: Send + 'static;
    /// What [`handle_signal`](Self::handle_signal) receives from outside.
    type Signal: Send + 'static;
    /// What [`handle_signal`](Self::handle_signal) answers the caller.
    type Reply: Send + 'static;
    /// What the handler's methods fail with; its `Display` text goes to logs, to the dead-letter
    /// reason, and to [`Error::ActorFailed`](crate::Error::ActorFailed).
    type Error: fmt::Display + Send + 'static;

    /// Builds the state of `key`'s actor: on the first message or signal for the key, and
    /// again after the actor was restarted or stopped. An `Err` or a panic counts as a failed
    /// attempt of the message that needed the state.
    fn init(&self, key: &ShardKey)
    -> impl Future<Output = Result<Self::State, Self::Error>> + Send;

    /// Handles one message of the key, and says what to do with it (see [`Outcome`]).
    fn handle_message(
        &self,
        state: &mut Self::State,
        message: &Incoming<'_>,
    ) -> impl Future<Output = Result<Outcome, Self::Error>> + Send;

    /// Answers a signal sent with [`ShardedConsumer::signal`](crate::ShardedConsumer::signal),
    /// usually to read or change the state from outside. The caller waits for the answer (up
    /// to its timeout).
    ///
    /// A handler without signals declares `type Signal = std::convert::Infallible` and
    /// answers `match signal {}`.
    fn handle_signal(
        &self,
        state: &mut Self::State,
        signal: Self::Signal,
    ) -> impl Future<Output = Result<Self::Reply, Self::Error>> + Send;

    /// Called with the state when the actor stops with its state intact (see the trait's
    /// docs for when). The default does nothing. A panic here is caught and logged.
    fn terminate(
        &self,
        key: &ShardKey,
        state: Self::State,
        reason: StopReason,
    ) -> impl Future<Output = ()> + Send {
        let _ = (key, reason);
        drop(state);
        async {}
    }
}

/// What [`Handler::handle_message`] answers for a message.
///
/// | Outcome | The message | The key's actor |
/// |---|---|---|
/// | `Ack` | acknowledged to the source | goes on with its next message |
/// | `Retry(delay)` | handled again after `delay`, counted as an attempt; dead-lettered once the [`RetryPolicy`](crate::RetryPolicy) is spent | keeps its state; its later messages wait |
/// | `DeadLetter(reason)` | published to the dead-letter target with `reason`, then acknowledged | keeps its state; goes on |
/// | `Stop` | acknowledged | stops: `terminate`, state dropped; a later message starts a new actor |
///
/// None of them requeues at the source: retries happen in the key's actor, so the key's
/// order holds, and every retry is bounded by the policy.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Handled.
    Ack,
    /// Not handled yet: try again after this delay.
    Retry(Duration),
    /// Cannot be handled: dead-letter it with this reason.
    DeadLetter(String),
    /// Handled, and this key's actor is done for now.
    Stop,
}

/// Why a key's actor stopped, as told to [`Handler::terminate`].
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// No message or signal for the key within the idle timeout.
    Idle,
    /// The handler answered [`Outcome::Stop`].
    Requested,
    /// A handler method returned an error; the actor is restarted with a fresh state.
    Failed,
    /// The consumer is shutting down.
    Shutdown,
}

/// One message as the key's actor sees it: the key, the message, the delivery's metadata,
/// and which attempt this is.
pub struct Incoming<'a> {
    key: &'a ShardKey,
    delivery: &'a Delivery,
    attempt: u32,
}

impl<'a> Incoming<'a> {
    pub(crate) fn new(key: &'a ShardKey, delivery: &'a Delivery, attempt: u32) -> Self {
        Self {
            key,
            delivery,
            attempt,
        }
    }

    /// The sharding key.
    pub fn key(&self) -> &ShardKey {
        self.key
    }

    /// The message.
    pub fn message(&self) -> &'a Message {
        self.delivery.message()
    }

    /// The payload.
    pub fn payload(&self) -> &'a Bytes {
        self.delivery.message().payload()
    }

    /// What the source knows: partition, offset, id, and the source's own delivery count.
    pub fn info(&self) -> &'a DeliveryInfo {
        self.delivery.info()
    }

    /// Which call of the handler for this message this is in this consumer: 1 the first time,
    /// 2 after one `Retry` or failure, ... The retry policy counts these.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// How many times the source has delivered the message (1 for the first delivery); more
    /// than 1 after a crash or restart of a consumer that held it.
    pub fn delivery_attempt(&self) -> u32 {
        self.delivery.attempt()
    }
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("key", self.key)
            .field("info", self.delivery.info())
            .field("attempt", &self.attempt)
            .finish()
    }
}

//! [`Producer`]: the cloneable handle callers produce through.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, TryAcquireError, mpsc, oneshot};
use tokio::time::Instant;
use tracing::Instrument;

use crate::ack::{Ack, Notify, WindowPermit};
use crate::config::ProducerBuilder;
use crate::driver::{self, Command, Envelope};
use crate::{Error, MessageId, PulsarMessage};
use wharf_core::BoxError;
use wharf_core::supervisor::{ChildContext, ChildSpec, Started};

/// A supervised Pulsar producer for one topic (partitioned or not).
///
/// Cheap to clone: clones share one connection, one window and one background task, which
/// connects with backoff, re-creates the connection after a drop or a broker restart, and
/// re-sends unacknowledged messages in order (see [`OnReconnect`](crate::OnReconnect)).
/// The handle stays valid through all of that.
///
/// Every message ends exactly once, within the send timeout: with its [`MessageId`], or with
/// an [`Error`]. See the crate docs for choosing between [`produce`](Self::produce) and
/// [`produce_with`](Self::produce_with).
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

struct Inner {
    topic: Arc<str>,
    send_timeout: Duration,
    window: Arc<Semaphore>,
    window_size: usize,
    commands: mpsc::Sender<Command>,
    shared: Arc<Shared>,
}

/// State the background task shares with the handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) connected: AtomicBool,
    pub(crate) reconnects: AtomicU64,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("topic", &self.inner.topic)
            .field("connected", &self.is_connected())
            .field("pending", &self.pending())
            .finish_non_exhaustive()
    }
}

impl Producer {
    /// Settings for a producer on `topic` at `service_url`; see [`ProducerBuilder`].
    pub fn builder(service_url: impl Into<String>, topic: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(service_url, topic)
    }

    pub(crate) fn start(config: ProducerBuilder) -> Producer {
        let (producer, mut commands, parts) = Producer::new(config);
        let (config, window, shared) = parts;
        let span = driver_span(&config);
        let run = async move {
            if driver::supervise(config, &mut commands, window.clone(), shared)
                .await
                .is_err()
            {
                window.close();
            }
        };
        tokio::spawn(run.instrument(span));
        producer
    }

    /// A producer whose task runs as a child of a wharf-core supervisor.
    pub(crate) fn supervised(config: ProducerBuilder, id: String) -> (Producer, ChildSpec) {
        let (producer, commands, (config, window, shared)) = Producer::new(config);
        // The mailbox outlives the child's restarts: each run locks it, so one run at a time
        // owns it and the next takes over what is queued. This is the shape of
        // `wharf_core::service::mailbox`, which does not fit here: its handles only `call`
        // (each message would wait for the driver to take it, so `produce_with` would no
        // longer return once queued, nor pipeline from one task), and it enforces a deadline
        // per call on its own thread, where a message withdrawn unserved would be dropped,
        // telling its ack `Closed` instead of `Timeout` and running the caller's ack closure
        // on that thread. Here the window bounds what is queued, the driver takes messages up
        // to 256 at a time and expires each at its send timeout by its own rules, and a
        // message's outcome travels with it (its `Envelope`), not through the mailbox.
        let commands = Arc::new(tokio::sync::Mutex::new(commands));
        let closer = producer.inner.commands.clone();
        let spec = ChildSpec::new(id, move |ctx: ChildContext| {
            let (commands, closer) = (commands.clone(), closer.clone());
            let (config, window, shared) = (config.clone(), window.clone(), shared.clone());
            async move {
                let span = driver_span(&config);
                let run = async move {
                    // one incarnation at a time owns the mailbox; it outlives restarts
                    let mut commands = commands.lock().await;
                    let driver = driver::supervise(config, &mut commands, window, shared);
                    tokio::pin!(driver);
                    tokio::select! {
                        outcome = &mut driver => outcome,
                        () = ctx.cancelled() => {
                            // shutdown: stop taking messages, let the window drain (the
                            // supervisor's grace period bounds this)
                            let (tx, _rx) = oneshot::channel();
                            let (_, outcome) = tokio::join!(closer.send(Command::Close(tx)), driver);
                            outcome
                        }
                    }
                };
                Ok::<_, BoxError>(Started::task(run.instrument(span)))
            }
        });
        (producer, spec)
    }

    #[allow(clippy::type_complexity)]
    fn new(
        config: ProducerBuilder,
    ) -> (
        Producer,
        mpsc::Receiver<Command>,
        (Arc<ProducerBuilder>, Arc<Semaphore>, Arc<Shared>),
    ) {
        let window = Arc::new(Semaphore::new(config.window));
        // every Produce command holds a window place, so `window` bounds the channel too
        let (commands, rx) = mpsc::channel(config.window + 8);
        let shared = Arc::new(Shared::default());
        let inner = Inner {
            topic: Arc::from(config.topic.as_str()),
            send_timeout: config.send_timeout,
            window: window.clone(),
            window_size: config.window,
            commands,
            shared: shared.clone(),
        };
        let producer = Producer {
            inner: Arc::new(inner),
        };
        (producer, rx, (Arc::new(config), window, shared))
    }

    /// The topic this producer writes to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// Whether a connection to the broker is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.shared.connected.load(Ordering::Relaxed)
    }

    /// How many messages are in the window: queued or awaiting their receipt.
    pub fn pending(&self) -> usize {
        self.inner.window_size
            - self
                .inner
                .window
                .available_permits()
                .min(self.inner.window_size)
    }

    /// How many times the connection was lost and re-created.
    pub fn reconnects(&self) -> u64 {
        self.inner.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Produces one message and waits for the broker's receipt.
    ///
    /// Resolves within the send timeout, whatever the connection does: with the broker's
    /// [`MessageId`] once the message is stored, or with an [`Error`]. When the window is
    /// full it first waits for space (that wait counts against the timeout). Dropping the
    /// future does not withdraw a message already queued: it is still sent.
    pub async fn produce(&self, message: impl Into<PulsarMessage>) -> Result<MessageId, Error> {
        let deadline = Instant::now() + self.inner.send_timeout;
        let (tx, rx) = oneshot::channel();
        self.submit(message.into(), deadline, Notify::Reply(tx))
            .await;
        self.wait(deadline, rx).await
    }

    /// Produces several messages, pipelined, and returns one result per message, in order.
    ///
    /// The send timeout runs from the call for every message of the batch.
    pub async fn produce_batch<I>(&self, messages: I) -> Vec<Result<MessageId, Error>>
    where
        I: IntoIterator,
        I::Item: Into<PulsarMessage>,
    {
        let deadline = Instant::now() + self.inner.send_timeout;
        let mut receivers = Vec::new();
        for message in messages {
            let (tx, rx) = oneshot::channel();
            self.submit(message.into(), deadline, Notify::Reply(tx))
                .await;
            receivers.push(rx);
        }
        let mut results = Vec::with_capacity(receivers.len());
        for rx in receivers {
            results.push(self.wait(deadline, rx).await);
        }
        results
    }

    /// Produces one message and returns as soon as it is queued; `ack` is called later,
    /// exactly once, with the broker's [`MessageId`] or the [`Error`] that ended the message
    /// (at the latest when the send timeout has passed).
    ///
    /// When the window is full this waits for space first (within the send timeout; if none
    /// frees up, `ack` gets [`Error::Timeout`]). See [`Ack`] for the two forms of ack: a
    /// closure, or a channel carrying a context.
    pub async fn produce_with(&self, message: impl Into<PulsarMessage>, ack: impl Ack) {
        let deadline = Instant::now() + self.inner.send_timeout;
        self.submit(message.into(), deadline, ack.into_notify().0)
            .await;
    }

    /// Stops the producer: no new messages are taken ([`Error::Closed`]), the ones in the
    /// window get their receipt or their error (within the send timeout), then the
    /// connection closes. Other clones of this handle stop too. Returns when done.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.inner.commands.send(Command::Close(tx)).await.is_ok() {
            let limit = self.inner.send_timeout + Duration::from_secs(1);
            let _ = tokio::time::timeout(limit, rx).await;
        }
    }

    async fn submit(&self, mut message: PulsarMessage, deadline: Instant, notify: Notify) {
        // Before any wait, in the caller's span: the context is the one that accepted it.
        crate::trace::stamp(&mut message);
        let inner = &self.inner;
        // fast path without a timer: the window has room
        let permit = match inner.window.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(TryAcquireError::Closed) => {
                return notify.deliver(Err(self.closed_error()), WindowPermit(None));
            }
            Err(TryAcquireError::NoPermits) => {
                let wait = inner.window.clone().acquire_owned();
                match tokio::time::timeout_at(deadline, wait).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return notify.deliver(Err(self.closed_error()), WindowPermit(None));
                    }
                    Err(_elapsed) => {
                        return notify.deliver(Err(self.timeout_error()), WindowPermit(None));
                    }
                }
            }
        };
        let envelope = Envelope::new(
            inner.topic.clone(),
            message,
            deadline,
            notify,
            WindowPermit(Some(permit)),
        );
        if let Err(mpsc::error::SendError(command)) =
            inner.commands.send(Command::Produce(envelope)).await
        {
            // the task has stopped; dropping the envelope tells its caller so
            drop(command);
        }
    }

    async fn wait(
        &self,
        deadline: Instant,
        rx: oneshot::Receiver<Result<MessageId, Error>>,
    ) -> Result<MessageId, Error> {
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_dropped)) => Err(self.closed_error()),
            Err(_elapsed) => Err(self.timeout_error()),
        }
    }

    fn timeout_error(&self) -> Error {
        Error::Timeout {
            topic: self.inner.topic.to_string(),
            after: self.inner.send_timeout,
            connected: self.is_connected(),
        }
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            topic: self.inner.topic.to_string(),
            reason: "the producer was closed".to_owned(),
        }
    }
}

fn driver_span(config: &ProducerBuilder) -> tracing::Span {
    tracing::info_span!(
        "pulsar_producer",
        topic = %config.topic,
        name = config.producer_name.as_deref().unwrap_or("")
    )
}

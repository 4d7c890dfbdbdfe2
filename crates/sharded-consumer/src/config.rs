//! Configuration: [`ShardedConsumerBuilder`], [`RetryPolicy`], and the dead-letter target.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wharf_core::Backoff;
use wharf_core::transport::{DynPublisher, Publisher};

use crate::consumer::ShardedConsumer;
use crate::{Error, Handler, KeyDecoder};

/// How often a message is tried before it is dead-lettered: wharf-core's
/// [`RetryPolicy`](wharf_core::RetryPolicy), the retry shape every wharf crate shares.
///
/// Here `max_attempts` counts calls of [`Handler::handle_message`] for one message in one
/// consumer: failures (`Err`, panic, failed `init`, a call past the
/// [`handler_timeout`](ShardedConsumerBuilder::handler_timeout)) and [`Outcome::Retry`](crate::Outcome::Retry)
/// answers alike. After a failure the actor waits `backoff.delay(attempt - 1)`; after
/// `Retry(delay)` it waits `delay`. When the last attempt fails, the message is
/// dead-lettered with the reason: never requeued forever. The default,
/// [`RetryPolicy::default`](wharf_core::RetryPolicy::default), is 5 attempts with backoff
/// doubling from 100 ms to 10 s.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::Backoff;
/// use wharf_sharded_consumer::RetryPolicy;
///
/// let policy = RetryPolicy::new(5, Backoff::exponential(Duration::from_millis(50), Duration::from_secs(5)));
/// assert_eq!(policy.max_attempts(), 5);
/// assert_eq!(RetryPolicy::no_retries().max_attempts(), 1);
/// assert_eq!(RetryPolicy::default().max_attempts(), 5);
/// ```
pub use wharf_core::RetryPolicy;

/// What happens to a message that cannot be handled.
#[derive(Clone)]
pub(crate) enum DeadLetter {
    /// Log it at error level, count it, acknowledge it.
    Discard,
    /// Publish it, then acknowledge it.
    Publish(DeadLetterTarget),
}

#[derive(Clone)]
pub(crate) struct DeadLetterTarget {
    pub(crate) publisher: Arc<dyn DynPublisher>,
    /// Tries of one publish, and the waits between them.
    pub(crate) retry: RetryPolicy,
    /// How long one try waits for the publisher.
    pub(crate) timeout: Duration,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeadLetter::Discard => f.write_str("Discard"),
            DeadLetter::Publish(t) => f
                .debug_struct("Publish")
                .field("attempts", &t.retry.max_attempts())
                .field("timeout", &t.timeout)
                .finish_non_exhaustive(),
        }
    }
}

/// Settings shared by every part of one consumer.
#[derive(Debug)]
pub(crate) struct Config {
    pub(crate) name: Arc<str>,
    pub(crate) decoder: KeyDecoder,
    pub(crate) shards: usize,
    pub(crate) max_concurrency: usize,
    pub(crate) max_in_flight: usize,
    pub(crate) max_queue_per_key: usize,
    pub(crate) max_signals_per_key: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    pub(crate) dead_letter: DeadLetter,
    pub(crate) signal_timeout: Duration,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) batch_size: usize,
}

impl Config {
    /// This shard's part of the global concurrency limit: the limit split evenly, the
    /// remainder going to the first shards, at least 1 each.
    pub(crate) fn shard_concurrency(&self, shard: usize) -> usize {
        let base = self.max_concurrency / self.shards;
        let extra = usize::from(shard < self.max_concurrency % self.shards);
        (base + extra).max(1)
    }
}

/// Builds a [`ShardedConsumer`]; from [`ShardedConsumer::builder`].
///
/// | Setting | Default | Bounds |
/// |---|---|---|
/// | [`key`](Self::key) | [`KeyDecoder::message_key`] | keys of 1 to 1024 bytes |
/// | [`max_concurrency`](Self::max_concurrency) | 1024 | keys handling a message or signal at once |
/// | [`max_in_flight`](Self::max_in_flight) | 10,000 | deliveries received and not yet settled; past it the source is not read |
/// | [`max_queue_per_key`](Self::max_queue_per_key) | 64 | messages waiting behind a key's current one |
/// | [`max_signals_per_key`](Self::max_signals_per_key) | 16 | signals waiting for a key |
/// | [`idle_timeout`](Self::idle_timeout) | 60 s | an actor with nothing to do this long is stopped |
/// | [`retry`](Self::retry) | [`RetryPolicy::default`] (5 attempts) | |
/// | [`dead_letter`](Self::dead_letter) / [`discard_dead_letters`](Self::discard_dead_letters) | none: **required** | |
/// | [`signal_timeout`](Self::signal_timeout) | 5 s | how long [`signal`](ShardedConsumer::signal) waits |
/// | [`handler_timeout`](Self::handler_timeout) | 30 s | how long one handler call may take; `None` disables it |
/// | [`executors`](Self::executors) | the number of CPUs | executor tasks running the actors |
pub struct ShardedConsumerBuilder<H> {
    name: String,
    handler: H,
    decoder: KeyDecoder,
    shards: Option<usize>,
    max_concurrency: usize,
    max_in_flight: usize,
    max_queue_per_key: usize,
    max_signals_per_key: usize,
    idle_timeout: Option<Duration>,
    retry: RetryPolicy,
    dead_letter: Option<DeadLetter>,
    signal_timeout: Duration,
    handler_timeout: Option<Duration>,
    batch_size: usize,
}

impl<H: Handler> ShardedConsumerBuilder<H> {
    /// The default [`handler_timeout`](Self::handler_timeout).
    pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);

    pub(crate) fn new(name: String, handler: H) -> Self {
        Self {
            name,
            handler,
            decoder: KeyDecoder::message_key(),
            shards: None,
            max_concurrency: 1024,
            max_in_flight: 10_000,
            max_queue_per_key: 64,
            max_signals_per_key: 16,
            idle_timeout: Some(Duration::from_secs(60)),
            retry: RetryPolicy::default(),
            dead_letter: None,
            signal_timeout: Duration::from_secs(5),
            handler_timeout: Some(Self::DEFAULT_HANDLER_TIMEOUT),
            batch_size: 512,
        }
    }

    /// Where keys come from (default: the message key).
    #[must_use]
    pub fn key(mut self, decoder: KeyDecoder) -> Self {
        self.decoder = decoder;
        self
    }

    /// How many keys may be handling a message or a signal at the same moment, over the
    /// whole consumer (default 1024). A handler that waits (I/O) occupies its slot while it
    /// waits; idle keys occupy none.
    ///
    /// The limit is split evenly over the [`executors`](Self::executors) (each key belongs to
    /// one executor), so a single executor can use at most its share.
    #[must_use]
    pub fn max_concurrency(mut self, keys: usize) -> Self {
        self.max_concurrency = keys.max(1);
        self
    }

    /// How many deliveries may be received from the source and not yet settled (running,
    /// queued behind their key, waiting for a retry), over the whole consumer (default
    /// 10,000). When it is reached the consumer stops reading the source until some are
    /// settled: a full system pushes back on the source instead of growing.
    #[must_use]
    pub fn max_in_flight(mut self, deliveries: usize) -> Self {
        self.max_in_flight = deliveries.max(1);
        self
    }

    /// How many messages may wait behind a key's current message (default 64). When a
    /// key's queue is full, its executor stops taking new deliveries until the key catches
    /// up, which in turn pushes back on the source.
    #[must_use]
    pub fn max_queue_per_key(mut self, messages: usize) -> Self {
        self.max_queue_per_key = messages.max(1);
        self
    }

    /// How many signals may wait for one key (default 16); more fail with
    /// [`Error::SignalQueueFull`].
    #[must_use]
    pub fn max_signals_per_key(mut self, signals: usize) -> Self {
        self.max_signals_per_key = signals.max(1);
        self
    }

    /// Stops a key's actor ([`Handler::terminate`] with
    /// [`StopReason::Idle`](crate::StopReason::Idle)) after this long without a message or a
    /// signal (default 60 s); `None` keeps actors until shutdown. Stopped actors cost nothing.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self
    }

    /// How failed messages are retried (default [`RetryPolicy::default`]: 5 attempts,
    /// backoff doubling from 100 ms to 10 s).
    #[must_use]
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Publishes messages that cannot be handled (retries spent, [`Outcome::DeadLetter`](crate::Outcome::DeadLetter),
    /// undecodable keys) to `publisher`, with headers saying why (see the crate docs), then
    /// acknowledges them. A publish is tried 5 times, 10 s each, with backoff; if all fail the
    /// consumer stops with [`Error::DeadLetterFailed`] so that the message is delivered again
    /// rather than lost.
    #[must_use]
    pub fn dead_letter(self, publisher: impl Publisher + 'static) -> Self {
        self.dead_letter_to(Arc::new(publisher))
    }

    /// [`dead_letter`](Self::dead_letter) for a publisher chosen at run time.
    #[must_use]
    pub fn dead_letter_to(mut self, publisher: Arc<dyn DynPublisher>) -> Self {
        self.dead_letter = Some(DeadLetter::Publish(DeadLetterTarget {
            publisher,
            retry: RetryPolicy::new(
                5,
                Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)),
            ),
            timeout: Duration::from_secs(10),
        }));
        self
    }

    /// Logs messages that cannot be handled (at error level, with the reason and the
    /// message's id), counts them in [`DEAD_LETTERED`](crate::metrics::DEAD_LETTERED), and acknowledges
    /// them. Choose this only when losing them is acceptable.
    #[must_use]
    pub fn discard_dead_letters(mut self) -> Self {
        self.dead_letter = Some(DeadLetter::Discard);
        self
    }

    /// How long [`ShardedConsumer::signal`] waits for an answer (default 5 s).
    #[must_use]
    pub fn signal_timeout(mut self, timeout: Duration) -> Self {
        self.signal_timeout = timeout;
        self
    }

    /// How long one call of a [`Handler`] method (`init`, `handle_message`, `handle_signal`,
    /// `terminate`) may take (default 30 s); `None` lets calls take as long as they take.
    ///
    /// A call past it is a failure like an `Err` or a panic, so a handler that never answers
    /// cannot block its key (and its Kafka partition) forever:
    /// - `init` or `handle_message`: a failed attempt of the message; the actor's state is
    ///   dropped without `terminate` (the call may have left it half-changed) and rebuilt by
    ///   `init`; the message is retried by the [`RetryPolicy`], then dead-lettered, and the
    ///   key goes on with its next message;
    /// - `handle_signal`: the caller gets [`Error::ActorFailed`] (if it still waits) and the
    ///   state is dropped likewise;
    /// - `terminate`: logged; the actor is stopped anyway.
    ///
    /// What happens to the late call: one that **waits** (an `.await` that does not resolve)
    /// is dropped at that await point when the deadline passes, which runs its destructors
    /// (a pending request is cancelled, a guard released). One that **blocks its thread**
    /// (a synchronous call, a CPU loop) cannot be interrupted by anything: it runs on, and
    /// holds its executor (the keys hashed to it, and their timers) until it returns; the
    /// time it held the thread is measured, and when it comes back past the deadline the
    /// call counts as failed even if it answered. Run blocking work with
    /// `tokio::task::spawn_blocking` and await it: that call waits instead of blocking, so
    /// the deadline cuts it on time (the blocking thread itself still runs to its end).
    ///
    /// Set it well above your slowest legitimate call (the time a call holds its thread is
    /// wall-clock time, so a loaded machine's preemption counts too), and keep a
    /// supervisor's shutdown grace above it.
    #[must_use]
    pub fn handler_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handler_timeout = timeout.map(|t| t.max(Duration::from_millis(1)));
        self
    }

    /// How many executor tasks run the actors (default: the number of CPUs). Keys are spread
    /// over executors by hash; each executor runs many keys concurrently.
    #[must_use]
    pub fn executors(mut self, executors: usize) -> Self {
        self.shards = Some(executors.max(1));
        self
    }

    /// How many deliveries the reading task hands to an executor at once (default 512).
    /// Larger batches cost fewer wake-ups; smaller ones lower latency under light load
    /// (a batch never waits to fill: what the source has ready is handed over at once).
    #[must_use]
    pub fn batch_size(mut self, deliveries: usize) -> Self {
        self.batch_size = deliveries.max(1);
        self
    }

    /// Builds the consumer; [`ShardedConsumer::run`] then consumes a source.
    ///
    /// # Errors
    ///
    /// [`Error::NoDeadLetterPolicy`] if neither [`dead_letter`](Self::dead_letter) nor
    /// [`discard_dead_letters`](Self::discard_dead_letters) was called;
    /// [`Error::InvalidConfig`] for an empty name.
    pub fn build(self) -> Result<ShardedConsumer<H>, Error> {
        if self.name.is_empty() {
            return Err(Error::InvalidConfig(
                "the consumer's name is empty; give it a name for logs and metrics".into(),
            ));
        }
        let Some(dead_letter) = self.dead_letter else {
            return Err(Error::NoDeadLetterPolicy {
                consumer: self.name,
            });
        };
        let shards = self.shards.unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(usize::from)
                .unwrap_or(1)
        });
        let config = Config {
            name: Arc::from(self.name),
            decoder: self.decoder,
            shards,
            max_concurrency: self.max_concurrency,
            max_in_flight: self.max_in_flight,
            max_queue_per_key: self.max_queue_per_key,
            max_signals_per_key: self.max_signals_per_key,
            idle_timeout: self.idle_timeout,
            retry: self.retry,
            dead_letter,
            signal_timeout: self.signal_timeout,
            handler_timeout: self.handler_timeout,
            batch_size: self.batch_size,
        };
        Ok(ShardedConsumer::new(config, self.handler))
    }
}

impl<H> fmt::Debug for ShardedConsumerBuilder<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShardedConsumerBuilder")
            .field("name", &self.name)
            .field("key", &self.decoder)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_queue_per_key", &self.max_queue_per_key)
            .field("idle_timeout", &self.idle_timeout)
            .field("retry", &self.retry)
            .field("dead_letter", &self.dead_letter)
            .field("handler_timeout", &self.handler_timeout)
            .finish_non_exhaustive()
    }
}

//! Consumers: group consumers with a handler, and plain consumers of given partitions.

mod commit;
mod instance;
mod progress;
mod tracker;
mod worker;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use wharf_core::Backoff;

use crate::config::Redacted;
use crate::message::ConsumedMessage;

pub(crate) use instance::ConsumerInstance;
pub(crate) use progress::StallWatch;
/// How a message whose handler call *failed* (it overran the consumer's
/// [handler deadline](ConsumerSpec::handler_timeout) or it panicked) is tried again, and when
/// it is given up and dead-lettered: wharf-core's [`RetryPolicy`](wharf_core::RetryPolicy),
/// the retry shape every wharf crate shares. See
/// [`ConsumerSpec::retry_policy`] for what counts as an attempt here.
///
/// ```
/// use std::time::Duration;
/// use wharf_core::Backoff;
/// use wharf_kafka_wrapper::RetryPolicy;
///
/// let policy = RetryPolicy::new(5, Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)));
/// assert_eq!(policy.max_attempts(), 5);
/// assert_eq!(RetryPolicy::no_retries().max_attempts(), 1);
/// ```
pub use wharf_core::RetryPolicy;

/// How long one handler call may take by default before it counts as failed.
pub const DEFAULT_HANDLER_TIMEOUT: Duration = Duration::from_secs(60);

/// The retry policy of a consumer that sets none: 3 attempts, backoff doubling from 1 s up to
/// 30 s with 50% jitter (so the waits are 0.5 to 1 s, then 1 to 2 s). It is not
/// [`RetryPolicy::default`] (wharf-core's: 5 attempts from 100 ms): a call that failed by
/// overrunning its deadline has held its partition for the whole deadline already, so this
/// default tries fewer times.
pub const DEFAULT_RETRY_POLICY: RetryPolicy = RetryPolicy::new(
    3,
    Backoff::exponential(Duration::from_secs(1), Duration::from_secs(30)),
);

/// What a handler answers for a message (or a batch).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Handled: the offset may be committed once every earlier message is handled too.
    Ack,
    /// Not handled: call the handler again with the same message after this delay. Later
    /// messages of the partition wait (per-partition order), the offset is not committed.
    Retry(Duration),
    /// Cannot be handled: send it to the spec's dead-letter topic (with the reason and its
    /// origin in headers), then treat it as handled. Without a dead-letter topic it is
    /// retried after a second, and an error is logged.
    DeadLetter(String),
}

type MessageFn = dyn Fn(ConsumedMessage) -> BoxFuture<'static, Outcome> + Send + Sync;
type BatchFn = dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync;

#[derive(Clone)]
pub(crate) enum HandlerKind {
    Message(Arc<MessageFn>),
    Batch {
        max: usize,
        f: Arc<BatchFn>,
    },
    /// Hands messages out through a [`KafkaSource`](crate::KafkaSource).
    Source(crate::transport::SourceSink),
}

/// The user's code that handles consumed messages.
///
/// Messages of one partition are handled one at a time, in order; partitions are handled
/// concurrently (one tokio task each, on the runtime the wrapper was started in).
///
/// # When a call fails
///
/// A call *fails* when it panics or when it takes longer than the consumer's
/// [handler deadline](ConsumerSpec::handler_timeout) (60 s by default). A failed call counts
/// as a failed attempt of its message (or batch) under the spec's [`RetryPolicy`]: handled
/// again after a backoff, and dead-lettered after the last attempt, so a message whose
/// handler never returns does not hold its partition forever.
///
/// What happens to a call that overruns its deadline depends on how it waits:
///
/// - **At an `.await`** (a future that never completes, a slow request): its future is
///   dropped at the deadline, at the point where it waits, like any cancelled future. Work it
///   handed to other tasks (a `tokio::spawn`, a `spawn_blocking`) is not stopped by that.
/// - **Blocking its thread** (`std::thread::sleep`, a CPU loop, blocking I/O): nothing can
///   interrupt it. The wrapper sees the overrun when the call returns, discards its answer and
///   counts a failed attempt; meanwhile it holds its partition and one of the runtime's
///   worker threads. The wrapper's polling thread (group membership, commits) is a thread of
///   its own and keeps going. Run blocking work with `tokio::task::spawn_blocking`: the
///   handler then waits at an `.await`, so the deadline holds:
///
/// ```no_run
/// use wharf_kafka_wrapper::{Handler, Outcome};
///
/// # fn parse_and_store(_: &[u8]) -> Result<(), std::io::Error> { Ok(()) }
/// let handler = Handler::per_message(|msg| async move {
///     let payload = msg.payload().to_vec();
///     match tokio::task::spawn_blocking(move || parse_and_store(&payload)).await {
///         Ok(Ok(())) => Outcome::Ack,
///         Ok(Err(e)) => Outcome::DeadLetter(e.to_string()),
///         Err(_) => Outcome::Retry(std::time::Duration::from_secs(1)), // it panicked
///     }
/// });
/// ```
///
/// At the deadline the `spawn_blocking` closure keeps running to its end on the blocking
/// pool (nothing can stop a thread), but the partition moves on.
#[derive(Clone)]
pub struct Handler {
    pub(crate) kind: HandlerKind,
}

impl fmt::Debug for Handler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            HandlerKind::Message(_) => f.write_str("Handler::PerMessage"),
            HandlerKind::Batch { max, .. } => write!(f, "Handler::PerBatch({max})"),
            HandlerKind::Source(_) => f.write_str("Handler::Source"),
        }
    }
}

impl Handler {
    /// Calls `f` for every message.
    pub fn per_message<F, Fut>(f: F) -> Self
    where
        F: Fn(ConsumedMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Self {
            kind: HandlerKind::Message(Arc::new(move |m| {
                #[cfg(feature = "otel")]
                {
                    use tracing::Instrument as _;
                    let span = crate::trace::message_span(&m);
                    let call = span.in_scope(|| f(m));
                    Box::pin(call.instrument(span))
                }
                #[cfg(not(feature = "otel"))]
                Box::pin(f(m))
            })),
        }
    }

    /// Calls `f` with up to `max_batch` messages of one partition at a time (whatever is
    /// already waiting; it never waits to fill a batch). The outcome applies to the whole
    /// batch.
    pub fn per_batch<F, Fut>(max_batch: usize, f: F) -> Self
    where
        F: Fn(Vec<ConsumedMessage>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Outcome> + Send + 'static,
    {
        Self {
            kind: HandlerKind::Batch {
                max: max_batch.max(1),
                f: Arc::new(move |b| {
                    #[cfg(feature = "otel")]
                    {
                        use tracing::Instrument as _;
                        let span = crate::trace::batch_span(&b);
                        let call = span.in_scope(|| f(b));
                        Box::pin(call.instrument(span))
                    }
                    #[cfg(not(feature = "otel"))]
                    Box::pin(f(b))
                }),
            },
        }
    }
}

/// Where a plain consumer starts reading a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StartAt {
    /// The oldest message still stored.
    Beginning,
    /// Only messages produced from now on.
    End,
    /// This offset.
    Offset(i64),
}

#[derive(Debug, Clone)]
pub(crate) enum Subscription {
    Group {
        group_id: String,
        topics: Vec<String>,
    },
    Partitions(Vec<(String, i32, StartAt)>),
}

/// What a registered consumer is built from at every (re)build.
#[derive(Clone)]
pub struct ConsumerSpec {
    pub(crate) name: String,
    pub(crate) subscription: Subscription,
    pub(crate) handler: Handler,
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) dead_letter_topic: Option<String>,
    pub(crate) queue_per_partition: usize,
    pub(crate) in_flight_per_partition: usize,
    pub(crate) handler_timeout: Option<Duration>,
    pub(crate) retry: RetryPolicy,
}

impl ConsumerSpec {
    /// A member of consumer group `group_id` reading `topics`: partitions are shared among
    /// the group's members and offsets are committed at least once.
    pub fn group(
        name: impl Into<String>,
        group_id: impl Into<String>,
        topics: impl IntoIterator<Item = impl Into<String>>,
        handler: Handler,
    ) -> Self {
        let subscription = Subscription::Group {
            group_id: group_id.into(),
            topics: topics.into_iter().map(Into::into).collect(),
        };
        Self::with(name.into(), subscription, handler)
    }

    /// A plain consumer of the given partitions, no group and no commits. Across rebuilds
    /// it resumes after the last message its handler finished.
    pub fn partitions(
        name: impl Into<String>,
        partitions: impl IntoIterator<Item = (String, i32, StartAt)>,
        handler: Handler,
    ) -> Self {
        Self::with(
            name.into(),
            Subscription::Partitions(partitions.into_iter().collect()),
            handler,
        )
    }

    fn with(name: String, subscription: Subscription, handler: Handler) -> Self {
        Self {
            name,
            subscription,
            handler,
            overrides: BTreeMap::new(),
            dead_letter_topic: None,
            queue_per_partition: 4096,
            in_flight_per_partition: 1,
            handler_timeout: Some(DEFAULT_HANDLER_TIMEOUT),
            retry: DEFAULT_RETRY_POLICY,
        }
    }

    /// Overrides a librdkafka property for this consumer only (`session.timeout.ms`,
    /// `max.poll.interval.ms`, `auto.offset.reset`, ...).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    /// Where [`Outcome::DeadLetter`] sends messages, and messages whose handler failed
    /// [`RetryPolicy::max_attempts`] times. Without one, such a message is retried every
    /// second (an error is logged each time) and holds its partition: it is never dropped.
    pub fn dead_letter_topic(mut self, topic: impl Into<String>) -> Self {
        self.dead_letter_topic = Some(topic.into());
        self
    }

    /// How long one handler call (of a message, or of a batch) may take before it counts
    /// as a failed attempt under the [`retry_policy`](Self::retry_policy); `None` lets calls
    /// take as long as they take. Default: [`DEFAULT_HANDLER_TIMEOUT`] (60 s).
    ///
    /// A call that overruns the deadline at an `.await` is dropped there; one that blocks its
    /// thread past it is noticed when it returns, and its answer is discarded (see
    /// [`Handler`]). Either way its message is not handled (nor committed) by that call.
    ///
    /// A call that is still running is never taken for a stalled client: stall detection
    /// only looks at partitions whose handler is waiting for messages. With `None`, a call
    /// that never returns holds its partition until the consumer is removed or rebuilt.
    ///
    /// Deliveries of a [`KafkaSource`](crate::KafkaSource) have no deadline: they are
    /// settled by the source's user.
    pub fn handler_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handler_timeout = timeout;
        self
    }

    /// How messages whose handler call failed (a panic, an overrun deadline) are retried
    /// and when they are dead-lettered. Default: [`DEFAULT_RETRY_POLICY`] (3 attempts, from
    /// 1 s).
    ///
    /// `max_attempts` bounds the failed calls of one message: after the `n`-th failure (`n`
    /// below `max_attempts`) the message is handled again after `backoff.delay(n - 1)`; the
    /// `max_attempts`-th failure sends it to the spec's
    /// [dead-letter topic](Self::dead_letter_topic), with the reason in the
    /// `wharf.dlq.reason` header, like [`Outcome::DeadLetter`]. Then the partition moves on,
    /// and its offset is committed past the message once the dead-letter topic has it.
    ///
    /// A handler's own [`Outcome::Retry`] is not a failure: the message is handled again after
    /// the delay it asked for, as often as it asks (the handler sees
    /// [`attempt`](crate::ConsumedMessage::attempt) and can answer `DeadLetter` itself).
    ///
    /// Failures are counted per delivery: a message delivered again after a rebalance or a
    /// rebuild starts from zero.
    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// About how many fetched messages may wait per partition before that partition is
    /// paused (default 4096; handed over in chunks of up to 1024, at least one chunk).
    pub fn queue_per_partition(mut self, n: usize) -> Self {
        self.queue_per_partition = n.max(1);
        self
    }

    /// How many messages of one partition may be in the handler at once (default 1).
    ///
    /// With 1, a partition's messages are handled strictly one after another, in offset
    /// order. With more, up to `n` handler calls (messages, or batches with
    /// [`Handler::per_batch`]) of one partition run concurrently. The handler function is
    /// *called* in offset order (what it does before returning its future happens in that
    /// order), and a [`KafkaSource`](crate::KafkaSource) hands its deliveries out in offset
    /// order; the futures then run concurrently and may finish in any order. A message whose
    /// handler asks to retry (a nacked or dropped delivery) is handled again after the
    /// delay, after newer ones. Commits stay at-least-once: a partition's offset is committed
    /// only below its oldest message not yet handled. While an old message is still being
    /// retried, at most [`queue_per_partition`](Self::queue_per_partition) newer messages of
    /// its partition are handled past it; then the partition waits for it.
    ///
    /// Use it when the handler keeps the order it needs itself, per key for example (as
    /// `wharf-sharded-consumer` does over a `KafkaSource`), so that one partition can feed
    /// many keys in parallel.
    pub fn in_flight_per_partition(mut self, n: usize) -> Self {
        self.in_flight_per_partition = n.max(1);
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The consumer group of a group consumer (`None` for a plain one).
    pub fn group_id(&self) -> Option<&str> {
        match &self.subscription {
            Subscription::Group { group_id, .. } => Some(group_id),
            Subscription::Partitions(_) => None,
        }
    }
}

impl fmt::Debug for ConsumerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerSpec")
            .field("name", &self.name)
            .field("subscription", &self.subscription)
            .field("handler", &self.handler)
            .field("overrides", &Redacted(&self.overrides))
            .field("dead_letter_topic", &self.dead_letter_topic)
            .field("queue_per_partition", &self.queue_per_partition)
            .field("in_flight_per_partition", &self.in_flight_per_partition)
            .field("handler_timeout", &self.handler_timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

/// Consumer lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The offset after the last message known to exist: the broker's high watermark, or,
    /// when the broker reports less, one past the last message this consumer received (or
    /// where it started). Tansu 0.6 reports the high watermark of a batch of records as one
    /// past its *first* record: there, the records of the last batch that the consumer has
    /// not fetched yet are not counted.
    pub high_watermark: i64,
    /// The committable position (every message before it was handled).
    pub position: i64,
    /// `high_watermark - position`.
    pub lag: i64,
}

pub(crate) enum Control {
    Pause(Option<(String, i32)>),
    Resume(Option<(String, i32)>),
}

/// State of a registered consumer that outlives its incarnations.
pub(crate) struct ConsumerShared {
    pub(crate) spec: ConsumerSpec,
    pub(crate) control: watch::Sender<Option<mpsc::Sender<Control>>>,
    pub(crate) user_paused: Mutex<HashSet<(String, i32)>>,
    pub(crate) all_paused: AtomicBool,
    pub(crate) handled: AtomicU64,
    pub(crate) lag: Mutex<Vec<PartitionLag>>,
    pub(crate) resume_at: Mutex<BTreeMap<(String, i32), i64>>,
    pub(crate) assignment: Mutex<Vec<(String, i32)>>,
    /// Set when the `KafkaSource` fed by this consumer was dropped: the consumer is being
    /// retired, and its name may be registered again.
    pub(crate) released: AtomicBool,
}

/// A handle to a supervised consumer; it outlives rebuilds (pauses are re-applied to the
/// next incarnation).
#[derive(Clone)]
pub struct ConsumerHandle {
    pub(crate) shared: Arc<ConsumerShared>,
}

impl fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("name", &self.shared.spec.name)
            .finish()
    }
}

impl ConsumerHandle {
    pub(crate) fn new(spec: ConsumerSpec) -> Self {
        let (control, _) = watch::channel(None);
        Self {
            shared: Arc::new(ConsumerShared {
                spec,
                control,
                user_paused: Mutex::new(HashSet::new()),
                all_paused: AtomicBool::new(false),
                handled: AtomicU64::new(0),
                lag: Mutex::new(Vec::new()),
                resume_at: Mutex::new(BTreeMap::new()),
                assignment: Mutex::new(Vec::new()),
                released: AtomicBool::new(false),
            }),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    fn send(&self, c: Control) {
        let tx = self.shared.control.borrow().clone();
        if let Some(tx) = tx {
            // The current incarnation applies it; a later one re-applies the stored state.
            let _ = tx.try_send(c);
        }
    }

    /// Stops fetching from one partition (handlers finish what they have). The consumer
    /// keeps polling, so the group does not rebalance.
    pub fn pause(&self, topic: &str, partition: i32) {
        if let Ok(mut p) = self.shared.user_paused.lock() {
            p.insert((topic.to_owned(), partition));
        }
        self.send(Control::Pause(Some((topic.to_owned(), partition))));
    }

    /// Resumes one partition paused with [`pause`](Self::pause).
    pub fn resume(&self, topic: &str, partition: i32) {
        if let Ok(mut p) = self.shared.user_paused.lock() {
            p.remove(&(topic.to_owned(), partition));
        }
        self.send(Control::Resume(Some((topic.to_owned(), partition))));
    }

    /// Pauses every assigned partition.
    pub fn pause_all(&self) {
        self.shared.all_paused.store(true, Ordering::Release);
        self.send(Control::Pause(None));
    }

    /// Resumes every partition.
    pub fn resume_all(&self) {
        self.shared.all_paused.store(false, Ordering::Release);
        if let Ok(mut p) = self.shared.user_paused.lock() {
            p.clear();
        }
        self.send(Control::Resume(None));
    }

    /// Lag per assigned partition, as of the wrapper's last health check.
    pub fn lag(&self) -> Vec<PartitionLag> {
        self.shared
            .lag
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default()
    }

    /// Total lag over the assigned partitions.
    pub fn total_lag(&self) -> i64 {
        self.lag().iter().map(|l| l.lag.max(0)).sum()
    }

    /// Partitions currently assigned to this consumer.
    pub fn assignment(&self) -> Vec<(String, i32)> {
        self.shared
            .assignment
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default()
    }

    /// Messages handled (acked or dead-lettered) since the consumer was registered.
    pub fn handled(&self) -> u64 {
        self.shared.handled.load(Ordering::Relaxed)
    }
}

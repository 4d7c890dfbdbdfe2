//! Producers: await the broker's receipt, fire and forget with a callback, or send a batch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::config::{KafkaConfig, Redacted};
use crate::error::{Error, Result};
use crate::health::HealthContext;
use crate::message::{Delivered, Record};

/// librdkafka settings the wrapper's producers use unless the config or the spec says otherwise.
pub(crate) const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    // Idempotence implies acks=all and bounded in-flight requests: no duplicates from retries,
    // no reordering within a partition.
    ("enable.idempotence", "true"),
    ("acks", "all"),
    // The Java client's partitioner for keyed messages (random for unkeyed ones).
    ("partitioner", "murmur2_random"),
];

/// What a registered producer is built from at every (re)build.
#[derive(Clone)]
pub struct ProducerSpec {
    pub(crate) name: String,
    pub(crate) overrides: BTreeMap<String, String>,
    pub(crate) queue_timeout: Duration,
}

impl ProducerSpec {
    /// A producer named `name` with the wrapper's configuration.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            overrides: BTreeMap::new(),
            queue_timeout: Duration::from_secs(10),
        }
    }

    /// Overrides a librdkafka property for this producer only (`compression.type`,
    /// `linger.ms`, `enable.idempotence`, ...).
    pub fn set(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.overrides.insert(key.into(), value.into());
        self
    }

    /// How long a send waits for room in librdkafka's queue (or for the client to be
    /// rebuilt) before it fails (default 10 s).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for ProducerSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerSpec")
            .field("name", &self.name)
            .field("overrides", &Redacted(&self.overrides))
            .field("queue_timeout", &self.queue_timeout)
            .finish()
    }
}

type Callback = Box<dyn FnOnce(Result<Delivered>) + Send>;

/// How many times one message is sent again after rebuilds purged it.
const MAX_RESENDS: u32 = 3;

fn purged(record: &Record) -> Error {
    Error::Delivery {
        topic: record.topic.clone(),
        source: KafkaError::MessageProduction(RDKafkaErrorCode::PurgeQueue),
    }
}

/// The broker's answer for one message: (partition, offset), or librdkafka's error. The
/// topic is added by whoever waits for it, so librdkafka's single delivery thread does not
/// allocate per message.
pub(crate) type RawOutcome = std::result::Result<(i32, i64), KafkaError>;

/// What to do when librdkafka reports the delivery of one message.
pub(crate) enum Completion {
    /// One [`Producer::send`] waiting for its outcome.
    Await(oneshot::Sender<RawOutcome>),
    /// One [`Producer::send_with`] callback.
    Callback(CallbackSlot),
    /// One record of a [`Producer::send_batch`].
    Batch(BatchSlot),
}

/// The outcomes of one `send_batch`, filled in by delivery reports: one shared allocation
/// for the batch instead of a channel per record.
pub(crate) struct BatchState {
    results: Mutex<Vec<Option<RawOutcome>>>,
    /// Records without an outcome yet, plus one held by the sender until it queued them all.
    remaining: std::sync::atomic::AtomicUsize,
    done: tokio::sync::Notify,
}

impl BatchState {
    fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            results: Mutex::new((0..n).map(|_| None).collect()),
            remaining: std::sync::atomic::AtomicUsize::new(n + 1),
            done: tokio::sync::Notify::new(),
        })
    }

    /// Counts one outcome in; wakes the sender after the last.
    fn settle(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// One record's place in a [`BatchState`]. Dropped without an outcome (not queued, or the
/// client went away without reporting), it records a purge, so the batch always completes.
pub(crate) struct BatchSlot {
    state: Arc<BatchState>,
    index: usize,
    fired: bool,
}

impl BatchSlot {
    fn fire(&mut self, result: RawOutcome) {
        if std::mem::replace(&mut self.fired, true) {
            return;
        }
        if let Ok(mut r) = self.state.results.lock()
            && let Some(slot) = r.get_mut(self.index)
        {
            *slot = Some(result);
        }
        self.state.settle();
    }
}

impl Drop for BatchSlot {
    fn drop(&mut self) {
        self.fire(Err(KafkaError::MessageProduction(
            RDKafkaErrorCode::PurgeQueue,
        )));
    }
}

/// A `send_with` callback waiting for its outcome. Dropped without one (the client went
/// away without reporting), it counts as purged: the record is sent again, or the callback
/// gets the purge error, never silence.
pub(crate) struct CallbackSlot {
    topic: String,
    cb: Arc<Mutex<Option<Callback>>>,
    /// What it takes to send the record again if a rebuild purges it.
    resend: Option<Box<Resend>>,
    fired: bool,
    /// Set while librdkafka holds the record: only then does a drop without an outcome
    /// mean the client lost it (not queued at all is the caller's error instead).
    armed: bool,
}

impl CallbackSlot {
    fn fire(&mut self, result: RawOutcome) {
        if std::mem::replace(&mut self.fired, true) {
            return;
        }
        if let Some(r) = self.resend.take()
            && result.as_ref().is_err_and(is_purge)
            && r.resends < MAX_RESENDS
            && !r.producer.shared.stopped.load(Ordering::Acquire)
        {
            // Purged by a rebuild: send it again through the next client; the callback
            // gets the outcome of that send instead.
            metrics::counter!("wharf_kafka_resent_after_rebuild_total", "producer" => r.producer.shared.spec.name.clone()).increment(1);
            let Resend {
                record,
                producer,
                runtime,
                resends,
            } = *r;
            let cb = self.cb.clone();
            runtime.spawn(async move {
                producer.send_with_attempt(record, cb, resends + 1).await;
            });
            return;
        }
        let cb = self.cb.lock().ok().and_then(|mut c| c.take());
        if let Some(cb) = cb {
            cb(finish(Arc::from(self.topic.as_str()), result));
        }
    }
}

impl Drop for CallbackSlot {
    fn drop(&mut self) {
        if self.armed {
            self.fire(Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::PurgeQueue,
            )));
        }
    }
}

/// A `send_with` record kept for sending again through the next client when a rebuild
/// purges it from the old one.
pub(crate) struct Resend {
    record: Record,
    producer: Producer,
    runtime: tokio::runtime::Handle,
    resends: u32,
}

/// The record was purged from a client torn down by a rebuild (never refused by Kafka).
fn is_purge(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
        )
    )
}

impl Completion {
    /// Marks whether librdkafka holds the record (see [`CallbackSlot::armed`]).
    fn arm(&mut self, held: bool) {
        if let Completion::Callback(slot) = self {
            slot.armed = held;
        }
    }

    fn complete(self, result: RawOutcome) {
        match self {
            Completion::Await(tx) => {
                let _ = tx.send(result);
            }
            Completion::Callback(mut slot) => slot.fire(result),
            Completion::Batch(mut slot) => slot.fire(result),
        }
    }
}

/// A raw outcome as the public result.
fn finish(topic: Arc<str>, result: RawOutcome) -> Result<Delivered> {
    match result {
        Ok((partition, offset)) => Ok(Delivered {
            topic,
            partition,
            offset,
        }),
        Err(source) => Err(Error::Delivery {
            topic: topic.to_string(),
            source,
        }),
    }
}

/// Waits for a raw outcome; a dropped sender means the message was purged.
async fn outcome(
    rx: oneshot::Receiver<RawOutcome>,
    record: &Record,
    topic: &mut Option<Arc<str>>,
) -> Result<Delivered> {
    match rx.await {
        Ok(r) => finish(shared_topic(topic, &record.topic), r),
        Err(_) => Err(purged(record)),
    }
}

/// The topic as an `Arc`, reusing the previous one when it is the same topic, so that a
/// batch to one topic allocates its name once.
fn shared_topic(cache: &mut Option<Arc<str>>, topic: &str) -> Arc<str> {
    match cache {
        Some(t) if &**t == topic => t.clone(),
        _ => {
            let t: Arc<str> = Arc::from(topic);
            *cache = Some(t.clone());
            t
        }
    }
}

/// librdkafka context of a wrapper producer: health reporting plus delivery reports.
pub(crate) struct ProducerCtx {
    pub(crate) base: HealthContext,
    delivered: metrics::Counter,
    failed: metrics::Counter,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Completion>;

    fn delivery(&self, result: &DeliveryResult<'_>, completion: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => {
                self.delivered.increment(1);
                Ok((m.partition(), m.offset()))
            }
            Err((e, m)) => {
                self.failed.increment(1);
                tracing::debug!(producer = %self.base.name, topic = m.topic(), error = %e, "delivery failed");
                Err(e.clone())
            }
        };
        completion.complete(outcome);
    }
}

/// One incarnation of a producer: a librdkafka client with its polling thread.
pub(crate) struct ProducerInstance {
    pub(crate) producer: ThreadedProducer<ProducerCtx>,
}

impl ProducerInstance {
    pub(crate) fn build(
        config: &KafkaConfig,
        spec: &ProducerSpec,
        base: HealthContext,
    ) -> Result<Self> {
        let cc = config.client_config(PRODUCER_DEFAULTS, &spec.overrides);
        let name = spec.name.clone();
        let ctx = ProducerCtx {
            base,
            delivered: metrics::counter!("wharf_kafka_produced_total", "producer" => name.clone()),
            failed: metrics::counter!("wharf_kafka_produce_failed_total", "producer" => name),
        };
        let producer = cc.create_with_context(ctx).map_err(Error::Config)?;
        Ok(Self { producer })
    }

    /// Queues one record; `Err` gives the completion back with the reason.
    fn try_enqueue(
        &self,
        record: &Record,
        mut completion: Box<Completion>,
    ) -> std::result::Result<(), (KafkaError, Box<Completion>)> {
        completion.arm(true);
        let mut br: BaseRecord<'_, [u8], [u8], Box<Completion>> =
            BaseRecord::with_opaque_to(&record.topic, completion).payload(record.payload.as_ref());
        if let Some(k) = &record.key {
            br = br.key(k.as_ref());
        }
        if let Some(p) = record.partition {
            br = br.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            br = br.timestamp(ts);
        }
        if let Some(h) = record.owned_headers() {
            br = br.headers(h);
        }
        self.producer.send(br).map_err(|(e, br)| {
            let mut completion = br.delivery_opaque;
            completion.arm(false);
            (e, completion)
        })
    }

    /// Sends one record and waits for its receipt (no queue-full waiting: internal use).
    pub(crate) async fn send_one(&self, record: &Record) -> Result<Delivered> {
        let (tx, rx) = oneshot::channel();
        self.try_enqueue(record, Box::new(Completion::Await(tx)))
            .map_err(|(source, _)| Error::Enqueue {
                topic: record.topic.clone(),
                source,
            })?;
        outcome(rx, record, &mut None).await
    }

    /// Waits for queued messages to be delivered, up to `grace`; then the instance can go.
    pub(crate) fn flush(&self, grace: Duration) {
        if let Err(e) = self.producer.flush(grace) {
            tracing::warn!(error = %e, in_flight = self.producer.in_flight_count(), "producer flush incomplete; undelivered messages fail with an error");
        }
    }
}

pub(crate) struct ProducerShared {
    pub(crate) spec: ProducerSpec,
    pub(crate) slot: watch::Sender<Option<Arc<ProducerInstance>>>,
    pub(crate) stopped: AtomicBool,
}

/// A handle to a supervised producer. Cloneable; it outlives rebuilds of the client: a send
/// issued while the wrapper rebuilds waits (up to the spec's queue timeout) for the next
/// incarnation instead of failing.
///
/// | method | returns when | use it for |
/// |---|---|---|
/// | [`send`](Self::send) | the broker acknowledged (acks=all) | one message whose fate you must know |
/// | [`send_with`](Self::send_with) | the message is queued; the callback gets the receipt | high throughput with per-message outcome |
/// | [`send_batch`](Self::send_batch) | every message of the batch has an outcome | many messages, one result each |
#[derive(Clone)]
pub struct Producer {
    pub(crate) shared: Arc<ProducerShared>,
}

impl fmt::Debug for Producer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Producer")
            .field("name", &self.shared.spec.name)
            .finish()
    }
}

impl Producer {
    pub(crate) fn new(spec: ProducerSpec) -> Self {
        let (slot, _) = watch::channel(None);
        Self {
            shared: Arc::new(ProducerShared {
                spec,
                slot,
                stopped: AtomicBool::new(false),
            }),
        }
    }

    /// The producer's name.
    pub fn name(&self) -> &str {
        &self.shared.spec.name
    }

    async fn instance(&self, deadline: Instant) -> Result<Arc<ProducerInstance>> {
        if let Some(i) = self.shared.slot.borrow().as_ref() {
            return Ok(i.clone());
        }
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(Error::Stopped(self.shared.spec.name.clone()));
        }
        let mut rx = self.shared.slot.subscribe();
        let wait = rx.wait_for(|i| i.is_some());
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(i)) => i
                .clone()
                .ok_or_else(|| Error::Stopped(self.shared.spec.name.clone())),
            Ok(Err(_)) => Err(Error::Stopped(self.shared.spec.name.clone())),
            Err(_) => Err(Error::Unavailable {
                what: format!("producer `{}`", self.shared.spec.name),
                after: self.shared.spec.queue_timeout,
            }),
        }
    }

    /// Queues `record`, waiting for room in the queue or for a rebuild to finish.
    async fn enqueue(&self, record: &Record, completion: Box<Completion>) -> Result<()> {
        // Fast path: a current instance with room in its queue.
        let first = match self.shared.slot.borrow().as_ref() {
            Some(instance) => instance.try_enqueue(record, completion),
            None => Err((
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull),
                completion,
            )),
        };
        let mut completion = match first {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), c)) => c,
            Err((source, _)) => {
                return Err(Error::Enqueue {
                    topic: record.topic.clone(),
                    source,
                });
            }
        };
        let deadline = Instant::now() + self.shared.spec.queue_timeout;
        loop {
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(Error::Stopped(self.shared.spec.name.clone()));
            }
            let instance = self.instance(deadline).await?;
            match instance.try_enqueue(record, completion) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), c))
                    if Instant::now() < deadline =>
                {
                    completion = c;
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Err((source, _)) => {
                    return Err(Error::Enqueue {
                        topic: record.topic.clone(),
                        source,
                    });
                }
            }
        }
    }

    /// Sends one record and resolves when the broker acknowledged it, with its partition and
    /// offset.
    ///
    /// Errors: [`Error::Enqueue`] if it could not be queued (see the spec's queue timeout),
    /// [`Error::Delivery`] if the broker did not take it within librdkafka's
    /// `message.timeout.ms`, [`Error::Stopped`] if the producer was removed. A message whose
    /// client is torn down by a rebuild before the broker acknowledged it is sent again
    /// through the rebuilt client (up to 3 times; it may then be stored twice). Dropping the
    /// future does not cancel the send.
    pub async fn send(&self, record: Record) -> Result<Delivered> {
        let mut resends = 0;
        loop {
            let (tx, rx) = oneshot::channel();
            self.enqueue(&record, Box::new(Completion::Await(tx)))
                .await?;
            let result = outcome(rx, &record, &mut None).await;
            if self.should_resend(&result, &mut resends) {
                continue;
            }
            return result;
        }
    }

    /// A message purged because its client was torn down for a rebuild is sent again
    /// through the next client (a few times at most): the caller sees a receipt, not the
    /// rebuild. It may then be stored twice if the broker had taken the first copy.
    fn should_resend(&self, result: &Result<Delivered>, resends: &mut u32) -> bool {
        let purged = matches!(result, Err(Error::Delivery { source, .. }) if is_purge(source));
        if purged && *resends < MAX_RESENDS && !self.shared.stopped.load(Ordering::Acquire) {
            *resends += 1;
            metrics::counter!("wharf_kafka_resent_after_rebuild_total", "producer" => self.shared.spec.name.clone()).increment(1);
            return true;
        }
        false
    }

    /// Queues one record and returns; `on_delivery` is called once with its outcome, from
    /// librdkafka's polling thread or a tokio task (keep it short: send it to a channel if
    /// it must do work). A record purged because a rebuild tore its client down is sent
    /// again through the next client, as with [`send`](Self::send), and the callback gets
    /// that outcome; it is never dropped without a call. If `send_with` itself returns an
    /// error, the record was not queued and the callback is not called.
    pub async fn send_with<F>(&self, record: Record, on_delivery: F) -> Result<()>
    where
        F: FnOnce(Result<Delivered>) + Send + 'static,
    {
        let cb: Callback = Box::new(on_delivery);
        let cb = Arc::new(Mutex::new(Some(cb)));
        let completion = self.callback_completion(&record, cb, 0);
        self.enqueue(&record, Box::new(completion)).await
    }

    fn callback_completion(
        &self,
        record: &Record,
        cb: Arc<Mutex<Option<Callback>>>,
        resends: u32,
    ) -> Completion {
        let resend = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            Box::new(Resend {
                record: record.clone(),
                producer: self.clone(),
                runtime,
                resends,
            })
        });
        Completion::Callback(CallbackSlot {
            topic: record.topic.clone(),
            cb,
            resend,
            fired: false,
            armed: false,
        })
    }

    /// Sends a purged `send_with` record again; if it cannot even be queued, the callback
    /// gets that error.
    async fn send_with_attempt(
        &self,
        record: Record,
        cb: Arc<Mutex<Option<Callback>>>,
        resends: u32,
    ) {
        let completion = self.callback_completion(&record, cb.clone(), resends);
        if let Err(e) = self.enqueue(&record, Box::new(completion)).await {
            let cb = cb.lock().ok().and_then(|mut c| c.take());
            if let Some(cb) = cb {
                cb(Err(e));
            }
        }
    }

    /// Sends every record and returns one result per record, in order. A record that could
    /// not be queued gets its error; the others are still sent.
    pub async fn send_batch(&self, records: Vec<Record>) -> Vec<Result<Delivered>> {
        let state = BatchState::new(records.len());
        let mut not_queued: Vec<Option<Error>> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let slot = BatchSlot {
                state: state.clone(),
                index,
                fired: false,
            };
            if let Err(e) = self
                .enqueue(record, Box::new(Completion::Batch(slot)))
                .await
            {
                if not_queued.is_empty() {
                    not_queued.resize_with(records.len(), || None);
                }
                not_queued[index] = Some(e);
            }
        }
        // Every slot settles once (by its delivery report, or as purged when dropped), and
        // librdkafka reports every queued record within `message.timeout.ms`.
        state.settle();
        state.done.notified().await;
        let results = match state.results.lock() {
            Ok(mut r) => std::mem::take(&mut *r),
            Err(_) => Vec::new(),
        };
        let mut out = Vec::with_capacity(records.len());
        let mut topic = None;
        let mut results = results.into_iter();
        for (index, record) in records.into_iter().enumerate() {
            let raw = results.next().flatten();
            if let Some(e) = not_queued.get_mut(index).and_then(Option::take) {
                out.push(Err(e));
                continue;
            }
            let result = match raw {
                Some(r) => finish(shared_topic(&mut topic, &record.topic), r),
                None => Err(purged(&record)),
            };
            let mut resends = 0;
            if self.should_resend(&result, &mut resends) {
                out.push(self.send(record).await);
            } else {
                out.push(result);
            }
        }
        out
    }

    /// Waits until every queued message has an outcome, up to `timeout`.
    pub async fn flush(&self, timeout: Duration) -> Result<()> {
        let instance = self.instance(Instant::now() + timeout).await?;
        tokio::task::spawn_blocking(move || instance.producer.flush(timeout))
            .await
            .map_err(|e| Error::Timeout {
                what: format!("flush ({e})"),
                after: timeout,
            })?
            .map_err(|_| Error::Timeout {
                what: "flush".to_owned(),
                after: timeout,
            })
    }
}

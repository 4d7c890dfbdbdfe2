//! Producers: await the broker's receipt, fire and forget with a callback, or send a batch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
use crate::log_gate::gated_warn;
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

/// How long a retiring client gets to report the records it purged (librdkafka reports
/// them at once; this only bounds a stuck client).
const PURGE_REPORTS: Duration = Duration::from_secs(2);

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
            // Purged by a rebuild: it goes to the next client, ahead of anything sent after
            // it; the callback gets the outcome of that send instead.
            metrics::counter!("wharf_kafka_resent_after_rebuild_total", "producer" => r.producer.shared.spec.name.clone()).increment(1);
            let Resend {
                record,
                producer,
                resends,
                seq,
            } = *r;
            producer.queue_resend(
                seq,
                Pending {
                    record,
                    cb: self.cb.clone(),
                    resends: resends + 1,
                },
            );
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
    resends: u32,
    /// Its place among the producer's `send_with` records, kept across resends.
    seq: u64,
}

/// A purged `send_with` record waiting for the next client.
pub(crate) struct Pending {
    record: Record,
    cb: Arc<Mutex<Option<Callback>>>,
    resends: u32,
}

/// What became of one attempt to queue a record in the current client.
enum Attempt {
    Queued,
    /// No client: the wrapper is rebuilding (or the producer was removed).
    NoClient(Box<Completion>),
    /// librdkafka's queue is full.
    Full(Box<Completion>),
    Failed(KafkaError),
}

/// Callbacks to tell of records that could not be sent again, called once no lock is held
/// (a callback may send).
#[derive(Default)]
struct Failed(Vec<(Arc<Mutex<Option<Callback>>>, Error)>);

impl Failed {
    fn call(self) {
        for (cb, error) in self.0 {
            let cb = cb.lock().ok().and_then(|mut c| c.take());
            if let Some(cb) = cb {
                cb(Err(error));
            }
        }
    }
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
            gated_warn!(self.producer.context().base.gate, "producer flush incomplete; the undelivered records are purged (sent again through the next client, or failed)", error = %e, in_flight = self.producer.in_flight_count());
        }
    }

    /// Takes the instance out of service: waits up to `grace` for queued records to be
    /// delivered, then purges the rest and waits for their reports, so that every record it
    /// held has an outcome (or is waiting for the next client) before the next client is
    /// installed. Nothing reported later could keep its order against newer records.
    pub(crate) fn retire(&self, grace: Duration) {
        self.flush(grace);
        if self.producer.in_flight_count() == 0 {
            return;
        }
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        if self.producer.flush(PURGE_REPORTS).is_err() {
            gated_warn!(
                self.producer.context().base.gate,
                "purged records still unreported; they are sent again when reported, possibly after newer ones",
                left = self.producer.in_flight_count()
            );
        }
    }
}

pub(crate) struct ProducerShared {
    pub(crate) spec: ProducerSpec,
    pub(crate) slot: watch::Sender<Option<Arc<ProducerInstance>>>,
    pub(crate) stopped: AtomicBool,
    /// Numbers `send_with` records in the order they are sent.
    next_seq: AtomicU64,
    /// `send_with` records purged by a rebuild, by number: queued in the next client, in
    /// this order, before it takes anything new. Bounded by what one client can hold.
    pending: Mutex<BTreeMap<u64, Pending>>,
}

impl ProducerShared {
    fn pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
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
                next_seq: AtomicU64::new(0),
                pending: Mutex::new(BTreeMap::new()),
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

    /// One attempt to queue `record` in the current client. The slot stays borrowed
    /// meanwhile, so a client being retired (its slot emptied first) takes nothing new.
    fn try_current(&self, record: &Record, completion: Box<Completion>) -> Attempt {
        let slot = self.shared.slot.borrow();
        let Some(instance) = slot.as_ref() else {
            return Attempt::NoClient(completion);
        };
        match instance.try_enqueue(record, completion) {
            Ok(()) => Attempt::Queued,
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), c)) => {
                Attempt::Full(c)
            }
            Err((source, _)) => Attempt::Failed(source),
        }
    }

    /// Queues `record`, waiting for room in the queue or for a rebuild to finish.
    async fn enqueue(&self, record: &Record, completion: Box<Completion>) -> Result<()> {
        let enqueue_error = |source| Error::Enqueue {
            topic: record.topic.clone(),
            source,
        };
        // Fast path: a current client with room in its queue.
        let mut completion = match self.try_current(record, completion) {
            Attempt::Queued => return Ok(()),
            Attempt::Failed(source) => return Err(enqueue_error(source)),
            Attempt::NoClient(c) | Attempt::Full(c) => c,
        };
        let deadline = Instant::now() + self.shared.spec.queue_timeout;
        let mut slot = self.shared.slot.subscribe();
        loop {
            if self.shared.stopped.load(Ordering::Acquire) {
                return Err(Error::Stopped(self.shared.spec.name.clone()));
            }
            completion = match self.try_current(record, completion) {
                Attempt::Queued => return Ok(()),
                Attempt::Failed(source) => return Err(enqueue_error(source)),
                Attempt::Full(c) => {
                    if Instant::now() >= deadline {
                        return Err(enqueue_error(KafkaError::MessageProduction(
                            RDKafkaErrorCode::QueueFull,
                        )));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    c
                }
                Attempt::NoClient(c) => {
                    let stopped = &self.shared.stopped;
                    let installed =
                        slot.wait_for(|i| i.is_some() || stopped.load(Ordering::Acquire));
                    match tokio::time::timeout_at(deadline.into(), installed).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(_)) => return Err(Error::Stopped(self.shared.spec.name.clone())),
                        Err(_) => {
                            return Err(Error::Unavailable {
                                what: format!("producer `{}`", self.shared.spec.name),
                                after: self.shared.spec.queue_timeout,
                            });
                        }
                    }
                    c
                }
            };
        }
    }

    /// Makes `instance` the producer's client: the `send_with` records purged from the
    /// previous one are queued in it first, in the order they were sent, and only then can
    /// anything new reach it.
    pub(crate) fn install(&self, instance: Arc<ProducerInstance>) {
        let mut pending = self.shared.pending();
        let resent = pending.len();
        let failed = self.drain_into(&mut pending, &instance);
        self.shared.slot.send_replace(Some(instance));
        drop(pending);
        if resent > 0 {
            tracing::info!(producer = %self.shared.spec.name, records = resent, "records purged by the rebuild queued again, in the order they were sent");
        }
        failed.call();
    }

    /// Queues a purged `send_with` record for the next client. Normally there is none yet
    /// (the old client is being retired) and it waits for [`install`](Self::install); a
    /// purge reported after the next client took over is queued at once, after whatever
    /// that client already holds.
    fn queue_resend(&self, seq: u64, record: Pending) {
        let mut pending = self.shared.pending();
        pending.insert(seq, record);
        let failed = {
            let slot = self.shared.slot.borrow();
            let Some(instance) = slot.as_ref() else {
                return;
            };
            tracing::warn!(producer = %self.shared.spec.name, "a record purged after its client was retired is sent again behind newer records");
            self.drain_into(&mut pending, instance)
        };
        drop(pending);
        failed.call();
    }

    /// Queues every pending record in `instance`, oldest first. Those it refuses are
    /// returned, for their callbacks to be told once the locks are released.
    fn drain_into(
        &self,
        pending: &mut BTreeMap<u64, Pending>,
        instance: &ProducerInstance,
    ) -> Failed {
        let mut failed = Failed::default();
        for (seq, p) in std::mem::take(pending) {
            let completion = self.callback_completion(&p.record, p.cb.clone(), p.resends, seq);
            if let Err((source, _)) = instance.try_enqueue(&p.record, Box::new(completion)) {
                let error = Error::Enqueue {
                    topic: p.record.topic.clone(),
                    source,
                };
                failed.0.push((p.cb, error));
            }
        }
        failed
    }

    /// Fails every purged record still waiting for a client: the producer was removed, or
    /// the wrapper stopped.
    pub(crate) fn fail_pending(&self) {
        let pending = std::mem::take(&mut *self.shared.pending());
        let mut failed = Failed::default();
        for p in pending.into_values() {
            failed
                .0
                .push((p.cb, Error::Stopped(self.shared.spec.name.clone())));
        }
        failed.call();
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
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let completion = self.callback_completion(&record, cb, 0, seq);
        self.enqueue(&record, Box::new(completion)).await
    }

    fn callback_completion(
        &self,
        record: &Record,
        cb: Arc<Mutex<Option<Callback>>>,
        resends: u32,
        seq: u64,
    ) -> Completion {
        Completion::Callback(CallbackSlot {
            topic: record.topic.clone(),
            cb,
            resend: Some(Box::new(Resend {
                record: record.clone(),
                producer: self.clone(),
                resends,
                seq,
            })),
            fired: false,
            armed: false,
        })
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

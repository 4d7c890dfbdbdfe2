//! Producers: await the broker's receipt, fire and forget with a callback, or send a batch.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use rdkafka::error::KafkaError;
use rdkafka::producer::Producer as _;
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::watch;

use crate::config::Redacted;
use crate::error::{Error, Result};
use crate::message::{Delivered, Record};

mod completion;
mod instance;

use completion::{
    Attempt, BatchSlot, Callback, CallbackSlot, Failed, MAX_RESENDS, Pending, Resend, finish,
    is_purge, outcome, purged, shared_topic,
};
pub(crate) use completion::{BatchState, Completion};
pub(crate) use instance::ProducerInstance;

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
    pub async fn send(&self, mut record: Record) -> Result<Delivered> {
        crate::trace::inject(&mut record.headers);
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
            metrics::counter!(crate::metrics::RESENT_AFTER_REBUILD, "producer" => self.shared.spec.name.clone()).increment(1);
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
    pub async fn send_with<F>(&self, mut record: Record, on_delivery: F) -> Result<()>
    where
        F: FnOnce(Result<Delivered>) + Send + 'static,
    {
        crate::trace::inject(&mut record.headers);
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
    pub async fn send_batch(&self, mut records: Vec<Record>) -> Vec<Result<Delivered>> {
        for r in &mut records {
            crate::trace::inject(&mut r.headers);
        }
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

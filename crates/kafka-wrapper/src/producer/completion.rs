//! How each send learns its outcome: the completions librdkafka's delivery reports fire,
//! and the records a rebuild purged, kept to be sent again through the next client.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use futures::channel::oneshot;
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;

use crate::error::{Error, Result};
use crate::message::{Delivered, Record};

use super::Producer;

/// How many times one message is sent again after rebuilds purged it.
pub(super) const MAX_RESENDS: u32 = 3;

pub(super) type Callback = Box<dyn FnOnce(Result<Delivered>) + Send>;

/// The error of a record purged from a client torn down by a rebuild.
pub(super) fn purged(record: &Record) -> Error {
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
    pub(super) results: Mutex<Vec<Option<RawOutcome>>>,
    /// Records without an outcome yet, plus one held by the sender until it queued them all.
    pub(super) remaining: std::sync::atomic::AtomicUsize,
    pub(super) done: tokio::sync::Notify,
}

impl BatchState {
    pub(super) fn new(n: usize) -> Arc<Self> {
        Arc::new(Self {
            results: Mutex::new((0..n).map(|_| None).collect()),
            remaining: std::sync::atomic::AtomicUsize::new(n + 1),
            done: tokio::sync::Notify::new(),
        })
    }

    /// Counts one outcome in; wakes the sender after the last.
    pub(super) fn settle(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.done.notify_one();
        }
    }
}

/// One record's place in a [`BatchState`]. Dropped without an outcome (not queued, or the
/// client went away without reporting), it records a purge, so the batch always completes.
pub(crate) struct BatchSlot {
    pub(super) state: Arc<BatchState>,
    pub(super) index: usize,
    pub(super) fired: bool,
}

impl BatchSlot {
    pub(super) fn fire(&mut self, result: RawOutcome) {
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
    pub(super) topic: String,
    pub(super) cb: Arc<Mutex<Option<Callback>>>,
    /// What it takes to send the record again if a rebuild purges it.
    pub(super) resend: Option<Box<Resend>>,
    pub(super) fired: bool,
    /// Set while librdkafka holds the record: only then does a drop without an outcome
    /// mean the client lost it (not queued at all is the caller's error instead).
    pub(super) armed: bool,
}

impl CallbackSlot {
    pub(super) fn fire(&mut self, result: RawOutcome) {
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
            metrics::counter!(crate::metrics::RESENT_AFTER_REBUILD, "producer" => r.producer.shared.spec.name.clone()).increment(1);
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
    pub(super) record: Record,
    pub(super) producer: Producer,
    pub(super) resends: u32,
    /// Its place among the producer's `send_with` records, kept across resends.
    pub(super) seq: u64,
}

/// A purged `send_with` record waiting for the next client.
pub(crate) struct Pending {
    pub(super) record: Record,
    pub(super) cb: Arc<Mutex<Option<Callback>>>,
    pub(super) resends: u32,
}

/// What became of one attempt to queue a record in the current client.
pub(super) enum Attempt {
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
pub(super) struct Failed(pub(super) Vec<(Arc<Mutex<Option<Callback>>>, Error)>);

impl Failed {
    pub(super) fn call(self) {
        for (cb, error) in self.0 {
            let cb = cb.lock().ok().and_then(|mut c| c.take());
            if let Some(cb) = cb {
                cb(Err(error));
            }
        }
    }
}

/// The record was purged from a client torn down by a rebuild (never refused by Kafka).
pub(super) fn is_purge(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::MessageProduction(
            RDKafkaErrorCode::PurgeQueue | RDKafkaErrorCode::PurgeInflight
        )
    )
}

impl Completion {
    /// Marks whether librdkafka holds the record (see [`CallbackSlot::armed`]).
    pub(super) fn arm(&mut self, held: bool) {
        if let Completion::Callback(slot) = self {
            slot.armed = held;
        }
    }

    pub(super) fn complete(self, result: RawOutcome) {
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
pub(super) fn finish(topic: Arc<str>, result: RawOutcome) -> Result<Delivered> {
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
pub(super) async fn outcome(
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
pub(super) fn shared_topic(cache: &mut Option<Arc<str>>, topic: &str) -> Arc<str> {
    match cache {
        Some(t) if &**t == topic => t.clone(),
        _ => {
            let t: Arc<str> = Arc::from(topic);
            *cache = Some(t.clone());
            t
        }
    }
}

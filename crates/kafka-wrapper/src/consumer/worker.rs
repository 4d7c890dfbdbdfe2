//! One task per assigned partition: handles its messages in order.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt as _;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::instance::GroupCtx;
use super::tracker::OffsetTracker;
use super::{ConsumerShared, HandlerKind, Outcome};
use crate::message::{ConsumedMessage, Fetched, KeepAlive, RawMessage, Record};
use crate::producer::ProducerInstance;
use crate::transport::Room;

/// Offsets of one assigned partition, shared by its worker and the polling thread.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) tracker: Mutex<OffsetTracker>,
    /// Where reading started, for lag before the first message arrives.
    pub(crate) base: Base,
}

/// Where a partition's reading started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Offset(i64),
    Beginning,
    End,
}

impl PartitionState {
    pub(crate) fn committable(&self) -> Option<i64> {
        self.tracker.lock().ok().and_then(|t| t.committable())
    }
}

/// Where dead letters go.
pub(crate) struct DeadLetter {
    pub(crate) topic: String,
    pub(crate) producer: Arc<ProducerInstance>,
}

/// Wakes a worker that reads its partition's own queue: when the queue becomes non-empty
/// (librdkafka's callback) and when the gate opens.
#[derive(Debug, Default)]
pub(crate) struct Wake {
    /// Opened by the polling thread once nothing fetched for this partition before its
    /// queue was split off can still come out of the consumer's main queue.
    pub(crate) open: AtomicBool,
    pub(crate) notify: Notify,
}

/// A partition's own queue, split off the consumer's, and what its worker needs to read it.
pub(crate) struct Split {
    /// rdkafka's handle: the split itself and its wake-up callback.
    pub(crate) _queue: PartitionQueue<GroupCtx>,
    /// A second handle to the same queue, read in batches.
    pub(crate) reader: BatchReader,
    pub(crate) wake: Arc<Wake>,
    /// The consumer, for the messages taken from the queue to keep alive (after `queue`:
    /// dropped after it).
    pub(crate) client: KeepAlive,
}

/// Where a worker gets its messages.
pub(crate) struct Feed {
    /// Chunks handed over by the polling thread: all messages when the partition has no
    /// queue of its own, else only those fetched before the split (older than anything in
    /// the queue, so they are handled first).
    pub(crate) rx: mpsc::Receiver<Vec<ConsumedMessage>>,
    /// The partition's own librdkafka queue, read directly by the worker: no hand-over,
    /// no copy between threads. librdkafka bounds what it prefetches into it.
    pub(crate) queue: Option<Split>,
    /// Dropped after `queue` when the worker's task ends (normally, by abort or by panic):
    /// the polling thread waits on its receiver, so that by then the partition queue is
    /// released. (Dropping a partition queue clears the wake-up callback of the partition
    /// itself, which a new worker for the same partition may have set meanwhile.)
    pub(crate) _done: Option<std::sync::mpsc::Sender<()>>,
}

impl Feed {
    /// The next chunk of messages, oldest first; `None` once the worker is to stop. Cancel
    /// safe: messages stay in the channel or in librdkafka's queue until returned.
    async fn next(
        &mut self,
        stop: &CancellationToken,
        state: &PartitionState,
        shared: &ConsumerShared,
    ) -> Option<Vec<ConsumedMessage>> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            match self.rx.try_recv() {
                Ok(chunk) => return Some(chunk),
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) => {}
            }
            let wake = match &mut self.queue {
                None => {
                    return tokio::select! {
                        biased;
                        _ = stop.cancelled() => None,
                        m = self.rx.recv() => m,
                    };
                }
                Some(Split {
                    reader,
                    wake,
                    client,
                    ..
                }) => {
                    if wake.open.load(Ordering::Acquire) {
                        let chunk = take_from_queue(reader, client, state);
                        if !chunk.is_empty() {
                            shared
                                .progress
                                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
                            return Some(chunk);
                        }
                    }
                    wake.clone()
                }
            };
            tokio::select! {
                biased;
                _ = stop.cancelled() => return None,
                m = self.rx.recv() => match m {
                    Some(chunk) => return Some(chunk),
                    None => return None,
                },
                _ = wake.notify.notified() => {}
                // A lost wake-up (librdkafka keeps one callback per partition, and anything
                // that clears it leaves the queue silent) costs this much latency, not a
                // stalled partition.
                _ = tokio::time::sleep(RECHECK) => {}
            }
        }
    }
}

/// A handle of a partition's queue that takes many messages at once
/// (`rd_kafka_consume_batch_queue`: one call per batch, no event per message).
pub(crate) struct BatchReader {
    queue: std::ptr::NonNull<rdsys::rd_kafka_queue_t>,
    /// Where librdkafka writes the messages it hands over; empty between calls.
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
}

// SAFETY: librdkafka queues are thread-safe; the handle is destroyed once.
unsafe impl Send for BatchReader {}
unsafe impl Sync for BatchReader {}

impl BatchReader {
    /// A handle of the queue of `topic`/`partition` of `client` (split off already).
    pub(crate) fn new(
        client: &BaseConsumer<GroupCtx>,
        topic: &str,
        partition: i32,
    ) -> Option<Self> {
        let topic = std::ffi::CString::new(topic).ok()?;
        // SAFETY: a live client and a NUL-terminated topic; the queue handle is ours.
        let queue = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                client.client().native_ptr(),
                topic.as_ptr(),
                partition,
            )
        };
        let queue = std::ptr::NonNull::new(queue)?;
        Some(Self {
            queue,
            taken: Vec::new(),
        })
    }

    /// Up to `max` messages waiting in the queue, without waiting.
    fn take(&mut self, max: usize) -> Vec<RawMessage> {
        self.taken.clear();
        self.taken.reserve(max);
        // SAFETY: room for `max` pointers; librdkafka fills the first `n`.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                0,
                self.taken.as_mut_ptr(),
                max,
            )
        };
        let Ok(n) = usize::try_from(n) else {
            return Vec::new();
        };
        // SAFETY: librdkafka initialised `n` (at most `max`) entries.
        unsafe { self.taken.set_len(n.min(max)) };
        self.taken
            .drain(..)
            // SAFETY: consumed messages, now ours; the caller keeps the client alive.
            .filter_map(|m| unsafe { RawMessage::from_ptr(m) })
            .collect()
    }
}

impl Drop for BatchReader {
    fn drop(&mut self) {
        // SAFETY: ours, destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

/// Up to [`CHUNK`] messages waiting in the partition's queue, recorded as dispatched. They
/// are read in place (nothing copied); together they keep `client` alive.
fn take_from_queue(
    reader: &mut BatchReader,
    client: &KeepAlive,
    state: &PartitionState,
) -> Vec<ConsumedMessage> {
    let mut taken = reader.take(CHUNK);
    taken.retain(|m| match m.error() {
        None => true,
        Some(e) => {
            tracing::debug!(topic = %state.topic, partition = state.partition, error = ?e, "partition queue error");
            false
        }
    });
    let chunk = match (taken.is_empty(), client.share()) {
        (false, Some(client)) => Fetched::wrap(taken, state.topic.clone(), client),
        _ => Vec::new(),
    };
    if !chunk.is_empty()
        && let Ok(mut t) = state.tracker.lock()
    {
        for m in &chunk {
            t.dispatched(m.offset);
        }
    }
    chunk
}

/// How often an idle worker looks at its partition's queue without being woken.
const RECHECK: Duration = Duration::from_millis(200);

/// Most messages a worker takes from its partition's queue at once.
const CHUNK: usize = 1024;

pub(crate) struct Worker {
    pub(crate) feed: Feed,
    pub(crate) state: Arc<PartitionState>,
    pub(crate) handler: HandlerKind,
    pub(crate) stop: CancellationToken,
    pub(crate) dead_letter: Option<Arc<DeadLetter>>,
    pub(crate) shared: Arc<ConsumerShared>,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        let n = self.shared.spec.in_flight_per_partition;
        if n > 1 {
            return self.run_concurrent(n).await;
        }
        loop {
            let Some(chunk) = self.feed.next(&self.stop, &self.state, &self.shared).await else {
                return;
            };
            let ok = match self.handler.clone() {
                HandlerKind::Message(f) => self.handle_each(chunk, &*f).await,
                HandlerKind::Source(sink) => {
                    let deliver = move |m| sink.deliver(m);
                    self.handle_each(chunk, &deliver).await
                }
                HandlerKind::Batch { f, max } => {
                    let mut ok = true;
                    let mut chunk = chunk;
                    while ok && !chunk.is_empty() {
                        let rest = chunk.split_off(max.min(chunk.len()));
                        ok = self.handle_batch(chunk, &*f).await;
                        chunk = rest;
                    }
                    ok
                }
            };
            if !ok {
                return;
            }
        }
    }

    /// Up to `n` handler calls at once. The handler is *called* in offset order, and a
    /// source's messages go out in offset order (each waits for room in the source's channel
    /// before the next is taken); the calls then run concurrently. Nothing here relies on the
    /// order in which the runtime first polls the calls: under tokio's cooperative budget,
    /// calls woken together resume in reverse order.
    ///
    /// A stop ends the starting of new calls; the calls under way finish (or, while waiting
    /// to retry, give up) first.
    async fn run_concurrent(mut self, n: usize) {
        let (_, closed) = mpsc::channel(1);
        let mut feed = std::mem::replace(
            &mut self.feed,
            Feed {
                rx: closed,
                queue: None,
                _done: None,
            },
        );
        let this = &self;
        let handler = this.handler.clone();
        let retry = retry_call(&handler);
        // Started messages not yet below the oldest unfinished one: bounds how far handling
        // runs ahead of a message that is being retried.
        let window_max = this.shared.spec.queue_per_partition.max(n);
        let mut window: VecDeque<(i64, bool)> = VecDeque::new();
        let mut queue: VecDeque<ConsumedMessage> = VecDeque::new();
        let mut running = FuturesUnordered::new();
        let mut open = true;
        // A source's next message: room reserved in its channel, or waiting for room; once
        // the source is gone (its consumer is being removed), messages wait to be retried.
        let mut room: Option<Room> = None;
        let mut full = false;
        let mut gone = false;
        loop {
            while !full
                && !queue.is_empty()
                && running.len() < n
                && window.len() < window_max
                && !this.stop.is_cancelled()
            {
                if let HandlerKind::Source(sink) = &handler
                    && room.is_none()
                    && !gone
                {
                    match sink.try_reserve() {
                        Some(r) => room = Some(r),
                        None => {
                            full = true;
                            break;
                        }
                    }
                }
                let unit: Vec<ConsumedMessage> = match &handler {
                    HandlerKind::Message(_) | HandlerKind::Source(_) => {
                        queue.pop_front().into_iter().collect()
                    }
                    HandlerKind::Batch { max, .. } => {
                        let take = (*max).min(queue.len()).min(window_max - window.len());
                        queue.drain(..take.max(1)).collect()
                    }
                };
                window.extend(unit.iter().map(|m| (m.offset, false)));
                // The call is made here, in offset order; only its future runs concurrently.
                let first = match &handler {
                    HandlerKind::Message(f) => this.call(|| f(unit[0].clone())),
                    HandlerKind::Batch { f, .. } => this.call(|| f(unit.clone())),
                    HandlerKind::Source(_) => match room.take() {
                        Some(r) => r.hand_out(unit[0].clone()),
                        None => {
                            Box::pin(std::future::ready(Outcome::Retry(Duration::from_secs(1))))
                        }
                    },
                };
                let retry = retry.clone();
                running.push(async move {
                    let offsets: Vec<i64> = unit.iter().map(|m| m.offset).collect();
                    let first = this.call_once(first).await;
                    let ok = this.settle(unit, first, &*retry).await;
                    (offsets, ok)
                });
            }
            let stopped = this.stop.is_cancelled();
            if running.is_empty() && (stopped || (!open && queue.is_empty())) {
                return;
            }
            let wait_for_room = full && !stopped && running.len() < n;
            tokio::select! {
                biased;
                Some((mut offsets, ok)) = running.next(), if !running.is_empty() => {
                    if ok {
                        for o in &offsets {
                            if let Ok(i) = window.binary_search_by_key(o, |(w, _)| *w) {
                                window[i].1 = true;
                            }
                        }
                        while window.front().is_some_and(|(_, done)| *done) {
                            window.pop_front();
                        }
                        this.complete(&mut offsets);
                    }
                }
                _ = this.stop.cancelled(), if !stopped => {}
                r = reserve(&handler), if wait_for_room => {
                    full = false;
                    gone = r.is_none();
                    room = r;
                }
                m = feed.next(&this.stop, &this.state, &this.shared), if open && queue.is_empty() && !stopped => match m {
                    Some(chunk) => queue.extend(chunk),
                    None => open = false,
                },
            }
        }
    }

    /// Calls the handler; a panic in the call itself (before its future) counts as a
    /// `Retry` after a second, as a panic in the future does.
    fn call(
        &self,
        call: impl FnOnce() -> BoxFuture<'static, Outcome>,
    ) -> BoxFuture<'static, Outcome> {
        match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => future,
            Err(panic) => {
                let what = panic_message(&*panic);
                tracing::error!(consumer = %self.shared.spec.name, topic = %self.state.topic, partition = self.state.partition, panic = %what, "handler panicked; retrying in 1 s");
                Box::pin(std::future::ready(Outcome::Retry(Duration::from_secs(1))))
            }
        }
    }

    async fn handle_each(
        &self,
        batch: Vec<ConsumedMessage>,
        f: &(dyn Fn(ConsumedMessage) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        let mut done = Vec::with_capacity(batch.len());
        let mut ok = true;
        for m in batch {
            if self.stop.is_cancelled() {
                ok = false;
                break;
            }
            let offset = m.offset;
            // Fast path: one call that acks. Anything else goes through the retry loop.
            // A call that does not answer at once may outlast a stop (and be aborted at the
            // grace period): what was handled before it is recorded first.
            let mut call = std::pin::pin!(self.call_once(self.call(|| f(m.clone()))));
            let first = match call.as_mut().now_or_never() {
                Some(o) => o,
                None => {
                    self.complete(&mut done);
                    call.await
                }
            };
            if first != Outcome::Ack {
                // Record what is done before waiting, so commits keep up meanwhile.
                self.complete(&mut done);
                let single = |mut v: Vec<ConsumedMessage>| f(v.remove(0));
                if !self.settle(vec![m], first, &single).await {
                    ok = false;
                    break;
                }
            }
            done.push(offset);
        }
        self.complete(&mut done);
        ok
    }

    /// Marks handled offsets in the tracker (one lock for all of them).
    fn complete(&self, done: &mut Vec<i64>) {
        if done.is_empty() {
            return;
        }
        if let Ok(mut t) = self.state.tracker.lock() {
            for o in done.iter() {
                t.completed(*o);
            }
        }
        self.shared
            .handled
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        self.shared
            .progress
            .fetch_add(done.len() as u64, Ordering::Relaxed);
        done.clear();
    }

    /// Runs one handler call; a panic counts as `Retry` after a second.
    async fn call_once(&self, call: BoxFuture<'static, Outcome>) -> Outcome {
        match AssertUnwindSafe(call).catch_unwind().await {
            Ok(o) => o,
            Err(panic) => {
                let what = panic_message(&*panic);
                tracing::error!(consumer = %self.shared.spec.name, topic = %self.state.topic, partition = self.state.partition, panic = %what, "handler panicked; retrying in 1 s");
                Outcome::Retry(Duration::from_secs(1))
            }
        }
    }

    async fn handle_batch(
        &self,
        batch: Vec<ConsumedMessage>,
        f: &(dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        let mut offsets: Vec<i64> = batch.iter().map(|m| m.offset).collect();
        if !self.until_handled(batch, f).await {
            return false;
        }
        self.complete(&mut offsets);
        true
    }

    /// Calls the handler until it acks or the messages are dead-lettered (`true`), or the
    /// worker is stopped while it waits to retry (`false`: nothing is committed).
    async fn until_handled(
        &self,
        msgs: Vec<ConsumedMessage>,
        call: &(dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        let first = self.call_once(self.call(|| call(msgs.clone()))).await;
        self.settle(msgs, first, call).await
    }

    /// Acts on `outcome` and keeps calling the handler until the messages are handled.
    async fn settle(
        &self,
        mut msgs: Vec<ConsumedMessage>,
        mut outcome: Outcome,
        call: &(dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        loop {
            self.shared.progress.fetch_add(1, Ordering::Relaxed);
            let delay = match outcome {
                Outcome::Ack => return true,
                Outcome::Retry(d) => d,
                Outcome::DeadLetter(reason) => match &self.dead_letter {
                    Some(dl) => return self.dead_letter(dl, &msgs, &reason).await,
                    None => {
                        tracing::error!(consumer = %self.shared.spec.name, %reason, "handler asked for a dead letter but the consumer has no dead_letter_topic; retrying in 1 s");
                        Duration::from_secs(1)
                    }
                },
            };
            metrics::counter!("wharf_kafka_handler_retries_total", "consumer" => self.shared.spec.name.clone()).increment(1);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            for m in &mut msgs {
                m.attempt += 1;
            }
            outcome = self.call_once(self.call(|| call(msgs.clone()))).await;
        }
    }

    /// Produces each message to the dead-letter topic, retrying each until it is stored or
    /// the worker is stopped.
    async fn dead_letter(&self, dl: &DeadLetter, msgs: &[ConsumedMessage], reason: &str) -> bool {
        for m in msgs {
            let mut r = Record::new(dl.topic.clone(), Bytes::copy_from_slice(m.payload()))
                .header("wharf.dlq.reason", reason.to_owned())
                .header("wharf.dlq.topic", m.topic().to_owned())
                .header("wharf.dlq.partition", m.partition.to_string())
                .header("wharf.dlq.offset", m.offset.to_string());
            for (k, v) in m.headers().iter() {
                r = r.header(k.into_owned(), Bytes::copy_from_slice(v));
            }
            if let Some(k) = m.key() {
                r = r.key(Bytes::copy_from_slice(k));
            }
            loop {
                match dl.producer.send_one(&r).await {
                    Ok(d) => {
                        tracing::info!(consumer = %self.shared.spec.name, from = %format!("{}/{}@{}", m.topic(), m.partition, m.offset), to = %d, %reason, "dead-lettered");
                        metrics::counter!("wharf_kafka_dead_lettered_total", "consumer" => self.shared.spec.name.clone()).increment(1);
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(consumer = %self.shared.spec.name, error = %e, "dead-letter produce failed; retrying in 1 s");
                        tokio::select! {
                            biased;
                            _ = self.stop.cancelled() => return false,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
        true
    }
}

/// Calls the handler again for messages being retried (one message, or the batch).
type RetryCall = Arc<dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync>;

fn retry_call(handler: &HandlerKind) -> RetryCall {
    match handler.clone() {
        HandlerKind::Message(f) => Arc::new(move |mut v: Vec<ConsumedMessage>| f(v.remove(0))),
        HandlerKind::Batch { f, .. } => f,
        HandlerKind::Source(sink) => {
            Arc::new(move |mut v: Vec<ConsumedMessage>| sink.deliver(v.remove(0)))
        }
    }
}

/// Waits for room in a source's channel (`None`: the source is gone). Only called for a
/// source.
async fn reserve(handler: &HandlerKind) -> Option<Room> {
    match handler {
        HandlerKind::Source(sink) => sink.reserve().await,
        _ => None,
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

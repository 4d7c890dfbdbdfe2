//! One task per assigned partition: handles its messages in order.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

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
use super::progress::PartitionView;
use super::tracker::OffsetTracker;
use super::{ConsumerShared, HandlerKind, Outcome, RetryPolicy};
use crate::log_gate::{LogGate, gated_warn};
use crate::message::{ConsumedMessage, Fetched, KeepAlive, RawMessage, Record};
use crate::producer::ProducerInstance;
use crate::transport::Room;

/// Offsets of one assigned partition, shared by its worker, the polling thread and the
/// wrapper's health check.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) tracker: Mutex<OffsetTracker>,
    /// Where reading started, for lag before the first message arrives.
    pub(crate) base: Base,
    /// One past the last offset the worker received ([`NONE`] before the first): the
    /// consumer's own fetch progress, whatever the broker says its high watermark is.
    received_end: AtomicI64,
    /// Set while the worker waits for messages and holds none.
    idle: AtomicBool,
    /// With [`Base::End`]: where reading started, taken as the high watermark the health check
    /// first saw ([`NONE`] until then).
    end_start: AtomicI64,
}

/// "No offset yet" in [`PartitionState`]'s atomics.
const NONE: i64 = i64::MIN;

/// Where a partition's reading started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Base {
    Offset(i64),
    Beginning,
    End,
}

impl PartitionState {
    pub(crate) fn new(topic: &str, partition: i32, base: Base) -> Self {
        Self {
            topic: Arc::from(topic),
            partition,
            tracker: Mutex::new(OffsetTracker::default()),
            base,
            received_end: AtomicI64::new(NONE),
            idle: AtomicBool::new(false),
            end_start: AtomicI64::new(NONE),
        }
    }

    pub(crate) fn committable(&self) -> Option<i64> {
        self.tracker.lock().ok().and_then(|t| t.committable())
    }

    /// The worker received `chunk` (oldest first).
    fn received(&self, chunk: &[ConsumedMessage]) {
        if let Some(last) = chunk.last() {
            self.received_end
                .fetch_max(last.offset.saturating_add(1), Ordering::Relaxed);
        }
    }

    fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::Relaxed);
    }

    /// The partition as the health check sees it, given the broker's watermarks.
    pub(crate) fn view(&self, low: i64, high: i64) -> PartitionView {
        let start = match self.base {
            Base::Offset(o) => o.max(low),
            Base::Beginning => low,
            Base::End => match self.end_start.compare_exchange(
                NONE,
                high,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => high,
                Err(first) => first,
            },
        };
        let received = self.received_end.load(Ordering::Relaxed);
        PartitionView {
            topic: self.topic.to_string(),
            partition: self.partition,
            broker_high: high,
            start,
            received_end: (received != NONE).then_some(received),
            committable: self.committable(),
            idle: self.idle.load(Ordering::Relaxed),
        }
    }
}

/// Where dead letters go.
pub(crate) struct DeadLetter {
    pub(crate) topic: String,
    pub(crate) producer: Arc<ProducerInstance>,
}

/// What follows a handler call that did not ack.
enum Next {
    /// Call the handler again after this long.
    Wait(Duration),
    /// Dead-letter the messages with this reason.
    GiveUp(String),
}

/// What one handler call came to.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// The handler answered in time.
    Outcome(Outcome),
    /// The call failed without a usable answer (it panicked, or overran its deadline): a
    /// failed attempt under the retry policy.
    Failed(String),
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
    /// How long one handler call may take (`None`: no limit; always `None` for a source).
    pub(crate) deadline: Option<Duration>,
    pub(crate) retry: RetryPolicy,
    /// The consumer's warning budget (for failed dead-letter sends).
    pub(crate) gate: Arc<LogGate>,
}

impl Worker {
    pub(crate) async fn run(mut self) {
        let n = self.shared.spec.in_flight_per_partition;
        if n > 1 {
            return self.run_concurrent(n).await;
        }
        loop {
            self.state.set_idle(true);
            let next = self.feed.next(&self.stop, &self.state).await;
            self.state.set_idle(false);
            let Some(chunk) = next else {
                return;
            };
            self.state.received(&chunk);
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
                    let (first, _) = this.attempt(first, this.clock()).await;
                    let ok = this.settle(unit, first, &*retry).await;
                    (offsets, ok)
                });
            }
            let stopped = this.stop.is_cancelled();
            if running.is_empty() && (stopped || (!open && queue.is_empty())) {
                return;
            }
            this.state
                .set_idle(running.is_empty() && queue.is_empty() && room.is_none());
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
                m = feed.next(&this.stop, &this.state), if open && queue.is_empty() && !stopped => match m {
                    Some(chunk) => {
                        this.state.set_idle(false);
                        this.state.received(&chunk);
                        queue.extend(chunk);
                    }
                    None => open = false,
                },
            }
        }
    }

    /// Calls the handler; a panic in the call itself (before its future) comes out of the
    /// returned future, so that [`attempt`](Self::attempt) treats it as a panic in the future.
    fn call(
        &self,
        call: impl FnOnce() -> BoxFuture<'static, Outcome>,
    ) -> BoxFuture<'static, Outcome> {
        match std::panic::catch_unwind(AssertUnwindSafe(call)) {
            Ok(future) => future,
            Err(panic) => Box::pin(async move { std::panic::resume_unwind(panic) }),
        }
    }

    /// Now, when calls have a deadline (the start of the next call).
    fn clock(&self) -> Option<Instant> {
        self.deadline.map(|_| Instant::now())
    }

    /// Runs one handler call that started at `since` (`Some` exactly when calls have a
    /// deadline), under its deadline. Returns what it came to and when it ended (so that the
    /// next call of a chunk starts there without reading the clock again).
    ///
    /// A call still waiting at the deadline is dropped there. A call that blocked its thread
    /// past the deadline cannot be stopped; it is noticed when it returns, and its answer is
    /// discarded: either way the call failed. The first poll happens without a timer, so a
    /// call that answers at once costs no timer.
    async fn attempt(
        &self,
        call: BoxFuture<'static, Outcome>,
        since: Option<Instant>,
    ) -> (Answer, Option<Instant>) {
        let call = AssertUnwindSafe(call).catch_unwind();
        let (Some(deadline), Some(since)) = (self.deadline, since) else {
            return (self.answer(call.await), None);
        };
        let mut call = std::pin::pin!(call);
        let result = match futures::poll!(call.as_mut()) {
            Poll::Ready(r) => Some(r),
            Poll::Pending => {
                let at = tokio::time::Instant::from_std(since + deadline);
                tokio::time::timeout_at(at, call).await.ok()
            }
        };
        let ended = Instant::now();
        let answer = match result {
            None => self.failed(format!(
                "handler call did not finish within its deadline of {deadline:?}; its future was dropped"
            )),
            Some(_) if ended.saturating_duration_since(since) > deadline => self.failed(format!(
                "handler call returned after {:?}, past its deadline of {deadline:?} (it blocked its thread); its answer was discarded",
                ended.saturating_duration_since(since)
            )),
            Some(r) => self.answer(r),
        };
        (answer, Some(ended))
    }

    /// A call's result: its outcome, or a failure if it panicked.
    fn answer(&self, r: std::thread::Result<Outcome>) -> Answer {
        match r {
            Ok(o) => Answer::Outcome(o),
            Err(panic) => {
                metrics::counter!(crate::metrics::HANDLER_FAILURES, "consumer" => self.shared.spec.name.clone(), "reason" => "panic").increment(1);
                Answer::Failed(format!(
                    "handler panicked: {}",
                    wharf_core::supervisor::panic_message(&*panic)
                ))
            }
        }
    }

    fn failed(&self, why: String) -> Answer {
        metrics::counter!(crate::metrics::HANDLER_FAILURES, "consumer" => self.shared.spec.name.clone(), "reason" => "deadline").increment(1);
        Answer::Failed(why)
    }

    async fn handle_each(
        &self,
        batch: Vec<ConsumedMessage>,
        f: &(dyn Fn(ConsumedMessage) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        let mut done = Vec::with_capacity(batch.len());
        let mut ok = true;
        // When the next call starts: the end of the previous one (one clock read per call).
        let mut since = self.clock();
        for m in batch {
            if self.stop.is_cancelled() {
                ok = false;
                break;
            }
            let offset = m.offset;
            // Fast path: one call that acks. Anything else goes through the retry loop.
            // A call that does not answer at once may outlast a stop (and be aborted at the
            // grace period): what was handled before it is recorded first.
            let mut call = std::pin::pin!(self.attempt(self.call(|| f(m.clone())), since));
            let (first, ended) = match call.as_mut().now_or_never() {
                Some(r) => r,
                None => {
                    self.complete(&mut done);
                    call.await
                }
            };
            since = ended;
            if first != Answer::Outcome(Outcome::Ack) {
                // Record what is done before waiting, so commits keep up meanwhile.
                self.complete(&mut done);
                let single = |mut v: Vec<ConsumedMessage>| f(v.remove(0));
                if !self.settle(vec![m], first, &single).await {
                    ok = false;
                    break;
                }
                since = self.clock();
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
        done.clear();
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
        let (first, _) = self
            .attempt(self.call(|| call(msgs.clone())), self.clock())
            .await;
        self.settle(msgs, first, call).await
    }

    /// Acts on `answer` and keeps calling the handler until the messages are handled (acked
    /// or dead-lettered: `true`), or the worker is stopped while it waits (`false`: nothing
    /// is committed). Failed calls count against the retry policy; the last one allowed
    /// dead-letters the messages.
    async fn settle(
        &self,
        mut msgs: Vec<ConsumedMessage>,
        mut answer: Answer,
        call: &(dyn Fn(Vec<ConsumedMessage>) -> BoxFuture<'static, Outcome> + Send + Sync),
    ) -> bool {
        let mut failures = 0u32;
        loop {
            let next = match answer {
                Answer::Outcome(Outcome::Ack) => return true,
                Answer::Outcome(Outcome::Retry(d)) => Next::Wait(d),
                Answer::Outcome(Outcome::DeadLetter(reason)) => Next::GiveUp(reason),
                Answer::Failed(why) => {
                    failures += 1;
                    self.failure(&msgs, &why, failures)
                }
            };
            let delay = match next {
                Next::Wait(delay) => delay,
                Next::GiveUp(reason) => match &self.dead_letter {
                    Some(dl) => return self.dead_letter(dl, &msgs, &reason).await,
                    None => {
                        tracing::error!(consumer = %self.shared.spec.name, topic = %self.state.topic, partition = self.state.partition, offset = msgs.first().map(|m| m.offset), %reason, "a message is to be dead-lettered but the consumer has no dead_letter_topic; retrying in 1 s (it holds its partition)");
                        Duration::from_secs(1)
                    }
                },
            };
            metrics::counter!(crate::metrics::HANDLER_RETRIES, "consumer" => self.shared.spec.name.clone()).increment(1);
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            for m in &mut msgs {
                m.attempt += 1;
            }
            answer = self
                .attempt(self.call(|| call(msgs.clone())), self.clock())
                .await
                .0;
        }
    }

    /// What follows the `failures`-th failed call of `msgs`, under the retry policy.
    fn failure(&self, msgs: &[ConsumedMessage], why: &str, failures: u32) -> Next {
        let (offset, attempt) = msgs.first().map_or((-1, 0), |m| (m.offset, m.attempt));
        let max = self.retry.max_attempts();
        match self.retry.delay_after(failures) {
            Some(delay) => {
                tracing::warn!(consumer = %self.shared.spec.name, topic = %self.state.topic, partition = self.state.partition, offset, attempt, failures, max_failures = max, retry_in = ?delay, "{why}");
                Next::Wait(delay)
            }
            None => {
                tracing::error!(consumer = %self.shared.spec.name, topic = %self.state.topic, partition = self.state.partition, offset, attempt, failures, max_failures = max, "{why}; giving up: dead-lettering");
                Next::GiveUp(format!("{why} (failed {failures} of {max} allowed times)"))
            }
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
                        metrics::counter!(crate::metrics::DEAD_LETTERED, "consumer" => self.shared.spec.name.clone()).increment(1);
                        break;
                    }
                    Err(e) => {
                        gated_warn!(self.gate, "dead-letter produce failed; retrying in 1 s", consumer = %self.shared.spec.name, error = %e);
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

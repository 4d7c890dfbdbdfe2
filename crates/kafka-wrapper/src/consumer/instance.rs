//! One incarnation of a consumer: a librdkafka consumer polled by a dedicated thread that
//! hands messages to one worker task per partition.
//!
//! The thread never waits for handlers, so `max.poll.interval.ms` is never exceeded however
//! slow they are (no rebalance storm); a partition whose worker queue is full is paused and
//! resumed when it drains (bounded memory). Only the thread touches the consumer: it stores
//! committable offsets, and on revoke and at shutdown it stops the workers, waits for the
//! message each is handling (up to the grace period), and commits, waiting for the answer up
//! to the request timeout (see `commit.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::{ClientContext, config::RDKafkaLogLevel};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::commit::{Committed, commit_within};
use super::progress::PartitionView;
use super::worker::{Base, BatchReader, DeadLetter, Feed, PartitionState, Split, Wake, Worker};
use super::{ConsumerShared, ConsumerSpec, Control, HandlerKind, StartAt, Subscription};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::health::HealthContext;
use crate::log_gate::{LogGate, gated_warn};
use crate::message::{ConsumedMessage, KeepAlive};
use crate::producer::{ProducerInstance, ProducerSpec};

/// librdkafka settings of group consumers unless the config or the spec says otherwise.
const GROUP_DEFAULTS: &[(&str, &str)] = &[
    // Offsets are stored by the wrapper only once handled; librdkafka commits what is stored.
    ("enable.auto.commit", "true"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    // The wrapper buffers per partition itself; librdkafka's 1 s pause before fetching a
    // partition whose local queue was over its threshold shows as second-long stalls.
    ("fetch.queue.backoff.ms", "20"),
];

const PLAIN_DEFAULTS: &[(&str, &str)] = &[
    ("enable.auto.commit", "false"),
    ("enable.auto.offset.store", "false"),
    ("auto.offset.reset", "earliest"),
    ("fetch.queue.backoff.ms", "20"),
];

/// Most messages taken from librdkafka in one polling round.
const ROUND: usize = 1024;

/// How long the polling thread waits for room in a full worker queue before it pauses the
/// partition instead.
const FULL_WAIT: Duration = Duration::from_millis(100);

/// How long the polling thread waits for an aborted worker's task to be dropped.
const ABORT_RELEASE: Duration = Duration::from_secs(1);

/// How long a stopping group consumer serves its revoke (so that it leaves the group)
/// before it gives up and leaves when its client closes.
const LEAVE_WAIT: Duration = Duration::from_secs(2);

/// How often the polling thread stores committable offsets.
const STORE_EVERY: Duration = Duration::from_millis(100);

/// How long a stopping polling thread waits for its workers to let go of the client, so
/// that it closes the client itself.
const WORKERS_LET_GO: Duration = Duration::from_secs(1);

struct Slot {
    tx: mpsc::Sender<Vec<ConsumedMessage>>,
    /// Fetched in this polling round, not yet handed over.
    pending: Vec<ConsumedMessage>,
    /// Chunks that found the worker's queue full (the partition is then paused).
    stash: VecDeque<Vec<ConsumedMessage>>,
    /// Set when the worker reads the partition's own queue.
    wake: Option<Arc<Wake>>,
    backpressure_paused: bool,
    state: Arc<PartitionState>,
    stop: CancellationToken,
    done: std::sync::mpsc::Receiver<()>,
    task: tokio::task::JoinHandle<()>,
    stored: Option<i64>,
}

/// State of one incarnation, reachable from librdkafka's rebalance callbacks.
pub(crate) struct LoopState {
    shared: Arc<ConsumerShared>,
    runtime: tokio::runtime::Handle,
    dead_letter: Option<Arc<DeadLetter>>,
    slots: Mutex<HashMap<Arc<str>, HashMap<i32, Slot>>>,
    /// The consumer, to split each assigned partition's queue off for its worker. Weak:
    /// the consumer owns this state through its context.
    consumer: OnceLock<Weak<BaseConsumer<GroupCtx>>>,
    /// A worker waits for its gate to open (see [`Wake::open`]).
    gates_closed: AtomicBool,
    grace: Duration,
    /// How long a commit on revoke or at shutdown waits for its answer.
    commit_timeout: Duration,
    group: bool,
    reset_to_end: bool,
    /// The consumer's warning budget (shared with its librdkafka callbacks).
    gate: Arc<LogGate>,
}

pub(crate) struct GroupCtx {
    base: HealthContext,
    state: Arc<LoopState>,
}

impl ClientContext for GroupCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ConsumerContext for GroupCtx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                let parts: Vec<(String, i32)> = tpl
                    .elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect();
                tracing::info!(consumer = %self.state.shared.spec.name, partitions = ?parts, "partitions revoked; draining and committing");
                self.state.stop_and_commit(consumer, Some(&parts));
            }
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => {
                gated_warn!(self.state.gate, "rebalance error", error = %e);
            }
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let parts: Vec<(String, i32)> = tpl
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect();
            tracing::info!(consumer = %self.state.shared.spec.name, partitions = ?parts, "partitions assigned");
            // Where each partition starts: its committed offset, else the reset policy.
            let committed = consumer
                .committed_offsets((*tpl).clone(), Duration::from_secs(2))
                .ok();
            for (t, p) in &parts {
                let c = committed
                    .as_ref()
                    .and_then(|c| c.find_partition(t, *p))
                    .map(|e| e.offset());
                let base = match c {
                    Some(Offset::Offset(o)) => Base::Offset(o),
                    _ if self.state.reset_to_end => Base::End,
                    _ => Base::Beginning,
                };
                self.state.start_worker(t, *p, base);
            }
            self.state.reapply_pauses(consumer);
            self.state.publish_assignment();
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            tracing::debug!(consumer = %self.state.shared.spec.name, error = %e, "offset commit failed; it is retried at the next commit");
        }
    }
}

impl LoopState {
    /// The longest a stopping consumer takes: drain its handlers (the grace, then the wait
    /// for aborted ones), commit (one request timeout), leave its group, wait for its workers
    /// to let go of the client, and close it (one more request timeout).
    pub(crate) fn stop_bound(&self) -> Duration {
        self.grace + ABORT_RELEASE + LEAVE_WAIT + WORKERS_LET_GO + self.commit_timeout * 2
    }

    fn start_worker(self: &Arc<Self>, topic: &str, partition: i32, base: Base) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let per_topic = slots.entry(Arc::from(topic)).or_default();
        if per_topic.contains_key(&partition) {
            return;
        }
        // Chunks hold up to ROUND messages each: the queue holds about
        // `queue_per_partition` messages, and at least one chunk.
        let chunks = (self.shared.spec.queue_per_partition / ROUND).max(1);
        let (tx, rx) = mpsc::channel(chunks);
        let (done_tx, done) = std::sync::mpsc::channel();
        let state = Arc::new(PartitionState::new(topic, partition, base));
        let stop = CancellationToken::new();
        // The partition's own queue, read by its worker; messages fetched before the split
        // still come through the polling thread, and the gate keeps the worker on those
        // until none can be left.
        let split = self
            .consumer
            .get()
            .and_then(Weak::upgrade)
            .and_then(|c| Some((c.split_partition_queue(topic, partition)?, c)));
        let (queue, wake) = match split {
            Some((mut queue, client)) => {
                let wake = Arc::new(Wake::default());
                let w = wake.clone();
                queue.set_nonempty_callback(move || w.notify.notify_one());
                self.gates_closed.store(true, Ordering::Release);
                match BatchReader::new(&client, topic, partition) {
                    Some(reader) => {
                        let split = Split {
                            _queue: queue,
                            reader,
                            wake: wake.clone(),
                            client: KeepAlive::new(client),
                        };
                        (Some(split), Some(wake))
                    }
                    // Cannot happen (the queue was just split off); read through the
                    // polling thread then.
                    None => (None, None),
                }
            }
            None => (None, None),
        };
        let handler = self.shared.spec.handler.kind.clone();
        // A source's deliveries are settled by its user, however long that takes.
        let deadline = match handler {
            HandlerKind::Source(_) => None,
            _ => self.shared.spec.handler_timeout,
        };
        let worker = Worker {
            feed: Feed {
                rx,
                queue,
                _done: Some(done_tx),
            },
            state: state.clone(),
            handler,
            stop: stop.clone(),
            dead_letter: self.dead_letter.clone(),
            shared: self.shared.clone(),
            deadline,
            retry: self.shared.spec.retry,
            gate: self.gate.clone(),
        };
        let task = self.runtime.spawn(worker.run());
        per_topic.insert(
            partition,
            Slot {
                tx,
                pending: Vec::new(),
                stash: VecDeque::new(),
                wake,
                backpressure_paused: false,
                state,
                stop,
                done,
                task,
                stored: None,
            },
        );
    }

    fn publish_assignment(&self) {
        let mut parts = Vec::new();
        if let Ok(slots) = self.slots.lock() {
            for (t, ps) in slots.iter() {
                for p in ps.keys() {
                    parts.push((t.to_string(), *p));
                }
            }
        }
        parts.sort();
        if let Ok(mut a) = self.shared.assignment.lock() {
            *a = parts;
        }
    }

    fn reapply_pauses(&self, consumer: &BaseConsumer<GroupCtx>) {
        let all = self.shared.all_paused.load(Ordering::Acquire);
        let paused: Vec<(String, i32)> = self
            .shared
            .user_paused
            .lock()
            .map(|p| p.iter().cloned().collect())
            .unwrap_or_default();
        let mut tpl = TopicPartitionList::new();
        if let Ok(slots) = self.slots.lock() {
            for (t, ps) in slots.iter() {
                for p in ps.keys() {
                    if all || paused.iter().any(|(pt, pp)| **t == **pt && pp == p) {
                        tpl.add_partition(t, *p);
                    }
                }
            }
        }
        if tpl.count() > 0
            && let Err(e) = consumer.pause(&tpl)
        {
            gated_warn!(self.gate, "could not re-apply pauses", error = %e);
        }
    }

    /// Stops the workers of `only` (or all), waits for each to finish the message it is on,
    /// then stores and commits what was handled.
    fn stop_and_commit(&self, consumer: &BaseConsumer<GroupCtx>, only: Option<&[(String, i32)]>) {
        let mut taken = Vec::new();
        if let Ok(mut slots) = self.slots.lock() {
            for (t, ps) in slots.iter_mut() {
                let keys: Vec<i32> = ps
                    .keys()
                    .copied()
                    .filter(|p| {
                        only.is_none_or(|o| o.iter().any(|(ot, op)| **t == **ot && op == p))
                    })
                    .collect();
                for p in keys {
                    if let Some(s) = ps.remove(&p) {
                        taken.push(s);
                    }
                }
            }
            slots.retain(|_, ps| !ps.is_empty());
        }
        for s in &taken {
            s.stop.cancel();
        }
        let deadline = Instant::now() + self.grace;
        let mut aborted = Vec::new();
        for s in &taken {
            let left = deadline.saturating_duration_since(Instant::now());
            if let Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                s.done.recv_timeout(left)
            {
                // Still running at the deadline: abort; its message stays uncommitted.
                if !s.task.is_finished() {
                    tracing::warn!(consumer = %self.shared.spec.name, topic = %s.state.topic, partition = s.state.partition, "handler still busy after the grace period; aborted, its message will be delivered again");
                    s.task.abort();
                    aborted.push(s);
                }
            }
        }
        // An aborted task is dropped by the runtime shortly after; until then its worker
        // holds the partition's queue, whose drop would clear the wake-up of a new worker
        // for the same partition (a re-assignment right after this revoke).
        let released_by = Instant::now() + ABORT_RELEASE;
        for s in aborted {
            let left = released_by.saturating_duration_since(Instant::now());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = s.done.recv_timeout(left) {
                tracing::warn!(consumer = %self.shared.spec.name, topic = %s.state.topic, partition = s.state.partition, "an aborted handler has not let go of its partition yet (a handler blocking its thread?)");
            }
        }
        let mut tpl = TopicPartitionList::new();
        for s in &taken {
            if let Ok(mut t) = s.state.tracker.lock() {
                t.abandon_in_flight();
                if let Some(c) = t.committable() {
                    let _ = tpl.add_partition_offset(
                        &s.state.topic,
                        s.state.partition,
                        Offset::Offset(c),
                    );
                    if !self.group
                        && let Ok(mut r) = self.shared.resume_at.lock()
                    {
                        r.insert((s.state.topic.to_string(), s.state.partition), c);
                    }
                }
            }
        }
        if self.group && tpl.count() > 0 {
            if let Err(e) = consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "store before commit failed");
            }
            // Bounded: librdkafka's own synchronous commit can wait a minute and more for a
            // coordinator that does not answer, and this thread would wait with it.
            match commit_within(consumer, &tpl, self.commit_timeout) {
                Committed::Done => {
                    tracing::debug!(consumer = %self.shared.spec.name, offsets = ?tpl, "committed")
                }
                Committed::Failed(e) => {
                    gated_warn!(self.gate, "commit failed; the messages handled since the last commit will be delivered again", error = %e)
                }
                Committed::TimedOut => {
                    gated_warn!(self.gate, "commit not answered in time; unless it still lands, the messages handled since the last commit will be delivered again", within = ?self.commit_timeout)
                }
            }
        }
        self.publish_assignment();
    }

    /// Records a fetched message for its partition; [`hand_over`](Self::hand_over) passes
    /// it to the worker at the end of the polling round.
    fn take(&self, m: &rdkafka::message::BorrowedMessage<'_>) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        let Some(slot) = slots
            .get_mut(m.topic())
            .and_then(|ps| ps.get_mut(&m.partition()))
        else {
            return;
        };
        // Few messages come this way (those fetched before a partition's queue was split
        // off): copied.
        let msg = ConsumedMessage::copied(m, slot.state.topic.clone());
        slot.pending.push(msg);
    }

    /// Hands each partition's fetched messages to its worker as one chunk. When a worker's
    /// queue is full, waits briefly for room (a fast handler frees it within moments, and
    /// pausing would make librdkafka drop and re-fetch what it prefetched); if there is still
    /// no room, stashes the chunk and pauses the partition until the worker catches up.
    fn hand_over(&self, consumer: &BaseConsumer<GroupCtx>) {
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        for (t, ps) in slots.iter_mut() {
            for (p, slot) in ps.iter_mut() {
                if slot.pending.is_empty() {
                    continue;
                }
                let chunk = std::mem::take(&mut slot.pending);
                if let Ok(mut t) = slot.state.tracker.lock() {
                    for m in &chunk {
                        t.dispatched(m.offset);
                    }
                }
                if !slot.stash.is_empty() {
                    slot.stash.push_back(chunk);
                    continue;
                }
                let chunk = match slot.tx.try_send(chunk) {
                    Ok(()) => continue,
                    Err(mpsc::error::TrySendError::Closed(_)) => continue,
                    Err(mpsc::error::TrySendError::Full(chunk)) => chunk,
                };
                match wait_to_send(&slot.tx, chunk) {
                    None => {}
                    Some(chunk) => {
                        slot.stash.push_back(chunk);
                        if !slot.backpressure_paused {
                            slot.backpressure_paused = true;
                            let mut tpl = TopicPartitionList::new();
                            tpl.add_partition(t, *p);
                            let _ = consumer.pause(&tpl);
                        }
                    }
                }
            }
        }
    }

    /// Opens the gates of workers that read their partition's own queue: called when the
    /// main queue was found empty, so everything fetched before a split was handed over.
    fn open_gates(&self) {
        if !self.gates_closed.swap(false, Ordering::AcqRel) {
            return;
        }
        if let Ok(slots) = self.slots.lock() {
            for slot in slots.values().flat_map(HashMap::values) {
                if let Some(w) = &slot.wake
                    && !w.open.swap(true, Ordering::AcqRel)
                {
                    w.notify.notify_one();
                }
            }
        }
    }

    /// Moves stashed messages into worker queues; resumes partitions that drained.
    fn flush_stashes(&self, consumer: &BaseConsumer<GroupCtx>) {
        let all = self.shared.all_paused.load(Ordering::Acquire);
        let Ok(mut slots) = self.slots.lock() else {
            return;
        };
        for (t, ps) in slots.iter_mut() {
            for (p, slot) in ps.iter_mut() {
                while let Some(m) = slot.stash.pop_front() {
                    match slot.tx.try_send(m) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(m)) => {
                            slot.stash.push_front(m);
                            break;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {}
                    }
                }
                if slot.stash.is_empty() && slot.backpressure_paused {
                    slot.backpressure_paused = false;
                    let user = self
                        .shared
                        .user_paused
                        .lock()
                        .map(|u| u.contains(&(t.to_string(), *p)))
                        .unwrap_or(false);
                    if !all && !user {
                        let mut tpl = TopicPartitionList::new();
                        tpl.add_partition(t, *p);
                        let _ = consumer.resume(&tpl);
                    }
                }
            }
        }
    }

    /// Stores (group) or records (plain) the committable offsets that moved.
    fn store_progress(&self, consumer: &BaseConsumer<GroupCtx>) {
        let mut tpl = TopicPartitionList::new();
        if let Ok(mut slots) = self.slots.lock() {
            for ps in slots.values_mut() {
                for slot in ps.values_mut() {
                    let c = slot.state.committable();
                    if c.is_some() && c != slot.stored {
                        slot.stored = c;
                        if let Some(c) = c {
                            let _ = tpl.add_partition_offset(
                                &slot.state.topic,
                                slot.state.partition,
                                Offset::Offset(c),
                            );
                        }
                    }
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        if self.group {
            if let Err(e) = consumer.store_offsets(&tpl) {
                tracing::debug!(error = %e, "storing offsets failed (partition just revoked?)");
            }
        } else if let Ok(mut r) = self.shared.resume_at.lock() {
            for e in tpl.elements() {
                if let Offset::Offset(o) = e.offset() {
                    r.insert((e.topic().to_owned(), e.partition()), o);
                }
            }
        }
    }

    fn apply(&self, consumer: &BaseConsumer<GroupCtx>, c: Control) {
        let (pause, which) = match c {
            Control::Pause(w) => (true, w),
            Control::Resume(w) => (false, w),
        };
        let mut tpl = TopicPartitionList::new();
        if let Ok(slots) = self.slots.lock() {
            for (t, ps) in slots.iter() {
                for (p, slot) in ps.iter() {
                    let selected = which.as_ref().is_none_or(|(wt, wp)| **t == **wt && wp == p);
                    // A partition paused for backpressure resumes when its queue drains.
                    if selected && (pause || !slot.backpressure_paused) {
                        tpl.add_partition(t, *p);
                    }
                }
            }
        }
        if tpl.count() == 0 {
            return;
        }
        let r = if pause {
            consumer.pause(&tpl)
        } else {
            consumer.resume(&tpl)
        };
        if let Err(e) = r {
            gated_warn!(self.gate, "pause/resume failed", error = %e);
        }
    }

    /// Every assigned partition's state.
    pub(crate) fn partitions(&self) -> Vec<Arc<PartitionState>> {
        match self.slots.lock() {
            Ok(slots) => slots
                .values()
                .flat_map(HashMap::values)
                .map(|s| s.state.clone())
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Hands `chunk` to a worker whose queue is full, waiting up to [`FULL_WAIT`] for room;
/// gives it back if there is still none. The wait is the polling thread's own (a sleep
/// between tries), not a tokio timer: a timer would need the runtime's driver, which handler
/// code blocking the runtime's threads (or a current-thread runtime busy elsewhere) would
/// hold up, and the polling thread with it.
fn wait_to_send(
    tx: &mpsc::Sender<Vec<ConsumedMessage>>,
    mut chunk: Vec<ConsumedMessage>,
) -> Option<Vec<ConsumedMessage>> {
    let until = Instant::now() + FULL_WAIT;
    loop {
        match tx.try_send(chunk) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => return None,
            Err(mpsc::error::TrySendError::Full(c)) => chunk = c,
        }
        if Instant::now() >= until {
            return Some(chunk);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The default `max.poll.interval.ms` of group consumers. The polling thread never waits
/// for handlers, only for a revoke's drain (the shutdown grace) and brief bookkeeping, so
/// the interval can be far below librdkafka's 5 minutes. It is also the group's rebalance
/// timeout: how long a join waits for a member that is leaving, which some brokers (Tansu)
/// sit out in full. It must be at least `session.timeout.ms` (librdkafka: 45 s).
fn max_poll_interval_ms(cc: &rdkafka::ClientConfig, grace: Duration) -> u64 {
    let session: u64 = cc
        .get("session.timeout.ms")
        .and_then(|v| v.parse().ok())
        .unwrap_or(45_000);
    let drain = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX / 4);
    session.max(drain.saturating_mul(2).saturating_add(5_000))
}

/// The librdkafka settings of `spec`'s consumer, and whether it is a group consumer: the
/// defaults of its kind under the wrapper's config and the spec's overrides, plus its group.
fn client_config(config: &KafkaConfig, spec: &ConsumerSpec) -> (rdkafka::ClientConfig, bool) {
    let (defaults, group) = match &spec.subscription {
        Subscription::Group { .. } => (GROUP_DEFAULTS, true),
        Subscription::Partitions(_) => (PLAIN_DEFAULTS, false),
    };
    let mut cc = config.client_config(defaults, &spec.overrides);
    if let Subscription::Group { group_id, .. } = &spec.subscription {
        cc.set("group.id", group_id);
        if cc.get("max.poll.interval.ms").is_none() {
            cc.set(
                "max.poll.interval.ms",
                max_poll_interval_ms(&cc, config.shutdown_grace).to_string(),
            );
        }
    } else if cc.get("group.id").is_none() {
        // librdkafka wants a group id even for assign(); nothing is committed to it.
        cc.set("group.id", format!("wharf-plain-{}", spec.name));
    }
    (cc, group)
}

/// The producer of `spec`'s dead-letter topic, if it has one.
fn dead_letter(
    config: &KafkaConfig,
    spec: &ConsumerSpec,
    base: &HealthContext,
) -> Result<Option<Arc<DeadLetter>>> {
    let Some(topic) = &spec.dead_letter_topic else {
        return Ok(None);
    };
    let producer = ProducerInstance::build(
        config,
        &ProducerSpec::new(format!("{}-dlq", spec.name)),
        base.clone(),
    )?;
    Ok(Some(Arc::new(DeadLetter {
        topic: topic.clone(),
        producer: Arc::new(producer),
    })))
}

/// Assigns a plain consumer its partitions, each from where the previous incarnation left
/// off, else from its start position, and starts their workers.
fn assign(
    consumer: &BaseConsumer<GroupCtx>,
    state: &Arc<LoopState>,
    parts: &[(String, i32, StartAt)],
) -> Result<()> {
    let resume = state
        .shared
        .resume_at
        .lock()
        .map(|r| r.clone())
        .unwrap_or_default();
    let mut tpl = TopicPartitionList::new();
    let mut workers = Vec::new();
    for (t, p, start) in parts {
        let offset = match resume.get(&(t.clone(), *p)) {
            Some(o) => Offset::Offset(*o),
            None => match start {
                StartAt::Beginning => Offset::Beginning,
                StartAt::End => Offset::End,
                StartAt::Offset(o) => Offset::Offset(*o),
            },
        };
        tpl.add_partition_offset(t, *p, offset)
            .map_err(Error::Config)?;
        let base = match offset {
            Offset::Offset(o) => Base::Offset(o),
            Offset::End => Base::End,
            _ => Base::Beginning,
        };
        workers.push((t, *p, base));
    }
    consumer.assign(&tpl).map_err(Error::Config)?;
    // After `assign`, which would undo earlier queue splits.
    for (t, p, base) in workers {
        state.start_worker(t, p, base);
    }
    state.publish_assignment();
    Ok(())
}

/// A running incarnation of a consumer.
pub(crate) struct ConsumerInstance {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Resolves when the polling thread has done its work and begins to close its client.
    closing: Option<oneshot::Receiver<()>>,
    /// Resolves (its sender dropped) when the polling thread has closed its client and ends.
    ended: Option<oneshot::Receiver<()>>,
    pub(crate) state: Arc<LoopState>,
}

impl ConsumerInstance {
    /// Builds the librdkafka consumer and starts its polling thread. Fails on invalid
    /// configuration, outside a tokio runtime, or when no thread can be spawned; an
    /// unreachable broker is not an error here.
    pub(crate) fn start(
        config: &KafkaConfig,
        shared: Arc<ConsumerShared>,
        base: HealthContext,
    ) -> Result<Self> {
        let spec = &shared.spec;
        let (cc, group) = client_config(config, spec);
        let dead_letter = dead_letter(config, spec, &base)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime {
            what: format!("consumer `{}`", spec.name),
        })?;
        let state = Arc::new(LoopState {
            shared: shared.clone(),
            runtime,
            dead_letter,
            slots: Mutex::new(HashMap::new()),
            consumer: OnceLock::new(),
            gates_closed: AtomicBool::new(false),
            grace: config.shutdown_grace,
            commit_timeout: config.request_timeout,
            gate: base.gate.clone(),
            group,
            reset_to_end: matches!(
                cc.get("auto.offset.reset"),
                Some("latest" | "end" | "largest")
            ),
        });
        let ctx = GroupCtx {
            base,
            state: state.clone(),
        };
        let consumer: Arc<BaseConsumer<GroupCtx>> =
            Arc::new(cc.create_with_context(ctx).map_err(Error::Config)?);
        let _ = state.consumer.set(Arc::downgrade(&consumer));
        match &spec.subscription {
            Subscription::Group { topics, .. } => {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                consumer.subscribe(&topics).map_err(Error::Config)?;
            }
            Subscription::Partitions(parts) => assign(&consumer, &state, parts)?,
        }
        Self::spawn_polling(consumer, state)
    }

    /// Starts the thread that polls `consumer` until the instance is stopped.
    fn spawn_polling(consumer: Arc<BaseConsumer<GroupCtx>>, state: Arc<LoopState>) -> Result<Self> {
        let (control_tx, control_rx) = mpsc::channel(64);
        state.shared.control.send_replace(Some(control_tx));
        let stop = Arc::new(AtomicBool::new(false));
        let (closing_tx, closing) = oneshot::channel();
        let (ended_tx, ended) = oneshot::channel::<()>();
        let name = state.shared.spec.name.clone();
        let thread = {
            let stop = stop.clone();
            let state = state.clone();
            std::thread::Builder::new()
                .name(format!("wharf-kafka-{name}"))
                .spawn(move || {
                    poll_loop(consumer, state, control_rx, stop, closing_tx);
                    drop(ended_tx);
                })
                .map_err(|source| Error::Thread {
                    what: format!("consumer `{name}`"),
                    source,
                })?
        };
        Ok(Self {
            stop,
            thread: Some(thread),
            closing: Some(closing),
            ended: Some(ended),
            state,
        })
    }

    /// Stops polling, drains in-flight handlers (up to the grace period), commits (waiting
    /// up to the request timeout for the answer), leaves the group and closes the client.
    ///
    /// Returns within [`stop_bound`](LoopState::stop_bound) whatever Kafka does. Closing a
    /// client waits for librdkafka to settle with the coordinator (a commit it still retries,
    /// say), which under a silent partition did not end in minutes: a client that has not
    /// closed within one request timeout goes on closing on its own thread, in the
    /// background.
    pub(crate) async fn shutdown(mut self) {
        self.stop.store(true, Ordering::Release);
        let (Some(thread), Some(closing), Some(ended)) =
            (self.thread.take(), self.closing.take(), self.ended.take())
        else {
            return;
        };
        let close_wait = self.state.commit_timeout;
        let work = self.state.stop_bound().saturating_sub(close_wait);
        // Either is an error only once the thread is gone (panicked, or already ended).
        if tokio::time::timeout(work, closing).await.is_err()
            || tokio::time::timeout(close_wait, ended).await.is_err()
        {
            gated_warn!(self.state.gate, "consumer not closed within its stop bound (Kafka does not answer); it goes on closing in the background", bound = ?self.state.stop_bound());
            return;
        }
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    /// The consumer group, for group consumers.
    pub(crate) fn group_id(&self) -> Option<String> {
        self.state.shared.spec.group_id().map(str::to_owned)
    }

    /// Every assigned partition whose watermarks (low, high) are known, as the health check
    /// sees it, in (topic, partition) order.
    pub(crate) fn views(&self, marks: &HashMap<(String, i32), (i64, i64)>) -> Vec<PartitionView> {
        let mut out: Vec<PartitionView> = self
            .state
            .partitions()
            .iter()
            .filter_map(|s| {
                let (low, high) = marks.get(&(s.topic.to_string(), s.partition))?;
                Some(s.view(*low, *high))
            })
            .collect();
        out.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        out
    }
}

impl Drop for ConsumerInstance {
    fn drop(&mut self) {
        // If not shut down explicitly, at least stop the thread; it cleans up by itself.
        self.stop.store(true, Ordering::Release);
    }
}

fn poll_loop(
    consumer: Arc<BaseConsumer<GroupCtx>>,
    state: Arc<LoopState>,
    mut control: mpsc::Receiver<Control>,
    stop: Arc<AtomicBool>,
    closing: oneshot::Sender<()>,
) {
    let span = tracing::info_span!("kafka_consumer", consumer = %state.shared.spec.name);
    let _g = span.enter();
    let mut last_store = Instant::now();
    while !stop.load(Ordering::Acquire) {
        while let Ok(c) = control.try_recv() {
            state.apply(&consumer, c);
        }
        state.flush_stashes(&consumer);
        // Wait for one message, then take what is already there, up to a round's worth.
        let mut timeout = Duration::from_millis(50);
        let mut taken = 0;
        while taken < ROUND {
            match consumer.poll(timeout) {
                None => break,
                Some(Ok(m)) => {
                    taken += 1;
                    state.take(&m);
                }
                Some(Err(e)) => tracing::debug!(error = %e, "consumer poll error"),
            }
            timeout = Duration::ZERO;
        }
        if taken > 0 {
            state.hand_over(&consumer);
        }
        if taken < ROUND {
            state.open_gates();
        }
        if last_store.elapsed() >= STORE_EVERY {
            state.store_progress(&consumer);
            last_store = Instant::now();
        }
    }
    state.store_progress(&consumer);
    state.stop_and_commit(&consumer, None);
    if state.group {
        // Leave the group now rather than at the session timeout, so partitions move fast.
        consumer.leave_group(LEAVE_WAIT);
    }
    // Workers hold the consumer through their partition queues. Let an aborted one drop
    // its queue first (briefly), so the consumer is closed here, not on a runtime thread.
    let until = Instant::now() + WORKERS_LET_GO;
    while Arc::strong_count(&consumer) > 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(5));
    }
    tracing::info!("consumer stopped");
    let _ = closing.send(());
    drop(consumer);
}

trait LeaveExt {
    /// Unsubscribes and serves the revoke that this posts, so that librdkafka sends its
    /// LeaveGroup now. Otherwise the leave waits for the client to be closed, which waits
    /// for the last message taken from it to be dropped (a message a handler kept, a worker
    /// still being aborted); until then the member stays in the group, and a consumer joining
    /// it waits for a rebalance that only ends when the member is timed out.
    fn leave_group(&self, wait: Duration);
}

impl LeaveExt for BaseConsumer<GroupCtx> {
    fn leave_group(&self, wait: Duration) {
        self.unsubscribe();
        let until = Instant::now() + wait;
        loop {
            if self.assignment().is_ok_and(|a| a.count() == 0) {
                return;
            }
            if Instant::now() >= until {
                tracing::debug!(
                    "partitions still assigned after unsubscribing; the group is left when the client closes"
                );
                return;
            }
            // Messages that come out here are not handed to anyone (nor committed).
            let _ = self.poll(Duration::from_millis(20));
        }
    }
}

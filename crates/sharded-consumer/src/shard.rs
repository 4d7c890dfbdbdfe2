//! An executor: one task that owns the actors of the keys hashed to it.
//!
//! An actor is an entry in the executor's registry ([`Slot`]): the key's state, its queue of
//! waiting messages and signals, and whether a turn is running. An idle actor is that entry
//! alone: no task, no channel, no timer. When a key has work and its executor has room
//! under its concurrency share, the executor starts a *turn*: a future that owns the state
//! and the delivery for one handler call. The turn is polled once at once; most handlers
//! finish in that poll and their outcome is applied on the spot, without a task, a channel
//! or a wake-up. A turn that waits (I/O) joins the executor's set of running turns, and the
//! executor goes on with other keys meanwhile. A key never has two turns at once, which is
//! what serializes it.
//!
//! The executor is a hand-written poll loop rather than a `select!`, so that it can poll
//! turns inline and drain every source of work (finished turns, pending acks, timers,
//! requests, new deliveries) in one pass, counting locally and publishing counts once per
//! pass.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::future::BoxFuture;
use futures::stream::{FuturesUnordered, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;
use wharf_core::transport::Delivery;

use crate::budget::Budget;
use crate::config::Config;
use crate::mailbox::{Answer, Ask, Control, Controls, Life, Taken};
use crate::stats::{Counts, Metrics, Totals};
use crate::turn::{self, Done, Request, ShardCtx};
use crate::{Error, Handler, KeyInfo, Outcome, ShardKey, StopReason};

/// A delivery routed to an executor.
#[derive(Debug)]
pub(crate) enum Inbound {
    Message { key: ShardKey, delivery: Delivery },
    Rejected { delivery: Delivery, reason: String },
}

/// A message waiting to be tried again, or to be dead-lettered. At most one per key: it is
/// the key's oldest unsettled message, so the key's queue waits behind it.
struct Held {
    delivery: Delivery,
    /// The number of the next try (or of the last one, for a dead letter).
    attempt: u32,
    due_at: Option<Instant>,
    dead_letter: Option<String>,
}

/// One key's actor, as an entry of the registry.
struct Slot<H: Handler> {
    /// `None` before `init`, after a failure or a stop, and while a turn owns it.
    state: Option<H::State>,
    busy: bool,
    in_ready: bool,
    last_active_ms: u64,
    queue: VecDeque<Delivery>,
    held: Option<Box<Held>>,
    requests: VecDeque<Request<H>>,
}

impl<H: Handler> Slot<H> {
    fn new(now_ms: u64) -> Self {
        Self {
            state: None,
            busy: false,
            in_ready: false,
            last_active_ms: now_ms,
            queue: VecDeque::new(),
            held: None,
            requests: VecDeque::new(),
        }
    }

    fn has_work(&self) -> bool {
        !self.requests.is_empty() || self.held.is_some() || !self.queue.is_empty()
    }

    fn is_idle(&self) -> bool {
        !self.busy && !self.has_work()
    }
}

/// What a turn is started for.
enum Work<H: Handler> {
    Message {
        delivery: Delivery,
        attempt: u32,
    },
    DeadLetter {
        delivery: Delivery,
        attempt: u32,
        reason: String,
    },
    Request(Request<H>),
    Stop(StopReason),
}

type Turn<H> = BoxFuture<'static, Done<H>>;
type AckFuture = BoxFuture<'static, Result<(), wharf_core::Error>>;
type Registry<H> = HashMap<ShardKey, Slot<H>, foldhash::fast::RandomState>;

/// Work rounds per poll before the executor yields to the runtime.
const ROUNDS_PER_POLL: usize = 64;
/// Inbox batches taken per round.
const BATCHES_PER_ROUND: usize = 4;

pub(crate) struct Shard<H: Handler> {
    index: usize,
    ctx: Arc<ShardCtx<H>>,
    config: Arc<Config>,
    slots: Registry<H>,
    running: FuturesUnordered<Turn<H>>,
    busy: usize,
    limit: usize,
    ready: VecDeque<ShardKey>,
    timers: BinaryHeap<Reverse<(Instant, ShardKey)>>,
    sleep: Pin<Box<Sleep>>,
    sleep_armed: Option<Instant>,
    next_sweep: Option<Instant>,
    acks: FuturesUnordered<AckFuture>,
    stalled: VecDeque<Inbound>,
    drained: Vec<Inbound>,
    inbox: mpsc::Receiver<Vec<Inbound>>,
    inbox_open: bool,
    controls: Controls<H>,
    /// Requests a run that ended had taken and not started: served before the mailbox.
    carried: VecDeque<(ShardKey, Request<H>)>,
    life: Arc<Life<H>>,
    stop_token: CancellationToken,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    cancelled: bool,
    released: bool,
    stopping: bool,
    fatal: Option<Error>,
    counts: Counts,
    totals: Arc<Totals>,
    metrics: Metrics,
    budget: Arc<Budget>,
    epoch: Instant,
    now: Instant,
    now_ms: u64,
}

/// What an executor is built from.
pub(crate) struct ShardParts<H: Handler> {
    pub(crate) index: usize,
    pub(crate) handler: Arc<H>,
    pub(crate) config: Arc<Config>,
    pub(crate) inbox: mpsc::Receiver<Vec<Inbound>>,
    pub(crate) controls: Controls<H>,
    pub(crate) life: Arc<Life<H>>,
    pub(crate) stop: CancellationToken,
    pub(crate) totals: Arc<Totals>,
    pub(crate) metrics: Metrics,
    pub(crate) budget: Arc<Budget>,
}

impl<H: Handler> Shard<H> {
    pub(crate) fn new(parts: ShardParts<H>) -> Self {
        let now = Instant::now();
        let config = parts.config;
        let next_sweep = config.idle_timeout.map(|idle| now + sweep_every(idle));
        Self {
            index: parts.index,
            ctx: Arc::new(ShardCtx {
                handler: parts.handler,
                config: config.clone(),
            }),
            limit: config.shard_concurrency(parts.index),
            config,
            slots: HashMap::with_hasher(foldhash::fast::RandomState::default()),
            running: FuturesUnordered::new(),
            busy: 0,
            ready: VecDeque::new(),
            timers: BinaryHeap::new(),
            sleep: Box::pin(tokio::time::sleep_until(now)),
            sleep_armed: None,
            next_sweep,
            acks: FuturesUnordered::new(),
            stalled: VecDeque::new(),
            drained: Vec::new(),
            inbox: parts.inbox,
            inbox_open: true,
            controls: parts.controls,
            carried: parts.life.take_carried(parts.index),
            life: parts.life,
            stop: Box::pin(parts.stop.clone().cancelled_owned()),
            stop_token: parts.stop,
            cancelled: false,
            released: false,
            stopping: false,
            fatal: None,
            counts: Counts::default(),
            totals: parts.totals,
            metrics: parts.metrics,
            budget: parts.budget,
            epoch: now,
            now,
            now_ms: 0,
        }
    }

    /// Runs until the inbox is closed and every actor has stopped.
    pub(crate) async fn run(mut self) -> Result<(), Error> {
        let span = tracing::debug_span!("sharded_executor", consumer = %self.config.name, executor = self.index);
        std::future::poll_fn(|cx| {
            self.serve_carried();
            self.poll_run(cx)
        })
        .instrument(span)
        .await
    }

    /// Queues what the previous run left (on its first poll, so that a turn it starts is
    /// polled by this task).
    fn serve_carried(&mut self) {
        if self.carried.is_empty() {
            return;
        }
        self.tick();
        for (key, request) in std::mem::take(&mut self.carried) {
            self.on_request(key, request);
        }
    }

    fn poll_run(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        for _ in 0..ROUNDS_PER_POLL {
            self.tick();
            let running_before = self.running.len();
            // The stop first: once it is seen, a turn that finishes below starts nothing
            // new for its key (a waiting signal is then left to the next run, or answers
            // `Stopped` when there will be none).
            let mut progress = self.poll_stop(cx);
            progress |= self.poll_turns(cx);
            progress |= self.poll_acks(cx);
            progress |= self.poll_timer(cx);
            progress |= self.poll_controls(cx);
            progress |= self.poll_inbox(cx);
            if let Some(result) = self.try_finish(&mut progress) {
                self.flush();
                return Poll::Ready(result);
            }
            if self.counts.settled >= self.config.batch_size {
                self.flush();
            }
            // A turn that joined the running set this round has only been polled with a
            // no-op waker: poll the set again before sleeping.
            progress |= self.running.len() > running_before;
            if !progress {
                self.flush();
                return Poll::Pending;
            }
        }
        // Plenty of work: let other tasks run, then come back.
        self.flush();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn tick(&mut self) {
        self.now = Instant::now();
        self.now_ms = u64::try_from((self.now - self.epoch).as_millis()).unwrap_or(u64::MAX);
    }

    fn flush(&mut self) {
        let settled = std::mem::take(&mut self.counts.settled);
        self.totals.flush(&mut self.counts, &self.metrics);
        self.budget.give_back(settled);
    }

    // ----- sources of work -----

    fn poll_turns(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(done)) = self.running.poll_next_unpin(cx) {
            progress = true;
            if let Some(key) = self.apply(done) {
                self.run_key(key);
            }
        }
        self.pump_ready();
        progress
    }

    fn poll_acks(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        while let Poll::Ready(Some(answer)) = self.acks.poll_next_unpin(cx) {
            progress = true;
            self.counts.settled += 1;
            if let Err(e) = answer {
                tracing::warn!(consumer = %self.config.name, error = %e, "acknowledgement failed");
            }
        }
        progress
    }

    fn poll_stop(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cancelled || self.stop.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.cancelled = true;
        tracing::debug!(consumer = %self.config.name, executor = self.index, "stopping: releasing queued messages");
        true
    }

    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        self.arm_timer();
        if self.sleep_armed.is_none() || self.sleep.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.sleep_armed = None;
        self.tick();
        while let Some(Reverse((due, _))) = self.timers.peek() {
            if *due > self.now {
                break;
            }
            if let Some(Reverse((_, key))) = self.timers.pop() {
                self.retry_due(key);
            }
        }
        if self.next_sweep.is_some_and(|at| at <= self.now) {
            self.sweep();
        }
        self.arm_timer();
        true
    }

    /// Points the timer at the earliest of the next retry and the next sweep.
    fn arm_timer(&mut self) {
        let retry = self.timers.peek().map(|Reverse((due, _))| *due);
        let next = match (retry, self.next_sweep) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(at) = next
            && self.sleep_armed != Some(at)
        {
            self.sleep.as_mut().reset(at);
            self.sleep_armed = Some(at);
        }
    }

    fn poll_controls(&mut self, cx: &mut Context<'_>) -> bool {
        if (self.cancelled || self.stopping) && self.life.supervised() {
            // This run serves nothing new; a supervisor may start the next one, which will.
            return false;
        }
        let mut progress = false;
        for _ in 0..self.config.batch_size {
            match self.controls.poll_recv(cx) {
                Poll::Ready(Some(taken)) => {
                    progress = true;
                    self.on_control(taken);
                }
                Poll::Ready(None) | Poll::Pending => break,
            }
        }
        progress
    }

    fn poll_inbox(&mut self, cx: &mut Context<'_>) -> bool {
        let mut progress = false;
        if self.cancelled {
            // Collect what is left, to release it newest first once the reader has stopped.
            while self.inbox_open {
                match self.inbox.poll_recv(cx) {
                    Poll::Ready(Some(batch)) => self.drained.extend(batch),
                    Poll::Ready(None) => self.inbox_open = false,
                    Poll::Pending => break,
                }
                progress = true;
            }
            return progress;
        }
        while let Some(inbound) = self.stalled.pop_front() {
            if let Some(inbound) = self.accept(inbound) {
                self.stalled.push_front(inbound);
                return progress;
            }
            progress = true;
        }
        // Acks the source has not confirmed yet count as in flight: stop taking more.
        if self.acks.len() >= self.config.max_in_flight {
            return progress;
        }
        for _ in 0..BATCHES_PER_ROUND {
            if !self.inbox_open {
                break;
            }
            match self.inbox.poll_recv(cx) {
                Poll::Ready(Some(batch)) => {
                    progress = true;
                    let mut batch = batch.into_iter();
                    while let Some(inbound) = batch.next() {
                        if let Some(inbound) = self.accept(inbound) {
                            // That key's queue is full: hold the rest (in order) and take
                            // nothing new until it has room. The reader feels it as a full
                            // inbox, the source as a consumer that stopped reading.
                            self.stalled.push_back(inbound);
                            self.stalled.extend(batch);
                            return true;
                        }
                    }
                }
                Poll::Ready(None) => {
                    progress = true;
                    self.inbox_open = false;
                }
                Poll::Pending => break,
            }
        }
        progress
    }

    // ----- accepting work -----

    /// Queues a delivery for its key, or starts it at once if the key is idle. Gives the
    /// delivery back (`Some`) if the key's queue is full.
    fn accept(&mut self, inbound: Inbound) -> Option<Inbound> {
        let (key, delivery) = match inbound {
            Inbound::Message { key, delivery } => (key, delivery),
            Inbound::Rejected { delivery, reason } => {
                self.counts.rejected += 1;
                let turn = turn::dead_letter(self.ctx.clone(), None, delivery, reason, 0);
                if let Some(done) = self.start(Box::pin(turn)) {
                    self.apply(done);
                }
                return None;
            }
        };
        let max_queue = self.config.max_queue_per_key;
        let room = self.busy < self.limit;
        let state = match self.slots.get_mut(key.as_bytes()) {
            Some(slot) => {
                slot.last_active_ms = self.now_ms;
                if slot.busy || slot.has_work() || !room {
                    if slot.queue.len() >= max_queue {
                        return Some(Inbound::Message { key, delivery });
                    }
                    slot.queue.push_back(delivery);
                    self.counts.queued += 1;
                    if !slot.busy {
                        self.run_key(key);
                    }
                    return None;
                }
                // The fast path: an idle key starts its message at once, and a handler that
                // does not wait is done within this poll; an `Ack` is applied to the entry
                // in hand, without looking the key up again.
                slot.busy = true;
                let state = slot.state.take();
                let span = tracing::trace_span!("sharded_message", %key, attempt = 1u32);
                let turn = turn::message(self.ctx.clone(), key, state, delivery, 1);
                let turn: Turn<H> = Box::pin(turn.instrument(span));
                match start_turn(&mut self.running, &mut self.busy, turn)? {
                    Done::Message {
                        delivery,
                        state,
                        started,
                        result: Ok(Outcome::Ack),
                        ..
                    } => {
                        self.busy -= 1;
                        slot.busy = false;
                        slot.state = state;
                        self.counts.started += u64::from(started);
                        self.counts.acked += 1;
                        settle_ack(&mut self.acks, &mut self.counts, delivery);
                    }
                    other => {
                        if let Some(key) = self.apply(other) {
                            self.run_key(key);
                        }
                    }
                }
                return None;
            }
            None => {
                let mut slot = Slot::new(self.now_ms);
                self.counts.active += 1;
                if !room {
                    slot.queue.push_back(delivery);
                    self.counts.queued += 1;
                    self.slots.insert(key.compact(), slot);
                    self.run_key(key);
                    return None;
                }
                slot.busy = true;
                self.slots.insert(key.compact(), slot);
                None
            }
        };
        // The fast path: an idle key starts its message at once, usually finishing it in the
        // same poll.
        if let Some(done) = self.launch(
            key,
            state,
            Work::Message {
                delivery,
                attempt: 1,
            },
        ) && let Some(key) = self.apply(done)
        {
            self.run_key(key);
        }
        None
    }

    fn on_control(&mut self, taken: Taken<H>) {
        let (Control { key, ask }, reply) = taken.into_parts();
        match ask {
            Ask::Inspect => {
                let info = self.slots.get(key.as_bytes()).map(|slot| KeyInfo {
                    started: slot.state.is_some() || slot.busy,
                    running: slot.busy,
                    queued: slot.queue.len(),
                    waiting_retry: slot.held.is_some(),
                    signals_waiting: slot.requests.len(),
                });
                let _ = reply.send(Answer::Info(info));
            }
            Ask::Signal(signal) => self.on_request(key, Request::Signal { signal, reply }),
            Ask::Start => self.on_request(key, Request::Start { reply }),
        }
    }

    fn on_request(&mut self, key: ShardKey, request: Request<H>) {
        if self.cancelled || self.stopping {
            // Only a consumer that cannot run again takes requests while it stops.
            request.fail(Error::Stopped {
                consumer: self.config.name.to_string(),
            });
            return;
        }
        let now_ms = self.now_ms;
        let max = self.config.max_signals_per_key;
        let slot = match self.slots.get_mut(key.as_bytes()) {
            Some(slot) => slot,
            None => {
                self.counts.active += 1;
                self.slots
                    .entry(key.compact())
                    .or_insert_with(|| Slot::new(now_ms))
            }
        };
        if slot.requests.len() >= max {
            request.fail(Error::SignalQueueFull {
                key: key.to_string(),
                capacity: max,
            });
            return;
        }
        slot.last_active_ms = now_ms;
        slot.requests.push_back(request);
        self.run_key(key);
    }

    fn retry_due(&mut self, key: ShardKey) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
            return;
        };
        let Some(held) = slot.held.as_mut() else {
            return;
        };
        if held.due_at.is_some_and(|at| at <= now) {
            held.due_at = None;
            self.run_key(key);
        }
    }

    // ----- running keys -----

    /// Starts the key's next piece of work if it has one and may run; loops while turns
    /// finish inline.
    fn run_key(&mut self, mut key: ShardKey) {
        loop {
            if self.cancelled || self.stopping {
                return;
            }
            let room = self.busy < self.limit;
            let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
                return;
            };
            if slot.busy {
                return;
            }
            if !slot.has_work() {
                if slot.state.is_none() {
                    // Stopped or failed and nothing left to do: the actor is gone.
                    self.slots.remove(key.as_bytes());
                    self.counts.active -= 1;
                }
                return;
            }
            if slot.held.as_ref().is_some_and(|h| h.due_at.is_some()) && slot.requests.is_empty() {
                return; // waiting out a retry delay; its queue waits behind it
            }
            if !room {
                if !slot.in_ready {
                    slot.in_ready = true;
                    self.ready.push_back(key);
                }
                return;
            }
            let Some(work) = next_work(slot, &mut self.counts) else {
                return;
            };
            slot.busy = true;
            let state = match work {
                Work::DeadLetter { .. } => None, // the state stays with the key
                _ => slot.state.take(),
            };
            match self.launch(key, state, work) {
                Some(done) => match self.apply(done) {
                    Some(next) => key = next,
                    None => return,
                },
                None => return,
            }
        }
    }

    /// Runs keys that were waiting for a concurrency slot.
    fn pump_ready(&mut self) {
        while self.busy < self.limit && !self.cancelled && !self.stopping {
            let Some(key) = self.ready.pop_front() else {
                return;
            };
            if let Some(slot) = self.slots.get_mut(key.as_bytes()) {
                slot.in_ready = false;
                self.run_key(key);
            }
        }
    }

    /// Builds the turn for `work` and polls it once; a turn that finishes at once is handed
    /// back, one that waits joins the running set.
    fn launch(&mut self, key: ShardKey, state: Option<H::State>, work: Work<H>) -> Option<Done<H>> {
        let ctx = self.ctx.clone();
        let turn: Turn<H> = match work {
            Work::Message { delivery, attempt } => {
                let span = tracing::trace_span!("sharded_message", %key, attempt);
                Box::pin(turn::message(ctx, key, state, delivery, attempt).instrument(span))
            }
            Work::DeadLetter {
                delivery,
                attempt,
                reason,
            } => Box::pin(turn::dead_letter(ctx, Some(key), delivery, reason, attempt)),
            Work::Request(request) => {
                let span = tracing::debug_span!("sharded_signal", %key);
                Box::pin(turn::request(ctx, key, state, request).instrument(span))
            }
            Work::Stop(reason) => match state {
                Some(state) => Box::pin(turn::stop(ctx, key, state, reason)),
                None => {
                    self.busy += 1;
                    return Some(Done::Terminated { key, reason });
                }
            },
        };
        self.start(turn)
    }

    fn start(&mut self, turn: Turn<H>) -> Option<Done<H>> {
        start_turn(&mut self.running, &mut self.busy, turn)
    }

    /// Applies a finished turn to its key; returns the key if it may have more work.
    fn apply(&mut self, done: Done<H>) -> Option<ShardKey> {
        self.busy -= 1;
        match done {
            Done::Message {
                key,
                delivery,
                attempt,
                state,
                started,
                result,
            } => {
                self.counts.started += u64::from(started);
                let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
                    return None; // cannot happen: a busy slot is never removed
                };
                slot.busy = false;
                slot.state = state;
                slot.last_active_ms = self.now_ms;
                let held = match result {
                    Ok(Outcome::Ack) => {
                        self.counts.acked += 1;
                        settle_ack(&mut self.acks, &mut self.counts, delivery);
                        None
                    }
                    Ok(Outcome::Stop) => {
                        self.counts.stopped += 1;
                        self.counts.acked += 1;
                        settle_ack(&mut self.acks, &mut self.counts, delivery);
                        None
                    }
                    Ok(Outcome::DeadLetter(reason)) => Some(dead_held(delivery, attempt, reason)),
                    Ok(Outcome::Retry(delay)) => {
                        Some(self.retry_or_give_up(&key, delivery, attempt, delay, || {
                            "the handler asked to retry".to_owned()
                        }))
                    }
                    Err(failure) => {
                        self.counts.restarts += 1;
                        tracing::warn!(
                            consumer = %self.config.name, %key, attempt, error = %failure,
                            "actor failed; restarting it with a fresh state"
                        );
                        let delay = turn::failure_delay(&self.config, attempt);
                        Some(self.retry_or_give_up(&key, delivery, attempt, delay, || {
                            failure.to_string()
                        }))
                    }
                };
                let slot = self.slots.get_mut(key.as_bytes())?;
                if let Some(held) = held {
                    slot.held = Some(Box::new(held));
                }
                // The common case (acked, nothing queued, state kept) needs no further look.
                (slot.has_work() || slot.state.is_none()).then_some(key)
            }
            Done::Request {
                key,
                state,
                started,
                failed,
            } => {
                self.counts.started += u64::from(started);
                self.counts.restarts += u64::from(failed);
                let slot = self.slots.get_mut(key.as_bytes())?;
                slot.busy = false;
                slot.state = state;
                slot.last_active_ms = self.now_ms;
                Some(key)
            }
            Done::Terminated { key, reason } => {
                if reason == StopReason::Idle {
                    self.counts.evicted += 1;
                }
                let slot = self.slots.get_mut(key.as_bytes())?;
                slot.busy = false;
                slot.state = None;
                // `run_key` removes the entry unless work arrived meanwhile, which then
                // starts a new actor.
                Some(key)
            }
            Done::DeadLettered {
                key,
                delivery,
                result,
            } => {
                match result {
                    Ok(()) => {
                        self.counts.dead_lettered += 1;
                        settle_ack(&mut self.acks, &mut self.counts, delivery);
                    }
                    Err(error) => self.dead_letter_failed(key.as_ref(), delivery, error),
                }
                let key = key?;
                let slot = self.slots.get_mut(key.as_bytes())?;
                slot.busy = false;
                Some(key)
            }
        }
    }

    /// Schedules another try, or a dead letter once the policy is spent.
    fn retry_or_give_up(
        &mut self,
        key: &ShardKey,
        delivery: Delivery,
        attempt: u32,
        delay: Duration,
        why: impl FnOnce() -> String,
    ) -> Held {
        let max = self.config.retry.max_attempts();
        if attempt >= max {
            let reason = format!("gave up after {attempt} attempts (limit {max}): {}", why());
            return dead_held(delivery, attempt, reason);
        }
        self.counts.retries += 1;
        let due = self.now + delay;
        self.timers.push(Reverse((due, key.clone())));
        Held {
            delivery,
            attempt: attempt + 1,
            due_at: Some(due),
            dead_letter: None,
        }
    }

    /// The dead-letter target refused the message: stop the consumer so that it is
    /// delivered again rather than lost. The delivery is kept as the key's oldest, so that
    /// it is released last (see `release_queued`).
    fn dead_letter_failed(&mut self, key: Option<&ShardKey>, delivery: Delivery, error: Error) {
        tracing::error!(consumer = %self.config.name, error = %error, "dead-lettering failed; stopping the consumer");
        match key.and_then(|k| self.slots.get_mut(k.as_bytes())) {
            Some(slot) => {
                slot.held = Some(Box::new(Held {
                    delivery,
                    attempt: 0,
                    due_at: Some(self.now + Duration::from_secs(3600)),
                    dead_letter: None,
                }));
            }
            None => {
                drop(delivery);
                self.counts.settled += 1;
            }
        }
        if self.fatal.is_none() {
            self.fatal = Some(error);
        }
        self.stop_token.cancel();
    }

    // ----- idle eviction -----

    fn sweep(&mut self) {
        let Some(idle) = self.config.idle_timeout else {
            return;
        };
        self.next_sweep = Some(self.now + sweep_every(idle));
        let idle_ms = u64::try_from(idle.as_millis()).unwrap_or(u64::MAX);
        let now_ms = self.now_ms;
        let mut expired = Vec::new();
        let mut deepest = 0usize;
        for (key, slot) in &mut self.slots {
            deepest = deepest.max(slot.queue.len());
            if slot.queue.is_empty() && slot.queue.capacity() > 0 {
                slot.queue = VecDeque::new();
            }
            if slot.is_idle() && now_ms.saturating_sub(slot.last_active_ms) >= idle_ms {
                expired.push(key.clone());
            }
        }
        self.totals.record_depth(deepest as u64, &self.metrics);
        if self.stopping || self.cancelled {
            return;
        }
        for key in expired {
            self.stop_actor(key, StopReason::Idle);
        }
        // Give memory back after a wave of evictions.
        if self.slots.capacity() > 64 && self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to_fit();
        }
    }

    fn stop_actor(&mut self, key: ShardKey, reason: StopReason) {
        let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
            return;
        };
        if slot.busy {
            return;
        }
        slot.busy = true;
        let state = slot.state.take();
        if let Some(done) = self.launch(key, state, Work::Stop(reason))
            && let Some(key) = self.apply(done)
        {
            if reason == StopReason::Shutdown {
                self.remove_if_idle(&key);
            } else {
                self.run_key(key);
            }
        }
    }

    fn remove_if_idle(&mut self, key: &ShardKey) {
        if self
            .slots
            .get(key.as_bytes())
            .is_some_and(|s| s.is_idle() && s.state.is_none())
        {
            self.slots.remove(key.as_bytes());
            self.counts.active -= 1;
        }
    }

    // ----- stopping -----

    /// Decides whether the executor is done; `Some` ends it. Sets `progress` when it
    /// started stopping turns, so that they are polled with a real waker before the
    /// executor sleeps.
    fn try_finish(&mut self, progress: &mut bool) -> Option<Result<(), Error>> {
        if self.inbox_open {
            return None;
        }
        if self.cancelled && !self.released {
            self.release_queued();
            self.released = true;
        }
        if !self.stopping {
            if !self.running.is_empty() {
                return None;
            }
            if self.cancelled {
                self.release_held();
            } else if !self.stalled.is_empty() || self.slots.values().any(Slot::has_work) {
                return None;
            }
            self.stopping = true;
            self.stop_all();
            *progress = true;
        }
        if !self.running.is_empty() || !self.acks.is_empty() {
            return None;
        }
        Some(self.fatal.take().map_or(Ok(()), Err))
    }

    /// Drops every waiting delivery, newest first: a transport that puts released messages
    /// back at the front of its queue (the in-memory one) then hands each key's messages
    /// out again in their original order. Kafka does not care: uncommitted offsets are read
    /// again in order.
    fn release_queued(&mut self) {
        let mut released = 0;
        while let Some(inbound) = self.drained.pop() {
            drop(inbound);
            released += 1;
        }
        while let Some(inbound) = self.stalled.pop_back() {
            drop(inbound);
            released += 1;
        }
        for slot in self.slots.values_mut() {
            while let Some(delivery) = slot.queue.pop_back() {
                drop(delivery);
                released += 1;
                self.counts.queued -= 1;
            }
        }
        self.leave_requests();
        self.counts.settled += released;
        tracing::debug!(consumer = %self.config.name, executor = self.index, released, "queued deliveries released for redelivery");
    }

    /// Hands on the requests taken and not started: under a supervisor to the next run (they
    /// were taken before anything still in the mailbox, so it serves them first); otherwise,
    /// as nothing will run the consumer again, they fail with `Stopped` now.
    fn leave_requests(&mut self) {
        let supervised = self.life.supervised();
        for (key, slot) in &mut self.slots {
            for request in slot.requests.drain(..) {
                if supervised {
                    self.life.carry(self.index, key.clone(), request);
                } else {
                    request.fail(Error::Stopped {
                        consumer: self.config.name.to_string(),
                    });
                }
            }
        }
    }

    /// Drops the deliveries waiting for a retry: each is its key's oldest, so it goes last.
    fn release_held(&mut self) {
        for slot in self.slots.values_mut() {
            if let Some(held) = slot.held.take() {
                drop(held);
                self.counts.settled += 1;
            }
        }
    }

    /// Stops every actor (`terminate` with [`StopReason::Shutdown`]).
    fn stop_all(&mut self) {
        let keys: Vec<ShardKey> = self.slots.keys().cloned().collect();
        for key in keys {
            self.stop_actor(key, StopReason::Shutdown);
        }
    }
}

impl<H: Handler> Drop for Shard<H> {
    fn drop(&mut self) {
        // Publish the last counts (an aborted executor included) and return its budget.
        self.flush();
        // An aborted executor still holds requests it had not started: they go to the life,
        // which hands them to the next run or, when there is none, fails them.
        // Those it had carried over itself were taken first: they stay first.
        for (key, request) in self.carried.drain(..) {
            self.life.carry(self.index, key, request);
        }
        for (key, slot) in &mut self.slots {
            for request in slot.requests.drain(..) {
                self.life.carry(self.index, key.clone(), request);
            }
        }
    }
}

/// The key's next piece of work, signals first.
fn next_work<H: Handler>(slot: &mut Slot<H>, counts: &mut Counts) -> Option<Work<H>> {
    while let Some(request) = slot.requests.pop_front() {
        // A caller that gave up (timed out) before its signal started: skip it.
        if !request.is_abandoned() {
            return Some(Work::Request(request));
        }
    }
    if let Some(held) = slot.held.take() {
        if held.due_at.is_some() {
            slot.held = Some(held);
            return None;
        }
        let Held {
            delivery,
            attempt,
            dead_letter,
            ..
        } = *held;
        return Some(match dead_letter {
            Some(reason) => Work::DeadLetter {
                delivery,
                attempt,
                reason,
            },
            None => Work::Message { delivery, attempt },
        });
    }
    let delivery = slot.queue.pop_front()?;
    counts.queued -= 1;
    if slot.queue.is_empty() && slot.queue.capacity() > 16 {
        slot.queue = VecDeque::new(); // a burst is over: give its memory back
    }
    Some(Work::Message {
        delivery,
        attempt: 1,
    })
}

/// Polls a new turn once; a turn that finishes at once is handed back, one that waits
/// joins the running set.
fn start_turn<H: Handler>(
    running: &mut FuturesUnordered<Turn<H>>,
    busy: &mut usize,
    mut turn: Turn<H>,
) -> Option<Done<H>> {
    *busy += 1;
    // A no-op waker: if the turn waits, the running set polls it again with its own waker
    // before this executor sleeps, so no wake-up is lost.
    let mut cx = Context::from_waker(Waker::noop());
    match turn.as_mut().poll(&mut cx) {
        Poll::Ready(done) => Some(done),
        Poll::Pending => {
            running.push(turn);
            None
        }
    }
}

fn dead_held(delivery: Delivery, attempt: u32, reason: String) -> Held {
    Held {
        delivery,
        attempt,
        due_at: None,
        dead_letter: Some(reason),
    }
}

/// Acknowledges a delivery. The transport records the ack when `ack()` is called; the future
/// only carries its answer. Local transports (in-memory, Kafka's offset store) answer at
/// once, so the future is polled once here and dropped; one that waits (a network ack) joins
/// the executor's pending acks and stays counted in flight until it answers.
fn settle_ack(acks: &mut FuturesUnordered<AckFuture>, counts: &mut Counts, delivery: Delivery) {
    let mut answer: AckFuture = Box::pin(delivery.ack());
    match answer
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(Ok(())) => counts.settled += 1,
        Poll::Ready(Err(e)) => {
            counts.settled += 1;
            tracing::warn!(error = %e, "acknowledgement failed; the source may deliver the message again");
        }
        Poll::Pending => acks.push(answer),
    }
}

fn sweep_every(idle: Duration) -> Duration {
    (idle / 4).clamp(Duration::from_millis(5), Duration::from_secs(1))
}

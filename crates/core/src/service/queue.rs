//! The mailbox's shared state: the bounded queue, the callers waiting for room, the requests
//! taken and not answered, and the deadline bookkeeping, all under one lock.
//!
//! Every open call is in exactly one of three lists, so a scan of the three finds every
//! deadline: `waiting` (the queue was full), `queue` (not taken yet), `taken` (handed to the
//! service). `taken` is pruned lazily: an entry is dropped once its call has ended.
//!
//! No user code runs under the lock: requests, responders and wakers are moved out and
//! dropped or woken after it is released (a request may hold a handle to this very service).

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use super::deadlines::{self, Watched};
use super::reply::{ReplyCell, Responder, Stage, Unanswered};

/// A request and the means to answer it, as queued.
pub(super) struct Envelope<Req, Resp> {
    pub(super) request: Req,
    pub(super) reply: Responder<Resp>,
}

impl<Req, Resp> Envelope<Req, Resp> {
    fn cell(&self) -> Option<&Arc<ReplyCell<Resp>>> {
        self.reply.cell()
    }

    fn is_finished(&self) -> bool {
        self.cell().is_none_or(|cell| cell.is_finished())
    }

    fn is_expired(&self, now: Instant) -> bool {
        self.cell().is_some_and(|cell| cell.is_expired(now))
    }

    fn open_deadline(&self) -> Option<Instant> {
        self.cell().and_then(|cell| cell.open_deadline())
    }
}

/// Whether a caller waits for room when the mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    ForRoom,
    No,
}

/// Why a request was not accepted; the envelope comes back with it.
pub(super) enum Refused {
    Full,
    Stopped,
}

/// `taken` is swept of ended calls when it grows past this, and past twice its live size.
const SWEEP_AT_LEAST: usize = 64;

pub(super) struct Shared<Req, Resp> {
    state: Mutex<State<Req, Resp>>,
    capacity: usize,
    /// This mailbox, for the deadline thread.
    me: Weak<dyn Watched>,
}

struct State<Req, Resp> {
    queue: VecDeque<Envelope<Req, Resp>>,
    waiting: VecDeque<Envelope<Req, Resp>>,
    taken: VecDeque<Arc<ReplyCell<Resp>>>,
    sweep_taken_at: usize,
    /// The incarnation waiting for a request.
    consumer: Option<Waker>,
    /// Every `Mailbox` and `Inbox` is gone: nothing will serve the queue again.
    closed: bool,
    /// Every `ServiceHandle` is gone: no request will come.
    handles_gone: bool,
    /// The tick at which the deadline thread will look at this mailbox, and its instant;
    /// `None` when it will not (no open call has a deadline).
    watch: Option<(u64, Instant)>,
}

impl<Req: Send + 'static, Resp: Send + 'static> Shared<Req, Resp> {
    pub(super) fn new(capacity: usize) -> Arc<Self> {
        Arc::new_cyclic(|me: &Weak<Self>| {
            let me: Weak<dyn Watched> = me.clone();
            Self {
                state: Mutex::new(State {
                    queue: VecDeque::with_capacity(capacity),
                    waiting: VecDeque::new(),
                    taken: VecDeque::new(),
                    sweep_taken_at: SWEEP_AT_LEAST,
                    consumer: None,
                    closed: false,
                    handles_gone: false,
                    watch: None,
                }),
                capacity,
                me,
            }
        })
    }
}

impl<Req, Resp> Shared<Req, Resp> {
    fn lock(&self) -> MutexGuard<'_, State<Req, Resp>> {
        // No user code runs under this lock, so a poisoned one still holds consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This mailbox as the deadline thread and stop watchers hold it.
    pub(super) fn watched(&self) -> Weak<dyn Watched> {
        self.me.clone()
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Requests queued and not yet taken.
    pub(super) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Queues `envelope` (or, with [`Wait::ForRoom`] and a full queue, lines it up for
    /// room), and answers where it went.
    pub(super) fn enqueue(
        &self,
        envelope: Envelope<Req, Resp>,
        wait: Wait,
    ) -> Result<Stage, (Envelope<Req, Resp>, Refused)> {
        let deadline = envelope.open_deadline();
        let (stage, consumer, watch) = {
            let mut state = self.lock();
            if state.closed {
                return Err((envelope, Refused::Stopped));
            }
            let stage = if state.queue.len() < self.capacity && state.waiting.is_empty() {
                state.queue.push_back(envelope);
                Stage::Queued
            } else if wait == Wait::ForRoom {
                state.waiting.push_back(envelope);
                Stage::WaitingForRoom
            } else {
                return Err((envelope, Refused::Full));
            };
            let watch = deadline.and_then(|deadline| state.watch_for(deadline));
            let consumer = match stage {
                Stage::Queued => state.consumer.take(),
                _ => None,
            };
            (stage, consumer, watch)
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        if let Some(tick) = watch {
            deadlines::schedule(tick, self.me.clone());
        }
        Ok(stage)
    }

    /// The consumer's side: the next request, `None` once no handle is left and nothing is
    /// queued.
    pub(super) fn poll_take(&self, cx: &mut Context<'_>) -> Poll<Option<Envelope<Req, Resp>>> {
        let mut state = self.lock();
        if let Some(envelope) = state.queue.pop_front() {
            if let Some(cell) = envelope.cell() {
                state.track_taken(Arc::clone(cell));
            }
            if state.waiting.is_empty() {
                return Poll::Ready(Some(envelope));
            }
            let mut dropped = Vec::new();
            state.admit_waiting(self.capacity, &mut dropped);
            drop(state);
            drop(dropped);
            return Poll::Ready(Some(envelope));
        }
        if state.handles_gone && state.waiting.is_empty() {
            return Poll::Ready(None);
        }
        let stale = match &state.consumer {
            Some(waker) if waker.will_wake(cx.waker()) => None,
            _ => state.consumer.replace(cx.waker().clone()),
        };
        drop(state);
        drop(stale);
        Poll::Pending
    }

    /// A caller waiting for room gave up: its request is withdrawn, unless it was queued
    /// meanwhile (then it is served like any queued request whose caller left).
    pub(super) fn withdraw(&self, cell: &Arc<ReplyCell<Resp>>) {
        let withdrawn = {
            let mut state = self.lock();
            let at = state
                .waiting
                .iter()
                .position(|envelope| envelope.cell().is_some_and(|c| Arc::ptr_eq(c, cell)));
            at.and_then(|at| state.waiting.remove(at))
        };
        drop(withdrawn);
    }

    /// The deadline of the call answered through `cell` has passed on a timer of the caller's
    /// own (the deadline thread does not watch it): fails it as [`Watched::expire`] would.
    /// Waiting for room or queued, its request is withdrawn and dropped here; taken, the
    /// call fails and the service's answer will be refused. A call no longer in any list has
    /// ended, or is being ended by whoever took it out (the mailbox closing): left alone.
    pub(super) fn expire_call(&self, cell: &Arc<ReplyCell<Resp>>) {
        let is_it = |envelope: &Envelope<Req, Resp>| {
            envelope
                .cell()
                .is_some_and(|candidate| Arc::ptr_eq(candidate, cell))
        };
        let mut dropped = Vec::new();
        let (withdrawn, taken, consumer) = {
            let mut state = self.lock();
            if let Some(at) = state.waiting.iter().position(is_it) {
                let withdrawn = state.waiting.remove(at);
                (withdrawn.map(|e| (e, Stage::WaitingForRoom)), false, None)
            } else if let Some(at) = state.queue.iter().position(is_it) {
                let withdrawn = state.queue.remove(at);
                // Its place in the queue is free: the first caller waiting for room takes it.
                let queued_before = state.queue.len();
                state.admit_waiting(self.capacity, &mut dropped);
                let consumer = if state.queue.len() > queued_before {
                    state.consumer.take()
                } else {
                    None
                };
                (withdrawn.map(|e| (e, Stage::Queued)), false, consumer)
            } else {
                let taken = state.taken.iter().any(|c| Arc::ptr_eq(c, cell));
                (None, taken, None)
            }
        };
        if let Some((Envelope { request, reply }, stage)) = withdrawn {
            reply.fail(Unanswered::TimedOut(stage));
            drop(request);
        } else if taken {
            // Refused (and handed back, dropped here) if the answer came first.
            let _ = cell.complete(Err(Unanswered::TimedOut(Stage::Taken)));
        }
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        drop(dropped);
    }

    /// Every `Mailbox` and `Inbox` is gone: queued and waiting requests fail with
    /// `Stopped` (their responders, dropped untaken, say so), and so do later calls.
    pub(super) fn close(&self) {
        let (queue, waiting, consumer) = {
            let mut state = self.lock();
            state.closed = true;
            (
                std::mem::take(&mut state.queue),
                std::mem::take(&mut state.waiting),
                state.consumer.take(),
            )
        };
        drop(queue);
        drop(waiting);
        drop(consumer);
    }

    /// Every `ServiceHandle` is gone: the consumer learns it once the queue is empty.
    pub(super) fn handles_gone(&self) {
        let consumer = {
            let mut state = self.lock();
            state.handles_gone = true;
            state.consumer.take()
        };
        if let Some(consumer) = consumer {
            consumer.wake();
        }
    }
}

impl<Req, Resp> State<Req, Resp> {
    /// Lowers the watch to `deadline` if it is earlier; the tick to schedule, if so.
    fn watch_for(&mut self, deadline: Instant) -> Option<u64> {
        // The common case, under the lock of every call: one comparison.
        if self.watch.is_some_and(|(_, at)| at <= deadline) {
            return None;
        }
        self.set_watch(Some(deadline))
    }

    /// Sets the watch to the tick of `deadline`; that tick, unless it is the current one.
    fn set_watch(&mut self, deadline: Option<Instant>) -> Option<u64> {
        let watch = deadline.map(|deadline| {
            let tick = deadlines::tick_at_or_after(deadline);
            (tick, deadlines::instant_of(tick))
        });
        let changed = watch.map(|(tick, _)| tick) != self.watch.map(|(tick, _)| tick);
        self.watch = watch;
        watch.filter(|_| changed).map(|(tick, _)| tick)
    }

    /// Moves callers waiting for room into the queue, in order, while there is room; those
    /// whose call has ended go to `dropped`.
    fn admit_waiting(&mut self, capacity: usize, dropped: &mut Vec<Envelope<Req, Resp>>) {
        while self.queue.len() < capacity {
            let Some(envelope) = self.waiting.pop_front() else {
                return;
            };
            if envelope.is_finished() {
                dropped.push(envelope);
            } else {
                self.queue.push_back(envelope);
            }
        }
    }

    /// Keeps a taken call where the deadline thread can find it; drops ended ones.
    fn track_taken(&mut self, cell: Arc<ReplyCell<Resp>>) {
        while self.taken.front().is_some_and(|cell| cell.is_finished()) {
            self.taken.pop_front();
        }
        self.taken.push_back(cell);
        if self.taken.len() > self.sweep_taken_at {
            // Calls answered out of order pile up behind a slow one at the front.
            self.taken.retain(|cell| !cell.is_finished());
            self.sweep_taken_at = SWEEP_AT_LEAST.max(2 * self.taken.len());
        }
    }

    /// Moves the expired envelopes of `list` to `expired`, keeping the order of the rest.
    fn extract_expired(
        list: &mut VecDeque<Envelope<Req, Resp>>,
        now: Instant,
        stage: Stage,
        expired: &mut Vec<(Envelope<Req, Resp>, Stage)>,
    ) {
        for _ in 0..list.len() {
            let Some(envelope) = list.pop_front() else {
                break;
            };
            if envelope.is_expired(now) {
                expired.push((envelope, stage));
            } else {
                list.push_back(envelope);
            }
        }
    }

    /// The earliest deadline of a call still open.
    fn earliest_deadline(&self) -> Option<Instant> {
        let queued = self.queue.iter().chain(self.waiting.iter());
        let envelopes = queued.filter_map(Envelope::open_deadline);
        let taken = self.taken.iter().filter_map(|cell| cell.open_deadline());
        envelopes.chain(taken).min()
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Watched for Shared<Req, Resp> {
    fn expire(&self, tick: u64, now: Instant) -> Option<u64> {
        let mut expired = Vec::new();
        let mut taken_expired = Vec::new();
        let mut dropped = Vec::new();
        let (next, consumer) = {
            let mut state = self.lock();
            if state.watch.map(|(current, _)| current) != Some(tick) {
                return None;
            }
            State::extract_expired(&mut state.waiting, now, Stage::WaitingForRoom, &mut expired);
            State::extract_expired(&mut state.queue, now, Stage::Queued, &mut expired);
            state.taken.retain(|cell| {
                if cell.is_expired(now) {
                    taken_expired.push(Arc::clone(cell));
                    return false;
                }
                !cell.is_finished()
            });
            let queued_before = state.queue.len();
            state.admit_waiting(self.capacity, &mut dropped);
            let consumer = if state.queue.len() > queued_before {
                state.consumer.take()
            } else {
                None
            };
            let earliest = state.earliest_deadline();
            // `tick` has just been consumed: the next one must be scheduled even if equal.
            state.watch = None;
            (state.set_watch(earliest), consumer)
        };
        let mut withdrawn = Vec::with_capacity(expired.len());
        for (Envelope { request, reply }, stage) in expired {
            reply.fail(Unanswered::TimedOut(stage));
            withdrawn.push(request);
        }
        for cell in taken_expired {
            let _ = cell.complete(Err(Unanswered::TimedOut(Stage::Taken)));
        }
        if let Some(consumer) = consumer {
            consumer.wake();
        }
        // Withdrawn requests are dropped here, on the deadline thread, one at a time: a
        // panicking `Drop` must not take the others' (or this thread's) fate with it.
        for request in withdrawn {
            let _ = catch_unwind(AssertUnwindSafe(move || drop(request)));
        }
        drop(dropped);
        next
    }

    fn wake_consumer(&self) {
        let consumer = self.lock().consumer.take();
        if let Some(consumer) = consumer {
            consumer.wake();
        }
    }
}

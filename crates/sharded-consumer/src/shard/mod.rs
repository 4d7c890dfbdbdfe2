//! An executor: one task that owns the actors of the keys hashed to it.
//!
//! An actor is an entry in the executor's registry ([`Slot`](slot::Slot)): the key's state,
//! whether a turn is running and, while work waits, its queue of waiting messages and
//! signals. An idle actor is that entry alone: no task, no channel, no timer. When a key has work and its executor has room
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
//!
//! The executor's parts, one file each: [`slot`] (a key's registry entry), [`registry`]
//! (the keys' slots, in many small tables so that none grows in one long pause), [`poll`] (the
//! sources of work), [`intake`] (taking deliveries and requests in), [`schedule`] (running
//! keys), [`settle`] (applying a finished turn), [`sweep`] (idle eviction) and [`shutdown`]
//! (stopping).

mod intake;
mod poll;
mod registry;
mod schedule;
mod settle;
mod shutdown;
mod slot;
mod sweep;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tracing::Instrument;
use wharf_core::transport::Delivery;

use self::registry::Registry;
use self::sweep::sweep_every;
use crate::budget::Budget;
use crate::config::Config;
use crate::mailbox::{Controls, Life};
use crate::stats::{Counts, Metrics, Totals};
use crate::turn::{Done, Request, ShardCtx};
use crate::{Error, Handler, ShardKey};

/// A delivery routed to an executor.
#[derive(Debug)]
pub(crate) enum Inbound {
    Message { key: ShardKey, delivery: Delivery },
    Rejected { delivery: Delivery, reason: String },
}

type Turn<H> = BoxFuture<'static, Done<H>>;
type AckFuture = BoxFuture<'static, Result<(), wharf_core::Error>>;

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
            slots: Registry::new(),
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
}

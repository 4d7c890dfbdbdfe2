//! Running keys: picking a key's next piece of work ([`Work`], requests first), building its
//! turn and polling it once at once, and queueing keys that wait for a concurrency slot.

use std::task::{Context, Poll, Waker};

use futures::stream::FuturesUnordered;
use tracing::Instrument;
use wharf_core::transport::Delivery;

use super::slot::{Backlog, Held, Slot};
use super::{Shard, Turn};
use crate::stats::Counts;
use crate::turn::{self, Done, Request};
use crate::{Handler, ShardKey, StopReason};

/// What a turn is started for.
pub(super) enum Work<H: Handler> {
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

impl<H: Handler> Shard<H> {
    /// Starts the key's next piece of work if it has one and may run; loops while turns
    /// finish inline.
    pub(super) fn run_key(&mut self, mut key: ShardKey) {
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
            if slot.held().is_some_and(|h| h.due_at.is_some()) && slot.requests_waiting() == 0 {
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
    pub(super) fn pump_ready(&mut self) {
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
    pub(super) fn launch(
        &mut self,
        key: ShardKey,
        state: Option<H::State>,
        work: Work<H>,
    ) -> Option<Done<H>> {
        let ctx = self.ctx.clone();
        let turn: Turn<H> = match work {
            Work::Message { delivery, attempt } => {
                let span = crate::trace::message_span(&key, attempt, &delivery);
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

    pub(super) fn start(&mut self, turn: Turn<H>) -> Option<Done<H>> {
        start_turn(&mut self.running, &mut self.busy, turn)
    }
}

/// The key's next piece of work, signals first. A backlog left empty is dropped.
fn next_work<H: Handler>(slot: &mut Slot<H>, counts: &mut Counts) -> Option<Work<H>> {
    let work = next_in(slot.backlog_if_any()?, counts);
    slot.trim();
    work
}

fn next_in<H: Handler>(backlog: &mut Backlog<H>, counts: &mut Counts) -> Option<Work<H>> {
    while let Some(request) = backlog.requests.pop_front() {
        // A caller that gave up (timed out) before its signal started: skip it.
        if !request.is_abandoned() {
            return Some(Work::Request(request));
        }
    }
    if let Some(held) = backlog.held.take() {
        if held.due_at.is_some() {
            backlog.held = Some(held);
            return None;
        }
        let Held {
            delivery,
            attempt,
            dead_letter,
            ..
        } = held;
        return Some(match dead_letter {
            Some(reason) => Work::DeadLetter {
                delivery,
                attempt,
                reason,
            },
            None => Work::Message { delivery, attempt },
        });
    }
    let delivery = backlog.queue.pop_front()?;
    counts.queued -= 1;
    Some(Work::Message {
        delivery,
        attempt: 1,
    })
}

/// Polls a new turn once; a turn that finishes at once is handed back, one that waits
/// joins the running set.
pub(super) fn start_turn<H: Handler>(
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

//! Taking work in: a delivery is queued for its key or started at once when the key is idle
//! (the fast path); a request (signal, start, inspect) joins its key's queue; a retry
//! whose delay passed makes its key runnable again.

use tracing::Instrument;

use super::schedule::{Work, start_turn};
use super::settle::settle_ack;
use super::slot::Slot;
use super::{Inbound, Shard, Turn};
use crate::mailbox::{Answer, Ask, Control, Taken};
use crate::turn::{self, Done, Request};
use crate::{Error, Handler, KeyInfo, Outcome, ShardKey};

impl<H: Handler> Shard<H> {
    /// Queues a delivery for its key, or starts it at once if the key is idle. Gives the
    /// delivery back (`Some`) if the key's queue is full.
    pub(super) fn accept(&mut self, inbound: Inbound) -> Option<Inbound> {
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
                    if slot.queued() >= max_queue {
                        return Some(Inbound::Message { key, delivery });
                    }
                    slot.backlog_mut().queue.push_back(delivery);
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
                let span = crate::trace::message_span(&key, 1, &delivery);
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
                    slot.backlog_mut().queue.push_back(delivery);
                    self.counts.queued += 1;
                    self.slots.insert_new(key.compact(), slot);
                    self.run_key(key);
                    return None;
                }
                slot.busy = true;
                self.slots.insert_new(key.compact(), slot);
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

    pub(super) fn on_control(&mut self, taken: Taken<H>) {
        let (Control { key, ask }, reply) = taken.into_parts();
        match ask {
            Ask::Inspect => {
                let info = self.slots.get(key.as_bytes()).map(|slot| KeyInfo {
                    started: slot.state.is_some() || slot.busy,
                    running: slot.busy,
                    queued: slot.queued(),
                    waiting_retry: slot.held().is_some(),
                    signals_waiting: slot.requests_waiting(),
                });
                let _ = reply.send(Answer::Info(info));
            }
            Ask::Signal(signal) => self.on_request(key, Request::Signal { signal, reply }),
            Ask::Start => self.on_request(key, Request::Start { reply }),
        }
    }

    pub(super) fn on_request(&mut self, key: ShardKey, request: Request<H>) {
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
                self.slots.insert_new(key.compact(), Slot::new(now_ms))
            }
        };
        if slot.requests_waiting() >= max {
            request.fail(Error::SignalQueueFull {
                key: key.to_string(),
                capacity: max,
            });
            return;
        }
        slot.last_active_ms = now_ms;
        slot.backlog_mut().requests.push_back(request);
        self.run_key(key);
    }

    pub(super) fn retry_due(&mut self, key: ShardKey) {
        let now = self.now;
        let Some(slot) = self.slots.get_mut(key.as_bytes()) else {
            return;
        };
        let Some(held) = slot.backlog_if_any().and_then(|b| b.held.as_mut()) else {
            return;
        };
        if held.due_at.is_some_and(|at| at <= now) {
            held.due_at = None;
            self.run_key(key);
        }
    }
}

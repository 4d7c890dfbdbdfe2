//! Stopping an executor: releasing what it received and did not start (newest first, so
//! that the source hands each key's messages out again in order), handing requests on to
//! the next run, stopping every actor, and deciding when the executor is done.

use super::Shard;
use super::slot::Slot;
use crate::{Error, Handler, ShardKey, StopReason};

impl<H: Handler> Shard<H> {
    /// Decides whether the executor is done; `Some` ends it. Sets `progress` when it
    /// started stopping turns, so that they are polled with a real waker before the
    /// executor sleeps.
    pub(super) fn try_finish(&mut self, progress: &mut bool) -> Option<Result<(), Error>> {
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
        for backlog in self.slots.values_mut().filter_map(Slot::backlog_if_any) {
            while let Some(delivery) = backlog.queue.pop_back() {
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
        for (key, slot) in self.slots.iter_mut() {
            let Some(backlog) = slot.backlog_if_any() else {
                continue;
            };
            for request in backlog.requests.drain(..) {
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
            if let Some(held) = slot.backlog_if_any().and_then(|b| b.held.take()) {
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
        for (key, slot) in self.slots.iter_mut() {
            let Some(backlog) = slot.backlog_if_any() else {
                continue;
            };
            for request in backlog.requests.drain(..) {
                self.life.carry(self.index, key.clone(), request);
            }
        }
    }
}

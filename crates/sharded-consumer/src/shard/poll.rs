//! The executor's sources of work, polled once each per round of its loop: finished turns,
//! pending acks, the stop token, the retry and sweep timer, the request mailbox and the
//! inbox of new deliveries (with the deliveries stalled behind a full key queue).

use std::cmp::Reverse;
use std::future::Future;
use std::task::{Context, Poll};

use futures::stream::StreamExt;

use super::{BATCHES_PER_ROUND, Shard};
use crate::Handler;

impl<H: Handler> Shard<H> {
    pub(super) fn poll_turns(&mut self, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn poll_acks(&mut self, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn poll_stop(&mut self, cx: &mut Context<'_>) -> bool {
        if self.cancelled || self.stop.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.cancelled = true;
        tracing::debug!(consumer = %self.config.name, executor = self.index, "stopping: releasing queued messages");
        true
    }

    pub(super) fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn poll_controls(&mut self, cx: &mut Context<'_>) -> bool {
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

    pub(super) fn poll_inbox(&mut self, cx: &mut Context<'_>) -> bool {
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
}

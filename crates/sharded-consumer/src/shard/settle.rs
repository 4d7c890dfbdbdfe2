//! Applying a finished turn to its key: acknowledging the delivery, scheduling a retry or a
//! dead letter when the attempt failed, and stopping the consumer when the dead-letter
//! target refuses a message (so that it comes again rather than being lost).

use std::cmp::Reverse;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use futures::stream::FuturesUnordered;
use wharf_core::transport::Delivery;

use super::slot::{Held, dead_held};
use super::{AckFuture, Shard};
use crate::stats::Counts;
use crate::turn::{self, Done};
use crate::{Error, Handler, Outcome, ShardKey, StopReason};

impl<H: Handler> Shard<H> {
    /// Applies a finished turn to its key; returns the key if it may have more work.
    pub(super) fn apply(&mut self, done: Done<H>) -> Option<ShardKey> {
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
                    slot.backlog_mut().held = Some(held);
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
                slot.backlog_mut().held = Some(Held {
                    delivery,
                    attempt: 0,
                    due_at: Some(self.now + Duration::from_secs(3600)),
                    dead_letter: None,
                });
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
}

/// Acknowledges a delivery. The transport records the ack when `ack()` is called; the future
/// only carries its answer. Local transports (in-memory, Kafka's offset store) answer at
/// once, so the future is polled once here and dropped; one that waits (a network ack) joins
/// the executor's pending acks and stays counted in flight until it answers.
pub(super) fn settle_ack(
    acks: &mut FuturesUnordered<AckFuture>,
    counts: &mut Counts,
    delivery: Delivery,
) {
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

//! The state every handle of one [`MemoryQueue`](super::MemoryQueue) shares.
//!
//! One mutex guards the messages; it is never held across an `.await`. Capacity is a
//! semaphore holding one permit per free slot: publishing takes a permit for good
//! (`forget`), acking gives one back. The semaphore makes waiting publishers first come,
//! first served, and closing it wakes them all with an error.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore, SemaphorePermit};
use tokio::time::Instant;

use super::MemoryQueueStats;
use crate::Error;
use crate::transport::{Message, Receipt};

/// A message the queue holds, with how often it has been delivered.
#[derive(Debug)]
pub(super) struct Entry {
    pub(super) sequence: u64,
    pub(super) message: Message,
    /// Deliveries so far; the next delivery is attempt `deliveries + 1`.
    pub(super) deliveries: u32,
}

/// A nacked entry waiting for its delay to pass. Ordered so that the heap's top is the one
/// due first (ties: publication order).
#[derive(Debug)]
struct Delayed {
    due: Instant,
    entry: Entry,
}

impl Delayed {
    fn key(&self) -> (Instant, u64) {
        (self.due, self.entry.sequence)
    }
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: `BinaryHeap` is a max-heap and we want the earliest due on top.
        other.key().cmp(&self.key())
    }
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Entry>,
    delayed: BinaryHeap<Delayed>,
    in_flight: usize,
    next_sequence: u64,
    closed: bool,
    published: u64,
    delivered: u64,
    acked: u64,
    nacked: u64,
    released: u64,
}

impl State {
    fn held(&self) -> usize {
        self.ready.len() + self.delayed.len() + self.in_flight
    }

    /// Moves every delayed entry whose delay has passed to the back of the ready queue.
    fn promote_due(&mut self, now: Instant) {
        while self.delayed.peek().is_some_and(|d| d.due <= now) {
            if let Some(delayed) = self.delayed.pop() {
                self.ready.push_back(delayed.entry);
            }
        }
    }
}

/// What a source gets when it asks for the next message.
#[derive(Debug)]
pub(super) enum Next {
    /// Deliver this entry (already counted as in flight).
    Deliver(Entry),
    /// Nothing now; wait for a change, or until this instant when a nacked entry falls due.
    Wait(Option<Instant>),
    /// Closed and drained: the source has ended.
    Ended,
}

#[derive(Debug)]
pub(super) struct Shared {
    capacity: usize,
    /// One permit per free slot.
    room: Semaphore,
    state: Mutex<State>,
    /// Wakes waiting sources when a message becomes ready or the queue ends.
    changed: Notify,
}

impl Shared {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            room: Semaphore::new(capacity),
            state: Mutex::new(State::default()),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code panics while holding the lock, so a poisoned lock still holds
        // consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    pub(super) fn room(&self) -> &Semaphore {
        &self.room
    }

    pub(super) fn changed(&self) -> &Notify {
        &self.changed
    }

    pub(super) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.room.close();
        self.changed.notify_waiters();
    }

    /// Enqueues `message` in the slot `permit` reserved.
    pub(super) fn enqueue(
        &self,
        permit: SemaphorePermit<'_>,
        message: Message,
    ) -> Result<Receipt, Error> {
        let sequence = {
            let mut state = self.lock();
            if state.closed {
                // `permit` goes back to the (closed) semaphore when dropped.
                return Err(Error::QueueClosed);
            }
            permit.forget();
            let sequence = state.next_sequence;
            state.next_sequence += 1;
            state.published += 1;
            state.ready.push_back(Entry {
                sequence,
                message,
                deliveries: 0,
            });
            sequence
        };
        self.changed.notify_waiters();
        Ok(Receipt::Memory { sequence })
    }

    pub(super) fn next(&self) -> Next {
        let mut state = self.lock();
        state.promote_due(Instant::now());
        if let Some(mut entry) = state.ready.pop_front() {
            entry.deliveries = entry.deliveries.saturating_add(1);
            state.in_flight += 1;
            state.delivered += 1;
            return Next::Deliver(entry);
        }
        if state.closed && state.held() == 0 {
            return Next::Ended;
        }
        Next::Wait(state.delayed.peek().map(|d| d.due))
    }

    pub(super) fn ack(&self) {
        let drained = {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.acked += 1;
            state.closed && state.held() == 0
        };
        self.room.add_permits(1);
        if drained {
            self.changed.notify_waiters();
        }
    }

    pub(super) fn nack(&self, entry: Entry, delay: Duration) {
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.nacked += 1;
            if delay.is_zero() {
                state.ready.push_back(entry);
            } else {
                let delay = delay.min(super::MemoryQueue::MAX_NACK_DELAY);
                state.delayed.push(Delayed {
                    due: Instant::now() + delay,
                    entry,
                });
            }
        }
        // Waiting sources recompute their deadline, or take the message.
        self.changed.notify_waiters();
    }

    pub(super) fn release(&self, entry: Entry) {
        tracing::debug!(
            sequence = entry.sequence,
            attempt = entry.deliveries,
            "in-memory delivery dropped without ack or nack; queued again at the front"
        );
        {
            let mut state = self.lock();
            state.in_flight = state.in_flight.saturating_sub(1);
            state.released += 1;
            state.ready.push_front(entry);
        }
        self.changed.notify_waiters();
    }

    pub(super) fn stats(&self) -> MemoryQueueStats {
        let state = self.lock();
        MemoryQueueStats {
            capacity: self.capacity,
            queued: state.ready.len(),
            delayed: state.delayed.len(),
            in_flight: state.in_flight,
            published: state.published,
            delivered: state.delivered,
            acked: state.acked,
            nacked: state.nacked,
            released: state.released,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn take(shared: &Shared) -> Entry {
        match shared.next() {
            Next::Deliver(entry) => entry,
            other => panic!("expected a delivery, got {other:?}"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn delayed_entries_fall_due_earliest_first_whatever_the_nack_order() {
        let shared = Shared::new(4);
        let mut taken: Vec<Entry> = (0..3)
            .map(|_| {
                let permit = shared.room().try_acquire().unwrap();
                shared.enqueue(permit, Message::new("m")).unwrap();
                take(&shared)
            })
            .collect();
        let third = taken.pop().unwrap();
        let second = taken.pop().unwrap();
        let first = taken.pop().unwrap();
        shared.nack(first, Duration::from_secs(30));
        shared.nack(second, Duration::from_secs(10));
        shared.nack(third, Duration::from_secs(20));

        assert!(matches!(shared.next(), Next::Wait(Some(_))));
        tokio::time::advance(Duration::from_secs(30)).await;
        let order: Vec<u64> = (0..3).map(|_| take(&shared).sequence).collect();
        assert_eq!(order, [1, 2, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_nack_delay_is_clamped_instead_of_overflowing_the_clock() {
        let shared = Shared::new(1);
        let permit = shared.room().try_acquire().unwrap();
        shared.enqueue(permit, Message::new("m")).unwrap();
        let taken = take(&shared);

        let nacked_at = Instant::now();
        shared.nack(taken, Duration::MAX);

        match shared.next() {
            Next::Wait(Some(due)) => {
                assert_eq!(due - nacked_at, super::super::MemoryQueue::MAX_NACK_DELAY);
            }
            other => panic!("expected to wait for the delay, got {other:?}"),
        }
    }

    #[test]
    fn a_closed_queue_ends_only_once_nothing_is_held() {
        let shared = Shared::new(1);
        let permit = shared.room().try_acquire().unwrap();
        shared.enqueue(permit, Message::new("m")).unwrap();
        shared.close();
        let _in_flight = take(&shared);
        assert!(matches!(shared.next(), Next::Wait(None)));
        shared.ack();
        assert!(matches!(shared.next(), Next::Ended));
    }
}

//! The bound on deliveries in flight, shared by the reading task and the executors.

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// Deliveries received and not yet settled, against the consumer's `max_in_flight`.
///
/// Only the reading task takes (so a load followed by an add cannot overshoot); executors
/// give back in batches. The reader takes in chunks too, so the shared counter is touched
/// about once per batch, not once per message.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
    freed: Notify,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
        }
    }

    /// Takes up to `want` units without waiting; returns how many were taken (0 when full).
    pub(crate) fn take_up_to(&self, want: usize) -> usize {
        let used = self.used.load(Ordering::Acquire);
        let n = self.max.saturating_sub(used).min(want);
        if n > 0 {
            self.used.fetch_add(n, Ordering::AcqRel);
        }
        n
    }

    /// Waits until at least one unit is free.
    pub(crate) async fn wait_for_room(&self) {
        loop {
            let freed = self.freed.notified();
            if self.used.load(Ordering::Acquire) < self.max {
                return;
            }
            freed.await;
        }
    }

    /// Gives back `n` units.
    pub(crate) fn give_back(&self, n: usize) {
        if n == 0 {
            return;
        }
        let before = self.used.fetch_sub(n, Ordering::AcqRel);
        if before >= self.max {
            // `notify_one` keeps a permit if the reader is not waiting yet: no lost wake-up.
            self.freed.notify_one();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

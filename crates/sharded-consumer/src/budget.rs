//! The bound on deliveries in flight, shared by the reading task and the executors.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use metrics::Gauge;
use tokio::sync::Notify;

/// Deliveries received and not yet settled, against the consumer's `max_in_flight`.
///
/// Only the reading task takes (so a load followed by an add cannot overshoot); executors
/// give back in batches. The reader takes in chunks too, so the shared counter is touched
/// about once per batch, not once per message. The reader gives back what it took and did
/// not use before it waits for anything (the source, an executor's inbox), so while the
/// consumer waits the count is exactly the deliveries received and not settled.
///
/// The count is also the [`IN_FLIGHT`](crate::metrics::IN_FLIGHT) gauge, published on every change.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
    freed: Notify,
    gauge: Gauge,
    retired: AtomicBool,
}

impl Budget {
    pub(crate) fn new(max: usize, gauge: Gauge) -> Self {
        gauge.set(0.0);
        Self {
            used: AtomicUsize::new(0),
            max,
            freed: Notify::new(),
            gauge,
            retired: AtomicBool::new(false),
        }
    }

    /// Takes up to `want` units without waiting; returns how many were taken (0 when full).
    pub(crate) fn take_up_to(&self, want: usize) -> usize {
        let used = self.used.load(Ordering::Acquire);
        let n = self.max.saturating_sub(used).min(want);
        if n > 0 {
            self.used.fetch_add(n, Ordering::AcqRel);
            self.publish();
        }
        n
    }

    /// Takes one unit for a delivery already received, and up to `want - 1` more, even at
    /// the limit. The reader calls it for a delivery it waited for after giving back all it
    /// held: only the reader takes, so there was room for it when it started waiting.
    pub(crate) fn take_for_received(&self, want: usize) -> usize {
        let n = self.take_up_to(want);
        if n > 0 {
            return n;
        }
        self.used.fetch_add(1, Ordering::AcqRel);
        self.publish();
        1
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
        self.publish();
        if before >= self.max {
            // `notify_one` keeps a permit if the reader is not waiting yet: no lost wake-up.
            self.freed.notify_one();
        }
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    /// The run is over: the gauge reads 0 from now on, whatever an executor still being
    /// torn down (an aborted run) gives back.
    pub(crate) fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.gauge.set(0.0);
    }

    /// Sets the gauge to the count. The reader and the executors change the count from
    /// different threads; whoever sets the gauge last checks afterwards that the count has
    /// not moved, and sets it again if it has, so the gauge never stays on a stale value.
    fn publish(&self) {
        if self.retired.load(Ordering::Acquire) {
            return;
        }
        let mut value = self.used();
        loop {
            self.gauge.set(value as f64);
            let now = self.used();
            if now == value {
                break;
            }
            value = now;
        }
        // Retired while this was setting it: the run's end has the last word.
        if self.retired.load(Ordering::Acquire) {
            self.gauge.set(0.0);
        }
    }
}

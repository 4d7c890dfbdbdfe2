//! The emitter's counters and failure hook, shared with every pending event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Semaphore;

use crate::EventId;
use crate::config::FailureHook;
use crate::metrics as m;

/// Counters and the failure hook, shared with every pending event.
pub(crate) struct Accounting {
    pub(crate) queue: String,
    pub(crate) emitted: AtomicU64,
    pub(crate) sent: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) requests: AtomicU64,
    pub(crate) callback_panics: AtomicU64,
    pub(crate) hook: Option<FailureHook>,
    pub(crate) permits: Arc<Semaphore>,
    pub(crate) capacity: usize,
    pub(crate) byte_permits: Arc<Semaphore>,
    pub(crate) byte_capacity_kib: usize,
}

impl Accounting {
    pub(crate) fn sent_count(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn on_retry(&self, n: u64) {
        self.retried.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(m::RETRIED, "queue" => self.queue.clone()).increment(n);
    }

    pub(crate) fn on_request(&self, entries: usize) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REQUESTS, "queue" => self.queue.clone()).increment(1);
        metrics::histogram!(m::BATCH_SIZE, "queue" => self.queue.clone()).record(entries as f64);
    }

    /// Counts and logs a panic caught in the application's code (`callback` names which).
    pub(crate) fn on_callback_panic(
        &self,
        callback: &'static str,
        event_id: Option<EventId>,
        message: &str,
    ) {
        self.callback_panics.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CALLBACK_PANICS, "queue" => self.queue.clone(), "callback" => callback)
            .increment(1);
        tracing::error!(
            queue = %self.queue,
            callback,
            event_id = event_id.map(tracing::field::display),
            panic = message,
            "a callback of the webhooks emitter panicked; the panic was caught and counted, \
             the emitter carries on"
        );
    }

    pub(crate) fn buffered(&self) -> u64 {
        self.capacity
            .saturating_sub(self.permits.available_permits()) as u64
    }

    pub(crate) fn update_gauge(&self) {
        metrics::gauge!(m::BUFFERED, "queue" => self.queue.clone()).set(self.buffered() as f64);
    }
}

//! The emitter's counters, failure hook and buffer room, shared with every pending event.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::EventId;
use crate::config::FailureHook;
use crate::metrics as m;
use crate::report::Stats;

/// Counters, the failure hook and the buffer's room, shared with every pending event.
pub(crate) struct Accounting {
    pub(crate) queue: String,
    emitted: AtomicU64,
    sent: AtomicU64,
    retried: AtomicU64,
    failed: AtomicU64,
    requests: AtomicU64,
    callback_panics: AtomicU64,
    pub(crate) hook: Option<FailureHook>,
    permits: Arc<Semaphore>,
    /// The buffer's capacity, in events.
    pub(crate) capacity: usize,
    byte_permits: Arc<Semaphore>,
    /// The buffer's budget, in KiB.
    pub(crate) byte_capacity_kib: usize,
}

/// An event's room in the buffer: one slot and its size in KiB, released when it is resolved.
#[derive(Debug)]
pub(crate) struct Permits {
    _count: OwnedSemaphorePermit,
    _bytes: OwnedSemaphorePermit,
}

impl Accounting {
    /// Counts from zero, for a buffer of `capacity` events and `bytes` bytes.
    pub(crate) fn new(
        queue: String,
        hook: Option<FailureHook>,
        capacity: usize,
        bytes: usize,
    ) -> Self {
        Accounting {
            queue,
            emitted: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            callback_panics: AtomicU64::new(0),
            hook,
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            byte_permits: Arc::new(Semaphore::new(bytes / 1024)),
            byte_capacity_kib: bytes / 1024,
        }
    }

    /// Room for an event of `kib` KiB, if the buffer has it now.
    pub(crate) fn try_room(&self, kib: u32) -> Option<Permits> {
        let count = Arc::clone(&self.permits).try_acquire_owned().ok()?;
        let bytes = Arc::clone(&self.byte_permits)
            .try_acquire_many_owned(kib)
            .ok()?;
        Some(Permits {
            _count: count,
            _bytes: bytes,
        })
    }

    /// Room for an event of `kib` KiB, once the buffer has it (never, if `kib` exceeds the
    /// whole budget: callers bound the wait).
    pub(crate) async fn room(&self, kib: u32) -> Option<Permits> {
        let count = Arc::clone(&self.permits).acquire_owned().await.ok()?;
        let bytes = Arc::clone(&self.byte_permits)
            .acquire_many_owned(kib)
            .await
            .ok()?;
        Some(Permits {
            _count: count,
            _bytes: bytes,
        })
    }

    pub(crate) fn stats(&self) -> Stats {
        Stats {
            emitted: self.emitted.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            requests: self.requests.load(Ordering::Relaxed),
            buffered: self.buffered(),
            callback_panics: self.callback_panics.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn sent_count(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    pub(crate) fn on_emitted(&self) {
        self.emitted.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::EMITTED, "queue" => self.queue.clone()).increment(1);
    }

    pub(crate) fn on_sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::SENT, "queue" => self.queue.clone()).increment(1);
    }

    /// An accepted event failed for good; `reason` is its error's kind.
    pub(crate) fn on_failed(&self, reason: &'static str) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::FAILED, "queue" => self.queue.clone(), "reason" => reason)
            .increment(1);
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

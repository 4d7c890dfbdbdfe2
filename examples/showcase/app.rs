//! What the program's parts share: counters for the progress lines, the ledgers the
//! summary checks, and the clients the ticket job uses.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wharf::producer_ack::Producer as AuditProducer;
use wharf::webhooks_emitter::Emitter;

/// What the program saw happen, stage by stage.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) produce_queued: AtomicU64,
    pub(crate) produced: AtomicU64,
    pub(crate) produce_failed: AtomicU64,
    pub(crate) consumed: AtomicU64,
    pub(crate) redelivered: AtomicU64,
    pub(crate) out_of_order: AtomicU64,
    pub(crate) enqueued: AtomicU64,
    pub(crate) enqueue_duplicates: AtomicU64,
    pub(crate) jobs_done: AtomicU64,
    pub(crate) job_retries: AtomicU64,
    pub(crate) events: AtomicU64,
    pub(crate) audit_acks: AtomicU64,
    pub(crate) worker_b_starts: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// Per-order progress of the ticket job (its steps are idempotent: a retried or re-run job
/// skips what an earlier attempt finished).
#[derive(Debug, Default, Clone)]
pub(crate) struct TicketProgress {
    pub(crate) webhook: bool,
    /// What `emit_sync` confirmed: the event id and SQS's MessageId, quoted when the event is
    /// then missing from the queue (to tell a lost event from a missed read-back).
    pub(crate) webhook_receipt: Option<String>,
    pub(crate) audit: bool,
    pub(crate) issued: u32,
}

#[derive(Debug)]
pub(crate) struct App {
    pub(crate) emitter: Emitter,
    pub(crate) audit: AuditProducer,
    pub(crate) counters: Counters,
    pub(crate) produced: Mutex<BTreeSet<u64>>,
    pub(crate) failed_produce: Mutex<BTreeMap<u64, String>>,
    pub(crate) tickets: Mutex<HashMap<u64, TicketProgress>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

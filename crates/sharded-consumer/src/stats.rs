//! Counters and gauges: atomics for [`Stats`] snapshots, and the `metrics` facade.
//!
//! Executors count in plain local fields ([`Counts`]) and publish them in one go at the end
//! of each scheduling round, so the per-message path touches no shared cache line.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use metrics::{Counter, Gauge, counter, gauge};

use crate::metrics as names;

/// A snapshot of a consumer's counts, from [`ShardedConsumer::stats`](crate::ShardedConsumer::stats).
///
/// Totals count since the consumer was built, across its runs. The same figures go to the
/// `metrics` facade (their names are in [`metrics`](crate::metrics)).
#[non_exhaustive]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Keys with an actor in the registry now (running, queued, waiting, or idle).
    pub active_keys: u64,
    /// Deliveries received and not yet settled: exact while the consumer waits (0 when it
    /// is idle or not running); while the reader is taking a burst from the source it may
    /// also count up to `batch_size` units the reader has reserved for deliveries it is
    /// about to take.
    pub in_flight: u64,
    /// Messages waiting behind their key's current message.
    pub queued: u64,
    /// Actors started (`init` succeeded).
    pub started: u64,
    /// Actors stopped for being idle.
    pub evicted: u64,
    /// Actors stopped by [`Outcome::Stop`](crate::Outcome::Stop).
    pub stopped: u64,
    /// Actors restarted after a failure (`Err` or panic).
    pub restarts: u64,
    /// Messages scheduled for another attempt.
    pub retries: u64,
    /// Messages dead-lettered (published or discarded), undecodable keys included.
    pub dead_lettered: u64,
    /// Messages acknowledged after the handler's answer.
    pub acked: u64,
    /// Messages whose key could not be decoded (also counted in `dead_lettered`).
    pub rejected_keys: u64,
    /// The deepest key queue seen at the last registry sweep.
    pub max_key_queue_depth: u64,
}

/// What changed in one executor since its last flush.
#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) active: i64,
    pub(crate) queued: i64,
    pub(crate) started: u64,
    pub(crate) evicted: u64,
    pub(crate) stopped: u64,
    pub(crate) restarts: u64,
    pub(crate) retries: u64,
    pub(crate) dead_lettered: u64,
    pub(crate) acked: u64,
    pub(crate) rejected: u64,
    pub(crate) settled: usize,
}

/// The consumer's totals, shared by its executors and read by [`Stats`] snapshots.
#[derive(Debug, Default)]
pub(crate) struct Totals {
    active: AtomicI64,
    queued: AtomicI64,
    started: AtomicU64,
    evicted: AtomicU64,
    stopped: AtomicU64,
    restarts: AtomicU64,
    retries: AtomicU64,
    dead_lettered: AtomicU64,
    acked: AtomicU64,
    rejected: AtomicU64,
    max_depth: AtomicU64,
}

/// Handles of the consumer's metrics, labelled with its name; registered when a run starts
/// so that a recorder installed after `build` is used.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    active: Gauge,
    queued: Gauge,
    pub(crate) in_flight: Gauge,
    max_depth: Gauge,
    started: Counter,
    evicted: Counter,
    stopped: Counter,
    restarts: Counter,
    retries: Counter,
    dead_lettered: Counter,
    acked: Counter,
    rejected: Counter,
    pub(crate) source_errors: Counter,
}

impl Metrics {
    pub(crate) fn new(consumer: &str) -> Self {
        let label = || [("consumer", consumer.to_owned())];
        Self {
            active: gauge!(names::KEYS_ACTIVE, &label()),
            queued: gauge!(names::QUEUED_MESSAGES, &label()),
            in_flight: gauge!(names::IN_FLIGHT, &label()),
            max_depth: gauge!(names::KEY_QUEUE_DEPTH_MAX, &label()),
            started: counter!(names::KEYS_STARTED, &label()),
            evicted: counter!(names::KEYS_EVICTED, &label()),
            stopped: counter!(names::KEYS_STOPPED, &label()),
            restarts: counter!(names::KEY_RESTARTS, &label()),
            retries: counter!(names::RETRIES, &label()),
            dead_lettered: counter!(names::DEAD_LETTERED, &label()),
            acked: counter!(names::ACKED, &label()),
            rejected: counter!(names::REJECTED_KEYS, &label()),
            source_errors: counter!(names::SOURCE_ERRORS, &label()),
        }
    }
}

impl Totals {
    /// Adds `counts` to the totals and the metrics, and zeroes it.
    pub(crate) fn flush(&self, counts: &mut Counts, metrics: &Metrics) {
        let c = std::mem::take(counts);
        fn add(a: &AtomicU64, c: &Counter, n: u64) {
            if n > 0 {
                a.fetch_add(n, Ordering::Relaxed);
                c.increment(n);
            }
        }
        fn shift(a: &AtomicI64, g: &Gauge, n: i64) {
            if n != 0 {
                a.fetch_add(n, Ordering::Relaxed);
                g.increment(n as f64);
            }
        }
        shift(&self.active, &metrics.active, c.active);
        shift(&self.queued, &metrics.queued, c.queued);
        add(&self.started, &metrics.started, c.started);
        add(&self.evicted, &metrics.evicted, c.evicted);
        add(&self.stopped, &metrics.stopped, c.stopped);
        add(&self.restarts, &metrics.restarts, c.restarts);
        add(&self.retries, &metrics.retries, c.retries);
        add(&self.dead_lettered, &metrics.dead_lettered, c.dead_lettered);
        add(&self.acked, &metrics.acked, c.acked);
        add(&self.rejected, &metrics.rejected, c.rejected);
    }

    /// Records the deepest key queue an executor saw at its sweep.
    pub(crate) fn record_depth(&self, depth: u64, metrics: &Metrics) {
        self.max_depth.store(depth, Ordering::Relaxed);
        metrics.max_depth.set(depth as f64);
    }

    pub(crate) fn snapshot(&self, in_flight: usize) -> Stats {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let gauge = |a: &AtomicI64| u64::try_from(a.load(Ordering::Relaxed)).unwrap_or(0);
        Stats {
            active_keys: gauge(&self.active),
            in_flight: in_flight as u64,
            queued: gauge(&self.queued),
            started: get(&self.started),
            evicted: get(&self.evicted),
            stopped: get(&self.stopped),
            restarts: get(&self.restarts),
            retries: get(&self.retries),
            dead_lettered: get(&self.dead_lettered),
            acked: get(&self.acked),
            rejected_keys: get(&self.rejected),
            max_key_queue_depth: get(&self.max_depth),
        }
    }
}

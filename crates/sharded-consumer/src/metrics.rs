//! The names of the metrics this crate records, through the
//! [`metrics`](https://docs.rs/metrics) facade (install any `metrics` recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost next to nothing).
//!
//! Every metric carries one label, `consumer`: the name given to
//! [`ShardedConsumer::builder`](crate::ShardedConsumer::builder). The handles are registered
//! when a run starts, so a recorder installed after `build` is used. Executors count in
//! plain fields and publish once per scheduling round, so a figure may lag its cause by one
//! round. Every figure but [`SOURCE_ERRORS`] is also in
//! [`ShardedConsumer::stats`](crate::ShardedConsumer::stats) ([`Stats`](crate::Stats)). The
//! guide (`docs/sharded-consumer.md`, "Metrics and tracing") has them in one table.

/// Gauge, in keys: keys with an actor in the registry now (running, queued, waiting for a
/// retry, or idle and not yet evicted). [`Stats::active_keys`](crate::Stats::active_keys).
///
/// Labels: `consumer`.
pub const KEYS_ACTIVE: &str = "wharf_sharded_keys_active";

/// Gauge, in deliveries: deliveries received from the source and not settled (running,
/// queued behind their key, waiting for a retry, or acked and not yet confirmed). Exact
/// while the consumer waits, 0 when it is idle; while the reader takes a burst it may also
/// count up to `batch_size` units the reader reserved. Bounded by `max_in_flight`.
/// [`Stats::in_flight`](crate::Stats::in_flight).
///
/// Labels: `consumer`.
pub const IN_FLIGHT: &str = "wharf_sharded_in_flight";

/// Gauge, in messages: messages waiting behind their key's current message.
/// [`Stats::queued`](crate::Stats::queued).
///
/// Labels: `consumer`.
pub const QUEUED_MESSAGES: &str = "wharf_sharded_queued_messages";

/// Gauge, in messages: the deepest key queue seen at the latest registry sweep (each
/// executor sweeps its own keys every `idle_timeout / 4`, at most every second; there is
/// no sweep without an idle timeout).
/// [`Stats::max_key_queue_depth`](crate::Stats::max_key_queue_depth).
///
/// Labels: `consumer`.
pub const KEY_QUEUE_DEPTH_MAX: &str = "wharf_sharded_key_queue_depth_max";

/// Counter, in actors: actors started (`init` succeeded).
/// [`Stats::started`](crate::Stats::started).
///
/// Labels: `consumer`.
pub const KEYS_STARTED: &str = "wharf_sharded_keys_started_total";

/// Counter, in actors: actors stopped for being idle past `idle_timeout`.
/// [`Stats::evicted`](crate::Stats::evicted).
///
/// Labels: `consumer`.
pub const KEYS_EVICTED: &str = "wharf_sharded_keys_evicted_total";

/// Counter, in actors: actors stopped because the handler answered
/// [`Outcome::Stop`](crate::Outcome::Stop). [`Stats::stopped`](crate::Stats::stopped).
///
/// Labels: `consumer`.
pub const KEYS_STOPPED: &str = "wharf_sharded_keys_stopped_total";

/// Counter, in restarts: actors restarted after a failure (an `Err`, a panic, or a call
/// past `handler_timeout`). [`Stats::restarts`](crate::Stats::restarts).
///
/// Labels: `consumer`.
pub const KEY_RESTARTS: &str = "wharf_sharded_key_restarts_total";

/// Counter, in messages: messages scheduled for another attempt (after
/// [`Outcome::Retry`](crate::Outcome::Retry) or a failure).
/// [`Stats::retries`](crate::Stats::retries).
///
/// Labels: `consumer`.
pub const RETRIES: &str = "wharf_sharded_retries_total";

/// Counter, in messages: messages dead-lettered (published to the dead-letter target, or
/// discarded with `discard_dead_letters`), undecodable keys included.
/// [`Stats::dead_lettered`](crate::Stats::dead_lettered).
///
/// Labels: `consumer`.
pub const DEAD_LETTERED: &str = "wharf_sharded_dead_lettered_total";

/// Counter, in messages: messages acknowledged after the handler answered `Ack` or `Stop`.
/// [`Stats::acked`](crate::Stats::acked).
///
/// Labels: `consumer`.
pub const ACKED: &str = "wharf_sharded_acked_total";

/// Counter, in messages: messages whose key could not be decoded (also counted in
/// [`DEAD_LETTERED`]). [`Stats::rejected_keys`](crate::Stats::rejected_keys).
///
/// Labels: `consumer`.
pub const REJECTED_KEYS: &str = "wharf_sharded_rejected_keys_total";

/// Counter, in errors: errors the source returned when asked for the next delivery (the
/// reader pauses briefly and asks again). Not in [`Stats`](crate::Stats).
///
/// Labels: `consumer`.
pub const SOURCE_ERRORS: &str = "wharf_sharded_source_errors_total";

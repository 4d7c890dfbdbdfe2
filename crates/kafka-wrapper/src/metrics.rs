//! The names of the metrics this crate records, through the
//! [`metrics`](https://docs.rs/metrics) facade (install any `metrics` recorder, e.g. a
//! Prometheus exporter, to collect them; without one they cost next to nothing).
//!
//! Labels carry the names given to producers and consumers ([`ProducerSpec::new`],
//! [`ConsumerSpec::group`](crate::ConsumerSpec::group)), topics and partitions; never a
//! broker address or a credential. Each constant's doc opens with the metric's type and
//! unit and ends with its labels; the guide (`docs/kafka-wrapper.md`, "Metrics and
//! tracing") has them in one table, which a test checks against these docs, and says how
//! they fit with the logs.
//!
//! [`ProducerSpec::new`]: crate::ProducerSpec::new

/// Counter, in rebuilds: the wrapper tore its clients down to build them again (a fatal
/// client error, no broker reachable for `unreachable_after`, a stalled consumer, or
/// [`force_rebuild`](crate::KafkaWrapper::force_rebuild)). Recorded once the old generation
/// is down, before the backoff.
///
/// No labels.
pub const REBUILDS: &str = "wharf_kafka_rebuilds_total";

/// Gauge, in generations: the number of the generation of clients running now (0 is the
/// first; see [`WrapperState::Running`](crate::WrapperState::Running)). Set when a
/// generation is built.
///
/// No labels.
pub const GENERATION: &str = "wharf_kafka_generation";

/// Counter, in messages: messages the broker acknowledged, counted from librdkafka's
/// delivery reports (whichever call sent them).
///
/// Labels: `producer`.
pub const PRODUCED: &str = "wharf_kafka_produced_total";

/// Counter, in messages: messages whose delivery report is an error (including those
/// purged from a client torn down by a rebuild, which may then be sent again: see
/// [`RESENT_AFTER_REBUILD`]).
///
/// Labels: `producer`.
pub const PRODUCE_FAILED: &str = "wharf_kafka_produce_failed_total";

/// Counter, in messages: messages purged by a rebuild and sent again through the next
/// client (the caller sees one receipt; the broker may hold two copies if it had taken the
/// first).
///
/// Labels: `producer`.
pub const RESENT_AFTER_REBUILD: &str = "wharf_kafka_resent_after_rebuild_total";

/// Gauge, in messages: how far a consumer is behind the partition's high watermark, one
/// series per assigned partition (the high watermark minus the consumer's position). Set
/// after each health check that could read the watermarks.
///
/// Labels: `consumer`, `topic`, `partition`.
pub const CONSUMER_LAG: &str = "wharf_kafka_consumer_lag";

/// Counter, in handler calls: a message or batch is to be handled again after a delay
/// ([`Outcome::Retry`](crate::Outcome::Retry), or a failed call under the
/// [`RetryPolicy`](crate::RetryPolicy)).
///
/// Labels: `consumer`.
pub const HANDLER_RETRIES: &str = "wharf_kafka_handler_retries_total";

/// Counter, in messages: messages sent to the consumer's dead-letter topic.
///
/// Labels: `consumer`.
pub const DEAD_LETTERED: &str = "wharf_kafka_dead_lettered_total";

/// Counter, in handler calls: calls that failed without answering, by label `reason`:
/// `panic` (the handler panicked) or `deadline` (it overran
/// [`handler_timeout`](crate::ConsumerSpec::handler_timeout)).
///
/// Labels: `consumer`, `reason`.
pub const HANDLER_FAILURES: &str = "wharf_kafka_handler_failures_total";

/// Counter, in reports: librdkafka reported that none of a client's brokers is reachable
/// (`AllBrokersDown`). The wrapper rebuilds only once that lasts `unreachable_after`. Label
/// `client` is the producer's or consumer's name, or `admin`.
///
/// Labels: `client`.
pub const ALL_BROKERS_DOWN: &str = "wharf_kafka_all_brokers_down_total";

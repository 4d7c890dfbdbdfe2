//! # wharf
//!
//! The umbrella crate of the wharf workspace: Erlang/OTP-grade supervision and honest
//! delivery guarantees for services that talk to message brokers.
//!
//! This crate provides:
//! - [`core`]: supervisors, restart-surviving handles, the `Publisher`/`Source` transport
//!   traits and an in-memory transport (always on; it is `wharf-core`).
//!
//! - [`webhooks_emitter`] (feature `webhooks-emitter`): webhook events into AWS SQS.
//! - [`producer_ack`] (feature `producer-ack`): a Pulsar producer with receipts and ack-later.
//! - [`kafka_wrapper`] (feature `kafka-wrapper`): supervised Kafka producers and consumers.
//! - [`sharded_consumer`] (feature `sharded-consumer`): one ordered, stateful actor per key.
//! - [`job_partition`] (feature `job-partition`): Redis-backed jobs with partitions and keys.
//! - [`console`] (feature `console`): the operator's web console (jobs, supervision tree).
//!
//! Each capability crate is re-exported behind a feature of the same name (`full` enables
//! them all), so a service can depend on `wharf` with the features it needs, or on one
//! focused crate directly. `examples/showcase/` composes all of them. The feature `otel`
//! turns on W3C trace context through the brokers in every enabled crate that carries it
//! (`wharf::core::trace`).
#![cfg_attr(docsrs, feature(doc_cfg))]

#[doc(inline)]
pub use wharf_core as core;

/// Webhook events into AWS SQS (`wharf-webhooks-emitter`).
#[cfg(feature = "webhooks-emitter")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhooks-emitter")))]
#[doc(inline)]
pub use wharf_webhooks_emitter as webhooks_emitter;

/// A Pulsar producer that reports every message's outcome (`wharf-producer-ack`).
#[cfg(feature = "producer-ack")]
#[cfg_attr(docsrs, doc(cfg(feature = "producer-ack")))]
#[doc(inline)]
pub use wharf_producer_ack as producer_ack;

/// Supervised Kafka producers and consumers (`wharf-kafka-wrapper`).
#[cfg(feature = "kafka-wrapper")]
#[cfg_attr(docsrs, doc(cfg(feature = "kafka-wrapper")))]
#[doc(inline)]
pub use wharf_kafka_wrapper as kafka_wrapper;

/// One stateful, ordered actor per sharding key (`wharf-sharded-consumer`).
#[cfg(feature = "sharded-consumer")]
#[cfg_attr(docsrs, doc(cfg(feature = "sharded-consumer")))]
#[doc(inline)]
pub use wharf_sharded_consumer as sharded_consumer;

/// Redis-backed jobs with partitions, keys and cancellation (`wharf-job-partition`).
#[cfg(feature = "job-partition")]
#[cfg_attr(docsrs, doc(cfg(feature = "job-partition")))]
#[doc(inline)]
pub use wharf_job_partition as job_partition;

/// The operator's web console, an axum `Router` to mount (`wharf-console`).
#[cfg(feature = "console")]
#[cfg_attr(docsrs, doc(cfg(feature = "console")))]
#[doc(inline)]
pub use wharf_console as console;

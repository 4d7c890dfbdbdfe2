//! One incarnation of a producer: a librdkafka producer and its delivery-report context.

use std::time::Duration;

use futures::channel::oneshot;
use rdkafka::ClientContext;
use rdkafka::Message as _;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer as _, ProducerContext, ThreadedProducer};

use super::completion::{Completion, outcome};
use super::{PRODUCER_DEFAULTS, ProducerSpec};
use crate::config::KafkaConfig;
use crate::error::{Error, Result};
use crate::health::HealthContext;
use crate::log_gate::gated_warn;
use crate::message::{Delivered, Record};

/// How long a retiring client gets to report the records it purged (librdkafka reports
/// them at once; this only bounds a stuck client).
const PURGE_REPORTS: Duration = Duration::from_secs(2);

/// librdkafka context of a wrapper producer: health reporting plus delivery reports.
pub(crate) struct ProducerCtx {
    pub(crate) base: HealthContext,
    pub(super) delivered: metrics::Counter,
    pub(super) failed: metrics::Counter,
}

impl ClientContext for ProducerCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        self.base.log(level, fac, message);
    }
    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ProducerContext for ProducerCtx {
    type DeliveryOpaque = Box<Completion>;

    fn delivery(&self, result: &DeliveryResult<'_>, completion: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(m) => {
                self.delivered.increment(1);
                Ok((m.partition(), m.offset()))
            }
            Err((e, m)) => {
                self.failed.increment(1);
                tracing::debug!(producer = %self.base.name, topic = m.topic(), error = %e, "delivery failed");
                Err(e.clone())
            }
        };
        completion.complete(outcome);
    }
}

/// One incarnation of a producer: a librdkafka client with its polling thread.
pub(crate) struct ProducerInstance {
    pub(crate) producer: ThreadedProducer<ProducerCtx>,
}

impl ProducerInstance {
    pub(crate) fn build(
        config: &KafkaConfig,
        spec: &ProducerSpec,
        base: HealthContext,
    ) -> Result<Self> {
        let cc = config.client_config(PRODUCER_DEFAULTS, &spec.overrides);
        let name = spec.name.clone();
        let ctx = ProducerCtx {
            base,
            delivered: metrics::counter!(crate::metrics::PRODUCED, "producer" => name.clone()),
            failed: metrics::counter!(crate::metrics::PRODUCE_FAILED, "producer" => name),
        };
        let producer = cc.create_with_context(ctx).map_err(Error::Config)?;
        Ok(Self { producer })
    }

    /// Queues one record; `Err` gives the completion back with the reason.
    pub(super) fn try_enqueue(
        &self,
        record: &Record,
        mut completion: Box<Completion>,
    ) -> std::result::Result<(), (KafkaError, Box<Completion>)> {
        completion.arm(true);
        let mut br: BaseRecord<'_, [u8], [u8], Box<Completion>> =
            BaseRecord::with_opaque_to(&record.topic, completion).payload(record.payload.as_ref());
        if let Some(k) = &record.key {
            br = br.key(k.as_ref());
        }
        if let Some(p) = record.partition {
            br = br.partition(p);
        }
        if let Some(ts) = record.timestamp_ms {
            br = br.timestamp(ts);
        }
        if let Some(h) = record.owned_headers() {
            br = br.headers(h);
        }
        self.producer.send(br).map_err(|(e, br)| {
            let mut completion = br.delivery_opaque;
            completion.arm(false);
            (e, completion)
        })
    }

    /// Sends one record and waits for its receipt (no queue-full waiting: internal use).
    pub(crate) async fn send_one(&self, record: &Record) -> Result<Delivered> {
        let (tx, rx) = oneshot::channel();
        self.try_enqueue(record, Box::new(Completion::Await(tx)))
            .map_err(|(source, _)| Error::Enqueue {
                topic: record.topic.clone(),
                source,
            })?;
        outcome(rx, record, &mut None).await
    }

    /// Waits for queued messages to be delivered, up to `grace`; then the instance can go.
    pub(crate) fn flush(&self, grace: Duration) {
        if let Err(e) = self.producer.flush(grace) {
            gated_warn!(self.producer.context().base.gate, "producer flush incomplete; the undelivered records are purged (sent again through the next client, or failed)", error = %e, in_flight = self.producer.in_flight_count());
        }
    }

    /// Takes the instance out of service: waits up to `grace` for queued records to be
    /// delivered, then purges the rest and waits for their reports, so that every record it
    /// held has an outcome (or is waiting for the next client) before the next client is
    /// installed. Nothing reported later could keep its order against newer records.
    pub(crate) fn retire(&self, grace: Duration) {
        self.flush(grace);
        if self.producer.in_flight_count() == 0 {
            return;
        }
        self.producer
            .purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
        if self.producer.flush(PURGE_REPORTS).is_err() {
            gated_warn!(
                self.producer.context().base.gate,
                "purged records still unreported; they are sent again when reported, possibly after newer ones",
                left = self.producer.in_flight_count()
            );
        }
    }
}

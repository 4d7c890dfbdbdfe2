//! The clients of the brokers, each configured as the showcase needs it, and the names of
//! this run's topics and queues (unique per run, so runs against one broker never meet).

use std::time::{Duration, Instant};

use wharf::core::supervisor::ChildSpec;
use wharf::job_partition::{Config as JobsConfig, Jobs};
use wharf::kafka_wrapper::{KafkaConfig, KafkaWrapper, TopicSpec};
use wharf::producer_ack::{OnReconnect, Producer as AuditProducer};
use wharf::webhooks_emitter::aws_sdk_sqs;
use wharf::webhooks_emitter::{Emitter, FullPolicy};

use crate::brokers::{Brokers, sqs_client};
use crate::cli::Args;
use crate::{BoxError, ORDER_PARTITIONS, PARTITION, QUEUE};

/// This run's topics and group names.
#[derive(Debug)]
pub(crate) struct Names {
    pub(crate) run_id: String,
    pub(crate) orders_topic: String,
    pub(crate) dead_topic: String,
    pub(crate) audit_topic: String,
}

impl Names {
    pub(crate) fn new(t0: Instant) -> Self {
        let run_id = format!("{}-{}", std::process::id(), t0.elapsed().subsec_nanos());
        Self {
            orders_topic: format!("showcase-orders-{run_id}"),
            dead_topic: format!("showcase-orders-dead-{run_id}"),
            audit_topic: format!("persistent://public/default/showcase-audit-{run_id}"),
            run_id,
        }
    }
}

/// The clients, connected; the topics, queue and job queue ready. (`connect` hands the
/// audit producer's child spec beside them, for the tree.)
pub(crate) struct Clients {
    pub(crate) kafka: KafkaWrapper,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) queue_url: String,
    pub(crate) emitter: Emitter,
    pub(crate) audit: AuditProducer,
    /// For the read-back, subscribed before anything is produced.
    pub(crate) pulsar_client: pulsar::Pulsar<pulsar::TokioExecutor>,
    pub(crate) jobs: Jobs,
}

pub(crate) async fn connect(
    args: &Args,
    brokers: &Brokers,
    names: &Names,
) -> Result<(Clients, ChildSpec), BoxError> {
    // A short session makes the group's first join quick. With `--chaos` the broker is
    // killed: a session longer than that outage keeps the members in the group across it,
    // which Tansu 0.6 needs (its coordinator can lose a group whose members are replaced
    // at a crash: see docs/kafka-wrapper.md, "Known limits").
    let session_ms = if args.chaos { "30000" } else { "6000" };
    let kafka =
        KafkaWrapper::start(KafkaConfig::new(&brokers.kafka).set("session.timeout.ms", session_ms))
            .await?;
    kafka
        .admin()
        .ensure_topics(&[
            TopicSpec::new(&names.orders_topic, ORDER_PARTITIONS),
            TopicSpec::new(&names.dead_topic, 1),
        ])
        .await?;

    let sqs = sqs_client(&brokers.sqs, args.sqs.is_some());
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("showcase-webhooks-{}", names.run_id))
        .send()
        .await
        .map_err(|e| format!("CreateQueue at {} failed: {e:?}", brokers.sqs))?
        .queue_url()
        .ok_or("CreateQueue returned no queue URL")?
        .to_owned();
    let emitter = Emitter::builder()
        .client(sqs.clone())
        .queue_url(&queue_url)
        .full_policy(FullPolicy::Wait(Duration::from_secs(10)))
        .request_timeout(Duration::from_secs(2))
        .sync_timeout(Duration::from_secs(5))
        .build()?;

    let (audit, audit_spec) = AuditProducer::builder(&brokers.pulsar, &names.audit_topic)
        .producer_name(format!("showcase-audit-{}", names.run_id))
        .send_timeout(Duration::from_secs(30))
        .window(1000)
        .on_reconnect(OnReconnect::Resend)
        .reconnect_backoff(Duration::from_millis(50), Duration::from_secs(1))
        .supervised("audit")?;
    // Subscribe the read-back consumer before anything is produced.
    let pulsar_client = pulsar::Pulsar::builder(&brokers.pulsar, pulsar::TokioExecutor)
        .build()
        .await
        .map_err(|e| format!("Pulsar client for the read-back at {}: {e}", brokers.pulsar))?;

    // A 5 s lease must cover the lease margin (1 s), one heartbeat that times out and two
    // heartbeat intervals: a 2 s response timeout leaves room (the default 5 s would not).
    let jobs =
        Jobs::connect(JobsConfig::new(&brokers.redis).response_timeout(Duration::from_secs(2)))
            .await?;
    jobs.purge(PARTITION, QUEUE).await?;

    let clients = Clients {
        kafka,
        sqs,
        queue_url,
        emitter,
        audit,
        pulsar_client,
        jobs,
    };
    Ok((clients, audit_spec))
}

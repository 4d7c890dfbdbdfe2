//! Building a `pulsar` client and producer from the builder's settings, and telling the
//! errors reconnecting cannot fix.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use pulsar::error::{ConnectionError, ProducerError, ServiceDiscoveryError};
use pulsar::executor::{Delay, ExecutorKind, Interval, JoinHandle};
use pulsar::{Executor, Pulsar, TokioExecutor};
use tokio::sync::watch;

use crate::config::ProducerBuilder;

/// The `pulsar` crate's keep-alive period: also what tells its connections apart from its
/// other intervals (the client's 60 s clean-up), see [`Watched`].
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const _: () = assert!(
    KEEP_ALIVE.as_secs() != 60,
    "must differ from the crate's clean-up interval"
);

/// A client and producer of one incarnation, and the count of the connections their client
/// opened (see [`Watched`]).
pub(super) type Connected = (
    Pulsar<Watched>,
    pulsar::Producer<Watched>,
    watch::Receiver<u64>,
);

/// Tokio's executor, counting the connections the `pulsar` crate opens.
///
/// The crate re-connects and re-creates a lost producer by itself, silently, and holds
/// wharf's pings and sends behind that re-creation; a re-creation that ends before a ping's
/// limit would pass for a healthy connection. What it cannot do without wharf seeing it is
/// open a connection: the crate starts exactly one keep-alive interval (of
/// `ConnectionRetryOptions::keep_alive`) per connection it opens (pulsar 6.9,
/// `ConnectionManager::connect`), on the client's executor. A count that grows after the
/// producer was created means the crate replaced a connection it lost. The broker tests
/// (`tests/faults.rs`, the silent re-creation) fail if a new version of the crate stops doing
/// so.
#[derive(Clone)]
pub(super) struct Watched {
    connections: watch::Sender<u64>,
}

impl Executor for Watched {
    fn spawn(&self, f: Pin<Box<dyn Future<Output = ()> + Send>>) -> Result<(), ()> {
        TokioExecutor.spawn(f)
    }

    fn spawn_blocking<F, Res>(&self, f: F) -> JoinHandle<Res>
    where
        F: FnOnce() -> Res + Send + 'static,
        Res: Send + 'static,
    {
        TokioExecutor.spawn_blocking(f)
    }

    fn interval(&self, duration: Duration) -> Interval {
        if duration == KEEP_ALIVE {
            self.connections.send_modify(|n| *n += 1);
        }
        TokioExecutor.interval(duration)
    }

    fn delay(&self, duration: Duration) -> Delay {
        TokioExecutor.delay(duration)
    }

    fn kind(&self) -> ExecutorKind {
        ExecutorKind::Tokio
    }
}

/// The `pulsar` crate's per-message receipt timeout: a fraction of the send timeout, so a
/// connection that swallows receipts is detected (and the messages re-sent on a new one)
/// well before the messages themselves time out.
fn operation_timeout(config: &ProducerBuilder) -> Duration {
    (config.send_timeout / 2).clamp(Duration::from_millis(500), Duration::from_secs(30))
}

/// A fresh client and producer; the receiver counts the connections the client opened, and
/// changes when the client opens another one.
pub(super) async fn connect(config: &ProducerBuilder) -> Result<Connected, pulsar::Error> {
    let (connections, opened) = watch::channel(0);
    let executor = Watched { connections };
    let mut builder = Pulsar::builder(config.service_url.clone(), executor)
        .with_connection_retry_options(pulsar::ConnectionRetryOptions {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(200),
            // wharf retries with its own backoff and a fresh client
            max_retries: 1,
            connection_timeout: config.connect_timeout,
            keep_alive: KEEP_ALIVE,
            ..Default::default()
        })
        .with_operation_retry_options(pulsar::OperationRetryOptions {
            operation_timeout: operation_timeout(config),
            retry_delay: Duration::from_millis(200),
            max_retries: Some(3),
        })
        // wharf's window bounds what is in flight: the crate's queue must never say SlowDown
        .with_outbound_channel_size(config.window + 16);
    if let Some(token) = &config.auth_token {
        builder = builder.with_auth(pulsar::Authentication {
            name: "token".to_owned(),
            data: token.0.clone().into_bytes(),
        });
    }
    if let Some(path) = &config.tls.ca_file {
        builder = builder.with_certificate_chain_file(path).map_err(|e| {
            pulsar::Error::Custom(format!(
                "cannot read the TLS CA file {}: {e}",
                path.display()
            ))
        })?;
    }
    if config.tls.allow_insecure {
        builder = builder.with_allow_insecure_connection(true);
    }
    if let Some(verify) = config.tls.verify_hostname {
        builder = builder.with_tls_hostname_verification_enabled(verify);
    }
    let client = builder.build().await?;
    let mut options = pulsar::ProducerOptions {
        block_queue_if_full: true,
        compression: Some(config.compression.to_pulsar()),
        // On a partitioned topic a keyed message goes to its key's partition (murmur3 of the
        // key, as Pulsar's Java client does), so one key's messages stay in order; unkeyed
        // ones rotate over the partitions. Without a policy the crate rotates every message,
        // key or not.
        routing_policy: Some(pulsar::routing_policy::RoutingPolicy::RoundRobin),
        ..Default::default()
    };
    if let Some(batching) = config.batching {
        options.batch_size = Some(batching.max_messages);
        options.batch_byte_size = Some(batching.max_bytes);
        options.batch_timeout = Some(batching.max_delay);
    }
    let mut producer = client
        .producer()
        .with_topic(config.topic.clone())
        .with_options(options);
    if let Some(name) = &config.producer_name {
        producer = producer.with_name(name.clone());
    }
    let producer = producer.build().await?;
    Ok((client, producer, opened))
}

/// Errors that re-connecting cannot fix.
pub(super) fn is_permanent(error: &pulsar::Error) -> bool {
    use pulsar::message::proto::ServerError as E;
    let kind = match error {
        pulsar::Error::Producer(ProducerError::Fenced) => return true,
        pulsar::Error::Connection(ConnectionError::PulsarError(kind, _))
        | pulsar::Error::Producer(ProducerError::Connection(ConnectionError::PulsarError(
            kind,
            _,
        )))
        | pulsar::Error::ServiceDiscovery(ServiceDiscoveryError::Query(kind, _)) => kind,
        pulsar::Error::Connection(ConnectionError::Authentication(_)) => return true,
        _ => return false,
    };
    matches!(
        kind,
        Some(
            E::TopicNotFound
                | E::TopicTerminatedError
                | E::AuthenticationError
                | E::AuthorizationError
                | E::ProducerFenced
                | E::IncompatibleSchema
                | E::NotAllowedError
                | E::InvalidTopicName
                | E::ProducerBlockedQuotaExceededException
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permanent_errors_are_those_reconnecting_cannot_fix() {
        use pulsar::message::proto::ServerError;
        let refused = pulsar::Error::Connection(ConnectionError::PulsarError(
            Some(ServerError::AuthorizationError),
            None,
        ));
        assert!(is_permanent(&refused));
        assert!(!is_permanent(&pulsar::Error::Connection(
            ConnectionError::Disconnected
        )));
    }
}

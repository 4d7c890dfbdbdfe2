//! The connection a `Jobs` handle uses: one Redis (reconnecting), a Redis Cluster, or the
//! master a set of sentinels names (looked up again after a failover).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{RedisFuture, Value};

use super::config::{Config, redact};
use crate::error::{Error, Result};

/// One connection: to a standalone Redis (reconnecting), to a Redis Cluster, or to the
/// master a set of sentinels names.
#[derive(Clone)]
pub(super) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

impl Conn {
    /// Connects as `config` says: through sentinels, to a Cluster, or to one Redis.
    pub(super) async fn open(config: &Config) -> Result<Self> {
        if config.sentinel.is_some() {
            connect_sentinel(config).await
        } else if config.cluster.is_empty() {
            connect_single(config).await
        } else {
            connect_cluster(config).await
        }
    }
}

/// A connection to the master a set of sentinels names; re-resolved after a failure that
/// may mean a failover (connection lost, or the node turned read-only).
pub(super) struct SentinelConn {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    current: Mutex<ConnectionManager>,
    manager_config: ConnectionManagerConfig,
}

impl SentinelConn {
    fn conn(&self) -> Option<ConnectionManager> {
        self.current.lock().ok().map(|c| c.clone())
    }

    async fn after_error(&self, e: &redis::RedisError) {
        let failover = e.is_unrecoverable_error()
            || e.is_io_error()
            || e.is_connection_refusal()
            || matches!(
                e.kind(),
                redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly)
            );
        if !failover {
            return;
        }
        let mut sentinel = self.sentinel.lock().await;
        let fresh = match sentinel.async_get_client().await {
            Ok(client) => {
                ConnectionManager::new_with_config(client, self.manager_config.clone()).await
            }
            Err(e) => Err(e),
        };
        match fresh {
            Ok(conn) => {
                if let Ok(mut c) = self.current.lock() {
                    *c = conn;
                }
                tracing::info!("reconnected to the master named by the sentinels");
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not look up the master through the sentinels; will retry on the next call")
            }
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
            Conn::Sentinel(s) => Box::pin(async move {
                let Some(mut conn) = s.conn() else {
                    return Err(poisoned());
                };
                let r = conn.req_packed_command(cmd).await;
                if let Err(e) = &r {
                    s.after_error(e).await;
                }
                r
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(s) => Box::pin(async move {
                let Some(mut conn) = s.conn() else {
                    return Err(poisoned());
                };
                let r = conn.req_packed_commands(pipeline, offset, count).await;
                if let Err(e) = &r {
                    s.after_error(e).await;
                }
                r
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
            Conn::Sentinel(s) => s.conn().map_or(0, |c| c.get_db()),
        }
    }
}

fn poisoned() -> redis::RedisError {
    redis::RedisError::from((
        redis::ErrorKind::Client,
        "the sentinel connection's lock was poisoned by a panic; create a new Jobs",
    ))
}

async fn connect_single(config: &Config) -> Result<Conn> {
    let client = open_client(config).map_err(|source| Error::InvalidUrl {
        what: format!("the Redis URL `{}`", redact(&config.url)),
        source,
    })?;
    ConnectionManager::new_with_config(client, manager_config(config))
        .await
        .map(Conn::Single)
        .map_err(|source| Error::Redis {
            op: "connect",
            source,
        })
}

fn manager_config(config: &Config) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(config.response_timeout))
        .set_connection_timeout(Some(config.connect_timeout))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
}

async fn connect_sentinel(config: &Config) -> Result<Conn> {
    let Some((nodes, master)) = &config.sentinel else {
        return Err(Error::Config("no sentinels configured".into()));
    };
    let shown: Vec<String> = nodes.iter().map(|u| redact(u)).collect();
    let node_info = nodes
        .first()
        .and_then(|u| redis::IntoConnectionInfo::into_connection_info(u.as_str()).ok())
        .map(|info| {
            SentinelNodeConnectionInfo::default()
                .set_redis_connection_info(info.redis_settings().clone())
        });
    let mut sentinel = SentinelClient::build(
        nodes.iter().map(String::as_str).collect(),
        master.clone(),
        node_info,
        SentinelServerType::Master,
    )
    .map_err(|source| Error::InvalidUrl {
        what: format!("the list of sentinel URLs {shown:?}"),
        source,
    })?;
    let client = sentinel
        .async_get_client()
        .await
        .map_err(|source| Error::Redis {
            op: "look up the master through the sentinels",
            source,
        })?;
    let manager_config = manager_config(config);
    let conn = ConnectionManager::new_with_config(client, manager_config.clone())
        .await
        .map_err(|source| Error::Redis {
            op: "connect to the master",
            source,
        })?;
    Ok(Conn::Sentinel(Arc::new(SentinelConn {
        sentinel: tokio::sync::Mutex::new(sentinel),
        current: Mutex::new(conn),
        manager_config,
    })))
}

#[cfg(not(feature = "tls"))]
fn open_client(config: &Config) -> redis::RedisResult<redis::Client> {
    redis::Client::open(config.url.as_str())
}

#[cfg(feature = "tls")]
fn open_client(config: &Config) -> redis::RedisResult<redis::Client> {
    if config.tls_root.is_none() && config.tls_client.is_none() {
        return redis::Client::open(config.url.as_str());
    }
    let certs = redis::TlsCertificates {
        client_tls: config.tls_client.clone().map(|(client_cert, client_key)| {
            redis::ClientTlsConfig {
                client_cert,
                client_key,
            }
        }),
        root_cert: config.tls_root.clone(),
    };
    redis::Client::build_with_tls(config.url.as_str(), certs)
}

async fn connect_cluster(config: &Config) -> Result<Conn> {
    let client = ClusterClientBuilder::new(config.cluster.iter().map(String::as_str))
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(3)
        .build()
        .map_err(|source| {
            let nodes: Vec<String> = config.cluster.iter().map(|u| redact(u)).collect();
            Error::InvalidUrl {
                what: format!("the list of Redis Cluster nodes {nodes:?}"),
                source,
            }
        })?;
    client
        .get_async_connection()
        .await
        .map(Conn::Cluster)
        .map_err(|source| Error::Redis {
            op: "connect to cluster",
            source,
        })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use crate::{Config, Jobs};

    #[tokio::test]
    async fn a_bad_url_error_does_not_show_the_password() {
        let err = Jobs::connect(Config::new("redis://u:s3cret@:notaport"))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }

    #[tokio::test]
    async fn an_unusable_url_error_keeps_the_clients_error_as_its_source() {
        let configs = [
            Config::new("redis://u:s3cret@:notaport"),
            Config::cluster(["redis://:s3cret@a:7000", "redis://:other@b:7000"]),
            Config::sentinel(["redis://:s3cret@:notaport"], "master"),
        ];
        for config in configs {
            let shown = format!("{config:?}");
            let err = Jobs::connect(config).await.unwrap_err();
            let Some(source) = std::error::Error::source(&err) else {
                panic!("no source kept for {shown}: {err}");
            };
            assert!(
                source.downcast_ref::<redis::RedisError>().is_some(),
                "{err}"
            );
            let text = format!("{err} {err:?}");
            assert!(!text.contains("s3cret"), "{text}");
        }
    }
}

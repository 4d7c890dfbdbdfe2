//! `Jobs`: the handle to enqueue, inspect, cancel and administer jobs.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{FromRedisValue, RedisFuture, Value};

use crate::error::{Error, Result};
use crate::job::Job;
use crate::keys::{self, check_key, check_name};
use crate::scripts::scripts;

/// How to reach Redis.
///
/// The URL may be `redis://[user:password@]host:port[/db]`, `rediss://...` (TLS, with the
/// crate feature `tls`) or `unix:///path`. Its password never appears in `Debug` output,
/// logs or errors.
#[derive(Clone)]
pub struct Config {
    url: String,
    cluster: Vec<String>,
    sentinel: Option<(Vec<String>, String)>,
    #[cfg(feature = "tls")]
    tls_root: Option<Vec<u8>>,
    #[cfg(feature = "tls")]
    tls_client: Option<(Vec<u8>, Vec<u8>)>,
    response_timeout: Duration,
    connect_timeout: Duration,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("url", &redact(&self.url))
            .field(
                "sentinel",
                &self
                    .sentinel
                    .as_ref()
                    .map(|(n, m)| (n.iter().map(|u| redact(u)).collect::<Vec<_>>(), m.clone())),
            )
            .field(
                "cluster",
                &self.cluster.iter().map(|u| redact(u)).collect::<Vec<_>>(),
            )
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The URL with any `user:password@` replaced by `***@`.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

impl Config {
    /// Redis at `url`, with a 5 s response timeout and a 5 s connect timeout.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: Vec::new(),
            sentinel: None,
            #[cfg(feature = "tls")]
            tls_root: None,
            #[cfg(feature = "tls")]
            tls_client: None,
            response_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
        }
    }

    /// From `WHARF_REDIS_URL`, or `redis://127.0.0.1:6379` when it is not set.
    pub fn from_env() -> Self {
        Self::new(
            std::env::var("WHARF_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into()),
        )
    }

    /// A Redis Cluster, reached through any of these seed nodes (`redis://` or `rediss://`
    /// URLs; the password of the first one is used for all). Each partition lives on the
    /// shard of its hash tag `{wharf:<partition>}`.
    pub fn cluster<I, S>(nodes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let cluster: Vec<String> = nodes.into_iter().map(Into::into).collect();
        let mut c = Self::new(cluster.first().cloned().unwrap_or_default());
        c.cluster = cluster;
        c
    }

    /// Trust this CA (PEM) for `rediss://` instead of the webpki roots (feature `tls`):
    /// for a Redis whose certificate comes from a private CA.
    #[cfg(feature = "tls")]
    pub fn tls_root_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root = Some(pem.into());
        self
    }

    /// Present this client certificate and key (PEM) for mutual TLS (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_client_certificate(
        mut self,
        cert_pem: impl Into<Vec<u8>>,
        key_pem: impl Into<Vec<u8>>,
    ) -> Self {
        self.tls_client = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// The master `master_name` found through these Redis Sentinel nodes (`redis://` URLs of
    /// the sentinels; a password in the first URL is used for the master too). After a
    /// failover the next failing call looks the master up again.
    pub fn sentinel<I, S>(sentinels: I, master_name: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let nodes: Vec<String> = sentinels.into_iter().map(Into::into).collect();
        let mut c = Self::new(nodes.first().cloned().unwrap_or_default());
        c.sentinel = Some((nodes, master_name.into()));
        c
    }

    /// How long any one Redis call may take before it fails with [`Error::Timeout`].
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = timeout;
        self
    }

    /// How long a (re)connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }
}

/// The answer to an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// The job was stored; this is its id.
    Queued(String),
    /// Another job with the same queue key is queued, running or waiting to retry; this is
    /// its id. Nothing was stored.
    Duplicate(String),
}

impl Enqueued {
    /// The id of the new job, or of the job that holds the queue key.
    pub fn id(&self) -> &str {
        match self {
            Enqueued::Queued(id) | Enqueued::Duplicate(id) => id,
        }
    }
}

/// The answer to [`Jobs::cancel`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CancelOutcome {
    /// The job was waiting (queued, scheduled, retrying or waiting for its execution key)
    /// and is now removed, its queue key released.
    Cancelled,
    /// The job is running: the worker running it aborts its task within about a second and
    /// calls the `on_cancel` hook (or, if that worker died, the next lease check finishes it).
    Cancelling,
    /// The job had already finished in this state (`completed`, `cancelled` or `dead`).
    AlreadyFinished(String),
    /// No such job (never existed, or finished and trimmed by retention).
    Unknown,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JobState {
    /// Waiting for its time (enqueued with a time or a delay).
    Scheduled,
    /// Ready, waiting for a worker.
    Queued,
    /// Waiting for another job with the same execution key to finish.
    Parked,
    /// Running on a worker (under a lease).
    Running,
    /// Still running, although its worker told it to stop (its `max_execution_time` passed,
    /// it was cancelled, or the worker is shutting down) a while ago: its code blocks its
    /// thread or ignores cancellation. It keeps its lease, execution key, queue key and queue
    /// slot until its task really ends; [`JobInfo::stopping`] says why it was told to stop.
    Stopping,
    /// Failed, waiting for its next attempt.
    Retrying,
    /// Finished successfully.
    Completed,
    /// Cancelled.
    Cancelled,
    /// Failed for good (last attempt, not retryable, unknown name, undecodable arguments).
    Dead,
}

impl JobState {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "scheduled" => Self::Scheduled,
            "queued" => Self::Queued,
            "parked" => Self::Parked,
            "running" => Self::Running,
            "stopping" => Self::Stopping,
            "retrying" => Self::Retrying,
            "completed" => Self::Completed,
            "cancelled" => Self::Cancelled,
            "dead" => Self::Dead,
            _ => return None,
        })
    }

    /// The name stored in Redis.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "scheduled",
            Self::Queued => "queued",
            Self::Parked => "parked",
            Self::Running => "running",
            Self::Stopping => "stopping",
            Self::Retrying => "retrying",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
            Self::Dead => "dead",
        }
    }
}

/// A stored job, as [`Jobs::job`] and [`Jobs::dead`] show it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobInfo {
    /// Its id.
    pub id: String,
    /// Its registered name.
    pub name: String,
    /// Its queue.
    pub queue: String,
    /// Where it stands.
    pub state: JobState,
    /// Its arguments (JSON).
    pub args: String,
    /// Attempts started so far.
    pub attempts: u32,
    /// The last error (or the reason it is dead).
    pub error: Option<String>,
    /// Its queue key.
    pub queue_key: Option<String>,
    /// Its execution key.
    pub execution_key: Option<String>,
    /// Times a worker lost its lease while running it (crash or stall).
    pub lease_expiries: u32,
    /// Whether a cancel was asked while it ran.
    pub cancel_requested: bool,
    /// For a [`JobState::Stopping`] job: why its worker told it to stop, and when.
    pub stopping: Option<String>,
}

impl JobInfo {
    fn from_hash(id: &str, h: &HashMap<String, String>) -> Option<Self> {
        let get = |k: &str| h.get(k).cloned().unwrap_or_default();
        let opt = |k: &str| h.get(k).filter(|v| !v.is_empty()).cloned();
        let num = |k: &str| h.get(k).and_then(|v| v.parse().ok()).unwrap_or(0);
        // Redis keeps `running` (every script relies on it); the flag (`<token> <reason>`)
        // refines it while the job runs under the token it was set for.
        let state = JobState::parse(h.get("state")?)?;
        let stopping = opt("stopping").and_then(|s| {
            let (token, reason) = s.split_once(' ')?;
            (state == JobState::Running && h.get("token").is_some_and(|t| t == token))
                .then(|| reason.to_owned())
        });
        let state = match state {
            JobState::Running if stopping.is_some() => JobState::Stopping,
            s => s,
        };
        Some(Self {
            id: id.to_owned(),
            name: get("name"),
            queue: get("queue"),
            state,
            args: get("args"),
            attempts: num("attempts"),
            error: opt("error"),
            queue_key: opt("qkey"),
            execution_key: opt("xkey"),
            lease_expiries: num("lease_expiries"),
            cancel_requested: h.get("cancel").is_some_and(|v| v == "1"),
            stopping,
        })
    }
}

/// How many jobs of a queue are in each state, and its settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueCounts {
    /// Ready, waiting for a worker.
    pub queued: u64,
    /// Waiting for a time: scheduled, or retrying after a backoff.
    pub scheduled: u64,
    /// Waiting for their execution key.
    pub parked: u64,
    /// Running now (across every worker process).
    pub running: u64,
    /// Finished jobs still kept (completed or cancelled), within retention.
    pub finished_kept: u64,
    /// Jobs in the dead set.
    pub dead: u64,
    /// Completed since the queue was created.
    pub completed_total: u64,
    /// Cancelled since the queue was created.
    pub cancelled_total: u64,
    /// Sent to the dead set since the queue was created.
    pub dead_total: u64,
    /// Retries scheduled since the queue was created.
    pub retried_total: u64,
    /// Leases that expired (worker crash or stall) since the queue was created.
    pub lease_expired_total: u64,
    /// Whether the queue is paused (for every worker).
    pub paused: bool,
    /// The global limit of jobs running at once (None: no limit; `Some(0)`: no job starts).
    pub limit: Option<u32>,
}

/// How many finished jobs a partition keeps, so Redis memory stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed and cancelled jobs kept per queue (0: delete at once). Default 1,000.
    pub keep_finished: u64,
    /// And for at most this long. Default one day.
    pub keep_finished_for: Duration,
    /// Dead jobs kept per queue (the oldest are dropped beyond). Default 10,000.
    pub keep_dead: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_finished: 1_000,
            keep_finished_for: Duration::from_secs(86_400),
            keep_dead: 10_000,
        }
    }
}

/// Finished and dead jobs trimmed per queue per lease check (once a second per worker).
const TRIM_PER_CALL: u32 = 500;

/// A running job's lease, as [`Jobs::leases`] shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lease {
    /// The job's id.
    pub id: String,
    /// Its registered name.
    pub name: String,
    /// The worker holding it (`<pid>-<random>`; empty if unknown).
    pub worker: String,
    /// How long until the lease expires (Redis' clock), in milliseconds; negative when it
    /// expired and the next lease check has not requeued the job yet.
    pub expires_in_ms: i64,
    /// How long ago the lease was last taken or renewed, in milliseconds.
    pub renewed_ms_ago: i64,
    /// The heartbeat interval its worker announced, in milliseconds (0 if unknown).
    pub heartbeat_ms: i64,
    /// Whether its worker stopped renewing it: not renewed for five heartbeat intervals.
    /// The job's queue slot and keys stay held until the lease expires.
    pub stalled: bool,
}

impl Lease {
    fn new(
        now: i64,
        id: &str,
        name: &str,
        worker: &str,
        expiry: i64,
        lease_ms: i64,
        beat_ms: i64,
    ) -> Self {
        let renewed_ms_ago = if lease_ms > 0 {
            now - (expiry - lease_ms)
        } else {
            0
        };
        Self {
            id: id.to_owned(),
            name: name.to_owned(),
            worker: worker.to_owned(),
            expires_in_ms: expiry - now,
            renewed_ms_ago,
            heartbeat_ms: beat_ms,
            stalled: beat_ms > 0 && renewed_ms_ago > beat_ms.saturating_mul(5),
        }
    }
}

/// A job claimed by a worker: its lease is identified by (id, token).
#[derive(Debug, Clone)]
pub(crate) struct Claimed {
    pub(crate) id: String,
    pub(crate) token: String,
    pub(crate) attempt: u32,
    pub(crate) name: String,
    pub(crate) args: String,
}

/// What a heartbeat learned about a running job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Beat {
    Ok,
    CancelAsked,
    Lost,
}

/// A job ready to store: name, JSON arguments and keys.
#[derive(Debug, Clone)]
struct Pending {
    name: &'static str,
    args: String,
    qkey: String,
    xkey: String,
    at_ms: u64,
    delay_ms: u64,
}

fn pending<J: Job>(job: &J, at_ms: u64, delay_ms: u64) -> Result<Pending> {
    let args = serde_json::to_string(job).map_err(|source| Error::Encode {
        name: J::NAME.to_owned(),
        source,
    })?;
    if args.len() > MAX_ARGS_BYTES {
        return Err(Error::Config(format!(
            "the arguments of job `{}` are {} bytes as JSON; the limit is {MAX_ARGS_BYTES}: store large data elsewhere and pass a reference",
            J::NAME,
            args.len()
        )));
    }
    let qkey = job.queue_key().unwrap_or_default();
    let xkey = job.execution_key().unwrap_or_default();
    if !qkey.is_empty() {
        check_key("queue_key", &qkey)?;
    }
    if !xkey.is_empty() {
        check_key("execution_key", &xkey)?;
    }
    Ok(Pending {
        name: J::NAME,
        args,
        qkey,
        xkey,
        at_ms,
        delay_ms,
    })
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// One connection to a standalone Redis (reconnecting) or to a Redis Cluster.
#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
    Sentinel(Arc<SentinelConn>),
}

/// A connection to the master a set of sentinels names; re-resolved after a failure that
/// may mean a failover (connection lost, or the node turned read-only).
struct SentinelConn {
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

/// The handle to jobs in Redis: enqueue, inspect, cancel, pause, purge.
///
/// Cheap to clone (one multiplexed connection that reconnects by itself). Every call has a
/// timeout ([`Config::response_timeout`]).
#[derive(Clone)]
pub struct Jobs {
    conn: Conn,
    timeout: Duration,
    config: Arc<Config>,
    known_partitions: Arc<Mutex<HashSet<String>>>,
}

impl fmt::Debug for Jobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Jobs")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

async fn connect_single(config: &Config) -> Result<Conn> {
    let client = open_client(config).map_err(|e| {
        Error::Config(format!(
            "the Redis URL `{}` is not valid: {e}",
            redact(&config.url)
        ))
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
    .map_err(|e| Error::Config(format!("the sentinel URLs {shown:?} are not valid: {e}")))?;
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
        .map_err(|e| {
            let nodes: Vec<String> = config.cluster.iter().map(|u| redact(u)).collect();
            Error::Config(format!(
                "the Redis Cluster nodes {nodes:?} are not valid: {e}"
            ))
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

/// The largest arguments a job may have (JSON bytes), so Redis memory stays bounded.
pub const MAX_ARGS_BYTES: usize = 1024 * 1024;

/// Most jobs sent in one enqueue script call (bounds the script's run time).
const BULK_CHUNK: usize = 500;

impl Jobs {
    /// Connects to Redis (fails after the connect timeout if it cannot).
    pub async fn connect(config: Config) -> Result<Self> {
        // redis' rustls needs a process-wide crypto provider; install ring's unless the
        // application installed one already (then this does nothing).
        #[cfg(feature = "tls")]
        let _ = rustls::crypto::ring::default_provider().install_default();
        let limit = config.connect_timeout.saturating_mul(2);
        let connect = async {
            if config.sentinel.is_some() {
                connect_sentinel(&config).await
            } else if config.cluster.is_empty() {
                connect_single(&config).await
            } else {
                connect_cluster(&config).await
            }
        };
        let conn = match tokio::time::timeout(limit, connect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(Error::Timeout {
                    op: "connect",
                    timeout_ms: limit.as_millis() as u64,
                });
            }
        };
        Ok(Self {
            conn,
            timeout: config.response_timeout,
            config: Arc::new(config),
            known_partitions: Arc::default(),
        })
    }

    /// The configuration this handle connected with (a worker's lease thread opens its own
    /// connection with it).
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// How long one Redis call may take ([`Config::response_timeout`]).
    pub(crate) fn response_timeout(&self) -> Duration {
        self.timeout
    }

    async fn call<T: FromRedisValue>(&self, op: &'static str, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.conn.clone();
        let fut = cmd.query_async::<T>(&mut conn);
        self.bounded(op, fut).await
    }

    async fn bounded<T>(
        &self,
        op: &'static str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        // The connection manager has its own response timeout; this outer bound also
        // covers a reconnection in progress.
        let limit = self.timeout.saturating_mul(2);
        match tokio::time::timeout(limit, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(source)) => Err(Error::Redis { op, source }),
            Err(_) => Err(Error::Timeout {
                op,
                timeout_ms: limit.as_millis() as u64,
            }),
        }
    }

    async fn script<T: FromRedisValue>(
        &self,
        op: &'static str,
        script: &redis::Script,
        partition: &str,
        args: Vec<String>,
    ) -> Result<T> {
        let mut inv = script.prepare_invoke();
        inv.key(keys::route(partition)).arg(keys::prefix(partition));
        for a in args {
            inv.arg(a);
        }
        let mut conn = self.conn.clone();
        let fut = inv.invoke_async::<T>(&mut conn);
        self.bounded(op, fut).await
    }

    async fn note_partition(&self, partition: &str) -> Result<()> {
        let known = self
            .known_partitions
            .lock()
            .map(|k| k.contains(partition))
            .unwrap_or(false);
        if known {
            return Ok(());
        }
        let _: i64 = self
            .call(
                "register partition",
                redis::cmd("SADD").arg(keys::PARTITIONS).arg(partition),
            )
            .await?;
        if let Ok(mut k) = self.known_partitions.lock() {
            k.insert(partition.to_owned());
        }
        Ok(())
    }

    /// Enqueues `job` to run now.
    pub async fn enqueue<J: Job>(&self, partition: &str, queue: &str, job: &J) -> Result<Enqueued> {
        self.store_one(partition, queue, pending(job, 0, 0)?).await
    }

    /// Enqueues `job` to run after `delay` (measured on the Redis server's clock).
    pub async fn enqueue_in<J: Job>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
        delay: Duration,
    ) -> Result<Enqueued> {
        let delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.store_one(partition, queue, pending(job, 0, delay_ms)?)
            .await
    }

    /// Enqueues `job` to run at `at` (a time in the past runs now).
    pub async fn enqueue_at<J: Job>(
        &self,
        partition: &str,
        queue: &str,
        job: &J,
        at: SystemTime,
    ) -> Result<Enqueued> {
        let at_ms = at
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(1)
            .max(1);
        self.store_one(partition, queue, pending(job, at_ms, 0)?)
            .await
    }

    /// Enqueues many jobs at once (atomically per chunk of 500), in order. Answers one
    /// [`Enqueued`] per job, in the same order.
    pub async fn enqueue_bulk<J: Job>(
        &self,
        partition: &str,
        queue: &str,
        jobs: &[J],
    ) -> Result<Vec<Enqueued>> {
        let pending: Vec<Pending> = jobs
            .iter()
            .map(|j| pending(j, 0, 0))
            .collect::<Result<_>>()?;
        self.store(partition, queue, pending).await
    }

    async fn store_one(&self, partition: &str, queue: &str, p: Pending) -> Result<Enqueued> {
        let mut out = self.store(partition, queue, vec![p]).await?;
        out.pop().ok_or(Error::Protocol {
            op: "enqueue",
            detail: "no answer for the job".into(),
        })
    }

    async fn store(
        &self,
        partition: &str,
        queue: &str,
        jobs: Vec<Pending>,
    ) -> Result<Vec<Enqueued>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for chunk in jobs.chunks(BULK_CHUNK) {
            let mut args = Vec::with_capacity(1 + chunk.len() * 8);
            args.push(chunk.len().to_string());
            for p in chunk {
                args.extend([
                    new_id(),
                    queue.to_owned(),
                    p.name.to_owned(),
                    p.args.clone(),
                    p.qkey.clone(),
                    p.xkey.clone(),
                    p.at_ms.to_string(),
                    p.delay_ms.to_string(),
                ]);
            }
            let answers: Vec<String> = self
                .script("enqueue", &scripts().enqueue, partition, args)
                .await?;
            for (a, p) in answers.into_iter().zip(chunk) {
                let e = match a.strip_prefix("dup:") {
                    Some(holder) => Enqueued::Duplicate(holder.to_owned()),
                    None => Enqueued::Queued(a),
                };
                let state = if matches!(e, Enqueued::Queued(_)) {
                    "enqueued"
                } else {
                    "duplicate"
                };
                metrics::counter!(crate::metric_names::METRIC_JOBS, "partition" => partition.to_owned(),
                    "queue" => queue.to_owned(), "state" => state)
                .increment(1);
                tracing::trace!(
                    partition,
                    queue,
                    job = p.name,
                    id = e.id(),
                    state,
                    "enqueue"
                );
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Cancels a job: a waiting one is removed at once; a running one is aborted by its
    /// worker (any process) within about a second.
    pub async fn cancel(&self, partition: &str, id: &str) -> Result<CancelOutcome> {
        check_name("partition", partition)?;
        let a: String = self
            .script("cancel", &scripts().cancel, partition, vec![id.to_owned()])
            .await?;
        Ok(match a.as_str() {
            "cancelled" => CancelOutcome::Cancelled,
            "cancelling" => CancelOutcome::Cancelling,
            "unknown" => CancelOutcome::Unknown,
            other => CancelOutcome::AlreadyFinished(
                other.strip_prefix("finished:").unwrap_or(other).to_owned(),
            ),
        })
    }

    /// A job as stored (None: unknown, or finished and trimmed by retention).
    pub async fn job(&self, partition: &str, id: &str) -> Result<Option<JobInfo>> {
        check_name("partition", partition)?;
        let h: HashMap<String, String> = self
            .call("job", redis::cmd("HGETALL").arg(keys::job(partition, id)))
            .await?;
        Ok(JobInfo::from_hash(id, &h))
    }

    /// Every partition that ever had a job enqueued.
    pub async fn partitions(&self) -> Result<Vec<String>> {
        let mut v: Vec<String> = self
            .call("partitions", redis::cmd("SMEMBERS").arg(keys::PARTITIONS))
            .await?;
        v.sort();
        Ok(v)
    }

    /// The queues of a partition.
    pub async fn queues(&self, partition: &str) -> Result<Vec<String>> {
        check_name("partition", partition)?;
        let mut v: Vec<String> = self
            .call("queues", redis::cmd("SMEMBERS").arg(keys::route(partition)))
            .await?;
        v.sort();
        Ok(v)
    }

    /// Counts of a queue's jobs per state, and its settings.
    pub async fn counts(&self, partition: &str, queue: &str) -> Result<QueueCounts> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let k = |part: &str| keys::queue(partition, queue, part);
        let mut pipe = redis::pipe();
        for part in ["wait", "delayed", "parked", "active", "done", "dead"] {
            pipe.cmd("ZCARD").arg(k(part));
        }
        pipe.cmd("HGETALL").arg(k("meta"));
        let mut conn = self.conn.clone();
        let fut =
            pipe.query_async::<(u64, u64, u64, u64, u64, u64, HashMap<String, String>)>(&mut conn);
        let (queued, scheduled, parked, running, finished_kept, dead, meta) =
            self.bounded("counts", fut).await?;
        let n = |f: &str| meta.get(f).and_then(|v| v.parse().ok()).unwrap_or(0u64);
        Ok(QueueCounts {
            queued,
            scheduled,
            parked,
            running,
            finished_kept,
            dead,
            completed_total: n("completed"),
            cancelled_total: n("cancelled"),
            dead_total: n("dead"),
            retried_total: n("retried"),
            lease_expired_total: n("lease_expired"),
            paused: meta.get("paused").is_some_and(|v| v == "1"),
            limit: meta.get("limit").and_then(|v| v.parse().ok()),
        })
    }

    /// Pauses a queue for every worker: running jobs finish, no new one starts.
    pub async fn pause(&self, partition: &str, queue: &str) -> Result<()> {
        self.set_meta(partition, queue, "paused", Some(1)).await
    }

    /// Resumes a paused queue.
    pub async fn resume(&self, partition: &str, queue: &str) -> Result<()> {
        self.set_meta(partition, queue, "paused", None).await
    }

    /// Sets how many jobs of the queue may run at once across every worker process
    /// (None: no limit beyond each worker's own concurrency). Takes effect at once for new
    /// starts; running jobs are never stopped by it.
    ///
    /// `Some(0)` means zero: no job of the queue starts until the limit is raised (like
    /// [`pause`](Self::pause), but kept apart from it). The queue need not exist yet: a
    /// limit may be set before the first enqueue.
    pub async fn set_limit(&self, partition: &str, queue: &str, limit: Option<u32>) -> Result<()> {
        self.set_meta(partition, queue, "limit", limit).await
    }

    async fn set_meta(
        &self,
        partition: &str,
        queue: &str,
        field: &str,
        v: Option<u32>,
    ) -> Result<()> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        self.note_partition(partition).await?;
        let key = keys::queue(partition, queue, "meta");
        let mut pipe = redis::pipe();
        pipe.atomic();
        match v {
            Some(v) => pipe.cmd("HSET").arg(&key).arg(field).arg(v).ignore(),
            None => pipe.cmd("HDEL").arg(&key).arg(field).ignore(),
        };
        pipe.cmd("SADD")
            .arg(keys::route(partition))
            .arg(queue)
            .ignore();
        let mut conn = self.conn.clone();
        let fut = pipe.query_async::<()>(&mut conn);
        self.bounded("set queue setting", fut).await
    }

    /// Sets the partition's retention of finished and dead jobs.
    pub async fn set_retention(&self, partition: &str, r: Retention) -> Result<()> {
        check_name("partition", partition)?;
        let ms = u64::try_from(r.keep_finished_for.as_millis()).unwrap_or(u64::MAX);
        self.call::<()>(
            "set retention",
            redis::cmd("HSET")
                .arg(format!("{}config", keys::prefix(partition)))
                .arg("keep_done")
                .arg(r.keep_finished)
                .arg("keep_done_ms")
                .arg(ms)
                .arg("keep_dead")
                .arg(r.keep_dead),
        )
        .await
    }

    /// Deletes the jobs of a queue that are waiting (queued, scheduled, retrying, parked),
    /// releasing their keys; running jobs are left alone. Answers how many were deleted.
    pub async fn purge(&self, partition: &str, queue: &str) -> Result<u64> {
        let mut n = 0;
        for which in ["wait", "delayed", "parked"] {
            n += self.purge_part(partition, queue, which).await?;
        }
        Ok(n)
    }

    /// Empties the dead set of a queue. Answers how many were deleted.
    pub async fn purge_dead(&self, partition: &str, queue: &str) -> Result<u64> {
        self.purge_part(partition, queue, "dead").await
    }

    async fn purge_part(&self, partition: &str, queue: &str, which: &str) -> Result<u64> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let mut total = 0u64;
        // Bounded chunks, so one script never blocks Redis for long.
        loop {
            let args = vec![queue.to_owned(), which.to_owned(), "500".to_owned()];
            let n: u64 = self
                .script("purge", &scripts().purge, partition, args)
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    /// The newest dead jobs of a queue, at most `limit`.
    pub async fn dead(&self, partition: &str, queue: &str, limit: usize) -> Result<Vec<JobInfo>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let ids: Vec<String> = self
            .call(
                "list dead",
                redis::cmd("ZRANGE")
                    .arg(keys::queue(partition, queue, "dead"))
                    .arg(0)
                    .arg(limit.saturating_sub(1))
                    .arg("REV"),
            )
            .await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(j) = self.job(partition, &id).await? {
                out.push(j);
            }
        }
        Ok(out)
    }

    /// Puts a dead job back in its queue with fresh attempts.
    pub async fn retry_dead(&self, partition: &str, id: &str) -> Result<Enqueued> {
        check_name("partition", partition)?;
        let a: String = self
            .script(
                "retry dead",
                &scripts().retry_dead,
                partition,
                vec![id.to_owned()],
            )
            .await?;
        match a.as_str() {
            "ok" => Ok(Enqueued::Queued(id.to_owned())),
            "not_dead" => Err(Error::Config(format!(
                "job {id} is not in the dead set of partition {partition}; check its state with Jobs::job"
            ))),
            other => match other.strip_prefix("dup:") {
                Some(h) => Ok(Enqueued::Duplicate(h.to_owned())),
                None => Err(Error::Protocol {
                    op: "retry dead",
                    detail: other.to_owned(),
                }),
            },
        }
    }

    // ---- worker side -------------------------------------------------------------------

    pub(crate) async fn claim(
        &self,
        partition: &str,
        queue: &str,
        want: usize,
        lease: Duration,
        beat: Duration,
        worker: &str,
    ) -> Result<Vec<Claimed>> {
        let args = vec![
            queue.to_owned(),
            want.to_string(),
            lease.as_millis().to_string(),
            worker.to_owned(),
            beat.as_millis().to_string(),
        ];
        let flat: Vec<String> = self
            .script("claim", &scripts().claim, partition, args)
            .await?;
        let mut out = Vec::with_capacity(flat.len() / 6);
        for c in flat.chunks_exact(6) {
            out.push(Claimed {
                id: c[0].clone(),
                token: c[1].clone(),
                attempt: c[2].parse().unwrap_or(1),
                name: c[3].clone(),
                args: c[4].clone(),
            });
        }
        Ok(out)
    }

    pub(crate) async fn heartbeat(
        &self,
        partition: &str,
        lease: Duration,
        running: &[(String, String)],
    ) -> Result<Vec<Beat>> {
        let mut args = Vec::with_capacity(1 + running.len() * 2);
        args.push(lease.as_millis().to_string());
        for (id, token) in running {
            args.push(id.clone());
            args.push(token.clone());
        }
        let v: Vec<i64> = self
            .script("heartbeat", &scripts().heartbeat, partition, args)
            .await?;
        Ok(v.into_iter()
            .map(|b| match b {
                0 => Beat::Ok,
                1 => Beat::CancelAsked,
                _ => Beat::Lost,
            })
            .collect())
    }

    /// Marks a running job finished (`completed` or `cancelled`); false if the lease was lost.
    pub(crate) async fn complete(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        outcome: &str,
    ) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned(), outcome.to_owned()];
        let v: i64 = self
            .script("complete", &scripts().complete, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// Records a failure: retry after `retry` or, with None, to the dead set. With
    /// `keep_xkey`, a job that will retry keeps its execution key through its backoff.
    /// Answers 1 (retry), 2 (dead) or 0 (lease lost: nothing changed).
    pub(crate) async fn fail(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        reason: &str,
        retry: Option<Duration>,
        keep_xkey: bool,
    ) -> Result<i64> {
        let delay = retry.map_or(-1, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut reason = reason.to_owned();
        if reason.len() > 4096 {
            let mut cut = 4096;
            while !reason.is_char_boundary(cut) {
                cut -= 1;
            }
            reason.truncate(cut);
        }
        let keep = if keep_xkey { "1" } else { "0" };
        let args = vec![
            id.to_owned(),
            token.to_owned(),
            reason,
            delay.to_string(),
            keep.to_owned(),
        ];
        self.script("fail", &scripts().fail, partition, args).await
    }

    /// Hands a running job back to its queue (shutdown); false if the lease was lost.
    pub(crate) async fn release(&self, partition: &str, id: &str, token: &str) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned()];
        let v: i64 = self
            .script("release", &scripts().release, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// Requeues jobs whose lease expired and trims finished and dead jobs beyond retention
    /// (by count and by age), a bounded number per call. Answers how many were requeued.
    pub(crate) async fn reap(&self, partition: &str, queue: &str) -> Result<u64> {
        let args = vec![
            queue.to_owned(),
            "100".to_owned(),
            TRIM_PER_CALL.to_string(),
        ];
        self.script("reap", &scripts().reap, partition, args).await
    }

    /// Flags a running job as told to stop but not ended (see [`JobState::Stopping`]);
    /// false when the lease was lost.
    pub(crate) async fn mark_stopping(
        &self,
        partition: &str,
        id: &str,
        token: &str,
        reason: &str,
    ) -> Result<bool> {
        let args = vec![id.to_owned(), token.to_owned(), reason.to_owned()];
        let v: i64 = self
            .script("mark stopping", &scripts().mark_stopping, partition, args)
            .await?;
        Ok(v == 1)
    }

    /// The leases of a queue's running jobs, the soonest to expire first (at most `limit`).
    ///
    /// A lease whose worker stopped renewing it (a crashed or frozen process) is
    /// [`stalled`](Lease::stalled): its job still counts against the queue's limit and holds
    /// its keys until the lease expires, then the next lease check (every second, by any
    /// worker of the queue) puts it back in its queue. This is where an operator sees why a
    /// queue waits: `wharf-jobs leases PARTITION QUEUE` prints it.
    pub async fn leases(&self, partition: &str, queue: &str, limit: usize) -> Result<Vec<Lease>> {
        check_name("partition", partition)?;
        check_name("queue", queue)?;
        let args = vec![queue.to_owned(), limit.max(1).to_string()];
        let flat: Vec<String> = self
            .script("leases", &scripts().leases, partition, args)
            .await?;
        let Some((now, rows)) = flat.split_first() else {
            return Err(Error::Protocol {
                op: "leases",
                detail: "empty answer".into(),
            });
        };
        // Scores come back as Redis formats doubles; integers in practice.
        let num = |v: &str| {
            v.parse::<i64>()
                .or_else(|_| v.parse::<f64>().map(|f| f as i64))
                .unwrap_or(0)
        };
        let now = num(now);
        Ok(rows
            .chunks_exact(6)
            .map(|r| Lease::new(now, &r[0], &r[1], &r[2], num(&r[3]), num(&r[4]), num(&r[5])))
            .collect())
    }

    /// Checks that Redis answers.
    pub async fn ping(&self) -> Result<()> {
        let _: String = self.call("ping", &redis::cmd("PING")).await?;
        Ok(())
    }

    /// A raw command against the same connection (tests and the CLI).
    #[doc(hidden)]
    pub async fn raw(&self, cmd: &redis::Cmd) -> Result<Value> {
        self.call("raw", cmd).await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn passwords_never_appear_in_debug_output() {
        let c = Config::new("redis://app:s3cret@redis.internal:6379/2");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://***@redis.internal:6379/2"),
            "{shown}"
        );
        let cluster = Config::cluster(["rediss://:hunter2@a:7000", "rediss://:hunter2@b:7000"]);
        assert!(!format!("{cluster:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn a_bad_url_error_does_not_show_the_password() {
        let err = Jobs::connect(Config::new("redis://u:s3cret@:notaport"))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("s3cret"), "{err}");
    }
}

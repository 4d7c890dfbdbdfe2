//! Kafka: Tansu, an Apache-Kafka-compatible broker (`.wharf/bin/tansu`), in memory or on an
//! S3 bucket served by a moto server of its own (durable: it survives kill -9 and restart).

use std::ffi::OsString;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use crate::controls::owned_broker_controls;
use crate::error::{Error, Result};
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// The bucket a durable Tansu keeps its topics, offsets and groups in.
const BUCKET: &str = "tansu";
/// How long creating the bucket on moto may take (connect, write, answer).
const BUCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// A Tansu broker owned by one test.
///
/// - [`start`](Self::start) and [`start_behind_proxy`](Self::start_behind_proxy) keep every
///   topic and offset in memory: a restart loses them, so test connection loss with the
///   proxy's controls rather than with a restart.
/// - [`start_durable`](Self::start_durable) and
///   [`start_durable_behind_proxy`](Self::start_durable_behind_proxy) keep them in an S3
///   bucket on a moto server that the broker owns (`--storage-engine s3://tansu/`): the broker
///   can be killed with SIGKILL ([`kill`](Self::kill)) and [`restart`](Self::restart)ed on
///   the same port, and serves every record, committed offset and topic it had. It is a
///   nemesis [`Victim`](crate::nemesis::Victim) either way (pause, kill and restart); only the
///   durable one keeps its data across a kill. The moto server lives as long as the broker
///   and is never faulted; its start adds about 1.5 s.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let kafka = wharf_testkit::Tansu::start_durable_behind_proxy()?;
/// let brokers = kafka.bootstrap_servers(); // the proxy: 127.0.0.1:PORT
/// // ... produce ...
/// kafka.kill()?; // SIGKILL: a crash
/// kafka.restart()?; // the same port, the same bucket: every record is still there
/// # let _ = brokers; Ok(()) }
/// ```
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let kafka = wharf_testkit::Tansu::start_behind_proxy()?;
/// let brokers = kafka.bootstrap_servers(); // the proxy: 127.0.0.1:PORT
/// let proxy = kafka.proxy().expect("started behind a proxy");
/// proxy.down()?; // clients lose the broker
/// proxy.restore()?; // and get it back
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Tansu {
    // Dropped first: the broker dies before its store.
    instance: Instance,
    store: Option<Arc<S3Store>>,
}

/// A moto server holding the bucket a durable Tansu stores everything in.
#[derive(Debug)]
struct S3Store {
    moto: Instance,
}

impl S3Store {
    fn start() -> Result<Self> {
        let moto = Instance::start(crate::sqs::moto_spec(), None)?;
        create_bucket(moto.addr(), BUCKET)?;
        Ok(S3Store { moto })
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.moto.addr())
    }
}

impl Tansu {
    /// The producer settings for a test that kills a durable Tansu: idempotence off, one
    /// request in flight per connection (so a retry cannot reorder a partition).
    ///
    /// Tansu 0.6's S3 store is not crash-safe for an idempotent producer: it saves the
    /// producer's sequence number before the batch, so a broker killed between the two
    /// answers the client's retry `DUPLICATE_SEQUENCE_NUMBER`, which librdkafka reports as
    /// delivered, and the batch is never stored. Seen here: 8 kills at random moments under
    /// 8,905 acknowledged records lost 10 of them (two batches of 5), with librdkafka's
    /// receipts for them at offsets -1, 0, 1, 2, 3 (the broker named no offset; librdkafka
    /// numbers the batch from -1). Without idempotence the same run lost none: a retry is
    /// stored again (a duplicate, which at-least-once consumers already handle). Apply
    /// these to every producer of a test that kills the broker
    /// (`ProducerSpec::set(key, value)` or `ClientConfig::set`); a test that only cuts the
    /// link keeps the crate's defaults. `tests/kafka.rs` checks both.
    pub const CRASH_SAFE_PRODUCER: &[(&str, &str)] = &[
        ("enable.idempotence", "false"),
        ("max.in.flight.requests.per.connection", "1"),
    ];

    /// Starts Tansu on a free loopback port, advertising that port, and waits until it answers
    /// an ApiVersions request.
    pub fn start() -> Result<Self> {
        Ok(Tansu {
            instance: Instance::start(spec(None), None)?,
            store: None,
        })
    }

    /// Starts a [`FaultProxy`] first, then Tansu on another port advertising the *proxy's*
    /// address, so that every connection a Kafka client makes (bootstrap and the broker
    /// connections it learns from metadata) goes through the proxy.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        let advertised = proxy.port();
        Ok(Tansu {
            instance: Instance::start(spec(Some(advertised)), Some(proxy))?,
            store: None,
        })
    }

    /// Starts a moto server, creates a bucket on it, then Tansu on a free loopback port storing
    /// everything in that bucket: it survives [`kill`](Self::kill) and
    /// [`restart`](Self::restart) with its data (see the type's docs).
    pub fn start_durable() -> Result<Self> {
        let store = Arc::new(S3Store::start()?);
        Ok(Tansu {
            instance: Instance::start(durable_spec(None, &store), None)?,
            store: Some(store),
        })
    }

    /// [`start_durable`](Self::start_durable) behind a [`FaultProxy`], the broker advertising
    /// the proxy's address as with [`start_behind_proxy`](Self::start_behind_proxy). The
    /// proxy keeps its port across the broker's restarts (the broker keeps its own too).
    pub fn start_durable_behind_proxy() -> Result<Self> {
        let store = Arc::new(S3Store::start()?);
        let proxy = FaultProxy::start_unconnected()?;
        let advertised = proxy.port();
        Ok(Tansu {
            instance: Instance::start(durable_spec(Some(advertised), &store), Some(proxy))?,
            store: Some(store),
        })
    }

    /// Whether it stores its data in S3 (started with `start_durable*`), so that it keeps it
    /// across a kill and restart.
    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    /// The S3 endpoint of its store, `http://127.0.0.1:PORT` (moto), for a durable broker.
    pub fn store_endpoint(&self) -> Option<String> {
        self.store.as_ref().map(|s| s.endpoint())
    }

    /// The `bootstrap.servers` value, `127.0.0.1:PORT`: the proxy's when there is one.
    pub fn bootstrap_servers(&self) -> String {
        self.client_addr().to_string()
    }
}

owned_broker_controls!(Tansu);

/// Tansu listening on the given port, advertising `advertised` (or its own port), in memory.
pub(crate) fn spec(advertised: Option<u16>) -> Spec {
    tansu_spec(advertised, "memory://tansu/".to_owned(), None)
}

/// Tansu storing everything in `store`'s bucket. Any credentials work with moto; the object
/// store client wants some, a region, and leave to speak plain HTTP.
fn durable_spec(advertised: Option<u16>, store: &S3Store) -> Spec {
    let endpoint = store.endpoint();
    tansu_spec(
        advertised,
        format!("s3://{BUCKET}/"),
        Some(Box::new(move |_port, _dir| {
            [
                ("AWS_ENDPOINT", endpoint.as_str()),
                ("AWS_ALLOW_HTTP", "true"),
                ("AWS_ACCESS_KEY_ID", "wharf"),
                ("AWS_SECRET_ACCESS_KEY", "wharf"),
                ("AWS_DEFAULT_REGION", "us-east-1"),
                ("AWS_REGION", "us-east-1"),
            ]
            .into_iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
        })),
    )
}

fn tansu_spec(
    advertised: Option<u16>,
    storage: String,
    env: Option<crate::process::EnvFn>,
) -> Spec {
    Spec {
        binary: "tansu",
        probe: Probe::KafkaApiVersions,
        args: Box::new(move |port, _dir| {
            let advertised = advertised.unwrap_or(port);
            [
                "broker".to_owned(),
                "--listener-url".to_owned(),
                format!("tcp://127.0.0.1:{port}"),
                "--advertised-listener-url".to_owned(),
                format!("tcp://127.0.0.1:{advertised}"),
                "--storage-engine".to_owned(),
                storage.clone(),
            ]
            .into_iter()
            .map(OsString::from)
            .collect()
        }),
        config_file: None,
        prepare: None,
        env,
    }
}

/// Creates `bucket` on the S3 server at `addr` (moto takes unsigned requests), path-style.
fn create_bucket(addr: SocketAddr, bucket: &str) -> Result<()> {
    let what = format!("creating bucket {bucket} on moto at {addr}");
    let io = |e| Error::io(what.clone(), e);
    let mut stream = TcpStream::connect_timeout(&addr, BUCKET_TIMEOUT).map_err(io)?;
    stream.set_read_timeout(Some(BUCKET_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(BUCKET_TIMEOUT)).map_err(io)?;
    let request = format!("PUT /{bucket} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(io)?;
    let mut reply = Vec::new();
    (&mut stream)
        .take(64 * 1024)
        .read_to_end(&mut reply)
        .map_err(io)?;
    let text = String::from_utf8_lossy(&reply);
    if text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200") {
        Ok(())
    } else {
        let start: String = text.chars().take(300).collect();
        Err(Error::Query {
            what,
            reason: format!("moto answered {start:?}; see the moto log in its directory"),
        })
    }
}

//! Pulsar: pulsar-lite, an embedded broker speaking Pulsar's binary protocol
//! (`.wharf/bin/pulsar-lite`).

use std::ffi::OsString;
use std::path::PathBuf;

use crate::controls::owned_broker_controls;
use crate::error::Result;
use crate::probe::Probe;
use crate::process::{Instance, Spec};
use crate::proxy::FaultProxy;

/// Its metrics endpoint would otherwise bind 0.0.0.0:8080, and two brokers would collide.
const CONFIG: &str = "[metrics]\nenabled = false\n";
const CONFIG_FILE: &str = "pulsar-lite.toml";

/// A pulsar-lite broker owned by one test. Storage is RocksDB in its private directory, so
/// [`kill`](Self::kill) then [`restart`](Self::restart) keeps every acknowledged message: the
/// way to test producer and consumer reconnection.
///
/// Clients always reach it through a [`FaultProxy`] ([`proxy`](Self::proxy) is always `Some`),
/// which also makes pulsar-lite's frames acceptable to the `pulsar` crate: it adds the
/// payload checksum the crate requires on delivered messages (pulsar-lite omits it, and the
/// crate's consumers then fail to decode every message), and it marks topic lookups
/// "proxy through the service URL" (pulsar-lite answers with its own address, which would
/// bypass the proxy). So the proxy's controls cut producers and consumers too.
///
/// ```no_run
/// # fn main() -> wharf_testkit::Result<()> {
/// let pulsar = wharf_testkit::PulsarLite::start()?;
/// let url = pulsar.url(); // pulsar://127.0.0.1:PORT
/// pulsar.kill()?;
/// pulsar.restart()?; // same port, same data
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct PulsarLite {
    instance: Instance,
}

impl PulsarLite {
    /// Starts the proxy, then pulsar-lite behind it on a free loopback port (metrics
    /// disabled), and waits until it accepts connections.
    pub fn start() -> Result<Self> {
        Ok(PulsarLite {
            instance: start_instance()?,
        })
    }

    /// Like [`start`](Self::start), but every topic it creates is a partitioned topic of
    /// `partitions` partitions (pulsar-lite's `default_partitions`), across restarts too.
    pub fn start_partitioned(partitions: u32) -> Result<Self> {
        let config = format!("default_partitions = {partitions}\n{CONFIG}");
        Ok(PulsarLite {
            instance: Instance::start(spec(config), Some(FaultProxy::start_pulsar_compat()?))?,
        })
    }

    /// The same as [`start`](Self::start), named like the other brokers' constructors: a
    /// pulsar-lite always runs behind its proxy.
    pub fn start_behind_proxy() -> Result<Self> {
        Self::start()
    }

    /// `pulsar://127.0.0.1:PORT`, the proxy's address: what clients should use.
    pub fn url(&self) -> String {
        format!("pulsar://{}", self.client_addr())
    }

    /// The RocksDB directory (pulsar-lite appends `.rocksdb` to the `--db-path` it is given).
    pub fn data_dir(&self) -> PathBuf {
        self.instance.dir().join("data.rocksdb")
    }
}

owned_broker_controls!(PulsarLite);

/// pulsar-lite behind its compatibility proxy.
pub(crate) fn start_instance() -> Result<Instance> {
    Instance::start(
        spec(CONFIG.to_owned()),
        Some(FaultProxy::start_pulsar_compat()?),
    )
}

fn spec(config: String) -> Spec {
    Spec {
        binary: "pulsar-lite",
        probe: Probe::Tcp,
        args: Box::new(|port, dir| {
            vec![
                OsString::from("--config"),
                dir.join(CONFIG_FILE).into_os_string(),
                OsString::from("--addr"),
                OsString::from(format!("127.0.0.1:{port}")),
                OsString::from("--db-path"),
                dir.join("data").into_os_string(),
            ]
        }),
        config_file: Some((CONFIG_FILE, config)),
        prepare: None,
        env: None,
    }
}

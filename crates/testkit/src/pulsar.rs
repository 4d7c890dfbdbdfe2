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
    /// Starts pulsar-lite on a free loopback port (metrics disabled) and waits until it
    /// accepts connections.
    pub fn start() -> Result<Self> {
        Ok(PulsarLite {
            instance: Instance::start(spec(), None)?,
        })
    }

    /// Starts a [`FaultProxy`] and pulsar-lite behind it; [`url`](Self::url) is the proxy's.
    /// pulsar-lite answers topic lookups with "connect through the address you used", so
    /// the `pulsar` crate keeps every connection on the proxy.
    pub fn start_behind_proxy() -> Result<Self> {
        let proxy = FaultProxy::start_unconnected()?;
        Ok(PulsarLite {
            instance: Instance::start(spec(), Some(proxy))?,
        })
    }

    /// `pulsar://127.0.0.1:PORT`: through the proxy when there is one.
    pub fn url(&self) -> String {
        format!("pulsar://{}", self.client_addr())
    }

    /// The RocksDB directory (pulsar-lite appends `.rocksdb` to the `--db-path` it is given).
    pub fn data_dir(&self) -> PathBuf {
        self.instance.dir().join("data.rocksdb")
    }
}

owned_broker_controls!(PulsarLite);

pub(crate) fn spec() -> Spec {
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
        config_file: Some((CONFIG_FILE, CONFIG.to_owned())),
    }
}
